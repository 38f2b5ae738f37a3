//! Who may attach which volume where.
//!
//! `rules` (the `attachment-rules` crate) is the pure state machine (no
//! kube, no tonic, no tokio, enforced by its dependencies): given a
//! volume's state and an event it returns a decision. Around it, this
//! crate keeps the state of every volume, serializes operations per volume,
//! persists decisions to PV annotations and rebuilds the state from
//! VolumeAttachments at start. Kubernetes access sits behind the traits in
//! `cluster` (with in-memory versions for tests and standalone mode),
//! implemented over `kube` in `kube_store`. Its boundary: no gRPC, no
//! RouterOS, no node I/O; the CSI layer calls it and maps its errors.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod events;
pub mod host_nqn;
pub mod kube_store;
pub mod lists;
pub mod manager;
pub mod metrics;
/// The pure rules, in a crate of their own so the compiler keeps them pure.
pub use attachment_rules as rules;

#[cfg(test)]
mod world_tests;

pub use cluster::{ClusterError, EventKind, EventSink, NodeStatus, NodeView, Store, VolumeEvent};
pub use events::QueuedEvents;
pub use manager::{
    Manager, ManagerError, MigrationCheck, MigrationEvidence, MigrationQuery, MigrationVerdict,
    NoMigrations, PublishRequest, RecentCreates, VolumeGuard, VolumeLocks,
};
pub use metrics::AttachMetrics;
pub use rules::{
    AccessKind, Attachment, Detach, Handoff, Migration, MigrationOutcome, Policy, Publish,
    PublishDecision, Refusal, UnpublishDecision, VolumeState,
};
