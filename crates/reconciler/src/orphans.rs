//! Orphan volumes: backend disks with the driver's volume prefix that no
//! PersistentVolume references, and backing files no disk owns.
//!
//! Lesson 13 (eager garbage collection) shapes every rule here:
//! - ages are real: the creation time the driver wrote into the disk's
//!   comment at CreateVolume. A disk without it (made by hand, or by the Go
//!   driver) has no known age; it is reported and never deleted;
//! - the default is report-only; with deletion on, a disk is deleted only
//!   when two consecutive sweeps found it orphaned, its recorded age exceeds
//!   the grace period, no CreateVolume returned it within the grace period,
//!   and a fresh PV list read right before the delete, under the volume's
//!   operation lock, still shows no PV for it;
//! - files are only ever reported.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use attachment_manager::lists::{self, PvFacts};
use attachment_manager::{RecentCreates, VolumeLocks};
use futures::future::BoxFuture;
use jiff::Timestamp;
use kube::Client;
use prometheus::{IntCounter, IntGauge, Registry};
use routeros::{Disk, FileEntry, Rds, RosPath, Slot, SlotPrefix};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

#[derive(Debug, Clone)]
pub struct OrphanConfig {
    /// `--orphan-reconcile-interval`.
    pub interval: Duration,
    /// `--orphan-delete`: delete (after the checks above) instead of only
    /// reporting.
    pub delete: bool,
    /// `--orphan-grace-period`: least recorded age before a delete.
    pub grace_period: Duration,
    /// Disks whose slot starts with this are the driver's volumes.
    pub volume_prefix: SlotPrefix,
    /// Backing files below this are checked for an owning disk.
    pub volume_path: RosPath,
}

/// What the sweep needs from the backend.
pub trait OrphanBackend: Send + Sync + 'static {
    /// Every file-backed disk (all slots: a file owned by any disk is owned).
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>>;
    fn files_under<'a>(
        &'a self,
        path: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>>;
    /// Removes the disk and its backing file.
    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>>;
}

impl OrphanBackend for Rds {
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>> {
        Box::pin(async move { self.list_disks(&SlotPrefix::new("")?).await })
    }

    fn files_under<'a>(
        &'a self,
        path: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>> {
        Box::pin(self.list_files(path))
    }

    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>> {
        Box::pin(async move {
            self.remove_disk(&Slot::new(&disk.slot)?).await?;
            if let Some(file) = disk.file_path.as_deref() {
                self.remove_file(&RosPath::new(file)?).await?;
            }
            Ok(())
        })
    }
}

/// The volume handles the cluster's PVs hold for this driver.
pub trait VolumeReferences: Send + Sync + 'static {
    /// Read fresh (not from a cache), so a PV created a moment ago counts.
    fn volume_handles(&self) -> BoxFuture<'_, Result<HashSet<String>, String>>;
}

/// PVs from the API server.
pub struct KubePvs {
    client: Client,
    driver: String,
}

impl KubePvs {
    pub fn new(client: Client, driver: impl Into<String>) -> Self {
        KubePvs {
            client,
            driver: driver.into(),
        }
    }
}

impl VolumeReferences for KubePvs {
    fn volume_handles(&self) -> BoxFuture<'_, Result<HashSet<String>, String>> {
        Box::pin(async move {
            // Page by page into the few fields needed: a whole-cluster
            // LIST decoded into full PVs ran at the same time as the
            // start-up rebuild and set the controller's memory peak.
            let mut handles = HashSet::new();
            lists::for_each_page(&self.client, lists::PV_PATH, |page: Vec<PvFacts>| {
                handles.extend(page.into_iter().filter_map(|pv| {
                    let csi = pv.spec.csi?;
                    (csi.driver == self.driver).then_some(csi.volume_handle)
                }));
            })
            .await
            .map_err(|e| e.to_string())?;
            Ok(handles)
        })
    }
}

/// Where a sweep's findings are reported besides the log and metrics (a
/// Kubernetes Event on the controller's Pod).
pub trait OrphanReport: Send + Sync + 'static {
    fn warn(&self, reason: &'static str, message: String) -> BoxFuture<'_, ()>;
}

/// No reporting beyond the log.
pub struct LogOnly;

impl OrphanReport for LogOnly {
    fn warn(&self, _: &'static str, _: String) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Warning Events `regarding` the controller's own Pod.
pub struct PodEvents {
    recorder: kube::runtime::events::Recorder,
    pod: k8s_openapi::api::core::v1::ObjectReference,
}

impl PodEvents {
    /// `None` unless POD_NAME and POD_NAMESPACE name the Pod.
    pub fn from_env(client: Client) -> Option<Self> {
        let name = std::env::var("POD_NAME").ok().filter(|s| !s.is_empty())?;
        let namespace = std::env::var("POD_NAMESPACE")
            .ok()
            .filter(|s| !s.is_empty())?;
        Some(PodEvents {
            recorder: kube::runtime::events::Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "rds-csi-controller".into(),
                    instance: Some(name.clone()),
                },
            ),
            pod: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Pod".into()),
                namespace: Some(namespace),
                name: Some(name),
                ..Default::default()
            },
        })
    }
}

impl OrphanReport for PodEvents {
    fn warn(&self, reason: &'static str, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let ev = kube::runtime::events::Event {
                type_: kube::runtime::events::EventType::Warning,
                reason: reason.into(),
                note: Some(message),
                action: "OrphanSweep".into(),
                secondary: None,
            };
            if let Err(e) = self.recorder.publish(&ev, &self.pod).await {
                warn!(error = %e, "cannot record an orphan event on the controller Pod");
            }
        })
    }
}

#[derive(Clone)]
pub struct OrphanMetrics {
    pub volumes: IntGauge,
    pub files: IntGauge,
    pub deleted: IntCounter,
}

impl OrphanMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = OrphanMetrics {
            volumes: IntGauge::new(
                "rds_csi_orphan_volumes",
                "Backend volumes with the driver's prefix that no PersistentVolume references, at the last orphan sweep.",
            )?,
            files: IntGauge::new(
                "rds_csi_orphan_files",
                "Backing files under the volume path that no disk owns, at the last orphan sweep (never deleted automatically).",
            )?,
            deleted: IntCounter::new(
                "rds_csi_orphan_deleted_total",
                "Orphan volumes deleted by the orphan sweep (--orphan-delete).",
            )?,
        };
        registry.register(Box::new(m.volumes.clone()))?;
        registry.register(Box::new(m.files.clone()))?;
        registry.register(Box::new(m.deleted.clone()))?;
        Ok(m)
    }
}

/// One orphan volume as a sweep saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanVolume {
    pub slot: String,
    /// `None`: the disk carries no creation time (age unknown).
    pub age: Option<Duration>,
}

/// What one sweep found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepResult {
    pub volumes: Vec<OrphanVolume>,
    /// `/file` names (no leading slash).
    pub files: Vec<String>,
    pub deleted: Vec<String>,
}

pub struct OrphanSweeper<B: OrphanBackend, P: VolumeReferences> {
    backend: Arc<B>,
    pvs: P,
    locks: VolumeLocks,
    recent: RecentCreates,
    config: OrphanConfig,
    metrics: OrphanMetrics,
    report: Box<dyn OrphanReport>,
    /// Slots found orphaned by the previous successful sweep.
    previous: Mutex<BTreeSet<String>>,
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
        let handles = self.pvs.volume_handles().await?;
        let now = Timestamp::now();

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
        let orphans: BTreeMap<&str, &Disk> = disks
            .iter()
            .filter(|d| self.config.volume_prefix.matches(&d.slot))
            .filter(|d| !handles.contains(&d.slot))
            .map(|d| (d.slot.as_str(), d))
            .collect();
        for (slot, disk) in &orphans {
            let age = disk
                .created
                .map(|c| Duration::try_from(now.duration_since(c)).unwrap_or_default());
            result.volumes.push(OrphanVolume {
                slot: slot.to_string(),
                age,
            });
        }

        let previous = std::mem::replace(
            &mut *self.previous.lock().unwrap_or_else(|p| p.into_inner()),
            orphans.keys().map(|s| s.to_string()).collect(),
        );
        if self.config.delete {
            for orphan in &result.volumes {
                if self.may_delete(orphan, &previous) {
                    let disk = orphans[orphan.slot.as_str()];
                    match self.delete(disk).await {
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

    fn may_delete(&self, orphan: &OrphanVolume, previous: &BTreeSet<String>) -> bool {
        let Some(age) = orphan.age else {
            return false; // age unknown: never
        };
        previous.contains(&orphan.slot)
            && age > self.config.grace_period
            && !self.recent.within(&orphan.slot, self.config.grace_period)
    }

    /// Deletes under the volume's operation lock after a fresh PV check.
    /// `Ok(false)`: skipped (busy, or a PV references it now).
    async fn delete(&self, disk: &Disk) -> Result<bool, String> {
        let Ok(_guard) = self.locks.try_lock(&disk.slot) else {
            info!(volume = %disk.slot, "orphan volume has an operation in flight; not deleting it now");
            return Ok(false);
        };
        if self.recent.within(&disk.slot, self.config.grace_period) {
            return Ok(false);
        }
        let handles = self.pvs.volume_handles().await?;
        if handles.contains(&disk.slot) {
            info!(volume = %disk.slot, "a PersistentVolume now references this volume; not an orphan");
            self.previous
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&disk.slot);
            return Ok(false);
        }
        self.backend.delete(disk).await.map_err(|e| e.to_string())?;
        self.metrics.deleted.inc();
        self.previous
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&disk.slot);
        warn!(volume = %disk.slot, file = ?disk.file_path, created = ?disk.created, "deleted orphan volume (no PersistentVolume, older than the grace period, seen on two sweeps)");
        Ok(true)
    }

    async fn publish(&self, r: &SweepResult) {
        let remaining = r.volumes.len() - r.deleted.len();
        self.metrics.volumes.set(remaining as i64);
        self.metrics.files.set(r.files.len() as i64);
        let left: Vec<String> = r
            .volumes
            .iter()
            .filter(|v| !r.deleted.contains(&v.slot))
            .map(|v| match v.age {
                Some(a) => format!("{} (age {}s)", v.slot, a.as_secs()),
                None => format!("{} (age unknown)", v.slot),
            })
            .collect();
        if !left.is_empty() {
            let msg = format!(
                "{} backend volume(s) with prefix {:?} have no PersistentVolume: {}; {}",
                left.len(),
                self.config.volume_prefix.as_str(),
                left.join(", "),
                if self.config.delete {
                    "volumes with a recorded age are deleted after two sweeps past the grace period; age unknown is never deleted"
                } else {
                    "report only (--orphan-delete is off)"
                }
            );
            warn!("{msg}");
            self.report.warn("OrphanVolumes", msg).await;
        }
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
}

#[cfg(test)]
#[path = "orphans_tests.rs"]
mod tests;
