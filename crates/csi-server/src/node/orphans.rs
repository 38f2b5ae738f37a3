//! The orphan sweep: NVMe connections under the NQN prefix that no staged
//! volume accounts for, found at start and by periodic scans. A periodic
//! scan disconnects only what two scans in a row found orphaned, never a
//! volume an RPC is working on (docs/safety.md#eager-garbage-collection).

use super::*;

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

impl<E: Exec, S: Sys> NodeService<E, S> {
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
}

impl<E: Exec, S: Sys> Inner<E, S> {
    /// `confirmed`: for periodic scans, the orphans of the previous scan;
    /// only those are disconnected. `None` at start (no RPC can be in
    /// flight then): disconnect at once.
    pub(super) async fn clean_orphans(
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
