//! The cluster traits over `kube`: attachment state persisted in PV
//! annotations and rebuilt from VolumeAttachments, node facts from a Node
//! reflector, and events recorded on PVCs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use futures::future::BoxFuture;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store as Reader};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use tracing::{debug, warn};

use crate::cluster::{
    ClusterError, EventKind, EventSink, NodeStatus, NodeView, Rebuilt, Store, VolumeEvent,
};
use crate::host_nqn::{nodes_sharing_host_nqn, SharedHostNqn, HOST_NQN_ANNOTATION};
use crate::lists::{self, NodeFacts, PvFacts, VaFacts};
use crate::rules::{AccessKind, Attachment, Migration, VolumeState};

pub const ANN_ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
pub const ANN_ATTACHED_AT: &str = "rds.csi.srvlab.io/attached-at";
pub const ANN_MIGRATION_SOURCE: &str = "rds.csi.srvlab.io/migration-source";
pub const ANN_MIGRATION_TARGET: &str = "rds.csi.srvlab.io/migration-target";
pub const ANN_MIGRATION_STARTED: &str = "rds.csi.srvlab.io/migration-started-at";
pub const ANN_MIGRATION_DEADLINE: &str = "rds.csi.srvlab.io/migration-deadline";
/// Set once a migration's timeout has been reported, so a restart does not
/// report it again.
pub const ANN_MIGRATION_TIMEOUT_REPORTED: &str = "rds.csi.srvlab.io/migration-timeout-reported";
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";
const MIGRATION_TIMEOUT_ATTR: &str = "migrationTimeoutSeconds";

fn err(what: &str, e: kube::Error) -> ClusterError {
    ClusterError::kube(what, e)
}

/// The annotations that describe a state; `None` values remove the key.
pub fn annotations_for(state: &VolumeState) -> BTreeMap<&'static str, Option<String>> {
    let mut a = BTreeMap::new();
    let attached = state.is_attached();
    a.insert(
        ANN_ATTACHED_NODE,
        attached.then(|| state.holders().join(",")),
    );
    a.insert(
        ANN_ATTACHED_AT,
        state
            .nodes
            .iter()
            .map(|n| n.since)
            .min()
            .map(|t| t.to_string()),
    );
    let m = state.migration.as_ref();
    a.insert(ANN_MIGRATION_SOURCE, m.map(|m| m.source.clone()));
    a.insert(ANN_MIGRATION_TARGET, m.map(|m| m.target.clone()));
    a.insert(ANN_MIGRATION_STARTED, m.map(|m| m.started.to_string()));
    a.insert(ANN_MIGRATION_DEADLINE, m.map(|m| m.deadline.to_string()));
    a.insert(
        ANN_MIGRATION_TIMEOUT_REPORTED,
        m.filter(|m| m.timeout_reported).map(|_| "true".to_string()),
    );
    a
}

/// One VolumeAttachment of a volume, as the rebuild sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenAttachment {
    pub node: String,
    /// Its creation time.
    pub since: Timestamp,
    /// `status.attached`.
    pub attached: bool,
}

/// The state a volume is rebuilt to, and what to report about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuiltState {
    pub state: VolumeState,
    /// Set when the cluster shows two nodes on a single-node volume.
    pub conflict: Option<String>,
}

/// Rebuilds one volume's state from its VolumeAttachments and its PV's
/// annotations and modes.
///
/// The holders are the nodes with an attached VolumeAttachment, and the
/// nodes the `attached-node` annotation names whose VolumeAttachment
/// exists but is not marked attached yet: the driver acknowledged that
/// publish, and the attacher may record it at any moment. A volume with no
/// such node is not attached (None). Nodes for which `fenced` is true
/// (tainted out-of-service: the machine is off) hold nothing.
pub fn rebuild_volume(
    vas: &[SeenAttachment],
    annotations: &BTreeMap<String, String>,
    rwx_block: bool,
    migration_timeout: Duration,
    fenced: &dyn Fn(&str) -> bool,
) -> Option<RebuiltState> {
    let recorded: Vec<&str> = annotations
        .get(ANN_ATTACHED_NODE)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let nodes: Vec<(String, Timestamp)> = vas
        .iter()
        .filter(|va| va.attached || recorded.contains(&va.node.as_str()))
        .filter(|va| !fenced(&va.node))
        .map(|va| (va.node.clone(), va.since))
        .collect();
    if nodes.is_empty() {
        return None;
    }
    let mut state = state_from_cluster(nodes, annotations, rwx_block, migration_timeout);
    let mut conflict = None;
    let limit = if rwx_block { 2 } else { 1 };
    if state.nodes.len() > limit {
        // Two writers on a single-node volume is not a migration: keep
        // every holder (nothing else gets in) and report it.
        conflict = Some(format!(
            "the cluster shows this {} volume attached to {} nodes {:?}; all are kept, none is released and no other node is admitted until Kubernetes detaches them",
            if rwx_block { "multi-node block" } else { "single-node" },
            state.nodes.len(),
            state.holders()
        ));
        if !rwx_block {
            state.kind = AccessKind::SingleNode;
        }
        state.migration = None;
    }
    Some(RebuiltState { state, conflict })
}

/// Rebuilds one volume's state from the nodes its VolumeAttachments name
/// (with their creation times) and its PV's annotations and modes.
pub fn state_from_cluster(
    mut nodes: Vec<(String, Timestamp)>,
    annotations: &BTreeMap<String, String>,
    rwx_block: bool,
    migration_timeout: Duration,
) -> VolumeState {
    nodes.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    nodes.dedup_by(|a, b| a.0 == b.0);
    let kind = if nodes.len() >= 2 || rwx_block {
        AccessKind::MultiNodeBlock
    } else {
        AccessKind::SingleNode
    };
    let ts = |k: &str| annotations.get(k).and_then(|v| v.parse::<Timestamp>().ok());
    let migration = if nodes.len() == 2 {
        let names: Vec<&str> = nodes.iter().map(|n| n.0.as_str()).collect();
        let recorded = match (
            annotations.get(ANN_MIGRATION_SOURCE),
            annotations.get(ANN_MIGRATION_TARGET),
            ts(ANN_MIGRATION_STARTED),
            ts(ANN_MIGRATION_DEADLINE),
        ) {
            (Some(s), Some(t), Some(started), Some(deadline))
                if names.contains(&s.as_str()) && names.contains(&t.as_str()) =>
            {
                Some(Migration {
                    source: s.clone(),
                    target: t.clone(),
                    started,
                    deadline,
                    timeout_reported: annotations
                        .get(ANN_MIGRATION_TIMEOUT_REPORTED)
                        .is_some_and(|v| v == "true"),
                })
            }
            _ => None,
        };
        // Without a record, the later attachment is the target and the
        // window is taken to have started then: the deadline still holds.
        Some(recorded.unwrap_or_else(|| {
            let started = nodes[1].1;
            Migration {
                source: nodes[0].0.clone(),
                target: nodes[1].0.clone(),
                started,
                deadline: jiff::SignedDuration::try_from(migration_timeout)
                    .ok()
                    .and_then(|d| started.checked_add(d).ok())
                    .unwrap_or(Timestamp::MAX),
                timeout_reported: false,
            }
        }))
    } else {
        None
    };
    VolumeState {
        kind,
        nodes: nodes
            .into_iter()
            .map(|(node, since)| Attachment { node, since })
            .collect(),
        migration,
        last_detach: None,
    }
}

/// Persists to PV annotations; rebuilds from VolumeAttachments.
pub struct KubeStore {
    client: Client,
    driver: String,
    default_migration_timeout: Duration,
    /// volume ID -> PV name, learned at rebuild and on lookups.
    pv_names: DashMap<String, String>,
}

impl KubeStore {
    pub fn new(
        client: Client,
        driver: impl Into<String>,
        default_migration_timeout: Duration,
    ) -> Self {
        KubeStore {
            client,
            driver: driver.into(),
            default_migration_timeout,
            pv_names: DashMap::new(),
        }
    }

    fn handle_of<'a>(&self, pv: &'a PersistentVolume) -> Option<&'a str> {
        let csi = pv.spec.as_ref()?.csi.as_ref()?;
        (csi.driver == self.driver).then_some(csi.volume_handle.as_str())
    }

    /// The PV of a volume: the provisioner names PVs after the volume, so
    /// that is tried first; otherwise the PVs are searched by handle.
    async fn pv_name(&self, volume: &str) -> Result<Option<String>, ClusterError> {
        if let Some(n) = self.pv_names.get(volume) {
            return Ok(Some(n.clone()));
        }
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        if let Some(pv) = api.get_opt(volume).await.map_err(|e| err("get PV", e))? {
            if self.handle_of(&pv) == Some(volume) {
                self.pv_names.insert(volume.to_string(), volume.to_string());
                return Ok(Some(volume.to_string()));
            }
        }
        let mut found = None;
        lists::for_each_page(&self.client, lists::PV_PATH, |page: Vec<PvFacts>| {
            if found.is_some() {
                return;
            }
            found = page
                .into_iter()
                .find(|pv| pv.handle_for(&self.driver) == Some(volume))
                .map(|pv| pv.metadata.name);
        })
        .await
        .map_err(|e| err("list PVs", e))?;
        if let Some(name) = found {
            self.pv_names.insert(volume.to_string(), name.clone());
            return Ok(Some(name));
        }
        Ok(None)
    }

    async fn save_inner(&self, volume: &str, state: &VolumeState) -> Result<(), ClusterError> {
        let Some(pv) = self.pv_name(volume).await? else {
            // A volume without a PV is not managed through Kubernetes (a
            // conformance run, a hand-made volume): VolumeAttachments stay
            // the source of truth and there is nothing to annotate.
            debug!(
                volume,
                "no PV for this volume; attachment state not annotated"
            );
            return Ok(());
        };
        let annotations: serde_json::Map<String, serde_json::Value> = annotations_for(state)
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    v.map_or(serde_json::Value::Null, serde_json::Value::String),
                )
            })
            .collect();
        let patch = serde_json::json!({ "metadata": { "annotations": annotations } });
        let request = kube::core::Request::new(lists::PV_PATH)
            .patch(&pv, &PatchParams::default(), &Patch::Merge(&patch))
            .map_err(|e| err("annotate PV", kube::Error::BuildRequest(e)))?;
        // The API server answers with the whole PV; only the status code
        // matters here, so the body is skipped rather than decoded into a
        // `PersistentVolume` on every publish and unpublish.
        match self.client.request::<serde::de::IgnoredAny>(request).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => {
                self.pv_names.remove(volume);
                Ok(())
            }
            Err(e) => Err(err("annotate PV", e)),
        }
    }

    async fn load_inner(&self) -> Result<Vec<Rebuilt>, ClusterError> {
        // Page by page, one kind after the other, each page decoded into
        // the few fields used (`lists`) and folded into compact facts:
        // holding every PV and VolumeAttachment of a large cluster at once,
        // or decoding them into full objects, left the allocator with far
        // more memory than the state needs.
        let mut fenced: HashSet<String> = HashSet::new();
        lists::for_each_page(&self.client, lists::NODE_PATH, |page: Vec<NodeFacts>| {
            fenced.extend(
                page.into_iter()
                    .filter(|n| n.has_taint(OUT_OF_SERVICE_TAINT))
                    .map(|n| n.metadata.name),
            );
        })
        .await
        .map_err(|e| err("list Nodes", e))?;
        let mut by_pv: HashMap<String, Vec<SeenAttachment>> = HashMap::new();
        self.for_each_attachment(|pv, va| {
            let since = va
                .metadata
                .creation_timestamp
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now);
            by_pv.entry(pv).or_default().push(SeenAttachment {
                node: va.spec.node_name,
                since,
                attached: va.status.is_some_and(|s| s.attached),
            });
        })
        .await?;
        let mut out = Vec::with_capacity(by_pv.len());
        lists::for_each_page(&self.client, lists::PV_PATH, |page: Vec<PvFacts>| {
            for pv in page {
                let Some(handle) = pv.handle_for(&self.driver).map(str::to_string) else {
                    continue;
                };
                let name = pv.metadata.name;
                // Every PV of the driver, attached or not: its first
                // publish then patches it without a GET first.
                self.pv_names.insert(handle.clone(), name.clone());
                let Some(vas) = by_pv.remove(&name) else {
                    continue;
                };
                let spec = pv.spec;
                let rwx_block = spec.volume_mode.as_deref() == Some("Block")
                    && spec
                        .access_modes
                        .as_ref()
                        .is_some_and(|m| m.iter().any(|m| m == "ReadWriteMany"));
                let timeout = spec
                    .csi
                    .as_ref()
                    .and_then(|c| c.volume_attributes.as_ref())
                    .and_then(|a| a.get(MIGRATION_TIMEOUT_ATTR))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(Duration::from_secs)
                    .unwrap_or(self.default_migration_timeout);
                let annotations = pv.metadata.annotations.unwrap_or_default();
                let Some(rebuilt) = rebuild_volume(&vas, &annotations, rwx_block, timeout, &|n| {
                    fenced.contains(n)
                }) else {
                    continue;
                };
                let pvc = spec.claim_ref.and_then(|c| Some((c.namespace?, c.name?)));
                out.push(Rebuilt {
                    volume: handle,
                    state: rebuilt.state,
                    pvc,
                    conflict: rebuilt.conflict,
                });
            }
        })
        .await
        .map_err(|e| err("list PVs", e))?;
        by_pv.retain(|_, vas| vas.iter().any(|va| va.attached));
        for pv_name in by_pv.keys() {
            warn!(pv = %pv_name, "an attached VolumeAttachment names a PV that does not exist or is not ours; skipped");
        }
        Ok(out)
    }
}

impl KubeStore {
    async fn without_attachment(
        &self,
        holders: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ClusterError> {
        // Holders by PV name; a volume without a PV is not managed through
        // Kubernetes and is never reported.
        let mut wanted: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (volume, node) in holders {
            if let Some(pv) = self.pv_name(volume).await? {
                wanted
                    .entry(pv)
                    .or_default()
                    .push((volume.clone(), node.clone()));
            }
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        self.for_each_attachment(|pv, va| {
            if let Some(list) = wanted.get_mut(&pv) {
                list.retain(|(_, node)| *node != va.spec.node_name);
            }
        })
        .await?;
        Ok(wanted.into_values().flatten().collect())
    }

    /// Every VolumeAttachment of this driver with its PV's name, read page
    /// by page.
    async fn for_each_attachment(
        &self,
        mut f: impl FnMut(String, VaFacts),
    ) -> Result<(), ClusterError> {
        lists::for_each_page(&self.client, lists::VA_PATH, |page: Vec<VaFacts>| {
            for mut va in page {
                if va.spec.attacher != self.driver {
                    continue;
                }
                if let Some(pv) = va.spec.source.persistent_volume_name.take() {
                    f(pv, va);
                }
            }
        })
        .await
        .map_err(|e| err("list VolumeAttachments", e))
    }
}

impl Store for KubeStore {
    fn holders_without_attachment<'a>(
        &'a self,
        holders: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ClusterError>> {
        Box::pin(self.without_attachment(holders))
    }

    fn save<'a>(
        &'a self,
        volume: &'a str,
        state: &'a VolumeState,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        Box::pin(self.save_inner(volume, state))
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Rebuilt>, ClusterError>> {
        Box::pin(self.load_inner())
    }
}

/// Whether a Node carries the `node.kubernetes.io/out-of-service` taint: an
/// operator's statement that the machine is off.
pub fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT))
}

/// Keeps of a Node only what the checks read: names, annotations (the host
/// NQN), taints and the Ready condition; drops the bulk (images,
/// addresses, capacity, ...).
fn strip_node(node: &mut Node) {
    node.metadata.managed_fields = None;
    if let Some(status) = node.status.as_mut() {
        let conditions = status
            .conditions
            .take()
            .map(|c| c.into_iter().filter(|c| c.type_ == "Ready").collect());
        *status = Default::default();
        status.conditions = conditions;
    }
}

/// Polls a watch stream to its end. The watcher retries failures with
/// backoff itself; each is logged with `message`.
pub async fn drive_watch<T, E: std::fmt::Display>(
    stream: impl futures::Stream<Item = Result<T, E>>,
    message: &str,
) {
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        if let Err(e) = event {
            warn!(error = %e, "{message}");
        }
    }
}

/// Node facts from a reflector kept in sync by a watch.
#[derive(Clone)]
pub struct KubeNodes {
    reader: Reader<Node>,
}

impl KubeNodes {
    /// Starts watching Nodes. The returned future drives the watch and
    /// must be polled (spawned) for the view to stay current.
    pub fn start(client: Client) -> (Self, impl std::future::Future<Output = ()> + Send + 'static) {
        let (reader, writer) = reflector::store();
        let api: Api<Node> = Api::all(client);
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(strip_node)
            .reflect(writer)
            .applied_objects();
        let drive = drive_watch(stream, "Node watch error; retrying");
        (KubeNodes { reader }, drive)
    }

    pub async fn wait_ready(&self) -> Result<(), ClusterError> {
        self.reader
            .wait_until_ready()
            .await
            .map_err(|e| ClusterError::not_ready("Node watch", e))
    }

    pub fn status_now(&self, node: &str) -> NodeStatus {
        match self.reader.get(&ObjectRef::new(node)) {
            None => NodeStatus::Missing,
            Some(n) if out_of_service(&n) => NodeStatus::OutOfService,
            Some(_) => NodeStatus::Present,
        }
    }

    /// Since when the node has been not Ready (None while Ready, or when
    /// no kubelet has ever reported: a node without a Ready condition is
    /// not judged).
    pub fn not_ready_since(&self, node: &str) -> Option<Timestamp> {
        let n = self.reader.get(&ObjectRef::new(node))?;
        let ready = n
            .status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find(|c| c.type_ == "Ready")?;
        if ready.status == "True" {
            return None;
        }
        Some(
            ready
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Timestamp::now),
        )
    }

    pub fn reader(&self) -> &Reader<Node> {
        &self.reader
    }
}

impl NodeView for KubeNodes {
    fn node_status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeStatus, ClusterError>> {
        Box::pin(async move {
            self.wait_ready().await?;
            Ok(self.status_now(node))
        })
    }

    fn sharing_host_nqn<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<SharedHostNqn>, ClusterError>> {
        Box::pin(async move {
            self.wait_ready().await?;
            let nodes = self.reader.state();
            Ok(nodes_sharing_host_nqn(
                node,
                nodes.iter().map(|n| {
                    (
                        n.metadata.name.as_deref().unwrap_or_default(),
                        n.metadata
                            .annotations
                            .as_ref()
                            .and_then(|a| a.get(HOST_NQN_ANNOTATION))
                            .map(String::as_str),
                    )
                }),
            ))
        })
    }

    fn host_nqn<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        Box::pin(async move {
            self.wait_ready().await?;
            let nodes = self.reader.state();
            Ok(nodes
                .iter()
                .find(|n| n.metadata.name.as_deref() == Some(node))
                .and_then(|n| n.metadata.annotations.as_ref()?.get(HOST_NQN_ANNOTATION))
                .map(|nqn| nqn.trim().to_string())
                .filter(|nqn| !nqn.is_empty()))
        })
    }
}

/// Records events on the PVC named in the volume context.
pub struct KubeEvents {
    client: Client,
    recorder: Recorder,
    action: String,
}

/// The API server refuses an event note longer than this (bytes).
const NOTE_LIMIT: usize = 1024;

/// `s` cut to at most `limit` bytes, on a character boundary.
fn truncated(mut s: String, limit: usize) -> String {
    if s.len() > limit {
        let mut end = limit.saturating_sub('…'.len_utf8());
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl KubeEvents {
    /// `controller` and `instance` are the event's reporting controller and
    /// instance (the API server limits the instance to 128 characters).
    pub fn new(client: Client, controller: impl Into<String>, instance: Option<String>) -> Self {
        KubeEvents {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: controller.into(),
                    instance: instance.map(|i| truncated(i, 128)),
                },
            ),
            client,
            action: "Attach".into(),
        }
    }

    /// The events' action (what the reporter was doing); `Attach` unless set.
    pub fn with_action(mut self, action: impl Into<String>) -> Self {
        self.action = action.into();
        self
    }

    /// The PVC as an event's `regarding`, with its UID when it can be read
    /// (`kubectl describe pvc` matches events by UID). None when it is gone.
    async fn regarding(&self, namespace: String, name: String) -> Option<ObjectReference> {
        let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
            Api::namespaced(self.client.clone(), &namespace);
        let uid = match api.get_opt(&name).await {
            Ok(Some(pvc)) => pvc.metadata.uid,
            Ok(None) => {
                debug!(
                    namespace,
                    name, "the PVC of an event no longer exists; not recorded"
                );
                return None;
            }
            Err(e) => {
                debug!(namespace, name, error = %e, "cannot read the PVC of an event; recording it by name only");
                None
            }
        };
        Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: Some(namespace),
            name: Some(name),
            uid,
            ..Default::default()
        })
    }
}

impl EventSink for KubeEvents {
    fn emit(&self, event: VolumeEvent) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            event.log();
            let Some((namespace, name)) = event.pvc else {
                return;
            };
            let Some(reference) = self.regarding(namespace, name).await else {
                return;
            };
            let ev = Event {
                type_: match event.kind {
                    EventKind::Normal => EventType::Normal,
                    EventKind::Warning => EventType::Warning,
                },
                reason: event.reason.into(),
                note: Some(truncated(event.message, NOTE_LIMIT)),
                action: self.action.clone(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &reference).await {
                warn!(error = %e, reason = ev.reason, "cannot record an event on the PVC");
            }
        })
    }
}

/// Shared handle type for wiring.
pub type SharedNodes = Arc<KubeNodes>;

#[cfg(test)]
#[path = "kube_store_tests.rs"]
mod tests;
