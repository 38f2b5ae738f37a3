//! [`DataPath`]: connect, resolve, format, mount, over the two host traits.

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
/// from sysfs and the mount table at the time of the call (lesson 5).
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

    // ------------------------------------------------------------ sysfs

    /// Every subsystem on the host (all NQNs, owned or not).
    pub async fn subsystems(&self) -> Result<Vec<Subsystem>> {
        self.scan(None).await
    }

    /// The subsystem `nqn` as sysfs shows it now. Never cached.
    pub async fn resolve(&self, nqn: &str) -> Result<Subsystem> {
        let s = self.lookup(nqn).await;
        mark("sysfs");
        s
    }

    /// [`Self::resolve`] without charging a step (loops charge their own).
    async fn lookup(&self, nqn: &str) -> Result<Subsystem> {
        Ok(self
            .scan(Some(nqn))
            .await?
            .into_iter()
            .next()
            .unwrap_or_else(|| Subsystem {
                nqn: nqn.to_string(),
                ..Default::default()
            }))
    }

    async fn scan(&self, only: Option<&str>) -> Result<Vec<Subsystem>> {
        let mut found: BTreeMap<String, (Vec<Controller>, BTreeSet<String>)> = BTreeMap::new();
        let class_nvme = self.sysfs("class/nvme");
        for name in self.list(&class_nvme).await? {
            if !matches!(sysfs::parse_name(&name), Some(NvmeName::Controller(_))) {
                continue;
            }
            let dir = class_nvme.join(&name);
            // A controller being deleted can vanish between two reads.
            let Some(nqn) = self.read_trimmed(&dir.join("subsysnqn")).await else {
                continue;
            };
            if only.is_some_and(|o| o != nqn) {
                continue;
            }
            let state = match self.read_trimmed(&dir.join("state")).await {
                Some(s) => sysfs::parse_state(&s),
                None => CtrlState::Other("unknown".into()),
            };
            let transport = self
                .read_trimmed(&dir.join("transport"))
                .await
                .unwrap_or_default();
            let address = sysfs::parse_address(
                &self
                    .read_trimmed(&dir.join("address"))
                    .await
                    .unwrap_or_default(),
            );
            let entry = found.entry(nqn).or_default();
            for child in self.list(&dir).await? {
                if let Some(b) = sysfs::parse_name(&child).and_then(NvmeName::block_device) {
                    entry.1.insert(b);
                }
            }
            entry.0.push(Controller {
                name,
                state,
                transport,
                address,
            });
        }
        let class_subsys = self.sysfs("class/nvme-subsystem");
        for name in self.list(&class_subsys).await? {
            if !matches!(sysfs::parse_name(&name), Some(NvmeName::Subsystem(_))) {
                continue;
            }
            let dir = class_subsys.join(&name);
            let Some(nqn) = self.read_trimmed(&dir.join("subsysnqn")).await else {
                continue;
            };
            if only.is_some_and(|o| o != nqn) {
                continue;
            }
            let entry = found.entry(nqn).or_default();
            for child in self.list(&dir).await? {
                if let Some(n @ NvmeName::Namespace { .. }) = sysfs::parse_name(&child) {
                    entry.1.extend(n.block_device());
                }
            }
        }
        let mut out = Vec::new();
        for (nqn, (mut controllers, names)) in found {
            controllers.sort_by_key(|c| sysfs_order(&c.name));
            let mut names: Vec<String> = names.into_iter().collect();
            names.sort_by_key(|n| sysfs_order(n));
            let mut devices = Vec::new();
            let mut pending = Vec::new();
            for name in names {
                let block = self.sysfs("class/block").join(&name);
                let Some(dev) = self
                    .read_trimmed(&block.join("dev"))
                    .await
                    .and_then(|s| sysfs::parse_dev(&s))
                else {
                    continue;
                };
                let size_bytes = self
                    .read_trimmed(&block.join("size"))
                    .await
                    .and_then(|s| sysfs::parse_size_bytes(&s))
                    .unwrap_or(0);
                let path = self.config.paths.dev.join(&name);
                match self.sys.lstat(&path).await {
                    Ok(st) if st.kind == FileKind::BlockDevice && st.rdev == Some(dev) => devices
                        .push(BlockDevice {
                            name,
                            dev,
                            size_bytes,
                            path,
                        }),
                    _ => pending.push(name),
                }
            }
            out.push(Subsystem {
                nqn,
                controllers,
                devices,
                pending,
            });
        }
        Ok(out)
    }

    /// Waits, polling sysfs, until `nqn` has a usable block device.
    pub async fn wait_for_device(&self, nqn: &str, timeout: Duration) -> Result<BlockDevice> {
        let start = tokio::time::Instant::now();
        let mut polls = 0u32;
        loop {
            let s = self.lookup(nqn).await;
            polls += 1;
            let s = match s {
                Ok(s) => s,
                Err(e) => {
                    mark("device_wait");
                    return Err(e);
                }
            };
            if let Some(d) = s.device() {
                let seen = std::time::SystemTime::now();
                mark("device_wait");
                debug!(nqn, device = %d.path.display(), waited = ?start.elapsed(), polls, "block device ready");
                self.log_detection(d, seen, polls).await;
                return Ok(d.clone());
            }
            if start.elapsed() >= timeout {
                mark("device_wait");
                return Err(Error::NoDevice {
                    nqn: nqn.to_string(),
                    waited: timeout,
                    detail: s.describe(),
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// How long after the kernel made the device node (its ctime, set by
    /// devtmpfs when the device is added) the driver saw the device; only
    /// when the `node_steps` target logs at debug level (the bench).
    async fn log_detection(&self, d: &BlockDevice, seen: std::time::SystemTime, polls: u32) {
        if !tracing::enabled!(target: "node_steps", tracing::Level::DEBUG) {
            return;
        }
        let Ok(Some(created)) = self.sys.lstat(&d.path).await.map(|st| st.changed) else {
            return;
        };
        let us = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
                .unwrap_or(0)
        };
        let (created_us, seen_us) = (us(created), us(seen));
        debug!(
            target: "node_steps",
            device = %d.path.display(),
            created_unix_us = created_us,
            seen_unix_us = seen_us,
            detect_us = seen_us.saturating_sub(created_us),
            polls,
            "device detected"
        );
    }

    /// Whether the driver may connect to or disconnect from `nqn`.
    pub fn check_owned(&self, nqn: &str) -> Result<()> {
        validate_nqn(nqn).map_err(Error::InvalidArgument)?;
        if !self.config.nqn_prefix.owns(nqn) {
            return Err(Error::ForeignNqn {
                nqn: nqn.to_string(),
                prefix: self.config.nqn_prefix.owned_prefix(),
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------ nvme-cli

    /// Connects to a target and returns its block device. Idempotent: a
    /// live connection with a device is reused; a connection without a
    /// device is torn down and made again.
    pub async fn connect(&self, t: &Target) -> Result<Connected> {
        self.connect_with(t, Deviceless::Reconnect).await
    }

    /// [`Self::connect`], told what to do with a connection that has no
    /// block device even after the wait.
    pub async fn connect_with(&self, t: &Target, deviceless: Deviceless) -> Result<Connected> {
        // Never connect what could not be disconnected later.
        self.check_owned(&t.nqn)?;
        let s = self.resolve(&t.nqn).await?;
        if let Some(d) = s.device() {
            debug!(nqn = %t.nqn, state = %s.describe(), "already connected");
            return Ok(Connected {
                device: d.clone(),
                reused: true,
            });
        }
        if s.is_connected() {
            let settle = match deviceless {
                Deviceless::Reconnect => SETTLE.min(self.config.timeouts.device),
                Deviceless::Keep => self.config.timeouts.device,
            };
            if let Ok(d) = self.wait_for_device(&t.nqn, settle).await {
                return Ok(Connected {
                    device: d,
                    reused: true,
                });
            }
            if deviceless == Deviceless::Keep {
                let now = self.resolve(&t.nqn).await?;
                warn!(nqn = %t.nqn, state = %now.describe(), "connected but no block device; the volume is in use, so the connection is kept");
                return Err(Error::refused_for_now(
                    format!("disconnect {} to connect it again", t.nqn),
                    format!(
                        "it is connected but has no block device after {:?} ({}), and the volume is still mounted or published on this node",
                        settle,
                        now.describe()
                    ),
                ));
            }
            warn!(nqn = %t.nqn, state = %s.describe(), "connected but no block device; reconnecting");
            self.disconnect(&t.nqn).await?;
        }
        let cmd = HostCommand::NvmeConnect(ConnectArgs {
            address: t.address.clone(),
            port: t.port,
            nqn: t.nqn.clone(),
            ctrl_loss_tmo: t.ctrl_loss_tmo,
            reconnect_delay: t.reconnect_delay,
            keep_alive_tmo: t.keep_alive_tmo,
            host_nqn: self.config.host.nqn.clone(),
            host_id: self.config.host.id.clone(),
        });
        let out = self.run(&cmd).await?;
        if !out.success() {
            // nvme-cli also fails when the subsystem got connected meanwhile
            // ("already connected"): look before giving up.
            if !self.resolve(&t.nqn).await?.is_connected() {
                return Err(Error::Failed {
                    command: cmd.command_line(),
                    status: out.status(),
                    diagnostic: out.diagnostic(),
                    kind: ErrorKind::Unavailable,
                });
            }
        }
        let device = self
            .wait_for_device(&t.nqn, self.config.timeouts.device)
            .await?;
        info!(nqn = %t.nqn, device = %device.path.display(), dev = %device.dev, "connected");
        Ok(Connected {
            device,
            reused: false,
        })
    }

    /// Disconnects every controller of `nqn`: the one place a disconnect is
    /// issued, and it refuses any NQN outside the configured prefix
    /// (lesson 4) before running anything.
    pub async fn disconnect(&self, nqn: &str) -> Result<()> {
        self.check_owned(nqn)?;
        if !self.resolve(nqn).await?.is_connected() {
            return Ok(());
        }
        self.run_ok(
            &HostCommand::NvmeDisconnect {
                nqn: nqn.to_string(),
            },
            ErrorKind::Internal,
        )
        .await?;
        let start = tokio::time::Instant::now();
        loop {
            let s = self.lookup(nqn).await;
            mark("disconnect_wait");
            let s = s?;
            if !s.is_connected() {
                info!(nqn, "disconnected");
                return Ok(());
            }
            if start.elapsed() >= self.config.timeouts.command {
                return Err(Error::Failed {
                    command: format!("nvme disconnect -n {nqn}"),
                    status: "success".into(),
                    diagnostic: format!("still {}", s.describe()),
                    kind: ErrorKind::Internal,
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// Rescans the namespaces of every controller of `nqn`, then waits (up
    /// to the device deadline) until the device is at least `min_bytes`.
    pub async fn rescan(&self, nqn: &str, min_bytes: u64) -> Result<BlockDevice> {
        let s = self.resolve(nqn).await?;
        if !s.is_connected() {
            return Err(Error::refused(
                format!("rescan {nqn}"),
                "the volume is not connected on this node",
            ));
        }
        for c in &s.controllers {
            self.run_ok(
                &HostCommand::NvmeNsRescan {
                    controller: self.config.paths.dev.join(&c.name),
                },
                ErrorKind::Internal,
            )
            .await?;
        }
        let start = tokio::time::Instant::now();
        loop {
            let s = self.lookup(nqn).await;
            mark("rescan_wait");
            let s = s?;
            if let Some(d) = s.device() {
                if d.size_bytes >= min_bytes {
                    return Ok(d.clone());
                }
                if start.elapsed() >= self.config.timeouts.device {
                    return Err(Error::refused_for_now(
                        format!("expand {}", d.path.display()),
                        format!(
                            "the device is {} bytes after a rescan, less than the requested {min_bytes}",
                            d.size_bytes
                        ),
                    ));
                }
            } else if start.elapsed() >= self.config.timeouts.device {
                return Err(Error::NoDevice {
                    nqn: nqn.to_string(),
                    waited: self.config.timeouts.device,
                    detail: s.describe(),
                });
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    // ------------------------------------------------------------ filesystems

    fn stable(s: &Subsystem, device: &BlockDevice) -> bool {
        s.all_live()
            && s.devices
                .iter()
                .any(|d| d.dev == device.dev && d.path == device.path)
    }

    /// Makes sure `device` holds a filesystem of type `fs`, formatting it
    /// only when the device is definitively empty and `history` says
    /// nothing against it (see [`crate::format`]). Whatever `history` rests
    /// on (an API call) is read by the caller before: nothing but the pure
    /// decision stands between the last identity check and mkfs.
    pub async fn prepare_filesystem(
        &self,
        nqn: &str,
        device: &BlockDevice,
        fs: FsType,
        history: impl Into<History>,
    ) -> Result<Prepared> {
        let history = history.into();
        let before = self.resolve(nqn).await?;
        let head = match self.sys.read_head(&device.path, HEAD_BYTES).await {
            Ok(b) => Head::of(&b),
            Err(e) => Head::Unreadable(e.to_string()),
        };
        mark("read_head");
        let blkid = if let Head::Unreadable(_) = head {
            Err("not probed: the device could not be read".to_string())
        } else {
            match self
                .run(&HostCommand::BlkidProbe {
                    device: device.path.clone(),
                })
                .await
            {
                Ok(out) => format::interpret_blkid(&out),
                Err(e) => Err(crate::chain(&e)),
            }
        };
        // The identity check (NQN -> major:minor, controllers live) that
        // mkfs relies on: the last look at sysfs before it runs.
        let after = self.resolve(nqn).await?;
        let facts = Facts {
            head,
            blkid,
            device_stable: Self::stable(&before, device) && Self::stable(&after, device),
            formatted_before: history.formatted_before,
            recorded: history.recorded,
        };
        debug!(device = %device.path.display(), ?facts, "probed");
        match format::decide(&facts, fs) {
            Decision::Refuse { reason, retry } => Err(Error::Refused {
                action: format!("format or mount {}", device.path.display()),
                reason,
                retry,
            }),
            Decision::Format => {
                info!(device = %device.path.display(), %fs, nqn, "device is definitively empty; making a filesystem");
                self.run_ok(
                    &HostCommand::Mkfs {
                        fs,
                        device: device.path.clone(),
                    },
                    ErrorKind::Internal,
                )
                .await?;
                // No second blkid to confirm: the mount that follows names
                // the filesystem type and fails on anything else, and a
                // retry probes again before any mkfs. (A probe costs a
                // process; under emulation tens of milliseconds.)
                Ok(Prepared::Formatted)
            }
            Decision::UseExisting => {
                if fs == FsType::Ext4 {
                    self.check_ext4(device).await?;
                }
                // xfs: the log is replayed by mount; xfs_repair is for people.
                Ok(Prepared::Existing)
            }
        }
    }

    async fn check_ext4(&self, device: &BlockDevice) -> Result<()> {
        let cmd = HostCommand::E2fsck {
            device: device.path.clone(),
        };
        let out = self.run(&cmd).await?;
        match format::interpret_e2fsck(&out) {
            FsckOutcome::Clean => Ok(()),
            FsckOutcome::Repaired => {
                warn!(device = %device.path.display(), output = %out.diagnostic(), "e2fsck -p repaired the filesystem");
                Ok(())
            }
            FsckOutcome::Uncorrected(d) => Err(Error::refused(
                format!("mount {}", device.path.display()),
                format!("e2fsck -p found errors it may not fix by itself; repair the volume by hand: {d}"),
            )),
            FsckOutcome::Failed(d) => Err(Error::Failed {
                command: cmd.command_line(),
                status: out.status(),
                diagnostic: d,
                kind: ErrorKind::Internal,
            }),
        }
    }

    /// Grows a mounted filesystem to its device.
    pub async fn grow_filesystem(
        &self,
        device: &BlockDevice,
        mount_point: &Path,
        fs_type: &str,
    ) -> Result<()> {
        let cmd = match FsType::parse(fs_type) {
            Some(FsType::Ext4) => HostCommand::Resize2fs {
                device: device.path.clone(),
            },
            Some(FsType::Xfs) => HostCommand::XfsGrowfs {
                mount_point: mount_point.to_path_buf(),
            },
            None => {
                return Err(Error::InvalidArgument(format!(
                    "cannot grow a {fs_type} filesystem"
                )))
            }
        };
        self.run_ok(&cmd, ErrorKind::Internal).await?;
        Ok(())
    }

    // ------------------------------------------------------------ mounts

    /// The mount table, read now.
    pub async fn mounts(&self) -> Result<Vec<Mount>> {
        let p = &self.config.paths.mountinfo;
        let text = self
            .sys
            .read_to_string(p)
            .await
            .map_err(|e| Error::io("read", p, e));
        let mounts = text.map(|t| mountinfo::parse(&t));
        mark("mountinfo");
        mounts
    }

    /// Whether no block device with this number exists any more.
    pub async fn device_gone(&self, dev: DevId) -> Result<bool> {
        let p = self.sysfs(&format!("dev/block/{dev}/dev"));
        match self.sys.read_to_string(&p).await {
            Ok(_) => Ok(false),
            Err(e) if is_not_found(&e) => Ok(true),
            Err(e) => Err(Error::io("read", p, e)),
        }
    }

    async fn expect_mounted(&self, target: &Path, dev: DevId) -> Result<()> {
        match classify(&self.mounts().await?, target, &[dev]) {
            MountState::Current(_) => Ok(()),
            other => Err(Error::Failed {
                command: format!("mount {}", target.display()),
                status: "success".into(),
                diagnostic: format!("but the mount table shows {other:?}"),
                kind: ErrorKind::Internal,
            }),
        }
    }

    /// Mounts a device's filesystem at `target` (created if missing).
    pub async fn mount_device(
        &self,
        device: &BlockDevice,
        target: &Path,
        fs: FsType,
        opts: &MountOptions,
    ) -> Result<()> {
        self.sys
            .create_dir_all(target)
            .await
            .map_err(|e| Error::io("create", target, e))?;
        let req = MountRequest {
            source: Some(device.path.clone()),
            target: target.to_path_buf(),
            fstype: Some(fs.as_str().to_string()),
            flags: opts.flags,
            data: opts.data_string(),
        };
        let mounted = self.sys.mount(&req).await;
        mark("mount");
        mounted.map_err(|e| Error::io("mount", target, e))?;
        self.expect_mounted(target, device.dev).await?;
        info!(device = %device.path.display(), target = %target.display(), %fs, "mounted");
        Ok(())
    }

    /// Bind-mounts `source` at `target` (a directory, created if missing),
    /// then applies `flags` (read-only, nosuid, ...) with a bind remount:
    /// the kernel ignores them on the bind itself.
    pub async fn bind_mount(
        &self,
        source: &Path,
        target: &Path,
        dev: DevId,
        flags: MsFlags,
    ) -> Result<()> {
        self.sys
            .create_dir_all(target)
            .await
            .map_err(|e| Error::io("create", target, e))?;
        let bind = MountRequest {
            source: Some(source.to_path_buf()),
            target: target.to_path_buf(),
            fstype: None,
            flags: MsFlags::MS_BIND,
            data: None,
        };
        self.sys
            .mount(&bind)
            .await
            .map_err(|e| Error::io("bind mount", target, e))?;
        if !flags.is_empty() {
            let remount = MountRequest {
                source: None,
                target: target.to_path_buf(),
                fstype: None,
                flags: MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                data: None,
            };
            if let Err(e) = self.sys.mount(&remount).await {
                // Never leave a writable bind where a read-only one was asked.
                let _ = self.sys.umount(target, false).await;
                return Err(Error::io("remount with flags", target, e));
            }
        }
        mark("bind_mount");
        self.expect_mounted(target, dev).await?;
        info!(source = %source.display(), target = %target.display(), ?flags, "bind mounted");
        Ok(())
    }

    /// Unmounts everything stacked on `target`. Returns how many mounts
    /// were taken off; fails if the path is still a mount point.
    pub async fn unmount_all(&self, target: &Path, detach: bool) -> Result<usize> {
        for n in 0..=MAX_STACKED {
            if !is_mount_point(&self.mounts().await?, target) {
                return Ok(n);
            }
            if n == MAX_STACKED {
                break;
            }
            let r = self.sys.umount(target, detach).await;
            mark("umount");
            r.map_err(|e| Error::io("unmount", target, e))?;
            info!(target = %target.display(), detach, "unmounted");
        }
        Err(Error::refused(
            format!("unmount {}", target.display()),
            format!("still a mount point after {MAX_STACKED} unmounts"),
        ))
    }

    /// Creates a block device node for `dev` at `path` (lesson 2: never a
    /// bind mount of `/dev`). Read-only volumes get mode 0440.
    pub async fn make_device_node(&self, path: &Path, dev: DevId, readonly: bool) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.sys
                .create_dir_all(parent)
                .await
                .map_err(|e| Error::io("create", parent, e))?;
        }
        let mode = if readonly { 0o440 } else { 0o660 };
        self.sys
            .mknod_block(path, mode, dev)
            .await
            .map_err(|e| Error::io("mknod", path, e))?;
        info!(path = %path.display(), %dev, readonly, "device node created");
        Ok(())
    }

    pub async fn statfs(&self, path: &Path) -> Result<FsStats> {
        self.sys
            .statfs(path)
            .await
            .map_err(|e| Error::io("statfs", path, e))
    }

    /// Why the subsystem's devices may not be disconnected, if they may
    /// not: mounted anywhere, held by another block device, or opened
    /// exclusively.
    pub async fn in_use(&self, s: &Subsystem, mounts: &[Mount]) -> Result<Option<String>> {
        let why = self.why_in_use(s, mounts).await;
        mark("in_use");
        why
    }

    async fn why_in_use(&self, s: &Subsystem, mounts: &[Mount]) -> Result<Option<String>> {
        for d in &s.devices {
            if let Some(m) = mounts_of(mounts, d.dev).next() {
                return Ok(Some(format!(
                    "{} is mounted at {}",
                    d.path.display(),
                    m.mount_point.display()
                )));
            }
            let holders = self
                .list(&self.sysfs(&format!("class/block/{}/holders", d.name)))
                .await?;
            if !holders.is_empty() {
                return Ok(Some(format!(
                    "{} is held by {}",
                    d.path.display(),
                    holders.join(", ")
                )));
            }
            match self.sys.device_claimed(&d.path).await {
                Ok(false) => {}
                Ok(true) => {
                    return Ok(Some(format!(
                        "{} is open exclusively by another user",
                        d.path.display()
                    )))
                }
                Err(e) => return Err(Error::io("open exclusively", &d.path, e)),
            }
        }
        Ok(None)
    }

    /// Block device nodes under `root`, without entering directories that
    /// are mount points (other volumes' data) and within bounds.
    pub async fn device_nodes_under(
        &self,
        root: &Path,
        mounts: &[Mount],
        max_depth: usize,
        max_entries: usize,
    ) -> NodeScan {
        let mut scan = NodeScan {
            nodes: BTreeMap::new(),
            complete: true,
        };
        let mut queue = VecDeque::from([(root.to_path_buf(), 0usize)]);
        let mut seen = 0usize;
        while let Some((dir, depth)) = queue.pop_front() {
            let names = match self.sys.read_dir(&dir).await {
                Ok(n) => n,
                Err(e) if is_not_found(&e) && dir != root => continue,
                Err(e) => {
                    warn!(dir = %dir.display(), error = %e, "cannot list directory");
                    scan.complete = false;
                    continue;
                }
            };
            for name in names {
                seen += 1;
                if seen > max_entries {
                    scan.complete = false;
                    return scan;
                }
                let path = dir.join(&name);
                let Ok(st) = self.sys.lstat(&path).await else {
                    continue;
                };
                match st.kind {
                    FileKind::BlockDevice => {
                        if let Some(d) = st.rdev {
                            scan.nodes.entry(d).or_insert(path);
                        }
                    }
                    // Deeper than max_depth is left out on purpose: kubelet
                    // keeps device nodes a few levels down.
                    FileKind::Dir if depth + 1 < max_depth && !is_mount_point(mounts, &path) => {
                        queue.push_back((path, depth + 1));
                    }
                    _ => {}
                }
            }
        }
        scan
    }
}

/// Kernel names in numeric order (`nvme2n1` before `nvme10n1`).
fn sysfs_order(name: &str) -> (u32, u32, u32, String) {
    match sysfs::parse_name(name) {
        Some(NvmeName::Controller(c)) => (c, 0, 0, String::new()),
        Some(NvmeName::Subsystem(s)) => (s, 0, 0, String::new()),
        Some(NvmeName::Namespace { instance, ns }) => (instance, 0, ns, String::new()),
        Some(NvmeName::PathNamespace { subsys, ctrl, ns }) => (subsys, ctrl, ns, String::new()),
        None => (u32::MAX, u32::MAX, u32::MAX, name.to_string()),
    }
}
