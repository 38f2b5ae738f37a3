//! A claim's life through the PV binder, the attach/detach controller and
//! the CSI sidecars: provisioned, attached, expanded, handed between nodes
//! and reclaimed.

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};

use crate::cluster::*;

fn size_of(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"]
        .0
        .clone()
}

pub(crate) async fn expand(s: &Scenario, claim: &str, pv: &str, mode: Mode) {
    let patch = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
    s.pvcs()
        .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(&format!("{pv} grown to 2Gi"), WAIT, || async {
        (size_of(&s.pv(pv).await?) == "2Gi").then_some(())
    })
    .await;
    assert_eq!(s.disk(pv).await.unwrap().size_bytes, 2 * GIB);
    if mode == Mode::Filesystem {
        // The filesystem grows on the node (NodeExpandVolume), which only
        // a kubelet would call: the claim says so.
        eventually("FileSystemResizePending", WAIT, || async {
            let pvc = s.pvcs().get(claim).await.ok()?;
            pvc.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "FileSystemResizePending")
                .then_some(())
        })
        .await;
    } else {
        eventually("claim capacity 2Gi", WAIT, || async {
            let pvc = s.pvcs().get(claim).await.ok()?;
            (pvc.status?.capacity?.get("storage")?.0 == "2Gi").then_some(())
        })
        .await;
    }
}

async fn provision_attach_expand_reclaim(name: &str, class: &str, mode: Mode) {
    let s = Scenario::new(name).await;
    s.claim("data", class, mode, false).await;
    s.pod("app", "node-a", &[("data", mode)], json!({})).await;
    s.select_node("data", "node-a").await;
    let pv = s.bound("data").await;
    let disk = s.disk(&pv).await.expect("the RDS has the disk");
    assert_eq!(disk.size_bytes, GIB);
    assert!(disk.exported, "exported over NVMe/TCP: {disk:?}");
    let spec = s.pv(&pv).await.unwrap().spec.unwrap();
    assert_eq!(
        spec.volume_mode.as_deref(),
        Some(if mode == Mode::Block {
            "Block"
        } else {
            "Filesystem"
        })
    );
    assert_eq!(
        spec.csi.unwrap().driver,
        s.cluster.get("RDS_CSI_E2E_DRIVER")
    );
    s.wait_attached(&pv, "node-a").await;
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-a"));

    expand(&s, "data", &pv, mode).await;

    s.delete_pod("app").await;
    s.wait_detached(&pv, "node-a").await;
    assert_eq!(s.holder(&pv).await, None, "released on detach");
    s.delete_claim("data").await;
    s.wait_reclaimed(&pv).await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_filesystem_claim_is_provisioned_attached_expanded_and_reclaimed() {
    provision_attach_expand_reclaim("e2e-fs", EXT4, Mode::Filesystem).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_block_claim_is_provisioned_attached_expanded_and_reclaimed() {
    provision_attach_expand_reclaim("e2e-block", BLOCK, Mode::Block).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_pod_moving_to_another_node_is_detached_then_handed_off() {
    let s = Scenario::new("e2e-move").await;
    let pv = s
        .attached_claim("data", EXT4, Mode::Filesystem, "app-1", "node-a")
        .await;

    // The pod is rescheduled: gone from node-a, created on node-b.
    let start = Instant::now();
    s.delete_pod("app-1").await;
    s.pod("app-2", "node-b", &[("data", Mode::Filesystem)], json!({}))
        .await;
    s.wait_detached(&pv, "node-a").await;
    let detached = start.elapsed();
    s.wait_attached(&pv, "node-b").await;
    let attached = start.elapsed();
    println!(
        "MOVE: node-a detached {:.2}s after the pod was deleted, node-b attached after {:.2}s",
        detached.as_secs_f64(),
        attached.as_secs_f64()
    );
    assert!(
        s.attachment(&pv, "node-a").await.is_none(),
        "the attach/detach controller detached node-a first"
    );
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-b"));
    s.wait_event("data", "Handoff").await;
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_second_pod_on_another_node_never_gets_a_rwo_volume() {
    let s = Scenario::new("e2e-rwo").await;
    let pv = s
        .attached_claim("data", BLOCK, Mode::Block, "first", "node-a")
        .await;

    // Kubernetes refuses: the attach/detach controller's Multi-Attach rule
    // keeps the second pod's volume unattached (and says so on the pod).
    s.pod("second", "node-b", &[("data", Mode::Block)], json!({}))
        .await;
    s.wait_event("second", "FailedAttachVolume").await;
    assert!(s.attachment(&pv, "node-b").await.is_none());

    // The driver refuses too: a VolumeAttachment for node-b (a racing or
    // misbehaving attach path) gets an error naming the holder, and
    // removing it leaves node-a's attachment alone.
    let va = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-rogue", s.ns)},
        "spec": {"attacher": s.cluster.get("RDS_CSI_E2E_DRIVER"), "nodeName": "node-b",
                 "source": {"persistentVolumeName": pv}}
    }))
    .unwrap();
    let vas = Api::<VolumeAttachment>::all(s.client.clone());
    vas.create(&PostParams::default(), &va).await.unwrap();
    let err = s.wait_refused(&pv, "node-b").await;
    assert!(err.contains("node-a"), "names the holder: {err}");
    s.wait_event("data", "AttachConflict").await;
    vas.delete(&format!("{}-rogue", s.ns), &DeleteParams::default())
        .await
        .unwrap();
    s.wait_detached(&pv, "node-b").await;
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-a"));
    assert!(s.is_attached(&pv, "node-a").await);
    s.cleanup().await;
}
