//! Mounts, device nodes and statfs, each checked against the mount table,
//! and what still uses a device.

use super::*;

impl<E: Exec, S: Sys> DataPath<E, S> {
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

    pub(super) async fn expect_mounted(&self, target: &Path, dev: DevId) -> Result<()> {
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
        self.create_dir_all(target).await?;
        let opts = opts.for_fs(fs);
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
        self.create_dir_all(target).await?;
        self.sys
            .mount(&MountRequest::bind(Some(source), target, MsFlags::MS_BIND))
            .await
            .map_err(|e| Error::io("bind mount", target, e))?;
        if !flags.is_empty() {
            let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
            let remount = MountRequest::bind(None, target, flags);
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

    /// Creates a directory and its parents (no error if it exists).
    async fn create_dir_all(&self, dir: &Path) -> Result<()> {
        self.sys
            .create_dir_all(dir)
            .await
            .map_err(|e| Error::io("create", dir, e))
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

    /// Creates a block device node for `dev` at `path`, never a bind mount
    /// of `/dev` (docs/safety.md#device-nodes-not-bind-mounts). Read-only
    /// volumes get mode 0440.
    pub async fn make_device_node(&self, path: &Path, dev: DevId, readonly: bool) -> Result<()> {
        if let Some(parent) = path.parent() {
            self.create_dir_all(parent).await?;
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

    pub(super) async fn why_in_use(
        &self,
        s: &Subsystem,
        mounts: &[Mount],
    ) -> Result<Option<String>> {
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
