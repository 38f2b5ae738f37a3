//! The node service against the recording fake host: every decision and
//! every refusal, without root or NVMe hardware.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attachment_manager::cluster::LogEvents;
use attachment_manager::VolumeEvent;
use nix::errno::Errno;
use nvme::fake::{Call, FakeHost, Program, Reply, SysOp, Then};
use nvme::{DataPath, DevId, FileKind, HostCommand, MsFlags, Sys};
use tonic::{Code, Request};

use super::*;
use crate::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};

const ID: &str = "pvc-1";
const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";
const STAGING: &str =
    "/var/lib/kubelet/plugins/kubernetes.io/csi/rds.csi.srvlab.io/abc/globalmount";
const TARGET: &str = "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount";
const TARGET2: &str = "/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pvc-1/mount";
const BSTAGING: &str = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/pvc-1";
const BTARGET: &str = "/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-1/p1";
const STATE: &str = "/var/lib/kubelet/plugins/rds.csi.srvlab.io/volumes";

struct Env {
    f: FakeHost,
    svc: NodeService<FakeHost, FakeHost>,
    /// Every event the node raised, as the API server would get them.
    recorded: Arc<LogEvents>,
}

/// The PVC named in the volume context (csi-provisioner's
/// --extra-create-metadata).
const PVC_NS: &str = "vms";
const PVC_NAME: &str = "disk-1";

fn env() -> Env {
    let recorded = Arc::new(LogEvents::default());
    let events = NodeEvents::spawn(recorded.clone(), 64, events::DELIVERY_TIMEOUT);
    env_with(recorded, events)
}

fn env_with(recorded: Arc<LogEvents>, events: NodeEvents) -> Env {
    let f = FakeHost::new();
    f.add_volume(NQN, 1 << 30);
    f.mkdir(Path::new(STAGING));
    f.mkdir(Path::new(BSTAGING));
    f.mkdir(Path::new(
        "/var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1",
    ));
    f.mkdir(Path::new(
        "/var/lib/kubelet/pods/p2/volumes/kubernetes.io~csi/pvc-1",
    ));
    let config = nvme::fake::config();
    let svc = NodeService::with_events(
        NodeConfig {
            node_id: "worker-1".into(),
            max_volumes: 0,
            topology: vec![("rds.csi.srvlab.io/rds".into(), "default".into())],
            state_dir: STATE.into(),
            staging_root: "/var/lib/kubelet".into(),
            max_ctrl_loss_tmo: None,
        },
        DataPath::new(f.clone(), f.clone(), config),
        RpcMetrics::unregistered(),
        events,
    );
    Env { f, svc, recorded }
}

fn cap(block: bool, fs: &str, mode: Mode, flags: &[&str]) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs.into(),
                mount_flags: flags.iter().map(|s| s.to_string()).collect(),
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn fs_cap() -> proto::VolumeCapability {
    cap(false, "ext4", Mode::SingleNodeWriter, &[])
}

fn block_cap() -> proto::VolumeCapability {
    cap(true, "", Mode::MultiNodeMultiWriter, &[])
}

fn ctx() -> HashMap<String, String> {
    HashMap::from([
        ("nvmeAddress".to_string(), "10.0.0.1".to_string()),
        ("nvmePort".to_string(), "4420".to_string()),
        ("nqn".to_string(), NQN.to_string()),
        (
            "csi.storage.k8s.io/pvc/namespace".to_string(),
            PVC_NS.to_string(),
        ),
        (
            "csi.storage.k8s.io/pvc/name".to_string(),
            PVC_NAME.to_string(),
        ),
    ])
}

fn stage_req(c: proto::VolumeCapability, staging: &str) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: staging.into(),
        volume_capability: Some(c),
        volume_context: ctx(),
        ..Default::default()
    }
}

/// A filesystem stage whose volume context says the volume was formatted
/// before.
fn formatted_stage_req() -> proto::NodeStageVolumeRequest {
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.insert(FORMATTED.into(), "true".into());
    r
}

fn publish_req(
    c: proto::VolumeCapability,
    staging: &str,
    target: &str,
    readonly: bool,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: staging.into(),
        target_path: target.into(),
        volume_capability: Some(c),
        readonly,
        volume_context: ctx(),
        ..Default::default()
    }
}

/// How far the test volume is set up when a test starts.
#[derive(Debug, Clone, Copy)]
enum Given {
    /// A filesystem volume staged at STAGING.
    StagedFs,
    /// A filesystem volume staged at STAGING and published (read-write)
    /// at TARGET.
    PublishedFs,
    /// A raw block volume staged at BSTAGING.
    StagedBlock,
    /// A raw block volume staged and published (read-write) at BTARGET.
    PublishedBlock,
}
use Given::*;

/// A node where the test volume is already as `given`.
async fn node_with(given: Given) -> Env {
    let e = env();
    match given {
        StagedFs => e.stage_fs().await,
        PublishedFs => e.stage_and_publish_fs().await,
        StagedBlock => e.stage_block().await,
        PublishedBlock => e.stage_and_publish_block().await,
    }
    e
}

fn unstage_req(staging: &str) -> proto::NodeUnstageVolumeRequest {
    proto::NodeUnstageVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: staging.into(),
    }
}

impl Env {
    async fn stage(&self, r: proto::NodeStageVolumeRequest) -> Result<(), Status> {
        self.svc.node_stage_volume(Request::new(r)).await.map(drop)
    }

    async fn stage_fs(&self) {
        self.stage(stage_req(fs_cap(), STAGING)).await.unwrap();
    }

    /// A filesystem stage at STAGING that must be refused with `code`.
    async fn stage_fs_refused(&self, code: Code) -> Status {
        let err = self.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
        assert_eq!(err.code(), code, "{}", err.message());
        err
    }

    async fn stage_block(&self) {
        self.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    }

    /// A filesystem volume staged at STAGING and published (read-write)
    /// at TARGET.
    async fn stage_and_publish_fs(&self) {
        self.stage_fs().await;
        self.publish_fs(TARGET, false).await.unwrap();
    }

    /// A raw block volume staged and published (read-write) at BTARGET.
    async fn stage_and_publish_block(&self) {
        self.stage_block().await;
        self.publish_block(false).await.unwrap();
    }

    async fn publish(&self, r: proto::NodePublishVolumeRequest) -> Result<(), Status> {
        self.svc
            .node_publish_volume(Request::new(r))
            .await
            .map(drop)
    }

    async fn publish_fs(&self, target: &str, readonly: bool) -> Result<(), Status> {
        self.publish(publish_req(fs_cap(), STAGING, target, readonly))
            .await
    }

    /// The raw block volume published at BTARGET.
    async fn publish_block(&self, readonly: bool) -> Result<(), Status> {
        self.publish(publish_req(block_cap(), BSTAGING, BTARGET, readonly))
            .await
    }

    async fn unpublish(&self, target: &str) -> Result<(), Status> {
        self.svc
            .node_unpublish_volume(Request::new(proto::NodeUnpublishVolumeRequest {
                volume_id: ID.into(),
                target_path: target.into(),
            }))
            .await
            .map(drop)
    }

    async fn unstage(&self, staging: &str) -> Result<(), Status> {
        let r = Request::new(unstage_req(staging));
        self.svc.node_unstage_volume(r).await.map(drop)
    }

    async fn stats(&self, path: &str) -> Result<proto::NodeGetVolumeStatsResponse, Status> {
        self.svc
            .node_get_volume_stats(Request::new(proto::NodeGetVolumeStatsRequest {
                volume_id: ID.into(),
                volume_path: path.into(),
                staging_target_path: String::new(),
            }))
            .await
            .map(|r| r.into_inner())
    }

    async fn expand(
        &self,
        path: &str,
        bytes: i64,
        c: Option<proto::VolumeCapability>,
    ) -> Result<i64, Status> {
        self.svc
            .node_expand_volume(Request::new(proto::NodeExpandVolumeRequest {
                volume_id: ID.into(),
                volume_path: path.into(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: bytes,
                    limit_bytes: 0,
                }),
                volume_capability: c,
                ..Default::default()
            }))
            .await
            .map(|r| r.into_inner().capacity_bytes)
    }

    /// The node's own error of a stage that must fail (not the status):
    /// for tests of which step refused.
    async fn stage_fs_error(&self) -> NodeError {
        let (i, r) = (&self.svc.inner, stage_req(fs_cap(), STAGING));
        let staged = i
            .serve(&r, ID, super::stage::stage_args, |v| i.stage(v))
            .await;
        staged.unwrap_err()
    }

    /// The node's own error of an unstage that must fail.
    async fn unstage_error(&self, staging: &str) -> NodeError {
        let (i, r) = (&self.svc.inner, unstage_req(staging));
        let unstaged = i.serve(&r, ID, super::unstage::unstage_args, |v| i.unstage(v));
        unstaged.await.unwrap_err()
    }

    /// The orphan sweep at start, in `mode`.
    async fn clean(&self, mode: OrphanCleanup) -> OrphanReport {
        self.svc.clean_orphans(mode).await.unwrap()
    }

    /// One periodic orphan scan in `mode`.
    async fn scan(&self, mode: OrphanCleanup, suspects: &mut HashSet<String>) -> OrphanReport {
        self.svc.scan_orphans(mode, suspects).await.unwrap()
    }

    /// The controller comes back under new numbers, but its namespace
    /// does not (yet); the calls so far are forgotten.
    fn reconnect_without_namespace(&self) {
        self.f.defer_namespaces(true);
        self.f.renumber(NQN);
        self.f.clear_calls();
    }

    fn mounts_at(&self, p: &str) -> Vec<nvme::mountinfo::Mount> {
        self.f.mounts_at(Path::new(p))
    }

    fn dev(&self) -> DevId {
        self.f.device(NQN).unwrap().1
    }

    fn mount_calls(&self) -> Vec<nvme::MountRequest> {
        self.f
            .calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Mount(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The events raised so far, once delivered.
    async fn events(&self) -> Vec<VolumeEvent> {
        self.svc.inner.events.flush().await;
        self.recorded.seen.lock().unwrap().clone()
    }

    /// The reasons of the events raised so far.
    async fn reasons(&self) -> Vec<&'static str> {
        self.events().await.iter().map(|e| e.reason).collect()
    }

    fn record(&self) -> Option<VolumeRecord> {
        self.f
            .read(&Path::new(STATE).join(format!("{ID}.json")))
            .map(|t| serde_json::from_str(&t).unwrap())
    }
}

fn removed(f: &FakeHost) -> Vec<PathBuf> {
    f.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::RemoveDir(p) | Call::RemoveFile(p) => Some(p),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn capabilities_are_the_implemented_ones() {
    use proto::node_service_capability::rpc::Type as T;
    let e = env();
    let caps = e
        .svc
        .node_get_capabilities(Request::new(proto::NodeGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let types: Vec<i32> = caps
        .into_iter()
        .filter_map(|c| {
            c.r#type
                .map(|proto::node_service_capability::Type::Rpc(r)| r.r#type)
        })
        .collect();
    assert_eq!(
        types,
        [
            T::StageUnstageVolume,
            T::ExpandVolume,
            T::GetVolumeStats,
            T::VolumeCondition,
            T::SingleNodeMultiWriter
        ]
        .map(|t| t as i32)
    );
    let info = e
        .svc
        .node_get_info(Request::new(proto::NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "worker-1");
}

/// The one event of `reason`, checked to be a warning about this volume on
/// its PVC, naming this node.
async fn the_event(e: &Env, reason: &str) -> VolumeEvent {
    let all = e.events().await;
    let of: Vec<&VolumeEvent> = all.iter().filter(|ev| ev.reason == reason).collect();
    assert_eq!(of.len(), 1, "one {reason} event: {all:?}");
    let ev = of[0].clone();
    assert_eq!(ev.volume, ID);
    assert_eq!(ev.pvc, Some((PVC_NS.to_string(), PVC_NAME.to_string())));
    assert_eq!(ev.kind, EventKind::Warning);
    assert!(ev.message.contains("(node worker-1)"), "{}", ev.message);
    ev
}

mod errors;
mod expand;
mod format_record;
mod orphans;
mod publish;
mod pvc_events;
mod recovery;
mod stage;
mod stats;
mod unstage;
