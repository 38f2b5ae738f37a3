//! Orphan volumes: backend disks with the driver's volume prefix that no
//! PersistentVolume references, and backing files no disk owns.
//!
//! Deleting a volume someone meant to keep is the one mistake here that
//! cannot be undone, so every rule leans towards keeping:
//! - a disk belongs to this cluster only by the identity CreateVolume wrote
//!   into its comment (`cluster=`). Disks with another cluster's identity
//!   are ignored: several clusters may share one RDS and one prefix. Disks
//!   with no identity (made by hand, by the Go driver, or by versions before
//!   identities) are reported and never deleted;
//! - age counts from the first sweep that found the disk without a PV, and
//!   that moment is written onto the disk (`orphaned-since=`), so a
//!   controller restart does not reset it; a PV that reappears clears it.
//!   A disk's creation time says nothing about how long it has been
//!   unwanted;
//! - while a disk's PV exists, its reclaim policy is written onto the disk
//!   (`retain=yes` for Retain): once the PV is deleted the policy is gone
//!   from the cluster, and a disk so marked is reported, never deleted;
//! - the default is report-only; with deletion on, a disk of this cluster
//!   is deleted only when two consecutive sweeps found it orphaned, its
//!   orphaned-since mark is older than the grace period, no CreateVolume
//!   returned it within the grace period, and, under the volume's operation
//!   lock right before the delete, a fresh look at the disk and a fresh PV
//!   list still agree;
//! - files are only ever reported.
//!
//! The marks are written in report-only mode too: a later switch to
//! deletion must not forget a Retain policy or restart the clocks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attachment_manager::{RecentCreates, VolumeLocks};
use futures::future::BoxFuture;
use jiff::Timestamp;
use routeros::{ClusterId, Disk, DiskComment, FileEntry, Rds, RosPath, Slot, SlotPrefix};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use crate::metrics::OrphanMetrics;

#[path = "orphans_kube.rs"]
mod kube_side;
pub use kube_side::{kube_system_uid, KubePvs, LogOnly, PodEvents, IDENTITY_NAMESPACE};

#[derive(Debug, Clone)]
pub struct OrphanConfig {
    /// `--orphan-reconcile-interval`.
    pub interval: Duration,
    /// `--orphan-delete`: delete (after the checks above) instead of only
    /// reporting.
    pub delete: bool,
    /// `--orphan-grace-period`: least time since a disk was first found
    /// orphaned before it is deleted.
    pub grace_period: Duration,
    /// Disks whose slot starts with this are the driver's volumes.
    pub volume_prefix: SlotPrefix,
    /// Backing files below this are checked for an owning disk.
    pub volume_path: RosPath,
    /// `--cluster-id`: only disks carrying it are this cluster's.
    pub cluster_id: ClusterId,
}

/// What the sweep needs from the backend.
pub trait OrphanBackend: Send + Sync + 'static {
    /// Every file-backed disk (all slots: a file owned by any disk is owned).
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>>;
    /// One disk as it is now; `None` when the backend says it is absent.
    fn get_disk<'a>(
        &'a self,
        slot: &'a str,
    ) -> BoxFuture<'a, Result<Option<Disk>, routeros::Error>>;
    fn files_under<'a>(
        &'a self,
        path: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>>;
    /// Replaces the disk's comment.
    fn set_comment<'a>(
        &'a self,
        slot: &'a str,
        comment: &'a DiskComment,
    ) -> BoxFuture<'a, Result<(), routeros::Error>>;
    /// Removes the disk, and its backing file only once the disk is gone.
    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>>;
}

impl OrphanBackend for Rds {
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>> {
        Box::pin(async move { self.list_disks(&SlotPrefix::new("")?).await })
    }

    fn get_disk<'a>(
        &'a self,
        slot: &'a str,
    ) -> BoxFuture<'a, Result<Option<Disk>, routeros::Error>> {
        Box::pin(async move { Rds::get_disk(self, &Slot::new(slot)?).await })
    }

    fn files_under<'a>(
        &'a self,
        path: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>> {
        Box::pin(self.list_files(path))
    }

    fn set_comment<'a>(
        &'a self,
        slot: &'a str,
        comment: &'a DiskComment,
    ) -> BoxFuture<'a, Result<(), routeros::Error>> {
        Box::pin(async move { self.set_disk_comment(&Slot::new(slot)?, comment).await })
    }

    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>> {
        Box::pin(async move {
            // As DeleteVolume: the file goes only once a fresh lookup shows
            // the disk entry gone (docs/safety.md#unreachable-is-not-absent).
            let slot = Slot::new(&disk.slot)?;
            self.remove_disk_confirmed(&slot).await?;
            if disk.in_own_subvolume() {
                // The subvolume layout: the image goes with its subvolume.
                return self.remove_subvolume(&slot).await;
            }
            if let Some(file) = disk.file_path.as_deref() {
                self.remove_file(&RosPath::new(file)?).await?;
            }
            Ok(())
        })
    }
}

/// A PV's reclaim policy, as far as the sweep cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    Delete,
    /// Retain, or anything that is not an explicit Delete (a PV with no
    /// policy, the deprecated Recycle): the disk is kept.
    Retain,
}

impl Reclaim {
    pub fn from_policy(policy: Option<&str>) -> Reclaim {
        match policy {
            Some("Delete") => Reclaim::Delete,
            _ => Reclaim::Retain,
        }
    }
}

/// Volume handle → the reclaim policy of the PV that holds it.
pub type PvHandles = HashMap<String, Reclaim>;

/// The volume handles the cluster's PVs hold for this driver.
pub trait VolumeReferences: Send + Sync + 'static {
    /// Read fresh (not from a cache), so a PV created a moment ago counts.
    fn volume_handles(&self) -> BoxFuture<'_, Result<PvHandles, String>>;
}

/// Where a sweep's findings are reported besides the log and metrics (a
/// Kubernetes Event on the controller's Pod).
pub trait OrphanReport: Send + Sync + 'static {
    fn warn(&self, reason: &'static str, message: String) -> BoxFuture<'_, ()>;
}

/// Why a volume is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum OrphanReason {
    /// This cluster's volume: deleted after the grace period when deletion
    /// is on.
    Own,
    /// This cluster's volume whose PV had reclaim policy Retain: kept.
    Retained,
    /// No cluster identity in its comment: kept.
    NoIdentity,
}

impl OrphanReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            OrphanReason::Own => "own",
            OrphanReason::Retained => "retained",
            OrphanReason::NoIdentity => "no-identity",
        }
    }
}

/// One orphan volume as a sweep saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanVolume {
    pub slot: String,
    pub reason: OrphanReason,
    /// For this cluster's volumes: time since the orphaned-since mark;
    /// `None` while no mark could be written (age unknown: never deleted).
    pub orphaned_for: Option<Duration>,
}

/// What one sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepResult {
    /// Orphans, by slot.
    pub volumes: Vec<OrphanVolume>,
    /// `/file` names (no leading slash).
    pub files: Vec<String>,
    pub deleted: Vec<String>,
    /// Slots with the prefix that carry another cluster's identity.
    pub foreign: Vec<String>,
}

type Clock = Box<dyn Fn() -> Timestamp + Send + Sync>;

pub struct OrphanSweeper<B: OrphanBackend, P: VolumeReferences> {
    backend: Arc<B>,
    pvs: P,
    locks: VolumeLocks,
    recent: RecentCreates,
    config: OrphanConfig,
    metrics: OrphanMetrics,
    report: Box<dyn OrphanReport>,
    /// This cluster's slots found orphaned by the previous successful sweep.
    previous: Mutex<BTreeSet<String>>,
    clock: Clock,
}

impl<B: OrphanBackend, P: VolumeReferences> OrphanSweeper<B, P> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        backend: Arc<B>,
        pvs: P,
        locks: VolumeLocks,
        recent: RecentCreates,
        config: OrphanConfig,
        metrics: OrphanMetrics,
        report: Box<dyn OrphanReport>,
    ) -> Self {
        OrphanSweeper {
            backend,
            pvs,
            locks,
            recent,
            config,
            metrics,
            report,
            previous: Mutex::new(BTreeSet::new()),
            clock: Box::new(Timestamp::now),
        }
    }

    /// Sweeps every interval until cancelled.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            if let Err(e) = self.sweep().await {
                warn!(error = %e, "orphan sweep failed; nothing deleted, retrying next interval");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(self.config.interval) => {}
            }
        }
    }

    /// One sweep. Any failure to read the backend or the PVs aborts it
    /// before anything is decided, and breaks the run of consecutive
    /// sweeps: a volume must be found orphaned again twice.
    pub async fn sweep(&self) -> Result<SweepResult, String> {
        let result = self.sweep_once().await;
        if result.is_err() {
            self.previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        }
        result
    }

    async fn sweep_once(&self) -> Result<SweepResult, String> {
        let disks = self
            .backend
            .all_disks()
            .await
            .map_err(|e| format!("list disks: {e}"))?;
        let files = self
            .backend
            .files_under(&self.config.volume_path)
            .await
            .map_err(|e| format!("list files: {e}"))?;
        let pvs = self.pvs.volume_handles().await?;
        let now = (self.clock)();

        let owned: HashSet<&str> = disks
            .iter()
            .filter_map(|d| d.file_path.as_deref())
            .map(|p| p.trim_start_matches('/'))
            .collect();
        let mut result = SweepResult {
            files: files
                .iter()
                .filter(|f| f.kind.as_deref() != Some("directory"))
                .filter(|f| !owned.contains(f.name.as_str()))
                .map(|f| f.name.clone())
                .collect(),
            ..Default::default()
        };
        // This cluster's orphans, with the comment as it now is on the disk.
        let mut own: BTreeMap<String, Disk> = BTreeMap::new();
        // Snapshots have no PersistentVolume of their own (their
        // VolumeSnapshotContent holds them) and outlive their volume: they
        // are never orphans, whatever the volume prefix.
        let mut mine: Vec<&Disk> = disks
            .iter()
            .filter(|d| self.config.volume_prefix.matches(&d.slot) && !d.is_snapshot())
            .collect();
        mine.sort_by(|a, b| a.slot.cmp(&b.slot));
        for disk in mine {
            match &disk.comment.cluster {
                Some(id) if *id != self.config.cluster_id => {
                    result.foreign.push(disk.slot.clone());
                    continue;
                }
                None => {
                    if !pvs.contains_key(&disk.slot) {
                        result.volumes.push(OrphanVolume {
                            slot: disk.slot.clone(),
                            reason: OrphanReason::NoIdentity,
                            orphaned_for: None,
                        });
                    }
                    continue;
                }
                Some(_) => {}
            }
            let pv = pvs.get(&disk.slot).copied();
            let comment = self.record(disk, pv, now).await;
            if pv.is_some() {
                continue;
            }
            if comment.retain {
                result.volumes.push(OrphanVolume {
                    slot: disk.slot.clone(),
                    reason: OrphanReason::Retained,
                    orphaned_for: None,
                });
                continue;
            }
            result.volumes.push(OrphanVolume {
                slot: disk.slot.clone(),
                reason: OrphanReason::Own,
                orphaned_for: comment.orphaned_since.map(|t| elapsed(t, now)),
            });
            own.insert(
                disk.slot.clone(),
                Disk {
                    comment,
                    ..disk.clone()
                },
            );
        }
        if !result.foreign.is_empty() {
            debug!(
                count = result.foreign.len(),
                volumes = ?result.foreign,
                "volumes of other clusters ignored"
            );
        }

        let previous = std::mem::replace(
            &mut *self.previous.lock().unwrap_or_else(|p| p.into_inner()),
            own.keys().cloned().collect(),
        );
        if self.config.delete {
            for orphan in &result.volumes {
                if self.may_delete(orphan, &previous) {
                    match self.delete(&own[&orphan.slot]).await {
                        Ok(true) => result.deleted.push(orphan.slot.clone()),
                        Ok(false) => {}
                        Err(e) => {
                            warn!(volume = %orphan.slot, error = %e, "cannot delete orphan volume")
                        }
                    }
                }
            }
        }
        self.recent.prune(self.config.grace_period);
        self.publish(&result).await;
        Ok(result)
    }

    /// Brings the disk's marks up to date: the PV's reclaim policy while a
    /// PV exists (and no orphaned-since), else an orphaned-since mark from
    /// the first sweep that saw it orphaned. Returns the comment as it now
    /// is on the disk: unchanged when the write was skipped or failed (an
    /// orphan's age starts only once its mark is on the disk).
    async fn record(&self, disk: &Disk, pv: Option<Reclaim>, now: Timestamp) -> DiskComment {
        let mut want = disk.comment.clone();
        match pv {
            Some(reclaim) => {
                want.retain = reclaim == Reclaim::Retain;
                want.orphaned_since = None;
            }
            None if !want.retain => {
                want.orphaned_since.get_or_insert(now);
            }
            None => {}
        }
        if want == disk.comment {
            return want;
        }
        let Ok(_guard) = self.locks.try_lock(&disk.slot) else {
            info!(volume = %disk.slot, "volume has an operation in flight; its orphan marks are updated next sweep");
            return disk.comment.clone();
        };
        match self.backend.set_comment(&disk.slot, &want).await {
            Ok(()) => {
                info!(volume = %disk.slot, comment = %want, "orphan sweep updated the volume's comment");
                want
            }
            Err(e) => {
                self.metrics.mark_failures.inc();
                warn!(volume = %disk.slot, error = %e, "cannot update the volume's comment; retrying next sweep");
                disk.comment.clone()
            }
        }
    }

    fn may_delete(&self, orphan: &OrphanVolume, previous: &BTreeSet<String>) -> bool {
        let Some(age) = orphan.orphaned_for else {
            return false; // not this cluster's, retained, or not yet marked
        };
        orphan.reason == OrphanReason::Own
            && previous.contains(&orphan.slot)
            && age > self.config.grace_period
            && !self.recent.within(&orphan.slot, self.config.grace_period)
    }

    /// Whether the disk as it is now may be deleted: this cluster's, not
    /// retained, marked orphaned longer than the grace period.
    fn deletable_now(&self, disk: &Disk, now: Timestamp) -> bool {
        let c = &disk.comment;
        c.cluster.as_ref() == Some(&self.config.cluster_id)
            && !c.retain
            && c.orphaned_since
                .is_some_and(|t| elapsed(t, now) > self.config.grace_period)
    }

    /// Deletes under the volume's operation lock after a fresh look at the
    /// disk and a fresh PV list. `Ok(false)`: skipped (busy, changed, gone,
    /// or a PV references it now).
    async fn delete(&self, seen: &Disk) -> Result<bool, String> {
        let slot = &seen.slot;
        let Ok(_guard) = self.locks.try_lock(slot) else {
            info!(volume = %slot, "orphan volume has an operation in flight; not deleting it now");
            return Ok(false);
        };
        if self.recent.within(slot, self.config.grace_period) {
            return Ok(false);
        }
        let forget = || {
            self.previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(slot);
        };
        let disk = match self.backend.get_disk(slot).await {
            Ok(Some(d)) => d,
            Ok(None) => {
                forget();
                return Ok(false);
            }
            Err(e) => return Err(format!("look up {slot}: {e}")),
        };
        if !self.deletable_now(&disk, (self.clock)()) {
            info!(volume = %slot, comment = %disk.comment, "the volume's comment changed since the sweep began; not deleting it");
            forget();
            return Ok(false);
        }
        let handles = self.pvs.volume_handles().await?;
        if handles.contains_key(slot) {
            info!(volume = %slot, "a PersistentVolume now references this volume; not an orphan");
            forget();
            return Ok(false);
        }
        self.backend
            .delete(&disk)
            .await
            .map_err(|e| e.to_string())?;
        self.metrics.deleted.inc();
        forget();
        let msg = format!(
            "deleted orphan volume {slot} (file {}): no PersistentVolume since {}, longer than the grace period {}s, seen on two sweeps",
            disk.file_path.as_deref().unwrap_or("-"),
            disk.comment
                .orphaned_since
                .map(|t| t.to_string())
                .unwrap_or_default(),
            self.config.grace_period.as_secs(),
        );
        warn!("{msg}");
        self.report.warn("OrphanVolumeDeleted", msg).await;
        Ok(true)
    }

    async fn publish(&self, r: &SweepResult) {
        let left: Vec<&OrphanVolume> = r
            .volumes
            .iter()
            .filter(|v| !r.deleted.contains(&v.slot))
            .collect();
        self.metrics.volumes.set(left.len() as i64);
        for reason in [
            OrphanReason::Own,
            OrphanReason::Retained,
            OrphanReason::NoIdentity,
        ] {
            let of: Vec<&&OrphanVolume> = left.iter().filter(|v| v.reason == reason).collect();
            self.metrics
                .by_reason
                .with_label_values(&[reason.label()])
                .set(of.len() as i64);
            if of.is_empty() {
                continue;
            }
            let (event, names, what) = self.describe(reason, &of);
            let msg = format!(
                "{} backend volume(s) with prefix {:?} have no PersistentVolume{}: {}; {}",
                of.len(),
                self.config.volume_prefix.as_str(),
                what,
                names,
                self.consequence(reason),
            );
            warn!("{msg}");
            self.report.warn(event, msg).await;
        }
        self.metrics.foreign.set(r.foreign.len() as i64);
        self.metrics.files.set(r.files.len() as i64);
        if !r.files.is_empty() {
            let msg = format!(
                "{} file(s) under {} belong to no disk (never deleted automatically): {}",
                r.files.len(),
                self.config.volume_path,
                r.files.join(", ")
            );
            warn!("{msg}");
            self.report.warn("OrphanFiles", msg).await;
        }
    }

    fn describe(
        &self,
        reason: OrphanReason,
        of: &[&&OrphanVolume],
    ) -> (&'static str, String, &'static str) {
        let names = of
            .iter()
            .map(|v| match (reason, v.orphaned_for) {
                (OrphanReason::Own, Some(a)) => format!("{} (orphaned {}s)", v.slot, a.as_secs()),
                (OrphanReason::Own, None) => {
                    format!("{} (orphaned-since not recorded yet)", v.slot)
                }
                _ => v.slot.clone(),
            })
            .collect::<Vec<_>>()
            .join(", ");
        match reason {
            OrphanReason::Own => ("OrphanVolumes", names, ""),
            OrphanReason::Retained => (
                "RetainedOrphanVolumes",
                names,
                " and their PersistentVolume had reclaim policy Retain",
            ),
            OrphanReason::NoIdentity => (
                "UnownedOrphanVolumes",
                names,
                " and carry no cluster identity",
            ),
        }
    }

    fn consequence(&self, reason: OrphanReason) -> &'static str {
        match (reason, self.config.delete) {
            (OrphanReason::Own, true) => {
                "each is deleted once it has had no PersistentVolume for longer than the grace period (seen on two sweeps)"
            }
            (OrphanReason::Own, false) => "report only (--orphan-delete is off)",
            (OrphanReason::Retained, _) => "kept: never deleted automatically",
            (OrphanReason::NoIdentity, _) => {
                "kept: never deleted automatically (made by hand, by another driver, or before cluster identities)"
            }
        }
    }
}

/// Time from `since` to `now`; zero when `since` lies in the future.
fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(since)).unwrap_or_default()
}

#[cfg(test)]
#[path = "orphans_tests.rs"]
mod tests;
