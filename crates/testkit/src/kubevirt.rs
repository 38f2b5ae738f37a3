//! KubeVirt as the tests stand it in: its CRDs with open schemas (KubeVirt
//! itself does not run) and objects written the way its components write
//! them.
//!
//! The CRDs are defined once, in `crates/testkit/kubevirt-crds.json` (a
//! `v1` List that `kubectl apply -f` takes as is); `hack/local-cluster.py`
//! applies the same file. As KubeVirt defines them, the status of a
//! VirtualMachineInstanceMigration and of a VirtualMachine is a
//! subresource (only KubeVirt writes it), the VMI's is not.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::kube::create;
use crate::wait::eventually;

/// The stand-in CRDs' definitions (see the module documentation).
pub const CRDS_JSON: &str = include_str!("../kubevirt-crds.json");

/// The CRDs of [`CRDS_JSON`].
pub fn crds() -> Vec<CustomResourceDefinition> {
    let list: Value = serde_json::from_str(CRDS_JSON).expect("kubevirt-crds.json is JSON");
    serde_json::from_value(list["items"].clone()).expect("kubevirt-crds.json lists CRDs")
}

fn resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("kubevirt.io", "v1", kind), plural)
}

pub fn vmi_resource() -> ApiResource {
    resource("VirtualMachineInstance", "virtualmachineinstances")
}

pub fn vmim_resource() -> ApiResource {
    resource(
        "VirtualMachineInstanceMigration",
        "virtualmachineinstancemigrations",
    )
}

/// Creates the stand-in CRDs (ones that exist are kept) and waits until
/// they are served.
pub async fn ensure_crds(client: &Client) {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crds() {
        let _ = api.create(&PostParams::default(), &crd).await;
    }
    for r in [vmi_resource(), vmim_resource()] {
        eventually(
            &format!("the {} CRD served", r.kind),
            Duration::from_secs(20),
            || async {
                Api::<DynamicObject>::namespaced_with(client.clone(), "default", &r)
                    .list(&ListParams::default())
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }
}

/// The labels and annotations virt-controller puts on the virt-launcher
/// pod of the VM `vm` (VMI UID `vmi_uid`); `migration` (VMIM name and UID)
/// makes it a migration's target pod. `{"labels": .., "annotations": ..}`.
pub fn launcher_metadata(vm: &str, vmi_uid: &str, migration: Option<(&str, &str)>) -> Value {
    let mut labels = json!({"kubevirt.io": "virt-launcher", "vm.kubevirt.io/name": vm, "kubevirt.io/created-by": vmi_uid});
    let mut annotations = json!({"kubevirt.io/domain": vm});
    if let Some((name, uid)) = migration {
        labels["kubevirt.io/migrationJobUID"] = json!(uid);
        annotations["kubevirt.io/migrationJobName"] = json!(name);
    }
    json!({"labels": labels, "annotations": annotations})
}

/// KubeVirt's objects in one namespace.
pub struct KubeVirt {
    client: Client,
    ns: String,
}

impl KubeVirt {
    pub fn new(client: Client, ns: &str) -> KubeVirt {
        KubeVirt {
            client,
            ns: ns.to_string(),
        }
    }

    pub fn vmis(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &vmi_resource())
    }

    pub fn vmims(&self) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &vmim_resource())
    }

    /// A VMI as virt-controller leaves it once it runs on `node`: the
    /// claims in `spec.volumes`, the node in its label and
    /// `status.nodeName`. Returns its UID.
    pub async fn vmi(&self, name: &str, node: &str, claims: &[&str]) -> String {
        let volumes: Vec<Value> = claims
            .iter()
            .map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}}))
            .collect();
        let vmi = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": name, "namespace": self.ns, "labels": {"kubevirt.io/nodeName": node}},
            "spec": {"domain": {"devices": {}}, "volumes": volumes},
            "status": {"nodeName": node, "phase": "Running"}
        });
        create(&self.vmis(), vmi).await.uid().unwrap()
    }

    /// A merge patch of the VMI `name` (its status is no subresource).
    pub async fn patch_vmi(&self, name: &str, patch: &Value) {
        self.vmis()
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .unwrap();
    }

    /// A VirtualMachineInstanceMigration as `virtctl migrate` creates it,
    /// then moved to `phase` as virt-controller does. Returns its UID.
    pub async fn vmim(&self, name: &str, vmi: &str, phase: &str) -> String {
        let vmim = json!({
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstanceMigration",
            "metadata": {"name": name, "namespace": self.ns},
            "spec": {"vmiName": vmi}
        });
        let uid = create(&self.vmims(), vmim).await.uid().unwrap();
        self.vmim_phase(name, phase).await;
        uid
    }

    /// What virt-controller writes through the VMIM's status subresource.
    pub async fn vmim_phase(&self, name: &str, phase: &str) {
        self.vmims()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"phase": phase}})),
            )
            .await
            .unwrap();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crd_file_defines_the_vmi_vmim_and_vm_with_kubevirt_s_status_subresources() {
        let crds = super::crds();
        let status: Vec<(String, bool)> = crds
            .iter()
            .map(|c| {
                let v = &c.spec.versions[0];
                let sub = v.subresources.as_ref().and_then(|s| s.status.as_ref());
                (c.spec.names.kind.clone(), sub.is_some())
            })
            .collect();
        assert_eq!(
            status,
            [
                ("VirtualMachineInstance".to_string(), false),
                ("VirtualMachineInstanceMigration".to_string(), true),
                ("VirtualMachine".to_string(), true),
            ]
        );
    }
}
