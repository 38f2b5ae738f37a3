//! The controller service over a real unix socket, with the real RouterOS
//! client talking to the simulator over real SSH.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use attachment_manager::cluster::{LogEvents, MemoryStore, StaticNodes};
use attachment_manager::{AttachMetrics, Manager, NoMigrations};
use csi_server::controller::{ControllerConfig, ControllerService};
use csi_server::metrics::RpcMetrics;
use csi_server::params::ParamDefaults;
use csi_server::proto::controller_client::ControllerClient;
use csi_server::proto::controller_server::ControllerServer;
use csi_server::proto::volume_capability::access_mode::Mode;
use csi_server::proto::{self};
use rds_sim::{SimConfig, SimHandle, Storage};
use routeros::{Client, ClientConfig, HostKeyPolicy, Rds, RosPath, SlotPrefix};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

const GIB: i64 = 1 << 30;

struct Env {
    sim: SimHandle,
    /// The controller's own RouterOS client, for driving the backend directly.
    rds: Rds,
    client: ControllerClient<Channel>,
    cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

async fn env(storage: Storage) -> Env {
    let key = testkit::sim::client_key();
    let sim = testkit::sim::start_with_key(
        &key,
        SimConfig {
            storage,
            pool_size: 50 << 30,
            ..Default::default()
        },
    )
    .await;
    let mut cfg = ClientConfig::new(
        sim.addr().to_string(),
        "csi",
        HostKeyPolicy::Pinned(sim.host_key_fingerprint()),
    );
    cfg.command_timeout = Duration::from_secs(2);
    cfg.backoff_initial = Duration::from_millis(10);
    cfg.backoff_max = Duration::from_millis(50);
    let rds = Rds::new(Client::new(cfg, key, None));
    let backend = Arc::new(rds.clone());
    let config = ControllerConfig {
        defaults: ParamDefaults {
            nvme_address: "192.0.2.10".into(),
            nvme_port: 4420,
            volume_path: RosPath::new("/storage-pool/metal-csi").unwrap(),
            volume_path_root: RosPath::new("/storage-pool").unwrap(),
        },
        max_volume_bytes: 16 << 40,
        volume_id_prefix: SlotPrefix::new("pvc-").unwrap(),
        nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
        max_list_entries: 1000,
    };
    let nodes = Arc::new(StaticNodes::new(["node-a", "node-b"].map(String::from)));
    let manager = Arc::new(Manager::new(
        Default::default(),
        Arc::new(MemoryStore::default()),
        nodes.clone(),
        Arc::new(NoMigrations),
        Arc::new(LogEvents::default()),
        AttachMetrics::unregistered(),
    ));
    manager.rebuild().await.unwrap();
    let svc = ControllerService::new(
        config,
        backend,
        nodes,
        manager,
        None,
        RpcMetrics::unregistered(),
    );
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let listener = csi_server::server::bind_unix(&sock).unwrap();
    let cancel = CancellationToken::new();
    let router = tonic::transport::Server::builder().add_service(ControllerServer::new(svc));
    tokio::spawn(csi_server::server::serve_grpc(
        router,
        listener,
        cancel.clone(),
    ));
    let channel = testkit::grpc::unix_channel(sock).await.unwrap();
    Env {
        sim,
        rds,
        client: ControllerClient::new(channel),
        cancel,
        _dir: dir,
    }
}

fn cap() -> proto::VolumeCapability {
    testkit::csi::mount("ext4", Mode::SingleNodeWriter)
}

fn create(name: &str, bytes: i64, params: &[(&str, &str)]) -> proto::CreateVolumeRequest {
    proto::CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(proto::CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap()],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

fn delete_req(id: &str) -> proto::DeleteVolumeRequest {
    proto::DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    }
}

impl Env {
    /// One call first, so the SSH connection is up and only the next
    /// RPC's own commands are counted or faulted.
    async fn warm(&mut self) {
        self.client
            .get_capacity(proto::GetCapacityRequest::default())
            .await
            .unwrap();
    }
}

/// Retries `call` while it fails UNAVAILABLE (the client reconnecting),
/// at most 100 times 20 ms apart; its value once it succeeds. Any other
/// error fails the test.
async fn while_unavailable<T, F, Fut>(mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    for _ in 0..100 {
        match call().await {
            Ok(r) => return Some(r.into_inner()),
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    None
}

#[tokio::test]
async fn a_volume_lives_and_dies_on_the_rds_with_a_sparse_backing_file() {
    let data = tempfile::tempdir().unwrap();
    let mut e = env(Storage::Dir(data.path().to_path_buf())).await;
    let v = e
        .client
        .create_volume(create("pvc-life", 3 * GIB / 2, &[]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(v.capacity_bytes, 3 * GIB / 2);
    let file = data.path().join("metal-csi/pvc-life.img");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 << 29);
    e.client
        .controller_expand_volume(proto::ControllerExpandVolumeRequest {
            volume_id: "pvc-life".into(),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 2 * GIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(e.sim.disks()[0].size, 2 << 30);
    e.client
        .delete_volume(delete_req("pvc-life"))
        .await
        .unwrap();
    assert!(!file.exists(), "backing file removed");
    assert!(e.sim.disks().is_empty());
}

#[tokio::test]
async fn create_uses_at_most_two_commands_and_delete_at_most_four() {
    let mut e = env(Storage::Memory).await;
    e.warm().await;
    e.sim.reset_stats();
    e.client
        .create_volume(create("pvc-count", GIB, &[]))
        .await
        .unwrap();
    assert!(
        e.sim.stats().commands <= 2,
        "create used {} commands",
        e.sim.stats().commands
    );
    e.sim.reset_stats();
    e.client
        .delete_volume(delete_req("pvc-count"))
        .await
        .unwrap();
    // Look up, remove, look again (the file goes only once the disk is
    // seen gone), remove the file.
    assert!(
        e.sim.stats().commands <= 4,
        "delete used {} commands",
        e.sim.stats().commands
    );
    assert_eq!(
        e.sim.stats().connections,
        0,
        "no new SSH connection per call"
    );
}

#[tokio::test]
async fn a_disk_remove_that_does_not_take_keeps_the_backing_file() {
    let data = tempfile::tempdir().unwrap();
    let mut e = env(Storage::Dir(data.path().to_path_buf())).await;
    e.client
        .create_volume(create("pvc-stays", GIB, &[]))
        .await
        .unwrap();
    let file = data.path().join("metal-csi/pvc-stays.img");
    e.sim.faults().ignore_disk_remove_next(1);
    let err = e
        .client
        .delete_volume(delete_req("pvc-stays"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("still listed"), "{err:?}");
    assert!(file.exists(), "the file of a listed disk must stay");
    assert_eq!(e.sim.disks().len(), 1);
    // The retry removes both.
    e.client
        .delete_volume(delete_req("pvc-stays"))
        .await
        .unwrap();
    assert!(!file.exists());
    assert!(e.sim.disks().is_empty());
}

#[tokio::test]
async fn a_lost_remove_answer_keeps_the_file_until_the_disk_is_seen_gone() {
    use csi_server::backend::Backend;
    let data = tempfile::tempdir().unwrap();
    let mut e = env(Storage::Dir(data.path().to_path_buf())).await;
    e.client
        .create_volume(create("pvc-lost", GIB, &[]))
        .await
        .unwrap();
    let file = data.path().join("metal-csi/pvc-lost.img");
    let slot = routeros::Slot::new("pvc-lost").unwrap();
    let known = e.rds.get_disk(&slot).await.unwrap().unwrap();
    // The remove acts, but its answer never completes.
    e.sim.faults().cut_after_exit_next(1);
    let err = e
        .rds
        .delete_volume(&slot, Some(&known), &RosPath::new("/storage-pool").unwrap())
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(e.sim.disks().is_empty(), "the remove did act");
    assert!(file.exists(), "no file removal on an unconfirmed remove");
    // DeleteVolume's retry looks afresh, sees no disk, and removes the file.
    let client = e.client.clone();
    while_unavailable(|| {
        let mut c = client.clone();
        async move { c.delete_volume(delete_req("pvc-lost")).await }
    })
    .await;
    assert!(!file.exists());
}

#[tokio::test]
async fn an_unreachable_rds_is_unavailable_and_never_yields_a_duplicate() {
    let mut e = env(Storage::Memory).await;
    e.sim.faults().refuse_connections(true);
    let err = e
        .client
        .create_volume(create("pvc-dup", GIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(e.sim.disks().is_empty());
    e.sim.faults().refuse_connections(false);
    let client = e.client.clone();
    let created = while_unavailable(|| {
        let mut c = client.clone();
        async move { c.create_volume(create("pvc-dup", GIB, &[])).await }
    })
    .await;
    assert!(created.is_some(), "recovered");
    // Retries after recovery keep returning the one volume.
    e.client
        .create_volume(create("pvc-dup", GIB, &[]))
        .await
        .unwrap();
    assert_eq!(e.sim.disks().len(), 1);
}

#[tokio::test]
async fn a_connection_dropped_mid_create_is_retried_into_exactly_one_disk() {
    let mut e = env(Storage::Memory).await;
    e.warm().await;
    e.sim.faults().drop_next(1);
    let err = e
        .client
        .create_volume(create("pvc-drop", GIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let client = e.client.clone();
    while_unavailable(|| {
        let mut c = client.clone();
        async move { c.create_volume(create("pvc-drop", GIB, &[])).await }
    })
    .await;
    assert_eq!(e.sim.disks().len(), 1);
}

#[tokio::test]
async fn injection_attempts_never_reach_the_rds() {
    let mut e = env(Storage::Memory).await;
    e.sim.reset_stats();
    let names = [
        "pvc-a] ; /system reboot",
        "pvc-a\" b",
        "pvc-$(reboot)",
        "pvc-a\n/disk remove 0",
        "pvc-a;x",
        "pvc-[find]",
    ];
    for name in names {
        let err = e
            .client
            .create_volume(create(name, GIB, &[]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name:?}");
        for id_call in [
            e.client.delete_volume(delete_req(name)).await.map(drop),
            e.client
                .controller_get_volume(proto::ControllerGetVolumeRequest {
                    volume_id: name.into(),
                })
                .await
                .map(drop),
        ] {
            assert_eq!(
                id_call.unwrap_err().code(),
                Code::InvalidArgument,
                "{name:?}"
            );
        }
    }
    let params: &[(&str, &str)] = &[
        ("volumePath", "/storage-pool/x\" ; /system reboot"),
        ("volumePath", "/storage-pool/x] [/disk remove 0"),
        ("nvmeAddress", "10.0.0.1 ; /system reboot"),
        ("nvmePort", "4420 x"),
        ("ctrlLossTmo", "1;2"),
        ("csi.storage.k8s.io/pvc/name", "x\" y"),
    ];
    for (k, v) in params {
        let err = e
            .client
            .create_volume(create("pvc-ok", GIB, &[(k, v)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}");
        assert!(
            err.message().contains(k),
            "message names the parameter: {}",
            err.message()
        );
    }
    assert_eq!(e.sim.stats().commands, 0, "no command was sent");
    assert_eq!(e.sim.stats().connections, 0);
}

#[tokio::test]
async fn a_full_pool_is_resource_exhausted() {
    let mut e = env(Storage::Memory).await;
    let err = e
        .client
        .create_volume(create("pvc-big", 60 * GIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(e.sim.disks().is_empty());
}

#[tokio::test]
async fn a_hung_rds_gives_a_deadline_not_a_hang() {
    let mut e = env(Storage::Memory).await;
    e.warm().await;
    e.sim.faults().hang_next(1);
    let err = e
        .client
        .create_volume(create("pvc-hang", GIB, &[]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert!(
        e.sim.disks().is_empty(),
        "the lookup hung, so nothing was created"
    );
    e.client
        .create_volume(create("pvc-hang", GIB, &[]))
        .await
        .unwrap();
}
