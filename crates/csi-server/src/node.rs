//! The CSI Node service: stage, publish, unpublish, unstage, expand and
//! stats for NVMe/TCP volumes, over the `nvme` crate's data path.
//!
//! Generic over the host traits ([`nvme::Exec`], [`nvme::Sys`]), so every
//! decision runs against the recording fake in tests. Every RPC validates
//! its input first (INVALID_ARGUMENT), holds the volume's guard for its
//! whole duration (a concurrent call for the same volume gets ABORTED), is
//! idempotent, and runs detached from the RPC: when kubelet's deadline
//! cancels a call, a mkfs or mount in flight finishes (and keeps the guard)
//! instead of being killed halfway.
//!
//! Safety rules this file keeps (see `reference/lessons.md`):
//! - a filesystem is made only on a definitively empty device, never on a
//!   volume whose context says `formatted=true` (lesson 1, in `nvme::format`),
//!   nor on one whose durable format record (the PV annotation, see
//!   [`format_record`]) says it was formatted; the record is read before the
//!   probe and written before a stage that found or made a filesystem
//!   returns;
//! - a raw block volume is published as a device node made with mknod,
//!   never as a bind mount of `/dev` (lesson 2);
//! - every mount decision is taken on the mount table as read now; a path
//!   is only ever removed with rmdir/unlink after it is no longer a mount
//!   point, never recursively (lesson 3);
//! - only subsystems whose NQN is the NQN prefix followed by a volume ID
//!   with the volume-ID prefix are ever disconnected, and a connection
//!   without a device is never torn down while the volume is mounted or
//!   published;
//! - the NQN is resolved to a device through sysfs on every call, and a
//!   mount whose device is not the NQN's current device is stale (lesson 5).

mod context;
pub mod events;
pub mod format_record;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nvme::mount::{classify, parse_mount_flags, MountOptions, MountState};
use nvme::mountinfo::{is_mount_point, mounts_of, Mount};
use nvme::{
    BlockDevice, DataPath, DevId, Deviceless, ErrorKind, Exec, FileKind, FsType, MsFlags, Sys,
};
use tonic::{Code, Request, Response, Status};
use tracing::{debug, info, instrument, warn, Instrument};

use attachment_manager::EventKind;

use crate::controller::VolumeLocks;
use crate::error::{chain, CsiError};
use crate::metrics::RpcMetrics;
use crate::proto::{self, node_server::Node};

pub use context::FORMATTED;
use context::{abs_path, capability, volume_id, volume_path, volume_target, Cap};
pub use events::NodeEvents;
use events::{FORMAT_REFUSED, MOUNT_FAILED, STALE_MOUNT_RECOVERED};
pub use format_record::FormatRecord;
use state::{Records, Stored, VolumeRecord};

/// Node settings, from flags.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: String,
    pub max_volumes: i64,
    pub topology: (String, String),
    /// Where the node keeps one record per staged volume.
    pub state_dir: PathBuf,
    /// Kubelet's root directory: the orphan cleaner looks for device nodes
    /// of raw block volumes under it.
    pub staging_root: PathBuf,
    /// Upper bound for a volume's ctrlLossTmo (-1, "forever", included);
    /// lesson 17: unreachable targets can hold a reboot that long.
    pub max_ctrl_loss_tmo: Option<i32>,
}

/// What to do at start with connections no staged volume accounts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrphanCleanup {
    Off,
    Report,
    Disconnect,
}

/// What the orphan cleaner saw and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanReport {
    /// Owned connections left alone, and why.
    pub kept: Vec<(String, String)>,
    /// Owned connections nothing accounts for.
    pub orphans: Vec<String>,
    pub disconnected: Vec<String>,
    pub failed: Vec<(String, String)>,
    /// Orphans seen for the first time by a periodic scan: disconnected
    /// only if the next scan still finds them orphaned.
    pub pending: Vec<String>,
}

/// Why a node RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Csi(#[from] CsiError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{op}")]
    DataPath {
        op: String,
        #[source]
        source: nvme::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::Invalid { .. } => Code::InvalidArgument,
            NodeError::Csi(e) => e.code(),
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
            NodeError::AlreadyExists(_) => Code::AlreadyExists,
            NodeError::Internal(_) => Code::Internal,
            NodeError::DataPath { source, .. } => match source.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
                ErrorKind::Internal => Code::Internal,
            },
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        Status::new(e.code(), chain(&e))
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

/// Wraps a data-path error with what the node was doing.
fn dp(op: impl Into<String>) -> impl FnOnce(nvme::Error) -> NodeError {
    let op = op.into();
    move |source| NodeError::DataPath { op, source }
}

pub struct NodeService<E, S> {
    inner: Arc<Inner<E, S>>,
}

/// Another handle on the same service (the periodic orphan scan shares
/// the RPCs' volume locks).
impl<E, S> Clone for NodeService<E, S> {
    fn clone(&self) -> Self {
        NodeService {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<E, S> {
    config: NodeConfig,
    dp: DataPath<E, S>,
    locks: VolumeLocks,
    metrics: RpcMetrics,
    events: NodeEvents,
    /// Where the node records that a volume was formatted; none: the
    /// probe alone decides.
    format_record: Option<Arc<dyn FormatRecord>>,
}

impl<E: Exec, S: Sys> NodeService<E, S> {
    /// A node service whose events are only logged.
    pub fn new(config: NodeConfig, data_path: DataPath<E, S>, metrics: RpcMetrics) -> Self {
        Self::with_events(config, data_path, metrics, NodeEvents::log_only())
    }

    /// A node service that records events on PVCs through `events`.
    pub fn with_events(
        config: NodeConfig,
        data_path: DataPath<E, S>,
        metrics: RpcMetrics,
        events: NodeEvents,
    ) -> Self {
        NodeService {
            inner: Arc::new(Inner {
                config,
                dp: data_path,
                locks: VolumeLocks::default(),
                metrics,
                events,
                format_record: None,
            }),
        }
    }

    /// Keeps the durable format record in `record`: read before any mkfs,
    /// written before a stage that made or found a filesystem returns.
    pub fn with_format_record(mut self, record: Arc<dyn FormatRecord>) -> Self {
        Arc::get_mut(&mut self.inner)
            .expect("with_format_record is called before the service is shared")
            .format_record = Some(record);
        self
    }

    /// Finds connections under the NQN prefix that no staged volume
    /// accounts for and, in `Disconnect` mode, disconnects them. Anything
    /// outside the prefix is never looked at twice.
    pub async fn clean_orphans(&self, mode: OrphanCleanup) -> NodeResult<OrphanReport> {
        self.inner.clean_orphans(mode, None).await
    }

    /// One periodic scan while serving: like [`Self::clean_orphans`], but
    /// a connection is disconnected only when `suspects` (the orphans of the
    /// previous scan) already held it, so a connection must look orphaned
    /// on two consecutive scans. `suspects` is replaced by this scan's
    /// orphans that were left connected.
    pub async fn scan_orphans(
        &self,
        mode: OrphanCleanup,
        suspects: &mut HashSet<String>,
    ) -> NodeResult<OrphanReport> {
        let report = self.inner.clean_orphans(mode, Some(suspects)).await?;
        *suspects = report
            .orphans
            .iter()
            .filter(|n| !report.disconnected.contains(n))
            .cloned()
            .collect();
        Ok(report)
    }

    /// Runs [`Self::scan_orphans`] every `interval` until cancelled.
    pub async fn run_orphan_scans(
        &self,
        mode: OrphanCleanup,
        interval: std::time::Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        if mode == OrphanCleanup::Off || interval.is_zero() {
            return;
        }
        let mut suspects = HashSet::new();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            match self.scan_orphans(mode, &mut suspects).await {
                Ok(r) if !r.orphans.is_empty() || !r.failed.is_empty() => info!(
                    orphans = r.orphans.len(),
                    pending = r.pending.len(),
                    disconnected = r.disconnected.len(),
                    failed = r.failed.len(),
                    "periodic orphan NVMe connection scan"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(error = %chain(&e), "periodic orphan scan failed; retrying next interval")
                }
            }
        }
    }

    async fn call<T, Fut>(
        &self,
        method: &'static str,
        volume: &str,
        work: impl FnOnce(Arc<Inner<E, S>>) -> Fut,
    ) -> Result<Response<T>, Status>
    where
        T: Send + 'static,
        Fut: Future<Output = NodeResult<T>> + Send + 'static,
    {
        let timer = self.inner.metrics.start(method);
        let work = work(self.inner.clone());
        let vol = volume.to_string();
        let handle = tokio::spawn(
            async move {
                // Where the time went, step by step (`node_steps=debug`).
                let (result, steps) = nvme::steps::record(work).await;
                debug!(
                    target: "node_steps",
                    rpc = %method,
                    volume = %vol,
                    ok = result.is_ok(),
                    total_ms = (steps.total().as_secs_f64() * 10_000.0).round() / 10.0,
                    steps = %steps,
                    "timing"
                );
                result
            }
            .instrument(tracing::Span::current()),
        );
        let result = match handle.await {
            Ok(r) => r,
            Err(e) => Err(NodeError::Internal(format!("{method} did not finish: {e}"))),
        };
        match result {
            Ok(resp) => {
                timer.finish(Code::Ok);
                if method == "NodeGetVolumeStats" {
                    debug!(rpc = method, volume, "done");
                } else {
                    info!(rpc = method, volume, "done");
                }
                Ok(Response::new(resp))
            }
            Err(e) => {
                let status: Status = e.into();
                timer.finish(status.code());
                if matches!(
                    status.code(),
                    Code::Internal | Code::Unavailable | Code::DeadlineExceeded
                ) {
                    warn!(rpc = method, volume, code = ?status.code(), error = %status.message(), "RPC failed");
                } else {
                    info!(rpc = method, volume, code = ?status.code(), error = %status.message(), "RPC refused");
                }
                Err(status)
            }
        }
    }
}

fn not_found(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound
}

impl<E: Exec, S: Sys> Inner<E, S> {
    /// Records an event about a staged volume on its PVC (from the record),
    /// in the background: never waits, never fails the RPC.
    fn report(&self, rec: &VolumeRecord, kind: EventKind, reason: &'static str, what: String) {
        self.events.report(events::volume_event(
            &rec.volume_id,
            rec.pvc.clone(),
            &self.config.node_id,
            kind,
            reason,
            what,
        ));
    }

    /// A failed mount: reported, then returned.
    fn mount_failed(&self, rec: &VolumeRecord, e: NodeError) -> NodeError {
        self.report(
            rec,
            EventKind::Warning,
            MOUNT_FAILED,
            format!("mounting volume {} failed: {}", rec.volume_id, chain(&e)),
        );
        e
    }

    fn records(&self) -> Records<'_, S> {
        Records {
            sys: self.dp.sys(),
            dir: &self.config.state_dir,
        }
    }

    async fn record(&self, id: &str) -> NodeResult<Option<VolumeRecord>> {
        let stored = self.records().load(id).await.map_err(|e| {
            NodeError::Internal(format!(
                "read the record of volume {id} in {}: {e}",
                self.config.state_dir.display()
            ))
        })?;
        Ok(match stored {
            Some(Stored::Record(r)) => Some(*r),
            Some(Stored::Unreadable { error, .. }) => {
                warn!(volume = id, error, "ignoring an unreadable volume record");
                None
            }
            None => None,
        })
    }

    async fn save(&self, r: &VolumeRecord) -> NodeResult<()> {
        self.records().save(r).await.map_err(|e| {
            NodeError::Internal(format!(
                "write the record of volume {} in {}: {e}",
                r.volume_id,
                self.config.state_dir.display()
            ))
        })
    }

    fn nqn_of(&self, id: &str, rec: Option<&VolumeRecord>) -> String {
        rec.map(|r| r.nqn.clone())
            .unwrap_or_else(|| self.dp.prefix().volume_nqn(id))
    }

    async fn mounts(&self) -> NodeResult<Vec<Mount>> {
        self.dp.mounts().await.map_err(dp("read the mount table"))
    }

    async fn resolve(&self, nqn: &str) -> NodeResult<nvme::Subsystem> {
        self.dp
            .resolve(nqn)
            .await
            .map_err(dp(format!("look up {nqn} in sysfs")))
    }

    async fn lstat(&self, p: &Path) -> NodeResult<Option<nvme::FileStat>> {
        match self.dp.sys().lstat(p).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(NodeError::Internal(format!("stat {}: {e}", p.display()))),
        }
    }

    /// Takes a mount off `path` whose device is not the volume's: allowed
    /// only when that device no longer exists (a controller renumbered or
    /// given up), since then nothing can be written through it anyway.
    async fn drop_stale_mount(&self, path: &Path, m: &Mount) -> NodeResult<()> {
        let gone = self
            .dp
            .device_gone(m.dev())
            .await
            .map_err(dp("look up a mounted device"))?;
        if !gone {
            return Err(NodeError::FailedPrecondition(format!(
                "{} holds {} ({}), which is not this volume's device and still exists; refusing to touch it",
                path.display(),
                m.source,
                m.dev()
            )));
        }
        warn!(path = %path.display(), device = %m.dev(), source = %m.source, "mount of a vanished device; taking it off");
        self.dp
            .unmount_all(path, true)
            .await
            .map_err(dp(format!("unmount the stale mount at {}", path.display())))?;
        Ok(())
    }

    /// Mounts the volume's filesystem at its staging path: probes, formats
    /// only a definitively empty device, checks ext4, mounts.
    async fn mount_staging(
        &self,
        rec: &mut VolumeRecord,
        device: &BlockDevice,
        fs: FsType,
        opts: &MountOptions,
        formatted_before: bool,
    ) -> NodeResult<()> {
        let mounts = self.mounts().await?;
        let elsewhere = mounts_of(&mounts, device.dev).find(|m| m.mount_point != rec.staging_path);
        match elsewhere {
            // Already mounted on this node (an older staging path): the
            // kernel shares the superblock; probing or checking a mounted
            // filesystem is what must not happen.
            Some(m) if m.fs_type != fs.as_str() => {
                return Err(NodeError::FailedPrecondition(format!(
                    "{} is mounted at {} as {}, not {fs}",
                    device.path.display(),
                    m.mount_point.display(),
                    m.fs_type
                )))
            }
            Some(m) => {
                info!(device = %device.path.display(), at = %m.mount_point.display(), "device already mounted elsewhere on this node; sharing it")
            }
            None => {
                // Formatted before (the context, or mounted here): mkfs is
                // ruled out anyway, so the record is not consulted and an
                // API outage never holds up a recovery.
                let record = match formatted_before {
                    true => None,
                    false => self.read_format_record(rec).await?,
                };
                let history = nvme::format::History {
                    formatted_before,
                    recorded: record.as_ref().and_then(|(r, at, formatted)| {
                        formatted.as_deref().map(|f| r.describe(at, f))
                    }),
                };
                let prepared = match self
                    .dp
                    .prepare_filesystem(&rec.nqn, device, fs, history)
                    .await
                {
                    Ok(p) => p,
                    Err(e @ nvme::Error::Refused { retry, .. }) => {
                        self.report(
                            rec,
                            EventKind::Warning,
                            FORMAT_REFUSED,
                            format!(
                                "volume {} was neither formatted nor mounted: {}{}",
                                rec.volume_id,
                                nvme::chain(&e),
                                if retry {
                                    " (this may clear by itself; kubelet retries)"
                                } else {
                                    " (needs a person: the data on the volume was left untouched)"
                                }
                            ),
                        );
                        return Err(dp(format!("prepare volume {}", rec.volume_id))(e));
                    }
                    Err(e) => {
                        let e = dp(format!("prepare volume {}", rec.volume_id))(e);
                        return Err(self.mount_failed(rec, e));
                    }
                };
                if prepared == nvme::Prepared::Formatted {
                    rec.formatted_here = true;
                }
                if let Some((r, at, None)) = &record {
                    self.write_format_record(rec, r.as_ref(), at, fs, prepared)
                        .await?;
                }
            }
        }
        if let Err(e) = self
            .dp
            .mount_device(device, &rec.staging_path, fs, opts)
            .await
        {
            let e = dp(format!("stage volume {}", rec.volume_id))(e);
            return Err(self.mount_failed(rec, e));
        }
        if !rec.filesystem_seen {
            rec.filesystem_seen = true;
            self.save(rec).await?;
        }
        Ok(())
    }

    // ---------------------------------------------------------------- stage

    async fn stage(
        &self,
        req: proto::NodeStageVolumeRequest,
    ) -> NodeResult<proto::NodeStageVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let cap = capability(req.volume_capability.as_ref())?;
        let vt = volume_target(
            &id,
            &req.volume_context,
            &req.publish_context,
            self.dp.prefix(),
            self.config.max_ctrl_loss_tmo,
        )?;
        if let (Some(a), Some(b)) = (cap.fs, vt.fs) {
            if a != b {
                return Err(NodeError::invalid(
                    "volume_capability",
                    format!("fs_type {a} differs from the volume context's fsType {b}"),
                ));
            }
        }
        let fs = (!cap.block).then(|| cap.fs.or(vt.fs).unwrap_or(FsType::Ext4));
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;

        let previous = self.record(&id).await?;
        let mut rec = VolumeRecord {
            volume_id: id.clone(),
            nqn: vt.target.nqn.clone(),
            address: vt.target.address.clone(),
            port: vt.target.port,
            ctrl_loss_tmo: vt.target.ctrl_loss_tmo,
            reconnect_delay: vt.target.reconnect_delay,
            keep_alive_tmo: vt.target.keep_alive_tmo,
            staging_path: staging.clone(),
            block: cap.block,
            fs_type: fs.map(|f| f.as_str().to_string()),
            mount_flags: cap.mount_flags.clone(),
            formatted_here: false,
            filesystem_seen: false,
            targets: BTreeMap::new(),
            pvc: crate::params::pvc_of(&req.volume_context),
        };
        if let Some(p) = &previous {
            let sub = self.resolve(&p.nqn).await?;
            let mounts = self.mounts().await?;
            let mounted = matches!(
                classify(&mounts, &p.staging_path, &sub.dev_ids()),
                MountState::Current(_)
            );
            if p.staging_path != staging && mounted {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {id} is already staged at {}",
                    p.staging_path.display()
                )));
            }
            if p.staging_path == staging && p.block != cap.block && mounted {
                return Err(NodeError::AlreadyExists(format!(
                    "volume {id} is staged at {} as {}",
                    staging.display(),
                    kind_name(p.block)
                )));
            }
            if p.nqn == rec.nqn {
                rec.formatted_here = p.formatted_here;
                rec.filesystem_seen = p.filesystem_seen;
            }
            if p.staging_path == staging {
                rec.targets = p.targets.clone();
            }
            if rec.pvc.is_none() {
                rec.pvc = p.pvc.clone();
            }
        }
        // Written before connecting: a connection made just before a crash
        // must not look orphaned at the next start.
        self.save(&rec).await?;
        let deviceless = self.deviceless(&rec).await?;
        let connected = self
            .dp
            .connect_with(&vt.target, deviceless)
            .await
            .map_err(dp(format!("connect volume {id}")))?;
        let Some(fs) = fs else {
            info!(volume = %id, device = %connected.device.path.display(), "raw block volume staged");
            return Ok(proto::NodeStageVolumeResponse {});
        };
        let sub = self.resolve(&rec.nqn).await?;
        let mut stale = None;
        match classify(&self.mounts().await?, &staging, &sub.dev_ids()) {
            MountState::Current(m) if m.fs_type == fs.as_str() => {
                if !rec.filesystem_seen {
                    rec.filesystem_seen = true;
                    self.save(&rec).await?;
                }
                return Ok(proto::NodeStageVolumeResponse {});
            }
            MountState::Current(m) => {
                return Err(NodeError::AlreadyExists(format!(
                    "volume {id} is staged at {} with {}, not {fs}",
                    staging.display(),
                    m.fs_type
                )))
            }
            MountState::Other(m) => {
                // It was mounted: it has a filesystem, whatever a probe
                // right after the reconnect may say.
                self.drop_stale_mount(&staging, &m).await?;
                rec.filesystem_seen = true;
                self.save(&rec).await?;
                stale = Some(m);
            }
            MountState::NotMounted => {}
        }
        let device = sub.device().cloned().unwrap_or(connected.device);
        let formatted_before = vt.formatted || rec.filesystem_seen;
        self.mount_staging(&mut rec, &device, fs, &cap.mount, formatted_before)
            .await?;
        if let Some(m) = stale {
            self.report(
                &rec,
                EventKind::Warning,
                STALE_MOUNT_RECOVERED,
                format!(
                    "the staging mount of volume {id} was on {} ({}), which had vanished; remounted from {}",
                    m.source,
                    m.dev(),
                    device.path.display()
                ),
            );
        }
        Ok(proto::NodeStageVolumeResponse {})
    }

    // ---------------------------------------------------------------- unstage

    /// Whether a publish target still holds the volume.
    async fn still_published(
        &self,
        t: &Path,
        devs: &[DevId],
        mounts: &[Mount],
    ) -> NodeResult<bool> {
        Ok(match self.lstat(t).await? {
            None => false,
            Some(st) => {
                is_mount_point(mounts, t)
                    || (st.kind == FileKind::BlockDevice
                        && st.rdev.is_some_and(|d| devs.contains(&d)))
            }
        })
    }

    /// What a connect may do with a connection that has no block device:
    /// while the staging path or a publish target of the volume is a mount
    /// point, or a target is a device node, the connection is never torn
    /// down (the mounts would lose their I/O for good); the RPC answers
    /// UNAVAILABLE and kubelet retries while the kernel reconnects.
    async fn deviceless(&self, rec: &VolumeRecord) -> NodeResult<Deviceless> {
        let mounts = self.mounts().await?;
        let mut in_use = is_mount_point(&mounts, &rec.staging_path);
        for t in rec.targets.keys() {
            if in_use {
                break;
            }
            in_use = is_mount_point(&mounts, t)
                || self
                    .lstat(t)
                    .await?
                    .is_some_and(|st| st.kind == FileKind::BlockDevice);
        }
        Ok(if in_use {
            Deviceless::Keep
        } else {
            Deviceless::Reconnect
        })
    }

    async fn unstage(
        &self,
        req: proto::NodeUnstageVolumeRequest,
    ) -> NodeResult<proto::NodeUnstageVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;
        let rec = self.record(&id).await?;
        let nqn = self.nqn_of(&id, rec.as_ref());
        let sub = self.resolve(&nqn).await?;
        let devs = sub.dev_ids();
        let mounts = self.mounts().await?;
        if let Some(r) = &rec {
            for t in r.targets.keys().filter(|t| **t != staging) {
                if self.still_published(t, &devs, &mounts).await? {
                    return Err(NodeError::FailedPrecondition(format!(
                        "volume {id} is still published at {}; unpublish it first",
                        t.display()
                    )));
                }
            }
        }
        for d in &sub.devices {
            if let Some(m) = mounts_of(&mounts, d.dev).find(|m| m.mount_point != staging) {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {id} ({}) is still mounted at {}",
                    d.path.display(),
                    m.mount_point.display()
                )));
            }
        }
        match classify(&mounts, &staging, &devs) {
            MountState::Current(_) => {
                self.dp
                    .unmount_all(&staging, false)
                    .await
                    .map_err(dp(format!("unstage volume {id}")))?;
            }
            MountState::Other(m) => self.drop_stale_mount(&staging, &m).await?,
            MountState::NotMounted => {}
        }
        // The staging directory belongs to the CO: it is left in place.
        let sub = self.resolve(&nqn).await?;
        if sub.is_connected() {
            let mounts = self.mounts().await?;
            if let Some(why) = self
                .dp
                .in_use(&sub, &mounts)
                .await
                .map_err(dp("check the device is unused"))?
            {
                return Err(NodeError::FailedPrecondition(format!(
                    "not disconnecting volume {id}: {why}"
                )));
            }
            self.dp
                .disconnect(&nqn)
                .await
                .map_err(dp(format!("disconnect volume {id}")))?;
        }
        self.records()
            .remove(&id)
            .await
            .map_err(|e| NodeError::Internal(format!("remove the record of volume {id}: {e}")))?;
        info!(volume = %id, "volume unstaged and disconnected");
        Ok(proto::NodeUnstageVolumeResponse {})
    }

    // ---------------------------------------------------------------- publish

    async fn publish(
        &self,
        req: proto::NodePublishVolumeRequest,
    ) -> NodeResult<proto::NodePublishVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let staging = abs_path("staging_target_path", &req.staging_target_path)?;
        let target = abs_path("target_path", &req.target_path)?;
        if target == staging {
            return Err(NodeError::invalid(
                "target_path",
                "must differ from staging_target_path",
            ));
        }
        let cap = capability(req.volume_capability.as_ref())?;
        let ctx = volume_target(
            &id,
            &req.volume_context,
            &req.publish_context,
            self.dp.prefix(),
            self.config.max_ctrl_loss_tmo,
        );
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;
        let stored = self.record(&id).await?;
        let known = stored.is_some();
        let mut rec = match (stored, ctx) {
            (Some(r), _) => r,
            // The state directory was lost: rebuild the record from the
            // request, which carries everything.
            (None, Ok(vt)) => VolumeRecord {
                volume_id: id.clone(),
                nqn: vt.target.nqn.clone(),
                address: vt.target.address,
                port: vt.target.port,
                ctrl_loss_tmo: vt.target.ctrl_loss_tmo,
                reconnect_delay: vt.target.reconnect_delay,
                keep_alive_tmo: vt.target.keep_alive_tmo,
                staging_path: staging.clone(),
                block: cap.block,
                fs_type: (!cap.block).then(|| cap.fs.or(vt.fs).unwrap_or(FsType::Ext4).to_string()),
                mount_flags: cap.mount_flags.clone(),
                formatted_here: false,
                filesystem_seen: false,
                targets: BTreeMap::new(),
                pvc: None,
            },
            (None, Err(e)) => return Err(e),
        };
        rec.staging_path = staging.clone();
        if let Some(pvc) = crate::params::pvc_of(&req.volume_context) {
            rec.pvc = Some(pvc);
        }
        if rec.block != cap.block {
            return Err(NodeError::FailedPrecondition(format!(
                "volume {id} was staged as {}, and is published as {}",
                kind_name(rec.block),
                kind_name(cap.block)
            )));
        }
        if cap.single_writer {
            let devs = self.resolve(&rec.nqn).await?.dev_ids();
            let mounts = self.mounts().await?;
            for t in rec.targets.keys().filter(|t| **t != target) {
                if self.still_published(t, &devs, &mounts).await? {
                    return Err(NodeError::FailedPrecondition(format!(
                        "volume {id} is single-writer and already published at {}",
                        t.display()
                    )));
                }
            }
        }
        if cap.block {
            self.publish_block(&rec, known, &target, req.readonly)
                .await?;
        } else {
            self.publish_fs(&mut rec, &target, req.readonly, &cap)
                .await?;
        }
        rec.targets.insert(target, req.readonly);
        self.save(&rec).await?;
        Ok(proto::NodePublishVolumeResponse {})
    }

    async fn publish_fs(
        &self,
        rec: &mut VolumeRecord,
        target: &Path,
        readonly: bool,
        cap: &Cap,
    ) -> NodeResult<()> {
        let id = rec.volume_id.clone();
        let staging = rec.staging_path.clone();
        let sub = self.resolve(&rec.nqn).await?;
        let mounts = self.mounts().await?;
        let staged = match classify(&mounts, &staging, &sub.dev_ids()) {
            MountState::Current(m) => m,
            MountState::Other(m) => {
                // The controller was renumbered after a reconnect: the
                // staging mount points at a device that no longer exists
                // (recover refuses if it still does).
                info!(volume = %id, stale = %m.dev(), "staging mount is stale; recovering");
                self.recover(rec, true).await?;
                let sub = self.resolve(&rec.nqn).await?;
                match classify(&self.mounts().await?, &staging, &sub.dev_ids()) {
                    MountState::Current(m) => m,
                    other => {
                        return Err(NodeError::Internal(format!(
                            "after recovery {} shows {other:?}",
                            staging.display()
                        )))
                    }
                }
            }
            MountState::NotMounted => {
                return Err(NodeError::FailedPrecondition(format!(
                    "volume {id} is not staged at {}: NodeStageVolume first",
                    staging.display()
                )))
            }
        };
        let mounts = self.mounts().await?;
        match classify(&mounts, target, &[staged.dev()]) {
            MountState::Current(m) if m.read_only() == readonly => return Ok(()),
            MountState::Current(_) => {
                return Err(NodeError::AlreadyExists(format!(
                    "volume {id} is published at {} with read-only={}",
                    target.display(),
                    !readonly
                )))
            }
            MountState::Other(m) => self.drop_stale_mount(target, &m).await?,
            MountState::NotMounted => {}
        }
        let mut flags = cap.mount.bind_flags();
        if readonly {
            flags |= MsFlags::MS_RDONLY;
        }
        self.dp
            .bind_mount(&staging, target, staged.dev(), flags)
            .await
            .map_err(|e| {
                let e = dp(format!("publish volume {id} at {}", target.display()))(e);
                self.mount_failed(rec, e)
            })
    }

    async fn publish_block(
        &self,
        rec: &VolumeRecord,
        staged: bool,
        target: &Path,
        readonly: bool,
    ) -> NodeResult<()> {
        let id = &rec.volume_id;
        let sub = self.resolve(&rec.nqn).await?;
        if !staged && !sub.is_connected() {
            return Err(NodeError::FailedPrecondition(format!(
                "volume {id} is not staged on this node: NodeStageVolume first"
            )));
        }
        // Reuses the connection; reconnects one a reconnect or a controller
        // loss took away (the record says the volume is staged here).
        let deviceless = self.deviceless(rec).await?;
        let dev = self
            .dp
            .connect_with(&rec.target(), deviceless)
            .await
            .map_err(dp(format!("connect volume {id}")))?
            .device;
        let mounts = self.mounts().await?;
        let mounted = is_mount_point(&mounts, target);
        if let Some(st) = self.lstat(target).await? {
            match st.kind {
                FileKind::BlockDevice if st.rdev == Some(dev.dev) => {
                    if mounted {
                        warn!(volume = %id, target = %target.display(), "target is a bind mount of the device (an older driver); leaving it");
                        return Ok(());
                    }
                    if (st.mode & 0o222 == 0) != readonly {
                        return Err(NodeError::AlreadyExists(format!(
                            "volume {id} is published at {} with read-only={}",
                            target.display(),
                            !readonly
                        )));
                    }
                    return Ok(());
                }
                _ if mounted => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} is a mount point of something else; refusing to replace it",
                        target.display()
                    )))
                }
                FileKind::BlockDevice => {
                    warn!(volume = %id, target = %target.display(), old = ?st.rdev, new = %dev.dev, "device node of another device number; replacing it");
                    self.unlink(target).await?;
                }
                FileKind::File if st.size == 0 => self.unlink(target).await?,
                FileKind::Dir => self.rmdir(target).await?,
                k => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} exists as {k:?}; refusing to replace it",
                        target.display()
                    )))
                }
            }
        }
        self.dp
            .make_device_node(target, dev.dev, readonly)
            .await
            .map_err(dp(format!("publish volume {id} at {}", target.display())))
    }

    /// Brings a staged volume back after its device vanished (a controller
    /// renumbered or lost): reconnects (when `reconnect`; otherwise only an
    /// existing new connection is used), remounts the staging path on the
    /// new device, and re-binds (or re-creates the device nodes of) the
    /// publish targets. Never formats: the volume was staged before.
    async fn recover(&self, rec: &mut VolumeRecord, reconnect: bool) -> NodeResult<Vec<String>> {
        let id = rec.volume_id.clone();
        let mut done = Vec::new();
        let dev = if reconnect {
            let deviceless = self.deviceless(rec).await?;
            self.dp
                .connect_with(&rec.target(), deviceless)
                .await
                .map_err(dp(format!("reconnect volume {id}")))?
                .device
        } else {
            match self.resolve(&rec.nqn).await?.device() {
                Some(d) => d.clone(),
                None => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} is not connected; NodeStageVolume or NodePublishVolume reconnects it",
                        rec.nqn
                    )))
                }
            }
        };
        if rec.block {
            let mounts = self.mounts().await?;
            for (t, ro) in rec.targets.clone() {
                if let Some(st) = self.lstat(&t).await? {
                    if st.kind == FileKind::BlockDevice
                        && st.rdev != Some(dev.dev)
                        && !is_mount_point(&mounts, &t)
                    {
                        self.unlink(&t).await?;
                        self.dp
                            .make_device_node(&t, dev.dev, ro)
                            .await
                            .map_err(dp(format!("recreate the device node {}", t.display())))?;
                        done.push(format!("device node {} now {}", t.display(), dev.dev));
                    }
                }
            }
            self.report_recovered(rec, &done);
            return Ok(done);
        }
        let fs = rec.fs().unwrap_or(FsType::Ext4);
        let opts = parse_mount_flags(&rec.mount_flags).unwrap_or_default();
        match classify(&self.mounts().await?, &rec.staging_path, &[dev.dev]) {
            MountState::Current(_) => {}
            MountState::Other(m) => {
                self.drop_stale_mount(&rec.staging_path, &m).await?;
                self.mount_staging(rec, &dev, fs, &opts, true).await?;
                done.push(format!(
                    "{} remounted from {}",
                    rec.staging_path.display(),
                    dev.path.display()
                ));
            }
            MountState::NotMounted => {
                self.mount_staging(rec, &dev, fs, &opts, true).await?;
                done.push(format!(
                    "{} remounted from {}",
                    rec.staging_path.display(),
                    dev.path.display()
                ));
            }
        }
        for (t, ro) in rec.targets.clone() {
            let mounts = self.mounts().await?;
            if let MountState::Other(m) = classify(&mounts, &t, &[dev.dev]) {
                self.drop_stale_mount(&t, &m).await?;
                let mut flags = opts.bind_flags();
                if ro {
                    flags |= MsFlags::MS_RDONLY;
                }
                self.dp
                    .bind_mount(&rec.staging_path, &t, dev.dev, flags)
                    .await
                    .map_err(|e| {
                        let e = dp(format!("re-publish at {}", t.display()))(e);
                        self.mount_failed(rec, e)
                    })?;
                done.push(format!("{} re-bound", t.display()));
            }
        }
        self.report_recovered(rec, &done);
        Ok(done)
    }

    fn report_recovered(&self, rec: &VolumeRecord, done: &[String]) {
        if done.is_empty() {
            return;
        }
        self.report(
            rec,
            EventKind::Warning,
            STALE_MOUNT_RECOVERED,
            format!(
                "volume {} was mounted from an NVMe device that had vanished (controller renumbered); recovered: {}. Containers that had it open keep the old mount until they restart",
                rec.volume_id,
                done.join(", ")
            ),
        );
    }

    async fn unlink(&self, p: &Path) -> NodeResult<()> {
        self.dp
            .sys()
            .remove_file(p)
            .await
            .map_err(|e| NodeError::Internal(format!("remove {}: {e}", p.display())))
    }

    /// rmdir, never recursive: a directory that is not empty stays.
    async fn rmdir(&self, p: &Path) -> NodeResult<()> {
        match self.dp.sys().remove_dir(p).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => {
                Err(NodeError::FailedPrecondition(format!(
                    "{} is not empty; it is left in place (paths are never deleted recursively)",
                    p.display()
                )))
            }
            Err(e) => Err(NodeError::Internal(format!(
                "remove directory {}: {e}",
                p.display()
            ))),
        }
    }

    // ---------------------------------------------------------------- unpublish

    async fn unpublish(
        &self,
        req: proto::NodeUnpublishVolumeRequest,
    ) -> NodeResult<proto::NodeUnpublishVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let target = abs_path("target_path", &req.target_path)?;
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;
        let rec = self.record(&id).await?;
        if is_mount_point(&self.mounts().await?, &target) {
            self.dp
                .unmount_all(&target, false)
                .await
                .map_err(dp(format!("unpublish volume {id}")))?;
        }
        // Checked again on a fresh table: only a path that is no longer a
        // mount point is ever removed (lesson 3).
        if is_mount_point(&self.mounts().await?, &target) {
            return Err(NodeError::FailedPrecondition(format!(
                "{} is still a mount point; not removing it",
                target.display()
            )));
        }
        if let Some(st) = self.lstat(&target).await? {
            match st.kind {
                FileKind::Dir => self.rmdir(&target).await?,
                FileKind::BlockDevice | FileKind::Symlink => self.unlink(&target).await?,
                FileKind::File if st.size == 0 => self.unlink(&target).await?,
                k => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} is {k:?} with content; refusing to remove it",
                        target.display()
                    )))
                }
            }
        }
        if let Some(mut r) = rec {
            if r.targets.remove(&target).is_some() {
                self.save(&r).await?;
            }
        }
        Ok(proto::NodeUnpublishVolumeResponse {})
    }

    // ---------------------------------------------------------------- expand

    async fn expand(
        &self,
        req: proto::NodeExpandVolumeRequest,
    ) -> NodeResult<proto::NodeExpandVolumeResponse> {
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path)?;
        let staging = match req.staging_target_path.as_str() {
            "" => None,
            s => Some(abs_path("staging_target_path", s)?),
        };
        let range = req.capacity_range.unwrap_or_default();
        if range.required_bytes < 0 || range.limit_bytes < 0 {
            return Err(NodeError::invalid("capacity_range", "must not be negative"));
        }
        if range.limit_bytes > 0 && range.limit_bytes < range.required_bytes {
            return Err(NodeError::invalid(
                "capacity_range",
                "limit_bytes is below required_bytes",
            ));
        }
        let cap_block = match &req.volume_capability {
            Some(c) => capability(Some(c))?.block,
            None => false,
        };
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;
        let rec = self.record(&id).await?;
        let nqn = self.nqn_of(&id, rec.as_ref());
        if !self.resolve(&nqn).await?.is_connected() {
            return Err(NodeError::NotFound(format!(
                "volume {id} is not staged on this node"
            )));
        }
        let dev = self
            .dp
            .rescan(&nqn, range.required_bytes as u64)
            .await
            .map_err(dp(format!("rescan volume {id}")))?;
        let is_node = self
            .lstat(&path)
            .await?
            .is_some_and(|s| s.kind == FileKind::BlockDevice);
        if cap_block || rec.as_ref().is_some_and(|r| r.block) || is_node {
            return Ok(proto::NodeExpandVolumeResponse {
                capacity_bytes: dev.size_bytes as i64,
            });
        }
        let devs = self.resolve(&nqn).await?.dev_ids();
        let mounts = self.mounts().await?;
        let candidates = std::iter::once(&path).chain(staging.iter());
        let mut found = None;
        for p in candidates {
            match classify(&mounts, p, &devs) {
                MountState::Current(m) => {
                    found = Some((p.clone(), m));
                    break;
                }
                MountState::Other(m) => {
                    return Err(NodeError::FailedPrecondition(format!(
                        "{} holds {} ({}), not the volume's current device {}; publish it again before expanding",
                        p.display(),
                        m.source,
                        m.dev(),
                        dev.dev
                    )))
                }
                MountState::NotMounted => {}
            }
        }
        let Some((mount_point, m)) = found else {
            return Err(NodeError::FailedPrecondition(format!(
                "{} is not a mount of volume {id}",
                path.display()
            )));
        };
        self.dp
            .grow_filesystem(&dev, &mount_point, &m.fs_type)
            .await
            .map_err(dp(format!("grow the filesystem of volume {id}")))?;
        info!(volume = %id, bytes = dev.size_bytes, "filesystem grown");
        Ok(proto::NodeExpandVolumeResponse {
            capacity_bytes: dev.size_bytes as i64,
        })
    }

    // ---------------------------------------------------------------- stats

    async fn stats(
        &self,
        req: proto::NodeGetVolumeStatsRequest,
    ) -> NodeResult<proto::NodeGetVolumeStatsResponse> {
        use proto::volume_usage::Unit;
        let id = volume_id(&req.volume_id)?;
        let path = volume_path(&req.volume_path)?;
        if !req.staging_target_path.is_empty() {
            abs_path("staging_target_path", &req.staging_target_path)?;
        }
        let _guard = self.locks.try_lock(&id).map_err(CsiError::from)?;
        let mut rec = self.record(&id).await?;
        let nqn = self.nqn_of(&id, rec.as_ref());
        let Some(st) = self.lstat(&path).await? else {
            return Err(NodeError::NotFound(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        };
        let sub = self.resolve(&nqn).await?;
        let devs = sub.dev_ids();
        let mounts = self.mounts().await?;
        let condition =
            |abnormal: bool, message: String| Some(proto::VolumeCondition { abnormal, message });
        let liveness = |sub: &nvme::Subsystem| -> (bool, String) {
            if !sub.is_connected() {
                (true, format!("{nqn} is not connected on this node"))
            } else if sub.device().is_none() {
                (
                    true,
                    format!("{nqn} has no block device: {}", sub.describe()),
                )
            } else if !sub.all_live() {
                (true, format!("{nqn} is not fully live: {}", sub.describe()))
            } else {
                (false, format!("{nqn}: {}", sub.describe()))
            }
        };
        let block = st.kind == FileKind::BlockDevice
            || (st.kind == FileKind::Dir
                && !is_mount_point(&mounts, &path)
                && rec.as_ref().is_some_and(|r| r.block));
        if block {
            let (mut abnormal, mut message) = liveness(&sub);
            if st.kind == FileKind::BlockDevice
                && !abnormal
                && !st.rdev.is_some_and(|d| devs.contains(&d))
            {
                abnormal = true;
                message = format!(
                    "{} is a node for {}, not for the volume's current device",
                    path.display(),
                    st.rdev.map(|d| d.to_string()).unwrap_or_default()
                );
                if let Some(r) = rec.as_mut() {
                    match self.recover(r, false).await {
                        Ok(done) => message.push_str(&format!("; recovered: {}", done.join(", "))),
                        Err(e) => message.push_str(&format!("; not recovered: {}", chain(&e))),
                    }
                }
            }
            let usage = sub
                .device()
                .map(|d| proto::VolumeUsage {
                    available: 0,
                    total: d.size_bytes as i64,
                    used: 0,
                    unit: Unit::Bytes as i32,
                })
                .into_iter()
                .collect();
            return Ok(proto::NodeGetVolumeStatsResponse {
                usage,
                volume_condition: condition(abnormal, message),
            });
        }
        let (abnormal, message) = match classify(&mounts, &path, &devs) {
            MountState::NotMounted => {
                return Err(NodeError::NotFound(format!(
                    "volume_path {} is not a mount of volume {id}",
                    path.display()
                )))
            }
            MountState::Current(_) => liveness(&sub),
            MountState::Other(m) => {
                let gone = self
                    .dp
                    .device_gone(m.dev())
                    .await
                    .map_err(dp("look up a mounted device"))?;
                let mut message = format!(
                    "{} is mounted from {} ({}), not from the volume's current device{}",
                    path.display(),
                    m.source,
                    m.dev(),
                    if gone { ", which no longer exists" } else { "" }
                );
                match rec.as_mut() {
                    Some(r) if gone => match self.recover(r, false).await {
                        Ok(done) => message.push_str(&format!(
                            "; remounted ({}); running containers keep the old mount until they restart",
                            done.join(", ")
                        )),
                        Err(e) => message.push_str(&format!("; not recovered: {}", chain(&e))),
                    },
                    _ => {}
                }
                (true, message)
            }
        };
        let usage = match self.dp.statfs(&path).await {
            Ok(s) => vec![
                proto::VolumeUsage {
                    available: s.available_bytes as i64,
                    total: s.total_bytes as i64,
                    used: s.total_bytes.saturating_sub(s.free_bytes) as i64,
                    unit: Unit::Bytes as i32,
                },
                proto::VolumeUsage {
                    available: s.free_inodes as i64,
                    total: s.total_inodes as i64,
                    used: s.total_inodes.saturating_sub(s.free_inodes) as i64,
                    unit: Unit::Inodes as i32,
                },
            ],
            Err(e) if abnormal => {
                warn!(volume = %id, error = %chain(&e), "statfs of an abnormal volume failed");
                Vec::new()
            }
            Err(e) => return Err(dp(format!("statfs volume {id}"))(e)),
        };
        Ok(proto::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: condition(abnormal, message),
        })
    }

    // ---------------------------------------------------------------- orphans

    /// `confirmed`: for periodic scans, the orphans of the previous scan;
    /// only those are disconnected. `None` at start (no RPC can be in
    /// flight then): disconnect at once.
    async fn clean_orphans(
        &self,
        mode: OrphanCleanup,
        confirmed: Option<&HashSet<String>>,
    ) -> NodeResult<OrphanReport> {
        let mut report = OrphanReport::default();
        if mode == OrphanCleanup::Off {
            return Ok(report);
        }
        let prefix = self.dp.prefix().clone();
        let owned: Vec<nvme::Subsystem> = self
            .dp
            .subsystems()
            .await
            .map_err(dp("list NVMe subsystems"))?
            .into_iter()
            .filter(|s| prefix.owns(&s.nqn))
            .collect();
        if owned.is_empty() {
            return Ok(report);
        }
        let mut mode = mode;
        // Which volumes the records claim, and where they are staged.
        let mut claimed: HashMap<String, Option<PathBuf>> = HashMap::new();
        match self.records().list().await {
            Ok(list) => {
                for s in list {
                    match s {
                        Stored::Record(r) => {
                            claimed.insert(r.nqn.clone(), Some(r.staging_path.clone()));
                        }
                        Stored::Unreadable { volume_id, .. } => {
                            claimed.insert(prefix.volume_nqn(&volume_id), None);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(dir = %self.config.state_dir.display(), error = %e, "cannot read the volume records; orphans are only reported");
                mode = OrphanCleanup::Report;
            }
        }
        let mounts = self.mounts().await?;
        let root = &self.config.staging_root;
        let plugins = root.join("plugins");
        let scan_root = if self.lstat(&plugins).await?.is_some() {
            plugins
        } else {
            root.clone()
        };
        let scan = self
            .dp
            .device_nodes_under(&scan_root, &mounts, 8, 200_000)
            .await;
        for s in owned {
            let nqn = s.nqn.clone();
            let id = nqn[prefix.as_str().len()..].to_string();
            // A volume an RPC is working on is not an orphan.
            let Ok(_guard) = self.locks.try_lock(&id) else {
                report
                    .kept
                    .push((nqn, "an operation on the volume is in flight".into()));
                continue;
            };
            let kept = |why: String| (nqn.clone(), why);
            match claimed.get(&nqn) {
                Some(None) => {
                    report
                        .kept
                        .push(kept("claimed by an unreadable record".into()));
                    continue;
                }
                Some(Some(p)) if self.lstat(p).await?.is_some() => {
                    report.kept.push(kept(format!("staged at {}", p.display())));
                    continue;
                }
                _ => {}
            }
            if let Some(why) = self
                .dp
                .in_use(&s, &mounts)
                .await
                .map_err(dp("check a device"))?
            {
                report.kept.push(kept(why));
                continue;
            }
            if let Some((_, p)) = scan.nodes.iter().find(|(d, _)| s.dev_ids().contains(d)) {
                report
                    .kept
                    .push(kept(format!("device node at {}", p.display())));
                continue;
            }
            if !scan.complete {
                report.kept.push(kept(format!(
                    "the search for device nodes under {} was incomplete",
                    scan_root.display()
                )));
                continue;
            }
            report.orphans.push(nqn.clone());
            if mode != OrphanCleanup::Disconnect {
                warn!(nqn, "orphaned NVMe connection (report only)");
                continue;
            }
            if confirmed.is_some_and(|c| !c.contains(&nqn)) {
                info!(
                    nqn,
                    "NVMe connection looks orphaned; disconnecting it if the next scan agrees"
                );
                report.pending.push(nqn);
                continue;
            }
            match self.dp.disconnect(&nqn).await {
                Ok(()) => {
                    warn!(nqn, "disconnected an orphaned NVMe connection");
                    let _ = self.records().remove(&id).await;
                    report.disconnected.push(nqn);
                }
                Err(e) => {
                    warn!(nqn, error = %chain(&e), "cannot disconnect an orphaned NVMe connection");
                    report.failed.push((nqn, chain(&e)));
                }
            }
        }
        Ok(report)
    }
}

fn kind_name(block: bool) -> &'static str {
    if block {
        "a raw block volume"
    } else {
        "a filesystem volume"
    }
}

fn node_capability(t: proto::node_service_capability::rpc::Type) -> proto::NodeServiceCapability {
    proto::NodeServiceCapability {
        r#type: Some(proto::node_service_capability::Type::Rpc(
            proto::node_service_capability::Rpc { r#type: t as i32 },
        )),
    }
}

#[tonic::async_trait]
impl<E: Exec, S: Sys> Node for NodeService<E, S> {
    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_stage_volume(
        &self,
        request: Request<proto::NodeStageVolumeRequest>,
    ) -> Result<Response<proto::NodeStageVolumeResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call(
            "NodeStageVolume",
            &v,
            move |i| async move { i.stage(req).await },
        )
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_unstage_volume(
        &self,
        request: Request<proto::NodeUnstageVolumeRequest>,
    ) -> Result<Response<proto::NodeUnstageVolumeResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call("NodeUnstageVolume", &v, move |i| async move {
            i.unstage(req).await
        })
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_publish_volume(
        &self,
        request: Request<proto::NodePublishVolumeRequest>,
    ) -> Result<Response<proto::NodePublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call("NodePublishVolume", &v, move |i| async move {
            i.publish(req).await
        })
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_unpublish_volume(
        &self,
        request: Request<proto::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<proto::NodeUnpublishVolumeResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call("NodeUnpublishVolume", &v, move |i| async move {
            i.unpublish(req).await
        })
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_get_volume_stats(
        &self,
        request: Request<proto::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<proto::NodeGetVolumeStatsResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call("NodeGetVolumeStats", &v, move |i| async move {
            i.stats(req).await
        })
        .await
    }

    #[instrument(skip_all, fields(volume.id = %request.get_ref().volume_id))]
    async fn node_expand_volume(
        &self,
        request: Request<proto::NodeExpandVolumeRequest>,
    ) -> Result<Response<proto::NodeExpandVolumeResponse>, Status> {
        let req = request.into_inner();
        let v = req.volume_id.clone();
        self.call("NodeExpandVolume", &v, move |i| async move {
            i.expand(req).await
        })
        .await
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<proto::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<proto::NodeGetCapabilitiesResponse>, Status> {
        use proto::node_service_capability::rpc::Type as T;
        Ok(Response::new(proto::NodeGetCapabilitiesResponse {
            capabilities: [
                T::StageUnstageVolume,
                T::ExpandVolume,
                T::GetVolumeStats,
                T::VolumeCondition,
                T::SingleNodeMultiWriter,
            ]
            .into_iter()
            .map(node_capability)
            .collect(),
        }))
    }

    async fn node_get_info(
        &self,
        _r: Request<proto::NodeGetInfoRequest>,
    ) -> Result<Response<proto::NodeGetInfoResponse>, Status> {
        let (k, v) = &self.inner.config.topology;
        Ok(Response::new(proto::NodeGetInfoResponse {
            node_id: self.inner.config.node_id.clone(),
            max_volumes_per_node: self.inner.config.max_volumes,
            accessible_topology: Some(proto::Topology {
                segments: HashMap::from([(k.clone(), v.clone())]),
            }),
        }))
    }
}
