use super::*;
use serde_json::json;

const VMI_UID: &str = "uid-vmi";
const VMIM_UID: &str = "uid-vmim";

fn pod(v: Value) -> Arc<Pod> {
    Arc::new(serde_json::from_value(v).unwrap())
}

/// A virt-launcher pod as KubeVirt makes it; `job` adds the migration
/// labels of a target pod.
fn launcher(name: &str, node: &str, claim: &str, created_by: &str, job: Option<&str>) -> Arc<Pod> {
    let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": "vm1", "kubevirt.io/created-by": created_by});
    if let Some(j) = job {
        labels["kubevirt.io/migrationJobUID"] = json!(j);
    }
    pod(json!({
        "metadata": {"name": name, "namespace": "vms", "uid": format!("uid-{name}"), "labels": labels,
                      "annotations": {"kubevirt.io/domain": "vm1"}},
        "spec": {"nodeName": node, "containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": "Running"}
    }))
}

fn vmim(phase: &str, vmi: &str) -> Vmim {
    Vmim {
        namespace: "vms".into(),
        name: "mig1".into(),
        uid: VMIM_UID.into(),
        vmi_name: vmi.into(),
        phase: phase.into(),
    }
}

fn vmi_json(node: &str, claim: &str) -> Value {
    json!({
        "metadata": {"name": "vm1", "namespace": "vms", "uid": VMI_UID},
        "spec": {"volumes": [{"name": "rootdisk", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"nodeName": node, "phase": "Running"}
    })
}

/// The order KubeVirt really follows: the VMIM in Scheduling, the target
/// pod created on b with both UIDs, no `migrationState` on the VMI yet.
fn real_order() -> (Vec<Arc<Pod>>, Vmim, Value) {
    let pods = vec![
        launcher("src", "a", "disk", VMI_UID, None),
        launcher("dst", "b", "disk", VMI_UID, Some(VMIM_UID)),
    ];
    (pods, vmim("Scheduling", "vm1"), vmi_json("a", "disk"))
}

fn verdict(pods: &[Arc<Pod>], m: &Vmim, vmi: Option<&Value>, node: &str) -> Result<String, String> {
    let v = vmi.map(|data| Vmi {
        uid: data
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        data,
    });
    judge(pods, "disk", node, "a", m, v.as_ref())
}

#[test]
fn the_real_order_is_admitted_before_the_vmi_has_a_migration_state() {
    let (pods, m, vmi) = real_order();
    let how = verdict(&pods, &m, Some(&vmi), "b").unwrap();
    assert!(how.contains("mig1") && how.contains("dst"), "{how}");
}

#[test]
fn every_phase_kubevirt_sets_before_the_end_admits() {
    let (pods, _, vmi) = real_order();
    for phase in [
        "Pending",
        "Scheduling",
        "Scheduled",
        "PreparingTarget",
        "TargetReady",
        "Running",
    ] {
        assert!(
            verdict(&pods, &vmim(phase, "vm1"), Some(&vmi), "b").is_ok(),
            "{phase}"
        );
    }
}

#[test]
fn a_launcher_pod_with_forged_labels_and_no_vmim_is_refused() {
    // Labels alone: the candidates come from VMIMs, and there are none.
    let (pods, _, _) = real_order();
    assert!(candidates(&pods, "disk", "b", &[]).is_empty());
}

#[test]
fn a_vmim_that_succeeded_or_failed_admits_nothing() {
    let (pods, _, vmi) = real_order();
    for phase in ["Succeeded", "Failed"] {
        let why = verdict(&pods, &vmim(phase, "vm1"), Some(&vmi), "b").unwrap_err();
        assert!(why.contains("not in progress"), "{why}");
    }
}

#[test]
fn a_vmim_kubevirt_has_not_seen_yet_admits_nothing() {
    // Its phase is empty: a user created it, virt-controller has not acted.
    let (pods, _, vmi) = real_order();
    assert!(verdict(&pods, &vmim("", "vm1"), Some(&vmi), "b").is_err());
}

#[test]
fn a_vmim_for_another_vmi_admits_nothing() {
    // The VMIM migrates vm2, which does not use the claim.
    let (pods, _, _) = real_order();
    let other = json!({
        "metadata": {"name": "vm2", "namespace": "vms", "uid": VMI_UID},
        "spec": {"volumes": [{"name": "rootdisk", "persistentVolumeClaim": {"claimName": "other"}}]},
        "status": {"nodeName": "a"}
    });
    let why = verdict(&pods, &vmim("Scheduling", "vm2"), Some(&other), "b").unwrap_err();
    assert!(why.contains("does not use claim disk"), "{why}");
}

#[test]
fn a_target_pod_naming_another_vmi_uid_is_refused() {
    // A forged pod copies the VMIM's UID but was not made for this VMI.
    let pods = vec![
        launcher("src", "a", "disk", VMI_UID, None),
        launcher("dst", "b", "disk", "uid-someone-else", Some(VMIM_UID)),
    ];
    let (_, m, vmi) = real_order();
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_err());
}

#[test]
fn a_target_pod_naming_another_migration_is_refused() {
    let pods = vec![
        launcher("src", "a", "disk", VMI_UID, None),
        launcher("dst", "b", "disk", VMI_UID, Some("uid-made-up")),
    ];
    let (_, m, vmi) = real_order();
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_err());
}

#[test]
fn a_forged_pod_copying_a_real_migration_s_uids_onto_a_third_node_blocks_both() {
    let (mut pods, m, vmi) = real_order();
    pods.push(launcher("intruder", "c", "disk", VMI_UID, Some(VMIM_UID)));
    let why = verdict(&pods, &m, Some(&vmi), "c").unwrap_err();
    assert!(why.contains("all claim to be the target"), "{why}");
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_err());
}

#[test]
fn a_vmi_that_does_not_run_on_the_holder_admits_nothing() {
    let (pods, m, _) = real_order();
    let elsewhere = vmi_json("z", "disk");
    let why = verdict(&pods, &m, Some(&elsewhere), "b").unwrap_err();
    assert!(why.contains("runs on \"z\""), "{why}");
}

#[test]
fn a_missing_vmi_admits_nothing() {
    let (pods, m, _) = real_order();
    assert!(verdict(&pods, &m, None, "b").is_err());
}

#[test]
fn a_finished_or_deleting_target_pod_does_not_count() {
    let (_, m, vmi) = real_order();
    let mut done = (*launcher("dst", "b", "disk", VMI_UID, Some(VMIM_UID))).clone();
    done.status.as_mut().unwrap().phase = Some("Failed".into());
    assert!(verdict(&[Arc::new(done)], &m, Some(&vmi), "b").is_err());
    let mut deleting = (*launcher("dst", "b", "disk", VMI_UID, Some(VMIM_UID))).clone();
    deleting.metadata.deletion_timestamp = Some(
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
    );
    assert!(verdict(&[Arc::new(deleting)], &m, Some(&vmi), "b").is_err());
}

/// A running hotplug-disk pod on node b for claim `disk`, owned by the
/// pod `dst` with uid `owner_uid`.
fn hotplug_pod_on_b(owner_uid: &str) -> Arc<Pod> {
    pod(json!({
        "metadata": {"name": "hp", "namespace": "vms", "labels": {"kubevirt.io": "hotplug-disk"},
                      "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "dst", "uid": owner_uid}]},
        "spec": {"nodeName": "b", "containers": [], "volumes": [{"name": "h", "persistentVolumeClaim": {"claimName": "disk"}}]},
        "status": {"phase": "Running"}
    }))
}

#[test]
fn a_hotplug_disk_pod_resolves_through_its_owning_launcher() {
    let owner = launcher("dst", "b", "root", VMI_UID, Some(VMIM_UID));
    let hp = hotplug_pod_on_b("uid-dst");
    let pods = vec![launcher("src", "a", "root", VMI_UID, None), owner, hp];
    let (_, m, vmi) = real_order();
    assert_eq!(
        candidates(&pods, "disk", "b", std::slice::from_ref(&m)).len(),
        1
    );
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_ok());
}

#[test]
fn a_hotplug_disk_pod_whose_owner_uid_differs_resolves_to_nothing() {
    let owner = launcher("dst", "b", "root", VMI_UID, Some(VMIM_UID));
    let hp = hotplug_pod_on_b("uid-forged");
    let pods = vec![owner, hp];
    let (_, m, vmi) = real_order();
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_err());
}

#[test]
fn the_vmi_migration_state_alone_admits_its_target_while_the_vmim_runs() {
    // No target pod visible (an older KubeVirt without the label).
    let pods = vec![launcher("src", "a", "disk", VMI_UID, None)];
    let mut vmi = vmi_json("a", "disk");
    vmi["status"]["migrationState"] =
        json!({"sourceNode": "a", "targetNode": "b", "migrationUid": VMIM_UID});
    let m = vmim("Running", "vm1");
    assert_eq!(
        candidates(&pods, "disk", "b", std::slice::from_ref(&m)).len(),
        1
    );
    assert!(verdict(&pods, &m, Some(&vmi), "b").is_ok());
    assert!(verdict(&pods, &m, Some(&vmi), "c").is_err(), "another node");
    for flag in ["completed", "failed", "abortRequested"] {
        let mut ended = vmi.clone();
        ended["status"]["migrationState"][flag] = json!(true);
        assert!(verdict(&pods, &m, Some(&ended), "b").is_err(), "{flag}");
    }
    let mut other = vmi.clone();
    other["status"]["migrationState"]["migrationUid"] = json!("uid-old-migration");
    assert!(
        verdict(&pods, &m, Some(&other), "b").is_err(),
        "another migration"
    );
    assert!(
        verdict(&pods, &vmim("Succeeded", "vm1"), Some(&vmi), "b").is_err(),
        "a final VMIM"
    );
}

#[test]
fn a_data_volume_counts_as_the_claim_it_creates() {
    let vmi = json!({"spec": {"volumes": [{"name": "d", "dataVolume": {"name": "disk"}}]}});
    assert!(vmi_uses_claim(&vmi, "disk"));
    assert!(!vmi_uses_claim(&vmi, "other"));
    assert!(!vmi_uses_claim(&json!({}), "disk"));
}

#[test]
fn a_vmim_is_read_from_its_json_and_needs_a_vmi_name() {
    let m = Vmim::from_json(
        "vms",
        "mig1",
        "u",
        &json!({"spec": {"vmiName": "vm1"}, "status": {"phase": "Scheduling"}}),
    )
    .unwrap();
    assert_eq!(
        (m.vmi_name.as_str(), m.phase.as_str()),
        ("vm1", "Scheduling")
    );
    let fresh = Vmim::from_json("vms", "mig1", "u", &json!({"spec": {"vmiName": "vm1"}})).unwrap();
    assert!(!fresh.in_progress());
    assert_eq!(Vmim::from_json("vms", "x", "u", &json!({"spec": {}})), None);
}
