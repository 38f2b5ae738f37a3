//! What both benchmarks need: the simulator with a client key, a
//! `rds-csi controller` child process, a CSI channel over its unix socket,
//! a worker pool, and the numbers they report (percentiles, memory).
//!
//! Every set-up step of the benchmarks lives here, so it can move to a
//! shared test kit in one place.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_server::proto::{self, volume_capability::access_mode::Mode};
use rds_sim::SimHandle;
use tonic::transport::Channel;

pub const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");
pub const GIB: i64 = 1 << 30;

pub type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// A simulator with a 64 TiB pool that lets in the key written to
/// `dir/id` (returned with it).
pub async fn start_sim(dir: &Path) -> BoxResult<(SimHandle, PathBuf)> {
    let key = testkit::sim::client_key();
    let key_path = testkit::sim::write_client_key(&key, dir);
    let sim = testkit::sim::start_with_key(
        &key,
        rds_sim::SimConfig {
            pool_size: 64 << 40,
            ..Default::default()
        },
    )
    .await;
    Ok((sim, key_path))
}

/// `rds-csi controller` serving `sock` against `sim` with `key`, with one
/// health check at start (Probe needs it) and none after that could add
/// commands to the measurements. Callers add their own flags and streams.
pub fn controller_command(sock: &Path, sim: &SimHandle, key: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("controller")
        .arg("--endpoint")
        .arg(format!("unix://{}", sock.display()))
        .arg("--rds-address")
        .arg(sim.addr().to_string())
        .arg("--rds-key-file")
        .arg(key)
        .arg("--rds-host-key")
        .arg(sim.host_key_fingerprint())
        .arg("--health-interval")
        .arg("1h");
    cmd
}

/// A child process killed and reaped when dropped.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

/// A channel to a CSI unix socket, connected on first use.
pub fn connect_lazy(path: PathBuf) -> BoxResult<Channel> {
    Ok(testkit::grpc::unix_channel_lazy(path))
}

/// A single-node-writer ext4 filesystem volume.
pub fn capability() -> proto::VolumeCapability {
    testkit::csi::mount("ext4", Mode::SingleNodeWriter)
}

/// Runs `f(0..count)` with `in_flight` workers; returns the wall time.
pub async fn par<F, Fut>(count: usize, in_flight: usize, f: F) -> BoxResult<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = BoxResult<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..in_flight)
        .map(|_| {
            let next = next.clone();
            let f = f.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return Ok::<(), Box<dyn std::error::Error + Send + Sync>>(());
                    }
                    f(i).await?;
                }
            })
        })
        .collect();
    for w in workers {
        w.await??;
    }
    Ok(start.elapsed())
}

/// VmRSS and VmHWM of a process, in KiB.
pub fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// A row `| state | VmRSS | VmHWM |` of a memory table (KiB in, MiB out).
pub fn memory_row(state: &str, (rss, hwm): (u64, u64)) -> String {
    format!("| {state} | {} | {} |", mib(rss), mib(hwm))
}

/// The closing line of a report: the time since `start`.
pub fn total_time(start: Instant) -> String {
    format!(
        "\nTotal benchmark time: {:.1} s.",
        start.elapsed().as_secs_f64()
    )
}

/// A goal's verdict.
pub fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}

/// Nearest-rank percentile.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Gates for `tasks` tasks and their caller, each waited on by all of
/// them: the first releases every task at once, the second once every
/// task has finished its first phase, so each phase can be timed and its
/// commands counted on its own.
pub fn two_phases(tasks: usize) -> (Arc<tokio::sync::Barrier>, Arc<tokio::sync::Barrier>) {
    let gate = || Arc::new(tokio::sync::Barrier::new(tasks + 1));
    (gate(), gate())
}
