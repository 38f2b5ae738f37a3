//! Tier 3: the controller binary against a real kube-apiserver + etcd.
//!
//! Objects are created the way Kubernetes and KubeVirt create them: Nodes,
//! PVs bound to PVCs, VolumeAttachments whose status the attacher sets after
//! a successful ControllerPublish, virt-launcher pods, and VMI objects of
//! KubeVirt's CRDs (defined here with open schemas). The RouterOS side is
//! the simulator over real SSH. The node plugin's events are checked here
//! too (`node_events`): its service over the fake host, recording on PVCs.
//!
//! Needs `RDS_CSI_TEST_KUBECONFIG` (hack/test.sh starts an API server with
//! hack/kube-apiserver.sh and sets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use csi_server::proto::controller_client::ControllerClient;
use csi_server::proto::identity_client::IdentityClient;
use csi_server::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use csi_server::proto::{self};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use russh::keys::{Algorithm, PrivateKey};
use serde_json::json;
use tonic::transport::Channel;
use tonic::Code;

mod common;
use common::{eventually, http_get, metric, vmi_resource, vmim_resource};

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");
const GIB: i64 = 1 << 30;
const CONTROLLER_POD: &str = "rds-csi-controller-0";

fn kubeconfig() -> PathBuf {
    match std::env::var_os("RDS_CSI_TEST_KUBECONFIG") {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "tier-3 test: needs a kube-apiserver. Run hack/test.sh, or `hack/kube-apiserver.sh up DIR` and set RDS_CSI_TEST_KUBECONFIG=DIR/kubeconfig"
        ),
    }
}

async fn client() -> Client {
    common::kube_client(&kubeconfig()).await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One test's world: its own driver name, nodes, namespace and simulator.
struct World {
    name: String,
    client: Client,
    sim: rds_sim::SimHandle,
    key_file: PathBuf,
    dir: tempfile::TempDir,
    ctl: Option<Controller>,
}

struct Controller {
    child: Child,
    csi: ControllerClient<Channel>,
    identity: IdentityClient<Channel>,
    metrics_port: u16,
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some(c) = self.ctl.as_mut() {
            let _ = c.child.kill();
            let _ = c.child.wait();
        }
    }
}

impl World {
    async fn new(name: &str, nodes: &[&str]) -> World {
        let client = client().await;
        let dir = tempfile::tempdir().unwrap();
        let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
        let key_file = dir.path().join("id");
        std::fs::write(
            &key_file,
            key.to_openssh(russh::keys::ssh_key::LineEnding::LF)
                .unwrap()
                .as_bytes(),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&key_file).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o600);
        std::fs::set_permissions(&key_file, perms).unwrap();
        let sim = rds_sim::start(rds_sim::SimConfig {
            authorized_keys: vec![key.public_key().clone()],
            pool_size: 1 << 40,
            ..Default::default()
        })
        .await
        .unwrap();
        // Unique per run, so reruns against one API server never collide.
        let suffix: u32 = rand::random::<u32>() % 0xfffff;
        let w = World {
            name: format!("{name}-{suffix:05x}"),
            client,
            sim,
            key_file,
            dir,
            ctl: None,
        };
        let ns: Api<Namespace> = Api::all(w.client.clone());
        let _ = ns
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": w.ns()}})).unwrap(),
            )
            .await;
        for n in nodes {
            w.create_node(n).await;
        }
        w
    }

    fn ns(&self) -> String {
        self.name.clone()
    }

    fn driver(&self) -> String {
        format!("{}.test.rds.csi.srvlab.io", self.name)
    }

    fn node(&self, n: &str) -> String {
        format!("{}-{n}", self.name)
    }

    async fn create_node(&self, n: &str) {
        let api: Api<Node> = Api::all(self.client.clone());
        let node = serde_json::from_value(json!({
            "metadata": {"name": self.node(n), "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}
        }))
        .unwrap();
        api.create(&PostParams::default(), &node).await.unwrap();
    }

    async fn start_controller(&mut self, kubeconfig: &std::path::Path) {
        self.start_controller_with(kubeconfig, &[]).await
    }

    async fn start_controller_with(&mut self, kubeconfig: &std::path::Path, extra: &[&str]) {
        let ctl = self
            .spawn_controller(&self.driver(), "controller.log", kubeconfig, extra)
            .await;
        self.ctl = Some(ctl);
    }

    /// A controller process for `driver` against this world's simulator,
    /// logging to `log` in the world's directory.
    async fn spawn_controller(
        &self,
        driver: &str,
        log: &str,
        kubeconfig: &std::path::Path,
        extra: &[&str],
    ) -> Controller {
        // A fresh name per start: a killed controller leaves its socket file
        // behind, and waiting for "the socket exists" must not see that one.
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let sock = self.dir.path().join(format!("csi-{n}.sock"));
        let metrics_port = free_port();
        let child = Command::new(BIN)
            .args(["controller", "--endpoint"])
            .arg(format!("unix://{}", sock.display()))
            .args([
                "--rds-address",
                &self.sim.addr().to_string(),
                "--rds-key-file",
            ])
            .arg(&self.key_file)
            .args([
                "--rds-host-key",
                &self.sim.host_key_fingerprint(),
                "--driver-name",
                driver,
            ])
            .args([
                "--metrics-address",
                &format!("127.0.0.1:{metrics_port}"),
                "--kubeconfig",
            ])
            .arg(kubeconfig)
            .args([
                "--attachment-grace-period",
                "30s",
                "--health-interval",
                "1s",
            ])
            .args(extra)
            .env("RDS_CSI_LOG", "info")
            // As the chart sets them: events about the controller itself
            // (orphans) are recorded on its Pod.
            .env("POD_NAME", CONTROLLER_POD)
            .env("POD_NAMESPACE", self.ns())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join(log)).unwrap(),
            ))
            .spawn()
            .unwrap();
        let start = Instant::now();
        while !sock.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "controller socket never appeared: {}",
                std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let channel = tonic::transport::Endpoint::try_from("http://[::]:0")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let sock = sock.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(sock).await?,
                    ))
                }
            }))
            .await
            .unwrap();
        Controller {
            child,
            csi: ControllerClient::new(channel.clone()),
            identity: IdentityClient::new(channel),
            metrics_port,
        }
    }

    async fn start(&mut self) {
        self.start_controller(&kubeconfig()).await;
        self.wait_rebuilt().await;
    }

    /// Until the rebuild is done every publish is refused (fail closed);
    /// scenarios that are not about that wait for it.
    async fn wait_rebuilt(&self) {
        let start = Instant::now();
        while !self.log().contains("publishing is open") {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "no rebuild: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill_controller(&mut self) {
        if let Some(mut c) = self.ctl.take() {
            c.child.kill().unwrap();
            c.child.wait().unwrap();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    fn csi(&mut self) -> &mut ControllerClient<Channel> {
        &mut self.ctl.as_mut().expect("controller running").csi
    }

    fn scrape(&self) -> String {
        http_get(self.ctl.as_ref().unwrap().metrics_port, "/metrics").unwrap_or_default()
    }

    /// CreateVolume as the external-provisioner calls it, then the PV and
    /// bound PVC as the provisioner and binder leave them.
    async fn volume(&mut self, claim: &str, block_rwx: bool) -> String {
        let id = format!("pvc-{}-{claim}", self.name);
        let cap = cap(block_rwx);
        let ns = self.ns();
        let resp = self
            .csi()
            .create_volume(proto::CreateVolumeRequest {
                name: id.clone(),
                capacity_range: Some(proto::CapacityRange {
                    required_bytes: GIB,
                    limit_bytes: 0,
                }),
                volume_capabilities: vec![cap],
                parameters: [
                    ("csi.storage.k8s.io/pvc/name".to_string(), claim.to_string()),
                    ("csi.storage.k8s.io/pvc/namespace".to_string(), ns.clone()),
                    ("csi.storage.k8s.io/pv/name".to_string(), id.clone()),
                    ("migrationTimeoutSeconds".to_string(), "30".to_string()),
                ]
                .into_iter()
                .collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        let (modes, vmode) = if block_rwx {
            (json!(["ReadWriteMany"]), "Block")
        } else {
            (json!(["ReadWriteOnce"]), "Filesystem")
        };
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": id, "annotations": {"pv.kubernetes.io/provisioned-by": self.driver()}},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": modes, "volumeMode": vmode,
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": ns, "name": claim},
                "csi": {"driver": self.driver(), "volumeHandle": id, "volumeAttributes": resp.volume_context}
            }
        }))
        .unwrap();
        Api::<PersistentVolume>::all(self.client.clone())
            .create(&PostParams::default(), &pv)
            .await
            .unwrap();
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": modes, "volumeMode": vmode, "resources": {"requests": {"storage": "1Gi"}}, "volumeName": id}
        }))
        .unwrap();
        Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns)
            .create(&PostParams::default(), &pvc)
            .await
            .unwrap();
        id
    }

    fn va_name(&self, volume: &str, node: &str) -> String {
        format!(
            "csi-{}",
            &format!("{volume}-{node}").replace(['.', '_'], "-")
        )
    }

    /// What the attach/detach controller and external-attacher do: create
    /// the VolumeAttachment, call ControllerPublish, record the result.
    async fn attach(
        &mut self,
        volume: &str,
        node: &str,
        block_rwx: bool,
    ) -> Result<(), tonic::Status> {
        let node = self.node(node);
        let va_name = self.va_name(volume, &node);
        let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
        let va = serde_json::from_value(json!({
            "metadata": {"name": va_name},
            "spec": {"attacher": self.driver(), "nodeName": node, "source": {"persistentVolumeName": volume}}
        }))
        .unwrap();
        let _ = vas.create(&PostParams::default(), &va).await;
        let ctx = self.volume_context(volume).await;
        let result = self
            .csi()
            .controller_publish_volume(proto::ControllerPublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.clone(),
                volume_capability: Some(cap(block_rwx)),
                volume_context: ctx,
                ..Default::default()
            })
            .await;
        match result {
            Ok(r) => {
                let status = json!({"status": {"attached": true, "attachmentMetadata": r.into_inner().publish_context}});
                vas.patch_status(&va_name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
                Ok(())
            }
            Err(s) => {
                vas.delete(&va_name, &DeleteParams::default()).await.ok();
                Err(s)
            }
        }
    }

    async fn detach(&mut self, volume: &str, node: &str) -> Result<(), tonic::Status> {
        let node = self.node(node);
        self.csi()
            .controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.clone(),
                ..Default::default()
            })
            .await?;
        let va_name = self.va_name(volume, &node);
        Api::<VolumeAttachment>::all(self.client.clone())
            .delete(&va_name, &DeleteParams::default())
            .await
            .ok();
        Ok(())
    }

    async fn volume_context(&self, volume: &str) -> std::collections::HashMap<String, String> {
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(volume)
            .await
            .unwrap();
        pv.spec
            .unwrap()
            .csi
            .unwrap()
            .volume_attributes
            .unwrap_or_default()
            .into_iter()
            .collect()
    }

    async fn annotations(&self, volume: &str) -> BTreeMap<String, String> {
        let pv = Api::<PersistentVolume>::all(self.client.clone())
            .get(volume)
            .await
            .unwrap();
        pv.metadata
            .annotations
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| k.starts_with("rds.csi.srvlab.io/"))
            .collect()
    }

    /// Event reasons recorded on a PVC.
    async fn event_reasons(&self, claim: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns());
        api.list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim))
            .filter_map(|e| e.reason)
            .collect()
    }

    async fn wait_event(&self, claim: &str, reason: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.event_reasons(claim).await.iter().any(|r| r == reason) {
            if Instant::now() > deadline {
                let log = self.log();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "no event {reason} on {claim}; events: {:?}\ncontroller log (newest first):\n{}",
                    self.event_reasons(claim).await,
                    tail.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A virt-launcher pod as virt-controller creates it for the VMI with
    /// `vmi_uid`; `job` (VMIM name and UID) makes it a migration target pod.
    async fn launcher(
        &self,
        pod: &str,
        node: &str,
        claim: &str,
        vmi_uid: &str,
        job: Option<(&str, &str)>,
    ) {
        let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": "vm1", "kubevirt.io/created-by": vmi_uid});
        let mut annotations = json!({"kubevirt.io/domain": "vm1"});
        if let Some((name, uid)) = job {
            labels["kubevirt.io/migrationJobUID"] = json!(uid);
            annotations["kubevirt.io/migrationJobName"] = json!(name);
        }
        self.pod(pod, node, claim, labels, annotations).await;
    }

    fn dynamic(&self, r: &kube::api::ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns(), r)
    }

    /// A running VMI as KubeVirt leaves it: the claim in `spec.volumes`,
    /// the node in `status.nodeName`. Returns its UID.
    async fn vmi(&self, name: &str, node: &str, claim: &str) -> String {
        let vmi: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.ns(), "labels": {"kubevirt.io/nodeName": self.node(node)}},
            "spec": {"volumes": [{"name": "rootdisk", "persistentVolumeClaim": {"claimName": claim}}]}
        }))
        .unwrap();
        let api = self.dynamic(&vmi_resource());
        let uid = api
            .create(&PostParams::default(), &vmi)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();
        let status = json!({"status": {"phase": "Running", "nodeName": self.node(node)}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        uid
    }

    /// A VirtualMachineInstanceMigration as `virtctl migrate` creates it,
    /// with `phase` set the way virt-controller sets it (the status
    /// subresource). Returns its UID.
    async fn vmim(&self, name: &str, vmi: &str, phase: &str) -> String {
        let vmim: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name, "namespace": self.ns()},
            "spec": {"vmiName": vmi}
        }))
        .unwrap();
        let uid = self
            .dynamic(&vmim_resource())
            .create(&PostParams::default(), &vmim)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap();
        self.vmim_phase(name, phase).await;
        uid
    }

    async fn vmim_phase(&self, name: &str, phase: &str) {
        self.dynamic(&vmim_resource())
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": phase}})),
            )
            .await
            .unwrap();
    }

    /// Publishes to `node` as the attacher would, retrying refusals for at
    /// most `within` (the driver's caches catch up); the last error if it
    /// never succeeds.
    async fn attach_within(
        &mut self,
        volume: &str,
        node: &str,
        block_rwx: bool,
        within: Duration,
    ) -> Result<Duration, tonic::Status> {
        let started = Instant::now();
        loop {
            match self.attach(volume, node, block_rwx).await {
                Ok(()) => return Ok(started.elapsed()),
                Err(s)
                    if matches!(s.code(), Code::FailedPrecondition | Code::Aborted)
                        && started.elapsed() < within =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await
                }
                Err(s) => return Err(s),
            }
        }
    }

    async fn pod(
        &self,
        pod: &str,
        node: &str,
        claim: &str,
        labels: serde_json::Value,
        annotations: serde_json::Value,
    ) {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": pod, "namespace": self.ns(), "labels": labels, "annotations": annotations},
            "spec": {
                "nodeName": self.node(node),
                "containers": [{"name": "compute", "image": "quay.io/kubevirt/virt-launcher"}],
                "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": claim}}]
            }
        }))
        .unwrap();
        Api::<Pod>::namespaced(self.client.clone(), &self.ns())
            .create(&PostParams::default(), &p)
            .await
            .unwrap();
    }

    async fn cleanup(&self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for n in nodes.list(&ListParams::default()).await.unwrap() {
            let name = n.metadata.name.unwrap_or_default();
            if name.starts_with(&format!("{}-", self.name)) {
                nodes.delete(&name, &DeleteParams::default()).await.ok();
            }
        }
    }
}

fn cap(block_rwx: bool) -> proto::VolumeCapability {
    if block_rwx {
        proto::VolumeCapability {
            access_type: Some(AccessType::Block(BlockVolume {})),
            access_mode: Some(AccessMode {
                mode: Mode::MultiNodeMultiWriter as i32,
            }),
        }
    } else {
        proto::VolumeCapability {
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        }
    }
}

async fn ensure_kubevirt_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    // As KubeVirt defines them: the VMIM's status is a subresource (only
    // virt-controller writes it); the VMI's is not.
    for (kind, plural, short, subresources) in [
        (
            "VirtualMachineInstance",
            "virtualmachineinstances",
            "vmi",
            json!({}),
        ),
        (
            "VirtualMachineInstanceMigration",
            "virtualmachineinstancemigrations",
            "vmim",
            json!({"status": {}}),
        ),
    ] {
        let crd = serde_json::from_value(json!({
            "metadata": {"name": format!("{plural}.kubevirt.io")},
            "spec": {
                "group": "kubevirt.io", "scope": "Namespaced",
                "names": {"kind": kind, "plural": plural, "singular": kind.to_lowercase(), "shortNames": [short]},
                "versions": [{"name": "v1", "served": true, "storage": true, "subresources": subresources,
                              "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]
            }
        }))
        .unwrap();
        let _ = api.create(&PostParams::default(), &crd).await;
    }
    eventually(
        "KubeVirt CRDs established",
        Duration::from_secs(20),
        || async {
            let vmi =
                Api::<DynamicObject>::namespaced_with(client.clone(), "default", &vmi_resource());
            vmi.list(&ListParams::default()).await.ok().map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn vm_restart_on_another_node_is_a_timed_handoff() {
    let mut w = World::new("handoff", &["a", "b"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a")
    );
    // The old virt-launcher pod terminates; the new one lands on b.
    w.detach(&vol, "a").await.unwrap();
    assert!(!w
        .annotations(&vol)
        .await
        .contains_key("rds.csi.srvlab.io/attached-node"));
    w.attach(&vol, "b", false).await.unwrap();
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/attached-node"], w.node("b"));
    assert!(
        ann["rds.csi.srvlab.io/attached-at"]
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "RFC 3339: {ann:?}"
    );
    w.wait_event("disk", "Handoff").await;
    let m = w.scrape();
    assert_eq!(
        metric(&m, "rds_csi_attachment_grace_period_used_total"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "rds_csi_handoff_duration_seconds_count"), 1.0);
    // While b holds it, a gets nothing.
    let err = w.attach(&vol, "a", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains(&w.node("b")),
        "names the holder: {}",
        err.message()
    );
    w.wait_event("disk", "AttachConflict").await;
    w.cleanup().await;
}

#[tokio::test]
async fn a_node_deleted_while_attached_keeps_its_volume_until_its_volume_attachment_goes() {
    let mut w = World::new("nodedel", &["a", "b"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    Api::<Node>::all(w.client.clone())
        .delete(&w.node("a"), &DeleteParams::default())
        .await
        .unwrap();
    // The machine may still run: deleting its Node object fences nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = w.attach(&vol, "b", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    w.wait_event("disk", "AttachedToDeletedNode").await;
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a")
    );
    assert!(metric(&w.scrape(), "rds_csi_attachment_deleted_node_kept_total") >= 1.0);
    // Kubernetes detaches it (here: its VolumeAttachment is deleted
    // without an unpublish, as after a force-detach): now b may have it.
    Api::<VolumeAttachment>::all(w.client.clone())
        .delete(&w.va_name(&vol, &w.node("a")), &DeleteParams::default())
        .await
        .unwrap();
    w.attach_within(&vol, "b", false, Duration::from_secs(10))
        .await
        .unwrap();
    w.wait_event("disk", "StaleAttachmentCleared").await;
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("b")
    );
    assert_eq!(
        metric(&w.scrape(), "rds_csi_attachment_stale_cleared_total"),
        1.0
    );
    w.cleanup().await;
}

#[tokio::test]
async fn an_out_of_service_taint_releases_the_node_s_volume() {
    let mut w = World::new("oos", &["a", "b"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    let taint = json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}});
    Api::<Node>::all(w.client.clone())
        .patch(&w.node("a"), &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        match w.attach(&vol, "b", false).await {
            Ok(()) => break,
            Err(s)
                if matches!(s.code(), Code::FailedPrecondition | Code::Aborted)
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    w.wait_event("disk", "StaleAttachmentCleared").await;
    // The fenced node itself gets nothing.
    let other = w.volume("other", false).await;
    assert_eq!(
        w.attach(&other, "a", false).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    w.cleanup().await;
}

#[tokio::test]
async fn live_migration_in_kubevirt_s_real_order_is_admitted_and_completes() {
    let mut w = World::new("migok", &["a", "b", "c"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let vmi = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &vmi, None)
        .await;
    w.attach(&vol, "a", true).await.unwrap();
    // KubeVirt's order: the VMIM is scheduling, the target pod exists on b
    // with both UIDs, and the VMI has no migrationState yet.
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher(
        "virt-launcher-vm1-dst",
        "b",
        "vmdisk",
        &vmi,
        Some(("mig1", &job)),
    )
    .await;
    // Admitted at once, or on the attacher's first retry (the driver's
    // caches may be a moment behind).
    if let Err(first) = w.attach(&vol, "b", true).await {
        assert_eq!(first.code(), Code::FailedPrecondition, "{first:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.attach(&vol, "b", true).await.unwrap();
    }
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/migration-source"], w.node("a"));
    assert_eq!(ann["rds.csi.srvlab.io/migration-target"], w.node("b"));
    let started_at: jiff::Timestamp = ann["rds.csi.srvlab.io/migration-started-at"]
        .parse()
        .unwrap();
    let deadline: jiff::Timestamp = ann["rds.csi.srvlab.io/migration-deadline"].parse().unwrap();
    assert_eq!(
        deadline.duration_since(started_at).as_secs(),
        30,
        "migrationTimeoutSeconds from the volume"
    );
    w.wait_event("vmdisk", "MigrationStarted").await;
    // A third node is never admitted, even with a target pod of its own.
    let job2 = w.vmim("mig2", "vm1", "Scheduling").await;
    w.launcher(
        "virt-launcher-vm1-third",
        "c",
        "vmdisk",
        &vmi,
        Some(("mig2", &job2)),
    )
    .await;
    assert_eq!(
        w.attach(&vol, "c", true).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // Success: the source pod goes away.
    w.detach(&vol, "a").await.unwrap();
    w.wait_event("vmdisk", "MigrationCompleted").await;
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/attached-node"], w.node("b"));
    assert!(!ann.contains_key("rds.csi.srvlab.io/migration-target"));
    let m = w.scrape();
    assert_eq!(
        metric(
            &m,
            "rds_csi_migration_migrations_total{result=\"completed\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "rds_csi_migration_active_migrations"), 0.0);
    w.cleanup().await;
}

#[tokio::test]
async fn a_forged_launcher_pod_without_a_migration_is_refused_and_never_attaches() {
    let mut w = World::new("forged", &["a", "b"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let vmi = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &vmi, None)
        .await;
    w.attach(&vol, "a", true).await.unwrap();
    // Anyone who may create pods can copy every label: the VMI's UID and a
    // made-up migration job.
    w.launcher(
        "virt-launcher-vm1-fake",
        "b",
        "vmdisk",
        &vmi,
        Some(("mig-fake", "0b8f5a52-0000-4000-8000-000000000000")),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = w.attach(&vol, "b", true).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("no VirtualMachineInstanceMigration names the VM"),
        "{}",
        err.message()
    );
    // Its VolumeAttachment never became attached (the attacher deleted it
    // after the refusal here; nothing marked it attached).
    assert!(Api::<VolumeAttachment>::all(w.client.clone())
        .get_opt(&w.va_name(&vol, &w.node("b")))
        .await
        .unwrap()
        .is_none_or(|va| !va.status.is_some_and(|s| s.attached)));
    // A migration that already ended admits nothing either.
    let job = w.vmim("mig-done", "vm1", "Succeeded").await;
    w.launcher(
        "virt-launcher-vm1-old",
        "b",
        "vmdisk",
        &vmi,
        Some(("mig-done", &job)),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let err = w.attach(&vol, "b", true).await.unwrap_err();
    assert!(
        err.message().contains("not in progress"),
        "{}",
        err.message()
    );
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a")
    );
    w.cleanup().await;
}

#[tokio::test]
async fn an_unlabelled_second_pod_on_the_rwx_class_is_refused() {
    let mut w = World::new("unlab", &["a", "b"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let vmi = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &vmi, None)
        .await;
    w.attach(&vol, "a", true).await.unwrap();
    // A plain pod (no KubeVirt labels) mounts the same claim on b.
    w.pod(
        "intruder",
        "b",
        "vmdisk",
        json!({"app": "intruder"}),
        json!({}),
    )
    .await;
    // And a virt-launcher pod without a migration job.
    w.launcher("virt-launcher-vm1-copy", "b", "vmdisk", &vmi, None)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = w.attach(&vol, "b", true).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("not a verified KubeVirt migration target"),
        "{}",
        err.message()
    );
    w.wait_event("vmdisk", "AttachConflict").await;
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a")
    );
    w.cleanup().await;
}

#[tokio::test]
async fn the_vmi_migration_state_admits_the_target_of_a_running_vmim() {
    let mut w = World::new("vmistate", &["a", "b"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let uid = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &uid, None)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.attach(&vol, "a", true).await.unwrap();
    assert_eq!(
        w.attach(&vol, "b", true).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // A migration to b is running and the VMI's migrationState names b;
    // no target pod is visible (an older KubeVirt without its labels).
    let job = w.vmim("mig1", "vm1", "Running").await;
    let vmis = w.dynamic(&vmi_resource());
    let migrating = json!({
        "metadata": {"labels": {"kubevirt.io/migrationTargetNodeName": w.node("b")}},
        "status": {"migrationState": {"sourceNode": w.node("a"), "targetNode": w.node("b"), "migrationUid": job, "completed": false}}
    });
    vmis.patch("vm1", &PatchParams::default(), &Patch::Merge(&migrating))
        .await
        .unwrap();
    w.attach_within(&vol, "b", true, Duration::from_secs(5))
        .await
        .unwrap();
    w.detach(&vol, "b").await.unwrap();
    w.wait_event("vmdisk", "MigrationFailed").await;
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a")
    );
    // Once KubeVirt marks the migration failed, b is no longer admitted.
    w.vmim_phase("mig1", "Failed").await;
    let failed = json!({"status": {"migrationState": {"failed": true}}});
    vmis.patch("vm1", &PatchParams::default(), &Patch::Merge(&failed))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.attach(&vol, "b", true).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    w.cleanup().await;
}

#[tokio::test]
async fn a_failed_migration_detaches_the_target_and_a_stuck_one_times_out_once() {
    let mut w = World::new("migfail", &["a", "b"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let vmi = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("src", "a", "vmdisk", &vmi, None).await;
    w.attach(&vol, "a", true).await.unwrap();
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher("dst", "b", "vmdisk", &vmi, Some(("mig1", &job)))
        .await;
    w.attach_within(&vol, "b", true, Duration::from_secs(10))
        .await
        .unwrap();
    // The migration aborts: the target pod is deleted.
    w.detach(&vol, "b").await.unwrap();
    w.wait_event("vmdisk", "MigrationFailed").await;
    assert_eq!(
        metric(
            &w.scrape(),
            "rds_csi_migration_migrations_total{result=\"failed\"}"
        ),
        1.0
    );
    // A second attempt that never finishes passes its 30 s deadline.
    w.attach(&vol, "b", true).await.unwrap();
    eventually("MigrationTimedOut", Duration::from_secs(45), || async {
        w.event_reasons("vmdisk")
            .await
            .contains(&"MigrationTimedOut".to_string())
            .then_some(())
    })
    .await;
    assert_eq!(
        metric(
            &w.scrape(),
            "rds_csi_migration_migrations_total{result=\"timed_out\"}"
        ),
        1.0
    );
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/migration-timeout-reported"],
        "true"
    );
    // Reported once, and that stays true across a restart.
    w.kill_controller();
    w.start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(
            &w.scrape(),
            "rds_csi_migration_migrations_total{result=\"timed_out\"}"
        ),
        0.0,
        "the new controller does not report it again"
    );
    w.cleanup().await;
}

#[tokio::test]
async fn a_controller_killed_mid_migration_rebuilds_and_keeps_the_deadline() {
    let mut w = World::new("restart", &["a", "b", "c"]).await;
    ensure_kubevirt_crds(&w.client).await;
    w.start().await;
    let vol = w.volume("vmdisk", true).await;
    let rwo = w.volume("plain", false).await;
    let vmi = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("src", "a", "vmdisk", &vmi, None).await;
    w.attach(&vol, "a", true).await.unwrap();
    w.attach(&rwo, "a", false).await.unwrap();
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher("dst", "b", "vmdisk", &vmi, Some(("mig1", &job)))
        .await;
    let started = Instant::now();
    while let Err(s) = w.attach(&vol, "b", true).await {
        assert!(
            matches!(s.code(), Code::FailedPrecondition | Code::Aborted)
                && started.elapsed() < Duration::from_secs(10),
            "{s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = w.annotations(&vol).await;
    w.kill_controller();

    // Publish before the rebuild: a controller that cannot reach the API
    // server refuses (fail closed).
    let dead = w.dir.path().join("dead-kubeconfig");
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let port = text
        .split("https://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(['\n', '/'])
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &dead,
        text.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    )
    .unwrap();
    w.start_controller(&dead).await;
    let err = w.attach(&rwo, "c", false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    w.kill_controller();

    w.start().await;
    // The rebuilt state fences both volumes as before.
    let started = Instant::now();
    let err = loop {
        match w.attach(&rwo, "c", false).await {
            Err(s)
                if s.code() == Code::Unavailable && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "the rebuilt holder a is enforced: {err:?}"
    );
    let job2 = w.vmim("mig2", "vm1", "Scheduling").await;
    w.launcher("third", "c", "vmdisk", &vmi, Some(("mig2", &job2)))
        .await;
    assert_eq!(
        w.attach(&vol, "c", true).await.unwrap_err().code(),
        Code::FailedPrecondition,
        "never a third node"
    );
    let after = w.annotations(&vol).await;
    assert_eq!(
        before["rds.csi.srvlab.io/migration-deadline"],
        after["rds.csi.srvlab.io/migration-deadline"],
        "deadline kept"
    );
    // The migration completes after the restart.
    w.detach(&vol, "a").await.unwrap();
    w.wait_event("vmdisk", "MigrationCompleted").await;
    w.cleanup().await;
}

#[tokio::test]
async fn of_64_concurrent_publishes_to_different_nodes_exactly_one_wins() {
    let names: Vec<String> = (0..64).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut w = World::new("race", &refs).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    let ctx = w.volume_context(&vol).await;
    let csi = w.csi().clone();
    let mut tasks = Vec::new();
    for n in &names {
        let mut csi = csi.clone();
        let req = proto::ControllerPublishVolumeRequest {
            volume_id: vol.clone(),
            node_id: w.node(n),
            volume_capability: Some(cap(false)),
            volume_context: ctx.clone(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            csi.controller_publish_volume(req)
                .await
                .map(drop)
                .map_err(|s| s.code())
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(code) => assert!(
                matches!(code, Code::Aborted | Code::FailedPrecondition),
                "{code:?}"
            ),
        }
    }
    assert_eq!(won, 1, "exactly one node wins");
    let holder = w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"].clone();
    assert!(!holder.contains(','), "one holder: {holder}");
    let _ = w
        .ctl
        .as_mut()
        .unwrap()
        .identity
        .probe(proto::ProbeRequest {})
        .await
        .unwrap();
    w.cleanup().await;
}

async fn wait_detached(w: &World, vol: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        "the attachment annotation to be cleared",
        within,
        || async {
            (!w.annotations(vol)
                .await
                .contains_key("rds.csi.srvlab.io/attached-node"))
            .then_some(())
        },
    )
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_holder_whose_volume_attachment_vanishes_is_released_by_the_periodic_pass() {
    let mut w = World::new("vagone", &["a", "b"]).await;
    w.start_controller_with(&kubeconfig(), &["--attachment-reconcile-interval", "1s"])
        .await;
    w.wait_rebuilt().await;
    let vol = w.volume("disk", false).await;
    let kept = w.volume("kept", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    w.attach(&kept, "b", false).await.unwrap();
    // Its finalizer stripped by hand: the VolumeAttachment is gone and no
    // unpublish ever comes.
    Api::<VolumeAttachment>::all(w.client.clone())
        .delete(&w.va_name(&vol, &w.node("a")), &DeleteParams::default())
        .await
        .unwrap();
    wait_detached(&w, &vol, Duration::from_secs(10)).await;
    w.wait_event("disk", "StaleAttachmentCleared").await;
    // The reconciler never deletes PVs itself, and other attachments are
    // untouched.
    assert!(Api::<PersistentVolume>::all(w.client.clone())
        .get_opt(&vol)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        w.annotations(&kept).await["rds.csi.srvlab.io/attached-node"],
        w.node("b")
    );
    assert_eq!(
        metric(
            &w.scrape(),
            "rds_csi_reconciler_stale_attachments_released_total{trigger=\"attachment_gone\"}"
        ),
        1.0
    );
    w.cleanup().await;
}

#[tokio::test]
async fn deleting_a_node_releases_nothing_and_reports_its_attachments() {
    let mut w = World::new("recdel", &["a"]).await;
    w.start_controller_with(&kubeconfig(), &["--attachment-reconcile-interval", "1s"])
        .await;
    w.wait_rebuilt().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    Api::<Node>::all(w.client.clone())
        .delete(&w.node("a"), &DeleteParams::default())
        .await
        .unwrap();
    w.wait_event("disk", "AttachedToDeletedNode").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a"),
        "reported, not released"
    );
    assert_eq!(
        metric(&w.scrape(), "rds_csi_reconciler_deleted_node_attachments"),
        1.0
    );
    w.cleanup().await;
}

#[tokio::test]
async fn an_acknowledged_publish_the_attacher_has_not_recorded_survives_a_restart() {
    let mut w = World::new("ackd", &["a", "b"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    // The attach/detach controller's VolumeAttachment, and a publish the
    // driver answered, but the attacher died before setting attached.
    let node = w.node("a");
    let va: VolumeAttachment = serde_json::from_value(json!({
        "metadata": {"name": w.va_name(&vol, &node)},
        "spec": {"attacher": w.driver(), "nodeName": node, "source": {"persistentVolumeName": vol}}
    }))
    .unwrap();
    Api::<VolumeAttachment>::all(w.client.clone())
        .create(&PostParams::default(), &va)
        .await
        .unwrap();
    let ctx = w.volume_context(&vol).await;
    w.csi()
        .controller_publish_volume(proto::ControllerPublishVolumeRequest {
            volume_id: vol.clone(),
            node_id: node.clone(),
            volume_capability: Some(cap(false)),
            volume_context: ctx,
            ..Default::default()
        })
        .await
        .unwrap();
    w.kill_controller();
    w.start().await;
    let err = w.attach(&vol, "b", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(&node), "{}", err.message());
    w.cleanup().await;
}

#[tokio::test]
async fn two_attached_volume_attachments_of_an_rwo_volume_rebuild_as_a_reported_conflict() {
    let mut w = World::new("conflict", &["a", "b", "c"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    w.kill_controller();
    // What no rule of the driver allows, found in the cluster (left by
    // another tool, or by hand).
    for n in ["a", "b"] {
        let node = w.node(n);
        let name = w.va_name(&vol, &node);
        let vas = Api::<VolumeAttachment>::all(w.client.clone());
        let va: VolumeAttachment = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"attacher": w.driver(), "nodeName": node, "source": {"persistentVolumeName": vol}}
        }))
        .unwrap();
        vas.create(&PostParams::default(), &va).await.unwrap();
        vas.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&json!({"status": {"attached": true}})),
        )
        .await
        .unwrap();
    }
    w.start().await;
    w.wait_event("disk", "AttachConflictOnRebuild").await;
    assert_eq!(
        metric(&w.scrape(), "rds_csi_attachment_rebuild_conflicts_total"),
        1.0
    );
    assert!(
        !w.annotations(&vol)
            .await
            .contains_key("rds.csi.srvlab.io/migration-source"),
        "no invented migration"
    );
    assert_eq!(
        w.attach(&vol, "c", false).await.unwrap_err().code(),
        Code::FailedPrecondition,
        "both are kept; nothing else gets in"
    );
    w.cleanup().await;
}

#[tokio::test]
async fn tainting_a_node_out_of_service_clears_its_attachments() {
    let mut w = World::new("rectaint", &["a"]).await;
    w.start().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    let taint = json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}});
    Api::<Node>::all(w.client.clone())
        .patch(&w.node("a"), &PatchParams::default(), &Patch::Merge(&taint))
        .await
        .unwrap();
    let took = wait_detached(&w, &vol, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "cleared in {took:?}");
    w.cleanup().await;
}

#[tokio::test]
async fn attachments_on_a_long_not_ready_node_are_reported_not_released() {
    let mut w = World::new("notready", &["a"]).await;
    w.start_controller_with(
        &kubeconfig(),
        &[
            "--not-ready-threshold",
            "1s",
            "--attachment-reconcile-interval",
            "1s",
        ],
    )
    .await;
    w.wait_rebuilt().await;
    let vol = w.volume("disk", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    // What the node lifecycle controller writes when the kubelet stops
    // posting status.
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "lastHeartbeatTime": since.to_string(), "lastTransitionTime": since.to_string()}]}});
    Api::<Node>::all(w.client.clone())
        .patch_status(
            &w.node("a"),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    w.wait_event("disk", "AttachedToNotReadyNode").await;
    let m = w.scrape();
    assert_eq!(
        metric(&m, "rds_csi_reconciler_not_ready_attachments"),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "rds_csi_reconciler_not_ready_oldest_seconds") >= 600.0);
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"],
        w.node("a"),
        "reported, not released"
    );
    w.cleanup().await;
}

// ------------------------------------------------------------ orphan volumes

#[path = "apiserver/orphans.rs"]
mod orphans;

/// The controller's paged LISTs (pages of 500 decoded into minimal structs)
/// follow the API server's continue tokens to the end: with pages of 2,
/// every PV of the driver is seen once.
#[tokio::test]
async fn paged_minimal_lists_follow_continue_tokens_to_the_end() {
    use attachment_manager::lists::{self, PvFacts};
    let w = World::new("pages", &[]).await;
    let ids: std::collections::BTreeSet<String> =
        (0..5).map(|i| format!("pvc-{}-{i}", w.name)).collect();
    for id in &ids {
        w.pv_for(id).await;
    }
    let driver = w.driver();
    let mut seen = Vec::new();
    let mut pages = 0;
    lists::for_each_page_of(&w.client, lists::PV_PATH, 2, |page: Vec<PvFacts>| {
        pages += 1;
        assert!(page.len() <= 2, "a page of {} objects", page.len());
        seen.extend(
            page.iter()
                .filter_map(|pv| pv.handle_for(&driver).map(str::to_string)),
        );
    })
    .await
    .unwrap();
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), ids.len(), "{seen:?}");
    assert_eq!(
        seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    w.cleanup().await;
}

// ---------------------------------------------------------------- node events

mod node_events {
    //! The node service (over the recording fake host, so no root or NVMe
    //! is needed) wired to the API server exactly as `rds-csi node` wires
    //! it: its failures must show up as Events on the right PVC.

    use std::collections::HashMap;
    use std::sync::Arc;

    use attachment_manager::kube_store::KubeEvents;
    use csi_server::metrics::RpcMetrics;
    use csi_server::node::format_record::{FormatRecord, KubeFormatRecord, Recorded, ANNOTATION};
    use csi_server::node::{events, NodeConfig, NodeEvents, NodeService};
    use csi_server::proto::node_server::Node as _;
    use nix::errno::Errno;
    use nvme::fake::{FakeHost, SysOp};

    use super::*;

    const PREFIX: &str = "nqn.2000-02.com.mikrotik:";

    fn stage_req(volume: &str, ns: &str, claim: &str) -> proto::NodeStageVolumeRequest {
        proto::NodeStageVolumeRequest {
            volume_id: volume.into(),
            staging_target_path: format!("/var/lib/kubelet/plugins/x/{volume}/globalmount"),
            volume_capability: Some(cap(false)),
            volume_context: HashMap::from([
                ("nvmeAddress".to_string(), "10.0.0.1".to_string()),
                ("nqn".to_string(), format!("{PREFIX}{volume}")),
                (
                    "csi.storage.k8s.io/pvc/namespace".to_string(),
                    ns.to_string(),
                ),
                ("csi.storage.k8s.io/pvc/name".to_string(), claim.to_string()),
            ]),
            ..Default::default()
        }
    }

    async fn create_pvc(client: &Client, ns: &str, claim: &str) -> String {
        let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
            "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
        }))
        .unwrap();
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .create(&PostParams::default(), &pvc)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    }

    /// Events in `ns` about the PVC `claim`.
    async fn events_on(client: &Client, ns: &str, claim: &str) -> Vec<Event> {
        Api::<Event>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim))
            .collect()
    }

    #[tokio::test]
    async fn node_format_refusals_and_mount_failures_are_events_on_the_pvc() {
        let w = World::new("node-events", &[]).await;
        let ns = w.ns();
        let node = w.node("a");
        let refused_uid = create_pvc(&w.client, &ns, "refused").await;
        let unmountable_uid = create_pvc(&w.client, &ns, "unmountable").await;
        // A PVC of the same name in another namespace must stay untouched.
        let other_ns = format!("{ns}-other");
        Api::<Namespace>::all(w.client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": other_ns}})).unwrap(),
            )
            .await
            .unwrap();
        create_pvc(&w.client, &other_ns, "refused").await;

        let f = FakeHost::new();
        let config = nvme::Config::new(
            nvme::NqnPrefix::new(PREFIX).unwrap(),
            nvme::HostIdentity {
                nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                id: None,
            },
        );
        let sink = KubeEvents::new(w.client.clone(), events::REPORTER, Some(node.clone()))
            .with_action(events::ACTION);
        let svc = NodeService::with_events(
            NodeConfig {
                node_id: node.clone(),
                max_volumes: 0,
                topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
                state_dir: "/var/lib/kubelet/plugins/rds/volumes".into(),
                staging_root: "/var/lib/kubelet".into(),
                max_ctrl_loss_tmo: None,
            },
            nvme::DataPath::new(f.clone(), f.clone(), config),
            RpcMetrics::unregistered(),
            NodeEvents::spawn(
                Arc::new(sink),
                events::QUEUE_CAPACITY,
                events::DELIVERY_TIMEOUT,
            ),
        );

        // An xfs volume staged as ext4: the node refuses to format it.
        let refused = format!("pvc-{}-refused", w.name);
        f.add_volume(&format!("{PREFIX}{refused}"), 1 << 30);
        f.update_volume(&format!("{PREFIX}{refused}"), |v| v.fs = Some("xfs".into()));
        let err = svc
            .node_stage_volume(tonic::Request::new(stage_req(&refused, &ns, "refused")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

        // An empty volume whose mount fails.
        let unmountable = format!("pvc-{}-unmountable", w.name);
        f.add_volume(&format!("{PREFIX}{unmountable}"), 1 << 30);
        f.fail(SysOp::Mount, Errno::EIO);
        svc.node_stage_volume(tonic::Request::new(stage_req(
            &unmountable,
            &ns,
            "unmountable",
        )))
        .await
        .unwrap_err();
        assert!(
            !f.mounts()
                .iter()
                .any(|m| m.mount_point.starts_with("/var/lib/kubelet")),
            "{:?}",
            f.mounts()
        );

        for (claim, uid, reason, volume) in [
            ("refused", &refused_uid, "FormatRefused", &refused),
            ("unmountable", &unmountable_uid, "MountFailed", &unmountable),
        ] {
            let ev = eventually(
                &format!("{reason} on {claim}"),
                Duration::from_secs(10),
                || async { events_on(&w.client, &ns, claim).await.into_iter().next() },
            )
            .await;
            let all = events_on(&w.client, &ns, claim).await;
            assert_eq!(all.len(), 1, "one event on {claim}: {all:?}");
            assert_eq!(ev.reason.as_deref(), Some(reason));
            assert_eq!(ev.type_.as_deref(), Some("Warning"));
            assert_eq!(ev.action.as_deref(), Some("MountVolume"));
            assert_eq!(ev.reporting_controller.as_deref(), Some("rds-csi-node"));
            assert_eq!(ev.reporting_instance.as_deref(), Some(node.as_str()));
            assert_eq!(ev.metadata.namespace.as_deref(), Some(ns.as_str()));
            let r = ev.regarding.unwrap();
            assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
            assert_eq!(r.api_version.as_deref(), Some("v1"));
            assert_eq!(r.namespace.as_deref(), Some(ns.as_str()));
            assert_eq!(r.name.as_deref(), Some(claim));
            assert_eq!(
                r.uid.as_deref(),
                Some(uid.as_str()),
                "found by kubectl describe"
            );
            let note = ev.note.unwrap_or_default();
            assert!(note.contains(volume.as_str()), "{note}");
            assert!(note.contains(&node), "{note}");
        }
        // Nothing in the other namespace, nothing on any other object.
        assert!(events_on(&w.client, &other_ns, "refused").await.is_empty());
        let all = Api::<Event>::namespaced(w.client.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(all.items.len(), 2, "{:?}", all.items);
        Api::<Namespace>::all(w.client.clone())
            .delete(&other_ns, &DeleteParams::default())
            .await
            .ok();
        w.cleanup().await;
    }

    /// The node service over the fake host as `rds-csi node` wires it in a
    /// cluster: events on PVCs and the format record on PVs.
    fn node_service(w: &World, f: &FakeHost, node: &str) -> NodeService<FakeHost, FakeHost> {
        let config = nvme::Config::new(
            nvme::NqnPrefix::new(PREFIX).unwrap(),
            nvme::HostIdentity {
                nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
                id: None,
            },
        );
        let sink = KubeEvents::new(w.client.clone(), events::REPORTER, Some(node.to_string()))
            .with_action(events::ACTION);
        NodeService::with_events(
            NodeConfig {
                node_id: node.to_string(),
                max_volumes: 0,
                topology: ("rds.csi.srvlab.io/rds".into(), "default".into()),
                state_dir: "/var/lib/kubelet/plugins/rds/volumes".into(),
                staging_root: "/var/lib/kubelet".into(),
                max_ctrl_loss_tmo: None,
            },
            nvme::DataPath::new(f.clone(), f.clone(), config),
            RpcMetrics::unregistered(),
            NodeEvents::spawn(
                Arc::new(sink),
                events::QUEUE_CAPACITY,
                events::DELIVERY_TIMEOUT,
            ),
        )
        .with_format_record(Arc::new(KubeFormatRecord::new(
            w.client.clone(),
            w.driver(),
        )))
    }

    #[tokio::test]
    async fn the_node_annotates_the_pv_after_mkfs_and_refuses_the_annotated_volume_when_it_reads_empty(
    ) {
        let w = World::new("format-record", &[]).await;
        let ns = w.ns();
        let node = w.node("a");
        create_pvc(&w.client, &ns, "disk").await;
        let id = format!("pvc-{}-disk", w.name);
        w.pv_for(&id).await;
        let nqn = format!("{PREFIX}{id}");
        let f = FakeHost::new();
        f.add_volume(&nqn, 1 << 30);
        let svc = node_service(&w, &f, &node);

        svc.node_stage_volume(tonic::Request::new(stage_req(&id, &ns, "disk")))
            .await
            .unwrap();
        assert_eq!(f.ran(nvme::fake::Program::Mkfs), 1);
        assert_eq!(
            w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
            Some("ext4"),
            "recorded on the PV before NodeStageVolume returned"
        );
        let staging = stage_req(&id, &ns, "disk").staging_target_path;
        svc.node_unstage_volume(tonic::Request::new(proto::NodeUnstageVolumeRequest {
            volume_id: id.clone(),
            staging_target_path: staging.clone(),
        }))
        .await
        .unwrap();

        // The node forgot the volume at unstage (as a new node never knew
        // it); the target now serves zeros.
        f.update_volume(&nqn, |v| v.fs = None);
        let err = svc
            .node_stage_volume(tonic::Request::new(stage_req(&id, &ns, "disk")))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
        assert_eq!(f.ran(nvme::fake::Program::Mkfs), 1, "never formatted twice");
        assert!(f.mounts_at(std::path::Path::new(&staging)).is_empty());
        assert_eq!(f.volume(&nqn).unwrap().fs, None, "nothing written");
        let ev = eventually("FormatRefused on disk", Duration::from_secs(10), || async {
            events_on(&w.client, &ns, "disk").await.into_iter().next()
        })
        .await;
        assert_eq!(ev.reason.as_deref(), Some("FormatRefused"));
        let note = ev.note.unwrap_or_default();
        assert!(note.contains(&id), "{note}");
        assert!(note.contains(ANNOTATION), "{note}");
        assert_eq!(
            w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
            Some("ext4"),
            "the record is kept"
        );
        w.cleanup().await;
    }

    /// Deletes a PV for good: no controller manager runs here to drop the
    /// pv-protection finalizer the API server's admission added.
    async fn delete_pv(api: &Api<PersistentVolume>, name: &str) {
        api.delete(name, &DeleteParams::default()).await.unwrap();
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .ok();
        eventually("PV gone", Duration::from_secs(10), || async {
            api.get_opt(name).await.unwrap().is_none().then_some(())
        })
        .await;
    }

    #[tokio::test]
    async fn the_pv_annotation_is_read_only_from_this_driver_s_pv_and_written_only_to_the_pv_that_was_read(
    ) {
        let w = World::new("format-record-pv", &[]).await;
        let record = KubeFormatRecord::new(w.client.clone(), w.driver());
        let api = Api::<PersistentVolume>::all(w.client.clone());
        // No PV: no record is kept, the probe alone decides.
        let id = format!("pvc-{}-x", w.name);
        assert!(matches!(
            record.read(&id, &id).await.unwrap(),
            Recorded::NotKept(_)
        ));
        // A PV of that name for another volume handle is not this volume's.
        let pv: PersistentVolume = serde_json::from_value(json!({
            "metadata": {"name": id},
            "spec": {
                "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                "csi": {"driver": w.driver(), "volumeHandle": "another-volume"}
            }
        }))
        .unwrap();
        api.create(&PostParams::default(), &pv).await.unwrap();
        assert!(matches!(
            record.read(&id, &id).await.unwrap(),
            Recorded::NotKept(_)
        ));
        delete_pv(&api, &id).await;

        // This volume's PV, deleted and made again between the read and
        // the write: the write must not land on the new object.
        w.pv_for(&id).await;
        let Recorded::Kept { at, formatted } = record.read(&id, &id).await.unwrap() else {
            panic!("the PV is this volume's")
        };
        assert_eq!(formatted, None);
        assert!(at.uid.is_some());
        delete_pv(&api, &id).await;
        w.pv_for(&id).await;
        let e = record
            .write(&id, &at, nvme::FsType::Ext4)
            .await
            .unwrap_err();
        assert!(e.0.contains(&id), "{e}");
        assert_eq!(w.annotations(&id).await.get(ANNOTATION), None);
        // Read again, the write lands.
        let Recorded::Kept { at, .. } = record.read(&id, &id).await.unwrap() else {
            panic!()
        };
        record.write(&id, &at, nvme::FsType::Xfs).await.unwrap();
        assert_eq!(
            w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
            Some("xfs")
        );
        delete_pv(&api, &id).await;
        w.cleanup().await;
    }
}

#[tokio::test]
async fn a_publish_to_a_node_whose_host_nqn_another_node_reports_is_refused_naming_both() {
    use attachment_manager::host_nqn::{record_host_nqn, HOST_NQN_ANNOTATION};
    let mut w = World::new("hostnqn", &["a", "b", "c"]).await;
    // What each node plugin does at start, as the node plugins of two
    // machines cloned from one image would.
    let shared = format!("nqn.2014-08.org.nvmexpress:{}-cloned", w.name);
    for n in ["a", "b"] {
        record_host_nqn(w.client.clone(), &w.node(n), &shared)
            .await
            .unwrap();
    }
    let own = format!("nqn.2014-08.org.nvmexpress:{}-c", w.name);
    record_host_nqn(w.client.clone(), &w.node("c"), &own)
        .await
        .unwrap();
    let on_node = Api::<Node>::all(w.client.clone())
        .get(&w.node("a"))
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(on_node.get(HOST_NQN_ANNOTATION), Some(&shared));
    // Started after the annotations: its Node watch has them from the
    // first list, before any publish is answered.
    w.start().await;
    let vol = w.volume("disk", false).await;
    let err = w.attach(&vol, "a", false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for want in [w.node("a"), w.node("b"), shared.clone()] {
        assert!(err.message().contains(&want), "{want}: {}", err.message());
    }
    assert!(
        !w.annotations(&vol)
            .await
            .contains_key("rds.csi.srvlab.io/attached-node"),
        "nothing attached"
    );
    assert_eq!(
        w.attach(&vol, "b", false).await.unwrap_err().code(),
        Code::FailedPrecondition
    );
    // The operator gives node b its own host NQN and its plugin restarts:
    // an attach retry to a succeeds once the watch has seen it.
    record_host_nqn(
        w.client.clone(),
        &w.node("b"),
        &format!("nqn.2014-08.org.nvmexpress:{}-b", w.name),
    )
    .await
    .unwrap();
    let started = Instant::now();
    loop {
        match w.attach(&vol, "a", false).await {
            Ok(()) => break,
            Err(s)
                if s.code() == Code::FailedPrecondition
                    && started.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(s) => panic!("{s:?}"),
        }
    }
    w.cleanup().await;
}
