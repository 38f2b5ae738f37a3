//! [`DataPath`]: connect, resolve, format, mount, over the two host traits.

mod connect;
mod filesystem;
mod mounts;
mod resolve;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::error::{Error, ErrorKind, Result};
use crate::exec::{ConnectArgs, Duty, Exec, FsType, HostCommand, Output};
use crate::format::{self, Decision, Facts, FsckOutcome, Head, History, HEAD_BYTES};
use crate::host::{validate_nqn, HostIdentity, NqnPrefix};
use crate::mount::{classify, MountOptions, MountState};
use crate::mountinfo::{self, is_mount_point, mounts_of, Mount};
use crate::steps::mark;
use crate::sys::{DevId, FileKind, FsStats, MountRequest, MsFlags, Sys};
use crate::sysfs::{self, CtrlState, NvmeName};

/// Deadlines.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// nvme-cli and blkid.
    pub command: Duration,
    /// mkfs, e2fsck, resize2fs, xfs_growfs.
    pub format: Duration,
    /// How long a block device may take to appear after a connect, or to
    /// reach its new size after a rescan.
    pub device: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            command: Duration::from_secs(30),
            format: Duration::from_secs(600),
            device: Duration::from_secs(15),
        }
    }
}

/// Where the kernel's views live (tests and odd hosts may move them).
#[derive(Debug, Clone)]
pub struct Paths {
    pub sysfs: PathBuf,
    pub dev: PathBuf,
    pub mountinfo: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            sysfs: "/sys".into(),
            dev: "/dev".into(),
            mountinfo: "/proc/self/mountinfo".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub nqn_prefix: NqnPrefix,
    pub host: HostIdentity,
    pub timeouts: Timeouts,
    /// How often sysfs is looked at while waiting for a device.
    pub poll_interval: Duration,
    pub paths: Paths,
}

impl Config {
    pub fn new(nqn_prefix: NqnPrefix, host: HostIdentity) -> Self {
        Config {
            nqn_prefix,
            host,
            timeouts: Timeouts::default(),
            poll_interval: Duration::from_millis(10),
            paths: Paths::default(),
        }
    }
}

/// What [`DataPath::connect_with`] does with a subsystem that is connected
/// but has no block device after the wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviceless {
    /// Disconnect and connect again: nothing of the volume is in use here.
    Reconnect,
    /// Never disconnect (something of the volume is mounted or published
    /// here, and a disconnect would fail its I/O for good): refuse for
    /// now, so the caller retries while the kernel keeps reconnecting.
    Keep,
}

/// An NVMe/TCP target and the connect tuning of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub address: String,
    pub port: u16,
    pub nqn: String,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub name: String,
    pub state: CtrlState,
    pub transport: String,
    pub address: BTreeMap<String, String>,
}

/// A usable block device: sysfs and the `/dev` node agree on its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    pub name: String,
    pub dev: DevId,
    pub size_bytes: u64,
    pub path: PathBuf,
}

/// What sysfs says about one subsystem NQN right now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subsystem {
    pub nqn: String,
    pub controllers: Vec<Controller>,
    /// Usable block devices, in kernel-name order.
    pub devices: Vec<BlockDevice>,
    /// Block devices sysfs shows whose `/dev` node is missing or stands for
    /// another device.
    pub pending: Vec<String>,
}

impl Subsystem {
    pub fn is_connected(&self) -> bool {
        !self.controllers.is_empty()
    }

    /// The device to use.
    pub fn device(&self) -> Option<&BlockDevice> {
        self.devices.first()
    }

    pub fn dev_ids(&self) -> Vec<DevId> {
        self.devices.iter().map(|d| d.dev).collect()
    }

    pub fn all_live(&self) -> bool {
        !self.controllers.is_empty() && self.controllers.iter().all(|c| c.state == CtrlState::Live)
    }

    /// One line for messages: controllers and their states, devices.
    pub fn describe(&self) -> String {
        if self.controllers.is_empty() {
            return "not connected".into();
        }
        let ctrls: Vec<String> = self
            .controllers
            .iter()
            .map(|c| format!("{} ({})", c.name, c.state))
            .collect();
        let mut s = format!("controllers {}", ctrls.join(", "));
        if self.devices.is_empty() {
            s.push_str("; no block device");
        } else {
            let devs: Vec<String> = self
                .devices
                .iter()
                .map(|d| format!("{} ({})", d.path.display(), d.dev))
                .collect();
            s.push_str(&format!("; devices {}", devs.join(", ")));
        }
        if !self.pending.is_empty() {
            s.push_str(&format!(
                "; sysfs shows {} without a matching /dev node",
                self.pending.join(", ")
            ));
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connected {
    pub device: BlockDevice,
    /// An existing connection was used.
    pub reused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prepared {
    /// A filesystem was there (and, for ext4, passed `e2fsck -p`).
    Existing,
    /// The device was definitively empty and got a new filesystem.
    Formatted,
}

/// Block device nodes found under a directory tree.
#[derive(Debug, Clone, Default)]
pub struct NodeScan {
    pub nodes: BTreeMap<DevId, PathBuf>,
    /// False when the walk stopped early (too many entries, an unreadable
    /// directory): absence then proves nothing.
    pub complete: bool,
}

/// How long a connection with no block device is given before it is torn
/// down and made again.
const SETTLE: Duration = Duration::from_secs(2);
/// Most mounts stacked on one path that an unmount loop will take off.
const MAX_STACKED: usize = 16;

/// The node data path. Holds no state about volumes: every answer comes
/// from sysfs and the mount table at the time of the call, since device
/// names change under a reconnect (docs/safety.md#renumbered-devices).
pub struct DataPath<E, S> {
    exec: E,
    sys: S,
    config: Config,
}

fn is_not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl<E: Exec, S: Sys> DataPath<E, S> {
    pub fn new(exec: E, sys: S, config: Config) -> Self {
        DataPath { exec, sys, config }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn sys(&self) -> &S {
        &self.sys
    }

    pub fn exec(&self) -> &E {
        &self.exec
    }

    pub fn prefix(&self) -> &NqnPrefix {
        &self.config.nqn_prefix
    }

    async fn run(&self, cmd: &HostCommand) -> Result<Output> {
        let timeout = match cmd.duty() {
            Duty::Quick => self.config.timeouts.command,
            Duty::Long => self.config.timeouts.format,
        };
        let out = self
            .exec
            .run(cmd, timeout)
            .await
            .map_err(|source| Error::Exec {
                command: cmd.command_line(),
                source,
            });
        mark(cmd.step());
        out
    }

    async fn run_ok(&self, cmd: &HostCommand, kind: ErrorKind) -> Result<Output> {
        let out = self.run(cmd).await?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Failed {
                command: cmd.command_line(),
                status: out.status(),
                diagnostic: out.diagnostic(),
                kind,
            })
        }
    }

    fn sysfs(&self, rel: &str) -> PathBuf {
        self.config.paths.sysfs.join(rel)
    }

    async fn read_trimmed(&self, path: &Path) -> Option<String> {
        self.sys
            .read_to_string(path)
            .await
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Entries of a sysfs directory; a missing directory is empty (no NVMe
    /// module loaded, or the object went away while we looked).
    async fn list(&self, dir: &Path) -> Result<Vec<String>> {
        match self.sys.read_dir(dir).await {
            Ok(v) => Ok(v),
            Err(e) if is_not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(Error::io("list", dir, e)),
        }
    }
}
