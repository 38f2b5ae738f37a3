//! Reading sysfs: which subsystems, controllers and block devices an NQN
//! has right now, and waiting for a device to appear.

use super::*;

impl<E: Exec, S: Sys> DataPath<E, S> {
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
    pub(super) async fn lookup(&self, nqn: &str) -> Result<Subsystem> {
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

    pub(super) async fn scan(&self, only: Option<&str>) -> Result<Vec<Subsystem>> {
        let mut found: BTreeMap<String, (Vec<Controller>, BTreeSet<String>)> = BTreeMap::new();
        let controllers =
            self.class_members("class/nvme", only, |n| matches!(n, NvmeName::Controller(_)));
        for (name, dir, nqn) in controllers.await? {
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
        let subsystems = self.class_members("class/nvme-subsystem", only, |n| {
            matches!(n, NvmeName::Subsystem(_))
        });
        for (_, dir, nqn) in subsystems.await? {
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

    /// The entries of a sysfs class directory whose name `kind` accepts,
    /// as (name, directory, subsystem NQN), only those of `only` if given.
    /// An entry being deleted can vanish between two reads: it is skipped.
    async fn class_members(
        &self,
        class: &str,
        only: Option<&str>,
        kind: fn(&NvmeName) -> bool,
    ) -> Result<Vec<(String, PathBuf, String)>> {
        let class_dir = self.sysfs(class);
        let mut members = Vec::new();
        for name in self.list(&class_dir).await? {
            if !sysfs::parse_name(&name).as_ref().is_some_and(kind) {
                continue;
            }
            let dir = class_dir.join(&name);
            let Some(nqn) = self.read_trimmed(&dir.join("subsysnqn")).await else {
                continue;
            };
            if only.is_none_or(|o| o == nqn) {
                members.push((name, dir, nqn));
            }
        }
        Ok(members)
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
    pub(super) async fn log_detection(
        &self,
        d: &BlockDevice,
        seen: std::time::SystemTime,
        polls: u32,
    ) {
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
