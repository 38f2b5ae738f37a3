use std::collections::HashMap;
use std::sync::Arc;

use tonic::Code;

use super::*;
use crate::backend::fake::FakeBackend;
use crate::params::ParamError;
use crate::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use attachment_manager::cluster::{LogEvents, MemoryStore, StaticNodes};

const GIB: i64 = 1 << 30;

fn config() -> ControllerConfig {
    ControllerConfig {
        defaults: crate::params::tests::defaults(),
        max_volume_bytes: 64 << 30,
        volume_id_prefix: IdPrefix::new("pvc-").unwrap(),
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
        max_list_entries: 1000,
        qualifier: String::new(),
    }
}

/// The controller over the in-memory backend, with three nodes, called
/// through its gRPC trait as the sidecars call it.
struct Ctl {
    svc: ControllerService<FakeBackend>,
    backend: Arc<FakeBackend>,
    nodes: Arc<StaticNodes>,
    manager: Arc<Manager>,
}

impl Ctl {
    /// Ready to decide: the attachment state is rebuilt.
    async fn new() -> Self {
        let ctl = Self::unrebuilt(attachment_manager::Policy {
            allow_unverified_second_node: true,
            ..Default::default()
        });
        ctl.manager.rebuild().await.unwrap();
        ctl
    }

    /// Over a backend that fences, with each node's host NQN recorded
    /// (`nqn.2014-08.org.example:node-a`, ...).
    async fn fencing() -> Self {
        let backend = FakeBackend {
            fencing: true,
            ..FakeBackend::new()
        };
        let ctl = Self::over(
            backend,
            attachment_manager::Policy {
                allow_unverified_second_node: true,
                ..Default::default()
            },
        );
        for node in ["node-a", "node-b", "node-c"] {
            ctl.nodes
                .set_host_nqn(node, &format!("nqn.2014-08.org.example:{node}"));
        }
        ctl.manager.rebuild().await.unwrap();
        ctl
    }

    /// Before the attachment state is rebuilt.
    fn unrebuilt(policy: attachment_manager::Policy) -> Self {
        Self::over(FakeBackend::new(), policy)
    }

    fn over(backend: FakeBackend, policy: attachment_manager::Policy) -> Self {
        Self::with(backend, policy, config())
    }

    fn with(
        backend: FakeBackend,
        policy: attachment_manager::Policy,
        config: ControllerConfig,
    ) -> Self {
        let backend = Arc::new(backend);
        let nodes = Arc::new(StaticNodes::new(
            ["node-a", "node-b", "node-c"].map(String::from),
        ));
        let manager = Arc::new(Manager::new(
            policy,
            Arc::new(MemoryStore::default()),
            nodes.clone(),
            Arc::new(attachment_manager::NoMigrations),
            Arc::new(LogEvents::default()),
            attachment_manager::AttachMetrics::unregistered(),
        ));
        let svc = ControllerService::new(
            config,
            backend.clone(),
            nodes.clone(),
            manager.clone(),
            None,
            RpcMetrics::unregistered(),
        );
        Ctl {
            svc,
            backend,
            nodes,
            manager,
        }
    }

    async fn create_req(&self, req: proto::CreateVolumeRequest) -> Result<proto::Volume, Status> {
        let resp = self.svc.create_volume(Request::new(req)).await?;
        Ok(resp.into_inner().volume.unwrap())
    }

    async fn create(&self, name: &str, bytes: i64) -> Result<proto::Volume, Status> {
        self.create_req(create_req(name, bytes)).await
    }

    /// A volume with these capabilities, created or the test fails.
    async fn created(&self, name: &str, caps: proto::VolumeCapability) {
        let mut req = create_req(name, GIB);
        req.volume_capabilities = vec![caps];
        self.create_req(req).await.unwrap();
    }

    async fn publish(
        &self,
        vol: &str,
        node: &str,
        cap: proto::VolumeCapability,
    ) -> Result<HashMap<String, String>, Status> {
        let resp = self
            .svc
            .controller_publish_volume(Request::new(publish_req(vol, node, cap)))
            .await?;
        Ok(resp.into_inner().publish_context)
    }

    async fn unpublish(&self, vol: &str, node: &str) -> Result<(), Status> {
        let req = proto::ControllerUnpublishVolumeRequest {
            volume_id: vol.into(),
            node_id: node.into(),
            ..Default::default()
        };
        self.svc
            .controller_unpublish_volume(Request::new(req))
            .await
            .map(drop)
    }

    async fn delete(&self, vol: &str) -> Result<(), Status> {
        let req = proto::DeleteVolumeRequest {
            volume_id: vol.into(),
            ..Default::default()
        };
        self.svc.delete_volume(Request::new(req)).await.map(drop)
    }

    async fn expand(
        &self,
        bytes: i64,
        cap: Option<proto::VolumeCapability>,
    ) -> Result<proto::ControllerExpandVolumeResponse, Status> {
        let req = proto::ControllerExpandVolumeRequest {
            volume_id: "pvc-a".into(),
            capacity_range: Some(at_least(bytes)),
            volume_capability: cap,
            ..Default::default()
        };
        let resp = self.svc.controller_expand_volume(Request::new(req)).await?;
        Ok(resp.into_inner())
    }

    async fn list(&self, max: i32, token: &str) -> Result<proto::ListVolumesResponse, Status> {
        let req = proto::ListVolumesRequest {
            max_entries: max,
            starting_token: token.into(),
        };
        Ok(self.svc.list_volumes(Request::new(req)).await?.into_inner())
    }

    async fn get(&self, vol: &str) -> Result<proto::ControllerGetVolumeResponse, Status> {
        let req = proto::ControllerGetVolumeRequest {
            volume_id: vol.into(),
        };
        Ok(self
            .svc
            .controller_get_volume(Request::new(req))
            .await?
            .into_inner())
    }

    /// How many volumes the backend was asked to create.
    fn creates(&self) -> usize {
        let calls = self.backend.calls();
        calls.iter().filter(|c| c.starts_with("create")).count()
    }
}

/// The gRPC code of an outcome, OK for a success.
fn code<T>(outcome: Result<T, Status>) -> Code {
    outcome.err().map_or(Code::Ok, |s| s.code())
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

fn at_least(bytes: i64) -> proto::CapacityRange {
    proto::CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    }
}

fn create_req(name: &str, bytes: i64) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(at_least(bytes)),
        volume_capabilities: vec![mount(Mode::SingleNodeWriter)],
        ..Default::default()
    }
}

fn publish_req(
    vol: &str,
    node: &str,
    cap: proto::VolumeCapability,
) -> proto::ControllerPublishVolumeRequest {
    proto::ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: node.into(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

const SNW: Mode = Mode::SingleNodeWriter;
const MNMW: Mode = Mode::MultiNodeMultiWriter;

#[tokio::test]
async fn a_one_and_a_half_gib_request_creates_at_least_one_and_a_half_gib() {
    let ctl = Ctl::new().await;
    let v = ctl.create("pvc-a", 3 * GIB / 2).await.unwrap();
    assert!(v.capacity_bytes >= 3 * GIB / 2);
    let disk = ctl.backend.disks.lock().unwrap()["pvc-a"].clone();
    assert!(disk.size_bytes >= 3 << 29);
    assert_eq!(
        disk.location.as_deref(),
        Some("/storage-pool/metal-csi/pvc-a.img")
    );
}

#[tokio::test]
async fn repeating_a_create_returns_the_same_volume_without_a_second_disk() {
    let ctl = Ctl::new().await;
    let mut req = create_req("pvc-a", GIB);
    req.parameters = crate::params::tests::map(&[
        ("csi.storage.k8s.io/pvc/name", "disk"),
        ("csi.storage.k8s.io/pvc/namespace", "vms"),
    ]);
    let first = ctl.create_req(req.clone()).await.unwrap();
    let second = ctl.create_req(req).await.unwrap();
    assert_eq!(first, second);
    let context = &first.volume_context;
    assert_eq!(context["csi.storage.k8s.io/pvc/name"], "disk");
    assert_eq!(context["csi.storage.k8s.io/pvc/namespace"], "vms");
    assert_eq!(context["nqn"], "nqn.2000-02.com.mikrotik:pvc-a");
    assert_eq!(ctl.creates(), 1);
}

#[tokio::test]
async fn the_same_name_with_an_incompatible_size_is_already_exists() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    let again = ctl.svc.create(create_req("pvc-a", 5 * GIB)).await;
    assert!(
        matches!(
            again,
            Err(ControllerError::ExistsDifferently { differs: Mismatch::Size { size, .. }, .. })
                if size == 1 << 30
        ),
        "{again:?}"
    );
    assert_eq!(
        code(ctl.create("pvc-a", 5 * GIB).await),
        Code::AlreadyExists
    );
}

#[tokio::test]
async fn an_unreachable_rds_is_unavailable_and_never_creates() {
    let ctl = Ctl::new().await;
    ctl.backend.fail_next("unreachable");
    assert_eq!(code(ctl.create("pvc-a", GIB).await), Code::Unavailable);
    assert_eq!(ctl.backend.calls(), vec!["get pvc-a"]);
    assert!(ctl.backend.disks.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_full_pool_is_resource_exhausted() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", 60 * GIB).await.unwrap();
    let full = ctl.create("pvc-b", 60 * GIB).await;
    assert_eq!(code(full), Code::ResourceExhausted);
}

#[tokio::test]
async fn sizes_above_the_maximum_are_out_of_range() {
    let ctl = Ctl::new().await;
    assert_eq!(code(ctl.create("pvc-a", 65 * GIB).await), Code::OutOfRange);
    assert!(ctl.backend.calls().is_empty());
}

#[tokio::test]
async fn injection_attempts_are_refused_before_any_backend_call() {
    let ctl = Ctl::new().await;
    for name in [
        "pvc-a] ; /system reboot",
        "pvc-\"x",
        "pvc-a b",
        "pvc-$(x)",
        "",
    ] {
        assert_eq!(
            code(ctl.create(name, GIB).await),
            Code::InvalidArgument,
            "{name}"
        );
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
        assert_eq!(
            code(ctl.create_req(req.clone()).await),
            Code::InvalidArgument
        );
        // The refusal names the parameter.
        let refused = ctl.svc.create(req).await;
        assert!(
            matches!(&refused, Err(ControllerError::Param(ParamError { name, .. })) if name == k),
            "{k}={v}: {refused:?}"
        );
    }
    assert!(ctl.backend.calls().is_empty(), "{:?}", ctl.backend.calls());
}

#[tokio::test]
async fn volumes_outside_the_volume_prefix_are_never_touched() {
    let ctl = Ctl::new().await;
    let refused = ctl.svc.create(create_req("other-a", GIB)).await;
    assert!(
        matches!(
            refused,
            Err(ControllerError::NotManaged { field: "name", .. })
        ),
        "{refused:?}"
    );
    assert_eq!(
        code(ctl.create("other-a", GIB).await),
        Code::InvalidArgument
    );
    assert_eq!(code(ctl.delete("other-a").await), Code::InvalidArgument);
    let publish = ctl.publish("other-a", "node-a", mount(SNW)).await;
    assert_eq!(code(publish), Code::InvalidArgument);
    assert!(ctl.backend.calls().is_empty());
}

#[tokio::test]
async fn filesystem_multi_node_writer_is_invalid_but_block_is_allowed() {
    let ctl = Ctl::new().await;
    for (name, cap, want) in [
        ("pvc-a", mount(MNMW), Code::InvalidArgument),
        ("pvc-b", block(MNMW), Code::Ok),
        (
            "pvc-c",
            block(Mode::MultiNodeReaderOnly),
            Code::InvalidArgument,
        ),
    ] {
        let mut req = create_req(name, GIB);
        req.volume_capabilities = vec![cap];
        assert_eq!(code(ctl.create_req(req).await), want, "{name}");
    }
}

#[tokio::test]
async fn a_second_node_is_refused_while_the_first_holds_a_single_node_volume() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    let ctx = ctl.publish("pvc-a", "node-a", mount(SNW)).await.unwrap();
    assert_eq!(ctx["nqn"], "nqn.2000-02.com.mikrotik:pvc-a");
    assert_eq!(ctx["nvmePort"], "4420");
    assert_eq!(ctx["nvmeAddress"], "10.0.0.1");
    // Idempotent on the same node.
    ctl.publish("pvc-a", "node-a", mount(SNW)).await.unwrap();
    let refused = ctl
        .svc
        .publish(publish_req("pvc-a", "node-b", mount(SNW)))
        .await;
    assert!(
        matches!(&refused, Err(ControllerError::Refused { refusal: Refusal::AttachedElsewhere { holders }, .. }) if holders == &["node-a"]),
        "{refused:?}"
    );
    let second = ctl.publish("pvc-a", "node-b", mount(SNW)).await;
    assert_eq!(code(second), Code::FailedPrecondition);
    // After unpublish the other node gets it.
    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    ctl.publish("pvc-a", "node-b", mount(SNW)).await.unwrap();
}

#[tokio::test]
async fn raw_block_multi_node_admits_two_nodes_and_never_three() {
    let ctl = Ctl::new().await;
    ctl.created("pvc-a", block(MNMW)).await;
    for (node, want) in [
        ("node-a", Code::Ok),
        ("node-b", Code::Ok),
        ("node-c", Code::FailedPrecondition),
    ] {
        let outcome = ctl.publish("pvc-a", node, block(MNMW)).await;
        assert_eq!(code(outcome), want, "{node}");
    }
}

#[tokio::test]
async fn publishing_to_an_unknown_node_or_volume_is_not_found() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    let no_node = ctl.publish("pvc-a", "no-such-node", mount(SNW)).await;
    assert_eq!(code(no_node), Code::NotFound);
    let no_volume = ctl.publish("pvc-zzz", "node-a", mount(SNW)).await;
    assert_eq!(code(no_volume), Code::NotFound);
}

#[tokio::test]
async fn a_different_access_kind_on_the_same_node_is_already_exists() {
    let ctl = Ctl::new().await;
    ctl.created("pvc-a", block(MNMW)).await;
    ctl.publish("pvc-a", "node-a", block(SNW)).await.unwrap();
    let other_kind = ctl.publish("pvc-a", "node-a", block(MNMW)).await;
    assert_eq!(code(other_kind), Code::AlreadyExists);
}

#[tokio::test]
async fn a_holder_on_an_out_of_service_node_is_replaced_and_the_fenced_node_gets_nothing() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.publish("pvc-a", "node-a", mount(SNW)).await.unwrap();
    ctl.nodes
        .set("node-a", attachment_manager::NodeStatus::OutOfService);
    let repeat = ctl.publish("pvc-a", "node-a", mount(SNW)).await;
    assert_eq!(
        code(repeat),
        Code::FailedPrecondition,
        "a fenced node gets nothing, not even a repeat"
    );
    ctl.publish("pvc-a", "node-b", mount(SNW)).await.unwrap();
    let unknown = ctl.publish("pvc-zz", "node-a", mount(SNW)).await;
    assert_eq!(code(unknown), Code::NotFound, "unknown volume first");
    ctl.create("pvc-b", GIB).await.unwrap();
    let fresh = ctl.publish("pvc-b", "node-a", mount(SNW)).await;
    assert_eq!(
        code(fresh),
        Code::FailedPrecondition,
        "nothing is published to an out-of-service node"
    );
}

#[tokio::test]
async fn a_node_sharing_its_host_nqn_with_another_is_refused_naming_both() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    let shared = "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-00000000000a";
    ctl.nodes.set_host_nqn("node-a", shared);
    ctl.nodes.set_host_nqn("node-b", shared);
    ctl.nodes.set_host_nqn(
        "node-c",
        "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-00000000000c",
    );
    let before = ctl.backend.calls().len();
    let refused = ctl
        .svc
        .publish(publish_req("pvc-a", "node-a", mount(SNW)))
        .await;
    match refused {
        Err(ControllerError::SharedHostNqn { node, others, nqn }) => {
            assert_eq!((node.as_str(), nqn.as_str()), ("node-a", shared));
            assert_eq!(others, ["node-b"]);
        }
        other => panic!("{other:?}"),
    }
    let refused = ctl.publish("pvc-a", "node-a", mount(SNW)).await;
    assert_eq!(code(refused), Code::FailedPrecondition);
    assert!(ctl.manager.holders("pvc-a").is_empty(), "nothing attached");
    // A node with its own host NQN is published to as ever.
    ctl.publish("pvc-a", "node-c", mount(SNW)).await.unwrap();
    assert!(ctl.backend.calls().len() > before);
}

#[tokio::test]
async fn publish_and_delete_are_unavailable_until_the_state_is_rebuilt() {
    let ctl = Ctl::unrebuilt(Default::default());
    ctl.create("pvc-a", GIB).await.unwrap();
    // Published nodes are unknown until then: an empty list would say
    // "attached nowhere", and unpublishing "every node" means nothing.
    let outcomes = [
        (
            "publish",
            code(ctl.publish("pvc-a", "node-a", mount(SNW)).await),
        ),
        ("delete", code(ctl.delete("pvc-a").await)),
        ("ListVolumes", code(ctl.list(0, "").await)),
        ("ControllerGetVolume", code(ctl.get("pvc-a").await)),
        (
            "unpublish from every node",
            code(ctl.unpublish("pvc-a", "").await),
        ),
    ];
    for (rpc, outcome) in outcomes {
        assert_eq!(outcome, Code::Unavailable, "{rpc}");
    }
    ctl.manager.rebuild().await.unwrap();
    ctl.publish("pvc-a", "node-a", mount(SNW)).await.unwrap();
    ctl.list(0, "").await.unwrap();
}

#[tokio::test]
async fn a_concurrent_call_on_the_same_volume_is_aborted() {
    let ctl = Ctl::new().await;
    let held = ctl.manager.locks().try_lock("pvc-a").ok().unwrap();
    assert_eq!(code(ctl.create("pvc-a", GIB).await), Code::Aborted);
    assert!(ctl.backend.calls().is_empty());
    drop(held);
    ctl.create("pvc-a", GIB).await.unwrap();
    assert!(ctl.manager.locks().is_empty(), "guards are released");
}

#[tokio::test]
async fn deleting_an_absent_volume_succeeds_and_a_published_one_is_refused() {
    let ctl = Ctl::new().await;
    ctl.delete("pvc-nothing").await.unwrap();
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.publish("pvc-a", "node-a", mount(SNW)).await.unwrap();
    let refused = ctl.svc.delete(proto::DeleteVolumeRequest {
        volume_id: "pvc-a".into(),
        ..Default::default()
    });
    assert!(
        matches!(refused.await, Err(ControllerError::StillPublished { nodes, .. }) if nodes == ["node-a"])
    );
    assert_eq!(code(ctl.delete("pvc-a").await), Code::FailedPrecondition);
    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    ctl.delete("pvc-a").await.unwrap();
    assert!(ctl.backend.disks.lock().unwrap().is_empty());
    assert!(ctl.backend.files.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expansion_only_grows_and_asks_the_node_to_grow_filesystems() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", 2 * GIB).await.unwrap();
    let r = ctl.expand(3 * GIB, Some(mount(SNW))).await.unwrap();
    assert_eq!(r.capacity_bytes, 3 * GIB);
    assert!(r.node_expansion_required);
    // Asking for less never shrinks.
    let r = ctl.expand(GIB, None).await.unwrap();
    assert_eq!(r.capacity_bytes, 3 * GIB);
    assert_eq!(
        ctl.backend.disks.lock().unwrap()["pvc-a"].size_bytes,
        3 << 30
    );
    let r = ctl.expand(4 * GIB, Some(block(SNW))).await.unwrap();
    assert!(!r.node_expansion_required);
    assert_eq!(code(ctl.expand(100 * GIB, None).await), Code::OutOfRange);
}

#[tokio::test]
async fn listing_pages_by_name_and_rejects_foreign_tokens() {
    let ctl = Ctl::new().await;
    for i in 0..5 {
        ctl.create(&format!("pvc-{i}"), GIB).await.unwrap();
    }
    let p1 = ctl.list(2, "").await.unwrap();
    assert_eq!(p1.entries.len(), 2);
    assert!(!p1.next_token.is_empty());
    // A volume deleted between pages does not shift the rest.
    ctl.delete("pvc-1").await.unwrap();
    let p2 = ctl.list(2, &p1.next_token).await.unwrap();
    let ids: Vec<&str> = p2
        .entries
        .iter()
        .map(|e| e.volume.as_ref().unwrap().volume_id.as_str())
        .collect();
    assert_eq!(ids, ["pvc-2", "pvc-3"]);
    let p3 = ctl.list(2, &p2.next_token).await.unwrap();
    assert_eq!(p3.entries.len(), 1);
    assert!(p3.next_token.is_empty());
    assert_eq!(code(ctl.list(0, "garbage").await), Code::Aborted);
}

#[tokio::test]
async fn capacity_reports_free_pool_space() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", 10 * GIB).await.unwrap();
    let r = ctl
        .svc
        .get_capacity(Request::new(proto::GetCapacityRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.available_capacity, 90 * GIB);
    assert_eq!(r.minimum_volume_size, Some(GIB));
}

#[tokio::test]
async fn a_created_volume_carries_the_cluster_identity_once_it_is_known() {
    let mut ctl = Ctl::new().await;
    let id = routeros::ClusterId::new("0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
    let known = Arc::new(std::sync::OnceLock::new());
    ctl.svc = ctl.svc.with_cluster_id(known.clone());
    let unknown = ctl.svc.create(create_req("pvc-a", GIB)).await;
    assert!(
        matches!(unknown, Err(ControllerError::ClusterIdUnknown)),
        "{unknown:?}"
    );
    assert_eq!(code(ctl.create("pvc-a", GIB).await), Code::Unavailable);
    assert!(
        ctl.backend.disks.lock().unwrap().is_empty(),
        "no disk without an identity"
    );
    known.set(id.clone()).unwrap();
    let before = jiff::Timestamp::now().as_second();
    ctl.create("pvc-a", GIB).await.unwrap();
    let comment = ctl.backend.disks.lock().unwrap()["pvc-a"].meta.clone();
    assert_eq!(comment.cluster, Some(id));
    assert!(comment.created.unwrap().as_second() >= before);
    assert!(!comment.retain);
    assert_eq!(comment.orphaned_since, None);
}

#[path = "controller_fencing_tests.rs"]
mod fencing;

#[tokio::test]
async fn a_snapshot_id_is_never_a_snapshot_source_even_without_a_volume_prefix() {
    // csi-sanity runs the driver with an empty prefix: every ID is managed.
    let ctl = Ctl::with(
        FakeBackend::new(),
        Default::default(),
        ControllerConfig {
            volume_id_prefix: IdPrefix::new("").unwrap(),
            ..config()
        },
    );
    ctl.manager.rebuild().await.unwrap();
    let req = proto::CreateSnapshotRequest {
        source_volume_id: "snap-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3".into(),
        name: "snapshot-of-a-snapshot".into(),
        ..Default::default()
    };
    let err = Controller::create_snapshot(&ctl.svc, Request::new(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(ctl.backend.calls().is_empty(), "refused before any command");
}

#[tokio::test]
async fn a_backend_without_snapshots_clones_or_expansion_is_offered_without_them() {
    use proto::controller_service_capability::rpc::Type as T;
    let backend = FakeBackend {
        plain: true,
        ..FakeBackend::new()
    };
    let ctl = Ctl::over(backend, Default::default());
    ctl.manager.rebuild().await.unwrap();
    let caps = Controller::controller_get_capabilities(
        &ctl.svc,
        Request::new(proto::ControllerGetCapabilitiesRequest {}),
    )
    .await
    .unwrap()
    .into_inner();
    let offered: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| {
            let proto::controller_service_capability::Type::Rpc(r) = c.r#type.as_ref()?;
            Some(r.r#type)
        })
        .collect();
    for absent in [
        T::CreateDeleteSnapshot,
        T::ListSnapshots,
        T::CloneVolume,
        T::ExpandVolume,
    ] {
        assert!(!offered.contains(&(absent as i32)), "{absent:?} offered");
    }
    assert!(offered.contains(&(T::PublishUnpublishVolume as i32)));

    ctl.create("pvc-a", GIB).await.unwrap();
    assert_eq!(code(ctl.expand(2 * GIB, None).await), Code::Unimplemented);
    let snap = proto::CreateSnapshotRequest {
        source_volume_id: "pvc-a".into(),
        name: "s".into(),
        ..Default::default()
    };
    assert_eq!(
        code(Controller::create_snapshot(&ctl.svc, Request::new(snap)).await),
        Code::Unimplemented
    );
    let mut clone = create_req("pvc-b", GIB);
    clone.volume_content_source = Some(proto::VolumeContentSource {
        r#type: Some(proto::volume_content_source::Type::Volume(
            proto::volume_content_source::VolumeSource {
                volume_id: "pvc-a".into(),
            },
        )),
    });
    assert_eq!(code(ctl.create_req(clone).await), Code::Unimplemented);
}
