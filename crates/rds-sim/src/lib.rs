//! A simulator of the RouterOS side of a ROSE Data Server: a real SSH server
//! that answers the `/disk` and `/file` CLI commands the rds-csi driver sends,
//! keeps disks and backing files in memory or as sparse files in a directory,
//! and can be told to misbehave (latency, failures, full pool, dropped or hung
//! connections) so tests, benchmarks and `rds-csi sim` can exercise a client
//! without the hardware.
//!
//! It is an independent implementation of the RouterOS behaviour written
//! down in `docs/routeros.md`: it shares no parsing or formatting code with
//! the `routeros` client crate, so each can be checked against the other.
//!
//! # Boundary
//!
//! It stands for the RDS and nothing else: it knows nothing of CSI,
//! Kubernetes or the driver, and depends on none of the project's crates.
//! It owns the SSH server (`server`), the command parser (`cli`), the state
//! and what commands do to it (`engine`), the printed output (`format`),
//! backing files (`store`), optional real exports through the kernel's NVMe
//! target (`nvmet`) and the fault knobs (`faults`). A command outside the
//! `/disk`, `/file` and `/interface nvme-tcp connection` menus gets
//! RouterOS's `bad command name` error; shells and subsystems are refused.
//!
//! # What a command gets back
//!
//! One command per SSH `exec` channel. The reply is written to the channel,
//! followed by an exit status, EOF and close. Real RouterOS is not consistent
//! about which stream carries an error nor about exit statuses; the simulator
//! settles on one choice and clients must not depend on more than RouterOS
//! promises:
//!
//! - success: output (possibly empty) on stdout, status 0;
//! - a refused action (`failure: not enough space`, `failure: slot already
//!   exists`, `failure: no such item`, `failure: invalid parameter: ...`):
//!   one `failure: ...` line on **stdout**, status 0;
//! - a command RouterOS cannot even parse (`bad command name foo (line 1
//!   column 7)`, `expected end of command (...)`, `syntax error (...)`,
//!   `invalid value for argument file-size`): one line on **stderr**, status 1.
//!
//! Lines end in `\r\n` as on a RouterOS terminal. `print detail` output
//! reproduces the quirks of the real thing: grouped digits, human sizes,
//! quoted and unquoted values with spaces, flag letters, continuation lines
//! and long values cut in the middle at 80 columns.
//!
//! `[find ...]` that matches nothing makes `set` and `remove` succeed silently,
//! while a name given directly that does not exist answers `failure: no such
//! item`, as RouterOS does.
#![forbid(unsafe_code)]

mod cli;
mod engine;
mod faults;
mod format;
mod nvmet;
mod server;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use russh::keys::{Algorithm, HashAlg, PrivateKey, PublicKey};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use engine::DiskCopy;
pub use faults::Faults;
pub use nvmet::{NvmetConfig, DEFAULT_CONFIGFS};

use engine::Engine;
use server::{Counters, Inner};
use store::Store;

/// Where backing files live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// Only tracked in memory.
    Memory,
    /// Sparse files under this directory, which stands for the pool's mount
    /// point: `/storage-pool/a/b.img` becomes `<dir>/a/b.img`. Files already
    /// there at start show up as files (without disks).
    Dir(PathBuf),
}

/// The file system of the simulated pool, printed as its `fs=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolFs {
    /// Subvolumes and copy-on-write snapshots (`/disk/btrfs/subvolume`).
    #[default]
    Btrfs,
    /// No subvolumes: only `copy-from` and `/disk copy` can copy a disk.
    Xfs,
}

impl PoolFs {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolFs::Btrfs => "btrfs",
            PoolFs::Xfs => "xfs",
        }
    }
}

/// Default speed of a `/disk copy`: 1 GiB/s.
pub const DEFAULT_COPY_RATE: u64 = 1 << 30;

/// How to start a simulator.
#[derive(Clone)]
pub struct SimConfig {
    /// Port 0 picks a free port; see [`SimHandle::addr`].
    pub listen: SocketAddr,
    /// Keys allowed to log in; only public-key authentication is offered.
    pub authorized_keys: Vec<PublicKey>,
    /// If set, only this user name may log in.
    pub user: Option<String>,
    /// `None` generates a fresh Ed25519 host key.
    pub host_key: Option<PrivateKey>,
    pub storage: Storage,
    /// Mount point name of the pool (`storage-pool` in `/storage-pool/...`).
    pub pool: String,
    /// Pool capacity in bytes.
    pub pool_size: u64,
    /// The pool's file system: only Btrfs has subvolumes and snapshots.
    pub pool_fs: PoolFs,
    /// Bytes per second a `/disk copy` advances by.
    pub copy_rate: u64,
    /// Export disks added with `nvme-tcp-export=yes` for real, through the
    /// Linux kernel NVMe target (needs [`Storage::Dir`]); `None` only
    /// records the export settings.
    pub nvmet: Option<NvmetConfig>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            authorized_keys: Vec::new(),
            user: None,
            host_key: None,
            storage: Storage::Memory,
            pool: "storage-pool".to_string(),
            pool_size: 7_949_127_950_336,
            pool_fs: PoolFs::Btrfs,
            copy_rate: DEFAULT_COPY_RATE,
            nvmet: None,
        }
    }
}

impl std::fmt::Debug for SimConfig {
    /// Shows the host key by fingerprint only, so logging a config never
    /// leaks key material whatever the key type.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimConfig")
            .field("listen", &self.listen)
            .field(
                "authorized_keys",
                &self
                    .authorized_keys
                    .iter()
                    .map(format_fingerprint)
                    .collect::<Vec<_>>(),
            )
            .field("user", &self.user)
            .field(
                "host_key",
                &self
                    .host_key
                    .as_ref()
                    .map(|k| format_fingerprint(k.public_key())),
            )
            .field("storage", &self.storage)
            .field("pool", &self.pool)
            .field("pool_size", &self.pool_size)
            .field("pool_fs", &self.pool_fs)
            .field("copy_rate", &self.copy_rate)
            .field("nvmet", &self.nvmet)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("could not generate a host key: {0}")]
    HostKey(String),
    #[error("could not prepare the storage directory: {0}")]
    Storage(std::io::Error),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not use the kernel NVMe target: {0}")]
    Nvmet(std::io::Error),
}

/// Counters since start or the last [`SimHandle::reset_stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// SSH sessions that completed authentication.
    pub connections: u64,
    /// `exec` requests received, faulted ones included.
    pub commands: u64,
    /// Rejected public-key authentication attempts.
    pub auth_failures: u64,
}

/// A file-backed disk as the simulator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    pub slot: String,
    /// With the leading slash, e.g. `/storage-pool/metal-csi/pvc-1.img`.
    pub file_path: String,
    pub size: u64,
    pub export: bool,
    pub port: Option<u16>,
    pub nqn: Option<String>,
    /// `nvme-tcp-server-allow-host-name` as set (empty: any host).
    pub allow_host: String,
    /// When the disk was added; RouterOS itself does not print this.
    pub created: SystemTime,
    /// The disk's comment as stored (empty: none).
    pub comment: String,
    /// A `/disk copy` running into this disk.
    pub copy: Option<DiskCopy>,
    /// How many times `nvme-tcp-export` was turned off: each time every
    /// live session of the disk was dropped.
    pub export_cuts: u64,
}

/// `SHA256:<base64 without padding>`, the form `ssh-keygen -lf` prints.
pub fn format_fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Starts a simulator; see [`start`].
pub struct Simulator;

impl Simulator {
    pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
        start(config).await
    }
}

/// Binds the listening socket, spawns the server on the current Tokio runtime
/// and returns at once.
pub async fn start(config: SimConfig) -> Result<SimHandle, SimError> {
    if config.pool.is_empty() || config.pool.contains('/') {
        return Err(SimError::Config(format!(
            "pool name {:?} must be one non-empty path component",
            config.pool
        )));
    }
    let host_key = match config.host_key {
        Some(k) => k,
        None => PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519)
            .map_err(|e| SimError::HostKey(e.to_string()))?,
    };
    let host_public = host_key.public_key().clone();
    let nvmet = match (&config.nvmet, &config.storage) {
        (None, _) => None,
        (Some(_), Storage::Memory) => {
            return Err(SimError::Config(
                "real nvme-tcp exports need directory storage".into(),
            ))
        }
        (Some(n), Storage::Dir(_)) => Some(nvmet::Nvmet::open(n).map_err(SimError::Nvmet)?),
    };
    let store = match config.storage {
        Storage::Memory => Store::Memory,
        Storage::Dir(dir) if nvmet.is_some() => {
            // The kernel target opens backing files by absolute path.
            std::fs::create_dir_all(&dir).map_err(SimError::Storage)?;
            let dir = std::fs::canonicalize(&dir).map_err(SimError::Storage)?;
            if let Some(n) = &nvmet {
                let stale = n.clear_stale(&dir).map_err(SimError::Nvmet)?;
                if !stale.is_empty() {
                    tracing::warn!(?stale, "rds-sim: removed exports left by an earlier run");
                }
            }
            Store::Dir(dir)
        }
        Storage::Dir(dir) => Store::Dir(dir),
    };
    let engine = Engine::new(
        store,
        engine::PoolConfig {
            name: config.pool,
            size: config.pool_size,
            fs: config.pool_fs,
            copy_rate: config.copy_rate,
        },
        nvmet,
    )
    .map_err(SimError::Storage)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| SimError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| SimError::Bind {
        addr: config.listen,
        source,
    })?;

    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    let ssh_config = russh::server::Config {
        server_id: russh::SshId::Standard("SSH-2.0-ROSSSH".into()),
        methods,
        keys: vec![host_key],
        // Rejections need no constant-time padding against a local test
        // client, and a long one would only slow the wrong-key tests.
        auth_rejection_time: std::time::Duration::from_millis(10),
        auth_rejection_time_initial: Some(std::time::Duration::ZERO),
        // Pooled clients keep idle sessions for as long as they like.
        inactivity_timeout: None,
        ..Default::default()
    };
    let inner = Arc::new(Inner {
        engine,
        faults: Faults::default(),
        counters: Counters::default(),
        authorized_keys: config.authorized_keys,
        user: config.user,
        closed: Default::default(),
    });
    let task = tokio::spawn(server::accept_loop(
        listener,
        Arc::clone(&inner),
        Arc::new(ssh_config),
    ));
    Ok(SimHandle {
        shared: Arc::new(Shared {
            inner,
            addr,
            fingerprint: format_fingerprint(&host_public),
            host_public,
            accept: Mutex::new(Some(task)),
        }),
    })
}

struct Shared {
    inner: Arc<Inner>,
    addr: SocketAddr,
    host_public: PublicKey,
    fingerprint: String,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Shared {
    fn stop(&self) -> Option<JoinHandle<()>> {
        self.inner.closed.store(true, Ordering::SeqCst);
        let task = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = &task {
            task.abort();
        }
        self.inner.faults.connections.drop_all();
        // A stopped target serves nothing, and a restarted simulator starts
        // with no disks: leave no kernel export behind.
        if task.is_some() {
            self.inner.engine.unexport_all();
        }
        task
    }
}

impl Drop for Shared {
    /// The last handle going away stops the server, so a test that forgets
    /// `shutdown` does not leave a listener behind.
    fn drop(&mut self) {
        self.stop();
    }
}

/// Control of a running simulator. Clones share the same server.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.shared.addr)
            .field("host_key", &self.shared.fingerprint)
            .finish()
    }
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `SHA256:...` of the host key, as `ssh-keygen -lf` prints it.
    pub fn host_key_fingerprint(&self) -> String {
        self.shared.fingerprint.clone()
    }

    pub fn host_public_key(&self) -> PublicKey {
        self.shared.host_public.clone()
    }

    pub fn faults(&self) -> &Faults {
        &self.shared.inner.faults
    }

    pub fn stats(&self) -> Stats {
        let c = &self.shared.inner.counters;
        Stats {
            connections: c.connections.load(Ordering::Relaxed),
            commands: c.commands.load(Ordering::Relaxed),
            auth_failures: c.auth_failures.load(Ordering::Relaxed),
        }
    }

    pub fn reset_stats(&self) {
        let c = &self.shared.inner.counters;
        c.connections.store(0, Ordering::Relaxed);
        c.commands.store(0, Ordering::Relaxed);
        c.auth_failures.store(0, Ordering::Relaxed);
    }

    /// File-backed disks in creation order, running copies advanced to now.
    pub fn disks(&self) -> Vec<DiskInfo> {
        self.shared.inner.engine.settled().disks.clone()
    }

    /// Btrfs subvolumes: name, whether read-only, and the subvolume it is a
    /// snapshot of (empty for a plain one).
    pub fn subvolumes(&self) -> Vec<(String, bool, String)> {
        self.shared
            .inner
            .engine
            .lock()
            .subvolumes
            .iter()
            .map(|s| (s.name.clone(), s.read_only, s.parent.clone()))
            .collect()
    }

    /// Bytes per second a `/disk copy` advances by from now on.
    pub fn set_copy_rate(&self, bytes_per_second: u64) {
        self.shared.inner.engine.settled().copy_rate = bytes_per_second;
    }

    /// Backing files (not directories): name without the leading slash, size.
    pub fn files(&self) -> Vec<(String, u64)> {
        self.shared
            .inner
            .engine
            .lock()
            .files
            .iter()
            .map(|(name, f)| (name.clone(), f.size))
            .collect()
    }

    /// Creates a file no disk uses, as a crashed delete would leave behind.
    /// `name` is like `storage-pool/metal-csi/x.img` (leading slash allowed).
    ///
    /// # Panics
    /// If the name is not a new file inside the pool, or the file cannot be
    /// created in directory mode: this is a test helper, and a silent no-op
    /// would make the test check the wrong thing.
    pub fn add_file(&self, name: &str, size: u64) {
        if let Err(e) = self.shared.inner.engine.add_file(name, size) {
            panic!("rds-sim: add_file({name:?}): {e}");
        }
    }

    /// Target restart, first half: takes the real NVMe/TCP port `port`
    /// away (every export on it unlinked, the port entry removed), so
    /// connected hosts lose their controllers. Returns how many port
    /// entries were removed; 0 without real exports.
    pub fn nvmet_port_down(&self, port: u16) -> std::io::Result<usize> {
        self.shared.inner.engine.nvmet_port_down(port)
    }

    /// Target restart, second half: brings `port` back with every disk
    /// still exported on it, so hosts reconnect.
    pub fn nvmet_port_up(&self, port: u16) -> std::io::Result<()> {
        self.shared.inner.engine.nvmet_port_up(port)
    }

    pub fn set_pool_size(&self, bytes: u64) {
        self.shared.inner.engine.lock().pool_size = bytes;
    }

    /// Stops listening and cuts every connection.
    pub async fn shutdown(self) {
        if let Some(task) = self.shared.stop() {
            let _ = task.await;
        }
    }
}
