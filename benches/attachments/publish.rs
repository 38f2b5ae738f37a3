//! ControllerPublish/Unpublish runs as the external-attacher makes them,
//! and the same runs with the PV patch alone (the floor): one volume after
//! the other, or many tasks in two phases (all attach, then all detach).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use csi_server::proto;
use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::metrics::{api_connections, breakdown, cpu_s, ms_f, snap, snap_of, Breakdown};
use crate::support::{capability, ms, percentile, two_phases, BoxResult};
use crate::world::{Controller, World};
use crate::{Csi, ANN_ATTACHED_AT, ANN_ATTACHED_NODE};

/// One volume as the external-attacher sees it.
#[derive(Clone)]
pub struct Vol {
    pub id: String,
    pub node: String,
    pub context: HashMap<String, String>,
}

pub async fn publish(csi: &mut Csi, v: &Vol) -> BoxResult<Duration> {
    let t = Instant::now();
    csi.controller_publish_volume(proto::ControllerPublishVolumeRequest {
        volume_id: v.id.clone(),
        node_id: v.node.clone(),
        volume_capability: Some(capability()),
        volume_context: v.context.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("ControllerPublish {} to {}: {s}", v.id, v.node))?;
    Ok(t.elapsed())
}

pub async fn unpublish(csi: &mut Csi, v: &Vol) -> BoxResult<Duration> {
    let t = Instant::now();
    csi.controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
        volume_id: v.id.clone(),
        node_id: v.node.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("ControllerUnpublish {} from {}: {s}", v.id, v.node))?;
    Ok(t.elapsed())
}

/// One measured pass over all volumes: publish, then unpublish.
pub struct Run {
    pub label: String,
    pub publishes: Vec<Duration>,
    pub unpublishes: Vec<Duration>,
    pub publish_wall: Duration,
    pub unpublish_wall: Duration,
    pub wall: Duration,
    pub bd: Breakdown,
    /// The controller's TCP connections to the API server at the end.
    pub api_conns: Option<usize>,
}

impl Run {
    pub fn row(&self) -> String {
        let n = self.publishes.len() as f64;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            self.label,
            ms(percentile(&self.publishes, 50.0)),
            ms(percentile(&self.publishes, 99.0)),
            ms(*self.publishes.iter().max().unwrap()),
            ms(percentile(&self.unpublishes, 50.0)),
            ms(percentile(&self.unpublishes, 99.0)),
            ms(*self.unpublishes.iter().max().unwrap()),
            n / self.publish_wall.as_secs_f64(),
            n / self.unpublish_wall.as_secs_f64(),
            2.0 * n / self.wall.as_secs_f64(),
        )
    }

    pub fn breakdown_row(&self) -> String {
        let mean = |v: &[Duration]| {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
        };
        let b = &self.bd;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total: f64 = b.cpu.iter().flatten().sum();
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {} | {:.0}% | {:.0}% |",
            self.label,
            ms_f(mean(&self.publishes)),
            ms_f(b.rpc_publish),
            ms_f(b.manager_publish),
            ms_f(b.ssh),
            // What is left of a publish RPC once the RouterOS command and
            // the API server's own handling of the PV patch are taken out:
            // the controller's own work and its waiting for CPU.
            ms_f(b.rpc_publish - b.ssh - b.api_patch_pv),
            ms_f(mean(&self.unpublishes)),
            ms_f(b.rpc_unpublish),
            ms_f(b.manager_unpublish),
            ms_f(b.api_patch_pv),
            ms_f(b.etcd_update_pv),
            ms_f(b.wal_fsync),
            b.wal_fsyncs,
            cpu_s(b.cpu[0]),
            cpu_s(b.cpu[1]),
            cpu_s(b.cpu[2]),
            cpu_s(b.cpu[3]),
            100.0 * total / (cores * b.wall.as_secs_f64()),
            100.0 * b.machine_busy,
        )
    }
}

/// Each volume in turn: publish, then unpublish.
pub async fn sequential(label: &str, w: &World, ctl: &Controller, vols: &[Vol]) -> BoxResult<Run> {
    let mut c = ctl.csi.clone();
    let before = snap(w, ctl).await;
    let mut publishes = Vec::with_capacity(vols.len());
    let mut unpublishes = Vec::with_capacity(vols.len());
    let start = Instant::now();
    for v in vols {
        publishes.push(publish(&mut c, v).await?);
        unpublishes.push(unpublish(&mut c, v).await?);
    }
    let wall = start.elapsed();
    let bd = breakdown(&before, &snap(w, ctl).await);
    Ok(Run {
        label: label.to_string(),
        bd,
        api_conns: api_connections(&w.kubeconfig, ctl.pid()),
        publish_wall: publishes.iter().sum(),
        unpublish_wall: unpublishes.iter().sum(),
        publishes,
        unpublishes,
        wall,
    })
}

/// How a run attaches and detaches a volume.
enum Via {
    /// ControllerPublish and ControllerUnpublish through the controller.
    Controller(Csi),
    /// The floor under a publish: the same PV merge-patch the controller
    /// sends (set the attached-node annotations, later clear them), sent
    /// straight from this process with its own kube client, no controller
    /// and no RouterOS command.
    Patch(Api<PersistentVolume>),
}

impl Via {
    /// Attaches (`attach`) or detaches `v`; returns how long it took.
    async fn apply(&mut self, v: &Vol, attach: bool) -> BoxResult<Duration> {
        match self {
            Via::Controller(csi) if attach => publish(csi, v).await,
            Via::Controller(csi) => unpublish(csi, v).await,
            Via::Patch(api) => {
                let val = |x: String| if attach { json!(x) } else { json!(null) };
                let patch = json!({"metadata": {"annotations": {
                    ANN_ATTACHED_NODE: val(v.node.clone()),
                    ANN_ATTACHED_AT: val(jiff::Timestamp::now().to_string()),
                    "rds.csi.srvlab.io/migration-source": null,
                    "rds.csi.srvlab.io/migration-target": null,
                    "rds.csi.srvlab.io/migration-started-at": null,
                    "rds.csi.srvlab.io/migration-deadline": null,
                }}});
                let t = Instant::now();
                api.patch(&v.id, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                Ok(t.elapsed())
            }
        }
    }
}

/// `tasks` tasks; task t attaches volumes t, t+tasks, ... (all to node t
/// when `tasks` is `NODES`) one after the other. Every task attaches all its
/// volumes, then, once all attaches are done, detaches them. Through `ctl`
/// when given, else by the bare PV patch (the floor).
pub async fn in_phases(
    label: &str,
    w: &World,
    ctl: Option<&Controller>,
    vols: &[Vol],
    tasks: usize,
) -> BoxResult<Run> {
    let (start_gate, mid_gate) = two_phases(tasks);
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mine: Vec<Vol> = vols.iter().skip(t).step_by(tasks).cloned().collect();
        let mut via = match ctl {
            Some(ctl) => Via::Controller(ctl.csi.clone()),
            None => Via::Patch(Api::all(w.client.clone())),
        };
        let (g1, g2) = (start_gate.clone(), mid_gate.clone());
        handles.push(tokio::spawn(async move {
            let mut p = Vec::with_capacity(mine.len());
            let mut u = Vec::with_capacity(mine.len());
            g1.wait().await;
            let mut failed = None;
            for v in &mine {
                match via.apply(v, true).await {
                    Ok(d) => p.push(d),
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            g2.wait().await;
            if let Some(e) = failed {
                return Err(e);
            }
            for v in &mine {
                u.push(via.apply(v, false).await.map_err(|e| e.to_string())?);
            }
            Ok((p, u))
        }));
    }
    let before = snap_of(w, ctl).await;
    start_gate.wait().await;
    let start = Instant::now();
    mid_gate.wait().await;
    let publish_wall = start.elapsed();
    let mut publishes = Vec::with_capacity(vols.len());
    let mut unpublishes = Vec::with_capacity(vols.len());
    for h in handles {
        let (p, u) = h.await??;
        publishes.extend(p);
        unpublishes.extend(u);
    }
    let wall = start.elapsed();
    let bd = breakdown(&before, &snap_of(w, ctl).await);
    // The floor's connections are this process's, which also made the objects.
    let pid = ctl.map_or(std::process::id(), Controller::pid);
    Ok(Run {
        label: label.to_string(),
        bd,
        api_conns: api_connections(&w.kubeconfig, pid),
        publishes,
        unpublishes,
        publish_wall,
        unpublish_wall: wall - publish_wall,
        wall,
    })
}
