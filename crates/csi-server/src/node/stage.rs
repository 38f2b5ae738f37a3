//! NodeStageVolume: connect the volume and, for a filesystem volume, make
//! sure it has a filesystem (formatting only a definitively empty device)
//! and mount it at the staging path.

use super::*;

/// NodeStageVolume's fields, checked.
pub(super) struct Stage {
    staging: PathBuf,
    cap: Cap,
    vt: context::VolumeTarget,
    pvc: Option<(String, String)>,
}

pub(super) fn stage_args(r: &proto::NodeStageVolumeRequest, c: &Checks) -> NodeResult<Stage> {
    let staging = abs_path("staging_target_path", &r.staging_target_path)?;
    let cap = capability(r.volume_capability.as_ref())?;
    let vt = c.target(&r.volume_context, &r.publish_context)?;
    if let (Some(a), Some(b)) = (cap.fs, vt.fs) {
        if a != b {
            return Err(NodeError::invalid(
                "volume_capability",
                format!("fs_type {a} differs from the volume context's fsType {b}"),
            ));
        }
    }
    Ok(Stage {
        staging,
        cap,
        vt,
        pvc: crate::params::pvc_of(&r.volume_context),
    })
}

impl<E: Exec, S: Sys> Inner<E, S> {
    /// Mounts the volume's filesystem at its staging path: probes, formats
    /// only a definitively empty device, checks ext4, mounts.
    pub(super) async fn mount_staging(
        &self,
        rec: &mut VolumeRecord,
        device: &BlockDevice,
        fs: FsType,
        opts: &MountOptions,
        formatted_before: bool,
    ) -> NodeResult<()> {
        let mounts = self.mounts().await?;
        let elsewhere = mounts_of(&mounts, device.dev).find(|m| m.mount_point != rec.staging_path);
        match decide::filesystem(&device.path, fs, elsewhere, formatted_before)? {
            decide::Filesystem::Shared => {
                if let Some(m) = elsewhere {
                    info!(device = %device.path.display(), at = %m.mount_point.display(), "device already mounted elsewhere on this node; sharing it")
                }
            }
            decide::Filesystem::Prepare { read_record } => {
                let record = match read_record {
                    false => None,
                    true => self.read_format_record(rec).await?,
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

    pub(super) async fn stage(
        &self,
        Opened {
            id,
            args,
            rec: previous,
            ..
        }: Opened<Stage>,
    ) -> NodeResult<proto::NodeStageVolumeResponse> {
        let Stage {
            staging,
            cap,
            vt,
            pvc,
        } = args;
        let fs = vt.fs_for(&cap);
        let mut rec = vt.record(&id, &staging, &cap);
        rec.pvc = pvc;
        if let Some(p) = &previous {
            let sub = self.resolve(&p.nqn).await?;
            let mounts = self.mounts().await?;
            let mounted = matches!(
                classify(&mounts, &p.staging_path, &sub.dev_ids()),
                MountState::Current(_)
            );
            let keep = decide::restage(
                &decide::Previous {
                    staging_path: &p.staging_path,
                    block: p.block,
                    nqn: &p.nqn,
                    mounted,
                },
                &decide::Staging {
                    volume: &id,
                    staging_path: &staging,
                    block: cap.block,
                    nqn: &rec.nqn,
                },
            )?;
            if keep.format_history {
                rec.formatted_here = p.formatted_here;
                rec.filesystem_seen = p.filesystem_seen;
            }
            if keep.targets {
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
        let state = classify(&self.mounts().await?, &staging, &sub.dev_ids());
        match decide::staging_mount(&id, &staging, fs, state)? {
            decide::StagingMount::Done => {
                if !rec.filesystem_seen {
                    rec.filesystem_seen = true;
                    self.save(&rec).await?;
                }
                return Ok(proto::NodeStageVolumeResponse {});
            }
            decide::StagingMount::DropStale(m) => {
                // It was mounted: it has a filesystem, whatever a probe
                // right after the reconnect may say.
                self.drop_stale_mount(&staging, &m).await?;
                rec.filesystem_seen = true;
                self.save(&rec).await?;
                stale = Some(m);
            }
            decide::StagingMount::Mount => {}
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
}
