//! The attachment manager: the rules applied to every volume, with the
//! facts gathered from the cluster, decisions persisted before they take
//! effect, state rebuilt at start, and events and metrics for operators.
//!
//! Until the rebuild from the cluster has succeeded, every publish and
//! unpublish fails with [`ManagerError::NotReady`]: never fence from an
//! empty memory (docs/safety.md#deciding-from-an-empty-memory). A decision that changes state is persisted first
//! and only then committed in memory, so a failed write leaves both the
//! store and the memory as they were and the CO simply retries.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use futures::future::BoxFuture;
use jiff::Timestamp;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cluster::{
    ClusterError, EventKind, EventSink, NodeStatus, NodeView, Rebuilt, Store, VolumeEvent,
};
use crate::metrics::AttachMetrics;
use crate::rules::{
    AccessKind, Migration, MigrationOutcome, Policy, Publish, PublishDecision, Refusal,
    UnpublishDecision, VolumeState,
};

/// What a migration check found about a second node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MigrationEvidence {
    /// KubeVirt's own objects show the node is the target of a live
    /// migration in progress of the VM that uses the volume; says which.
    Verified(String),
    /// Not shown; says what was missing, for the refusal and the event.
    Unverified(String),
}

/// A second node asks for a volume one node holds: is it the target of a
/// live migration of the VM using the volume? Named fields, so the asking
/// node and the holder cannot be swapped unnoticed.
#[derive(Debug, Clone, Copy)]
pub struct MigrationQuery<'a> {
    /// The volume's claim (namespace, name), when the provisioner passed it.
    pub pvc: Option<&'a (String, String)>,
    /// The node asking for the volume.
    pub node: &'a str,
    /// The volume's one holder, where the VM runs now.
    pub source: &'a str,
}

/// The answer of a [`MigrationCheck`].
pub type MigrationVerdict<'a> = BoxFuture<'a, Result<MigrationEvidence, ClusterError>>;

/// Tells whether a node is a verified KubeVirt migration target.
pub trait MigrationCheck: Send + Sync {
    fn verify_target<'a>(&'a self, query: MigrationQuery<'a>) -> MigrationVerdict<'a>;
}

/// Verifies nothing: every second node is refused unless the policy
/// relaxes the rule (clusters without KubeVirt, standalone mode).
pub struct NoMigrations;

impl MigrationCheck for NoMigrations {
    fn verify_target<'a>(&'a self, _: MigrationQuery<'a>) -> MigrationVerdict<'a> {
        Box::pin(async {
            Ok(MigrationEvidence::Unverified(
                "KubeVirt migration checks are off in this mode".into(),
            ))
        })
    }
}

/// Why a holder was released without its own unpublish.
const REASON_OUT_OF_SERVICE: &str = "its node carries the node.kubernetes.io/out-of-service taint";
const REASON_ATTACHMENT_GONE: &str = "its VolumeAttachment no longer exists";

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(
        "attachment state is not rebuilt from the cluster yet; refusing to decide (fail closed)"
    )]
    NotReady,
    #[error("{what}: {source}")]
    Cluster {
        what: &'static str,
        #[source]
        source: ClusterError,
    },
    #[error("an operation on volume {0} is already in progress")]
    Busy(String),
}

impl ManagerError {
    /// Wraps a cluster failure with the step that failed, for `map_err`.
    fn cluster(what: &'static str) -> impl FnOnce(ClusterError) -> ManagerError {
        move |source| ManagerError::Cluster { what, source }
    }
}

/// One operation per volume at a time. The guard releases on drop, so a
/// cancelled RPC can never leave a volume locked, and the table only holds
/// volumes with an operation in flight.
#[derive(Default, Clone)]
pub struct VolumeLocks(Arc<DashMap<String, ()>>);

pub struct VolumeGuard {
    map: Arc<DashMap<String, ()>>,
    key: String,
}

impl VolumeLocks {
    pub fn try_lock(&self, key: &str) -> Result<VolumeGuard, ManagerError> {
        use dashmap::mapref::entry::Entry;
        match self.0.entry(key.to_string()) {
            Entry::Occupied(_) => Err(ManagerError::Busy(key.to_string())),
            Entry::Vacant(v) => {
                v.insert(());
                Ok(VolumeGuard {
                    map: self.0.clone(),
                    key: key.to_string(),
                })
            }
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// When CreateVolume last returned each volume (made or found), in this
/// process. The orphan sweep leaves such volumes alone for its grace
/// period: the provisioner may be about to create their PV.
#[derive(Default, Clone)]
pub struct RecentCreates(Arc<DashMap<String, std::time::Instant>>);

impl RecentCreates {
    pub fn note(&self, volume: &str) {
        self.0.insert(volume.to_string(), std::time::Instant::now());
    }

    /// True when CreateVolume returned `volume` less than `within` ago.
    pub fn within(&self, volume: &str, within: std::time::Duration) -> bool {
        self.0.get(volume).is_some_and(|t| t.elapsed() < within)
    }

    /// Drops entries older than `keep`, so the table stays small.
    pub fn prune(&self, keep: std::time::Duration) {
        self.0.retain(|_, t| t.elapsed() < keep);
    }
}

impl Drop for VolumeGuard {
    fn drop(&mut self) {
        self.map.remove(&self.key);
    }
}

/// A publish as the CSI layer sees it.
#[derive(Debug, Clone)]
pub struct PublishRequest<'a> {
    pub volume: &'a str,
    pub node: &'a str,
    pub kind: AccessKind,
    pub pvc: Option<(String, String)>,
    pub migration_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    state: VolumeState,
    pvc: Option<(String, String)>,
}

pub struct Manager {
    policy: Policy,
    store: Arc<dyn Store>,
    nodes: Arc<dyn NodeView>,
    migrations: Arc<dyn MigrationCheck>,
    events: Arc<dyn EventSink>,
    metrics: AttachMetrics,
    volumes: Mutex<HashMap<String, Entry>>,
    ready: AtomicBool,
    locks: VolumeLocks,
    recent_creates: RecentCreates,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Manager {
    pub fn new(
        policy: Policy,
        store: Arc<dyn Store>,
        nodes: Arc<dyn NodeView>,
        migrations: Arc<dyn MigrationCheck>,
        events: Arc<dyn EventSink>,
        metrics: AttachMetrics,
    ) -> Self {
        Manager {
            policy,
            store,
            nodes,
            migrations,
            events,
            metrics,
            volumes: Mutex::new(HashMap::new()),
            ready: AtomicBool::new(false),
            locks: VolumeLocks::default(),
            recent_creates: RecentCreates::default(),
        }
    }

    pub fn locks(&self) -> &VolumeLocks {
        &self.locks
    }

    pub fn recent_creates(&self) -> &RecentCreates {
        &self.recent_creates
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The current state of a volume (empty if unknown).
    pub fn state(&self, volume: &str) -> VolumeState {
        lock(&self.volumes)
            .get(volume)
            .map(|e| e.state.clone())
            .unwrap_or_default()
    }

    pub fn holders(&self, volume: &str) -> Vec<String> {
        self.state(volume).holders()
    }

    /// Every node that holds at least one volume, with the volumes it holds.
    pub fn attachments_by_node(&self) -> HashMap<String, Vec<String>> {
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for (volume, e) in lock(&self.volumes).iter() {
            for a in &e.state.nodes {
                out.entry(a.node.clone()).or_default().push(volume.clone());
            }
        }
        out
    }

    /// The PVC recorded for a volume, if any.
    pub fn pvc_of(&self, volume: &str) -> Option<(String, String)> {
        lock(&self.volumes).get(volume).and_then(|e| e.pvc.clone())
    }

    /// Records an event about a volume (for reconcilers that report).
    pub async fn report(
        &self,
        volume: &str,
        kind: EventKind,
        reason: &'static str,
        message: String,
    ) {
        let pvc = self.pvc_of(volume);
        self.emit(volume, &pvc, kind, reason, message).await;
    }

    /// Number of volumes with state in memory.
    pub fn tracked(&self) -> usize {
        lock(&self.volumes).len()
    }

    /// Replaces the in-memory state with what the store says, then opens
    /// the gate. Returns how many volumes are attached.
    pub async fn rebuild(&self) -> Result<usize, ManagerError> {
        let loaded = self
            .store
            .load()
            .await
            .map_err(ManagerError::cluster("rebuild attachment state"))?;
        let mut map = HashMap::with_capacity(loaded.len());
        let mut conflicts = Vec::new();
        for Rebuilt {
            volume,
            state,
            pvc,
            conflict,
        } in loaded
        {
            if let Err(e) = state.check_invariants() {
                // The cluster shows more than the rules allow (for example
                // three VolumeAttachments). Keep every node so nothing else
                // gets in, and say so loudly.
                warn!(volume = %volume, problem = %e, "rebuilt attachment state breaks the rules; keeping it fenced");
            }
            if let Some(c) = conflict {
                conflicts.push((volume.clone(), pvc.clone(), c));
            }
            map.insert(volume, Entry { state, pvc });
        }
        let n = map.len();
        *lock(&self.volumes) = map;
        self.update_gauges();
        self.ready.store(true, Ordering::Release);
        for (volume, pvc, what) in conflicts {
            self.metrics.rebuild_conflicts.inc();
            self.emit(
                &volume,
                &pvc,
                EventKind::Warning,
                "AttachConflictOnRebuild",
                format!("volume {volume}: {what}"),
            )
            .await;
        }
        Ok(n)
    }

    /// Rebuilds with backoff until it succeeds, then ticks every
    /// `tick` until cancelled (migration deadlines, pruning).
    pub async fn run(self: Arc<Self>, tick: Duration, cancel: CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            let started = Instant::now();
            match self.rebuild().await {
                Ok(n) => {
                    info!(attached = n, elapsed = ?started.elapsed(), "attachment state rebuilt from the cluster; publishing is open");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, retry_in = ?delay, "cannot rebuild attachment state; publishes stay refused");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            self.tick(Timestamp::now()).await;
        }
    }

    pub async fn publish(&self, req: PublishRequest<'_>) -> Result<PublishDecision, ManagerError> {
        let started = Instant::now();
        let result = self.publish_inner(&req).await;
        let status = match &result {
            // Status values follow the Go driver's metric where they mean
            // the same thing.
            Ok(PublishDecision::Attached { .. }) | Ok(PublishDecision::AlreadyAttached) => {
                "success"
            }
            Ok(PublishDecision::Refused(_)) => "conflict",
            Err(ManagerError::NotReady) => "unavailable",
            Err(_) => "failure",
        };
        self.metrics.observe("publish", started, status);
        result
    }

    async fn publish_inner(
        &self,
        req: &PublishRequest<'_>,
    ) -> Result<PublishDecision, ManagerError> {
        if !self.is_ready() {
            return Err(ManagerError::NotReady);
        }
        let current = self.state(req.volume);
        // Events go to the claim the volume context names or, when it names
        // none (a provisioner run without --extra-create-metadata, as for
        // volumes another driver's installation made), to the claim its
        // PV's claimRef named at rebuild. Migration checks still read the
        // volume context only.
        let pvc = req.pvc.clone().or_else(|| self.pvc_of(req.volume));
        // Holders that may be released for this publish, with why.
        let mut gone: Vec<(String, &'static str)> = Vec::new();
        // Holders whose Node object is deleted but whose VolumeAttachment
        // still exists: they keep the volume.
        let mut kept_deleted = Vec::new();
        if !current.holds(req.node) {
            let mut missing = Vec::new();
            for holder in current.holders() {
                let status = self
                    .nodes
                    .node_status(&holder)
                    .await
                    .map_err(ManagerError::cluster("check the holder's node"))?;
                match status {
                    NodeStatus::Present => {}
                    NodeStatus::OutOfService => gone.push((holder, REASON_OUT_OF_SERVICE)),
                    NodeStatus::Missing => missing.push((req.volume.to_string(), holder)),
                }
            }
            if !missing.is_empty() {
                // A deleted Node is not a stopped machine: only the end of
                // its VolumeAttachment releases its hold.
                let without = self
                    .store
                    .holders_without_attachment(&missing)
                    .await
                    .map_err(ManagerError::cluster(
                        "look up the holder's VolumeAttachment",
                    ))?;
                for (_, holder) in missing {
                    if without.iter().any(|(_, n)| *n == holder) {
                        gone.push((holder, REASON_ATTACHMENT_GONE));
                    } else {
                        kept_deleted.push(holder);
                    }
                }
            }
        }
        let gone_nodes: Vec<String> = gone.iter().map(|(n, _)| n.clone()).collect();
        let remaining: Vec<String> = current
            .holders()
            .into_iter()
            .filter(|h| !gone_nodes.contains(h))
            .collect();
        let needs_check = req.kind == AccessKind::MultiNodeBlock
            && current.kind == AccessKind::MultiNodeBlock
            && remaining.len() == 1
            && !current.holds(req.node);
        let (migration_target, migration_note) = if needs_check {
            match self
                .migrations
                .verify_target(MigrationQuery {
                    pvc: req.pvc.as_ref(),
                    node: req.node,
                    source: &remaining[0],
                })
                .await
                .map_err(ManagerError::cluster(
                    "verify the KubeVirt migration target",
                ))? {
                MigrationEvidence::Verified(how) => {
                    info!(volume = %req.volume, node = %req.node, source = %remaining[0], evidence = %how, "verified KubeVirt migration target");
                    (true, String::new())
                }
                MigrationEvidence::Unverified(why) => (false, why),
            }
        } else {
            (false, String::new())
        };
        let now = Timestamp::now();
        let mut next = current.clone();
        let decision = next.publish(
            &self.policy,
            &Publish {
                node: req.node,
                kind: req.kind,
                now,
                gone_holders: &gone_nodes,
                migration_target,
                migration_note: &migration_note,
                migration_timeout: req.migration_timeout,
            },
        );
        match &decision {
            PublishDecision::Attached {
                handoff,
                stale_cleared,
                migration_started,
            } => {
                self.store
                    .save(req.volume, &next)
                    .await
                    .map_err(ManagerError::cluster("persist the attachment"))?;
                {
                    let mut map = lock(&self.volumes);
                    let entry = map.entry(req.volume.to_string()).or_default();
                    entry.state = next;
                    if pvc.is_some() {
                        entry.pvc = pvc.clone();
                    }
                }
                self.update_gauges();
                for node in stale_cleared {
                    self.metrics.stale_cleared.inc();
                    let why = gone
                        .iter()
                        .find(|(n, _)| n == node)
                        .map_or(REASON_OUT_OF_SERVICE, |(_, w)| *w);
                    self.emit(req.volume, &pvc, EventKind::Warning, "StaleAttachmentCleared", format!(
                        "node {node} released volume {} without an unpublish ({why}); its attachment was dropped so {} can use it",
                        req.volume, req.node
                    ))
                    .await;
                }
                if let Some(h) = handoff {
                    self.metrics.grace_period_used.inc();
                    self.metrics.handoff_duration.observe(h.after.as_secs_f64());
                    self.emit(
                        req.volume,
                        &pvc,
                        EventKind::Normal,
                        "Handoff",
                        format!(
                            "volume {} handed over from {} to {} {:.3}s after its release",
                            req.volume,
                            h.from,
                            h.to,
                            h.after.as_secs_f64()
                        ),
                    )
                    .await;
                }
                if let Some(m) = migration_started {
                    self.metrics
                        .migrations
                        .with_label_values(&["started"])
                        .inc();
                    self.emit(req.volume, &pvc, EventKind::Normal, "MigrationStarted", format!(
                        "live migration of volume {}: attached to target {} alongside source {} until {}",
                        req.volume, m.target, m.source, m.deadline
                    ))
                    .await;
                }
                info!(volume = %req.volume, node = %req.node, holders = ?self.holders(req.volume), "attachment recorded");
            }
            PublishDecision::AlreadyAttached => {}
            PublishDecision::Refused(r) => {
                for node in &kept_deleted {
                    self.metrics.kept_for_deleted_node.inc();
                    self.emit(req.volume, &pvc, EventKind::Warning, "AttachedToDeletedNode", format!(
                        "node {node} is deleted but its VolumeAttachment of volume {} still exists, so it keeps the volume and {} is refused; a deleted Node may still be running. Taint it node.kubernetes.io/out-of-service once the machine is off, or wait for Kubernetes to detach it",
                        req.volume, req.node
                    ))
                    .await;
                }
                if matches!(
                    r,
                    Refusal::AttachedElsewhere { .. }
                        | Refusal::TwoNodesAlready { .. }
                        | Refusal::NotAMigrationTarget { .. }
                        | Refusal::KindMismatch { .. }
                ) {
                    self.metrics.conflicts.inc();
                }
                self.emit(
                    req.volume,
                    &pvc,
                    EventKind::Warning,
                    "AttachConflict",
                    format!(
                        "publish of volume {} to {} refused: {r}",
                        req.volume, req.node
                    ),
                )
                .await;
            }
        }
        Ok(decision)
    }

    pub async fn unpublish(
        &self,
        volume: &str,
        node: &str,
    ) -> Result<UnpublishDecision, ManagerError> {
        let started = Instant::now();
        let result = self.unpublish_inner(volume, node).await;
        let status = match &result {
            Ok(UnpublishDecision::Detached { .. }) | Ok(UnpublishDecision::NotAttached) => {
                "success"
            }
            Err(ManagerError::NotReady) => "unavailable",
            Err(_) => "failure",
        };
        self.metrics.observe("unpublish", started, status);
        result
    }

    async fn unpublish_inner(
        &self,
        volume: &str,
        node: &str,
    ) -> Result<UnpublishDecision, ManagerError> {
        if !self.is_ready() {
            return Err(ManagerError::NotReady);
        }
        let (current, pvc) = {
            let map = lock(&self.volumes);
            map.get(volume)
                .map(|e| (e.state.clone(), e.pvc.clone()))
                .unwrap_or_default()
        };
        let mut next = current;
        let decision = next.unpublish(node, Timestamp::now());
        if let UnpublishDecision::Detached { ended } = &decision {
            self.store
                .save(volume, &next)
                .await
                .map_err(ManagerError::cluster("persist the detachment"))?;
            lock(&self.volumes)
                .entry(volume.to_string())
                .or_default()
                .state = next;
            self.update_gauges();
            if let Some((m, outcome)) = ended {
                self.migration_ended(volume, &pvc, m, *outcome).await;
            }
            info!(volume = %volume, node = %node, holders = ?self.holders(volume), "detachment recorded");
        }
        Ok(decision)
    }

    /// Drops every attachment of a node that carries the
    /// `node.kubernetes.io/out-of-service` taint: an operator's statement
    /// that the machine is off. Volumes with an operation in flight are
    /// skipped; the next call catches them. Returns the volumes released.
    pub async fn release_out_of_service(&self, node: &str) -> Vec<String> {
        let candidates: Vec<String> = lock(&self.volumes)
            .iter()
            .filter(|(_, e)| e.state.holds(node))
            .map(|(v, _)| v.clone())
            .collect();
        let mut released = Vec::new();
        for volume in candidates {
            if self
                .release_holder(&volume, node, REASON_OUT_OF_SERVICE, None)
                .await
            {
                released.push(volume);
            }
        }
        self.update_gauges();
        released
    }

    /// Every `(volume, node)` held, with since when.
    pub fn holdings(&self) -> Vec<(String, String, Timestamp)> {
        lock(&self.volumes)
            .iter()
            .flat_map(|(v, e)| {
                e.state
                    .nodes
                    .iter()
                    .map(move |a| (v.clone(), a.node.clone(), a.since))
            })
            .collect()
    }

    /// The periodic pass that keeps holders in step with the
    /// VolumeAttachments: a holder whose VolumeAttachment no longer exists
    /// (its finalizer stripped by hand, or deleted while the controller
    /// was away) is released, with an event. Only holders granted before
    /// the fresh read started are judged, so a publish racing the read is
    /// never mistaken for a vanished one. Returns what was released.
    pub async fn release_without_attachment(&self) -> Result<Vec<(String, String)>, ManagerError> {
        if !self.is_ready() {
            return Err(ManagerError::NotReady);
        }
        let started = Timestamp::now();
        let held: Vec<(String, String)> = self
            .holdings()
            .into_iter()
            .filter(|(_, _, since)| *since < started)
            .map(|(v, n, _)| (v, n))
            .collect();
        if held.is_empty() {
            return Ok(Vec::new());
        }
        let without = self
            .store
            .holders_without_attachment(&held)
            .await
            .map_err(ManagerError::cluster("list VolumeAttachments"))?;
        let mut released = Vec::new();
        for (volume, node) in without {
            if self
                .release_holder(&volume, &node, REASON_ATTACHMENT_GONE, Some(started))
                .await
            {
                released.push((volume, node));
            }
        }
        self.update_gauges();
        Ok(released)
    }

    /// Releases one holder under the volume's lock, persisting first. With
    /// `granted_before`, only an attachment older than that is released.
    async fn release_holder(
        &self,
        volume: &str,
        node: &str,
        why: &'static str,
        granted_before: Option<Timestamp>,
    ) -> bool {
        let Ok(_guard) = self.locks.try_lock(volume) else {
            return false;
        };
        let (mut next, pvc) = {
            let map = lock(&self.volumes);
            match map.get(volume) {
                Some(e) => (e.state.clone(), e.pvc.clone()),
                None => return false,
            }
        };
        let old_enough = next
            .nodes
            .iter()
            .find(|a| a.node == node)
            .is_some_and(|a| granted_before.is_none_or(|t| a.since < t));
        if !old_enough {
            return false;
        }
        let Some(ended) = next.node_gone(node) else {
            return false;
        };
        if let Err(e) = self.store.save(volume, &next).await {
            warn!(volume = %volume, node = %node, error = %e, "cannot persist a stale attachment's removal; will retry");
            return false;
        }
        lock(&self.volumes)
            .entry(volume.to_string())
            .or_default()
            .state = next;
        self.metrics.stale_cleared.inc();
        self.emit(
            volume,
            &pvc,
            EventKind::Warning,
            "StaleAttachmentCleared",
            format!("node {node} released volume {volume} without an unpublish ({why}); its attachment was dropped"),
        )
        .await;
        if let Some((m, outcome)) = ended {
            self.migration_ended(volume, &pvc, &m, outcome).await;
        }
        true
    }

    /// Reports migrations past their deadline (once: the report is
    /// persisted with the state, so a restart does not repeat it) and
    /// forgets released volumes whose grace period is over, so memory
    /// follows the attached set.
    pub async fn tick(&self, now: Timestamp) {
        let mut due = Vec::new();
        {
            let mut map = lock(&self.volumes);
            let grace = self.policy.grace_period;
            map.retain(|_, e| {
                e.state.is_attached()
                    || e.state.last_detach.as_ref().is_some_and(|d| {
                        Duration::try_from(now.duration_since(d.at)).unwrap_or(Duration::ZERO)
                            <= grace
                    })
            });
            for (volume, e) in map.iter() {
                if e.state.timeout_due(now) {
                    due.push(volume.clone());
                }
            }
        }
        for volume in due {
            // A volume with an operation in flight is caught next tick.
            let Ok(_guard) = self.locks.try_lock(&volume) else {
                continue;
            };
            let Some((mut next, pvc)) = lock(&self.volumes)
                .get(&volume)
                .map(|e| (e.state.clone(), e.pvc.clone()))
            else {
                continue;
            };
            let Some(m) = next.tick(now) else { continue };
            if let Err(e) = self.store.save(&volume, &next).await {
                warn!(volume = %volume, error = %e, "cannot persist a migration timeout; it is reported when the write succeeds");
                continue;
            }
            lock(&self.volumes).entry(volume.clone()).or_default().state = next;
            self.metrics
                .migrations
                .with_label_values(&["timed_out"])
                .inc();
            self.emit(&volume, &pvc, EventKind::Warning, "MigrationTimedOut", format!(
                "live migration of volume {volume} from {} to {} passed its deadline {}; no further node is admitted until one side leaves",
                m.source, m.target, m.deadline
            ))
            .await;
        }
    }

    async fn migration_ended(
        &self,
        volume: &str,
        pvc: &Option<(String, String)>,
        m: &Migration,
        outcome: MigrationOutcome,
    ) {
        self.metrics
            .migrations
            .with_label_values(&[outcome.as_str()])
            .inc();
        let took =
            Duration::try_from(Timestamp::now().duration_since(m.started)).unwrap_or_default();
        self.metrics.migration_duration.observe(took.as_secs_f64());
        let (kind, reason, what) = match outcome {
            MigrationOutcome::Completed => (
                EventKind::Normal,
                "MigrationCompleted",
                format!(
                    "source {} released it; the VM runs on {}",
                    m.source, m.target
                ),
            ),
            MigrationOutcome::RolledBack => (
                EventKind::Warning,
                "MigrationFailed",
                format!(
                    "target {} released it; the VM stays on {}",
                    m.target, m.source
                ),
            ),
            MigrationOutcome::NodeLost => (
                EventKind::Warning,
                "MigrationNodeLost",
                format!(
                    "a node of the migration {} -> {} is gone",
                    m.source, m.target
                ),
            ),
        };
        self.emit(
            volume,
            pvc,
            kind,
            reason,
            format!(
                "live migration of volume {volume} ended after {:.1}s: {what}",
                took.as_secs_f64()
            ),
        )
        .await;
    }

    async fn emit(
        &self,
        volume: &str,
        pvc: &Option<(String, String)>,
        kind: EventKind,
        reason: &'static str,
        message: String,
    ) {
        self.events
            .emit(VolumeEvent {
                volume: volume.to_string(),
                pvc: pvc.clone(),
                kind,
                reason,
                message,
            })
            .await;
    }

    fn update_gauges(&self) {
        let active = lock(&self.volumes)
            .values()
            .filter(|e| e.state.migration.is_some())
            .count();
        self.metrics.active_migrations.set(active as i64);
    }
}

#[cfg(test)]
#[path = "manager_tests.rs"]
mod tests;
