//! Is a second node the target of a live migration? Pure judgement over
//! KubeVirt's objects, tested without a cluster.
//!
//! # Trust model
//!
//! Who can write what, and so what may count as evidence:
//!
//! - **Pods** (labels, annotations, ownerReferences, volumes) are written
//!   by whoever may create pods in the namespace. A pod labelled
//!   `kubevirt.io=virt-launcher` with a `kubevirt.io/migrationJobUID` is
//!   only a claim; on its own it admits nothing.
//! - **A VirtualMachineInstanceMigration's UID** is assigned by the API
//!   server and its `status.phase` is written by virt-controller through
//!   the status subresource: a user who creates a VMIM cannot set its
//!   phase. A VMIM whose phase is empty (not yet seen by KubeVirt),
//!   `Succeeded` or `Failed` is no migration in progress.
//! - **A VirtualMachineInstance's UID** comes from the API server; its
//!   `status.nodeName` and `status.migrationState` are written by
//!   KubeVirt. Its `spec.volumes` are written by whoever created the VMI
//!   (normally KubeVirt from a VirtualMachine): they say which claims the
//!   VM uses.
//!
//! A second node is admitted only when all of these hold for one VMIM:
//! its phase is set and not final; the VMI it names (`spec.vmiName`)
//! exists, uses the claim, and runs on the node that holds the volume
//! now; and either a live virt-launcher pod on the publishing node uses
//! the claim (directly or through a hotplug-disk pod it owns), carries
//! `kubevirt.io/migrationJobUID` equal to the VMIM's UID and
//! `kubevirt.io/created-by` equal to the VMI's UID; or the VMI's
//! `status.migrationState` names the publishing node as the target of that
//! VMIM (`migrationUid`) and the migration has not completed, failed or
//! been asked to abort.
//!
//! The target pod is still a pod anyone may create, so the pod path binds
//! it to KubeVirt's objects by UID: a forged pod must name a migration
//! KubeVirt is running, of the VM that uses the volume and runs on the
//! holder. The VMI's `status.migrationState` appears only after the target
//! pod is running, which needs the volume attached, so it cannot be
//! required at publish time.
//!
//! KubeVirt makes one target pod per migration, so two live pods on
//! different nodes claiming the same migration are refused both.
//!
//! What this cannot defend against: someone who may create pods in the
//! namespace, who reads the UIDs of a migration KubeVirt is running of
//! the VM that uses the volume, and whose forged pod publishes before
//! KubeVirt's real target pod exists, gets the two-node window for the
//! rest of that migration (no third node is ever admitted, and the real
//! target is then refused). KubeVirt creates the target pod as soon as
//! the migration is scheduled, so that window is short. Someone who may
//! create or update VMIs and VMIMs in the namespace can migrate the VM
//! anyway: that is KubeVirt's own permission model.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::pods::{is_live, launcher_for, uses_claim, vmi_name_of, LABEL_MIGRATION_JOB};

pub const LABEL_CREATED_BY: &str = "kubevirt.io/created-by";

/// A VirtualMachineInstanceMigration, reduced to what the check reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vmim {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    /// `spec.vmiName`.
    pub vmi_name: String,
    /// `status.phase`; empty until virt-controller has seen the object.
    pub phase: String,
}

impl Vmim {
    /// Reads a VMIM as the API server returns it; `None` without the
    /// fields every VMIM has.
    pub fn from_json(namespace: &str, name: &str, uid: &str, data: &Value) -> Option<Vmim> {
        let vmi_name = data.pointer("/spec/vmiName")?.as_str()?.to_string();
        let phase = data
            .pointer("/status/phase")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        Some(Vmim {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            vmi_name,
            phase,
        })
    }

    /// Set by KubeVirt and not final.
    pub fn in_progress(&self) -> bool {
        !self.phase.is_empty() && self.phase != "Succeeded" && self.phase != "Failed"
    }
}

/// A VirtualMachineInstance, reduced to what the check reads.
#[derive(Debug, Clone)]
pub struct Vmi<'a> {
    pub uid: &'a str,
    /// The whole object (`spec` and `status`).
    pub data: &'a Value,
}

fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// Whether the VMI's `spec.volumes` use the claim, directly or through a
/// DataVolume of the same name.
pub fn vmi_uses_claim(vmi: &Value, claim: &str) -> bool {
    vmi.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .is_some_and(|vols| {
            vols.iter().any(|v| {
                v.pointer("/persistentVolumeClaim/claimName")
                    .and_then(Value::as_str)
                    == Some(claim)
                    || v.pointer("/dataVolume/name").and_then(Value::as_str) == Some(claim)
            })
        })
}

/// The VMIMs worth a look for a publish of `claim` to `node`: those named
/// by a migration-job label on a launcher pod on the node that uses the
/// claim, and those of a VMI a launcher pod using the claim runs. Pods
/// only narrow the search here; nothing is admitted on their word.
pub fn candidates<'a>(
    pods: &[Arc<Pod>],
    claim: &str,
    node: &str,
    vmims: &'a [Vmim],
) -> Vec<&'a Vmim> {
    let launchers: Vec<Pod> = pods
        .iter()
        .filter(|p| uses_claim(p, claim))
        .filter_map(|p| launcher_for(p, pods))
        .collect();
    let mut out: Vec<&Vmim> = Vec::new();
    for m in vmims {
        let by_pod = launchers.iter().any(|l| {
            l.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                && label(l, LABEL_MIGRATION_JOB) == Some(m.uid.as_str())
        });
        let by_vmi = launchers
            .iter()
            .any(|l| vmi_name_of(l).as_deref() == Some(m.vmi_name.as_str()));
        if (by_pod || by_vmi) && !out.iter().any(|o| o.uid == m.uid) {
            out.push(m);
        }
    }
    out
}

/// Judges one VMIM with its VMI: `Ok(how)` when `node` is shown to be the
/// target of that migration of the VM that uses `claim` and runs on
/// `source`; `Err(why)` otherwise. `pods` are the namespace's KubeVirt pods.
pub fn judge(
    pods: &[Arc<Pod>],
    claim: &str,
    node: &str,
    source: &str,
    vmim: &Vmim,
    vmi: Option<&Vmi<'_>>,
) -> Result<String, String> {
    if !vmim.in_progress() {
        return Err(format!(
            "VirtualMachineInstanceMigration {} is not in progress (phase {:?})",
            vmim.name, vmim.phase
        ));
    }
    let Some(vmi) = vmi else {
        return Err(format!(
            "VirtualMachineInstance {} named by migration {} does not exist",
            vmim.vmi_name, vmim.name
        ));
    };
    if !vmi_uses_claim(vmi.data, claim) {
        return Err(format!(
            "VirtualMachineInstance {} (migrated by {}) does not use claim {claim}",
            vmim.vmi_name, vmim.name
        ));
    }
    let runs_on = vmi.data.pointer("/status/nodeName").and_then(Value::as_str);
    if runs_on != Some(source) {
        return Err(format!(
            "VirtualMachineInstance {} runs on {:?}, not on {source}, which holds the volume",
            vmim.vmi_name,
            runs_on.unwrap_or("no node")
        ));
    }
    // KubeVirt makes one target pod per migration. Two live pods on
    // different nodes claiming the same migration mean one is forged, and
    // nothing says which: neither is admitted.
    let mut claimed_on: Vec<&str> = pods
        .iter()
        .filter(|p| is_live(p))
        .filter(|p| {
            label(p, LABEL_MIGRATION_JOB) == Some(vmim.uid.as_str())
                && label(p, LABEL_CREATED_BY) == Some(vmi.uid)
        })
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()))
        .filter(|n| *n != source)
        .collect();
    claimed_on.sort_unstable();
    claimed_on.dedup();
    if claimed_on.len() > 1 {
        return Err(format!(
            "pods on {claimed_on:?} all claim to be the target of migration {}; KubeVirt makes one, so none is admitted",
            vmim.name
        ));
    }
    // The target pod, bound to the VMIM and the VMI by their UIDs.
    let by_pod = pods
        .iter()
        .filter(|p| uses_claim(p, claim) && is_live(p))
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node))
        .filter_map(|p| launcher_for(p, pods))
        .find(|l| {
            is_live(l)
                && l.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
                && label(l, LABEL_MIGRATION_JOB) == Some(vmim.uid.as_str())
                && label(l, LABEL_CREATED_BY) == Some(vmi.uid)
        });
    if let Some(l) = by_pod {
        return Ok(format!(
            "migration {} ({}) of VirtualMachineInstance {}; target pod {}",
            vmim.name,
            vmim.phase,
            vmim.vmi_name,
            l.metadata.name.as_deref().unwrap_or_default()
        ));
    }
    // KubeVirt's own record, written once the target pod runs.
    if let Some(ms) = vmi.data.pointer("/status/migrationState") {
        let flag = |k: &str| ms.get(k).and_then(Value::as_bool).unwrap_or(false);
        if ms.get("targetNode").and_then(Value::as_str) == Some(node)
            && ms.get("migrationUid").and_then(Value::as_str) == Some(vmim.uid.as_str())
            && !flag("completed")
            && !flag("failed")
            && !flag("abortRequested")
        {
            return Ok(format!(
                "migration {} ({}) of VirtualMachineInstance {}; its migrationState names {node} as target",
                vmim.name, vmim.phase, vmim.vmi_name
            ));
        }
    }
    Err(format!(
        "migration {} of VirtualMachineInstance {} is in progress, but no live virt-launcher pod on {node} carries its UIDs and the VMI's migrationState does not name {node}",
        vmim.name, vmim.vmi_name
    ))
}

#[cfg(test)]
#[path = "migration_tests.rs"]
mod tests;
