//! The node data path of rds-csi: from a volume's NVMe/TCP target to a
//! mounted filesystem or a device node, and back.
//!
//! It connects with nvme-cli, finds the block device of an NQN through sysfs
//! on every call (never a cached `/dev` name), decides whether a device may
//! be formatted (only when it is definitively empty), makes filesystems,
//! mounts and unmounts with syscalls checked against the mount table, and
//! creates device nodes for raw block volumes. It refuses to disconnect any
//! subsystem outside the configured NQN prefix.
//!
//! Its boundary: it knows nothing about CSI, gRPC or Kubernetes, and keeps
//! no state about volumes. All host access goes through two traits, [`Exec`]
//! (host commands) and [`Sys`] (syscalls and the filesystem), with real
//! implementations here and a recording fake ([`fake::FakeHost`], feature
//! `fake`), so every decision is tested without root or NVMe hardware.
//! Parsers of what the host prints (mountinfo, sysfs, blkid) are pure
//! functions with captured fixtures and property tests. [`DataPath`] is
//! split by what it touches: `datapath/resolve` (sysfs), `connect`
//! (nvme-cli), `filesystem` (the format decision's facts, fsck, grow) and
//! `mounts`. The CSI layer re-exports this crate's [`FsType`] and
//! [`chain`], so there is one of each.
#![forbid(unsafe_code)]

pub mod datapath;
pub mod error;
pub mod exec;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod format;
pub mod host;
pub mod mount;
pub mod mountinfo;
pub mod steps;
pub mod sys;
pub mod sysfs;

pub use datapath::{
    BlockDevice, Config, Connected, Controller, DataPath, Deviceless, NodeScan, Paths, Prepared,
    Subsystem, Target, Timeouts,
};
pub use error::{Error, ErrorKind, Result};
pub use exec::{Exec, FsType, HostCommand, Output, RealExec};
pub use host::{HostIdentity, NqnPrefix};
pub use sys::{DevId, FileKind, FileStat, FsStats, MountRequest, MsFlags, RealSys, Sys};

/// The message of an error with every cause appended: "a: b: c".
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.ends_with(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests;
