//! nvme-cli: connect, disconnect and rescan, only ever for owned NQNs.

use super::*;

impl<E: Exec, S: Sys> DataPath<E, S> {
    /// Connects to a target and returns its block device. Idempotent: a
    /// live connection with a device is reused; a connection without a
    /// device is torn down and made again.
    pub async fn connect(&self, t: &Target) -> Result<Connected> {
        self.connect_with(t, Deviceless::Reconnect).await
    }

    /// [`Self::connect`], told what to do with a connection that has no
    /// block device even after the wait.
    pub async fn connect_with(&self, t: &Target, deviceless: Deviceless) -> Result<Connected> {
        // Never connect what could not be disconnected later.
        self.check_owned(&t.nqn)?;
        let s = self.resolve(&t.nqn).await?;
        if let Some(d) = s.device() {
            debug!(nqn = %t.nqn, state = %s.describe(), "already connected");
            return Ok(Connected {
                device: d.clone(),
                reused: true,
            });
        }
        if s.is_connected() {
            let settle = match deviceless {
                Deviceless::Reconnect => SETTLE.min(self.config.timeouts.device),
                Deviceless::Keep => self.config.timeouts.device,
            };
            if let Ok(d) = self.wait_for_device(&t.nqn, settle).await {
                return Ok(Connected {
                    device: d,
                    reused: true,
                });
            }
            if deviceless == Deviceless::Keep {
                let now = self.resolve(&t.nqn).await?;
                warn!(nqn = %t.nqn, state = %now.describe(), "connected but no block device; the volume is in use, so the connection is kept");
                return Err(Error::refused_for_now(
                    format!("disconnect {} to connect it again", t.nqn),
                    format!(
                        "it is connected but has no block device after {:?} ({}), and the volume is still mounted or published on this node",
                        settle,
                        now.describe()
                    ),
                ));
            }
            warn!(nqn = %t.nqn, state = %s.describe(), "connected but no block device; reconnecting");
            self.disconnect(&t.nqn).await?;
        }
        let cmd = HostCommand::NvmeConnect(ConnectArgs {
            address: t.address.clone(),
            port: t.port,
            nqn: t.nqn.clone(),
            ctrl_loss_tmo: t.ctrl_loss_tmo,
            reconnect_delay: t.reconnect_delay,
            keep_alive_tmo: t.keep_alive_tmo,
            host_nqn: self.config.host.nqn.clone(),
            host_id: self.config.host.id.clone(),
        });
        let out = self.run(&cmd).await?;
        if !out.success() {
            // nvme-cli also fails when the subsystem got connected meanwhile
            // ("already connected"): look before giving up.
            if !self.resolve(&t.nqn).await?.is_connected() {
                return Err(Error::Failed {
                    command: cmd.command_line(),
                    status: out.status(),
                    diagnostic: out.diagnostic(),
                    kind: ErrorKind::Unavailable,
                });
            }
        }
        let device = self
            .wait_for_device(&t.nqn, self.config.timeouts.device)
            .await?;
        info!(nqn = %t.nqn, device = %device.path.display(), dev = %device.dev, "connected");
        Ok(Connected {
            device,
            reused: false,
        })
    }

    /// Disconnects every controller of `nqn`: the one place a disconnect is
    /// issued, and it refuses any NQN outside the configured prefix
    /// before running anything
    /// (docs/safety.md#subsystems-the-driver-does-not-own).
    pub async fn disconnect(&self, nqn: &str) -> Result<()> {
        self.check_owned(nqn)?;
        if !self.resolve(nqn).await?.is_connected() {
            return Ok(());
        }
        self.run_ok(
            &HostCommand::NvmeDisconnect {
                nqn: nqn.to_string(),
            },
            ErrorKind::Internal,
        )
        .await?;
        let deadline = self.config.timeouts.command;
        self.poll(nqn, "disconnect_wait", deadline, |s, expired| {
            if !s.is_connected() {
                info!(nqn, "disconnected");
                Some(Ok(()))
            } else if expired {
                Some(Err(Error::Failed {
                    command: format!("nvme disconnect -n {nqn}"),
                    status: "success".into(),
                    diagnostic: format!("still {}", s.describe()),
                    kind: ErrorKind::Internal,
                }))
            } else {
                None
            }
        })
        .await
    }

    /// Rescans the namespaces of every controller of `nqn`, then waits (up
    /// to the device deadline) until the device is at least `min_bytes`.
    pub async fn rescan(&self, nqn: &str, min_bytes: u64) -> Result<BlockDevice> {
        let s = self.resolve(nqn).await?;
        if !s.is_connected() {
            return Err(Error::refused(
                format!("rescan {nqn}"),
                "the volume is not connected on this node",
            ));
        }
        for c in &s.controllers {
            self.run_ok(
                &HostCommand::NvmeNsRescan {
                    controller: self.config.paths.dev.join(&c.name),
                },
                ErrorKind::Internal,
            )
            .await?;
        }
        let deadline = self.config.timeouts.device;
        self.poll(nqn, "rescan_wait", deadline, |s, expired| {
            match s.device() {
                Some(d) if d.size_bytes >= min_bytes => Some(Ok(d.clone())),
                Some(d) if expired => Some(Err(Error::refused_for_now(
                    format!("expand {}", d.path.display()),
                    format!(
                    "the device is {} bytes after a rescan, less than the requested {min_bytes}",
                    d.size_bytes
                ),
                ))),
                None if expired => Some(Err(Error::NoDevice {
                    nqn: nqn.to_string(),
                    waited: deadline,
                    detail: s.describe(),
                })),
                _ => None,
            }
        })
        .await
    }

    /// Looks `nqn` up every poll interval, charging the time to `step`,
    /// until `judge` answers; `judge` is told whether `deadline` (from the
    /// first look) has passed.
    async fn poll<T>(
        &self,
        nqn: &str,
        step: &'static str,
        deadline: Duration,
        mut judge: impl FnMut(&Subsystem, bool) -> Option<Result<T>>,
    ) -> Result<T> {
        let start = tokio::time::Instant::now();
        loop {
            let s = self.lookup(nqn).await;
            mark(step);
            let s = s?;
            if let Some(answer) = judge(&s, start.elapsed() >= deadline) {
                return answer;
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}
