//! Where the driver's scripts run: a POSIX shell on the target host, over
//! the RouterOS crate's SSH client (one connection, bounded channels, a
//! deadline per command, reconnect) or, for tests and a controller on the
//! storage host itself, locally.
//!
//! A shell only carries a script there and brings back what it printed
//! with its exit status; judging the result is [`crate::error::classify`]'s,
//! the same for every shell.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

pub use routeros::Output;

use crate::error::{Error, Result, E};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs a script with `sh` as root on the target host. `name` labels the
/// command in metrics and logs. Errors only for the transport (unreachable,
/// timed out, output cut off): a script's own failure is its output.
pub trait Shell: Send + Sync {
    fn run<'a>(&'a self, name: &'static str, script: &'a str) -> BoxFuture<'a, Result<Output>>;
}

/// Quotes one word for a POSIX shell. Every value the driver puts in a
/// script is validated first (no NUL can reach here); quoting is the
/// second line of defence, never the only one.
pub fn quote(word: &str) -> String {
    match shlex::try_quote(word) {
        Ok(q) => q.into_owned(),
        // Only a NUL byte is refused; replace the word by one that quotes
        // nothing rather than pass it on.
        Err(_) => "''".to_string(),
    }
}

/// How the script is handed to `sh`: as the SSH user itself (root), or
/// through `sudo -n` (a user allowed to run `sh` without a password).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    #[default]
    Root,
    Sudo,
}

impl Privilege {
    /// The command line that runs `script` under this privilege.
    pub fn command_line(self, script: &str) -> String {
        let sh = format!("sh -c {}", quote(script));
        match self {
            Privilege::Root => sh,
            Privilege::Sudo => format!("sudo -n {sh}"),
        }
    }
}

/// The target host over SSH.
#[derive(Clone)]
pub struct SshShell {
    client: routeros::Client,
    privilege: Privilege,
}

impl SshShell {
    pub fn new(client: routeros::Client, privilege: Privilege) -> Self {
        SshShell { client, privilege }
    }

    pub fn client(&self) -> &routeros::Client {
        &self.client
    }
}

impl Shell for SshShell {
    fn run<'a>(&'a self, name: &'static str, script: &'a str) -> BoxFuture<'a, Result<Output>> {
        Box::pin(async move {
            let line = self.privilege.command_line(script);
            Ok(self.client.exec(name, &line).await?)
        })
    }
}

/// This machine's own `sh`.
#[derive(Debug, Clone)]
pub struct LocalShell {
    pub privilege: Privilege,
    pub timeout: Duration,
    /// Extra environment, e.g. a `PATH` with stand-ins first.
    pub env: Vec<(String, String)>,
}

impl Default for LocalShell {
    fn default() -> Self {
        LocalShell {
            privilege: Privilege::Root,
            timeout: Duration::from_secs(30),
            env: Vec::new(),
        }
    }
}

impl Shell for LocalShell {
    fn run<'a>(&'a self, _name: &'static str, script: &'a str) -> BoxFuture<'a, Result<Output>> {
        Box::pin(async move {
            let mut cmd = match self.privilege {
                Privilege::Root => tokio::process::Command::new("sh"),
                Privilege::Sudo => {
                    let mut c = tokio::process::Command::new("sudo");
                    c.args(["-n", "sh"]);
                    c
                }
            };
            cmd.arg("-c").arg(script).kill_on_drop(true);
            cmd.stdin(std::process::Stdio::null());
            for (k, v) in &self.env {
                cmd.env(k, v);
            }
            let out = tokio::time::timeout(self.timeout, cmd.output())
                .await
                .map_err(|_| Error(E::Timeout(self.timeout)))?
                .map_err(|e| Error(E::Unreachable(format!("cannot run sh: {e}"))))?;
            Ok(Output {
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                exit_status: out.status.code().and_then(|c| u32::try_from(c).ok()),
            })
        })
    }
}

#[cfg(any(test, feature = "fake"))]
pub use fake::FakeShell;

#[cfg(any(test, feature = "fake"))]
mod fake {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Responder = dyn Fn(&str, &str) -> Result<Output> + Send + Sync;

    /// A shell that records every script and answers from a function of
    /// the command's name and script: for unit tests of the rules above
    /// the host.
    #[derive(Clone)]
    pub struct FakeShell {
        calls: Arc<Mutex<Vec<(String, String)>>>,
        respond: Arc<Responder>,
    }

    impl FakeShell {
        pub fn new(respond: impl Fn(&str, &str) -> Result<Output> + Send + Sync + 'static) -> Self {
            FakeShell {
                calls: Arc::default(),
                respond: Arc::new(respond),
            }
        }

        /// Every script succeeds and prints nothing.
        pub fn ok() -> Self {
            FakeShell::new(|_, _| Ok(ok("")))
        }

        /// `(name, script)` of every command run, in order.
        pub fn calls(&self) -> Vec<(String, String)> {
            self.calls.lock().unwrap_or_else(|p| p.into_inner()).clone()
        }

        /// The names of the commands run, in order.
        pub fn names(&self) -> Vec<String> {
            self.calls().into_iter().map(|(n, _)| n).collect()
        }
    }

    impl Shell for FakeShell {
        fn run<'a>(&'a self, name: &'static str, script: &'a str) -> BoxFuture<'a, Result<Output>> {
            self.calls
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((name.to_string(), script.to_string()));
            let answer = (self.respond)(name, script);
            Box::pin(async move { answer })
        }
    }

    /// Success printing `stdout`.
    pub fn ok(stdout: &str) -> Output {
        Output {
            stdout: stdout.into(),
            stderr: String::new(),
            exit_status: Some(0),
        }
    }

    /// Failure with `code` and `stderr`.
    pub fn fail(code: u32, stderr: &str) -> Output {
        Output {
            stdout: String::new(),
            stderr: stderr.into(),
            exit_status: Some(code),
        }
    }
}

#[cfg(any(test, feature = "fake"))]
pub use fake::{fail, ok};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_script_reaches_sh_as_one_quoted_word() {
        let script = "echo 'a b' \"$HOME\"; exit 3";
        let line = Privilege::Root.command_line(script);
        assert_eq!(shlex::split(&line).unwrap(), vec!["sh", "-c", script]);
        let line = Privilege::Sudo.command_line(script);
        assert_eq!(
            shlex::split(&line).unwrap(),
            vec!["sudo", "-n", "sh", "-c", script]
        );
    }

    #[tokio::test]
    async fn the_local_shell_returns_output_and_exit_status() {
        let out = LocalShell::default()
            .run("t", "echo out; echo err >&2; exit 3")
            .await
            .unwrap();
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert_eq!(out.exit_status, Some(3));
    }

    #[tokio::test]
    async fn the_local_shell_enforces_its_deadline() {
        let shell = LocalShell {
            timeout: Duration::from_millis(100),
            ..LocalShell::default()
        };
        let err = shell.run("t", "sleep 5").await.unwrap_err();
        assert_eq!(err.kind(), "timeout");
    }
}
