//! A Linux host as NVMe/TCP target, managed over SSH: volumes are LVM thin
//! volumes of one pool, exported through the kernel NVMe target (nvmet)
//! configfs, one subsystem per volume, with only the hosts the driver
//! allows.
//!
//! The pieces: validated names (`names`), the shell the scripts run in
//! (`shell`: SSH through the `routeros` crate's client, or local), the
//! LVM scripts and `lvs` parser (`lvm`), the configfs scripts and listing
//! parser (`nvmet`), the driver's records as LVM tags (`meta`), error
//! classification (`error`), the API in the driver's terms (`target`) and
//! that API behind the driver's storage backend trait (`backend`).
//! It knows nothing of CSI or Kubernetes.
#![forbid(unsafe_code)]

pub mod backend;
pub mod error;
pub mod lvm;
pub mod meta;
pub mod names;
pub mod nvmet;
pub mod shell;
pub mod target;

pub use backend::NvmetBackend;
pub use error::{Error, Result, ValidationError};
pub use meta::Meta;
pub use names::{Nqn, NqnPrefix, PoolName, PortSpec, VgName, VolumeName, DEFAULT_NQN_PREFIX};
pub use shell::{LocalShell, Output, Privilege, Shell, SshShell};
pub use target::{Capacity, Export, LinuxTarget, TargetConfig, Volume};

#[cfg(test)]
mod target_tests;
