//! The storage backend seam: what the CSI layer knows of a storage server,
//! in the driver's own terms.
//!
//! This crate owns the names every backend shares (volume IDs, ID
//! prefixes, NQNs; `names`), the records the driver keeps with each volume
//! (`meta`), and the [`Backend`] trait the controller is written against
//! (`backend`): volumes, snapshots, capacity and which hosts may connect,
//! with the capabilities a backend declares. It knows nothing of RouterOS,
//! LVM, CSI or Kubernetes: each backend crate maps the trait onto its
//! server, and the CSI layer maps its errors to gRPC codes.
#![forbid(unsafe_code)]

pub mod backend;
pub mod meta;
pub mod names;

pub use backend::{
    Backend, Capabilities, Capacity, CopySpec, Error, ErrorKind, Export, Layout, NewVolume, Place,
    PoolInfo, Result, SnapshotSpec, Volume, SNAPSHOT_ID_PREFIX,
};
pub use meta::{ClusterId, CopyMethod, Lineage, VolumeMeta, COMMENT_TAG};
pub use names::{IdPrefix, Nqn, ValidationError, VolumeId};
