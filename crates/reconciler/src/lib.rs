//! Background loops that keep attachment state true to the cluster.
//!
//! `stale`: a Node watch releases the attachments of a deleted or
//! out-of-service node the moment the change is seen; a periodic sweep (also
//! run at start and after every backend reconnect) catches anything missed
//! and reports attachments on nodes NotReady for too long. It never deletes
//! VolumeAttachments or PVs: Kubernetes owns those.
//!
//! `orphans`: a periodic sweep reports backend volumes no PV references and
//! backing files no disk owns; deleting volumes is opt-in, guarded, and only
//! ever of this cluster's own volumes.
#![forbid(unsafe_code)]

pub mod metrics;
pub mod orphans;
pub mod stale;

pub use metrics::{OrphanMetrics, ReconcilerMetrics};
pub use orphans::{OrphanConfig, OrphanSweeper};
pub use stale::{StaleAttachments, StaleConfig};
