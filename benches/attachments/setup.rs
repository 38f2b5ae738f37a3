//! The objects a run starts from: Nodes, volumes with their PVs, and the
//! attached VolumeAttachments the rebuild is measured against.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::publish::Vol;
use crate::support::{capability, par, BoxResult, GIB};
use crate::world::World;
use crate::{Csi, ANN_ATTACHED_AT, ANN_ATTACHED_NODE, IN_FLIGHT, NODES, REBUILD, VOLUMES};

/// `NODES` Nodes; returns how long that took.
pub async fn nodes(w: &Arc<World>) -> BoxResult<Duration> {
    for_each(w, NODES, |w, i| async move {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": w.node(i), "labels": w.labels(),
                         "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}
        }))?;
        Api::<Node>::all(w.client.clone())
            .create(&PostParams::default(), &node)
            .await?;
        Ok(())
    })
    .await
}

/// `f(w, i)` for every `i` in `0..count`, `IN_FLIGHT` at a time; returns
/// the wall time.
async fn for_each<F, Fut>(w: &Arc<World>, count: usize, f: F) -> BoxResult<Duration>
where
    F: Fn(Arc<World>, usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = BoxResult<()>> + Send,
{
    let w = w.clone();
    par(count, IN_FLIGHT, move |i| f(w.clone(), i)).await
}

/// The volumes and their PVs, and how long each took.
pub struct Volumes {
    pub vols: Arc<Vec<Vol>>,
    pub create_took: Duration,
    pub pvs_took: Duration,
}

/// `VOLUMES` volumes made by CreateVolume through `csi`, then their PVs.
pub async fn volumes(w: &Arc<World>, csi: &Csi) -> BoxResult<Volumes> {
    let contexts = Arc::new(std::sync::Mutex::new(vec![HashMap::new(); VOLUMES]));
    let create_took = par(VOLUMES, IN_FLIGHT, {
        let (w, csi, contexts) = (w.clone(), csi.clone(), contexts.clone());
        move |i| {
            let (w, mut csi, contexts) = (w.clone(), csi.clone(), contexts.clone());
            async move {
                let id = w.volume(i);
                let claim = format!("disk-{i:04}");
                let vol = csi
                    .create_volume(testkit::csi::create_volume(
                        &id,
                        GIB,
                        capability(),
                        &[
                            ("csi.storage.k8s.io/pvc/name", &claim),
                            ("csi.storage.k8s.io/pvc/namespace", &w.run),
                            ("csi.storage.k8s.io/pv/name", &id),
                        ],
                    ))
                    .await
                    .map_err(|s| format!("CreateVolume {id}: {s}"))?
                    .into_inner()
                    .volume
                    .ok_or("CreateVolume returned no volume")?;
                contexts.lock().unwrap()[i] = vol.volume_context;
                Ok(())
            }
        }
    })
    .await?;
    let contexts = std::mem::take(&mut *contexts.lock().unwrap());
    let vols: Arc<Vec<Vol>> = Arc::new(
        contexts
            .into_iter()
            .enumerate()
            .map(|(i, context)| Vol {
                id: w.volume(i),
                node: w.node(i),
                context,
            })
            .collect(),
    );
    let pvs_took = par(VOLUMES, IN_FLIGHT, {
        let (w, vols) = (w.clone(), vols.clone());
        move |i| {
            let (w, vols) = (w.clone(), vols.clone());
            async move {
                let v = &vols[i];
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": v.id, "labels": w.labels(),
                                 "annotations": {"pv.kubernetes.io/provisioned-by": w.driver}},
                    "spec": {
                        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                        "volumeMode": "Filesystem", "persistentVolumeReclaimPolicy": "Delete",
                        "claimRef": {"namespace": w.run, "name": format!("disk-{i:04}")},
                        "csi": {"driver": w.driver, "volumeHandle": v.id, "volumeAttributes": v.context}
                    }
                }))?;
                Api::<PersistentVolume>::all(w.client.clone())
                    .create(&PostParams::default(), &pv)
                    .await?;
                Ok(())
            }
        }
    })
    .await?;
    Ok(Volumes {
        vols,
        create_took,
        pvs_took,
    })
}

/// `REBUILD` PVs, each with an attached VolumeAttachment and the
/// controller's attached-node annotations; returns how long that took.
pub async fn attached(w: &Arc<World>) -> BoxResult<Duration> {
    for_each(w, REBUILD, |w, i| async move {
        let id = format!("pvc-{}-r{i:04}", w.run);
        let node = w.node(i);
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": id, "labels": w.labels(),
                         "annotations": {"pv.kubernetes.io/provisioned-by": w.driver,
                                         ANN_ATTACHED_NODE: node,
                                         ANN_ATTACHED_AT: jiff::Timestamp::now().to_string()}},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                "volumeMode": "Filesystem", "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": w.run, "name": format!("r-{i:04}")},
                "csi": {"driver": w.driver, "volumeHandle": id}
            }
        }))?;
        Api::<PersistentVolume>::all(w.client.clone())
            .create(&PostParams::default(), &pv)
            .await?;
        let va_name = format!("csi-{id}");
        let va: VolumeAttachment = serde_json::from_value(json!({
            "metadata": {"name": va_name, "labels": w.labels()},
            "spec": {"attacher": w.driver, "nodeName": node, "source": {"persistentVolumeName": id}}
        }))?;
        let vas = Api::<VolumeAttachment>::all(w.client.clone());
        vas.create(&PostParams::default(), &va).await?;
        vas.patch_status(
            &va_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"attached": true}})),
        )
        .await?;
        Ok(())
    })
    .await
}
