//! The ROSE Data Server backend over the RouterOS CLI.
//!
//! This crate owns everything that speaks to the RDS: the SSH transport
//! (`client`), typed and validated commands (`command`), the parser of
//! `print detail` records (`record`), error classification (`error`) and the
//! disk operations built from them (`rds`), the ways of copying a disk
//! for snapshots and clones (`snapshots`), and which hosts may connect to a
//! disk's export (`access`). It knows nothing about CSI or
//! Kubernetes; the CSI layer maps its errors to gRPC codes. What it takes to
//! be true about RouterOS (commands, output shapes, error texts, what is
//! recorded from real hardware and what is assumed) is `docs/routeros.md`.
#![forbid(unsafe_code)]

pub mod access;
pub mod client;
pub mod command;
/// The driver's per-disk records, kept in the disk's comment (defined in
/// the `storage` crate: every backend keeps the same records).
pub mod comment {
    pub use storage::meta::*;
    /// What the driver records in a disk's comment.
    pub type DiskComment = storage::VolumeMeta;
}
pub mod error;
pub mod metrics;
pub mod rds;
pub mod record;
pub mod snapshots;

pub use access::{encode_allowed_hosts, HostAccess, HostNqn, ALLOW_HOST_PROPERTY, NO_HOST_NQN};
pub use client::{fingerprint, load_key, Client, ClientConfig, HostKeyPolicy, Output};
pub use command::{Command, Nqn, RosPath, Slot, SlotPrefix};
pub use comment::{ClusterId, CopyMethod, DiskComment, Lineage, COMMENT_TAG};
pub use error::{Error, Result, ValidationError};
pub use metrics::ClientMetrics;
pub use rds::{Capacity, Disk, FileEntry, NewDisk, Rds, SNAPSHOT_SLOT_PREFIX, SUBVOLUME_IMAGE};
pub use record::{parse_records, parse_size, Record};
pub use snapshots::{CopyProgress, CopyState, PoolFilesystem, Subvolume};
