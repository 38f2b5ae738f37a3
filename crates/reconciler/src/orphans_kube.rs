//! The orphan sweep's Kubernetes side: PVs from the API server, findings as
//! Events on the controller's Pod.

use attachment_manager::lists::{self, PvFacts};
use futures::future::BoxFuture;
use kube::Client;
use routeros::ClusterId;
use tracing::warn;

use super::{OrphanReport, PvHandles, Reclaim, VolumeReferences};

/// PVs from the API server.
pub struct KubePvs {
    client: Client,
    driver: String,
}

impl KubePvs {
    pub fn new(client: Client, driver: impl Into<String>) -> Self {
        KubePvs {
            client,
            driver: driver.into(),
        }
    }
}

impl VolumeReferences for KubePvs {
    fn volume_handles(&self) -> BoxFuture<'_, Result<PvHandles, String>> {
        Box::pin(async move {
            // Page by page into the few fields needed: a whole-cluster
            // LIST decoded into full PVs ran at the same time as the
            // start-up rebuild and set the controller's memory peak.
            let mut handles = PvHandles::new();
            lists::for_each_page(&self.client, lists::PV_PATH, |page: Vec<PvFacts>| {
                handles.extend(page.into_iter().filter_map(|pv| {
                    let reclaim =
                        Reclaim::from_policy(pv.spec.persistent_volume_reclaim_policy.as_deref());
                    let csi = pv.spec.csi?;
                    (csi.driver == self.driver).then_some((csi.volume_handle, reclaim))
                }));
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(handles)
        })
    }
}

/// No reporting beyond the log.
pub struct LogOnly;

impl OrphanReport for LogOnly {
    fn warn(&self, _: &'static str, _: String) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Warning Events `regarding` the controller's own Pod.
pub struct PodEvents {
    recorder: kube::runtime::events::Recorder,
    pod: k8s_openapi::api::core::v1::ObjectReference,
}

impl PodEvents {
    /// `None` unless POD_NAME and POD_NAMESPACE name the Pod.
    pub fn from_env(client: Client) -> Option<Self> {
        let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())?;
        Some(PodEvents {
            recorder: kube::runtime::events::Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "rds-csi-controller".into(),
                    instance: Some(name.clone()),
                },
            ),
            pod: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace),
                name: Some(name),
                ..Default::default()
            },
        })
    }
}

impl OrphanReport for PodEvents {
    fn warn(&self, reason: &'static str, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ev = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: reason.into(),
                note: Some(message),
                action: "OrphanSweep".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &self.pod).await {
                warn!(error = %e, "cannot record an orphan event on the controller Pod");
            }
        })
    }
}

/// The namespace whose UID is a cluster's default identity: every cluster
/// has it, and its UID changes only when the cluster is rebuilt.
pub const IDENTITY_NAMESPACE: &str = "kube-system";

/// The default `--cluster-id`: the UID of the `kube-system` namespace.
pub async fn kube_system_uid(client: &Client) -> Result<ClusterId, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    let ns = api
        .get(IDENTITY_NAMESPACE)
        .await
        .map_err(|e| format!("read namespace {IDENTITY_NAMESPACE}: {e}"))?;
    let uid = ns
        .metadata
        .uid
        .ok_or_else(|| format!("namespace {IDENTITY_NAMESPACE} has no UID"))?;
    ClusterId::new(&uid).map_err(|e| e.to_string())
}
