//! The controller service over a real unix socket, with the real RouterOS
//! client talking to the simulator over real SSH: the set-up the SSH test
//! files share. Not every file uses every helper.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
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
use rds_sim::{PoolFs, SimConfig, SimHandle, Storage};
use routeros::{Client, ClientConfig, HostKeyPolicy, Rds, RosPath, SlotPrefix};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::Code;

pub const GIB: i64 = 1 << 30;

pub struct Env {
    pub sim: SimHandle,
    /// The controller's own RouterOS client, for driving the backend directly.
    pub rds: Rds,
    pub client: ControllerClient<Channel>,
    pub cancel: CancellationToken,
    pub _dir: tempfile::TempDir,
    /// Where the simulator keeps backing files, for [`Env::on_disk`].
    pub data: Option<tempfile::TempDir>,
    /// The cluster's nodes as the controller sees them.
    pub nodes: Arc<StaticNodes>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

pub async fn env(storage: Storage) -> Env {
    env_on(storage, PoolFs::Btrfs).await
}

/// A controller against a simulator whose pool has file system `fs`.
pub async fn env_on(storage: Storage, fs: PoolFs) -> Env {
    env_with(storage, fs, false).await
}

/// [`env_on`], fencing through the disks' host allow-list when `fencing`
/// (`--rds-fencing`), nodes `node-a` and `node-b` reporting host NQNs
/// `nqn.2014-08.org.example:node-a` and `...:node-b`; with fencing, a
/// second node of a raw-block multi-node volume is admitted unverified.
pub async fn env_with(storage: Storage, fs: PoolFs, fencing: bool) -> Env {
    let key = testkit::sim::client_key();
    let sim = testkit::sim::start_with_key(
        &key,
        SimConfig {
            storage,
            pool_size: 50 << 30,
            pool_fs: fs,
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
    let backend = Arc::new(
        csi_server::backend::RdsBackend::new(rds.clone(), RosPath::new("/storage-pool").unwrap())
            .with_fencing(fencing),
    );
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
        qualifier: String::new(),
    };
    let nodes = Arc::new(StaticNodes::new(["node-a", "node-b"].map(String::from)));
    for node in ["node-a", "node-b"] {
        nodes.set_host_nqn(node, &format!("nqn.2014-08.org.example:{node}"));
    }
    let manager = Arc::new(Manager::new(
        // The fencing tests take a second node for a raw-block volume as a
        // migration without KubeVirt's evidence.
        attachment_manager::Policy {
            allow_unverified_second_node: fencing,
            ..Default::default()
        },
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
        nodes.clone(),
        manager,
        None,
        RpcMetrics::unregistered(),
    );
    // As `rds-csi controller` does at start: read the pool.
    svc.detect_pool().await;
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
        data: None,
        nodes,
    }
}

/// Request parameters from `key, value` pairs.
pub fn params_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn cap() -> proto::VolumeCapability {
    testkit::csi::mount("ext4", Mode::SingleNodeWriter)
}

pub fn at_least(bytes: i64) -> Option<proto::CapacityRange> {
    Some(proto::CapacityRange {
        required_bytes: bytes,
        limit_bytes: 0,
    })
}

impl Env {
    /// With backing files written below a temporary directory.
    pub async fn on_disk() -> Env {
        Env::on_disk_with(PoolFs::Btrfs).await
    }

    /// [`Env::on_disk`] on a pool with file system `fs`.
    pub async fn on_disk_with(fs: PoolFs) -> Env {
        let data = tempfile::tempdir().unwrap();
        let mut e = env_on(Storage::Dir(data.path().to_path_buf()), fs).await;
        e.data = Some(data);
        e
    }

    /// The simulator's file for the pool path `rel` (below the pool root).
    pub fn pool_file(&self, rel: &str) -> std::path::PathBuf {
        self.data
            .as_ref()
            .expect("an Env::on_disk")
            .path()
            .join(rel)
    }

    /// Where the simulator keeps the backing file of `volume`.
    pub fn backing_file(&self, volume: &str) -> std::path::PathBuf {
        self.pool_file(&format!("metal-csi/{volume}.img"))
    }

    /// After one call, so the SSH connection is up and only the next
    /// RPC's own commands are counted or faulted.
    pub async fn warm() -> Env {
        let e = env(Storage::Memory).await;
        e.client
            .clone()
            .get_capacity(proto::GetCapacityRequest::default())
            .await
            .unwrap();
        e
    }

    pub async fn create_with(
        &self,
        name: &str,
        bytes: i64,
        params: &[(&str, &str)],
    ) -> Result<proto::Volume, tonic::Status> {
        self.create_from_source(name, bytes, None, params).await
    }

    /// CreateVolume `name` of at least `bytes` in a class with `params`,
    /// from `source` when given.
    pub async fn create_from_source(
        &self,
        name: &str,
        bytes: i64,
        source: Option<proto::volume_content_source::Type>,
        params: &[(&str, &str)],
    ) -> Result<proto::Volume, tonic::Status> {
        let req = proto::CreateVolumeRequest {
            name: name.into(),
            capacity_range: at_least(bytes),
            volume_capabilities: vec![cap()],
            parameters: params_of(params),
            volume_content_source: source.map(|t| proto::VolumeContentSource { r#type: Some(t) }),
            ..Default::default()
        };
        let resp = self.client.clone().create_volume(req).await?;
        Ok(resp.into_inner().volume.unwrap())
    }

    pub async fn create(&self, name: &str, bytes: i64) -> Result<proto::Volume, tonic::Status> {
        self.create_with(name, bytes, &[]).await
    }

    pub async fn publish(
        &self,
        volume: &str,
        node: &str,
        cap: proto::VolumeCapability,
    ) -> Result<(), tonic::Status> {
        let req = proto::ControllerPublishVolumeRequest {
            volume_id: volume.into(),
            node_id: node.into(),
            volume_capability: Some(cap),
            ..Default::default()
        };
        let mut client = self.client.clone();
        client.controller_publish_volume(req).await.map(drop)
    }

    pub async fn unpublish(&self, volume: &str, node: &str) -> Result<(), tonic::Status> {
        let req = proto::ControllerUnpublishVolumeRequest {
            volume_id: volume.into(),
            node_id: node.into(),
            ..Default::default()
        };
        let mut client = self.client.clone();
        client.controller_unpublish_volume(req).await.map(drop)
    }

    pub async fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        let req = proto::DeleteVolumeRequest {
            volume_id: id.into(),
            ..Default::default()
        };
        self.client.clone().delete_volume(req).await.map(drop)
    }

    /// The RouterOS commands one successful RPC sends.
    pub async fn commands_of<T>(&self, rpc: impl Future<Output = Result<T, tonic::Status>>) -> u64 {
        self.sim.reset_stats();
        rpc.await.unwrap();
        self.sim.stats().commands
    }
}

/// Retries `call` while it fails UNAVAILABLE (the client reconnecting),
/// at most 100 times 20 ms apart; its value once it succeeds. Any other
/// error fails the test.
pub async fn while_unavailable<T, F, Fut>(mut call: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    for _ in 0..100 {
        match call().await {
            Ok(r) => return Some(r),
            Err(s) if s.code() == Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    None
}
