//! The local control plane as the scenarios see it, and what users,
//! kube-scheduler and KubeVirt do to it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Namespace, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::{CSINode, VolumeAttachment};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};

// What the topic modules use from here and from the kit.
pub use std::time::{Duration, Instant};

pub use k8s_openapi::api::core::v1::Node;
pub use kube::api::Api;
pub use kube::Client;
pub use serde_json::{json, Value};
pub use testkit::eventually;
pub use testkit::kube::create;
pub use testkit::kubevirt::KubeVirt;
pub use testkit::metrics::metric;

pub const GIB: u64 = 1 << 30;
/// Generous: the whole control plane shares two cores with the test.
pub const WAIT: Duration = Duration::from_secs(60);
pub const EXT4: &str = "rds-csi-ext4";
pub const BLOCK: &str = "rds-csi-block";
pub const BLOCK_RWX: &str = "rds-csi-block-rwx";

pub struct Cluster {
    env: BTreeMap<String, String>,
}

impl Cluster {
    pub fn load() -> Cluster {
        let dir = std::env::var_os("RDS_CSI_E2E_DIR").map(PathBuf::from).unwrap_or_else(|| {
            panic!(
                "tier-5 test: needs the local control plane. Run hack/test.sh, or `hack/local-cluster.sh up DIR` and set RDS_CSI_E2E_DIR=DIR"
            )
        });
        let text = std::fs::read_to_string(dir.join("cluster.json")).unwrap();
        Cluster {
            env: serde_json::from_str(&text).unwrap(),
        }
    }

    pub fn get(&self, key: &str) -> &str {
        &self.env[key]
    }

    pub fn metrics_port(&self) -> u16 {
        self.get("RDS_CSI_E2E_METRICS")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    /// The simulator's data directory (its pool's root): a disk's
    /// `file-path` `/pool/a/b.img` is the sparse file `sim-data/a/b.img`.
    pub fn sim_data(&self) -> PathBuf {
        PathBuf::from(self.get("RDS_CSI_E2E_DIR")).join("sim-data")
    }

    /// The file the simulator keeps a RouterOS file path's bytes in.
    pub fn sim_file(&self, ros_path: &str) -> PathBuf {
        let (_pool, rest) = ros_path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or_else(|| panic!("{ros_path:?} is no file in a pool"));
        self.sim_data().join(rest)
    }

    /// Stops the controller Pod's processes (the rds-csi controller and
    /// its CSI sidecars), as deleting its Pod would.
    pub async fn stop_controller(&self) {
        self.local_cluster(&["stop-controller"]).await;
    }

    /// Starts them again as the chart runs them, `flags` (`--flag=value`)
    /// replacing or adding to the controller's; returns once the
    /// controller is ready and each sidecar holds its lease.
    pub async fn start_controller(&self, flags: &[&str]) {
        let mut args = vec!["start-controller"];
        args.extend(flags);
        self.local_cluster(&args).await;
    }

    async fn local_cluster(&self, args: &[&str]) {
        let dir = self.get("RDS_CSI_E2E_DIR").to_string();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let status = local_cluster(&dir, &args);
            assert!(status.success(), "hack/local-cluster.sh {args:?}: {status}");
        })
        .await
        .unwrap();
    }

    pub async fn rds(&self) -> routeros::Rds {
        let key = routeros::load_key(self.get("RDS_CSI_E2E_SIM_KEY_FILE").as_ref()).unwrap();
        let cfg = routeros::ClientConfig::new(
            self.get("RDS_CSI_E2E_SIM_ADDRESS"),
            "csi",
            routeros::HostKeyPolicy::Pinned(self.get("RDS_CSI_E2E_SIM_HOST_KEY").into()),
        );
        routeros::Rds::new(routeros::Client::new(cfg, key, None))
    }
}

/// Runs `hack/local-cluster.sh COMMAND DIR ARGS...` (`args[0]` is the
/// command), waiting for it.
pub fn local_cluster(dir: &str, args: &[&str]) -> std::process::ExitStatus {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/local-cluster.sh");
    std::process::Command::new(script)
        .arg(args[0])
        .arg(dir)
        .args(&args[1..])
        .status()
        .unwrap_or_else(|e| panic!("{script}: {e}"))
}

/// One scenario's namespace and its handles on the cluster.
pub struct Scenario {
    pub ns: String,
    pub client: Client,
    pub cluster: Cluster,
    pub rds: routeros::Rds,
}

#[derive(Clone, Copy, PartialEq)]
pub enum Mode {
    Filesystem,
    Block,
}

impl Scenario {
    pub async fn new(name: &str) -> Scenario {
        let cluster = Cluster::load();
        let client = testkit::kube::client(cluster.get("KUBECONFIG").as_ref()).await;
        let ns = testkit::kube::unique(name);
        testkit::kube::create_namespace(&client, &ns).await;
        let rds = cluster.rds().await;
        Scenario {
            ns,
            client,
            cluster,
            rds,
        }
    }

    pub fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn kubevirt(&self) -> KubeVirt {
        KubeVirt::new(self.client.clone(), &self.ns)
    }

    /// A claim as a user writes it.
    pub async fn claim(&self, name: &str, class: &str, mode: Mode, rwx: bool) {
        self.claim_from(name, class, mode, rwx, None).await;
    }

    /// A claim whose `dataSource` (a VolumeSnapshot or a claim, as
    /// `{"kind": .., "name": ..}`) it starts from, when it has one.
    pub async fn claim_from(
        &self,
        name: &str,
        class: &str,
        mode: Mode,
        rwx: bool,
        source: Option<Value>,
    ) {
        let mut pvc = json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": [if rwx { "ReadWriteMany" } else { "ReadWriteOnce" }],
                "volumeMode": if mode == Mode::Block { "Block" } else { "Filesystem" },
                "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}}
            }
        });
        if let Some(source) = source {
            pvc["spec"]["dataSource"] = source;
        }
        create(&self.pvcs(), pvc).await;
    }

    /// What kube-scheduler does for a WaitForFirstConsumer claim once it
    /// has picked a node for the claim's first pod.
    pub async fn select_node(&self, claim: &str, node: &str) {
        let patch =
            json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}});
        self.pvcs()
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A pod bound to `node` using `claims` (as block devices for
    /// `Mode::Block`), with extra labels and annotations.
    pub async fn pod(&self, name: &str, node: &str, claims: &[(&str, Mode)], meta: Value) {
        let mut volumes = vec![];
        let mut mounts = vec![];
        let mut devices = vec![];
        for (i, (claim, mode)) in claims.iter().enumerate() {
            let v = format!("disk{i}");
            volumes.push(json!({"name": v, "persistentVolumeClaim": {"claimName": claim}}));
            match mode {
                Mode::Filesystem => {
                    mounts.push(json!({"name": v, "mountPath": format!("/data{i}")}))
                }
                Mode::Block => {
                    devices.push(json!({"name": v, "devicePath": format!("/dev/disk{i}")}))
                }
            }
        }
        let mut metadata = json!({"name": name});
        if let Value::Object(extra) = meta {
            for (k, v) in extra {
                metadata[k] = v;
            }
        }
        let pod = json!({
            "metadata": metadata,
            "spec": {
                "nodeName": node,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                                "volumeMounts": mounts, "volumeDevices": devices}],
                "volumes": volumes
            }
        });
        create(&self.pods(), pod).await;
    }

    /// A user's RWO claim of `class` and the pod `pod` using it on `node`,
    /// through binding and attachment; the PV's name.
    pub async fn attached_claim(
        &self,
        claim: &str,
        class: &str,
        mode: Mode,
        pod: &str,
        node: &str,
    ) -> String {
        self.claim(claim, class, mode, false).await;
        self.pod(pod, node, &[(claim, mode)], json!({})).await;
        self.select_node(claim, node).await;
        let pv = self.bound(claim).await;
        self.wait_attached(&pv, node).await;
        pv
    }

    /// A pod gone at once, as kubelet would confirm after its containers
    /// stopped (there is no kubelet to do it).
    pub async fn delete_pod(&self, name: &str) {
        self.pods()
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
    }

    /// The PV a claim got bound to.
    pub async fn bound(&self, claim: &str) -> String {
        eventually(&format!("claim {claim} bound"), WAIT, || async {
            let pvc = self.pvcs().get(claim).await.ok()?;
            let phase = pvc.status.as_ref()?.phase.as_deref()?;
            (phase == "Bound").then(|| pvc.spec?.volume_name)?
        })
        .await
    }

    pub async fn pv(&self, name: &str) -> Option<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
    }

    pub async fn attachment(&self, pv: &str, node: &str) -> Option<VolumeAttachment> {
        Api::<VolumeAttachment>::all(self.client.clone())
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .find(|va| {
                va.spec.source.persistent_volume_name.as_deref() == Some(pv)
                    && va.spec.node_name == node
            })
    }

    /// Whether the VolumeAttachment of `pv` on `node` exists and is attached.
    pub async fn is_attached(&self, pv: &str, node: &str) -> bool {
        self.attachment(pv, node)
            .await
            .and_then(|va| va.status)
            .is_some_and(|s| s.attached)
    }

    pub async fn wait_attached(&self, pv: &str, node: &str) {
        eventually(&format!("{pv} attached to {node}"), WAIT, || async {
            let va = self.attachment(pv, node).await?;
            va.status.filter(|s| s.attached).map(|_| ())
        })
        .await
    }

    pub async fn wait_detached(&self, pv: &str, node: &str) {
        eventually(
            &format!("{pv}'s VolumeAttachment on {node} gone"),
            WAIT,
            || async { self.attachment(pv, node).await.is_none().then_some(()) },
        )
        .await
    }

    /// The error the attacher recorded on a VolumeAttachment the driver
    /// refused; it must never be attached.
    pub async fn wait_refused(&self, pv: &str, node: &str) -> String {
        eventually(&format!("{pv} refused on {node}"), WAIT, || async {
            let status = self.attachment(pv, node).await?.status?;
            assert!(!status.attached, "{pv} must not attach to {node}");
            status.attach_error?.message
        })
        .await
    }

    /// The node the driver's PV annotation names as the holder.
    pub async fn holder(&self, pv: &str) -> Option<String> {
        self.pv(pv)
            .await?
            .metadata
            .annotations?
            .get("rds.csi.srvlab.io/attached-node")
            .cloned()
    }

    pub async fn disk(&self, volume: &str) -> Option<routeros::Disk> {
        let slot = routeros::command::Slot::new(volume).unwrap();
        self.rds.get_disk(&slot).await.unwrap()
    }

    /// Event reasons on an object of this namespace (events.k8s.io and
    /// core events alike: the driver and kube-controller-manager use
    /// either).
    pub async fn events(&self, object: &str) -> Vec<String> {
        let mut out: Vec<String> = Api::<Event>::namespaced(self.client.clone(), &self.ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(object))
            .filter_map(|e| e.reason)
            .collect();
        out.sort();
        out
    }

    pub async fn wait_event(&self, object: &str, reason: &str) {
        eventually(&format!("event {reason} on {object}"), WAIT, || async {
            self.events(object)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await
    }

    pub async fn scrape(&self) -> String {
        let port = self.cluster.metrics_port();
        tokio::task::spawn_blocking(move || testkit::metrics::scrape(port))
            .await
            .unwrap()
    }

    /// A VMI as virt-controller leaves it once scheduled on `node`, using
    /// `claims`; its UID.
    pub async fn vmi(&self, name: &str, node: &str, claims: &[&str]) -> String {
        self.kubevirt().vmi(name, node, claims).await
    }

    /// A virt-launcher pod as KubeVirt creates it, for the VMI `vm` with
    /// UID `vmi_uid`, as a migration target when `migration` is
    /// `Some((vmim name, vmim uid))`.
    pub async fn launcher(
        &self,
        pod: &str,
        node: &str,
        vm: &str,
        vmi_uid: &str,
        claims: &[(&str, Mode)],
        migration: Option<(&str, &str)>,
    ) {
        self.pod(
            pod,
            node,
            claims,
            testkit::kubevirt::launcher_metadata(vm, vmi_uid, migration),
        )
        .await;
    }

    /// A VirtualMachineInstanceMigration as `virtctl migrate` creates it,
    /// moved to Scheduling as virt-controller does before it creates the
    /// target pod; its UID.
    pub async fn migration(&self, name: &str, vmi: &str) -> String {
        self.kubevirt().vmim(name, vmi, "Scheduling").await
    }

    /// What virt-controller writes through the VMIM's status subresource.
    pub async fn migration_phase(&self, name: &str, phase: &str) {
        self.kubevirt().vmim_phase(name, phase).await
    }

    pub async fn delete_claim(&self, claim: &str) {
        self.pvcs()
            .delete(claim, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Reclaim: the PV and the disk on the RDS both go.
    pub async fn wait_reclaimed(&self, pv: &str) {
        eventually(&format!("PV {pv} deleted"), WAIT, || async {
            self.pv(pv).await.is_none().then_some(())
        })
        .await;
        assert!(self.disk(pv).await.is_none(), "disk {pv} left on the RDS");
    }

    /// Pods first, at once (no kubelet would ever confirm a graceful
    /// deletion), then the namespace with its claims, whose volumes the
    /// reclaim policy deletes.
    pub async fn cleanup(self) {
        self.pods()
            .delete_collection(
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..Default::default()
                },
                &ListParams::default(),
            )
            .await
            .unwrap();
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.ns, &DeleteParams::default())
            .await
            .ok();
    }

    /// One more node, as the local control plane makes its three: a Node
    /// the attach/detach controller manages and its CSINode entry.
    pub async fn extra_node(&self, name: &str) {
        self.extra_node_reaching(name, &[]).await;
    }

    /// One more node whose node plugin also reported the backends
    /// `reached` (their topology keys on the Node and its CSINode, as
    /// kubelet and node-driver-registrar write them).
    pub async fn extra_node_reaching(&self, name: &str, reached: &[&str]) {
        let mut labels =
            json!({"kubernetes.io/hostname": name, "rds.csi.srvlab.io/rds": "default"});
        let mut keys = vec!["rds.csi.srvlab.io/rds".to_string()];
        for backend in reached {
            let key = format!("rds.csi.srvlab.io/backend-{backend}");
            labels[&key] = json!("true");
            keys.push(key);
        }
        testkit::kube::create_node(&self.client, name, labels).await;
        let csinode = json!({
            "metadata": {"name": name},
            "spec": {"drivers": [{"name": self.cluster.get("RDS_CSI_E2E_DRIVER"), "nodeID": name, "topologyKeys": keys}]}
        });
        create(&Api::<CSINode>::all(self.client.clone()), csinode).await;
    }
}
