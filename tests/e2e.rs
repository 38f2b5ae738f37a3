//! Tier 5: rds-csi under the real Kubernetes control loops.
//!
//! Runs against the local control plane of `hack/local-cluster.sh` (etcd,
//! kube-apiserver, kube-controller-manager with the PV binder and the
//! attach/detach controller, csi-provisioner, csi-attacher, csi-resizer, the
//! rds-csi controller and the RouterOS simulator). Every scenario is driven
//! only through Kubernetes objects, created the way users, kube-scheduler
//! and KubeVirt create them: PVCs, Pods bound to nodes, VMIs, migrations and
//! virt-launcher pods. Nothing calls the driver directly; the simulator is
//! only read, over SSH, to see the disks.
//!
//! There are no kubelets: a pod is never run, and the one thing
//! kube-scheduler would do for a WaitForFirstConsumer claim (the
//! `volume.kubernetes.io/selected-node` annotation) the tests do themselves.
//!
//! Needs `RDS_CSI_E2E_DIR` (the directory `hack/local-cluster.sh up` filled;
//! hack/test.sh sets it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::{CSINode, VolumeAttachment};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::{json, Value};

mod common;
use common::{eventually, http_get, kube_client, metric, vmi_resource, vmim_resource};

const GIB: u64 = 1 << 30;
/// Generous: the whole control plane shares two cores with the test.
const WAIT: Duration = Duration::from_secs(60);
const EXT4: &str = "rds-csi-ext4";
const BLOCK: &str = "rds-csi-block";
const BLOCK_RWX: &str = "rds-csi-block-rwx";

struct Cluster {
    env: BTreeMap<String, String>,
}

impl Cluster {
    fn load() -> Cluster {
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

    fn get(&self, key: &str) -> &str {
        &self.env[key]
    }

    fn metrics_port(&self) -> u16 {
        self.get("RDS_CSI_E2E_METRICS")
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }

    async fn rds(&self) -> routeros::Rds {
        let key = routeros::load_key(self.get("RDS_CSI_E2E_SIM_KEY_FILE").as_ref()).unwrap();
        let cfg = routeros::ClientConfig::new(
            self.get("RDS_CSI_E2E_SIM_ADDRESS"),
            "csi",
            routeros::HostKeyPolicy::Pinned(self.get("RDS_CSI_E2E_SIM_HOST_KEY").into()),
        );
        routeros::Rds::new(routeros::Client::new(cfg, key, None))
    }
}

/// One scenario's namespace and its handles on the cluster.
struct Scenario {
    ns: String,
    client: Client,
    cluster: Cluster,
    rds: routeros::Rds,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Filesystem,
    Block,
}

impl Scenario {
    async fn new(name: &str) -> Scenario {
        let cluster = Cluster::load();
        let client = kube_client(cluster.get("KUBECONFIG").as_ref()).await;
        let suffix: u32 = rand::random::<u32>() % 0xfffff;
        let ns = format!("{name}-{suffix:05x}");
        Api::<Namespace>::all(client.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
            )
            .await
            .unwrap();
        let rds = cluster.rds().await;
        Scenario {
            ns,
            client,
            cluster,
            rds,
        }
    }

    fn pvcs(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    fn dynamic(&self, r: &kube::api::ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, r)
    }

    /// A claim as a user writes it.
    async fn claim(&self, name: &str, class: &str, mode: Mode, rwx: bool) {
        let pvc = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": [if rwx { "ReadWriteMany" } else { "ReadWriteOnce" }],
                "volumeMode": if mode == Mode::Block { "Block" } else { "Filesystem" },
                "storageClassName": class,
                "resources": {"requests": {"storage": "1Gi"}}
            }
        }))
        .unwrap();
        self.pvcs()
            .create(&PostParams::default(), &pvc)
            .await
            .unwrap();
    }

    /// What kube-scheduler does for a WaitForFirstConsumer claim once it
    /// has picked a node for the claim's first pod.
    async fn select_node(&self, claim: &str, node: &str) {
        let patch =
            json!({"metadata": {"annotations": {"volume.kubernetes.io/selected-node": node}}});
        self.pvcs()
            .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    /// A pod bound to `node` using `claims` (as block devices for
    /// `Mode::Block`), with extra labels and annotations.
    async fn pod(&self, name: &str, node: &str, claims: &[(&str, Mode)], meta: Value) {
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
        let pod = serde_json::from_value(json!({
            "metadata": metadata,
            "spec": {
                "nodeName": node,
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.9",
                                "volumeMounts": mounts, "volumeDevices": devices}],
                "volumes": volumes
            }
        }))
        .unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap();
    }

    /// A pod gone at once, as kubelet would confirm after its containers
    /// stopped (there is no kubelet to do it).
    async fn delete_pod(&self, name: &str) {
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
    async fn bound(&self, claim: &str) -> String {
        eventually(&format!("claim {claim} bound"), WAIT, || async {
            let pvc = self.pvcs().get(claim).await.ok()?;
            let phase = pvc.status.as_ref()?.phase.as_deref()?;
            (phase == "Bound").then(|| pvc.spec?.volume_name)?
        })
        .await
    }

    async fn pv(&self, name: &str) -> Option<PersistentVolume> {
        Api::<PersistentVolume>::all(self.client.clone())
            .get_opt(name)
            .await
            .unwrap()
    }

    async fn attachment(&self, pv: &str, node: &str) -> Option<VolumeAttachment> {
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
    async fn is_attached(&self, pv: &str, node: &str) -> bool {
        self.attachment(pv, node)
            .await
            .and_then(|va| va.status)
            .is_some_and(|s| s.attached)
    }

    async fn wait_attached(&self, pv: &str, node: &str) {
        eventually(&format!("{pv} attached to {node}"), WAIT, || async {
            let va = self.attachment(pv, node).await?;
            va.status.filter(|s| s.attached).map(|_| ())
        })
        .await
    }

    async fn wait_detached(&self, pv: &str, node: &str) {
        eventually(
            &format!("{pv}'s VolumeAttachment on {node} gone"),
            WAIT,
            || async { self.attachment(pv, node).await.is_none().then_some(()) },
        )
        .await
    }

    /// The error the attacher recorded on a VolumeAttachment the driver
    /// refused; it must never be attached.
    async fn wait_refused(&self, pv: &str, node: &str) -> String {
        eventually(&format!("{pv} refused on {node}"), WAIT, || async {
            let status = self.attachment(pv, node).await?.status?;
            assert!(!status.attached, "{pv} must not attach to {node}");
            status.attach_error?.message
        })
        .await
    }

    /// The node the driver's PV annotation names as the holder.
    async fn holder(&self, pv: &str) -> Option<String> {
        self.pv(pv)
            .await?
            .metadata
            .annotations?
            .get("rds.csi.srvlab.io/attached-node")
            .cloned()
    }

    async fn disk(&self, volume: &str) -> Option<routeros::Disk> {
        let slot = routeros::command::Slot::new(volume).unwrap();
        self.rds.get_disk(&slot).await.unwrap()
    }

    /// Event reasons on an object of this namespace (events.k8s.io and
    /// core events alike: the driver and kube-controller-manager use
    /// either).
    async fn events(&self, object: &str) -> Vec<String> {
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

    async fn wait_event(&self, object: &str, reason: &str) {
        eventually(&format!("event {reason} on {object}"), WAIT, || async {
            self.events(object)
                .await
                .iter()
                .any(|r| r == reason)
                .then_some(())
        })
        .await
    }

    async fn scrape(&self) -> String {
        let port = self.cluster.metrics_port();
        tokio::task::spawn_blocking(move || http_get(port, "/metrics").unwrap_or_default())
            .await
            .unwrap()
    }

    /// A VMI as virt-controller leaves it once scheduled on `node`, using
    /// `claims`; its UID.
    async fn vmi(&self, name: &str, node: &str, claims: &[&str]) -> String {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let vmi = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "labels": {"kubevirt.io/nodeName": node}},
            "spec": {"domain": {"devices": {}}, "volumes": volumes},
            "status": {"nodeName": node, "phase": "Running"}
        }))
        .unwrap();
        self.dynamic(&vmi_resource())
            .create(&PostParams::default(), &vmi)
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    }

    /// A virt-launcher pod as KubeVirt creates it, for the VMI `vm` with
    /// UID `vmi_uid`, as a migration target when `migration` is
    /// `Some((vmim name, vmim uid))`.
    async fn launcher(
        &self,
        pod: &str,
        node: &str,
        vm: &str,
        vmi_uid: &str,
        claims: &[(&str, Mode)],
        migration: Option<(&str, &str)>,
    ) {
        let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": vm, "kubevirt.io/created-by": vmi_uid});
        let mut annotations = json!({"kubevirt.io/domain": vm});
        if let Some((name, uid)) = migration {
            labels["kubevirt.io/migrationJobUID"] = json!(uid);
            annotations["kubevirt.io/migrationJobName"] = json!(name);
        }
        self.pod(
            pod,
            node,
            claims,
            json!({"labels": labels, "annotations": annotations}),
        )
        .await;
    }

    /// A VirtualMachineInstanceMigration as `virtctl migrate` creates it,
    /// moved to Scheduling as virt-controller does before it creates the
    /// target pod; its UID.
    async fn migration(&self, name: &str, vmi: &str) -> String {
        let vmim = serde_json::from_value(json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name},
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
        self.migration_phase(name, "Scheduling").await;
        uid
    }

    /// What virt-controller writes through the VMIM's status subresource.
    async fn migration_phase(&self, name: &str, phase: &str) {
        self.dynamic(&vmim_resource())
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": phase}})),
            )
            .await
            .unwrap();
    }

    async fn patch_dynamic(&self, r: &kube::api::ApiResource, name: &str, patch: Value) {
        self.dynamic(r)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
    }

    async fn delete_claim(&self, claim: &str) {
        self.pvcs()
            .delete(claim, &DeleteParams::default())
            .await
            .unwrap();
    }

    /// Reclaim: the PV and the disk on the RDS both go.
    async fn wait_reclaimed(&self, pv: &str) {
        eventually(&format!("PV {pv} deleted"), WAIT, || async {
            self.pv(pv).await.is_none().then_some(())
        })
        .await;
        assert!(self.disk(pv).await.is_none(), "disk {pv} left on the RDS");
    }

    /// Pods first, at once (no kubelet would ever confirm a graceful
    /// deletion), then the namespace with its claims, whose volumes the
    /// reclaim policy deletes.
    async fn cleanup(self) {
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
}

fn size_of(pv: &PersistentVolume) -> String {
    pv.spec.as_ref().unwrap().capacity.as_ref().unwrap()["storage"]
        .0
        .clone()
}

async fn expand(s: &Scenario, claim: &str, pv: &str, mode: Mode) {
    let patch = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
    s.pvcs()
        .patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually(&format!("{pv} grown to 2Gi"), WAIT, || async {
        (size_of(&s.pv(pv).await?) == "2Gi").then_some(())
    })
    .await;
    assert_eq!(s.disk(pv).await.unwrap().size_bytes, 2 * GIB);
    if mode == Mode::Filesystem {
        // The filesystem grows on the node (NodeExpandVolume), which only
        // a kubelet would call: the claim says so.
        eventually("FileSystemResizePending", WAIT, || async {
            let pvc = s.pvcs().get(claim).await.ok()?;
            pvc.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "FileSystemResizePending")
                .then_some(())
        })
        .await;
    } else {
        eventually("claim capacity 2Gi", WAIT, || async {
            let pvc = s.pvcs().get(claim).await.ok()?;
            (pvc.status?.capacity?.get("storage")?.0 == "2Gi").then_some(())
        })
        .await;
    }
}

async fn provision_attach_expand_reclaim(name: &str, class: &str, mode: Mode) {
    let s = Scenario::new(name).await;
    s.claim("data", class, mode, false).await;
    s.pod("app", "node-a", &[("data", mode)], json!({})).await;
    s.select_node("data", "node-a").await;
    let pv = s.bound("data").await;
    let disk = s.disk(&pv).await.expect("the RDS has the disk");
    assert_eq!(disk.size_bytes, GIB);
    assert!(disk.exported, "exported over NVMe/TCP: {disk:?}");
    let spec = s.pv(&pv).await.unwrap().spec.unwrap();
    assert_eq!(
        spec.volume_mode.as_deref(),
        Some(if mode == Mode::Block {
            "Block"
        } else {
            "Filesystem"
        })
    );
    assert_eq!(
        spec.csi.unwrap().driver,
        s.cluster.get("RDS_CSI_E2E_DRIVER")
    );
    s.wait_attached(&pv, "node-a").await;
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-a"));

    expand(&s, "data", &pv, mode).await;

    s.delete_pod("app").await;
    s.wait_detached(&pv, "node-a").await;
    assert_eq!(s.holder(&pv).await, None, "released on detach");
    s.delete_claim("data").await;
    s.wait_reclaimed(&pv).await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_filesystem_claim_is_provisioned_attached_expanded_and_reclaimed() {
    provision_attach_expand_reclaim("e2e-fs", EXT4, Mode::Filesystem).await;
}

#[tokio::test]
async fn a_block_claim_is_provisioned_attached_expanded_and_reclaimed() {
    provision_attach_expand_reclaim("e2e-block", BLOCK, Mode::Block).await;
}

#[tokio::test]
async fn a_pod_moving_to_another_node_is_detached_then_handed_off() {
    let s = Scenario::new("e2e-move").await;
    s.claim("data", EXT4, Mode::Filesystem, false).await;
    s.pod("app-1", "node-a", &[("data", Mode::Filesystem)], json!({}))
        .await;
    s.select_node("data", "node-a").await;
    let pv = s.bound("data").await;
    s.wait_attached(&pv, "node-a").await;

    // The pod is rescheduled: gone from node-a, created on node-b.
    let start = Instant::now();
    s.delete_pod("app-1").await;
    s.pod("app-2", "node-b", &[("data", Mode::Filesystem)], json!({}))
        .await;
    s.wait_detached(&pv, "node-a").await;
    let detached = start.elapsed();
    s.wait_attached(&pv, "node-b").await;
    let attached = start.elapsed();
    println!(
        "MOVE: node-a detached {:.2}s after the pod was deleted, node-b attached after {:.2}s",
        detached.as_secs_f64(),
        attached.as_secs_f64()
    );
    assert!(
        s.attachment(&pv, "node-a").await.is_none(),
        "the attach/detach controller detached node-a first"
    );
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-b"));
    s.wait_event("data", "Handoff").await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_second_pod_on_another_node_never_gets_a_rwo_volume() {
    let s = Scenario::new("e2e-rwo").await;
    s.claim("data", BLOCK, Mode::Block, false).await;
    s.pod("first", "node-a", &[("data", Mode::Block)], json!({}))
        .await;
    s.select_node("data", "node-a").await;
    let pv = s.bound("data").await;
    s.wait_attached(&pv, "node-a").await;

    // Kubernetes refuses: the attach/detach controller's Multi-Attach rule
    // keeps the second pod's volume unattached (and says so on the pod).
    s.pod("second", "node-b", &[("data", Mode::Block)], json!({}))
        .await;
    s.wait_event("second", "FailedAttachVolume").await;
    assert!(s.attachment(&pv, "node-b").await.is_none());

    // The driver refuses too: a VolumeAttachment for node-b (a racing or
    // misbehaving attach path) gets an error naming the holder, and
    // removing it leaves node-a's attachment alone.
    let va = serde_json::from_value(json!({
        "metadata": {"name": format!("{}-rogue", s.ns)},
        "spec": {"attacher": s.cluster.get("RDS_CSI_E2E_DRIVER"), "nodeName": "node-b",
                 "source": {"persistentVolumeName": pv}}
    }))
    .unwrap();
    let vas = Api::<VolumeAttachment>::all(s.client.clone());
    vas.create(&PostParams::default(), &va).await.unwrap();
    let err = s.wait_refused(&pv, "node-b").await;
    assert!(err.contains("node-a"), "names the holder: {err}");
    s.wait_event("data", "AttachConflict").await;
    vas.delete(&format!("{}-rogue", s.ns), &DeleteParams::default())
        .await
        .unwrap();
    s.wait_detached(&pv, "node-b").await;
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-a"));
    assert!(s.is_attached(&pv, "node-a").await);
    s.cleanup().await;
}

/// A VM on node-a with an RWX block disk, attached; (pv, vmi uid).
async fn running_vm(s: &Scenario) -> (String, String) {
    s.claim("vmdisk", BLOCK_RWX, Mode::Block, true).await;
    let pv = s.bound("vmdisk").await;
    let uid = s.vmi("vm1", "node-a", &["vmdisk"]).await;
    s.launcher(
        "virt-launcher-vm1-src",
        "node-a",
        "vm1",
        &uid,
        &[("vmdisk", Mode::Block)],
        None,
    )
    .await;
    s.wait_attached(&pv, "node-a").await;
    (pv, uid)
}

/// KubeVirt's steps of a live migration to `target`, in its order: the
/// VMIM is scheduling and the target pod exists (the driver must admit the
/// target now, with no `migrationState` on the VMI yet); once the target
/// node has the disk, the target is ready and the VMI names it.
async fn start_migration(s: &Scenario, pv: &str, uid: &str, name: &str, target: &str) {
    let vmim_uid = s.migration(name, "vm1").await;
    s.launcher(
        &format!("virt-launcher-vm1-{name}"),
        target,
        "vm1",
        uid,
        &[("vmdisk", Mode::Block)],
        Some((name, &vmim_uid)),
    )
    .await;
    s.wait_attached(pv, target).await;
    s.migration_phase(name, "TargetReady").await;
    s.patch_dynamic(
        &vmi_resource(),
        "vm1",
        json!({
            "metadata": {"labels": {"kubevirt.io/migrationTargetNodeName": target}},
            "status": {"migrationState": {"sourceNode": "node-a", "targetNode": target,
                "sourcePod": "virt-launcher-vm1-src", "targetPod": format!("virt-launcher-vm1-{name}"),
                "migrationUid": vmim_uid, "completed": false}}
        }),
    )
    .await;
}

/// KubeVirt's end of the migration `name` from node-a to node-b: the
/// phases and the VMI's state, then the pod on the losing side deleted.
async fn finish_migration(s: &Scenario, name: &str, succeeded: bool) {
    let phase = if succeeded { "Succeeded" } else { "Failed" };
    s.migration_phase(name, phase).await;
    let vmi = if succeeded {
        json!({"metadata": {"labels": {"kubevirt.io/nodeName": "node-b", "kubevirt.io/migrationTargetNodeName": null}},
               "status": {"nodeName": "node-b", "migrationState": {"completed": true}}})
    } else {
        json!({"metadata": {"labels": {"kubevirt.io/migrationTargetNodeName": null}},
               "status": {"migrationState": {"completed": true, "failed": true}}})
    };
    s.patch_dynamic(&vmi_resource(), "vm1", vmi).await;
    let gone = if succeeded {
        "virt-launcher-vm1-src".to_string()
    } else {
        format!("virt-launcher-vm1-{name}")
    };
    s.delete_pod(&gone).await;
}

/// A live migration of a VM's RWX block disk from node-a to node-b that
/// succeeds or fails; an unrelated pod on node-c tries the disk meanwhile.
async fn live_migration(name: &str, succeeded: bool) {
    let s = Scenario::new(name).await;
    let (pv, uid) = running_vm(&s).await;

    start_migration(&s, &pv, &uid, "mig1", "node-b").await;
    // Both nodes hold the disk for the migration's window.
    assert!(s.is_attached(&pv, "node-a").await);
    s.wait_event("vmdisk", "MigrationStarted").await;

    // An intruder on the RWX claim, dressed as a virt-launcher pod of the
    // VM with a made-up migration job: the attach/detach controller lets it
    // through (RWX), the driver does not.
    s.launcher(
        "intruder",
        "node-c",
        "vm1",
        &uid,
        &[("vmdisk", Mode::Block)],
        Some(("mig-fake", "3f1c9a8e-0000-4000-8000-00000000c0de")),
    )
    .await;
    let err = s.wait_refused(&pv, "node-c").await;
    assert!(!err.is_empty());

    // Success: KubeVirt deletes the source pod and the VM runs on node-b.
    // Failure: it deletes the target pod and the VM stays on node-a.
    finish_migration(&s, "mig1", succeeded).await;
    let (kept, left, reason) = if succeeded {
        ("node-b", "node-a", "MigrationCompleted")
    } else {
        ("node-a", "node-b", "MigrationFailed")
    };
    s.wait_detached(&pv, left).await;
    s.wait_event("vmdisk", reason).await;
    assert_eq!(s.holder(&pv).await.as_deref(), Some(kept));
    assert!(s.is_attached(&pv, kept).await);
    assert!(!s.is_attached(&pv, "node-c").await, "the intruder never");
    s.cleanup().await;
}

#[tokio::test]
async fn a_live_migration_on_the_rwx_block_class_moves_the_disk() {
    live_migration("e2e-livemig", true).await;
}

#[tokio::test]
async fn a_failed_live_migration_detaches_the_target_and_keeps_the_source() {
    live_migration("e2e-migfail", false).await;
}

#[tokio::test]
async fn a_forged_launcher_pod_is_refused_and_its_volume_attachment_stays_unattached() {
    // Anyone who may create pods can copy a VM's labels, its VMI's UID and
    // make up a migration job; no VirtualMachineInstanceMigration exists.
    let s = Scenario::new("e2e-forged").await;
    let (pv, uid) = running_vm(&s).await;
    s.launcher(
        "virt-launcher-vm1-forged",
        "node-b",
        "vm1",
        &uid,
        &[("vmdisk", Mode::Block)],
        Some(("mig-forged", "5d0c1e2f-0000-4000-8000-0000000f0f0f")),
    )
    .await;
    let err = s.wait_refused(&pv, "node-b").await;
    assert!(
        err.contains("no VirtualMachineInstanceMigration"),
        "the refusal says what was missing: {err}"
    );
    // The attacher keeps retrying; none of its retries attaches.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!s.is_attached(&pv, "node-b").await, "never attached");
    assert_eq!(s.holder(&pv).await.as_deref(), Some("node-a"));
    s.cleanup().await;
}

impl Scenario {
    /// One more node, as the local control plane makes its three: a Node
    /// the attach/detach controller manages and its CSINode entry.
    async fn extra_node(&self, name: &str) {
        let topology = "rds.csi.srvlab.io/rds";
        let node = serde_json::from_value(json!({
            "metadata": {"name": name,
                "labels": {"kubernetes.io/hostname": name, topology: "default"},
                "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}
        }))
        .unwrap();
        Api::<Node>::all(self.client.clone())
            .create(&PostParams::default(), &node)
            .await
            .unwrap();
        let csinode = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"drivers": [{"name": self.cluster.get("RDS_CSI_E2E_DRIVER"), "nodeID": name, "topologyKeys": [topology]}]}
        }))
        .unwrap();
        Api::<CSINode>::all(self.client.clone())
            .create(&PostParams::default(), &csinode)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_node_deleted_while_attached_keeps_its_volume_until_kubernetes_detaches_it() {
    let s = Scenario::new("e2e-nodedel").await;
    let node = format!("{}-gone", s.ns);
    s.extra_node(&node).await;
    s.claim("data", BLOCK, Mode::Block, false).await;
    s.pod("user", &node, &[("data", Mode::Block)], json!({}))
        .await;
    s.select_node("data", &node).await;
    let pv = s.bound("data").await;
    s.wait_attached(&pv, &node).await;
    // The Node object goes; the machine may still be running.
    Api::<Node>::all(s.client.clone())
        .delete(&node, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_event("data", "AttachedToDeletedNode").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.is_attached(&pv, &node).await, "still attached");
    assert_eq!(s.holder(&pv).await.as_deref(), Some(node.as_str()));
    // Kubernetes detaches it: its VolumeAttachment is deleted, the
    // attacher calls ControllerUnpublish, and only then is it released.
    let va = s.attachment(&pv, &node).await.unwrap();
    Api::<VolumeAttachment>::all(s.client.clone())
        .delete(&va.metadata.name.unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    s.wait_detached(&pv, &node).await;
    assert_eq!(s.holder(&pv).await, None);
    s.delete_pod("user").await;
    s.cleanup().await;
}

#[tokio::test]
async fn a_volume_migration_copies_to_a_new_claim_on_another_node() {
    // KubeVirt's storage migration (updateVolumesStrategy: Migration): RWO
    // to RWO on another node, switching class on the way.
    let s = Scenario::new("e2e-volmig").await;
    s.claim("old", EXT4, Mode::Filesystem, false).await;
    let uid = s.vmi("vm1", "node-a", &["old"]).await;
    s.launcher(
        "virt-launcher-vm1-src",
        "node-a",
        "vm1",
        &uid,
        &[("old", Mode::Filesystem)],
        None,
    )
    .await;
    s.select_node("old", "node-a").await;
    let old = s.bound("old").await;
    s.wait_attached(&old, "node-a").await;

    // The destination claim and the target pod on node-b, which mounts the
    // new volume while the source keeps the old one.
    s.claim("new", BLOCK, Mode::Block, false).await;
    let vmim_uid = s.migration("volmig", "vm1").await;
    s.launcher(
        "virt-launcher-vm1-dst",
        "node-b",
        "vm1",
        &uid,
        &[("new", Mode::Block)],
        Some(("volmig", &vmim_uid)),
    )
    .await;
    s.select_node("new", "node-b").await;
    let new = s.bound("new").await;
    s.wait_attached(&new, "node-b").await;
    assert!(
        s.is_attached(&old, "node-a").await,
        "both attached at once, each on its own node"
    );

    // The copy is done: the source pod goes, the old volume is detached and
    // the old claim deleted.
    s.delete_pod("virt-launcher-vm1-src").await;
    s.wait_detached(&old, "node-a").await;
    s.delete_claim("old").await;
    s.wait_reclaimed(&old).await;
    assert!(s.is_attached(&new, "node-b").await);
    assert_eq!(s.holder(&new).await.as_deref(), Some("node-b"));
    s.cleanup().await;
}

/// The sum and count of an RPC's duration histogram.
fn rpc_time(scrape: &str, method: &str) -> (f64, f64) {
    (
        metric(
            scrape,
            &format!("rds_csi_rpc_duration_seconds_sum{{method=\"{method}\"}}"),
        ),
        metric(
            scrape,
            &format!("rds_csi_rpc_duration_seconds_count{{method=\"{method}\"}}"),
        ),
    )
}

#[tokio::test]
async fn a_boot_storm_of_20_claims_and_pods_all_attach() {
    const N: usize = 20;
    let s = Scenario::new("e2e-storm").await;
    let nodes = ["node-a", "node-b", "node-c"];
    let before = s.scrape().await;
    let start = Instant::now();
    // As a VM pool's boot: all claims and pods at once; the scheduler
    // spreads them over the nodes.
    let mut tasks = vec![];
    for i in 0..N {
        let (name, node) = (format!("vm{i}"), nodes[i % nodes.len()]);
        let s = &s;
        tasks.push(async move {
            s.claim(&name, EXT4, Mode::Filesystem, false).await;
            s.pod(&name, node, &[(&name, Mode::Filesystem)], json!({}))
                .await;
            s.select_node(&name, node).await;
        });
    }
    futures::future::join_all(tasks).await;
    let mut pvs = vec![];
    for i in 0..N {
        pvs.push((s.bound(&format!("vm{i}")).await, nodes[i % nodes.len()]));
    }
    let bound = start.elapsed();
    for (pv, node) in &pvs {
        s.wait_attached(pv, node).await;
    }
    let attached = start.elapsed();
    let after = s.scrape().await;
    let mut driver = 0.0;
    let mut calls = 0.0;
    for method in ["CreateVolume", "ControllerPublishVolume"] {
        let (sum0, n0) = rpc_time(&before, method);
        let (sum1, n1) = rpc_time(&after, method);
        driver += sum1 - sum0;
        calls += n1 - n0;
    }
    println!(
        "BOOT STORM: {N} claims and pods: all bound after {:.2}s, all attached after {:.2}s; \
         the driver spent {:.3}s in {calls} CreateVolume/ControllerPublishVolume calls \
         ({:.1} ms each on average)",
        bound.as_secs_f64(),
        attached.as_secs_f64(),
        driver,
        driver * 1000.0 / calls.max(1.0)
    );
    assert!(calls >= 2.0 * N as f64, "every claim created and published");
    s.cleanup().await;
}
