//! One tier-3 test's world and what Kubernetes' own components would do
//! to it (the provisioner, the attach/detach controller and attacher,
//! virt-controller).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};

// What the topic modules use from here and from the kit.
pub use std::time::{Duration, Instant};

pub use csi_server::proto::controller_client::ControllerClient;
pub use csi_server::proto::identity_client::IdentityClient;
pub use csi_server::proto::volume_capability::access_mode::Mode;
pub use csi_server::proto::{self};
pub use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod,
};
pub use k8s_openapi::api::events::v1::Event;
pub use kube::api::Api;
pub use kube::Client;
pub use serde_json::json;
pub use testkit::kube::{create, test_kubeconfig as kubeconfig};
pub use testkit::kubevirt::KubeVirt;
pub use testkit::metrics::metric;
pub use testkit::{eventually, free_port};
pub use tonic::transport::Channel;
pub use tonic::Code;

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");
pub const GIB: i64 = 1 << 30;
/// The controller's Pod (POD_NAME): events about the controller itself
/// (orphans) are recorded on it.
pub const CONTROLLER_POD: &str = "rds-csi-controller-0";

/// One test's world: its own driver name, nodes, namespace and simulator.
pub struct World {
    pub name: String,
    pub client: Client,
    pub sim: rds_sim::SimHandle,
    pub key_file: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub ctl: Option<Controller>,
}

/// A controller process and its CSI clients.
pub struct Controller {
    pub child: Child,
    pub csi: ControllerClient<Channel>,
    pub identity: IdentityClient<Channel>,
    pub metrics_port: u16,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl World {
    pub async fn new(name: &str, nodes: &[&str]) -> World {
        let client = testkit::kube::test_client().await;
        let dir = tempfile::tempdir().unwrap();
        let testkit::sim::SimWithKeyFile { sim, key_file, .. } =
            testkit::sim::start_with_key_file(dir.path()).await;
        let w = World {
            name: testkit::kube::unique(name),
            client,
            sim,
            key_file,
            dir,
            ctl: None,
        };
        testkit::kube::create_namespace(&w.client, &w.ns()).await;
        for n in nodes {
            w.create_node(n).await;
        }
        w
    }

    /// [`World::new`] with its controller started and rebuilt.
    pub async fn started(name: &str, nodes: &[&str]) -> World {
        let mut w = World::new(name, nodes).await;
        w.start().await;
        w
    }

    /// [`World::started`] for scenarios that use KubeVirt's objects.
    pub async fn started_with_kubevirt(name: &str, nodes: &[&str]) -> World {
        let mut w = World::new(name, nodes).await;
        testkit::kubevirt::ensure_crds(&w.client).await;
        w.start().await;
        w
    }

    pub fn ns(&self) -> String {
        self.name.clone()
    }

    pub fn driver(&self) -> String {
        format!("{}.test.rds.csi.srvlab.io", self.name)
    }

    pub fn node(&self, n: &str) -> String {
        format!("{}-{n}", self.name)
    }

    pub async fn create_node(&self, n: &str) {
        testkit::kube::create_node(&self.client, &self.node(n), json!({})).await;
    }

    pub fn kubevirt(&self) -> KubeVirt {
        KubeVirt::new(self.client.clone(), &self.ns())
    }

    pub async fn start_controller(&mut self, kubeconfig: &Path) {
        self.start_controller_with(kubeconfig, &[]).await
    }

    pub async fn start_controller_with(&mut self, kubeconfig: &Path, extra: &[&str]) {
        let ctl = self
            .spawn_controller(&self.driver(), "controller.log", kubeconfig, extra)
            .await;
        self.ctl = Some(ctl);
    }

    /// A controller process for `driver` against this world's simulator,
    /// logging to `log` in the world's directory.
    pub async fn spawn_controller(
        &self,
        driver: &str,
        log: &str,
        kubeconfig: &Path,
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
        let started = Instant::now();
        while !sock.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "controller socket never appeared: {}",
                std::fs::read_to_string(self.dir.path().join(log)).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The socket file appears at bind(), a moment before listen():
        // a connect in between is refused. Retry within the same deadline.
        let channel = loop {
            match testkit::grpc::unix_channel(sock.clone()).await {
                Ok(channel) => break channel,
                Err(_) if started.elapsed() < Duration::from_secs(20) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot connect to the controller socket: {e}"),
            }
        };
        Controller {
            child,
            csi: ControllerClient::new(channel.clone()),
            identity: IdentityClient::new(channel),
            metrics_port,
        }
    }

    pub async fn start(&mut self) {
        self.start_with(&[]).await
    }

    /// Starts the controller with `extra` flags and waits for its rebuild.
    pub async fn start_with(&mut self, extra: &[&str]) {
        self.start_controller_with(&kubeconfig(), extra).await;
        self.wait_rebuilt().await;
    }

    /// Until the rebuild is done every publish is refused (fail closed);
    /// scenarios that are not about that wait for it.
    pub async fn wait_rebuilt(&self) {
        let started = Instant::now();
        while !self.log().contains("publishing is open") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "no rebuild: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.ctl.take() {
            c.child.kill().unwrap();
            c.child.wait().unwrap();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default()
    }

    pub fn csi(&mut self) -> &mut ControllerClient<Channel> {
        &mut self.ctl.as_mut().expect("controller running").csi
    }

    pub fn scrape(&self) -> String {
        testkit::metrics::scrape(self.ctl.as_ref().unwrap().metrics_port)
    }

    /// Asserts that the controller's metric `name` (labels included, as
    /// the exposition writes them) reads `value`.
    pub fn assert_metric(&self, name: &str, value: f64) {
        let m = self.scrape();
        assert_eq!(metric(&m, name), value, "{name} in:\n{m}");
    }

    /// CreateVolume as the external-provisioner calls it, then the PV and
    /// bound PVC as the provisioner and binder leave them.
    pub async fn volume(&mut self, claim: &str, block_rwx: bool) -> String {
        let id = format!("pvc-{}-{claim}", self.name);
        let cap = cap(block_rwx);
        let ns = self.ns();
        let resp = self
            .csi()
            .create_volume(testkit::csi::create_volume(
                &id,
                GIB,
                cap,
                &[
                    ("csi.storage.k8s.io/pvc/name", claim),
                    ("csi.storage.k8s.io/pvc/namespace", &ns),
                    ("csi.storage.k8s.io/pv/name", &id),
                    ("migrationTimeoutSeconds", "30"),
                ],
            ))
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
        let pv = json!({
            "metadata": {"name": id, "annotations": {"pv.kubernetes.io/provisioned-by": self.driver()}},
            "spec": {
                "capacity": {"storage": "1Gi"}, "accessModes": modes, "volumeMode": vmode,
                "persistentVolumeReclaimPolicy": "Delete",
                "claimRef": {"namespace": ns, "name": claim},
                "csi": {"driver": self.driver(), "volumeHandle": id, "volumeAttributes": resp.volume_context}
            }
        });
        create(&Api::<PersistentVolume>::all(self.client.clone()), pv).await;
        let pvc = json!({
            "metadata": {"name": claim, "namespace": ns},
            "spec": {"accessModes": modes, "volumeMode": vmode, "resources": {"requests": {"storage": "1Gi"}}, "volumeName": id}
        });
        create(
            &Api::<PersistentVolumeClaim>::namespaced(self.client.clone(), &ns),
            pvc,
        )
        .await;
        id
    }

    /// The PV `name` the provisioner creates for the volume `handle` of
    /// `driver` (no PVC needed here).
    pub async fn create_pv(&self, name: &str, driver: &str, handle: &str, reclaim: &str) {
        let pv = json!({
            "metadata": {"name": name},
            "spec": {
                "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": reclaim,
                "csi": {"driver": driver, "volumeHandle": handle}
            }
        });
        create(&Api::<PersistentVolume>::all(self.client.clone()), pv).await;
    }

    /// This driver's PV for the volume `id`.
    pub async fn pv_for(&self, id: &str) {
        self.create_pv(id, &self.driver(), id, "Delete").await
    }

    /// Deletes a PV for good: the API server's admission adds the
    /// pv-protection finalizer, which a controller-manager (not running
    /// here) removes once the PV is unbound.
    pub async fn delete_pv(&self, id: &str) {
        let api = Api::<PersistentVolume>::all(self.client.clone());
        api.delete(id, &DeleteParams::default()).await.unwrap();
        let _ = api
            .patch(
                id,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": null}})),
            )
            .await;
        eventually(
            &format!("PV {id} gone"),
            Duration::from_secs(10),
            || async { api.get_opt(id).await.unwrap().is_none().then_some(()) },
        )
        .await;
    }

    /// A world whose controller runs with the extra `flags` (see
    /// [`World::start_with`]), with the RWO volume of the claim `disk`
    /// attached to node `a`: (world, volume).
    pub async fn with_disk_on_a(name: &str, nodes: &[&str], flags: &[&str]) -> (World, String) {
        let mut w = World::new(name, nodes).await;
        w.start_with(flags).await;
        let vol = w.volume("disk", false).await;
        w.attach(&vol, "a", false).await.unwrap();
        (w, vol)
    }

    pub fn va_name(&self, volume: &str, node: &str) -> String {
        format!(
            "csi-{}",
            &format!("{volume}-{node}").replace(['.', '_'], "-")
        )
    }

    /// A VolumeAttachment of `volume` on the full node name `node` as the
    /// attach/detach controller creates it (not yet attached).
    pub async fn create_volume_attachment(&self, volume: &str, node: &str) -> kube::Result<()> {
        let va: VolumeAttachment = serde_json::from_value(json!({
            "metadata": {"name": self.va_name(volume, node)},
            "spec": {"attacher": self.driver(), "nodeName": node, "source": {"persistentVolumeName": volume}}
        }))
        .unwrap();
        Api::<VolumeAttachment>::all(self.client.clone())
            .create(&PostParams::default(), &va)
            .await
            .map(drop)
    }

    /// ControllerPublish of `volume` to the full node name `node`, as the
    /// attacher calls it.
    pub async fn publish(
        &mut self,
        volume: &str,
        node: &str,
        block_rwx: bool,
    ) -> Result<std::collections::HashMap<String, String>, tonic::Status> {
        let ctx = self.volume_context(volume).await;
        self.csi()
            .controller_publish_volume(proto::ControllerPublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.into(),
                volume_capability: Some(cap(block_rwx)),
                volume_context: ctx,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().publish_context)
    }

    /// What the attach/detach controller and external-attacher do: create
    /// the VolumeAttachment, call ControllerPublish, record the result.
    pub async fn attach(
        &mut self,
        volume: &str,
        node: &str,
        block_rwx: bool,
    ) -> Result<(), tonic::Status> {
        let node = self.node(node);
        let va_name = self.va_name(volume, &node);
        let vas: Api<VolumeAttachment> = Api::all(self.client.clone());
        let _ = self.create_volume_attachment(volume, &node).await;
        match self.publish(volume, &node, block_rwx).await {
            Ok(publish_context) => {
                let status =
                    json!({"status": {"attached": true, "attachmentMetadata": publish_context}});
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

    /// [`World::attach`], which the driver must refuse with
    /// FAILED_PRECONDITION (the attach rules); the refusal.
    pub async fn refused(&mut self, volume: &str, node: &str, block_rwx: bool) -> tonic::Status {
        let err = self
            .attach(volume, node, block_rwx)
            .await
            .expect_err("the driver refuses the attach");
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        err
    }

    /// [`World::refused`], the refusal's message saying `why`.
    pub async fn refused_saying(&mut self, volume: &str, node: &str, block_rwx: bool, why: &str) {
        let err = self.refused(volume, node, block_rwx).await;
        assert!(err.message().contains(why), "{why:?} in {}", err.message());
    }

    /// Publishes to `node` as the attacher would, retrying refusals
    /// (FAILED_PRECONDITION, ABORTED) for at most `within` (the driver's
    /// caches catch up); the last error if it never succeeds.
    pub async fn attach_within(
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
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(s) => return Err(s),
            }
        }
    }

    pub async fn detach(&mut self, volume: &str, node: &str) -> Result<(), tonic::Status> {
        let node = self.node(node);
        self.csi()
            .controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
                volume_id: volume.into(),
                node_id: node.clone(),
                ..Default::default()
            })
            .await?;
        self.delete_volume_attachment(volume, &node).await.ok();
        Ok(())
    }

    /// Deletes the VolumeAttachment of `volume` on the full node name
    /// `node` without an unpublish (as after a force-detach, or a
    /// finalizer stripped by hand).
    pub async fn delete_volume_attachment(&self, volume: &str, node: &str) -> kube::Result<()> {
        Api::<VolumeAttachment>::all(self.client.clone())
            .delete(&self.va_name(volume, node), &DeleteParams::default())
            .await
            .map(drop)
    }

    pub async fn volume_context(&self, volume: &str) -> std::collections::HashMap<String, String> {
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

    /// The driver's annotations on the PV `volume`.
    pub async fn annotations(&self, volume: &str) -> BTreeMap<String, String> {
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

    /// The node the driver's PV annotation names as the holder.
    pub async fn holder(&self, volume: &str) -> Option<String> {
        self.annotations(volume)
            .await
            .remove("rds.csi.srvlab.io/attached-node")
    }

    /// Asserts that the driver's PV annotation names node `n` as the holder
    /// of `volume`.
    pub async fn assert_held_by(&self, volume: &str, n: &str) {
        assert_eq!(self.holder(volume).await, Some(self.node(n)), "{volume}");
    }

    /// Event reasons recorded on a PVC.
    pub async fn event_reasons(&self, claim: &str) -> Vec<String> {
        let api: Api<Event> = Api::namespaced(self.client.clone(), &self.ns());
        api.list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim))
            .filter_map(|e| e.reason)
            .collect()
    }

    pub async fn wait_event(&self, claim: &str, reason: &str) {
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
    pub async fn launcher(
        &self,
        pod: &str,
        node: &str,
        claim: &str,
        vmi_uid: &str,
        job: Option<(&str, &str)>,
    ) {
        let meta = testkit::kubevirt::launcher_metadata("vm1", vmi_uid, job);
        self.pod(
            pod,
            node,
            claim,
            meta["labels"].clone(),
            meta["annotations"].clone(),
        )
        .await;
    }

    /// A running VMI as KubeVirt leaves it on `node`, using `claim`.
    /// Returns its UID.
    pub async fn vmi(&self, name: &str, node: &str, claim: &str) -> String {
        self.kubevirt().vmi(name, &self.node(node), &[claim]).await
    }

    /// A VirtualMachineInstanceMigration as `virtctl migrate` creates it,
    /// with `phase` set the way virt-controller sets it (the status
    /// subresource). Returns its UID.
    pub async fn vmim(&self, name: &str, vmi: &str, phase: &str) -> String {
        self.kubevirt().vmim(name, vmi, phase).await
    }

    pub async fn vmim_phase(&self, name: &str, phase: &str) {
        self.kubevirt().vmim_phase(name, phase).await
    }

    /// [`World::started_with_kubevirt`] with the VM `vm1` running on node
    /// `a`: the RWX block claim `vmdisk`, its launcher pod `src` and the
    /// disk attached there. (world, volume, VMI UID).
    pub async fn with_running_vm(name: &str, nodes: &[&str]) -> (World, String, String) {
        let mut w = World::started_with_kubevirt(name, nodes).await;
        let vol = w.volume("vmdisk", true).await;
        let vmi = w.vmi("vm1", "a", "vmdisk").await;
        w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &vmi, None)
            .await;
        w.attach(&vol, "a", true).await.unwrap();
        (w, vol, vmi)
    }

    /// A virt-launcher pod `pod` of `vm1` (VMI `vmi_uid`) on `node` using
    /// `vmdisk` (see [`World::launcher`]) that is no verified migration
    /// target: once the driver's caches have seen it, the RWX attach of
    /// `volume` to `node` is refused saying `why`.
    pub async fn launcher_refused(
        &mut self,
        pod: &str,
        node: &str,
        vmi_uid: &str,
        job: Option<(&str, &str)>,
        volume: &str,
        why: &str,
    ) {
        self.launcher(pod, node, "vmdisk", vmi_uid, job).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.refused_saying(volume, node, true, why).await;
    }

    pub async fn pod(
        &self,
        pod: &str,
        node: &str,
        claim: &str,
        labels: serde_json::Value,
        annotations: serde_json::Value,
    ) {
        let p = json!({
            "metadata": {"name": pod, "namespace": self.ns(), "labels": labels, "annotations": annotations},
            "spec": {
                "nodeName": self.node(node),
                "containers": [{"name": "compute", "image": "quay.io/kubevirt/virt-launcher"}],
                "volumes": [{"name": "disk", "persistentVolumeClaim": {"claimName": claim}}]
            }
        });
        create(&Api::<Pod>::namespaced(self.client.clone(), &self.ns()), p).await;
    }

    /// A Node patch (taints) or status patch (conditions) as the control
    /// plane would write it.
    pub async fn patch_node(&self, n: &str, patch: serde_json::Value, status: bool) {
        let api = Api::<Node>::all(self.client.clone());
        let pp = PatchParams::default();
        let patch = Patch::Merge(&patch);
        if status {
            api.patch_status(&self.node(n), &pp, &patch).await.unwrap();
        } else {
            api.patch(&self.node(n), &pp, &patch).await.unwrap();
        }
    }

    pub async fn delete_node(&self, n: &str) {
        Api::<Node>::all(self.client.clone())
            .delete(&self.node(n), &DeleteParams::default())
            .await
            .unwrap();
    }

    pub async fn cleanup(&self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        for n in nodes.list(&ListParams::default()).await.unwrap() {
            let name = n.metadata.name.unwrap_or_default();
            if name.starts_with(&format!("{}-", self.name)) {
                nodes.delete(&name, &DeleteParams::default()).await.ok();
            }
        }
    }
}

/// The out-of-service taint an operator puts on a node that is shut down.
pub fn out_of_service_taint() -> serde_json::Value {
    json!({"spec": {"taints": [{"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown", "effect": "NoExecute"}]}})
}

/// The capability of the tests' two classes: RWX block (KubeVirt disks) or
/// an RWO ext4 filesystem.
pub fn cap(block_rwx: bool) -> proto::VolumeCapability {
    if block_rwx {
        testkit::csi::block(Mode::MultiNodeMultiWriter)
    } else {
        testkit::csi::mount("ext4", Mode::SingleNodeWriter)
    }
}
