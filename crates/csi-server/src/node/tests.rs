//! The node service against the recording fake host: every decision and
//! every refusal, without root or NVMe hardware.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use attachment_manager::cluster::LogEvents;
use attachment_manager::VolumeEvent;
use nix::errno::Errno;
use nvme::fake::{Call, FakeHost, Program, Reply, SysOp, Then};
use nvme::{DataPath, DevId, FileKind, HostCommand, HostIdentity, MsFlags, NqnPrefix, Sys};
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
    let config = nvme::Config::new(
        NqnPrefix::new("nqn.2000-02.com.mikrotik:")
            .unwrap()
            .with_volume_prefix("pvc-")
            .unwrap(),
        HostIdentity {
            nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            id: None,
        },
    );
    let svc = NodeService::with_events(
        NodeConfig {
            node_id: "worker-1".into(),
            max_volumes: 0,
            topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
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

impl Env {
    async fn stage(&self, r: proto::NodeStageVolumeRequest) -> Result<(), Status> {
        self.svc.node_stage_volume(Request::new(r)).await.map(drop)
    }

    async fn stage_fs(&self) {
        self.stage(stage_req(fs_cap(), STAGING)).await.unwrap();
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
        self.svc
            .node_unstage_volume(Request::new(proto::NodeUnstageVolumeRequest {
                volume_id: ID.into(),
                staging_target_path: staging.into(),
            }))
            .await
            .map(drop)
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

// ---------------------------------------------------------------- stage

#[tokio::test]
async fn stage_connects_formats_an_empty_volume_and_mounts_it() {
    let e = env();
    e.stage_fs().await;
    let programs: Vec<Program> = e.f.commands().iter().map(Program::of).collect();
    assert_eq!(
        programs,
        vec![Program::NvmeConnect, Program::Blkid, Program::Mkfs],
        "one probe before mkfs; the typed mount checks what mkfs made"
    );
    let m = e.mounts_at(STAGING);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].dev(), e.dev());
    assert_eq!(m[0].fs_type, "ext4");
    let rec = e.record().unwrap();
    assert_eq!(rec.nqn, NQN);
    assert!(rec.formatted_here);
    assert_eq!(rec.staging_path, PathBuf::from(STAGING));
}

#[tokio::test]
async fn stage_is_idempotent_and_never_stacks_mounts() {
    let e = env();
    e.stage_fs().await;
    e.f.clear_calls();
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(e.f.commands().is_empty(), "{:?}", e.f.commands());
    assert!(e.mount_calls().is_empty());
}

#[tokio::test]
async fn stage_mounts_an_existing_filesystem_without_formatting() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage(stage_req(
        cap(false, "xfs", Mode::SingleNodeWriter, &["noatime"]),
        STAGING,
    ))
    .await
    .unwrap();
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    let m = e.mount_calls();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].fstype.as_deref(), Some("xfs"));
    assert!(m[0].flags.contains(MsFlags::MS_NOATIME));
}

#[tokio::test]
async fn the_context_fs_type_is_used_when_the_capability_names_none() {
    let e = env();
    let mut r = stage_req(cap(false, "", Mode::SingleNodeWriter, &[]), STAGING);
    r.volume_context.insert("fsType".into(), "xfs".into());
    e.stage(r).await.unwrap();
    assert_eq!(e.mounts_at(STAGING)[0].fs_type, "xfs");
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.insert("fsType".into(), "xfs".into());
    assert_eq!(e.stage(r).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn blkid_error_never_leads_to_mkfs() {
    for reply in [
        Reply::exit(4),
        Reply::exit(8),
        Reply::Timeout,
        Reply::SpawnError,
    ] {
        let e = env();
        e.f.reply(Program::Blkid, reply);
        let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
        assert!(
            matches!(err.code(), Code::Unavailable),
            "{:?} {}",
            err.code(),
            err.message()
        );
        assert_eq!(e.f.ran(Program::Mkfs), 0);
        assert!(e.mounts_at(STAGING).is_empty());
    }
}

#[tokio::test]
async fn an_unreadable_device_is_never_formatted_by_stage() {
    let e = env();
    e.f.connect_now(NQN);
    e.f.make_unreadable(&e.f.device(NQN).unwrap().0);
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(e.f.ran(Program::Blkid), 0);
}

#[tokio::test]
async fn a_volume_whose_context_says_formatted_is_never_formatted() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.insert(FORMATTED.into(), "true".into());
    let err = e.stage(r).await.unwrap_err();
    assert!(
        err.message().contains("formatted before"),
        "{}",
        err.message()
    );
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert!(e.mounts_at(STAGING).is_empty());
}

#[tokio::test]
async fn stage_never_replaces_a_filesystem_of_another_type() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(e.f.volume(NQN).unwrap().fs.as_deref(), Some("xfs"));
}

#[tokio::test]
async fn ext4_with_errors_e2fsck_cannot_fix_is_not_mounted() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.f.reply(Program::E2fsck, Reply::exit(4));
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(e.mounts_at(STAGING).is_empty());
}

#[tokio::test]
async fn stage_refuses_a_foreign_nqn_before_connecting() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context
        .insert("nqn".into(), "nqn.2014-08.org.example:root".into());
    let err = e.stage(r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(e.f.calls().is_empty(), "{:?}", e.f.calls());
}

#[tokio::test]
async fn the_publish_context_is_preferred_for_the_target() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.publish_context = HashMap::from([
        ("nvmeAddress".to_string(), "10.9.9.9".to_string()),
        ("nvmePort".to_string(), "4430".to_string()),
    ]);
    e.stage(r).await.unwrap();
    let HostCommand::NvmeConnect(a) = &e.f.commands()[0] else {
        panic!()
    };
    assert_eq!((a.address.as_str(), a.port), ("10.9.9.9", 4430));
}

#[tokio::test]
async fn every_rpc_validates_its_input_before_touching_the_host() {
    let e = env();
    let bad_stage = [
        proto::NodeStageVolumeRequest {
            volume_id: String::new(),
            ..stage_req(fs_cap(), STAGING)
        },
        proto::NodeStageVolumeRequest {
            volume_id: "../etc".into(),
            ..stage_req(fs_cap(), STAGING)
        },
        stage_req(fs_cap(), ""),
        stage_req(fs_cap(), "relative"),
        stage_req(fs_cap(), "/a/../b"),
        proto::NodeStageVolumeRequest {
            volume_capability: None,
            ..stage_req(fs_cap(), STAGING)
        },
        stage_req(cap(false, "btrfs", Mode::SingleNodeWriter, &[]), STAGING),
        stage_req(cap(false, "ext4", Mode::MultiNodeMultiWriter, &[]), STAGING),
        stage_req(
            cap(false, "ext4", Mode::SingleNodeWriter, &["bind"]),
            STAGING,
        ),
        stage_req(cap(false, "ext4", Mode::Unknown, &[]), STAGING),
        proto::NodeStageVolumeRequest {
            volume_context: HashMap::new(),
            ..stage_req(fs_cap(), STAGING)
        },
    ];
    for r in bad_stage {
        let err = e.stage(r.clone()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{r:?}: {}",
            err.message()
        );
    }
    assert_eq!(
        e.publish(publish_req(fs_cap(), STAGING, STAGING, false))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.publish(publish_req(fs_cap(), "", TARGET, false))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.unpublish("").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.unstage("x").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(e.stats("").await.unwrap_err().code(), Code::InvalidArgument);
    // csi-sanity: a volume_path that cannot be the volume's is NOT_FOUND.
    assert_eq!(
        e.stats("some/path").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        e.expand("some/path", 0, None).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        e.expand("", 0, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.expand(TARGET, -1, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(e.f.calls().is_empty(), "{:?}", e.f.calls());
}

#[tokio::test]
async fn block_stage_connects_only() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    assert_eq!(e.f.commands().len(), 1);
    assert!(e.mount_calls().is_empty());
    assert!(e.f.is_connected(NQN));
    assert!(e.record().unwrap().block);
}

#[tokio::test]
async fn concurrent_calls_for_one_volume_are_aborted() {
    let e = env();
    let guard = e.svc.inner.locks.try_lock(ID).unwrap();
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert_eq!(e.unstage(STAGING).await.unwrap_err().code(), Code::Aborted);
    assert_eq!(e.unpublish(TARGET).await.unwrap_err().code(), Code::Aborted);
    assert!(e.f.calls().is_empty());
    drop(guard);
    e.stage_fs().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_stage_finishes_its_work_and_holds_the_guard_until_then() {
    let e = env();
    e.f.defer_namespaces(true);
    let first = tokio::time::timeout(
        Duration::from_millis(50),
        e.stage(stage_req(fs_cap(), STAGING)),
    )
    .await;
    assert!(first.is_err(), "the caller gave up");
    let again = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(
        again.code(),
        Code::Aborted,
        "the work goes on under the guard"
    );
    e.f.show_namespaces(NQN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(e.mounts_at(STAGING).len(), 1, "the abandoned call finished");
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}

// ---------------------------------------------------------------- publish

#[tokio::test]
async fn publish_bind_mounts_from_staging_honouring_readonly_and_flags() {
    let e = env();
    e.stage_fs().await;
    e.f.clear_calls();
    e.publish(publish_req(
        cap(
            false,
            "ext4",
            Mode::SingleNodeWriter,
            &["nosuid", "discard"],
        ),
        STAGING,
        TARGET,
        true,
    ))
    .await
    .unwrap();
    let m = e.mount_calls();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].source.as_deref(), Some(Path::new(STAGING)));
    assert_eq!(m[0].flags, MsFlags::MS_BIND);
    assert_eq!(
        m[1].flags,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
    );
    let t = e.mounts_at(TARGET);
    assert_eq!(t.len(), 1);
    assert!(t[0].read_only());
    assert_eq!(t[0].dev(), e.dev());
    assert_eq!(
        e.record().unwrap().targets.get(Path::new(TARGET)),
        Some(&true)
    );
}

#[tokio::test]
async fn publish_is_idempotent() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.clear_calls();
    e.publish_fs(TARGET, false).await.unwrap();
    assert!(e.mount_calls().is_empty());
    assert_eq!(e.mounts_at(TARGET).len(), 1);
}

#[tokio::test]
async fn publish_with_another_readonly_flag_is_already_exists() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    let err = e.publish_fs(TARGET, true).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn publish_before_stage_is_a_failed_precondition() {
    let e = env();
    let err = e.publish_fs(TARGET, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(e.mount_calls().is_empty());
}

#[tokio::test]
async fn a_single_writer_volume_is_published_once() {
    let e = env();
    let sw = cap(false, "ext4", Mode::SingleNodeSingleWriter, &[]);
    e.stage(stage_req(sw.clone(), STAGING)).await.unwrap();
    e.publish(publish_req(sw.clone(), STAGING, TARGET, false))
        .await
        .unwrap();
    let err = e
        .publish(publish_req(sw.clone(), STAGING, TARGET2, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    // A multi-writer volume may be published twice on one node.
    let e = env();
    let mw = cap(false, "ext4", Mode::SingleNodeMultiWriter, &[]);
    e.stage(stage_req(mw.clone(), STAGING)).await.unwrap();
    e.publish(publish_req(mw.clone(), STAGING, TARGET, false))
        .await
        .unwrap();
    e.publish(publish_req(mw, STAGING, TARGET2, false))
        .await
        .unwrap();
}

#[tokio::test]
async fn block_publish_creates_a_device_node_not_a_bind_mount() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.f.clear_calls();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    assert!(e.mount_calls().is_empty(), "no mount of any kind");
    assert!(e.f.calls().contains(&Call::Mknod {
        path: BTARGET.into(),
        mode: 0o660,
        dev: e.dev()
    }));
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.kind, FileKind::BlockDevice);
    assert_eq!(st.rdev, Some(e.dev()));
    // Again: nothing changes.
    e.f.clear_calls();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    assert!(!e.f.calls().iter().any(|c| matches!(c, Call::Mknod { .. })));
    // Read-only is the node's mode.
    let err = e
        .publish(publish_req(block_cap(), BSTAGING, BTARGET, true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn block_publish_replaces_a_device_node_of_another_number() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.f.put_device_node(Path::new(BTARGET), DevId::new(259, 999));
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.rdev, Some(e.dev()));
}

#[tokio::test]
async fn block_publish_never_replaces_a_file_with_content() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.f.write(Path::new(BTARGET), "data");
    let err = e
        .publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(e.f.read(Path::new(BTARGET)).as_deref(), Some("data"));
}

#[tokio::test]
async fn staged_as_block_and_published_as_filesystem_is_refused() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    let err = e
        .publish(publish_req(fs_cap(), BSTAGING, TARGET, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

// ---------------------------------------------------------------- unpublish

#[tokio::test]
async fn unpublish_unmounts_and_removes_the_target_directory() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.unpublish(TARGET).await.unwrap();
    assert!(e.mounts_at(TARGET).is_empty());
    assert!(!e.f.exists(Path::new(TARGET)));
    assert!(e.record().unwrap().targets.is_empty());
    // Again: already gone is success.
    e.unpublish(TARGET).await.unwrap();
    // The staging mount is untouched.
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}

#[tokio::test]
async fn unpublish_never_removes_a_path_that_is_still_mounted() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.fail(SysOp::Umount, Errno::EBUSY);
    e.f.clear_calls();
    let err = e.unpublish(TARGET).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(removed(&e.f).is_empty(), "{:?}", e.f.calls());
    assert_eq!(e.mounts_at(TARGET).len(), 1);
}

#[tokio::test]
async fn unpublish_takes_off_stacked_mounts_before_removing_anything() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    // A buggy earlier driver stacked two more mounts on the target.
    e.f.add_mount(e.dev(), Path::new(TARGET), "ext4", "/dev/nvme0n1");
    e.f.add_mount(e.dev(), Path::new(TARGET), "ext4", "/dev/nvme0n1");
    e.unpublish(TARGET).await.unwrap();
    assert!(e.mounts_at(TARGET).is_empty());
    let calls = e.f.calls();
    let last_umount = calls
        .iter()
        .rposition(|c| matches!(c, Call::Umount { .. }))
        .unwrap();
    let rmdir = calls
        .iter()
        .position(|c| matches!(c, Call::RemoveDir(_)))
        .unwrap();
    assert!(rmdir > last_umount);
}

#[tokio::test]
async fn unpublish_never_deletes_a_directory_with_content() {
    let e = env();
    let file = Path::new(TARGET).join("precious");
    e.f.write(&file, "data");
    let err = e.unpublish(TARGET).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(e.f.read(&file).as_deref(), Some("data"));
    assert_eq!(
        removed(&e.f),
        vec![PathBuf::from(TARGET)],
        "one rmdir, nothing recursive"
    );
}

#[tokio::test]
async fn block_unpublish_removes_the_device_node() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    e.unpublish(BTARGET).await.unwrap();
    assert!(!e.f.exists(Path::new(BTARGET)));
    assert!(e.f.calls().contains(&Call::RemoveFile(BTARGET.into())));
    assert!(e.f.is_connected(NQN), "unpublish never disconnects");
}

// ---------------------------------------------------------------- unstage

#[tokio::test]
async fn unstage_unmounts_disconnects_and_is_idempotent() {
    let e = env();
    e.stage_fs().await;
    e.unstage(STAGING).await.unwrap();
    assert!(e.mounts_at(STAGING).is_empty());
    assert!(!e.f.is_connected(NQN));
    assert!(e.record().is_none());
    assert!(
        e.f.exists(Path::new(STAGING)),
        "the CO's staging directory stays"
    );
    e.f.clear_calls();
    e.unstage(STAGING).await.unwrap();
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn unstage_refuses_while_still_published() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    let err = e.unstage(STAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains(TARGET), "{}", err.message());
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(e.f.is_connected(NQN));
}

#[tokio::test]
async fn unstage_refuses_to_disconnect_a_device_mounted_elsewhere() {
    let e = env();
    e.stage_fs().await;
    e.f.add_mount(e.dev(), Path::new("/mnt/someone"), "ext4", "/dev/nvme0n1");
    let err = e.unstage(STAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0);
}

#[tokio::test]
async fn unstage_refuses_to_disconnect_a_device_open_exclusively() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.f.claim(&e.f.device(NQN).unwrap().0);
    let err = e.unstage(BSTAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("exclusively"), "{}", err.message());
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0);
}

#[tokio::test]
async fn block_unstage_refuses_while_a_device_node_is_published() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    let err = e.unstage(BSTAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(e.f.is_connected(NQN));
    e.unpublish(BTARGET).await.unwrap();
    e.unstage(BSTAGING).await.unwrap();
    assert!(!e.f.is_connected(NQN));
}

#[tokio::test]
async fn unstage_without_a_record_disconnects_by_the_naming_rule() {
    let e = env();
    e.stage_fs().await;
    e.f.write(&Path::new(STATE).join("pvc-1.json"), "garbage");
    e.unstage(STAGING).await.unwrap();
    assert_eq!(
        e.f.commands().last(),
        Some(&HostCommand::NvmeDisconnect { nqn: NQN.into() })
    );
}

#[tokio::test]
async fn unstage_never_disconnects_outside_the_prefix() {
    let e = env();
    // A record tampered with to point at someone else's subsystem.
    e.f.connect_now("nqn.2014-08.org.example:root");
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    let path = Path::new(STATE).join("pvc-1.json");
    let text =
        e.f.read(&path)
            .unwrap()
            .replace(NQN, "nqn.2014-08.org.example:root");
    e.f.write(&path, &text);
    let err = e.unstage(BSTAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(e.f.is_connected("nqn.2014-08.org.example:root"));
}

// ---------------------------------------------------------------- recovery

#[tokio::test]
async fn stale_mount_on_renumbered_controller_is_remounted() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-other");
    e.stage_fs().await;
    e.publish_fs(TARGET, true).await.unwrap();
    let old = e.dev();
    // The controller is lost and comes back under new numbers.
    e.f.renumber(NQN);
    let new = e.dev();
    assert_ne!(old, new);
    e.f.clear_calls();
    // kubelet publishes again (e.g. the pod restarted).
    e.publish_fs(TARGET, true).await.unwrap();
    assert_eq!(e.f.ran(Program::Mkfs), 0, "recovery never formats");
    let s = e.mounts_at(STAGING);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].dev(), new);
    let t = e.mounts_at(TARGET);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].dev(), new);
    assert!(t[0].read_only());
}

#[tokio::test]
async fn stage_remounts_a_staging_path_whose_device_vanished() {
    let e = env();
    e.stage_fs().await;
    e.f.renumber(NQN);
    e.stage_fs().await;
    let s = e.mounts_at(STAGING);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].dev(), e.dev());
    assert_eq!(e.f.ran(Program::Mkfs), 1, "only the first stage formatted");
}

#[tokio::test]
async fn a_volume_once_mounted_here_is_never_formatted_when_it_reads_empty_after_a_reconnect() {
    let e = env();
    e.stage_fs().await;
    assert!(e.record().unwrap().filesystem_seen);
    // After the reconnect the device reads as empty for a while.
    e.f.renumber(NQN);
    e.f.update_volume(NQN, |v| v.fs = None);
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::Mkfs), 1, "only the first stage formatted");
    // Once the data is visible again, the same call succeeds.
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_never_torn_down_while_the_volume_is_mounted() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    // The controller comes back, but its namespace does not (yet).
    e.f.defer_namespaces(true);
    e.f.renumber(NQN);
    e.f.clear_calls();
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert!(
        err.message().contains("no block device"),
        "{}",
        err.message()
    );
    let err = e.publish_fs(TARGET, false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0, "{:?}", e.f.commands());
    assert_eq!(e.f.ran(Program::NvmeConnect), 0, "{:?}", e.f.commands());
    assert!(e.f.is_connected(NQN));
    assert_eq!(e.mounts_at(STAGING).len(), 1, "mounts untouched");
    assert_eq!(e.mounts_at(TARGET).len(), 1);
    // Once the namespace shows, the retries recover.
    e.f.show_namespaces(NQN);
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
    assert_eq!(e.mounts_at(TARGET)[0].dev(), e.dev());
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_never_torn_down_while_a_block_volume_is_published() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    e.f.defer_namespaces(true);
    e.f.renumber(NQN);
    e.f.clear_calls();
    let err = e
        .publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let err = e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0, "{:?}", e.f.commands());
    assert!(e.f.is_connected(NQN));
    assert!(e.f.exists(Path::new(BTARGET)), "the device node stays");
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_and_nothing_mounted_is_made_again() {
    let e = env();
    e.f.defer_namespaces(true);
    e.f.connect_now(NQN);
    e.f.defer_namespaces(false);
    e.stage_fs().await;
    let programs: Vec<Program> =
        e.f.commands()
            .iter()
            .map(Program::of)
            .filter(|p| matches!(p, Program::NvmeConnect | Program::NvmeDisconnect))
            .collect();
    assert_eq!(
        programs,
        vec![Program::NvmeDisconnect, Program::NvmeConnect]
    );
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
}

#[tokio::test]
async fn a_mount_of_another_live_device_is_never_touched() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-other");
    let other = e.f.device("nqn.2000-02.com.mikrotik:pvc-other").unwrap().1;
    e.f.add_mount(other, Path::new(STAGING), "ext4", "/dev/nvme0n1");
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(!e.f.calls().iter().any(|c| matches!(c, Call::Umount { .. })));
}

#[tokio::test]
async fn stats_detect_and_remount_a_renumbered_volume() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.renumber(NQN);
    let r = e.stats(TARGET).await.unwrap();
    let c = r.volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("remounted"), "{}", c.message);
    assert_eq!(e.mounts_at(TARGET)[0].dev(), e.dev());
    let r = e.stats(TARGET).await.unwrap();
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn block_publish_after_a_controller_loss_reconnects_and_recreates_the_node() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    e.f.lose_connection(NQN);
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.rdev, Some(e.dev()));
}

// ---------------------------------------------------------------- stats

#[tokio::test]
async fn stats_report_bytes_inodes_and_a_normal_condition() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.set_statfs(nvme::FsStats {
        total_bytes: 1000,
        free_bytes: 400,
        available_bytes: 300,
        total_inodes: 50,
        free_inodes: 20,
    });
    let r = e.stats(TARGET).await.unwrap();
    assert_eq!(r.usage.len(), 2);
    assert_eq!(
        (r.usage[0].total, r.usage[0].used, r.usage[0].available),
        (1000, 600, 300)
    );
    assert_eq!(r.usage[0].unit, proto::volume_usage::Unit::Bytes as i32);
    assert_eq!(
        (r.usage[1].total, r.usage[1].used, r.usage[1].available),
        (50, 30, 20)
    );
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn stats_report_abnormal_when_the_device_is_gone() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.lose_connection(NQN);
    e.f.update_volume(NQN, |v| v.reachable = false);
    let r = e.stats(TARGET).await.unwrap();
    let c = r.volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("no longer exists"), "{}", c.message);
    assert!(c.message.contains("not connected"), "{}", c.message);
}

#[tokio::test]
async fn stats_never_reconnect_a_volume_someone_disconnected() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.lose_connection(NQN);
    e.f.clear_calls();
    let c = e.stats(TARGET).await.unwrap().volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(e.f.commands().is_empty(), "{:?}", e.f.commands());
    assert!(!e.f.is_connected(NQN));
}

#[tokio::test]
async fn stats_report_abnormal_while_the_controller_reconnects() {
    let e = env();
    e.stage_fs().await;
    e.f.set_state(NQN, "connecting");
    let c = e.stats(STAGING).await.unwrap().volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("connecting"), "{}", c.message);
}

#[tokio::test]
async fn stats_of_a_block_volume_report_its_size() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    let r = e.stats(BTARGET).await.unwrap();
    assert_eq!(r.usage.len(), 1);
    assert_eq!(r.usage[0].total, 1 << 30);
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn stats_of_a_missing_or_unmounted_path_are_not_found() {
    let e = env();
    assert_eq!(
        e.stats("/nowhere").await.unwrap_err().code(),
        Code::NotFound
    );
    e.f.mkdir(Path::new(TARGET));
    assert_eq!(e.stats(TARGET).await.unwrap_err().code(), Code::NotFound);
}

// ---------------------------------------------------------------- expand

#[tokio::test]
async fn expand_rescans_and_grows_ext4_online() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.f.update_volume(NQN, |v| v.size_bytes = 2 << 30);
    e.f.clear_calls();
    let cap = e.expand(TARGET, 2 << 30, None).await.unwrap();
    assert_eq!(cap, 2 << 30);
    let (dev_path, _) = e.f.device(NQN).unwrap();
    assert_eq!(
        e.f.commands(),
        vec![
            HostCommand::NvmeNsRescan {
                controller: "/dev/nvme0".into()
            },
            HostCommand::Resize2fs { device: dev_path }
        ]
    );
}

#[tokio::test]
async fn expand_grows_xfs_through_its_mount_point() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage(stage_req(
        cap(false, "xfs", Mode::SingleNodeWriter, &[]),
        STAGING,
    ))
    .await
    .unwrap();
    e.f.update_volume(NQN, |v| v.size_bytes = 3 << 30);
    e.f.clear_calls();
    e.expand(STAGING, 3 << 30, None).await.unwrap();
    assert_eq!(
        e.f.commands().last(),
        Some(&HostCommand::XfsGrowfs {
            mount_point: STAGING.into()
        })
    );
}

#[tokio::test]
async fn block_expand_only_rescans() {
    let e = env();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    e.f.update_volume(NQN, |v| v.size_bytes = 2 << 30);
    e.f.clear_calls();
    assert_eq!(
        e.expand(BTARGET, 2 << 30, Some(block_cap())).await.unwrap(),
        2 << 30
    );
    let programs: Vec<Program> = e.f.commands().iter().map(Program::of).collect();
    assert_eq!(programs, vec![Program::NvmeNsRescan]);
}

#[tokio::test]
async fn expand_of_a_volume_not_staged_here_is_not_found() {
    let e = env();
    assert_eq!(
        e.expand(TARGET, 2 << 30, None).await.unwrap_err().code(),
        Code::NotFound
    );
}

// ---------------------------------------------------------------- capabilities

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

// ---------------------------------------------------------------- orphans

#[tokio::test]
async fn orphan_cleanup_disconnects_only_what_nothing_accounts_for() {
    let e = env();
    let p = "nqn.2000-02.com.mikrotik:";
    // Staged through the service: recorded, kept.
    e.stage_fs().await;
    // Someone else's subsystem: never considered.
    e.f.connect_now("nqn.2014-08.org.example:root-disk");
    // Under the prefix, nothing knows it: an orphan.
    e.f.connect_now(&format!("{p}pvc-orphan"));
    // Under the prefix, mounted somewhere: kept.
    e.f.connect_now(&format!("{p}pvc-mounted"));
    let d = e.f.device(&format!("{p}pvc-mounted")).unwrap().1;
    e.f.add_mount(d, Path::new("/mnt/x"), "ext4", "/dev/x");
    // Under the prefix, published as a device node under kubelet: kept.
    e.f.connect_now(&format!("{p}pvc-vm"));
    let d = e.f.device(&format!("{p}pvc-vm")).unwrap().1;
    e.f.put_device_node(
        Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-vm/pod"),
        d,
    );
    // Under the prefix, recorded but its staging path is gone: an orphan.
    e.f.connect_now(&format!("{p}pvc-gone"));
    e.f.write(
        &Path::new(STATE).join("pvc-gone.json"),
        &serde_json::to_string(&VolumeRecord {
            volume_id: "pvc-gone".into(),
            nqn: format!("{p}pvc-gone"),
            address: "10.0.0.1".into(),
            port: 4420,
            ctrl_loss_tmo: 600,
            reconnect_delay: 5,
            keep_alive_tmo: 5,
            staging_path: "/var/lib/kubelet/plugins/gone/globalmount".into(),
            block: false,
            fs_type: Some("ext4".into()),
            mount_flags: vec![],
            formatted_here: false,
            filesystem_seen: true,
            targets: Default::default(),
            pvc: None,
        })
        .unwrap(),
    );
    e.f.clear_calls();
    let r = e
        .svc
        .clean_orphans(OrphanCleanup::Disconnect)
        .await
        .unwrap();
    let mut orphans = r.orphans.clone();
    orphans.sort();
    assert_eq!(
        orphans,
        vec![format!("{p}pvc-gone"), format!("{p}pvc-orphan")]
    );
    assert_eq!(r.disconnected.len(), 2);
    assert_eq!(r.kept.len(), 3, "{:?}", r.kept);
    assert!(e.f.is_connected("nqn.2014-08.org.example:root-disk"));
    assert!(e.f.is_connected(NQN));
    assert!(e.f.is_connected(&format!("{p}pvc-mounted")));
    assert!(e.f.is_connected(&format!("{p}pvc-vm")));
    assert!(!e.f.is_connected(&format!("{p}pvc-orphan")));
    assert!(!e.f.is_connected(&format!("{p}pvc-gone")));
    for c in e.f.commands() {
        let HostCommand::NvmeDisconnect { nqn } = c else {
            panic!("{c:?}")
        };
        assert!(nqn.starts_with(p));
    }
}

#[tokio::test]
async fn subsystems_of_another_volume_prefix_or_another_nqn_are_never_disconnected() {
    let e = env();
    // The driver's NQN prefix but a volume ID this installation never
    // makes (another cluster on the same RDS, a disk made by hand).
    let other = "nqn.2000-02.com.mikrotik:other-1";
    // A diskless node's NVMe-oF root disk.
    let root = "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-000000000001";
    e.f.connect_now(other);
    e.f.connect_now(root);
    let r = e
        .svc
        .clean_orphans(OrphanCleanup::Disconnect)
        .await
        .unwrap();
    assert!(r.orphans.is_empty(), "{:?}", r.orphans);
    let mut suspects = HashSet::new();
    for _ in 0..3 {
        let r = e
            .svc
            .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
            .await
            .unwrap();
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
    }
    // Nor does an unstage of such a volume ID disconnect it.
    let err = e
        .svc
        .node_unstage_volume(Request::new(proto::NodeUnstageVolumeRequest {
            volume_id: "other-1".into(),
            staging_target_path: STAGING.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        !e.f.commands()
            .iter()
            .any(|c| matches!(c, HostCommand::NvmeDisconnect { .. })),
        "{:?}",
        e.f.commands()
    );
    assert!(e.f.is_connected(other));
    assert!(e.f.is_connected(root));
}

#[tokio::test]
async fn periodic_scans_disconnect_only_what_two_scans_in_a_row_found_orphaned() {
    let e = env();
    let p = "nqn.2000-02.com.mikrotik:";
    let orphan = format!("{p}pvc-orphan");
    let brief = format!("{p}pvc-brief");
    e.f.connect_now("nqn.2014-08.org.example:root-disk");
    e.f.connect_now(&orphan);
    e.f.connect_now(&brief);
    let mut suspects = HashSet::new();

    let r = e
        .svc
        .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
        .await
        .unwrap();
    assert_eq!(r.orphans.len(), 2);
    assert_eq!(r.pending.len(), 2, "first sighting: nothing disconnected");
    assert!(r.disconnected.is_empty());
    assert!(e.f.commands().is_empty());

    // Between the scans `brief` gets mounted (a NodeStage finished): it is
    // no orphan any more and the second scan must leave it alone.
    let d = e.f.device(&brief).unwrap().1;
    e.f.add_mount(d, Path::new("/mnt/brief"), "ext4", "/dev/x");
    let r = e
        .svc
        .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
        .await
        .unwrap();
    assert_eq!(r.disconnected, vec![orphan.clone()]);
    assert!(!e.f.is_connected(&orphan));
    assert!(e.f.is_connected(&brief));
    assert!(e.f.is_connected("nqn.2014-08.org.example:root-disk"));
    assert!(suspects.is_empty());
}

#[tokio::test]
async fn a_periodic_scan_skips_a_volume_with_an_rpc_in_flight_and_restarts_its_count() {
    let e = env();
    let nqn = "nqn.2000-02.com.mikrotik:pvc-busy";
    e.f.connect_now(nqn);
    let mut suspects = HashSet::new();
    e.svc
        .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
        .await
        .unwrap();
    assert!(suspects.contains(nqn));
    {
        let _busy = e.svc.inner.locks.try_lock("pvc-busy").unwrap();
        let r = e
            .svc
            .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
            .await
            .unwrap();
        assert!(r.disconnected.is_empty());
        assert!(suspects.is_empty(), "kept: the count starts over");
    }
    let r = e
        .svc
        .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
        .await
        .unwrap();
    assert!(
        r.disconnected.is_empty(),
        "one scan after the RPC is not enough"
    );
    let r = e
        .svc
        .scan_orphans(OrphanCleanup::Disconnect, &mut suspects)
        .await
        .unwrap();
    assert_eq!(r.disconnected, vec![nqn.to_string()]);
}

#[tokio::test]
async fn periodic_scans_in_report_mode_never_disconnect() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    let mut suspects = HashSet::new();
    for _ in 0..3 {
        let r = e
            .svc
            .scan_orphans(OrphanCleanup::Report, &mut suspects)
            .await
            .unwrap();
        assert_eq!(r.orphans.len(), 1);
    }
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn orphan_cleanup_in_report_mode_touches_nothing() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    let r = e.svc.clean_orphans(OrphanCleanup::Report).await.unwrap();
    assert_eq!(r.orphans.len(), 1);
    assert!(r.disconnected.is_empty());
    assert!(e.f.commands().is_empty());
    let r = e.svc.clean_orphans(OrphanCleanup::Off).await.unwrap();
    assert_eq!(r, OrphanReport::default());
}

#[tokio::test]
async fn orphan_cleanup_only_reports_when_the_records_cannot_be_read() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    // The state directory is not a directory.
    e.f.write(Path::new(STATE), "oops");
    let r = e
        .svc
        .clean_orphans(OrphanCleanup::Disconnect)
        .await
        .unwrap();
    assert_eq!(r.orphans.len(), 1);
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn an_unreadable_record_still_claims_its_volume() {
    let e = env();
    e.f.connect_now(NQN);
    e.f.write(&Path::new(STATE).join("pvc-1.json"), "{");
    let r = e
        .svc
        .clean_orphans(OrphanCleanup::Disconnect)
        .await
        .unwrap();
    assert!(r.orphans.is_empty());
    assert!(e.f.is_connected(NQN));
}

// ---------------------------------------------------------------- errors

#[test]
fn data_path_errors_map_to_the_codes_the_sidecars_expect() {
    let cases = [
        (
            nvme::Error::refused("format", "holds xfs"),
            Code::FailedPrecondition,
        ),
        (
            nvme::Error::refused_for_now("format", "unreadable"),
            Code::Unavailable,
        ),
        (
            nvme::Error::NoDevice {
                nqn: NQN.into(),
                waited: Duration::from_secs(1),
                detail: "x".into(),
            },
            Code::Unavailable,
        ),
        (
            nvme::Error::ForeignNqn {
                nqn: "a".into(),
                prefix: "b".into(),
            },
            Code::FailedPrecondition,
        ),
        (
            nvme::Error::io(
                "mount",
                "/x",
                std::io::Error::new(std::io::ErrorKind::TimedOut, "slow"),
            ),
            Code::DeadlineExceeded,
        ),
    ];
    for (source, code) in cases {
        let s: Status = NodeError::DataPath {
            op: "stage volume pvc-1".into(),
            source,
        }
        .into();
        assert_eq!(s.code(), code, "{}", s.message());
        assert!(
            s.message().starts_with("stage volume pvc-1: "),
            "{}",
            s.message()
        );
    }
}

// ---------------------------------------------------------------- events

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

#[tokio::test]
async fn a_stage_and_publish_that_succeed_raise_no_event() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    e.stats(TARGET).await.unwrap();
    e.unpublish(TARGET).await.unwrap();
    e.unstage(STAGING).await.unwrap();
    e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap();
    e.publish(publish_req(block_cap(), BSTAGING, BTARGET, false))
        .await
        .unwrap();
    assert_eq!(e.events().await, vec![]);
}

#[tokio::test]
async fn a_foreign_filesystem_raises_format_refused_on_the_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let ev = the_event(&e, FORMAT_REFUSED).await;
    assert!(ev.message.contains("xfs"), "{}", ev.message);
    assert!(ev.message.contains("needs a person"), "{}", ev.message);
    assert_eq!(e.reasons().await, vec![FORMAT_REFUSED]);
}

#[tokio::test]
async fn a_volume_that_reads_empty_after_being_formatted_raises_format_refused() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.insert(FORMATTED.into(), "true".into());
    e.stage(r).await.unwrap_err();
    let ev = the_event(&e, FORMAT_REFUSED).await;
    assert!(ev.message.contains("formatted before"), "{}", ev.message);
}

#[tokio::test]
async fn a_transient_refusal_says_it_may_clear() {
    let e = env();
    e.f.reply(Program::Blkid, Reply::Timeout);
    e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    let ev = the_event(&e, FORMAT_REFUSED).await;
    assert!(ev.message.contains("may clear by itself"), "{}", ev.message);
}

#[tokio::test]
async fn a_failed_staging_mount_raises_mount_failed_and_no_refusal() {
    let e = env();
    e.f.fail(SysOp::Mount, Errno::EIO);
    let err = e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    assert!(e.mounts_at(STAGING).is_empty());
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains(STAGING), "{}", ev.message);
    assert!(err.message().contains(STAGING), "{}", err.message());
    assert_eq!(e.reasons().await, vec![MOUNT_FAILED]);
    // kubelet retries; the mount works now and nothing more is raised.
    e.stage_fs().await;
    assert_eq!(e.reasons().await, vec![MOUNT_FAILED]);
}

#[tokio::test]
async fn a_failed_mkfs_raises_mount_failed() {
    let e = env();
    e.f.reply(Program::Mkfs, Reply::exit(1));
    e.stage(stage_req(fs_cap(), STAGING)).await.unwrap_err();
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains("mkfs"), "{}", ev.message);
}

#[tokio::test]
async fn a_failed_publish_bind_mount_raises_mount_failed() {
    let e = env();
    e.stage_fs().await;
    e.f.fail(SysOp::Mount, Errno::EACCES);
    e.publish_fs(TARGET, false).await.unwrap_err();
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains(TARGET), "{}", ev.message);
}

#[tokio::test]
async fn publish_recovering_a_stale_staging_mount_raises_stale_mount_recovered() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, true).await.unwrap();
    e.f.renumber(NQN);
    assert_eq!(e.events().await, vec![]);
    e.publish_fs(TARGET, true).await.unwrap();
    let ev = the_event(&e, STALE_MOUNT_RECOVERED).await;
    assert!(ev.message.contains("remounted"), "{}", ev.message);
    assert!(ev.message.contains("re-bound"), "{}", ev.message);
    // Recovered once: the next publish finds everything current.
    e.publish_fs(TARGET, true).await.unwrap();
    assert_eq!(e.reasons().await, vec![STALE_MOUNT_RECOVERED]);
}

#[tokio::test]
async fn stage_remounting_a_vanished_device_raises_stale_mount_recovered() {
    let e = env();
    e.stage_fs().await;
    e.f.renumber(NQN);
    e.stage_fs().await;
    let ev = the_event(&e, STALE_MOUNT_RECOVERED).await;
    assert!(ev.message.contains("remounted from"), "{}", ev.message);
}

#[tokio::test]
async fn stats_recovery_reaches_the_pvc_through_the_record() {
    let e = env();
    e.stage_fs().await;
    e.publish_fs(TARGET, false).await.unwrap();
    assert_eq!(
        e.record().unwrap().pvc,
        Some((PVC_NS.to_string(), PVC_NAME.to_string()))
    );
    e.f.renumber(NQN);
    // NodeGetVolumeStats carries no volume context.
    e.stats(TARGET).await.unwrap();
    the_event(&e, STALE_MOUNT_RECOVERED).await;
}

#[tokio::test]
async fn without_pvc_keys_in_the_context_events_name_no_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context
        .retain(|k, _| !k.starts_with("csi.storage.k8s.io/"));
    e.stage(r).await.unwrap_err();
    let all = e.events().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].reason, FORMAT_REFUSED);
    assert_eq!(all[0].pvc, None, "only logged: no PVC to record it on");
}

#[tokio::test]
async fn only_the_namespace_and_name_together_identify_the_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.remove("csi.storage.k8s.io/pvc/namespace");
    e.stage(r).await.unwrap_err();
    assert_eq!(e.events().await[0].pvc, None);
}

#[tokio::test]
async fn a_hung_event_sink_never_delays_an_rpc() {
    struct Hung;
    impl attachment_manager::EventSink for Hung {
        fn emit(&self, _: VolumeEvent) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }
    let e = env_with(
        Arc::new(LogEvents::default()),
        NodeEvents::spawn(Arc::new(Hung), 1, Duration::from_secs(3600)),
    );
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    for _ in 0..5 {
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            e.stage(stage_req(fs_cap(), STAGING)),
        )
        .await
        .expect("the RPC answers while the sink hangs");
        assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    }
}

mod format_record;
