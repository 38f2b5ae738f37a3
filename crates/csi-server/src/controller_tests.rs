use std::collections::HashMap;
use std::sync::Arc;

use tonic::Code;

use super::*;
use crate::backend::fake::FakeBackend;
use crate::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use attachment_manager::cluster::{LogEvents, MemoryStore, StaticNodes};

const GIB: i64 = 1 << 30;

fn config() -> ControllerConfig {
    ControllerConfig {
        defaults: ParamDefaults {
            nvme_address: "10.0.0.1".into(),
            nvme_port: 4420,
            volume_path: RosPath::new("/storage-pool/metal-csi").unwrap(),
            volume_path_root: RosPath::new("/storage-pool").unwrap(),
        },
        max_volume_bytes: 64 << 30,
        volume_id_prefix: SlotPrefix::new("pvc-").unwrap(),
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
        max_list_entries: 1000,
    }
}

async fn service() -> (ControllerService<FakeBackend>, Arc<FakeBackend>) {
    let (svc, backend, _) = service_with_nodes().await;
    (svc, backend)
}

async fn service_with_nodes() -> (
    ControllerService<FakeBackend>,
    Arc<FakeBackend>,
    Arc<StaticNodes>,
) {
    let backend = Arc::new(FakeBackend::new());
    let nodes = Arc::new(StaticNodes::new(
        ["node-a", "node-b", "node-c"].map(String::from),
    ));
    let manager = Arc::new(Manager::new(
        attachment_manager::Policy {
            allow_unverified_second_node: true,
            ..Default::default()
        },
        Arc::new(MemoryStore::default()),
        nodes.clone(),
        Arc::new(attachment_manager::NoMigrations),
        Arc::new(LogEvents::default()),
        attachment_manager::AttachMetrics::unregistered(),
    ));
    manager.rebuild().await.unwrap();
    let svc = ControllerService::new(
        config(),
        backend.clone(),
        nodes.clone(),
        manager,
        None,
        RpcMetrics::unregistered(),
    );
    (svc, backend, nodes)
}

fn mount(mode: Mode) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            mount_flags: vec![],
            volume_mount_group: String::new(),
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn block(mode: Mode) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(AccessType::Block(BlockVolume {})),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

fn create_req(name: &str, bytes: i64) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount(Mode::SingleNodeWriter)],
        ..Default::default()
    }
}

async fn create(
    svc: &ControllerService<FakeBackend>,
    req: proto::CreateVolumeRequest,
) -> Result<proto::Volume, Status> {
    svc.create_volume(Request::new(req))
        .await
        .map(|r| r.into_inner().volume.unwrap())
}

async fn publish(
    svc: &ControllerService<FakeBackend>,
    vol: &str,
    node: &str,
    cap: proto::VolumeCapability,
) -> Result<HashMap<String, String>, Status> {
    svc.controller_publish_volume(Request::new(proto::ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(cap),
        ..Default::default()
    }))
    .await
    .map(|r| r.into_inner().publish_context)
}

#[tokio::test]
async fn a_one_and_a_half_gib_request_creates_at_least_one_and_a_half_gib() {
    let (svc, backend) = service().await;
    let v = create(&svc, create_req("pvc-a", 3 * GIB / 2))
        .await
        .unwrap();
    assert!(v.capacity_bytes >= 3 * GIB / 2);
    let disk = backend.disks.lock().unwrap()["pvc-a"].clone();
    assert!(disk.size_bytes >= 3 << 29);
    assert_eq!(
        disk.file_path.as_deref(),
        Some("/storage-pool/metal-csi/pvc-a.img")
    );
}

#[tokio::test]
async fn repeating_a_create_returns_the_same_volume_without_a_second_disk() {
    let (svc, backend) = service().await;
    let mut req = create_req("pvc-a", GIB);
    req.parameters
        .insert("csi.storage.k8s.io/pvc/name".into(), "disk".into());
    req.parameters
        .insert("csi.storage.k8s.io/pvc/namespace".into(), "vms".into());
    let first = create(&svc, req.clone()).await.unwrap();
    let second = create(&svc, req).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(first.volume_context["csi.storage.k8s.io/pvc/name"], "disk");
    assert_eq!(
        first.volume_context["csi.storage.k8s.io/pvc/namespace"],
        "vms"
    );
    assert_eq!(
        first.volume_context["nqn"],
        "nqn.2000-02.com.mikrotik:pvc-a"
    );
    let creates = backend
        .calls()
        .iter()
        .filter(|c| c.starts_with("create"))
        .count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn the_same_name_with_an_incompatible_size_is_already_exists() {
    let (svc, _) = service().await;
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let err = create(&svc, create_req("pvc-a", 5 * GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn an_unreachable_rds_is_unavailable_and_never_creates() {
    let (svc, backend) = service().await;
    backend.fail_next("unreachable");
    let err = create(&svc, create_req("pvc-a", GIB)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(backend.calls(), vec!["get pvc-a"]);
    assert!(backend.disks.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_pool_is_resource_exhausted() {
    let (svc, _) = service().await;
    let err = create(&svc, create_req("pvc-a", 60 * GIB))
        .await
        .and(create(&svc, create_req("pvc-b", 60 * GIB)).await)
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn sizes_above_the_maximum_are_out_of_range() {
    let (svc, backend) = service().await;
    let err = create(&svc, create_req("pvc-a", 65 * GIB))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
    assert!(backend.calls().is_empty());
}

#[tokio::test]
async fn injection_attempts_are_refused_before_any_backend_call() {
    let (svc, backend) = service().await;
    for name in [
        "pvc-a] ; /system reboot",
        "pvc-\"x",
        "pvc-a b",
        "pvc-$(x)",
        "",
    ] {
        let err = create(&svc, create_req(name, GIB)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}");
    }
    for (k, v) in [
        ("volumePath", "/storage-pool/x\" ; /system reboot"),
        ("volumePath", "/storage-pool/../etc"),
        ("nvmeAddress", "1.2.3.4 ; reboot"),
        ("nvmePort", "4420 x"),
        ("nvmeport", "4420"),
        ("csi.storage.k8s.io/pvc/name", "a\"b"),
    ] {
        let mut req = create_req("pvc-a", GIB);
        req.parameters.insert(k.into(), v.into());
        let err = create(&svc, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}");
        assert!(err.message().contains(k), "{} names {k}", err.message());
    }
    assert!(backend.calls().is_empty(), "{:?}", backend.calls());
}

#[tokio::test]
async fn volumes_outside_the_volume_prefix_are_never_touched() {
    let (svc, backend) = service().await;
    let err = create(&svc, create_req("other-a", GIB)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = svc
        .delete_volume(Request::new(proto::DeleteVolumeRequest {
            volume_id: "other-a".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = publish(&svc, "other-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(backend.calls().is_empty());
}

#[tokio::test]
async fn filesystem_multi_node_writer_is_invalid_but_block_is_allowed() {
    let (svc, _) = service().await;
    let mut req = create_req("pvc-a", GIB);
    req.volume_capabilities = vec![mount(Mode::MultiNodeMultiWriter)];
    assert_eq!(
        create(&svc, req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let mut req = create_req("pvc-b", GIB);
    req.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    assert!(create(&svc, req).await.is_ok());
    let mut req = create_req("pvc-c", GIB);
    req.volume_capabilities = vec![block(Mode::MultiNodeReaderOnly)];
    assert_eq!(
        create(&svc, req).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn a_second_node_is_refused_while_the_first_holds_a_single_node_volume() {
    let (svc, _) = service().await;
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let ctx = publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert_eq!(ctx["nqn"], "nqn.2000-02.com.mikrotik:pvc-a");
    assert_eq!(ctx["nvmePort"], "4420");
    assert_eq!(ctx["nvmeAddress"], "10.0.0.1");
    // Idempotent on the same node.
    publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    let err = publish(&svc, "pvc-a", "node-b", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("node-a"), "{}", err.message());
    // After unpublish the other node gets it.
    svc.controller_unpublish_volume(Request::new(proto::ControllerUnpublishVolumeRequest {
        volume_id: "pvc-a".into(),
        node_id: "node-a".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    publish(&svc, "pvc-a", "node-b", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
}

#[tokio::test]
async fn raw_block_multi_node_admits_two_nodes_and_never_three() {
    let (svc, _) = service().await;
    let mut req = create_req("pvc-a", GIB);
    req.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    create(&svc, req).await.unwrap();
    publish(&svc, "pvc-a", "node-a", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    publish(&svc, "pvc-a", "node-b", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    let err = publish(&svc, "pvc-a", "node-c", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn publishing_to_an_unknown_node_or_volume_is_not_found() {
    let (svc, _) = service().await;
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let err = publish(&svc, "pvc-a", "no-such-node", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = publish(&svc, "pvc-zzz", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn a_different_access_kind_on_the_same_node_is_already_exists() {
    let (svc, _) = service().await;
    let mut req = create_req("pvc-a", GIB);
    req.volume_capabilities = vec![block(Mode::MultiNodeMultiWriter)];
    create(&svc, req).await.unwrap();
    publish(&svc, "pvc-a", "node-a", block(Mode::SingleNodeWriter))
        .await
        .unwrap();
    let err = publish(&svc, "pvc-a", "node-a", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn a_holder_on_an_out_of_service_node_is_replaced_and_the_fenced_node_gets_nothing() {
    let (svc, _, nodes) = service_with_nodes().await;
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    nodes.set("node-a", attachment_manager::NodeStatus::OutOfService);
    let err = publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "a fenced node gets nothing, not even a repeat"
    );
    publish(&svc, "pvc-a", "node-b", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    let err = publish(&svc, "pvc-zz", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "unknown volume first");
    create(&svc, create_req("pvc-b", GIB)).await.unwrap();
    let err = publish(&svc, "pvc-b", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "nothing is published to an out-of-service node"
    );
}

#[tokio::test]
async fn a_node_sharing_its_host_nqn_with_another_is_refused_naming_both() {
    let (svc, backend, nodes) = service_with_nodes().await;
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let shared = "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-00000000000a";
    nodes.set_host_nqn("node-a", shared);
    nodes.set_host_nqn("node-b", shared);
    nodes.set_host_nqn(
        "node-c",
        "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-00000000000c",
    );
    let before = backend.calls().len();
    let err = publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for want in ["node-a", "node-b", shared, "/etc/nvme/hostnqn"] {
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    assert!(svc.manager.holders("pvc-a").is_empty(), "nothing attached");
    // A node with its own host NQN is published to as ever.
    publish(&svc, "pvc-a", "node-c", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    assert!(backend.calls().len() > before);
}

#[tokio::test]
async fn publish_and_delete_are_unavailable_until_the_state_is_rebuilt() {
    let backend = Arc::new(FakeBackend::new());
    let nodes = Arc::new(StaticNodes::default());
    let manager = Arc::new(Manager::new(
        Default::default(),
        Arc::new(MemoryStore::default()),
        nodes.clone(),
        Arc::new(attachment_manager::NoMigrations),
        Arc::new(LogEvents::default()),
        attachment_manager::AttachMetrics::unregistered(),
    ));
    let svc = ControllerService::new(
        config(),
        backend.clone(),
        nodes,
        manager.clone(),
        None,
        RpcMetrics::unregistered(),
    );
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let err = publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = svc
        .delete_volume(Request::new(proto::DeleteVolumeRequest {
            volume_id: "pvc-a".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // Published nodes are unknown until then: an empty answer would say
    // "attached nowhere".
    let err = svc
        .list_volumes(Request::new(proto::ListVolumesRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "ListVolumes");
    let err = svc
        .controller_get_volume(Request::new(proto::ControllerGetVolumeRequest {
            volume_id: "pvc-a".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "ControllerGetVolume");
    let err = svc
        .controller_unpublish_volume(Request::new(proto::ControllerUnpublishVolumeRequest {
            volume_id: "pvc-a".into(),
            node_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "unpublish from every node");
    manager.rebuild().await.unwrap();
    publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    svc.list_volumes(Request::new(proto::ListVolumesRequest::default()))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_concurrent_call_on_the_same_volume_is_aborted() {
    let (svc, backend) = service().await;
    let _held = svc.manager.locks().try_lock("pvc-a").ok().unwrap();
    let err = create(&svc, create_req("pvc-a", GIB)).await.unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
    assert!(backend.calls().is_empty());
    drop(_held);
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    assert!(svc.manager.locks().is_empty(), "guards are released");
}

#[tokio::test]
async fn deleting_an_absent_volume_succeeds_and_a_published_one_is_refused() {
    let (svc, backend) = service().await;
    let del = |id: &str| proto::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    };
    svc.delete_volume(Request::new(del("pvc-nothing")))
        .await
        .unwrap();
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    publish(&svc, "pvc-a", "node-a", mount(Mode::SingleNodeWriter))
        .await
        .unwrap();
    let err = svc
        .delete_volume(Request::new(del("pvc-a")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    svc.controller_unpublish_volume(Request::new(proto::ControllerUnpublishVolumeRequest {
        volume_id: "pvc-a".into(),
        node_id: "node-a".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    svc.delete_volume(Request::new(del("pvc-a"))).await.unwrap();
    assert!(backend.disks.lock().unwrap().is_empty());
    assert!(backend.files.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expansion_only_grows_and_asks_the_node_to_grow_filesystems() {
    let (svc, backend) = service().await;
    create(&svc, create_req("pvc-a", 2 * GIB)).await.unwrap();
    let expand =
        |bytes: i64, cap: Option<proto::VolumeCapability>| proto::ControllerExpandVolumeRequest {
            volume_id: "pvc-a".into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            volume_capability: cap,
            ..Default::default()
        };
    let r = svc
        .controller_expand_volume(Request::new(expand(
            3 * GIB,
            Some(mount(Mode::SingleNodeWriter)),
        )))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 3 * GIB);
    assert!(r.node_expansion_required);
    // Asking for less never shrinks.
    let r = svc
        .controller_expand_volume(Request::new(expand(GIB, None)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 3 * GIB);
    assert_eq!(backend.disks.lock().unwrap()["pvc-a"].size_bytes, 3 << 30);
    let r = svc
        .controller_expand_volume(Request::new(expand(
            4 * GIB,
            Some(block(Mode::SingleNodeWriter)),
        )))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.node_expansion_required);
    let err = svc
        .controller_expand_volume(Request::new(expand(100 * GIB, None)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange);
}

#[tokio::test]
async fn listing_pages_by_name_and_rejects_foreign_tokens() {
    let (svc, _) = service().await;
    for i in 0..5 {
        create(&svc, create_req(&format!("pvc-{i}"), GIB))
            .await
            .unwrap();
    }
    let list = |max: i32, token: &str| proto::ListVolumesRequest {
        max_entries: max,
        starting_token: token.into(),
    };
    let p1 = svc
        .list_volumes(Request::new(list(2, "")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p1.entries.len(), 2);
    assert!(!p1.next_token.is_empty());
    // A volume deleted between pages does not shift the rest.
    svc.delete_volume(Request::new(proto::DeleteVolumeRequest {
        volume_id: "pvc-1".into(),
        ..Default::default()
    }))
    .await
    .unwrap();
    let p2 = svc
        .list_volumes(Request::new(list(2, &p1.next_token)))
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<String> = p2
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.clone())
        .collect();
    assert_eq!(ids, vec!["pvc-2", "pvc-3"]);
    let p3 = svc
        .list_volumes(Request::new(list(2, &p2.next_token)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p3.entries.len(), 1);
    assert!(p3.next_token.is_empty());
    let err = svc
        .list_volumes(Request::new(list(0, "garbage")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted);
}

#[tokio::test]
async fn capacity_reports_free_pool_space() {
    let (svc, _) = service().await;
    create(&svc, create_req("pvc-a", 10 * GIB)).await.unwrap();
    let r = svc
        .get_capacity(Request::new(proto::GetCapacityRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.available_capacity, 90 * GIB);
    assert_eq!(r.minimum_volume_size, Some(GIB));
}

#[tokio::test]
async fn a_created_volume_carries_the_cluster_identity_once_it_is_known() {
    let (svc, backend) = service().await;
    let id = routeros::ClusterId::new("0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
    let known = Arc::new(std::sync::OnceLock::new());
    let svc = svc.with_cluster_id(known.clone());
    let err = create(&svc, create_req("pvc-a", GIB)).await.unwrap_err();
    assert_eq!(
        err.code(),
        Code::Unavailable,
        "identity not known yet: {err:?}"
    );
    assert!(
        backend.disks.lock().unwrap().is_empty(),
        "no disk without an identity"
    );
    known.set(id.clone()).unwrap();
    let before = jiff::Timestamp::now().as_second();
    create(&svc, create_req("pvc-a", GIB)).await.unwrap();
    let comment = backend.disks.lock().unwrap()["pvc-a"].comment.clone();
    assert_eq!(comment.cluster, Some(id));
    assert!(comment.created.unwrap().as_second() >= before);
    assert!(!comment.retain);
    assert_eq!(comment.orphaned_since, None);
}
