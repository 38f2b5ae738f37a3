//! Recovery of a staged volume whose device vanished (a controller
//! renumbered or lost), and the one rule for a mount of another device:
//! taken off only once that device is gone
//! (docs/safety.md#renumbered-devices).

use super::*;

impl<E: Exec, S: Sys> Inner<E, S> {
    /// Takes a mount off `path` whose device is not the volume's: allowed
    /// only when that device no longer exists (a controller renumbered or
    /// given up), since then nothing can be written through it anyway.
    pub(super) async fn drop_stale_mount(&self, path: &Path, m: &Mount) -> NodeResult<()> {
        let gone = self
            .dp
            .device_gone(m.dev())
            .await
            .map_err(dp("look up a mounted device"))?;
        if !gone {
            return Err(NodeError::ForeignMount {
                path: path.to_path_buf(),
                source_name: m.source.clone(),
                dev: m.dev(),
            });
        }
        warn!(path = %path.display(), device = %m.dev(), source = %m.source, "mount of a vanished device; taking it off");
        self.dp
            .unmount_all(path, true)
            .await
            .map_err(dp(format!("unmount the stale mount at {}", path.display())))?;
        Ok(())
    }

    /// Brings a staged volume back after its device vanished (a controller
    /// renumbered or lost): reconnects (when `reconnect`; otherwise only an
    /// existing new connection is used), remounts the staging path on the
    /// new device, and re-binds (or re-creates the device nodes of) the
    /// publish targets. Never formats: the volume was staged before.
    pub(super) async fn recover(
        &self,
        rec: &mut VolumeRecord,
        reconnect: bool,
    ) -> NodeResult<Vec<String>> {
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
                    return Err(NodeError::NotConnected {
                        nqn: rec.nqn.clone(),
                    })
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

    pub(super) fn report_recovered(&self, rec: &VolumeRecord, done: &[String]) {
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
}
