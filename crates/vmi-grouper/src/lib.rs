//! KubeVirt awareness: which VM uses a PVC, one publish per VM at a time,
//! and whether a node is really a live-migration target.
//!
//! PVC-to-VMI resolution reads a reflector of KubeVirt's pods (those
//! labelled `kubevirt.io`), so no publish lists pods. The migration check
//! admits a second node only on evidence KubeVirt itself writes: a
//! VirtualMachineInstanceMigration in progress (read from a reflector) of
//! the VMI that uses the claim and runs on the holder, tied by UIDs to the
//! target pod or to the VMI's `status.migrationState` (one VMI GET per
//! candidate migration). Pod labels alone never admit; the trust model is
//! written out in [`migration`]. A hotplug-disk pod stands for the
//! virt-launcher pod that owns it.
#![forbid(unsafe_code)]

pub mod locks;
pub mod migration;
pub mod pods;

use std::sync::Arc;

use attachment_manager::kube_store::drive_watch;
use attachment_manager::{
    ClusterError, MigrationCheck, MigrationEvidence, MigrationQuery, MigrationVerdict,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, store::Writer, Store as Reader};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tracing::{debug, warn};

pub use locks::{VmiKey, VmiLocks};
pub use migration::Vmim;
pub use pods::{launcher_for, uses_claim, vmi_name_of};

/// How long a publish waits for the first list of VMIMs before answering
/// UNAVAILABLE (the attacher retries).
const VMIM_READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// KubeVirt's objects as seen through pod and VMIM reflectors and direct
/// VMI reads.
#[derive(Clone)]
pub struct KubeVirt {
    client: Client,
    pods: Reader<Pod>,
    vmims: Reader<DynamicObject>,
    locks: VmiLocks,
}

fn vmim_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstanceMigration"),
        "virtualmachineinstancemigrations",
    )
}

/// Keeps of a pod what resolution needs; drops the bulk.
fn strip_pod(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(spec) = pod.spec.as_mut() {
        spec.containers.clear();
        spec.init_containers = None;
    }
    if let Some(status) = pod.status.as_mut() {
        status.container_statuses = None;
        status.init_container_statuses = None;
        status.conditions = None;
    }
}

/// Keeps of a VMIM only what the check reads.
fn strip_vmim(o: &mut DynamicObject) {
    o.metadata.managed_fields = None;
    o.metadata.annotations = None;
    o.metadata.labels = None;
    let vmi_name = o.data.pointer("/spec/vmiName").cloned();
    let phase = o.data.pointer("/status/phase").cloned();
    o.data = serde_json::json!({
        "spec": {"vmiName": vmi_name},
        "status": {"phase": phase},
    });
}

fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    )
}

impl KubeVirt {
    /// Starts the pod and VMIM reflectors. The returned future drives them
    /// and must be spawned.
    pub fn start(
        client: Client,
        locks: VmiLocks,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let vmim_writer = Writer::new(vmim_resource());
        let vmims = vmim_writer.as_reader();
        let vmim_stream = watcher(
            Api::<DynamicObject>::all_with(client.clone(), &vmim_resource()),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(strip_vmim)
        .reflect(vmim_writer)
        .applied_objects();
        let (reader, writer) = reflector::store();
        let api: Api<Pod> = Api::all(client.clone());
        let stream = watcher(api, watcher::Config::default().labels("kubevirt.io"))
            .default_backoff()
            .modify(strip_pod)
            .reflect(writer)
            .applied_objects();
        let drive_pods = drive_watch(stream, "KubeVirt pod watch error; retrying");
        let drive_vmims = drive_watch(
            vmim_stream,
            "VirtualMachineInstanceMigration watch error (is KubeVirt installed?); retrying",
        );
        let drive = async move {
            futures::join!(drive_pods, drive_vmims);
        };
        (
            KubeVirt {
                client,
                pods: reader,
                vmims,
                locks,
            },
            drive,
        )
    }

    async fn ready(&self) -> Result<(), ClusterError> {
        self.pods
            .wait_until_ready()
            .await
            .map_err(|e| ClusterError::not_ready("KubeVirt pod watch", e))
    }

    /// The VMI using a PVC, if a KubeVirt pod in the namespace uses it.
    pub async fn vmi_for_pvc(
        &self,
        namespace: &str,
        claim: &str,
    ) -> Result<Option<VmiKey>, ClusterError> {
        self.ready().await?;
        let pods = self.pods.state();
        Ok(pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace) && uses_claim(p, claim))
            .filter_map(|p| launcher_for(p, &pods))
            .find_map(|l| vmi_name_of(&l))
            .map(|name| VmiKey {
                namespace: namespace.to_string(),
                name,
            }))
    }

    pub fn locks(&self) -> &VmiLocks {
        &self.locks
    }

    /// The VMIMs of a namespace, from the reflector.
    async fn vmims_in(&self, namespace: &str) -> Result<Vec<Vmim>, ClusterError> {
        tokio::time::timeout(VMIM_READY_TIMEOUT, self.vmims.wait_until_ready())
            .await
            .map_err(|_| {
                ClusterError::not_ready(
                    "VirtualMachineInstanceMigration watch",
                    "no list after 5 s (is KubeVirt installed, and may the controller list and watch them?)",
                )
            })?
            .map_err(|e| ClusterError::not_ready("VirtualMachineInstanceMigration watch", e))?;
        Ok(self
            .vmims
            .state()
            .iter()
            .filter(|o| o.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|o| {
                Vmim::from_json(
                    namespace,
                    o.metadata.name.as_deref()?,
                    o.metadata.uid.as_deref()?,
                    &o.data,
                )
            })
            .collect())
    }

    async fn check(&self, query: MigrationQuery<'_>) -> Result<MigrationEvidence, ClusterError> {
        let MigrationQuery { pvc, node, source } = query;
        let Some((namespace, claim)) = pvc else {
            // Without the PVC (the provisioner did not pass
            // --extra-create-metadata) nothing can be verified: refuse.
            warn!(node, "cannot verify a migration target: the volume context has no PVC; start the external-provisioner with --extra-create-metadata");
            return Ok(MigrationEvidence::Unverified(
                "the volume context names no PVC (run the external-provisioner with --extra-create-metadata)".into(),
            ));
        };
        self.ready().await?;
        let in_ns: Vec<Arc<Pod>> = self
            .pods
            .state()
            .into_iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .collect();
        let vmims = self.vmims_in(namespace).await?;
        let candidates = migration::candidates(&in_ns, claim, node, &vmims);
        if candidates.is_empty() {
            return Ok(MigrationEvidence::Unverified(format!(
                "no VirtualMachineInstanceMigration names the VM using claim {namespace}/{claim}"
            )));
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &vmi_resource());
        let mut why = Vec::new();
        for vmim in candidates {
            // A finished migration is judged without its VMI: only one in
            // progress costs a GET.
            if !vmim.in_progress() {
                if let Err(w) = migration::judge(&in_ns, claim, node, source, vmim, None) {
                    why.push(w);
                }
                continue;
            }
            let vmi = api.get_opt(&vmim.vmi_name).await.map_err(|e| {
                ClusterError::kube(format!("get VMI {namespace}/{}", vmim.vmi_name), e)
            })?;
            let data = vmi.as_ref().map(|o| {
                let mut v = o.data.clone();
                v["metadata"] = serde_json::json!({"uid": o.metadata.uid});
                v
            });
            let view = vmi
                .as_ref()
                .zip(data.as_ref())
                .map(|(o, data)| migration::Vmi {
                    uid: o.metadata.uid.as_deref().unwrap_or_default(),
                    data,
                });
            match migration::judge(&in_ns, claim, node, source, vmim, view.as_ref()) {
                Ok(how) => {
                    debug!(%namespace, %claim, node, %how, "verified migration target");
                    return Ok(MigrationEvidence::Verified(how));
                }
                Err(w) => why.push(w),
            }
        }
        Ok(MigrationEvidence::Unverified(why.join("; ")))
    }
}

impl MigrationCheck for KubeVirt {
    fn verify_target<'a>(&'a self, query: MigrationQuery<'a>) -> MigrationVerdict<'a> {
        Box::pin(self.check(query))
    }
}
