//! Paged LISTs decoded into the few fields the controller reads.
//!
//! A LIST of every PV or VolumeAttachment in a cluster decoded into
//! `k8s-openapi` types allocates every field of every object (managed
//! fields, labels, the whole spec) only to throw nearly all of it away.
//! Here each page (500 objects) is decoded straight into small structs:
//! serde skips the fields they do not name without allocating them, and a
//! page is handed to the caller and dropped before the next is fetched.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// Objects per LIST page.
pub const PAGE: u32 = 500;

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default)]
    metadata: PageMeta,
    /// `null` in an empty list from some API servers.
    #[serde(default = "none")]
    items: Option<Vec<T>>,
}

fn none<T>() -> Option<T> {
    None
}

#[derive(Deserialize, Default)]
struct PageMeta {
    #[serde(rename = "continue", default)]
    continue_: Option<String>,
}

/// Object metadata: only what the controller reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
}

/// A PersistentVolume, reduced to what the rebuild and the PV lookups use.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvFacts {
    #[serde(default)]
    pub metadata: PvMeta,
    #[serde(default)]
    pub spec: PvSpec,
}

#[derive(Debug, Default, Deserialize)]
pub struct PvMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvSpec {
    #[serde(default)]
    pub csi: Option<PvCsi>,
    #[serde(default)]
    pub volume_mode: Option<String>,
    #[serde(default)]
    pub access_modes: Option<Vec<String>>,
    #[serde(default)]
    pub claim_ref: Option<ClaimRef>,
    /// `Retain`, `Delete` (or the deprecated `Recycle`); the orphan sweep
    /// records Retain on the disk while the PV exists.
    #[serde(default)]
    pub persistent_volume_reclaim_policy: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PvCsi {
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub volume_handle: String,
    #[serde(default)]
    pub volume_attributes: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ClaimRef {
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
}

impl PvFacts {
    /// The volume handle, if the PV belongs to `driver`.
    pub fn handle_for(&self, driver: &str) -> Option<&str> {
        let csi = self.spec.csi.as_ref()?;
        (csi.driver == driver).then_some(csi.volume_handle.as_str())
    }
}

/// A VolumeAttachment, reduced to what the rebuild uses.
#[derive(Debug, Default, Deserialize)]
pub struct VaFacts {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: VaSpec,
    #[serde(default)]
    pub status: Option<VaStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaSpec {
    #[serde(default)]
    pub attacher: String,
    #[serde(default)]
    pub node_name: String,
    #[serde(default)]
    pub source: VaSource,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VaSource {
    #[serde(default)]
    pub persistent_volume_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct VaStatus {
    #[serde(default)]
    pub attached: bool,
}

/// A Node, reduced to its name and taint keys.
#[derive(Debug, Default, Deserialize)]
pub struct NodeFacts {
    #[serde(default)]
    pub metadata: Meta,
    #[serde(default)]
    pub spec: NodeSpec,
}

#[derive(Debug, Default, Deserialize)]
pub struct NodeSpec {
    #[serde(default)]
    pub taints: Option<Vec<TaintKey>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TaintKey {
    #[serde(default)]
    pub key: String,
}

impl NodeFacts {
    pub fn has_taint(&self, key: &str) -> bool {
        self.spec
            .taints
            .as_ref()
            .is_some_and(|t| t.iter().any(|t| t.key == key))
    }
}

pub const NODE_PATH: &str = "/api/v1/nodes";
pub const PV_PATH: &str = "/api/v1/persistentvolumes";
pub const VA_PATH: &str = "/apis/storage.k8s.io/v1/volumeattachments";

/// Lists every object under `path` (a cluster-scoped collection), `PAGE`
/// at a time, decoding each page into `T` and handing it to `f` before
/// fetching the next.
pub async fn for_each_page<T, F>(client: &Client, path: &str, f: F) -> Result<(), kube::Error>
where
    T: DeserializeOwned,
    F: FnMut(Vec<T>),
{
    for_each_page_of(client, path, PAGE, f).await
}

/// [`for_each_page`] with pages of `limit` objects.
pub async fn for_each_page_of<T, F>(
    client: &Client,
    path: &str,
    limit: u32,
    mut f: F,
) -> Result<(), kube::Error>
where
    T: DeserializeOwned,
    F: FnMut(Vec<T>),
{
    let request = kube::core::Request::new(path);
    let mut params = ListParams::default().limit(limit);
    loop {
        let page: Page<T> = client
            .request(request.list(&params).map_err(kube::Error::BuildRequest)?)
            .await?;
        let next = page.metadata.continue_.filter(|c| !c.is_empty());
        f(page.items.unwrap_or_default());
        match next {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pv_decodes_into_its_facts_and_skips_the_rest() {
        let pv: PvFacts = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv1", "uid": "u", "managedFields": [{"manager": "x"}],
                         "annotations": {"a": "b"}, "labels": {"l": "v"}},
            "spec": {"capacity": {"storage": "1Gi"}, "volumeMode": "Block",
                     "accessModes": ["ReadWriteMany"], "persistentVolumeReclaimPolicy": "Retain",
                     "claimRef": {"kind": "PersistentVolumeClaim", "namespace": "ns", "name": "c"},
                     "csi": {"driver": "d", "volumeHandle": "h", "volumeAttributes": {"k": "v"},
                             "fsType": "ext4"}},
            "status": {"phase": "Bound"}
        }))
        .unwrap();
        assert_eq!(pv.metadata.name, "pv1");
        assert_eq!(pv.handle_for("d"), Some("h"));
        assert_eq!(pv.handle_for("other"), None);
        assert_eq!(pv.spec.volume_mode.as_deref(), Some("Block"));
        assert_eq!(
            pv.spec.persistent_volume_reclaim_policy.as_deref(),
            Some("Retain")
        );
        assert_eq!(pv.spec.claim_ref.unwrap().name.as_deref(), Some("c"));
        assert_eq!(pv.metadata.annotations.unwrap()["a"], "b");
    }

    #[test]
    fn a_pv_without_csi_or_spec_still_decodes() {
        let pv: PvFacts =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "nfs"}})).unwrap();
        assert_eq!(pv.handle_for("d"), None);
    }

    #[test]
    fn a_volume_attachment_decodes_into_its_facts() {
        let va: VaFacts = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "va1", "creationTimestamp": "2026-01-02T03:04:05Z"},
            "spec": {"attacher": "d", "nodeName": "n1",
                     "source": {"persistentVolumeName": "pv1"}},
            "status": {"attached": true, "attachmentMetadata": {"x": "y"}}
        }))
        .unwrap();
        assert_eq!(va.spec.attacher, "d");
        assert_eq!(va.spec.node_name, "n1");
        assert_eq!(
            va.spec.source.persistent_volume_name.as_deref(),
            Some("pv1")
        );
        assert!(va.status.unwrap().attached);
        assert!(va.metadata.creation_timestamp.is_some());
    }

    #[test]
    fn a_page_reads_its_continue_token() {
        let p: Page<VaFacts> = serde_json::from_value(serde_json::json!({
            "kind": "VolumeAttachmentList", "metadata": {"continue": "abc", "resourceVersion": "1"},
            "items": []
        }))
        .unwrap();
        assert_eq!(p.metadata.continue_.as_deref(), Some("abc"));
        let p: Page<VaFacts> =
            serde_json::from_value(serde_json::json!({"metadata": {}, "items": null})).unwrap();
        assert!(p.items.is_none() && p.metadata.continue_.is_none());
    }
}
