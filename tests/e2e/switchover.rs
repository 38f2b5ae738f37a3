//! Switching from the Go driver: the state the Go driver leaves behind,
//! taken over by rds-csi without detaching anything.
//!
//! While the controller Pod is stopped (the Go driver's controller was
//! just removed), the scenario lays out what a cluster that ran the Go
//! driver holds, the way each of its parts wrote it:
//! - on the RDS, disks made with the Go driver's command (slot
//!   `pvc-<uuid>`, file `<volumePath>/pvc-<uuid>.img`, NQN
//!   `<prefix>pvc-<uuid>`, no comment), one of them with no PV left, and a
//!   snapshot named `snap-<uuid>-at-<unix time>` made by `copy-from`;
//! - a StorageClass with the Go driver's parameters; PVs as the
//!   external-provisioner wrote them for it (volume handle = slot, its
//!   volume context, `provisioned-by`), with the driver's
//!   `attached-node`/`attached-at` annotations, bound to their claims;
//! - VolumeAttachments named and finalized as the attach/detach
//!   controller and the external-attacher make them, marked attached
//!   through the status subresource, and the pods using them on their
//!   nodes.
//!
//! Then rds-csi's controller Pod starts with the same driver name, and the
//! scenario checks what an operator relies on after the switch: nothing
//! detached, the holders kept (a publish elsewhere is refused, naming
//! them), a pod moving is handed off, a claim grows, a claim's deletion
//! removes disk and file, the Go snapshot is restorable and deletable, and
//! the orphan sweep reports the Go disk nobody claims but never touches it,
//! even with deletion on.

use std::path::PathBuf;

use k8s_openapi::api::core::v1::PersistentVolume;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::{StorageClass, VolumeAttachment};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use routeros::{DiskComment, Nqn, RosPath, Slot};
use sha2::{Digest, Sha256};

use crate::cluster::*;
use crate::snapshots::{
    assert_holds, contents, creation_time, from_snapshot, image, is_ready, snapshots,
    wait_snapshot, write_pattern,
};
use crate::volumes::expand;

/// Where the Go driver's StorageClasses put volumes (`volumePath`), the
/// controller's `--volume-path` in the local cluster.
const VOLUME_PATH: &str = "/storage-pool/metal-csi";
const NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik:";
const PORT: u16 = 4420;
/// The unix time in the Go snapshot's name.
const SNAPSHOT_TIME: i64 = 1_760_000_000;
/// The controller, while it takes over: the orphan sweep every 2 s, with
/// deletion on and a 1 s grace period, so "never deleted" means something.
const TAKEOVER_FLAGS: &[&str] = &[
    "--orphan-reconcile-interval=2s",
    "--orphan-delete=true",
    "--orphan-grace-period=1s",
];

/// A volume ID as the Go driver got it from the external-provisioner,
/// `pvc-<a UUID>` (the claim's UID), and the UUID: here derived from the
/// scenario's unique namespace and `what`.
fn go_volume_id(ns: &str, what: &str) -> (String, String) {
    let digest = Sha256::digest(format!("{ns}/{what}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    );
    (format!("pvc-{uuid}"), uuid)
}

/// The disk the Go driver's CreateVolume makes, with its command: a file
/// under `volumePath` named after the slot, exported with the NQN of the
/// slot, and no comment.
async fn go_disk(s: &Scenario, id: &str) {
    let add = routeros::Command::DiskAdd {
        slot: Slot::new(id).unwrap(),
        file: RosPath::new(&format!("{VOLUME_PATH}/{id}.img")).unwrap(),
        size_bytes: GIB,
        port: PORT,
        nqn: Nqn::new(&format!("{NQN_PREFIX}{id}")).unwrap(),
        comment: DiskComment::default(),
    };
    // Exactly the Go driver's line, nothing of this driver's added.
    assert_eq!(
        add.render(),
        format!(
            "/disk add type=file file-path={VOLUME_PATH}/{id}.img file-size={GIB} slot={id} \
             nvme-tcp-export=yes nvme-tcp-server-port={PORT} nvme-tcp-server-nqn={NQN_PREFIX}{id}"
        )
    );
    s.rds.client().run(&add).await.unwrap();
}

/// The Go driver's snapshot of `volume`: `copy-from`, no export, no
/// comment, named `snap-<volume uuid>-at-<unix time>`.
async fn go_snapshot(s: &Scenario, volume: &str, uuid: &str) -> String {
    let slot = format!("snap-{uuid}-at-{SNAPSHOT_TIME}");
    s.rds
        .copy_from(
            &Slot::new(volume).unwrap(),
            &Slot::new(&slot).unwrap(),
            &RosPath::new(&format!("{VOLUME_PATH}/{slot}.img")).unwrap(),
            None,
            &DiskComment::default(),
        )
        .await
        .unwrap();
    slot
}

/// A StorageClass written for the Go driver: its provisioner name and
/// parameters.
async fn go_class(s: &Scenario) -> String {
    let name = format!("{}-go", s.ns);
    let class = json!({
        "metadata": {"name": name},
        "provisioner": s.cluster.get("RDS_CSI_E2E_DRIVER"),
        "parameters": {
            "nvmeAddress": "192.0.2.10", "nvmePort": PORT.to_string(),
            "volumePath": VOLUME_PATH, "csi.storage.k8s.io/fstype": "ext4",
            "ctrlLossTmo": "600", "reconnectDelay": "5", "keepAliveTmo": "5",
            "migrationTimeoutSeconds": "300"
        },
        "reclaimPolicy": "Delete",
        "allowVolumeExpansion": true,
        "volumeBindingMode": "Immediate"
    });
    create(&Api::<StorageClass>::all(s.client.clone()), class).await;
    name
}

/// One volume the Go driver provisioned and attached: its claim, its PV
/// and its attachment to `node`, and the pod using it there.
struct GoVolume {
    id: String,
    uuid: String,
    claim: &'static str,
    pod: &'static str,
    node: &'static str,
    mode: Mode,
}

impl GoVolume {
    fn new(
        s: &Scenario,
        claim: &'static str,
        pod: &'static str,
        node: &'static str,
        mode: Mode,
    ) -> GoVolume {
        let (id, uuid) = go_volume_id(&s.ns, claim);
        GoVolume {
            id,
            uuid,
            claim,
            pod,
            node,
            mode,
        }
    }

    fn volume_mode(&self) -> &'static str {
        match self.mode {
            Mode::Filesystem => "Filesystem",
            Mode::Block => "Block",
        }
    }

    /// The volume context the Go driver's CreateVolume answered, as the
    /// external-provisioner stored it (with its own identity key), with
    /// the claim's name and namespace when its provisioner ran with
    /// `--extra-create-metadata`.
    fn context(&self, ns: &str, claim_identity: bool) -> Value {
        let mut c = json!({
            "nvmeAddress": "192.0.2.10",
            "nvmePort": PORT.to_string(),
            "nqn": format!("{NQN_PREFIX}{}", self.id),
            "volumePath": VOLUME_PATH,
            "ctrlLossTmo": "600",
            "reconnectDelay": "5",
            "keepAliveTmo": "5",
            "migrationTimeoutSeconds": "300",
            "storage.kubernetes.io/csiProvisionerIdentity": "1760000000000-4242-rds.csi.srvlab.io"
        });
        if self.mode == Mode::Filesystem {
            c["fsType"] = json!("ext4");
        }
        if claim_identity {
            c["csi.storage.k8s.io/pvc/name"] = json!(self.claim);
            c["csi.storage.k8s.io/pvc/namespace"] = json!(ns);
        }
        c
    }

    /// Disk, claim, PV, VolumeAttachment and pod, in the order that keeps
    /// Kubernetes from doing anything of its own: the claim bound to the
    /// PV before the pod exists, the VolumeAttachment attached before the
    /// attach/detach controller looks for one.
    async fn lay_out(&self, s: &Scenario, class: &str, claim_identity: bool) {
        go_disk(s, &self.id).await;
        let pvc = create(
            &s.pvcs(),
            json!({
                "metadata": {"name": self.claim},
                "spec": {
                    "accessModes": ["ReadWriteOnce"], "volumeMode": self.volume_mode(),
                    "storageClassName": class, "volumeName": self.id,
                    "resources": {"requests": {"storage": "1Gi"}}
                }
            }),
        )
        .await;
        let driver = s.cluster.get("RDS_CSI_E2E_DRIVER");
        let attacher_finalizer = format!("external-attacher/{}", driver.replace('.', "-"));
        let mut csi = json!({"driver": driver, "volumeHandle": self.id,
                             "volumeAttributes": self.context(&s.ns, claim_identity)});
        if self.mode == Mode::Filesystem {
            csi["fsType"] = json!("ext4");
        }
        let pv = json!({
            "metadata": {
                "name": self.id,
                "annotations": {
                    "pv.kubernetes.io/provisioned-by": driver,
                    "rds.csi.srvlab.io/attached-node": self.node,
                    "rds.csi.srvlab.io/attached-at": "2025-10-09T08:53:20Z"
                },
                "finalizers": ["kubernetes.io/pv-protection", attacher_finalizer]
            },
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"],
                "volumeMode": self.volume_mode(),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": class,
                "claimRef": {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
                             "namespace": s.ns, "name": self.claim,
                             "uid": pvc.metadata.uid.unwrap()},
                "csi": csi,
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "rds.csi.srvlab.io/rds", "operator": "In", "values": ["default"]}
                ]}]}}
            }
        });
        create(&Api::<PersistentVolume>::all(s.client.clone()), pv).await;
        assert_eq!(s.bound(self.claim).await, self.id);

        let vas = Api::<VolumeAttachment>::all(s.client.clone());
        let name = attachment_name(&self.id, driver, self.node);
        create(
            &vas,
            json!({
                "metadata": {"name": name, "finalizers": [attacher_finalizer]},
                "spec": {"attacher": driver, "nodeName": self.node,
                         "source": {"persistentVolumeName": self.id}}
            }),
        )
        .await;
        let status = json!({"status": {"attached": true}});
        vas.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap();
        s.pod(self.pod, self.node, &[(self.claim, self.mode)], json!({}))
            .await;
    }
}

/// The name the attach/detach controller gives a CSI volume's
/// VolumeAttachment: `csi-` and the SHA-256 of handle, driver and node.
fn attachment_name(handle: &str, driver: &str, node: &str) -> String {
    let digest = Sha256::digest(format!("{handle}{driver}{node}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("csi-{hex}")
}

/// The VolumeAttachments of `pv`: exactly one, attached to `node`, not
/// being deleted.
async fn assert_still_attached(s: &Scenario, pv: &str, node: &str) {
    let vas: Vec<VolumeAttachment> = Api::<VolumeAttachment>::all(s.client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|va| va.spec.source.persistent_volume_name.as_deref() == Some(pv))
        .collect();
    assert_eq!(vas.len(), 1, "one VolumeAttachment of {pv}: {vas:?}");
    let va = &vas[0];
    assert_eq!(va.spec.node_name, node);
    assert!(va.metadata.deletion_timestamp.is_none(), "{va:?}");
    assert!(va.status.as_ref().is_some_and(|st| st.attached), "{va:?}");
    assert_eq!(s.holder(pv).await.as_deref(), Some(node));
}

/// The Go driver's disk `id` as it was made: there, exported, its comment
/// empty.
async fn assert_untouched(s: &Scenario, id: &str) -> PathBuf {
    let disk = s
        .disk(id)
        .await
        .unwrap_or_else(|| panic!("the Go driver's disk {id} is gone"));
    assert!(disk.comment.is_empty(), "{id} got a comment: {disk:?}");
    assert_eq!(disk.nqn.as_deref(), Some(&*format!("{NQN_PREFIX}{id}")));
    let file = s.cluster.sim_file(disk.file_path.as_deref().unwrap());
    assert!(file.exists(), "{} is gone", file.display());
    file
}

/// The Warning event the orphan sweep records on the controller's Pod
/// naming `slot`.
async fn wait_sweep_event(s: &Scenario, reason: &str, slot: &str) -> String {
    let events = Api::<Event>::namespaced(s.client.clone(), "kube-system");
    eventually(&format!("{reason} naming {slot}"), WAIT, || async {
        events
            .list(&ListParams::default())
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some(reason))
            .filter_map(|e| e.note)
            .find(|note| note.contains(slot))
    })
    .await
}

/// Puts the controller back as the chart runs it when the scenario ends,
/// however it ends: the tests after this one expect the chart's flags.
struct ChartFlagsBack(String);

impl Drop for ChartFlagsBack {
    fn drop(&mut self) {
        local_cluster(&self.0, &["stop-controller"]);
        let status = local_cluster(&self.0, &["start-controller"]);
        if !status.success() && !std::thread::panicking() {
            panic!("the controller did not start again with the chart's flags");
        }
    }
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_switch_from_the_go_driver_keeps_every_attachment_and_every_disk() {
    let s = Scenario::new("e2e-switch").await;
    // The Go driver's controller is gone; rds-csi is not installed yet.
    s.cluster.stop_controller().await;
    let _back = ChartFlagsBack(s.cluster.get("RDS_CSI_E2E_DIR").to_string());

    let class = go_class(&s).await;
    let fs = GoVolume::new(&s, "data", "app", "node-a", Mode::Filesystem);
    let block = GoVolume::new(&s, "disk", "vm", "node-b", Mode::Block);
    fs.lay_out(&s, &class, true).await;
    // This one's provisioner did not pass the claim: the driver finds it
    // from the PV's claimRef.
    block.lay_out(&s, &class, false).await;
    let (leftover, _) = go_volume_id(&s.ns, "leftover");
    go_disk(&s, &leftover).await;
    let fs_image = s.cluster.sim_file(&format!("{VOLUME_PATH}/{}.img", fs.id));
    write_pattern(&fs_image, 1);
    let snap = go_snapshot(&s, &fs.id, &fs.uuid).await;
    write_pattern(&fs_image, 2);
    // The attach/detach controller took the pods' attachments for its own
    // (same names), and nothing detached while no driver ran.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_still_attached(&s, &fs.id, "node-a").await;
    assert_still_attached(&s, &block.id, "node-b").await;

    // rds-csi takes over, with the same driver name.
    s.cluster.start_controller(TAKEOVER_FLAGS).await;

    // Nothing detached; the Go driver's disks as they were.
    let events = wait_sweep_event(&s, "UnownedOrphanVolumes", &leftover).await;
    assert!(events.contains("never deleted"), "{events}");
    assert!(
        metric(
            &s.scrape().await,
            r#"rds_csi_orphan_volumes_by_reason{reason="no-identity"}"#
        ) >= 1.0
    );
    // Several sweeps with deletion on and the grace period long past.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_untouched(&s, &leftover).await;
    assert_untouched(&s, &fs.id).await;
    assert_untouched(&s, &block.id).await;
    assert_still_attached(&s, &fs.id, "node-a").await;
    assert_still_attached(&s, &block.id, "node-b").await;

    // The holder is known: a publish to another node is refused, naming it.
    let driver = s.cluster.get("RDS_CSI_E2E_DRIVER");
    let rogue = format!("{}-rogue", s.ns);
    let vas = Api::<VolumeAttachment>::all(s.client.clone());
    create(
        &vas,
        json!({"metadata": {"name": rogue},
               "spec": {"attacher": driver, "nodeName": "node-c",
                        "source": {"persistentVolumeName": fs.id}}}),
    )
    .await;
    let err = s.wait_refused(&fs.id, "node-c").await;
    assert!(err.contains("node-a"), "names the holder: {err}");
    s.wait_event(fs.claim, "AttachConflict").await;
    vas.delete(&rogue, &DeleteParams::default()).await.unwrap();
    s.wait_detached(&fs.id, "node-c").await;
    assert_still_attached(&s, &fs.id, "node-a").await;

    // The Go driver's volume grows while attached.
    expand(&s, fs.claim, &fs.id, fs.mode).await;

    // A pod moving: node-b lets go, node-c gets it as a handoff.
    s.delete_pod(block.pod).await;
    s.pod(
        "vm-moved",
        "node-c",
        &[(block.claim, block.mode)],
        json!({}),
    )
    .await;
    s.wait_detached(&block.id, "node-b").await;
    s.wait_attached(&block.id, "node-c").await;
    assert_eq!(s.holder(&block.id).await.as_deref(), Some("node-c"));
    s.wait_event(block.claim, "Handoff").await;

    // The Go snapshot, pre-provisioned as a VolumeSnapshotContent, is
    // ready, tells its time, and restores what the volume held then.
    create(
        &contents(&s),
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotContent",
            "metadata": {"name": format!("{}-go-snap", s.ns)},
            "spec": {"deletionPolicy": "Delete", "driver": driver,
                     "source": {"snapshotHandle": snap},
                     "volumeSnapshotRef": {"name": "go-snap", "namespace": s.ns}}
        }),
    )
    .await;
    create(
        &snapshots(&s),
        json!({
            "apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot",
            "metadata": {"name": "go-snap"},
            "spec": {"source": {"volumeSnapshotContentName": format!("{}-go-snap", s.ns)}}
        }),
    )
    .await;
    let status = wait_snapshot(&s, "go-snap", "ready", is_ready).await;
    assert_eq!(status["restoreSize"], json!("1Gi"), "{status}");
    assert_eq!(creation_time(&status).as_second(), SNAPSHOT_TIME);
    s.claim_from(
        "restored",
        &class,
        Mode::Block,
        false,
        Some(from_snapshot("go-snap")),
    )
    .await;
    let restored = s.bound("restored").await;
    assert_holds(&s, &image(&s, &restored).await, 1, "the restore");

    // Deleting the Go driver's claim removes its disk and its file.
    s.delete_pod(fs.pod).await;
    s.wait_detached(&fs.id, "node-a").await;
    assert_eq!(s.holder(&fs.id).await, None, "released on detach");
    s.delete_claim(fs.claim).await;
    s.wait_reclaimed(&fs.id).await;
    assert!(!fs_image.exists(), "{} left behind", fs_image.display());
    // And the Go snapshot goes with its VolumeSnapshot.
    let snap_image = s.cluster.sim_file(&format!("{VOLUME_PATH}/{snap}.img"));
    snapshots(&s)
        .delete("go-snap", &DeleteParams::default())
        .await
        .unwrap();
    eventually(&format!("snapshot {snap} deleted"), WAIT, || async {
        s.disk(&snap).await.is_none().then_some(())
    })
    .await;
    assert!(!snap_image.exists(), "{} left behind", snap_image.display());

    // The orphan nobody claims is still there, for a person to decide.
    assert_untouched(&s, &leftover).await;
    s.rds
        .remove_disk(&Slot::new(&leftover).unwrap())
        .await
        .unwrap();
    let file = RosPath::new(&format!("{VOLUME_PATH}/{leftover}.img")).unwrap();
    s.rds.remove_file(&file).await.unwrap();
    Api::<StorageClass>::all(s.client.clone())
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    s.cleanup().await;
}
