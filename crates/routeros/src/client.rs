//! SSH transport to RouterOS: one persistent connection, a bounded number of
//! concurrent exec channels, a deadline on every command, keepalive, and
//! reconnect with exponential backoff and jitter.
//!
//! The SSH handshake costs hundreds of milliseconds on a real RDS; paying it
//! per call would dominate every CSI operation, so all commands share one
//! authenticated connection and each opens its own cheap channel.

use std::path::Path;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use russh::client;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;
use tokio::sync::{Mutex, Semaphore};
use tracing::{debug, info, warn};

use crate::command::Command;
use crate::error::{classify, Error, Result};
use crate::metrics::ClientMetrics;

/// How the server's host key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Accept only a key with this SHA-256 fingerprint (`SHA256:...` as
    /// printed by `ssh-keygen -lf`; the `SHA256:` prefix is optional).
    Pinned(String),
    /// Accept any key. Exposes the connection to impersonation; only for
    /// labs, and logged loudly at every connect.
    InsecureAcceptAny,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of the RDS SSH service.
    pub address: String,
    pub user: String,
    pub host_key: HostKeyPolicy,
    /// Concurrent exec channels on the one connection.
    pub max_channels: usize,
    /// Deadline for one command, from asking for a channel to the last byte.
    pub command_timeout: Duration,
    /// Deadline for TCP connect + handshake + authentication.
    pub connect_timeout: Duration,
    pub keepalive_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl ClientConfig {
    pub fn new(
        address: impl Into<String>,
        user: impl Into<String>,
        host_key: HostKeyPolicy,
    ) -> Self {
        ClientConfig {
            address: address.into(),
            user: user.into(),
            host_key,
            max_channels: 8,
            command_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(10),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// What a command printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub exit_status: Option<u32>,
}

/// Loads an OpenSSH private key file. The key's bytes never appear in
/// errors: only the path and the kind of failure do.
pub fn load_key(path: &Path) -> Result<PrivateKey> {
    russh::keys::load_secret_key(path, None).map_err(|e| {
        Error::Key(format!(
            "{}: {}",
            path.display(),
            match e {
                russh::keys::Error::IO(io) => io.kind().to_string(),
                russh::keys::Error::KeyIsEncrypted => "the key is encrypted".to_string(),
                _ => "not a supported OpenSSH private key".to_string(),
            }
        ))
    })
}

/// Normalizes a fingerprint for comparison.
fn normalize_fingerprint(fp: &str) -> String {
    let fp = fp.trim();
    let body = fp.strip_prefix("SHA256:").unwrap_or(fp);
    format!("SHA256:{}", body.trim_end_matches('='))
}

/// The SHA-256 fingerprint of a public key in `ssh-keygen -lf` form.
pub fn fingerprint(key: &russh::keys::PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

struct Handler {
    policy: HostKeyPolicy,
    /// The fingerprint the server presented, for the mismatch error.
    seen: Arc<StdMutex<Option<String>>>,
}

impl client::Handler for Handler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            // Host certificates are not part of the RDS setup; refuse rather
            // than guess how to trust them.
            return Ok(matches!(self.policy, HostKeyPolicy::InsecureAcceptAny));
        };
        let actual = fingerprint(key);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(actual.clone());
        Ok(match &self.policy {
            HostKeyPolicy::Pinned(expected) => normalize_fingerprint(expected) == actual,
            HostKeyPolicy::InsecureAcceptAny => true,
        })
    }
}

type Session = Arc<client::Handle<Handler>>;

#[derive(Default)]
struct ConnState {
    session: Option<Session>,
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
}

/// A RouterOS SSH client. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    config: ClientConfig,
    key: Arc<PrivateKey>,
    conn: Mutex<ConnState>,
    channels: Semaphore,
    metrics: Option<ClientMetrics>,
}

impl Client {
    pub fn new(config: ClientConfig, key: PrivateKey, metrics: Option<ClientMetrics>) -> Self {
        if config.host_key == HostKeyPolicy::InsecureAcceptAny {
            warn!(
                address = %config.address,
                "RDS host key checking is DISABLED: any server can impersonate the RDS"
            );
        }
        let channels = Semaphore::new(config.max_channels.max(1));
        Client {
            inner: Arc::new(Inner {
                config,
                key: Arc::new(key),
                conn: Mutex::new(ConnState::default()),
                channels,
                metrics,
            }),
        }
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Whether a live connection is open right now.
    pub async fn is_connected(&self) -> bool {
        let state = self.inner.conn.lock().await;
        state.session.as_ref().is_some_and(|s| !s.is_closed())
    }

    /// Runs one command and classifies its output.
    pub async fn run(&self, command: &Command) -> Result<Output> {
        self.timed(command.name(), &command.render(), |out| {
            classify(&out.stdout, &out.stderr, out.exit_status)?;
            Ok(out)
        })
        .await
    }

    /// Runs a plain command line (for a POSIX shell on a Linux host, not
    /// RouterOS) on the same connection, channels and deadline, and returns
    /// what it printed with its exit status, unclassified: only a transport
    /// failure (unreachable, timed out, output cut off) is an error here, a
    /// non-zero exit status is the caller's to judge. `name` labels the
    /// metrics, where a non-zero exit status counts as `failed`.
    /// The caller must have validated and quoted every part of `line`.
    pub async fn exec(&self, name: &'static str, line: &str) -> Result<Output> {
        self.timed(name, line, Ok).await
    }

    /// Runs `line`, passes its output through `check`, and records the
    /// outcome and duration under `name`.
    async fn timed(
        &self,
        name: &'static str,
        line: &str,
        check: impl FnOnce(Output) -> Result<Output>,
    ) -> Result<Output> {
        let started = Instant::now();
        let result = self.run_raw(line).await.and_then(check);
        let elapsed = started.elapsed();
        if let Some(m) = &self.inner.metrics {
            m.commands
                .with_label_values(&[name, outcome(&result)])
                .inc();
            m.duration
                .with_label_values(&[name])
                .observe(elapsed.as_secs_f64());
        }
        match &result {
            Ok(_) => debug!(command = name, ?elapsed, "SSH command done"),
            Err(e) => debug!(command = name, ?elapsed, error = %e, "SSH command failed"),
        }
        result
    }

    /// Runs a raw command line without classifying the output. Callers other
    /// than `run` must have validated every part of `line`.
    async fn run_raw(&self, line: &str) -> Result<Output> {
        let timeout = self.inner.config.command_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let _permit = tokio::time::timeout_at(deadline, self.inner.channels.acquire())
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|_| Error::Unreachable("client is shutting down".into()))?;
        let session = self.session().await?;

        let channel = match tokio::time::timeout_at(deadline, session.channel_open_session()).await
        {
            Err(_) => {
                // A connection that cannot even open a channel is presumed
                // dead; the next command reconnects.
                self.drop_session(&session, "channel open timed out").await;
                return Err(Error::Timeout(timeout));
            }
            Ok(Err(e)) => {
                self.drop_session(&session, &e.to_string()).await;
                return Err(Error::Unreachable(format!("cannot open a channel: {e}")));
            }
            Ok(Ok(c)) => c,
        };
        match tokio::time::timeout_at(deadline, exec(channel, line)).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(e)) => {
                self.drop_session(&session, &e.to_string()).await;
                Err(e)
            }
            Ok(Ok(out)) => Ok(out),
        }
    }

    /// Returns the live session, connecting if there is none. While backing
    /// off after failures, fails fast instead of piling up handshakes.
    async fn session(&self) -> Result<Session> {
        let mut state = self.inner.conn.lock().await;
        if let Some(s) = &state.session {
            if !s.is_closed() {
                return Ok(s.clone());
            }
            state.session = None;
            self.set_connected(false);
        }
        if let Some(at) = state.retry_at {
            if Instant::now() < at {
                return Err(Error::Unreachable(format!(
                    "reconnect backing off after: {}",
                    state.last_error.as_deref().unwrap_or("an earlier failure")
                )));
            }
        }
        match self.connect().await {
            Ok(session) => {
                if state.failures > 0 {
                    info!(address = %self.inner.config.address, "reconnected to the RDS");
                }
                state.failures = 0;
                state.retry_at = None;
                state.last_error = None;
                state.session = Some(session.clone());
                self.set_connected(true);
                self.count_connect("ok");
                Ok(session)
            }
            Err(e) => {
                state.failures = state.failures.saturating_add(1);
                let delay = backoff(
                    self.inner.config.backoff_initial,
                    self.inner.config.backoff_max,
                    state.failures,
                );
                state.retry_at = Some(Instant::now() + delay);
                state.last_error = Some(e.to_string());
                self.count_connect(e.kind());
                warn!(address = %self.inner.config.address, error = %e, retry_in = ?delay, "cannot connect to the RDS");
                Err(e)
            }
        }
    }

    async fn connect(&self) -> Result<Session> {
        let cfg = &self.inner.config;
        if cfg.host_key == HostKeyPolicy::InsecureAcceptAny {
            warn!(address = %cfg.address, "connecting to the RDS WITHOUT host key verification");
        }
        let seen = Arc::new(StdMutex::new(None));
        let handler = Handler {
            policy: cfg.host_key.clone(),
            seen: seen.clone(),
        };
        let ssh_config = Arc::new(client::Config {
            keepalive_interval: Some(cfg.keepalive_interval),
            keepalive_max: 3,
            inactivity_timeout: None,
            nodelay: true,
            ..Default::default()
        });
        let connect = async {
            let mut handle = client::connect(ssh_config, cfg.address.as_str(), handler)
                .await
                .map_err(|e| match e {
                    russh::Error::UnknownKey => Error::HostKeyMismatch {
                        expected: match &cfg.host_key {
                            HostKeyPolicy::Pinned(fp) => normalize_fingerprint(fp),
                            HostKeyPolicy::InsecureAcceptAny => "any".into(),
                        },
                        actual: seen
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .clone()
                            .unwrap_or_else(|| "a certificate".into()),
                    },
                    other => Error::Unreachable(format!("{}: {other}", cfg.address)),
                })?;
            let hash = handle
                .best_supported_rsa_hash()
                .await
                .map_err(|e| Error::Unreachable(e.to_string()))?
                .flatten();
            let auth = handle
                .authenticate_publickey(
                    cfg.user.clone(),
                    PrivateKeyWithHashAlg::new(self.inner.key.clone(), hash),
                )
                .await
                .map_err(|e| Error::Unreachable(format!("authentication: {e}")))?;
            if !auth.success() {
                return Err(Error::AuthFailed {
                    user: cfg.user.clone(),
                });
            }
            Ok(Arc::new(handle))
        };
        tokio::time::timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::Unreachable(format!(
                    "{}: no SSH session within {:?}",
                    cfg.address, cfg.connect_timeout
                ))
            })?
    }

    async fn drop_session(&self, failed: &Session, why: &str) {
        let mut state = self.inner.conn.lock().await;
        if state
            .session
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, failed))
        {
            warn!(reason = why, "dropping the RDS SSH connection");
            state.session = None;
            self.set_connected(false);
        }
    }

    fn set_connected(&self, up: bool) {
        if let Some(m) = &self.inner.metrics {
            m.connected.set(if up { 1 } else { 0 });
        }
    }

    fn count_connect(&self, outcome: &str) {
        if let Some(m) = &self.inner.metrics {
            m.connects.with_label_values(&[outcome]).inc();
        }
    }

    /// Closes the connection politely.
    pub async fn close(&self) {
        let mut state = self.inner.conn.lock().await;
        if let Some(s) = state.session.take() {
            let _ = s
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
        }
        self.set_connected(false);
    }
}

async fn exec(mut channel: russh::Channel<client::Msg>, line: &str) -> Result<Output> {
    channel
        .exec(true, line)
        .await
        .map_err(|e| Error::Unreachable(format!("exec: {e}")))?;
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut end = ChannelEnd::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => stdout.extend_from_slice(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => stderr.extend_from_slice(&data),
            ChannelMsg::ExitStatus { exit_status: s } => end.exit_status = Some(s),
            ChannelMsg::Eof => end.eof = true,
            ChannelMsg::Close => {
                end.close = true;
                break;
            }
            _ => {}
        }
    }
    // `wait` returning `None` without a Close means the session went away.
    end.check()?;
    let exit_status = end.exit_status;
    Ok(Output {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        exit_status,
    })
}

/// How one exec channel ended, as far as the client saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChannelEnd {
    exit_status: Option<u32>,
    /// The server said it sent all its output.
    eof: bool,
    /// The server closed the channel.
    close: bool,
}

impl ChannelEnd {
    /// Output is complete only when the server ended it (EOF) or closed the
    /// channel. An exit status alone proves nothing about the output: a
    /// connection lost after it may have cut records off the end, and a
    /// listing read short would make a disk look absent. The command may
    /// or may not have acted, so the caller must look before it retries.
    fn check(&self) -> Result<()> {
        if self.eof || self.close {
            return Ok(());
        }
        Err(Error::Unreachable(match self.exit_status {
            Some(status) => format!(
                "connection lost after exit status {status} but before the end of the output"
            ),
            None => "connection lost before the command finished".into(),
        }))
    }
}

/// The metrics label of a command's result: `ok`, `failed` for output
/// with a non-zero exit status (only `exec` returns such output: `run`
/// classifies it as an error), or the error's kind.
fn outcome(result: &Result<Output>) -> &'static str {
    match result {
        Ok(out) if out.exit_status.is_some_and(|s| s != 0) => "failed",
        Ok(_) => "ok",
        Err(e) => e.kind(),
    }
}

/// Exponential backoff with full jitter over the upper half, so many
/// clients restarting together do not reconnect in lockstep.
fn backoff(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let i = Duration::from_millis(100);
        let m = Duration::from_secs(10);
        for f in 1..40 {
            let d = backoff(i, m, f);
            assert!(d <= m, "{f}: {d:?}");
            let exp = i.saturating_mul(1 << (f - 1).min(16)).min(m);
            assert!(d >= exp / 2, "{f}: {d:?}");
        }
    }

    #[test]
    fn exit_status_plus_lost_connection_is_unreachable() {
        let end = ChannelEnd {
            exit_status: Some(0),
            ..Default::default()
        };
        let err = end.check().unwrap_err();
        assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
        assert!(err.is_transient());
        assert!(ChannelEnd::default().check().is_err(), "nothing at all");
    }

    #[test]
    fn output_ended_by_eof_or_close_is_complete_with_or_without_a_status() {
        for (eof, close) in [(true, false), (false, true), (true, true)] {
            for exit_status in [None, Some(0), Some(1)] {
                let end = ChannelEnd {
                    exit_status,
                    eof,
                    close,
                };
                assert!(end.check().is_ok(), "{end:?}");
            }
        }
    }

    #[test]
    fn a_nonzero_exit_status_is_counted_as_failed_and_only_that() {
        let out = |exit_status| {
            Ok(Output {
                exit_status,
                ..Default::default()
            })
        };
        assert_eq!(outcome(&out(Some(0))), "ok");
        assert_eq!(outcome(&out(None)), "ok");
        assert_eq!(outcome(&out(Some(5))), "failed");
        assert_eq!(outcome(&Err(Error::Timeout(Duration::ZERO))), "timeout");
    }

    #[test]
    fn fingerprints_compare_with_or_without_prefix_and_padding() {
        assert_eq!(normalize_fingerprint("SHA256:abc"), "SHA256:abc");
        assert_eq!(normalize_fingerprint("abc="), "SHA256:abc");
        assert_eq!(normalize_fingerprint(" SHA256:abc \n"), "SHA256:abc");
    }
}
