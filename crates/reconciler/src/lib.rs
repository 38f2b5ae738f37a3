//! Background loops that keep attachment state true to the cluster.
//!
//! `stale`: a Node watch releases the attachments of a node tainted
//! out-of-service the moment the taint is seen, and reports (never
//! releases) those of a deleted Node; a periodic sweep (also run at start,
//! after every backend reconnect and when a Node is deleted) releases
//! holders whose VolumeAttachment no longer exists and reports attachments
//! on deleted or long NotReady nodes. It never deletes VolumeAttachments or
//! PVs: Kubernetes owns those.
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
