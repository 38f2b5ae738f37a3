//! What the attachment manager needs from the cluster, as small traits.
//!
//! Implemented once over `kube` (`kube_store`) and in memory here, for
//! unit tests and for the standalone mode that runs without Kubernetes.
//! The traits return boxed futures so they can be used as trait objects.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use futures::future::BoxFuture;

use crate::rules::VolumeState;

/// A failure to read or write the cluster's state, with what was being
/// done. An answer of the API server keeps its HTTP status, so callers can
/// tell a conflict (409) from an outage (503) without reading text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The API server answered with an error status.
    #[error("{what}: the API server answered {code} {reason}: {message}")]
    Api {
        what: String,
        code: u16,
        reason: String,
        message: String,
    },
    /// The request did not get an answer (connection, TLS, timeout, or a
    /// reply that could not be decoded).
    #[error("{what}: {message}")]
    Request { what: String, message: String },
    /// A watch-backed cache has not listed its objects yet.
    #[error("{what}: not ready yet: {message}")]
    NotReady { what: String, message: String },
    /// A failure made on purpose by a test double.
    #[error("{0}")]
    Injected(String),
}

impl ClusterError {
    /// Classifies a `kube` error: an API status keeps its code and reason.
    pub fn kube(what: impl Into<String>, e: kube::Error) -> Self {
        match e {
            kube::Error::Api(s) => ClusterError::Api {
                what: what.into(),
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            other => ClusterError::Request {
                what: what.into(),
                message: other.to_string(),
            },
        }
    }

    /// A watch-backed cache that is not ready.
    pub fn not_ready(what: impl Into<String>, why: impl std::fmt::Display) -> Self {
        ClusterError::NotReady {
            what: what.into(),
            message: why.to_string(),
        }
    }

    /// The HTTP status of an API answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClusterError::Api { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What the cluster says about a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    Present,
    /// No Node object: deleted, or never existed.
    Missing,
    /// Carries the `node.kubernetes.io/out-of-service` taint (non-graceful
    /// node shutdown).
    OutOfService,
}

pub trait NodeView: Send + Sync {
    fn node_status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeStatus, ClusterError>>;

    /// The other nodes that report the same NVMe host NQN as `node` (see
    /// [`crate::host_nqn`]). `None` where host NQNs are not known.
    fn sharing_host_nqn<'a>(
        &'a self,
        _node: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::host_nqn::SharedHostNqn>, ClusterError>> {
        Box::pin(async { Ok(None) })
    }

    /// The NVMe host NQN `node` reports (see [`crate::host_nqn`]); `None`
    /// when it reports none or host NQNs are not known.
    fn host_nqn<'a>(
        &'a self,
        _node: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        Box::pin(async { Ok(None) })
    }
}

/// One volume's state as rebuilt from the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebuilt {
    pub volume: String,
    pub state: VolumeState,
    /// `(namespace, name)` of its PVC, so events after a restart still
    /// reach the right object.
    pub pvc: Option<(String, String)>,
    /// Set when the cluster shows more than the rules allow (a
    /// single-node volume attached to two nodes): every holder is kept so
    /// nothing else gets in, and this says what to report.
    pub conflict: Option<String>,
}

/// Where attachment state is persisted and rebuilt from.
pub trait Store: Send + Sync {
    /// Persists one volume's state; an unattached state clears it.
    fn save<'a>(
        &'a self,
        volume: &'a str,
        state: &'a VolumeState,
    ) -> BoxFuture<'a, Result<(), ClusterError>>;
    /// Every volume the cluster says is attached, with its state.
    fn load(&self) -> BoxFuture<'_, Result<Vec<Rebuilt>, ClusterError>>;
    /// Of the `(volume, node)` holders given, those for which the cluster
    /// certainly keeps no VolumeAttachment any more (attached or not), read
    /// fresh. A holder whose volume has no PersistentVolume, or a store
    /// that does not know VolumeAttachments, reports nothing: only a
    /// definite absence may release a holder.
    fn holders_without_attachment<'a>(
        &'a self,
        holders: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ClusterError>>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Normal,
    Warning,
}

/// An event about a volume, recorded on its PVC when it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeEvent {
    pub volume: String,
    /// `(namespace, name)` of the PVC, from the volume context.
    pub pvc: Option<(String, String)>,
    pub kind: EventKind,
    pub reason: &'static str,
    pub message: String,
}

impl VolumeEvent {
    /// Writes the event to the log, at warn for warnings: every sink logs
    /// what it records, and a sink that cannot record still logs.
    pub fn log(&self) {
        match self.kind {
            EventKind::Normal => {
                tracing::info!(volume = %self.volume, reason = self.reason, "{}", self.message)
            }
            EventKind::Warning => {
                tracing::warn!(volume = %self.volume, reason = self.reason, "{}", self.message)
            }
        }
    }
}

pub trait EventSink: Send + Sync {
    fn emit(&self, event: VolumeEvent) -> BoxFuture<'_, ()>;
}

/// Nodes from a fixed list (standalone mode, tests). An empty list means
/// every node is present.
#[derive(Debug, Default)]
pub struct StaticNodes {
    nodes: Mutex<HashMap<String, NodeStatus>>,
    host_nqns: Mutex<HashMap<String, String>>,
}

impl StaticNodes {
    pub fn new(nodes: impl IntoIterator<Item = String>) -> Self {
        StaticNodes {
            nodes: Mutex::new(
                nodes
                    .into_iter()
                    .map(|n| (n, NodeStatus::Present))
                    .collect(),
            ),
            host_nqns: Mutex::default(),
        }
    }

    /// Records the host NQN a node reports (tests).
    pub fn set_host_nqn(&self, node: &str, nqn: &str) {
        self.host_nqns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), nqn.to_string());
    }

    pub fn set(&self, node: &str, status: NodeStatus) {
        self.nodes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), status);
    }
}

impl NodeView for StaticNodes {
    fn node_status<'a>(&'a self, node: &'a str) -> BoxFuture<'a, Result<NodeStatus, ClusterError>> {
        let map = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let status = if map.is_empty() {
            NodeStatus::Present
        } else {
            map.get(node).copied().unwrap_or(NodeStatus::Missing)
        };
        Box::pin(async move { Ok(status) })
    }

    fn sharing_host_nqn<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<crate::host_nqn::SharedHostNqn>, ClusterError>> {
        let map = self.host_nqns.lock().unwrap_or_else(|p| p.into_inner());
        let shared = crate::host_nqn::nodes_sharing_host_nqn(
            node,
            map.iter().map(|(n, q)| (n.as_str(), Some(q.as_str()))),
        );
        Box::pin(async move { Ok(shared) })
    }

    fn host_nqn<'a>(
        &'a self,
        node: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ClusterError>> {
        let map = self.host_nqns.lock().unwrap_or_else(|p| p.into_inner());
        let nqn = map.get(node).cloned();
        Box::pin(async move { Ok(nqn) })
    }
}

/// Keeps nothing: state lives only in the manager's memory (standalone
/// mode). Tests use it with `saved` to see what would be persisted.
#[derive(Debug, Default)]
pub struct MemoryStore {
    pub saved: Mutex<HashMap<String, VolumeState>>,
    pub fail_saves: Mutex<u32>,
    pub initial: Mutex<Vec<Rebuilt>>,
    pub fail_loads: Mutex<u32>,
    /// The `(volume, node)` pairs that have a VolumeAttachment; `None`
    /// (standalone mode) means unknown, so no holder is ever reported
    /// without one.
    pub attachments: Mutex<Option<HashSet<(String, String)>>>,
}

impl Store for MemoryStore {
    fn save<'a>(
        &'a self,
        volume: &'a str,
        state: &'a VolumeState,
    ) -> BoxFuture<'a, Result<(), ClusterError>> {
        let result = {
            let mut fail = self.fail_saves.lock().unwrap_or_else(|p| p.into_inner());
            if *fail > 0 {
                *fail -= 1;
                Err(ClusterError::Injected("injected save failure".into()))
            } else {
                let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
                if state.is_attached() {
                    saved.insert(volume.to_string(), state.clone());
                } else {
                    saved.remove(volume);
                }
                Ok(())
            }
        };
        Box::pin(async move { result })
    }

    fn load(&self) -> BoxFuture<'_, Result<Vec<Rebuilt>, ClusterError>> {
        let result = {
            let mut fail = self.fail_loads.lock().unwrap_or_else(|p| p.into_inner());
            if *fail > 0 {
                *fail -= 1;
                Err(ClusterError::Injected("injected load failure".into()))
            } else {
                Ok(self
                    .initial
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone())
            }
        };
        Box::pin(async move { result })
    }

    fn holders_without_attachment<'a>(
        &'a self,
        holders: &'a [(String, String)],
    ) -> BoxFuture<'a, Result<Vec<(String, String)>, ClusterError>> {
        let missing = match &*self.attachments.lock().unwrap_or_else(|p| p.into_inner()) {
            None => Vec::new(),
            Some(known) => holders
                .iter()
                .filter(|h| !known.contains(*h))
                .cloned()
                .collect(),
        };
        Box::pin(async move { Ok(missing) })
    }
}

/// Logs events instead of recording them in a cluster.
#[derive(Debug, Default)]
pub struct LogEvents {
    pub seen: Mutex<Vec<VolumeEvent>>,
}

impl EventSink for LogEvents {
    fn emit(&self, event: VolumeEvent) -> BoxFuture<'_, ()> {
        event.log();
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(event);
        Box::pin(async {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: u16, reason: &str) -> kube::Error {
        let status: kube::core::Status = serde_json::from_value(serde_json::json!({
            "code": code, "reason": reason, "message": "the object has been modified"
        }))
        .unwrap();
        kube::Error::Api(Box::new(status))
    }

    #[test]
    fn an_api_answer_keeps_its_http_status_so_a_conflict_is_not_an_outage() {
        let conflict = ClusterError::kube("annotate PV pv1", api(409, "Conflict"));
        let outage = ClusterError::kube("annotate PV pv1", api(503, "ServiceUnavailable"));
        assert_eq!(conflict.status(), Some(409));
        assert_eq!(outage.status(), Some(503));
        assert_ne!(conflict, outage);
        let text = conflict.to_string();
        assert!(
            text.contains("annotate PV pv1") && text.contains("409 Conflict"),
            "{text}"
        );
    }

    #[test]
    fn a_request_without_an_answer_has_no_status() {
        let e = ClusterError::kube(
            "list VolumeAttachments",
            kube::Error::LinesCodecMaxLineLengthExceeded,
        );
        assert_eq!(e.status(), None);
        assert!(matches!(e, ClusterError::Request { .. }));
    }
}
