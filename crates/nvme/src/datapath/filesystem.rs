//! Filesystems: the format decision's facts, e2fsck, online grow.

use super::*;

impl<E: Exec, S: Sys> DataPath<E, S> {
    pub(super) fn stable(s: &Subsystem, device: &BlockDevice) -> bool {
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

    pub(super) async fn check_ext4(&self, device: &BlockDevice) -> Result<()> {
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
}
