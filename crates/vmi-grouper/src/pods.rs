//! Pure functions over KubeVirt's pods and VMI status, tested without a
//! cluster.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

pub const LABEL_APP: &str = "kubevirt.io";
pub const LAUNCHER: &str = "virt-launcher";
pub const HOTPLUG: &str = "hotplug-disk";
pub const LABEL_MIGRATION_JOB: &str = "kubevirt.io/migrationJobUID";
pub const LABEL_VM_NAME: &str = "vm.kubevirt.io/name";
pub const ANN_DOMAIN: &str = "kubevirt.io/domain";

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether the pod mounts the claim.
pub fn uses_claim(pod: &Pod, claim: &str) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|vols| {
            vols.iter().any(|v| {
                v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| c.claim_name == claim)
            })
        })
}

/// Running or about to run: not finished and not being deleted.
pub fn is_live(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    pod.metadata.deletion_timestamp.is_none()
        && !matches!(phase, Some("Succeeded") | Some("Failed"))
}

/// The virt-launcher pod a pod stands for: itself, or for a hotplug-disk
/// pod, the virt-launcher pod that owns it (found among `pods`).
pub fn launcher_for(pod: &Arc<Pod>, pods: &[Arc<Pod>]) -> Option<Pod> {
    match label(pod, LABEL_APP) {
        Some(LAUNCHER) => Some((**pod).clone()),
        Some(HOTPLUG) => {
            let owner = pod
                .metadata
                .owner_references
                .as_ref()?
                .iter()
                .find(|o| o.kind == "Pod")?;
            pods.iter()
                .find(|p| {
                    p.metadata.namespace == pod.metadata.namespace
                        && p.metadata.name.as_deref() == Some(owner.name.as_str())
                        && p.metadata.uid.as_deref() == Some(owner.uid.as_str())
                        && label(p, LABEL_APP) == Some(LAUNCHER)
                })
                .map(|p| (**p).clone())
        }
        _ => None,
    }
}

/// The VMI a virt-launcher pod runs.
pub fn vmi_name_of(launcher: &Pod) -> Option<String> {
    launcher
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANN_DOMAIN))
        .or_else(|| {
            launcher
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_VM_NAME))
        })
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Arc<Pod> {
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn launcher(name: &str, node: &str, claim: &str, migration: bool) -> Arc<Pod> {
        let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": "vm1", "kubevirt.io/created-by": "uid-vmi"});
        if migration {
            labels["kubevirt.io/migrationJobUID"] = json!("uid-vmim");
        }
        pod(json!({
            "metadata": {"name": name, "namespace": "vms", "uid": format!("uid-{name}"), "labels": labels,
                          "annotations": {"kubevirt.io/domain": "vm1"}},
            "spec": {"nodeName": node, "containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]},
            "status": {"phase": "Running"}
        }))
    }

    #[test]
    fn a_hotplug_disk_pod_resolves_to_its_owning_launcher() {
        let owner = launcher("dst", "b", "root", true);
        let hp = pod(json!({
            "metadata": {"name": "hp", "namespace": "vms", "labels": {"kubevirt.io": "hotplug-disk"},
                          "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "dst", "uid": "uid-dst"}]},
            "spec": {"nodeName": "b", "containers": [], "volumes": [{"name": "h", "persistentVolumeClaim": {"claimName": "hot"}}]},
            "status": {"phase": "Running"}
        }));
        let pods = vec![owner, hp.clone()];
        assert_eq!(
            vmi_name_of(&launcher_for(&hp, &pods).unwrap()).as_deref(),
            Some("vm1")
        );
    }
}
