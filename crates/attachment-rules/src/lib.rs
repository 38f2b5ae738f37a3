//! The attachment rules as a pure, synchronous state machine.
//!
//! Given a volume's state and an event (publish, unpublish, a holder
//! released without its unpublish, clock tick) it changes the state and
//! returns a decision. There is no I/O, no clock and no async here, and
//! the crate depends on nothing that could bring them (no kube, tonic or
//! tokio): the caller (`attachment-manager`) gathers the facts (which
//! holders are gone, whether a node is a verified migration target, the
//! time) and persists the result. This is where the safety lives, so it is
//! where most of the tests live. See docs/attachments.md for the rules in
//! prose and docs/safety.md for the failures they prevent.
#![forbid(unsafe_code)]

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// How a volume is being used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessKind {
    /// One node at a time (every single-node access mode, filesystem or block).
    #[default]
    SingleNode,
    /// Raw block, multi-node writer: two nodes only for the window of a
    /// KubeVirt live migration.
    MultiNodeBlock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub node: String,
    pub since: Timestamp,
}

/// An admitted two-node window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub source: String,
    pub target: String,
    pub started: Timestamp,
    pub deadline: Timestamp,
    /// Set once the timeout has been reported, so it is reported once.
    pub timeout_reported: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MigrationOutcome {
    /// The source left: the VM now runs on the target.
    Completed,
    /// The target left: the migration failed or was rolled back.
    RolledBack,
    /// One side's node disappeared.
    NodeLost,
}

impl MigrationOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationOutcome::Completed => "completed",
            MigrationOutcome::RolledBack => "failed",
            MigrationOutcome::NodeLost => "node_lost",
        }
    }
}

/// The most recent detach that left the volume free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detach {
    pub node: String,
    pub at: Timestamp,
}

/// Everything the rules know about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VolumeState {
    pub kind: AccessKind,
    pub nodes: Vec<Attachment>,
    pub migration: Option<Migration>,
    /// Remembered only while the volume is attached nowhere; any new
    /// attachment clears it, so it can never help a third node take a
    /// volume that is attached (docs/safety.md#migration-bookkeeping).
    pub last_detach: Option<Detach>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A publish to another node within this time after the volume was
    /// released is counted and timed as a handoff.
    pub grace_period: Duration,
    /// Admit any second node for multi-node block volumes, without a
    /// verified KubeVirt migration. For clusters without KubeVirt; off by
    /// default.
    pub allow_unverified_second_node: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            grace_period: Duration::from_secs(30),
            allow_unverified_second_node: false,
        }
    }
}

/// The facts a publish is decided on.
#[derive(Debug, Clone)]
pub struct Publish<'a> {
    pub node: &'a str,
    pub kind: AccessKind,
    pub now: Timestamp,
    /// Current holders released without their own unpublish: their node
    /// carries the `node.kubernetes.io/out-of-service` taint, or their
    /// VolumeAttachment no longer exists. A deleted Node alone is not
    /// here: deleting a Node object does not stop the machine.
    pub gone_holders: &'a [String],
    /// Whether `node` is a verified KubeVirt migration target for the VMI
    /// using this volume.
    pub migration_target: bool,
    /// Why `node` is not a verified migration target (shown in the
    /// refusal); empty when there is nothing to say.
    pub migration_note: &'a str,
    /// The migration window's length (`migrationTimeoutSeconds`).
    pub migration_timeout: Duration,
}

impl<'a> Publish<'a> {
    /// A publish with no holder released and no migration evidence; set
    /// the other fields with struct update syntax.
    pub fn new(
        node: &'a str,
        kind: AccessKind,
        now: Timestamp,
        migration_timeout: Duration,
    ) -> Self {
        Publish {
            node,
            kind,
            now,
            gone_holders: &[],
            migration_target: false,
            migration_note: "",
            migration_timeout,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub from: String,
    pub to: String,
    /// From the release to this publish.
    pub after: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishDecision {
    /// The node now holds the volume. The state changed: persist it.
    Attached {
        handoff: Option<Handoff>,
        /// Holders dropped because their node is gone.
        stale_cleared: Vec<String>,
        /// Set when this attach opened a migration window.
        migration_started: Option<Migration>,
    },
    /// The node already holds the volume the same way; nothing changed.
    AlreadyAttached,
    Refused(Refusal),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the volume is attached to {holders:?}; a single-node volume can be attached to one node at a time")]
    AttachedElsewhere { holders: Vec<String> },
    #[error("the volume is already attached to this node with a different access kind")]
    IncompatibleOnSameNode,
    #[error("{node} is not a verified KubeVirt migration target for the VM using this volume (attached to {holder}){}", note(why))]
    NotAMigrationTarget {
        node: String,
        holder: String,
        why: String,
    },
    #[error("the volume is already attached to two nodes {holders:?}; a third is never admitted")]
    TwoNodesAlready { holders: Vec<String> },
    #[error("the volume is attached to {holders:?} as {held:?} and cannot be attached elsewhere as {requested:?}")]
    KindMismatch {
        holders: Vec<String>,
        held: AccessKind,
        requested: AccessKind,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnpublishDecision {
    /// The node was released. The state changed: persist it.
    Detached {
        ended: Option<(Migration, MigrationOutcome)>,
    },
    /// The node did not hold the volume; nothing changed.
    NotAttached,
}

fn note(why: &str) -> String {
    if why.is_empty() {
        String::new()
    } else {
        format!(": {why}")
    }
}

fn since(now: Timestamp, then: Timestamp) -> Duration {
    let d: SignedDuration = now.duration_since(then);
    Duration::try_from(d).unwrap_or(Duration::ZERO)
}

fn add(now: Timestamp, d: Duration) -> Timestamp {
    SignedDuration::try_from(d)
        .ok()
        .and_then(|d| now.checked_add(d).ok())
        .unwrap_or(Timestamp::MAX)
}

impl VolumeState {
    pub fn holders(&self) -> Vec<String> {
        self.nodes.iter().map(|a| a.node.clone()).collect()
    }

    pub fn is_attached(&self) -> bool {
        !self.nodes.is_empty()
    }

    pub fn holds(&self, node: &str) -> bool {
        self.nodes.iter().any(|a| a.node == node)
    }

    pub fn publish(&mut self, policy: &Policy, p: &Publish<'_>) -> PublishDecision {
        if self.holds(p.node) {
            return if self.kind == p.kind {
                PublishDecision::AlreadyAttached
            } else {
                PublishDecision::Refused(Refusal::IncompatibleOnSameNode)
            };
        }

        // Decide on a copy so a refusal leaves the state untouched; stale
        // holders are only dropped when the publish succeeds.
        let mut next = self.clone();
        let mut stale_cleared = Vec::new();
        for gone in p.gone_holders {
            if next.holds(gone) {
                next.remove(gone);
                stale_cleared.push(gone.clone());
            }
        }
        if !stale_cleared.is_empty() {
            next.end_migration_if_broken();
        }

        let mut migration_started = None;
        let mut handoff = None;
        match next.nodes.len() {
            0 => {
                if let Some(d) = &next.last_detach {
                    let after = since(p.now, d.at);
                    if d.node != p.node && after <= policy.grace_period {
                        handoff = Some(Handoff {
                            from: d.node.clone(),
                            to: p.node.to_string(),
                            after,
                        });
                    }
                }
                next.kind = p.kind;
            }
            1 => {
                let holder = next.nodes[0].node.clone();
                if next.kind != p.kind {
                    return PublishDecision::Refused(Refusal::KindMismatch {
                        holders: next.holders(),
                        held: next.kind,
                        requested: p.kind,
                    });
                }
                if p.kind == AccessKind::SingleNode {
                    return PublishDecision::Refused(Refusal::AttachedElsewhere {
                        holders: next.holders(),
                    });
                }
                if !(p.migration_target || policy.allow_unverified_second_node) {
                    return PublishDecision::Refused(Refusal::NotAMigrationTarget {
                        node: p.node.to_string(),
                        holder,
                        why: p.migration_note.to_string(),
                    });
                }
                let m = Migration {
                    source: holder,
                    target: p.node.to_string(),
                    started: p.now,
                    deadline: add(p.now, p.migration_timeout),
                    timeout_reported: false,
                };
                next.migration = Some(m.clone());
                migration_started = Some(m);
            }
            _ => {
                return PublishDecision::Refused(Refusal::TwoNodesAlready {
                    holders: next.holders(),
                })
            }
        }
        next.nodes.push(Attachment {
            node: p.node.to_string(),
            since: p.now,
        });
        next.last_detach = None;
        *self = next;
        PublishDecision::Attached {
            handoff,
            stale_cleared,
            migration_started,
        }
    }

    pub fn unpublish(&mut self, node: &str, now: Timestamp) -> UnpublishDecision {
        if !self.holds(node) {
            return UnpublishDecision::NotAttached;
        }
        self.remove(node);
        let ended = self.migration.take().map(|m| {
            let outcome = if m.source == node {
                MigrationOutcome::Completed
            } else {
                MigrationOutcome::RolledBack
            };
            (m, outcome)
        });
        if self.nodes.is_empty() {
            self.last_detach = Some(Detach {
                node: node.to_string(),
                at: now,
            });
            self.kind = AccessKind::SingleNode;
        }
        UnpublishDecision::Detached { ended }
    }

    /// A holder released without its own unpublish: its node carries the
    /// out-of-service taint, or its VolumeAttachment no longer exists.
    /// Drops its attachment. Returns whether it held the volume and any
    /// migration this ended. A deleted Node object alone is never a reason
    /// to call this: the machine may still run and write.
    pub fn node_gone(&mut self, node: &str) -> Option<Option<(Migration, MigrationOutcome)>> {
        if !self.holds(node) {
            return None;
        }
        self.remove(node);
        let ended = self
            .migration
            .take()
            .map(|m| (m, MigrationOutcome::NodeLost));
        if self.nodes.is_empty() {
            // A dead node never released the volume in an orderly way;
            // there is no handoff to time from it.
            self.last_detach = None;
            self.kind = AccessKind::SingleNode;
        }
        Some(ended)
    }

    /// Reports a migration window that passed its deadline, once.
    pub fn tick(&mut self, now: Timestamp) -> Option<Migration> {
        if !self.timeout_due(now) {
            return None;
        }
        let m = self.migration.as_mut()?;
        m.timeout_reported = true;
        Some(m.clone())
    }

    /// Whether [`tick`](Self::tick) at `now` would report a timeout.
    pub fn timeout_due(&self, now: Timestamp) -> bool {
        self.migration
            .as_ref()
            .is_some_and(|m| now > m.deadline && !m.timeout_reported)
    }

    fn remove(&mut self, node: &str) {
        self.nodes.retain(|a| a.node != node);
    }

    fn end_migration_if_broken(&mut self) {
        if let Some(m) = &self.migration {
            if !(self.holds(&m.source) && self.holds(&m.target)) {
                self.migration = None;
            }
        }
        if self.nodes.is_empty() {
            self.kind = AccessKind::SingleNode;
            self.last_detach = None;
        }
    }

    /// Checks the invariants every state must keep. Used by tests and as a
    /// guard when state is rebuilt from outside.
    pub fn check_invariants(&self) -> Result<(), String> {
        let limit = match self.kind {
            AccessKind::SingleNode => 1,
            AccessKind::MultiNodeBlock => 2,
        };
        if self.nodes.len() > limit {
            return Err(format!("{} nodes for {:?}", self.nodes.len(), self.kind));
        }
        let mut names = self.holders();
        names.sort();
        names.dedup();
        if names.len() != self.nodes.len() {
            return Err("a node is listed twice".into());
        }
        if let Some(m) = &self.migration {
            if self.nodes.len() != 2 || !self.holds(&m.source) || !self.holds(&m.target) {
                return Err("a migration without both of its nodes".into());
            }
        }
        if self.is_attached() && self.last_detach.is_some() {
            return Err("a remembered detach on an attached volume".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
