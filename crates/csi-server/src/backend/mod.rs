//! The storage backends the controller serves volumes from. The
//! controller is written against the `storage` crate's [`Backend`] trait
//! alone; this module holds the RDS's implementation of it ([`rds`]) and,
//! for unit tests, an in-memory one ([`fake`]).

pub mod fake;
pub mod rds;

pub use rds::RdsBackend;
pub use storage::{
    Backend, Capabilities, Capacity, CopySpec, Error as BackendError, ErrorKind, Export, Layout,
    NewVolume, Place, PoolInfo, Result as BackendResult, SnapshotSpec, Volume,
};
