//! KubeVirt awareness: which VM uses a PVC, one publish per VM at a time,
//! and whether a node is really a live-migration target.
//!
//! PVC-to-VMI resolution reads a reflector of KubeVirt's pods (those
//! labelled `kubevirt.io`), so no publish lists pods. The migration check
//! admits a second node only on KubeVirt's own evidence: a virt-launcher
//! pod on that node carrying `kubevirt.io/migrationJobUID`, or the VMI's
//! `status.migrationState` naming that node as the target of an unfinished
//! migration. A hotplug-disk pod stands for the virt-launcher pod that owns
//! it.
#![forbid(unsafe_code)]

pub mod locks;
pub mod pods;

use std::sync::Arc;

use attachment_manager::{ClusterError, MigrationCheck};
use futures::future::BoxFuture;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tracing::{debug, warn};

pub use locks::{VmiKey, VmiLocks};
pub use pods::{launcher_for, target_pod_on_node, uses_claim, vmi_name_of};

/// KubeVirt's objects as seen through a pod reflector and direct VMI reads.
#[derive(Clone)]
pub struct KubeVirt {
    client: Client,
    pods: Reader<Pod>,
    locks: VmiLocks,
}

fn vmi_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kubevirt.io", "v1", "VirtualMachineInstance"),
        "virtualmachineinstances",
    )
}

impl KubeVirt {
    /// Starts the pod reflector. The returned future drives it and must be
    /// spawned.
    pub fn start(
        client: Client,
        locks: VmiLocks,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (reader, writer) = reflector::store();
        let api: Api<Pod> = Api::all(client.clone());
        let stream = watcher(api, watcher::Config::default().labels("kubevirt.io"))
            .default_backoff()
            .modify(|pod: &mut Pod| {
                // Keep what resolution needs; drop the bulk.
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
            })
            .reflect(writer)
            .applied_objects();
        let drive = async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                if let Err(e) = event {
                    warn!(error = %e, "KubeVirt pod watch error; retrying");
                }
            }
        };
        (
            KubeVirt {
                client,
                pods: reader,
                locks,
            },
            drive,
        )
    }

    async fn ready(&self) -> Result<(), ClusterError> {
        self.pods
            .wait_until_ready()
            .await
            .map_err(|e| ClusterError(format!("KubeVirt pod watch: {e}")))
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

    async fn check(
        &self,
        pvc: Option<&(String, String)>,
        node: &str,
    ) -> Result<bool, ClusterError> {
        let Some((namespace, claim)) = pvc else {
            // Without the PVC (the provisioner did not pass
            // --extra-create-metadata) nothing can be verified: refuse.
            warn!(node, "cannot verify a migration target: the volume context has no PVC; start the external-provisioner with --extra-create-metadata");
            return Ok(false);
        };
        self.ready().await?;
        let pods = self.pods.state();
        let in_ns: Vec<Arc<Pod>> = pods
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(namespace.as_str()))
            .cloned()
            .collect();
        if target_pod_on_node(&in_ns, claim, node) {
            debug!(%namespace, %claim, node, "a migration target pod is on the node");
            return Ok(true);
        }
        // The target pod may not be visible yet (or was created without the
        // label by an older KubeVirt): ask the VMI itself.
        let launchers: Vec<Pod> = in_ns
            .iter()
            .filter(|p| uses_claim(p, claim))
            .filter_map(|p| launcher_for(p, &in_ns))
            .collect();
        let Some(vmi_name) = launchers.iter().find_map(vmi_name_of) else {
            return Ok(false);
        };
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &vmi_resource());
        let Some(vmi) = api
            .get_opt(&vmi_name)
            .await
            .map_err(|e| ClusterError(format!("get VMI {namespace}/{vmi_name}: {e}")))?
        else {
            return Ok(false);
        };
        // A launcher pod of an older VMI with the same name does not count.
        let uid = vmi.metadata.uid.as_deref();
        let owned = launchers.iter().any(|l| {
            l.metadata
                .labels
                .as_ref()
                .and_then(|m| m.get("kubevirt.io/created-by"))
                .is_none_or(|c| Some(c.as_str()) == uid)
        });
        Ok(owned && pods::migration_state_targets(&vmi.data, node))
    }
}

impl MigrationCheck for KubeVirt {
    fn is_migration_target<'a>(
        &'a self,
        pvc: Option<&'a (String, String)>,
        node: &'a str,
    ) -> BoxFuture<'a, Result<bool, ClusterError>> {
        Box::pin(self.check(pvc, node))
    }
}
