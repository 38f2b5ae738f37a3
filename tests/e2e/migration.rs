//! KubeVirt's migrations through the real control loops: live migration
//! of an RWX block disk (succeeding and failing), a forged launcher pod,
//! and a storage migration to a new claim on another node.

use crate::cluster::*;

/// A VM on node-a with an RWX block disk, attached; (pv, vmi uid).
async fn running_vm(s: &Scenario) -> (String, String) {
    s.claim("vmdisk", BLOCK_RWX, Mode::Block, true).await;
    let pv = s.bound("vmdisk").await;
    let uid = vm_on_node_a(s, "vmdisk", Mode::Block).await;
    s.wait_attached(&pv, "node-a").await;
    (pv, uid)
}

/// The VM `vm1` started on node-a with the one claim `claim`: its VMI and
/// its virt-launcher pod `virt-launcher-vm1-src`; the VMI's UID.
async fn vm_on_node_a(s: &Scenario, claim: &str, mode: Mode) -> String {
    let uid = s.vmi("vm1", "node-a", &[claim]).await;
    let claims = [(claim, mode)];
    s.launcher(
        "virt-launcher-vm1-src",
        "node-a",
        "vm1",
        &uid,
        &claims,
        None,
    )
    .await;
    uid
}

/// A pod `pod` on `node` dressed as a virt-launcher pod of `vm1` (VMI
/// `uid`) using `vmdisk`, claiming to be the target of the migration `job`
/// (name, UID), which does not exist; the driver's refusal of its attach.
async fn forged_target(
    s: &Scenario,
    pv: &str,
    uid: &str,
    pod: &str,
    node: &str,
    job: (&str, &str),
) -> String {
    let claims = [("vmdisk", Mode::Block)];
    s.launcher(pod, node, "vm1", uid, &claims, Some(job)).await;
    s.wait_refused(pv, node).await
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
    s.kubevirt()
        .patch_vmi(
        "vm1",
        &json!({
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
    s.kubevirt().patch_vmi("vm1", &vmi).await;
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
    let fake_job = ("mig-fake", "3f1c9a8e-0000-4000-8000-00000000c0de");
    let err = forged_target(&s, &pv, &uid, "intruder", "node-c", fake_job).await;
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
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_live_migration_on_the_rwx_block_class_moves_the_disk() {
    live_migration("e2e-livemig", true).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_failed_live_migration_detaches_the_target_and_keeps_the_source() {
    live_migration("e2e-migfail", false).await;
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_forged_launcher_pod_is_refused_and_its_volume_attachment_stays_unattached() {
    // Anyone who may create pods can copy a VM's labels, its VMI's UID and
    // make up a migration job; no VirtualMachineInstanceMigration exists.
    let s = Scenario::new("e2e-forged").await;
    let (pv, uid) = running_vm(&s).await;
    let fake_job = ("mig-forged", "5d0c1e2f-0000-4000-8000-0000000f0f0f");
    let pod = "virt-launcher-vm1-forged";
    let err = forged_target(&s, &pv, &uid, pod, "node-b", fake_job).await;
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

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_volume_migration_copies_to_a_new_claim_on_another_node() {
    // KubeVirt's storage migration (updateVolumesStrategy: Migration): RWO
    // to RWO on another node, switching class on the way.
    let s = Scenario::new("e2e-volmig").await;
    s.claim("old", EXT4, Mode::Filesystem, false).await;
    let uid = vm_on_node_a(&s, "old", Mode::Filesystem).await;
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
