//! Host commands: nvme-cli, blkid, mkfs, e2fsck, resize2fs, xfs_growfs.
//!
//! Every command the node runs is a [`HostCommand`] variant, so the argument
//! lists live in one place and tests assert on typed calls rather than on
//! strings. [`RealExec`] runs them with tokio::process under a deadline,
//! killing the child if the deadline passes or the caller goes away.

use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The filesystems the driver makes and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    pub fn parse(s: &str) -> Option<FsType> {
        match s {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl std::fmt::Display for FsType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Arguments of `nvme connect` over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectArgs {
    pub address: String,
    pub port: u16,
    pub nqn: String,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
    pub host_nqn: String,
    pub host_id: Option<String>,
}

/// One command the node runs on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostCommand {
    NvmeConnect(ConnectArgs),
    /// Disconnects every controller of one subsystem. Only
    /// [`crate::DataPath::disconnect`] builds it, after the prefix check.
    NvmeDisconnect {
        nqn: String,
    },
    /// Rescans the namespaces of one controller (`/dev/nvmeX`).
    NvmeNsRescan {
        controller: PathBuf,
    },
    /// Low-level probe of every signature (`blkid -p`): exit 0 with
    /// KEY=value lines when something is found, 2 when nothing is.
    BlkidProbe {
        device: PathBuf,
    },
    Mkfs {
        fs: FsType,
        device: PathBuf,
    },
    /// `e2fsck -p`: repairs what is safe to repair without asking.
    E2fsck {
        device: PathBuf,
    },
    /// Online grow of a mounted ext4.
    Resize2fs {
        device: PathBuf,
    },
    /// Online grow of a mounted xfs (it takes the mount point).
    XfsGrowfs {
        mount_point: PathBuf,
    },
}

/// Which deadline applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Duty {
    /// Quick commands: nvme-cli, blkid.
    Quick,
    /// Commands whose time grows with the volume: mkfs, fsck, grow.
    Long,
}

impl HostCommand {
    pub fn program(&self) -> &'static str {
        match self {
            HostCommand::NvmeConnect(_)
            | HostCommand::NvmeDisconnect { .. }
            | HostCommand::NvmeNsRescan { .. } => "nvme",
            HostCommand::BlkidProbe { .. } => "blkid",
            HostCommand::Mkfs {
                fs: FsType::Ext4, ..
            } => "mkfs.ext4",
            HostCommand::Mkfs {
                fs: FsType::Xfs, ..
            } => "mkfs.xfs",
            HostCommand::E2fsck { .. } => "e2fsck",
            HostCommand::Resize2fs { .. } => "resize2fs",
            HostCommand::XfsGrowfs { .. } => "xfs_growfs",
        }
    }

    /// The name its time is charged to in [`crate::steps`].
    pub fn step(&self) -> &'static str {
        match self {
            HostCommand::NvmeConnect(_) => "nvme_connect",
            HostCommand::NvmeDisconnect { .. } => "nvme_disconnect",
            HostCommand::NvmeNsRescan { .. } => "nvme_ns_rescan",
            HostCommand::BlkidProbe { .. } => "blkid",
            HostCommand::Mkfs { .. } => "mkfs",
            HostCommand::E2fsck { .. } => "e2fsck",
            HostCommand::Resize2fs { .. } | HostCommand::XfsGrowfs { .. } => "grow",
        }
    }

    pub fn duty(&self) -> Duty {
        match self {
            HostCommand::NvmeConnect(_)
            | HostCommand::NvmeDisconnect { .. }
            | HostCommand::NvmeNsRescan { .. }
            | HostCommand::BlkidProbe { .. } => Duty::Quick,
            HostCommand::Mkfs { .. }
            | HostCommand::E2fsck { .. }
            | HostCommand::Resize2fs { .. }
            | HostCommand::XfsGrowfs { .. } => Duty::Long,
        }
    }

    /// The argument list. Values that may start with `-` use the `--opt=value`
    /// form; every other value was validated before it got here.
    pub fn args(&self) -> Vec<String> {
        let p = |p: &PathBuf| p.to_string_lossy().into_owned();
        match self {
            HostCommand::NvmeConnect(c) => {
                let mut a = vec![
                    "connect".to_string(),
                    "-t".into(),
                    "tcp".into(),
                    "-a".into(),
                    c.address.clone(),
                    "-s".into(),
                    c.port.to_string(),
                    "-n".into(),
                    c.nqn.clone(),
                    format!("--hostnqn={}", c.host_nqn),
                ];
                if let Some(id) = &c.host_id {
                    a.push(format!("--hostid={id}"));
                }
                a.push(format!("--ctrl-loss-tmo={}", c.ctrl_loss_tmo));
                a.push(format!("--reconnect-delay={}", c.reconnect_delay));
                a.push(format!("--keep-alive-tmo={}", c.keep_alive_tmo));
                a
            }
            HostCommand::NvmeDisconnect { nqn } => {
                vec!["disconnect".into(), "-n".into(), nqn.clone()]
            }
            HostCommand::NvmeNsRescan { controller } => vec!["ns-rescan".into(), p(controller)],
            HostCommand::BlkidProbe { device } => {
                vec!["-p".into(), "-o".into(), "export".into(), p(device)]
            }
            // No -F / -f: mkfs.xfs then refuses a signature that appeared
            // after the probe. mke2fs does not: it looks for an existing
            // filesystem only when stdin and stdout are terminals, so for
            // ext4 the probe and the format record are the only guards.
            // -q: no progress report through the pipe (errors still go to
            // stderr), as a person scripting it would run it.
            HostCommand::Mkfs {
                fs: FsType::Ext4,
                device,
            } => vec![
                "-q".into(),
                "-m".into(),
                "0".into(),
                "-E".into(),
                "nodiscard,lazy_itable_init=1".into(),
                p(device),
            ],
            HostCommand::Mkfs {
                fs: FsType::Xfs,
                device,
            } => vec!["-K".into(), p(device)],
            HostCommand::E2fsck { device } => vec!["-p".into(), p(device)],
            HostCommand::Resize2fs { device } => vec![p(device)],
            HostCommand::XfsGrowfs { mount_point } => vec!["-d".into(), p(mount_point)],
        }
    }

    /// `program arg arg ...`, for messages.
    pub fn command_line(&self) -> String {
        let mut s = self.program().to_string();
        for a in self.args() {
            s.push(' ');
            s.push_str(&a);
        }
        s
    }
}

/// How a finished command ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Output {
    /// Exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn exit(code: i32) -> Self {
        Output {
            code: Some(code),
            ..Default::default()
        }
    }

    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// "exit code N" or "a signal".
    pub fn status(&self) -> String {
        match self.code {
            Some(c) => format!("exit code {c}"),
            None => "a signal".into(),
        }
    }

    /// The first part of stderr (or stdout when stderr is empty), trimmed,
    /// for error messages.
    pub fn diagnostic(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let t: String = text.trim().chars().take(500).collect();
        t.replace('\n', "; ")
    }
}

/// A command that could not be run to the end.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} did not finish within {after:?} and was killed")]
    Timeout {
        program: &'static str,
        after: Duration,
    },
}

/// Runs host commands.
pub trait Exec: Send + Sync + 'static {
    fn run(
        &self,
        cmd: &HostCommand,
        timeout: Duration,
    ) -> impl Future<Output = Result<Output, ExecError>> + Send;
}

/// Runs commands for real, found through PATH.
#[derive(Debug, Clone, Default)]
pub struct RealExec;

impl Exec for RealExec {
    async fn run(&self, cmd: &HostCommand, timeout: Duration) -> Result<Output, ExecError> {
        tracing::debug!(command = %cmd.command_line(), "running");
        run_argv(cmd.program(), &cmd.args(), timeout).await
    }
}

async fn run_argv(
    program: &'static str,
    args: &[String],
    timeout: Duration,
) -> Result<Output, ExecError> {
    let mut c = tokio::process::Command::new(program);
    c.args(args)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropping the future (deadline or a cancelled RPC) kills the child.
        .kill_on_drop(true);
    let out = match tokio::time::timeout(timeout, c.output()).await {
        Err(_) => {
            return Err(ExecError::Timeout {
                program,
                after: timeout,
            })
        }
        Ok(Err(source)) => return Err(ExecError::Spawn { program, source }),
        Ok(Ok(o)) => o,
    };
    Ok(Output {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect() -> ConnectArgs {
        ConnectArgs {
            address: "10.0.0.5".into(),
            port: 4420,
            nqn: "nqn.2000-02.com.mikrotik:pvc-1".into(),
            ctrl_loss_tmo: -1,
            reconnect_delay: 5,
            keep_alive_tmo: 5,
            host_nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            host_id: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
        }
    }

    #[test]
    fn connect_passes_target_tuning_and_host_identity() {
        let cmd = HostCommand::NvmeConnect(connect());
        assert_eq!(
            cmd.command_line(),
            "nvme connect -t tcp -a 10.0.0.5 -s 4420 -n nqn.2000-02.com.mikrotik:pvc-1 \
             --hostnqn=nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427 \
             --hostid=1b4e28ba-2fa1-11d2-883f-0016d3cca427 --ctrl-loss-tmo=-1 \
             --reconnect-delay=5 --keep-alive-tmo=5"
        );
    }

    #[test]
    fn mkfs_never_forces_over_an_existing_signature() {
        for fs in [FsType::Ext4, FsType::Xfs] {
            let args = HostCommand::Mkfs {
                fs,
                device: "/dev/nvme1n1".into(),
            }
            .args();
            assert!(!args.iter().any(|a| a == "-F" || a == "-f"), "{args:?}");
        }
        assert_eq!(
            HostCommand::Mkfs {
                fs: FsType::Ext4,
                device: "/dev/nvme1n1".into()
            }
            .command_line(),
            "mkfs.ext4 -q -m 0 -E nodiscard,lazy_itable_init=1 /dev/nvme1n1"
        );
        assert_eq!(
            HostCommand::Mkfs {
                fs: FsType::Xfs,
                device: "/dev/nvme1n1".into()
            }
            .command_line(),
            "mkfs.xfs -K /dev/nvme1n1"
        );
    }

    #[test]
    fn blkid_probes_low_level_in_export_format() {
        assert_eq!(
            HostCommand::BlkidProbe {
                device: "/dev/nvme0n1".into()
            }
            .command_line(),
            "blkid -p -o export /dev/nvme0n1"
        );
    }

    #[tokio::test]
    async fn a_command_past_its_deadline_is_killed() {
        let start = std::time::Instant::now();
        let err = run_argv("sleep", &["30".into()], Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let err = run_argv("rds-csi-no-such-program", &[], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Spawn { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_real_runner_reports_exit_codes_and_output() {
        // blkid -p on a path that does not exist exits 2, the same code as
        // "no signature": the reason a probe is only trusted on a device
        // that was just read.
        let out = RealExec
            .run(
                &HostCommand::E2fsck {
                    device: "/nonexistent/rds-csi-test".into(),
                },
                Duration::from_secs(10),
            )
            .await;
        match out {
            Ok(o) => assert!(!o.success()),
            Err(ExecError::Spawn { .. }) => {} // e2fsprogs not installed here
            Err(e) => panic!("{e}"),
        }
    }
}
