//! NodePublishVolume and NodeUnpublishVolume: bind-mount the staged
//! filesystem, or make a device node for a raw block volume, at the
//! target; and take it off again, never removing anything recursively.

use super::*;

/// NodePublishVolume's fields, checked.
pub(super) struct Publish {
    staging: PathBuf,
    target: PathBuf,
    cap: Cap,
    readonly: bool,
    /// The target from the contexts: only needed (and its error only
    /// returned) when the volume has no record.
    ctx: NodeResult<context::VolumeTarget>,
    pvc: Option<(String, String)>,
}

pub(super) fn publish_args(r: &proto::NodePublishVolumeRequest, c: &Checks) -> NodeResult<Publish> {
    let staging = abs_path("staging_target_path", &r.staging_target_path)?;
    let target = abs_path("target_path", &r.target_path)?;
    if target == staging {
        return Err(NodeError::invalid(
            "target_path",
            "must differ from staging_target_path",
        ));
    }
    Ok(Publish {
        staging,
        target,
        cap: capability(r.volume_capability.as_ref())?,
        readonly: r.readonly,
        ctx: c.target(&r.volume_context, &r.publish_context),
        pvc: crate::params::pvc_of(&r.volume_context),
    })
}

/// The target path.
pub(super) fn unpublish_args(
    r: &proto::NodeUnpublishVolumeRequest,
    _: &Checks,
) -> NodeResult<PathBuf> {
    abs_path("target_path", &r.target_path)
}

impl<E: Exec, S: Sys> Inner<E, S> {
    pub(super) async fn publish(
        &self,
        Opened { id, args, rec, .. }: Opened<Publish>,
    ) -> NodeResult<proto::NodePublishVolumeResponse> {
        let Publish {
            staging,
            target,
            cap,
            readonly,
            ctx,
            pvc,
        } = args;
        let known = rec.is_some();
        let mut rec = match (rec, ctx) {
            (Some(r), _) => r,
            // The state directory was lost: rebuild the record from the
            // request, which carries everything.
            (None, Ok(vt)) => vt.record(&id, &staging, &cap),
            (None, Err(e)) => return Err(e),
        };
        rec.staging_path = staging.clone();
        if pvc.is_some() {
            rec.pvc = pvc;
        }
        // Other targets are only looked at when they could matter.
        let elsewhere = match rec.block == cap.block && cap.single_writer {
            true => self.published_elsewhere(&rec, &target).await?,
            false => None,
        };
        decide::may_publish(
            &id,
            rec.block,
            cap.block,
            cap.single_writer,
            elsewhere.as_deref(),
        )?;
        if cap.block {
            self.publish_block(&rec, known, &target, readonly).await?;
        } else {
            self.publish_fs(&mut rec, &target, readonly, &cap).await?;
        }
        rec.targets.insert(target, readonly);
        self.save(&rec).await?;
        Ok(proto::NodePublishVolumeResponse {})
    }

    pub(super) async fn publish_fs(
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
        let state = classify(&mounts, &staging, &sub.dev_ids());
        let staged = match decide::staged_from(&id, &staging, state)? {
            decide::StagedFrom::Current(m) => m,
            decide::StagedFrom::Stale(m) => {
                // The controller was renumbered after a reconnect: the
                // staging mount points at a device that no longer exists
                // (recover refuses if it still does).
                info!(volume = %id, stale = %m.dev(), "staging mount is stale; recovering");
                self.recover(rec, true).await?;
                let sub = self.resolve(&rec.nqn).await?;
                match classify(&self.mounts().await?, &staging, &sub.dev_ids()) {
                    MountState::Current(m) => m,
                    other => {
                        return Err(NodeError::NotRecovered {
                            staging,
                            found: format!("{other:?}"),
                        })
                    }
                }
            }
        };
        let mounts = self.mounts().await?;
        let state = classify(&mounts, target, &[staged.dev()]);
        match decide::bind_target(&id, target, readonly, state)? {
            decide::BindTarget::Done => return Ok(()),
            decide::BindTarget::DropStaleThenBind(m) => self.drop_stale_mount(target, &m).await?,
            decide::BindTarget::Bind => {}
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

    pub(super) async fn publish_block(
        &self,
        rec: &VolumeRecord,
        staged: bool,
        target: &Path,
        readonly: bool,
    ) -> NodeResult<()> {
        let id = &rec.volume_id;
        let sub = self.resolve(&rec.nqn).await?;
        if !staged && !sub.is_connected() {
            return Err(NodeError::NotStaged {
                volume: id.clone(),
                at: None,
            });
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
        let existing = self.lstat(target).await?;
        match decide::device_node_target(id, target, readonly, dev.dev, existing.as_ref(), mounted)?
        {
            decide::NodeTarget::Done => return Ok(()),
            decide::NodeTarget::OlderBindMount => {
                warn!(volume = %id, target = %target.display(), "target is a bind mount of the device (an older driver); leaving it");
                return Ok(());
            }
            decide::NodeTarget::Create(decide::Clear::Nothing) => {}
            decide::NodeTarget::Create(decide::Clear::OtherDeviceNode { old }) => {
                warn!(volume = %id, target = %target.display(), old = ?old, new = %dev.dev, "device node of another device number; replacing it");
                self.unlink(target).await?;
            }
            decide::NodeTarget::Create(decide::Clear::EmptyFile) => self.unlink(target).await?,
            decide::NodeTarget::Create(decide::Clear::Directory) => self.rmdir(target).await?,
        }
        self.dp
            .make_device_node(target, dev.dev, readonly)
            .await
            .map_err(dp(format!("publish volume {id} at {}", target.display())))
    }

    pub(super) async fn unpublish(
        &self,
        Opened {
            id,
            args: target,
            rec,
            ..
        }: Opened<PathBuf>,
    ) -> NodeResult<proto::NodeUnpublishVolumeResponse> {
        if is_mount_point(&self.mounts().await?, &target) {
            self.dp
                .unmount_all(&target, false)
                .await
                .map_err(dp(format!("unpublish volume {id}")))?;
        }
        // Checked again on a fresh table: only a path that is no longer a
        // mount point is ever removed, so nothing is deleted through a
        // mount (docs/safety.md#stacked-mounts-and-recursive-deletes).
        let mounted = is_mount_point(&self.mounts().await?, &target);
        let existing = match mounted {
            true => None,
            false => self.lstat(&target).await?,
        };
        match decide::unpublished_removal(&target, mounted, existing.as_ref())? {
            Some(decide::Removal::Rmdir) => self.rmdir(&target).await?,
            Some(decide::Removal::Unlink) => self.unlink(&target).await?,
            None => {}
        }
        if let Some(mut r) = rec {
            if r.targets.remove(&target).is_some() {
                self.save(&r).await?;
            }
        }
        Ok(proto::NodeUnpublishVolumeResponse {})
    }
}
