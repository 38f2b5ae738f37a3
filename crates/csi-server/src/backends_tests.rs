use std::sync::atomic::Ordering;

use attachment_manager::cluster::{LogEvents, MemoryStore, StaticNodes};
use attachment_manager::{Manager, NoMigrations, Policy};
use storage::IdPrefix;
use tonic::Code;

use super::*;
use crate::backend::fake::FakeBackend;
use crate::controller::ControllerConfig;
use crate::proto::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume};

const GIB: i64 = 1 << 30;

/// Two fakes behind one controller: `default` (Go-compatible IDs) and
/// `lab2` (IDs `lab2-pvc-...`), sharing the attachment manager as one
/// controller's backends do.
struct Two {
    svc: Backends<FakeBackend>,
    default: Arc<FakeBackend>,
    lab2: Arc<FakeBackend>,
}

fn config(name: &str, default: bool) -> ControllerConfig {
    let q = qualifier(name, default);
    ControllerConfig {
        defaults: crate::params::tests::defaults(),
        max_volume_bytes: 64 << 30,
        volume_id_prefix: IdPrefix::new(&format!("{q}pvc-")).unwrap(),
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        topology: if default {
            ("rds.csi.srvlab.io/rds".into(), name.into())
        } else {
            (format!("rds.csi.srvlab.io/backend-{name}"), "true".into())
        },
        max_list_entries: 1000,
        qualifier: q,
    }
}

/// One controller's nodes and attachment manager, shared by its backends.
fn cluster() -> (Arc<StaticNodes>, Arc<Manager>) {
    let nodes = Arc::new(StaticNodes::new(["node-a", "node-b"].map(String::from)));
    let manager = Arc::new(Manager::new(
        Policy::default(),
        Arc::new(MemoryStore::default()),
        nodes.clone(),
        Arc::new(NoMigrations),
        Arc::new(LogEvents::default()),
        attachment_manager::AttachMetrics::unregistered(),
    ));
    (nodes, manager)
}

async fn two() -> Two {
    let (nodes, manager) = cluster();
    manager.rebuild().await.unwrap();
    let member = |name: &str, default: bool, backend: Arc<FakeBackend>| Member {
        name: name.into(),
        service: Arc::new(ControllerService::new(
            config(name, default),
            backend,
            nodes.clone(),
            manager.clone(),
            None,
            RpcMetrics::unregistered(),
        )),
    };
    let (default, lab2) = (Arc::new(FakeBackend::new()), Arc::new(FakeBackend::new()));
    let svc = Backends::new(
        vec![
            member("default", true, default.clone()),
            member("lab2", false, lab2.clone()),
        ],
        RpcMetrics::unregistered(),
    )
    .unwrap();
    Two { svc, default, lab2 }
}

fn block() -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn create_req(name: &str, backend: Option<&str>) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![block()],
        parameters: backend
            .map(|b| HashMap::from([(P_BACKEND.to_string(), b.to_string())]))
            .unwrap_or_default(),
        ..Default::default()
    }
}

impl Two {
    async fn create(&self, name: &str, backend: Option<&str>) -> Result<proto::Volume, Status> {
        let r = self
            .svc
            .create_volume(Request::new(create_req(name, backend)));
        Ok(r.await?.into_inner().volume.unwrap())
    }

    async fn publish(&self, volume: &str, node: &str) -> Result<(), Status> {
        let req = proto::ControllerPublishVolumeRequest {
            volume_id: volume.into(),
            node_id: node.into(),
            volume_capability: Some(block()),
            ..Default::default()
        };
        self.svc
            .controller_publish_volume(Request::new(req))
            .await
            .map(drop)
    }

    async fn delete(&self, volume: &str) -> Result<(), Status> {
        let req = proto::DeleteVolumeRequest {
            volume_id: volume.into(),
            ..Default::default()
        };
        self.svc.delete_volume(Request::new(req)).await.map(drop)
    }

    async fn list(&self, max: i32, token: &str) -> Result<(Vec<String>, String), Status> {
        let r = self
            .svc
            .list_volumes(Request::new(proto::ListVolumesRequest {
                max_entries: max,
                starting_token: token.into(),
            }))
            .await?
            .into_inner();
        let ids = r
            .entries
            .into_iter()
            .map(|e| e.volume.unwrap().volume_id)
            .collect();
        Ok((ids, r.next_token))
    }
}

fn code<T>(r: Result<T, Status>) -> Code {
    r.err().map_or(Code::Ok, |s| s.code())
}

#[tokio::test]
async fn a_class_without_a_backend_provisions_go_compatible_ids_on_the_default() {
    let t = two().await;
    let v = t.create("pvc-1", None).await.unwrap();
    assert_eq!(v.volume_id, "pvc-1");
    assert!(t.default.disks.lock().unwrap().contains_key("pvc-1"));
    assert!(t.lab2.disks.lock().unwrap().is_empty());
    assert_eq!(
        v.accessible_topology[0].segments["rds.csi.srvlab.io/rds"],
        "default"
    );
}

#[tokio::test]
async fn a_class_naming_a_backend_provisions_there_with_the_backend_in_the_id() {
    let t = two().await;
    let v = t.create("pvc-1", Some("lab2")).await.unwrap();
    assert_eq!(v.volume_id, "lab2-pvc-1");
    assert!(t.lab2.disks.lock().unwrap().contains_key("lab2-pvc-1"));
    assert!(t.default.disks.lock().unwrap().is_empty());
    assert_eq!(
        v.accessible_topology[0].segments["rds.csi.srvlab.io/backend-lab2"],
        "true"
    );
    // The NQN carries the whole ID, so the node finds the right subsystem.
    assert!(v.volume_context["nqn"].ends_with(":lab2-pvc-1"));
    // A retry finds it; publish and delete go where the ID says.
    assert_eq!(
        t.create("pvc-1", Some("lab2")).await.unwrap().volume_id,
        "lab2-pvc-1"
    );
    t.publish("lab2-pvc-1", "node-a").await.unwrap();
    assert!(t.default.calls().is_empty(), "{:?}", t.default.calls());
    assert_eq!(
        code(t.delete("lab2-pvc-1").await),
        Code::FailedPrecondition,
        "still published"
    );
}

#[tokio::test]
async fn an_unknown_backend_name_is_refused_before_any_backend_is_asked() {
    let t = two().await;
    let err = t.create("pvc-1", Some("lab3")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("lab3") && err.message().contains("default, lab2"));
    assert!(t.default.calls().is_empty() && t.lab2.calls().is_empty());
}

#[tokio::test]
async fn a_copy_between_backends_is_refused() {
    let t = two().await;
    t.create("pvc-src", None).await.unwrap();
    let mut req = create_req("pvc-copy", Some("lab2"));
    req.volume_content_source = Some(proto::VolumeContentSource {
        r#type: Some(proto::volume_content_source::Type::Volume(
            proto::volume_content_source::VolumeSource {
                volume_id: "pvc-src".into(),
            },
        )),
    });
    let err = t.svc.create_volume(Request::new(req)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("between backends"),
        "{}",
        err.message()
    );
    assert!(t.lab2.calls().is_empty());
}

#[tokio::test]
async fn one_backend_down_makes_only_its_own_volumes_unavailable() {
    let t = two().await;
    t.create("pvc-1", None).await.unwrap();
    t.create("pvc-2", Some("lab2")).await.unwrap();
    t.lab2.down.store(true, Ordering::Relaxed);
    assert_eq!(
        code(t.create("pvc-3", Some("lab2")).await),
        Code::Unavailable
    );
    assert_eq!(
        code(t.publish("lab2-pvc-2", "node-a").await),
        Code::Unavailable
    );
    assert_eq!(code(t.delete("lab2-pvc-2").await), Code::Unavailable);
    // The default backend goes on.
    t.create("pvc-4", None).await.unwrap();
    t.publish("pvc-1", "node-a").await.unwrap();
    t.delete("pvc-4").await.unwrap();
    // A listing over both cannot be complete: it says so.
    assert_eq!(code(t.list(0, "").await), Code::Unavailable);
    t.lab2.down.store(false, Ordering::Relaxed);
    t.delete("lab2-pvc-2").await.unwrap();
}

#[tokio::test]
async fn listings_page_through_every_backend_once() {
    let t = two().await;
    for i in 0..3 {
        t.create(&format!("pvc-d{i}"), None).await.unwrap();
        t.create(&format!("pvc-l{i}"), Some("lab2")).await.unwrap();
    }
    let (all, next) = t.list(0, "").await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(next.is_empty());
    for page in 1..=7 {
        let (mut seen, mut token) = (Vec::new(), String::new());
        loop {
            let (ids, next) = t.list(page, &token).await.unwrap();
            assert!(ids.len() <= page as usize);
            seen.extend(ids);
            if next.is_empty() {
                break;
            }
            token = next;
        }
        assert_eq!(seen, all, "pages of {page}");
    }
    assert_eq!(code(t.list(1, "lab9/").await), Code::Aborted);
    assert_eq!(code(t.list(1, "junk").await), Code::Aborted);
}

#[tokio::test]
async fn snapshots_of_a_named_backend_carry_its_name() {
    let t = two().await;
    t.create("pvc-1", Some("lab2")).await.unwrap();
    let snap = t
        .svc
        .create_snapshot(Request::new(proto::CreateSnapshotRequest {
            source_volume_id: "lab2-pvc-1".into(),
            name: "snapshot-1".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    assert!(
        snap.snapshot_id.starts_with("lab2-snap-"),
        "{}",
        snap.snapshot_id
    );
    let listed = t
        .svc
        .list_snapshots(Request::new(proto::ListSnapshotsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.entries.len(), 1);
    t.svc
        .delete_snapshot(Request::new(proto::DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        }))
        .await
        .unwrap();
    assert!(!t.lab2.disks.lock().unwrap().contains_key(&snap.snapshot_id));
}

#[tokio::test]
async fn overlapping_id_prefixes_are_refused() {
    let (nodes, manager) = cluster();
    let member = |name: &str, config: ControllerConfig| Member {
        name: name.into(),
        service: Arc::new(ControllerService::new(
            config,
            Arc::new(FakeBackend::new()),
            nodes.clone(),
            manager.clone(),
            None,
            RpcMetrics::unregistered(),
        )),
    };
    // A backend named like the default prefix's head would own pvc-pvc-...
    let overlap = Backends::new(
        vec![
            member("default", config("default", true)),
            member("pvc", config("pvc", false)),
        ],
        RpcMetrics::unregistered(),
    );
    assert!(matches!(overlap, Err(ConfigError::Overlap { .. })));
    // An empty default prefix owns every ID.
    let mut empty = config("default", true);
    empty.volume_id_prefix = IdPrefix::new("").unwrap();
    let r = Backends::new(
        vec![
            member("default", empty),
            member("lab2", config("lab2", false)),
        ],
        RpcMetrics::unregistered(),
    );
    assert!(matches!(r, Err(ConfigError::Overlap { .. })));
    let dup = Backends::new(
        vec![
            member("lab2", config("lab2", true)),
            member("lab2", config("lab2", false)),
        ],
        RpcMetrics::unregistered(),
    );
    assert!(matches!(dup, Err(ConfigError::Duplicate(_))));
}

#[test]
fn backend_names_are_short_lowercase_labels() {
    for ok in ["lab2", "a", "linux-1", &"x".repeat(MAX_NAME_LEN)] {
        assert!(valid_name(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "Lab2",
        "-a",
        "a-",
        "a.b",
        "a_b",
        &"x".repeat(MAX_NAME_LEN + 1),
    ] {
        assert!(valid_name(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn a_named_backend_is_only_provisioned_for_nodes_that_reach_it() {
    let t = two().await;
    let on = |segments: &[(&str, &str)]| {
        let mut req = create_req("pvc-1", Some("lab2"));
        let topology = proto::Topology {
            segments: segments
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        req.accessibility_requirements = Some(proto::TopologyRequirement {
            requisite: vec![topology.clone()],
            preferred: vec![topology],
        });
        req
    };
    // A node that reports only the default backend's segment.
    let unreached = on(&[("rds.csi.srvlab.io/rds", "default")]);
    let err = t
        .svc
        .create_volume(Request::new(unreached))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(t.lab2.calls().is_empty());
    let reached = on(&[
        ("rds.csi.srvlab.io/rds", "default"),
        ("rds.csi.srvlab.io/backend-lab2", "true"),
    ]);
    t.svc.create_volume(Request::new(reached)).await.unwrap();
    // The default backend stays lenient: a segment without its key is
    // a node of an older release.
    let mut old = create_req("pvc-2", None);
    old.accessibility_requirements = Some(proto::TopologyRequirement {
        requisite: vec![proto::Topology::default()],
        preferred: vec![],
    });
    t.svc.create_volume(Request::new(old)).await.unwrap();
}
