//! Attachment manager benchmark against a real kube-apiserver:
//! ControllerPublish/Unpublish latency and throughput with the PV
//! annotation written on every call, the rebuild at start from 5,000
//! VolumeAttachments, and the controller's memory while it tracks them.
//!
//! The RouterOS simulator runs in this process; the controller runs as a
//! child process (`rds-csi controller --kubeconfig ...`, release build)
//! with a driver name unique to the run, so its objects never mix with
//! anything else on the API server.
//!
//!     cargo bench --bench attachments
//!
//! Needs a kube-apiserver: `RDS_CSI_TEST_KUBECONFIG` if set (objects are
//! labelled and deleted at the end), otherwise one is started with
//! `hack/kube-apiserver.sh` (kube-apiserver and etcd on PATH) and stopped
//! at the end. Results are printed as Markdown on stdout; see
//! docs/benchmarks.md.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_server::proto::{
    self,
    controller_client::ControllerClient,
    volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume},
};
use k8s_openapi::api::core::v1::{Node, PersistentVolume};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use rds_sim::SimHandle;
use serde_json::json;
use tonic::transport::Channel;

// Shared with the API-server and end-to-end test tiers.
#[path = "../tests/common/mod.rs"]
mod common;
use common::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");
const GIB: i64 = 1 << 30;
/// Volumes published and unpublished in the latency runs.
const VOLUMES: usize = 1000;
/// Nodes, and tasks in the concurrent runs (task t publishes to node t).
const NODES: usize = 64;
/// Attached VolumeAttachments (and their PVs) for the rebuild.
const REBUILD: usize = 5000;
/// Controller starts measured against the `REBUILD` attachments.
const STARTS: usize = 3;
/// Requests in flight while creating objects and volumes.
const IN_FLIGHT: usize = 32;
const LABEL: &str = "rds-csi-bench";
const ANN_ATTACHED_NODE: &str = "rds.csi.srvlab.io/attached-node";
const ANN_ATTACHED_AT: &str = "rds.csi.srvlab.io/attached-at";

type Csi = ControllerClient<Channel>;
type BoxResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

// --- the API server ----------------------------------------------------------

/// The API server used: given, or started here (and stopped on drop).
struct ApiServer {
    kubeconfig: PathBuf,
    /// Set when this process started it.
    owned: Option<PathBuf>,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hack/kube-apiserver.sh")
}

impl ApiServer {
    fn get(dir: &Path) -> BoxResult<ApiServer> {
        if let Some(p) = std::env::var_os("RDS_CSI_TEST_KUBECONFIG") {
            return Ok(ApiServer {
                kubeconfig: PathBuf::from(p),
                owned: None,
            });
        }
        let dir = dir.join("apiserver");
        eprintln!(
            "RDS_CSI_TEST_KUBECONFIG not set: starting etcd + kube-apiserver in {}",
            dir.display()
        );
        let out = Command::new("bash")
            .arg(script())
            .arg("up")
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {}: {e}", script().display()))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(3) => {
                return Err(format!(
                    "it needs a Kubernetes API server, and hack/kube-apiserver.sh says: {}. \
                     Put kube-apiserver and etcd on PATH (or set KUBE_APISERVER and ETCD), \
                     or set RDS_CSI_TEST_KUBECONFIG to the kubeconfig of a running API server.",
                    stderr.trim()
                )
                .into())
            }
            _ => {
                return Err(format!(
                    "hack/kube-apiserver.sh up failed ({}): {stderr}",
                    out.status
                )
                .into())
            }
        }
        let kubeconfig = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(ApiServer {
            kubeconfig,
            owned: Some(dir),
        })
    }

    /// The pid of a process this benchmark started ("apiserver", "etcd").
    fn pid(&self, which: &str) -> Option<u32> {
        let dir = self.owned.as_ref()?;
        std::fs::read_to_string(dir.join(format!("{which}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(dir) = self.owned.take() {
            eprintln!("stopping the API server");
            let _ = Command::new("bash")
                .arg(script())
                .arg("down")
                .arg(&dir)
                .stdin(Stdio::null())
                .status();
        }
    }
}

async fn kube_client(kubeconfig: &Path) -> BoxResult<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(kube::Client::try_from(cfg)?)
}

// --- the controller ----------------------------------------------------------

/// A `rds-csi controller` child process.
struct Controller {
    child: Child,
    csi: Csi,
    log: PathBuf,
    /// When it was spawned, on the monotonic and on the wall clock.
    started: Instant,
    started_wall: jiff::Timestamp,
    metrics_port: u16,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the controller logged when its attachment state was rebuilt.
struct Rebuilt {
    /// From spawn to the log line (wall clock of the line's timestamp).
    since_spawn: Duration,
    /// The rebuild itself, as the controller measured it.
    elapsed: String,
    attached: u64,
}

struct World {
    dir: PathBuf,
    sim: SimHandle,
    key: PathBuf,
    kubeconfig: PathBuf,
    driver: String,
    run: String,
    client: kube::Client,
    apiserver_pid: Option<u32>,
    etcd_pid: Option<u32>,
    /// etcd's client port (its /metrics), when this benchmark started it.
    etcd_port: Option<u16>,
}

impl World {
    fn spawn(&self, name: &str) -> BoxResult<Controller> {
        self.spawn_with(name, &[], &[])
    }

    fn spawn_with(&self, name: &str, args: &[&str], env: &[(&str, &str)]) -> BoxResult<Controller> {
        let sock = self.dir.join(format!("{name}.sock"));
        let metrics_port = free_port()?;
        let log = self.dir.join(format!("{name}.log"));
        let started_wall = jiff::Timestamp::now();
        let started = Instant::now();
        let child = Command::new(BIN)
            .arg("controller")
            .arg("--endpoint")
            .arg(format!("unix://{}", sock.display()))
            .arg("--rds-address")
            .arg(self.sim.addr().to_string())
            .arg("--rds-key-file")
            .arg(&self.key)
            .arg("--rds-host-key")
            .arg(self.sim.host_key_fingerprint())
            .arg("--driver-name")
            .arg(&self.driver)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--metrics-address")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--health-interval")
            .arg("1h")
            .env("RDS_CSI_LOG", "info")
            .env("RDS_CSI_LOG_FORMAT", "json")
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        Ok(Controller {
            child,
            csi: ControllerClient::new(connect_lazy(sock)?),
            log,
            started,
            started_wall,
            metrics_port,
        })
    }

    fn node(&self, i: usize) -> String {
        format!("{}-n{:02}", self.run, i % NODES)
    }

    fn volume(&self, i: usize) -> String {
        format!("pvc-{}-{i:04}", self.run)
    }

    fn labels(&self) -> serde_json::Value {
        json!({ LABEL: self.run })
    }
}

impl Controller {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the "attachment state rebuilt" log line.
    async fn rebuilt(&mut self, timeout: Duration) -> BoxResult<Rebuilt> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let msg = v["fields"]["message"].as_str().unwrap_or_default();
                if !msg.starts_with("attachment state rebuilt") {
                    continue;
                }
                let at: jiff::Timestamp = v["timestamp"]
                    .as_str()
                    .ok_or("log line without a timestamp")?
                    .parse()?;
                let since = at.duration_since(self.started_wall);
                return Ok(Rebuilt {
                    since_spawn: Duration::try_from(since).unwrap_or_default(),
                    elapsed: v["fields"]["elapsed"].as_str().unwrap_or("?").to_string(),
                    attached: v["fields"]["attached"].as_u64().unwrap_or(0),
                });
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(format!(
                    "controller exited with {status}; see {}:\n{text}",
                    self.log.display()
                )
                .into());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no \"attachment state rebuilt\" within {timeout:?}; see {}",
                    self.log.display()
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn free_port() -> BoxResult<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A Prometheus scrape: series (name and labels) to value.
type Metrics = HashMap<String, f64>;

fn parse_metrics(text: &str) -> Metrics {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of the series of `name` whose labels contain every one of `labels`.
fn msum(m: &Metrics, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

/// The port of `--listen-client-urls http://127.0.0.1:PORT` of etcd.
fn etcd_client_port(pid: u32) -> Option<u16> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "--listen-client-urls")?;
    args.get(i + 1)?.rsplit(':').next()?.parse().ok()
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Counters read before and after a run.
struct Snap {
    at: Instant,
    /// CPU seconds of the controller, kube-apiserver, etcd and this process.
    cpu: [Option<f64>; 4],
    ctl: Metrics,
    api: Metrics,
    etcd: Metrics,
    /// Busy and total jiffies of the whole machine (/proc/stat).
    machine: (u64, u64),
}

/// Busy and total time of all CPUs, in jiffies, from /proc/stat.
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let v: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle and iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// GET `path` from the API server as text ("" on failure).
async fn api_get(w: &World, path: &str) -> String {
    match kube::core::Request::new(path).list(&ListParams::default()) {
        Ok(req) => w.client.request_text(req).await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn snap(w: &World, ctl: &Controller) -> Snap {
    snap_of(w, Some(ctl)).await
}

/// A snapshot; without a controller its metrics and CPU are absent.
async fn snap_of(w: &World, ctl: Option<&Controller>) -> Snap {
    let api = api_get(w, "/metrics").await;
    Snap {
        at: Instant::now(),
        machine: machine_jiffies(),
        cpu: [
            ctl.and_then(|c| cpu_seconds(Some(c.pid()))),
            cpu_seconds(w.apiserver_pid),
            cpu_seconds(w.etcd_pid),
            cpu_seconds(Some(std::process::id())),
        ],
        ctl: parse_metrics(
            &ctl.and_then(|c| http_get(c.metrics_port, "/metrics"))
                .unwrap_or_default(),
        ),
        api: parse_metrics(&api),
        etcd: parse_metrics(
            &w.etcd_port
                .and_then(|p| http_get(p, "/metrics"))
                .unwrap_or_default(),
        ),
    }
}

/// Where the time of a run went, from the controller's and the API
/// server's own histograms and from CPU accounting.
struct Breakdown {
    /// Mean seconds per call: (sum delta, count delta) of a histogram.
    rpc_publish: f64,
    manager_publish: f64,
    ssh: f64,
    rpc_unpublish: f64,
    manager_unpublish: f64,
    api_patch_pv: f64,
    etcd_update_pv: f64,
    wal_fsync: f64,
    wal_fsyncs: f64,
    cpu: [Option<f64>; 4],
    wall: Duration,
    /// Share of the machine's CPU time that was busy (all processes).
    machine_busy: f64,
}

fn breakdown(a: &Snap, b: &Snap) -> Breakdown {
    let mean = |ma: &Metrics, mb: &Metrics, name: &str, labels: &[&str]| {
        let s = msum(mb, &format!("{name}_sum"), labels) - msum(ma, &format!("{name}_sum"), labels);
        let c =
            msum(mb, &format!("{name}_count"), labels) - msum(ma, &format!("{name}_count"), labels);
        if c > 0.0 {
            s / c
        } else {
            f64::NAN
        }
    };
    let rpc = "rds_csi_rpc_duration_seconds";
    let op = "rds_csi_attachment_operation_duration_seconds";
    let mut cpu = [None; 4];
    for (i, c) in cpu.iter_mut().enumerate() {
        *c = b.cpu[i].zip(a.cpu[i]).map(|(b, a)| b - a);
    }
    Breakdown {
        rpc_publish: mean(&a.ctl, &b.ctl, rpc, &["\"ControllerPublishVolume\""]),
        manager_publish: mean(&a.ctl, &b.ctl, op, &["\"publish\""]),
        ssh: mean(&a.ctl, &b.ctl, "rds_csi_ssh_command_duration_seconds", &[]),
        rpc_unpublish: mean(&a.ctl, &b.ctl, rpc, &["\"ControllerUnpublishVolume\""]),
        manager_unpublish: mean(&a.ctl, &b.ctl, op, &["\"unpublish\""]),
        api_patch_pv: mean(
            &a.api,
            &b.api,
            "apiserver_request_duration_seconds",
            &["resource=\"persistentvolumes\"", "verb=\"PATCH\""],
        ),
        etcd_update_pv: mean(
            &a.api,
            &b.api,
            "etcd_request_duration_seconds",
            &["operation=\"update\"", "type=\"*core.PersistentVolume\""],
        ),
        wal_fsync: mean(
            &a.etcd,
            &b.etcd,
            "etcd_disk_wal_fsync_duration_seconds",
            &[],
        ),
        wal_fsyncs: msum(&b.etcd, "etcd_disk_wal_fsync_duration_seconds_count", &[])
            - msum(&a.etcd, "etcd_disk_wal_fsync_duration_seconds_count", &[]),
        cpu,
        wall: b.at - a.at,
        machine_busy: (b.machine.0 - a.machine.0) as f64
            / (b.machine.1 - a.machine.1).max(1) as f64,
    }
}

fn ms_f(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else {
        format!("{:.2}", s * 1000.0)
    }
}

fn cpu_s(c: Option<f64>) -> String {
    c.map_or("n/a".into(), |c| format!("{c:.1}"))
}

fn connect_lazy(path: PathBuf) -> BoxResult<Channel> {
    Ok(
        tonic::transport::Endpoint::try_from("http://[::]:0")?.connect_with_connector_lazy(
            tower::service_fn(move |_: tonic::transport::Uri| {
                let path = path.clone();
                async move {
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                        tokio::net::UnixStream::connect(path).await?,
                    ))
                }
            }),
        ),
    )
}

// --- helpers -----------------------------------------------------------------

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
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

/// Where a process's resident memory is, from /proc/<pid>/smaps: the
/// main heap (`[heap]`), anonymous mappings (glibc's other arenas, thread
/// stacks, large allocations), file-backed mappings (binary, libraries);
/// its thread count; and its largest anonymous mappings as size/resident.
fn smaps_summary(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut heap, mut anon, mut file) = (0u64, 0u64, 0u64);
    let mut anons: Vec<(u64, u64)> = Vec::new();
    // (kind, size) of the mapping whose fields are being read.
    let mut current: Option<(u8, u64)> = None;
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let first = f.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            let kind = match path {
                "[heap]" => 0,
                "" => 1,
                p if p.starts_with('[') => 3,
                _ => 2,
            };
            current = Some((kind, 0));
            continue;
        }
        let value: u64 = f.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        match (first, current.as_mut()) {
            ("Size:", Some(c)) => c.1 = value,
            ("Rss:", Some(&mut (kind, size))) => match kind {
                0 => heap += value,
                1 => {
                    anon += value;
                    anons.push((size, value));
                }
                2 => file += value,
                _ => {}
            },
            _ => {}
        }
    }
    anons.sort_by_key(|a| std::cmp::Reverse(a.1));
    let threads = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|v| v.trim().to_string())
        .unwrap_or_default();
    let top: Vec<String> = anons
        .iter()
        .take(5)
        .map(|(size, rss)| format!("{}/{}", mib(*size), mib(*rss)))
        .collect();
    format!(
        "[heap] {}, anonymous {}, files {}; {threads} threads; largest anonymous mappings (size/resident): {}",
        mib(heap),
        mib(anon),
        mib(file),
        top.join(", ")
    )
}

/// Established TCP connections of process `pid` to the API server (the
/// port of the kubeconfig's `server:`), from `ss`; None without `ss`.
fn api_connections(kubeconfig: &Path, pid: u32) -> Option<usize> {
    let port = std::fs::read_to_string(kubeconfig)
        .ok()?
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))?
        .trim()
        .rsplit(':')
        .next()?
        .trim_matches('/')
        .to_string();
    let out = Command::new("ss")
        .args(["-Htnp", "state", "established"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let me = format!("pid={pid},");
    Some(
        text.lines()
            .filter(|l| l.contains(&me))
            .filter(|l| {
                l.split_whitespace()
                    .nth(3)
                    .is_some_and(|peer| peer.rsplit(':').next() == Some(port.as_str()))
            })
            .count(),
    )
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Nearest-rank percentile.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let rank = ((p / 100.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// Runs `f(0..count)` with `in_flight` workers; returns the wall time.
async fn par<F, Fut>(count: usize, in_flight: usize, f: F) -> BoxResult<Duration>
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

fn capability() -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

/// One volume as the external-attacher sees it.
#[derive(Clone)]
struct Vol {
    id: String,
    node: String,
    context: HashMap<String, String>,
}

async fn publish(csi: &mut Csi, v: &Vol) -> BoxResult<Duration> {
    let t = Instant::now();
    csi.controller_publish_volume(proto::ControllerPublishVolumeRequest {
        volume_id: v.id.clone(),
        node_id: v.node.clone(),
        volume_capability: Some(capability()),
        volume_context: v.context.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("ControllerPublish {} to {}: {s}", v.id, v.node))?;
    Ok(t.elapsed())
}

async fn unpublish(csi: &mut Csi, v: &Vol) -> BoxResult<Duration> {
    let t = Instant::now();
    csi.controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
        volume_id: v.id.clone(),
        node_id: v.node.clone(),
        ..Default::default()
    })
    .await
    .map_err(|s| format!("ControllerUnpublish {} from {}: {s}", v.id, v.node))?;
    Ok(t.elapsed())
}

/// One measured pass over all volumes: publish, then unpublish.
struct Run {
    label: String,
    publishes: Vec<Duration>,
    unpublishes: Vec<Duration>,
    publish_wall: Duration,
    unpublish_wall: Duration,
    wall: Duration,
    bd: Breakdown,
    /// The controller's TCP connections to the API server at the end.
    api_conns: Option<usize>,
}

impl Run {
    fn row(&self) -> String {
        let n = self.publishes.len() as f64;
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {:.0} |",
            self.label,
            ms(percentile(&self.publishes, 50.0)),
            ms(percentile(&self.publishes, 99.0)),
            ms(*self.publishes.iter().max().unwrap()),
            ms(percentile(&self.unpublishes, 50.0)),
            ms(percentile(&self.unpublishes, 99.0)),
            ms(*self.unpublishes.iter().max().unwrap()),
            n / self.publish_wall.as_secs_f64(),
            n / self.unpublish_wall.as_secs_f64(),
            2.0 * n / self.wall.as_secs_f64(),
        )
    }

    fn breakdown_row(&self) -> String {
        let mean = |v: &[Duration]| {
            v.iter().map(Duration::as_secs_f64).sum::<f64>() / v.len().max(1) as f64
        };
        let b = &self.bd;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let total: f64 = b.cpu.iter().flatten().sum();
        format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {} | {:.0}% | {:.0}% |",
            self.label,
            ms_f(mean(&self.publishes)),
            ms_f(b.rpc_publish),
            ms_f(b.manager_publish),
            ms_f(b.ssh),
            // What is left of a publish RPC once the RouterOS command and
            // the API server's own handling of the PV patch are taken out:
            // the controller's own work and its waiting for CPU.
            ms_f(b.rpc_publish - b.ssh - b.api_patch_pv),
            ms_f(mean(&self.unpublishes)),
            ms_f(b.rpc_unpublish),
            ms_f(b.manager_unpublish),
            ms_f(b.api_patch_pv),
            ms_f(b.etcd_update_pv),
            ms_f(b.wal_fsync),
            b.wal_fsyncs,
            cpu_s(b.cpu[0]),
            cpu_s(b.cpu[1]),
            cpu_s(b.cpu[2]),
            cpu_s(b.cpu[3]),
            100.0 * total / (cores * b.wall.as_secs_f64()),
            100.0 * b.machine_busy,
        )
    }
}

/// Each volume in turn: publish, then unpublish.
async fn sequential(label: &str, w: &World, ctl: &Controller, vols: &[Vol]) -> BoxResult<Run> {
    let mut c = ctl.csi.clone();
    let before = snap(w, ctl).await;
    let mut publishes = Vec::with_capacity(vols.len());
    let mut unpublishes = Vec::with_capacity(vols.len());
    let start = Instant::now();
    for v in vols {
        publishes.push(publish(&mut c, v).await?);
        unpublishes.push(unpublish(&mut c, v).await?);
    }
    let wall = start.elapsed();
    let bd = breakdown(&before, &snap(w, ctl).await);
    Ok(Run {
        label: label.to_string(),
        bd,
        api_conns: api_connections(&w.kubeconfig, ctl.pid()),
        publish_wall: publishes.iter().sum(),
        unpublish_wall: unpublishes.iter().sum(),
        publishes,
        unpublishes,
        wall,
    })
}

/// `NODES` tasks; task t publishes volumes t, t+64, ... (all to node t)
/// one after the other. Every task publishes all its volumes, then, once
/// all publishes are done, unpublishes them.
async fn concurrent(label: &str, w: &World, ctl: &Controller, vols: &[Vol]) -> BoxResult<Run> {
    let csi = &ctl.csi;
    let start_gate = Arc::new(tokio::sync::Barrier::new(NODES + 1));
    let mid_gate = Arc::new(tokio::sync::Barrier::new(NODES + 1));
    let mut tasks = Vec::with_capacity(NODES);
    for t in 0..NODES {
        let mine: Vec<Vol> = vols.iter().skip(t).step_by(NODES).cloned().collect();
        let mut c = csi.clone();
        let (g1, g2) = (start_gate.clone(), mid_gate.clone());
        tasks.push(tokio::spawn(async move {
            let mut p = Vec::with_capacity(mine.len());
            let mut u = Vec::with_capacity(mine.len());
            g1.wait().await;
            let mut failed = None;
            for v in &mine {
                match publish(&mut c, v).await {
                    Ok(d) => p.push(d),
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            g2.wait().await;
            if let Some(e) = failed {
                return Err(e);
            }
            for v in &mine {
                u.push(unpublish(&mut c, v).await.map_err(|e| e.to_string())?);
            }
            Ok((p, u))
        }));
    }
    let before = snap(w, ctl).await;
    start_gate.wait().await;
    let start = Instant::now();
    mid_gate.wait().await;
    let publish_wall = start.elapsed();
    let mut publishes = Vec::with_capacity(vols.len());
    let mut unpublishes = Vec::with_capacity(vols.len());
    for t in tasks {
        let (p, u) = t.await??;
        publishes.extend(p);
        unpublishes.extend(u);
    }
    let wall = start.elapsed();
    let bd = breakdown(&before, &snap(w, ctl).await);
    Ok(Run {
        label: label.to_string(),
        bd,
        api_conns: api_connections(&w.kubeconfig, ctl.pid()),
        publishes,
        unpublishes,
        publish_wall,
        unpublish_wall: wall - publish_wall,
        wall,
    })
}

/// The floor under a publish: the same PV merge-patch the controller sends
/// (set the attached-node annotations, later clear them), sent straight
/// from this process with its own kube client, no controller and no
/// RouterOS command. `tasks` tasks; task t patches volumes t, t+tasks, ...
/// one after the other; all sets, then all clears.
async fn bare_patches(label: &str, w: &World, vols: &[Vol], tasks: usize) -> BoxResult<Run> {
    let start_gate = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let mid_gate = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let mine: Vec<Vol> = vols.iter().skip(t).step_by(tasks).cloned().collect();
        let api: Api<PersistentVolume> = Api::all(w.client.clone());
        let (g1, g2) = (start_gate.clone(), mid_gate.clone());
        handles.push(tokio::spawn(async move {
            let patch = |v: &Vol, set: bool| {
                let val = |x: String| if set { json!(x) } else { json!(null) };
                json!({"metadata": {"annotations": {
                    ANN_ATTACHED_NODE: val(v.node.clone()),
                    ANN_ATTACHED_AT: val(jiff::Timestamp::now().to_string()),
                    "rds.csi.srvlab.io/migration-source": null,
                    "rds.csi.srvlab.io/migration-target": null,
                    "rds.csi.srvlab.io/migration-started-at": null,
                    "rds.csi.srvlab.io/migration-deadline": null,
                }}})
            };
            let mut p = Vec::with_capacity(mine.len());
            let mut u = Vec::with_capacity(mine.len());
            g1.wait().await;
            let mut failed = None;
            for v in &mine {
                let t0 = Instant::now();
                match api
                    .patch(
                        &v.id,
                        &PatchParams::default(),
                        &Patch::Merge(&patch(v, true)),
                    )
                    .await
                {
                    Ok(_) => p.push(t0.elapsed()),
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            g2.wait().await;
            if let Some(e) = failed {
                return Err(e);
            }
            for v in &mine {
                let t0 = Instant::now();
                api.patch(
                    &v.id,
                    &PatchParams::default(),
                    &Patch::Merge(&patch(v, false)),
                )
                .await
                .map_err(|e| e.to_string())?;
                u.push(t0.elapsed());
            }
            Ok((p, u))
        }));
    }
    let before = snap_of(w, None).await;
    start_gate.wait().await;
    let start = Instant::now();
    mid_gate.wait().await;
    let publish_wall = start.elapsed();
    let mut publishes = Vec::with_capacity(vols.len());
    let mut unpublishes = Vec::with_capacity(vols.len());
    for h in handles {
        let (p, u) = h.await??;
        publishes.extend(p);
        unpublishes.extend(u);
    }
    let wall = start.elapsed();
    let bd = breakdown(&before, &snap_of(w, None).await);
    Ok(Run {
        label: label.to_string(),
        bd,
        api_conns: api_connections(&w.kubeconfig, std::process::id()),
        publishes,
        unpublishes,
        publish_wall,
        unpublish_wall: wall - publish_wall,
        wall,
    })
}

fn write_key(path: &Path) -> BoxResult<russh::keys::PrivateKey> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519)?;
    let pem = key.to_openssh(russh::keys::ssh_key::LineEnding::LF)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(pem.as_bytes())?;
    Ok(key)
}

/// Deletes this run's objects from a shared API server. PVs carry the
/// kubernetes.io/pv-protection finalizer, which only kube-controller-manager
/// removes; the benchmark's own PVs are never in use, so it is dropped here.
async fn cleanup(w: &Arc<World>) -> BoxResult<()> {
    let lp = ListParams::default().labels(&format!("{LABEL}={}", w.run));
    let dp = DeleteParams::default();
    Api::<VolumeAttachment>::all(w.client.clone())
        .delete_collection(&dp, &lp)
        .await?;
    let pvs: Api<PersistentVolume> = Api::all(w.client.clone());
    pvs.delete_collection(&dp, &lp).await?;
    let names: Arc<Vec<String>> = Arc::new(
        pvs.list_metadata(&lp)
            .await?
            .into_iter()
            .filter_map(|m| m.metadata.name)
            .collect(),
    );
    par(names.len(), IN_FLIGHT, {
        let (pvs, names) = (pvs.clone(), names.clone());
        move |i| {
            let (pvs, names) = (pvs.clone(), names.clone());
            async move {
                let unfinalize = json!({"metadata": {"finalizers": null}});
                match pvs
                    .patch(
                        &names[i],
                        &PatchParams::default(),
                        &Patch::Merge(&unfinalize),
                    )
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                    Err(e) => Err(e.into()),
                }
            }
        }
    })
    .await?;
    Api::<Node>::all(w.client.clone())
        .delete_collection(&dp, &lp)
        .await?;
    Ok(())
}

/// One controller start against the `REBUILD` attachments.
struct Start {
    label: String,
    rebuilt: Rebuilt,
    first_publish: Duration,
    rss: u64,
    hwm: u64,
    /// `smaps_summary` when RSS was read.
    smaps: String,
    /// Server-side time of the controller's LISTs of PVs and of
    /// VolumeAttachments (API server histograms; NaN if not exactly one).
    list_pv: (f64, f64),
    list_va: (f64, f64),
    /// With `inspect`: the allocator's bytes in use (glibc malloc_stats)
    /// and VmRSS after malloc_trim(0), both through gdb.
    heap: Option<(u64, u64)>,
}

/// Asks glibc in a running process, through gdb, for its statistics
/// (written to the process's stderr) and to give free memory back.
/// Returns the "in use" bytes and VmRSS (KiB) afterwards; None without gdb.
fn inspect_heap(pid: u32, log: &Path) -> Option<(u64, u64)> {
    let status = Command::new("gdb")
        .args([
            "-p",
            &pid.to_string(),
            "-batch",
            "-ex",
            "call (void)malloc_stats()",
        ])
        .args(["-ex", "call (int)malloc_trim(0)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .ok()?;
    if !status.success() {
        return None;
    }
    let text = std::fs::read_to_string(log).ok()?;
    let total = text.rsplit("Total (incl. mmap):").next()?;
    let in_use = total
        .lines()
        .find_map(|l| l.trim().strip_prefix("in use bytes"))?
        .trim_start_matches([' ', '='])
        .trim()
        .parse()
        .ok()?;
    Some((in_use, memory_kib(pid).0))
}

async fn measure_start(
    w: &World,
    name: &str,
    label: &str,
    inspect: bool,
    probe: &Vol,
) -> BoxResult<Start> {
    let before = parse_metrics(&api_get(w, "/metrics").await);
    let mut ctl = w.spawn(name)?;
    // Publish as the external-attacher would, retrying until it succeeds.
    let mut csi = ctl.csi.clone();
    let first_publish = loop {
        match publish(&mut csi, probe).await {
            Ok(_) => break ctl.started.elapsed(),
            Err(e) => {
                if ctl.started.elapsed() > Duration::from_secs(60) {
                    return Err(format!("no successful publish within 60 s: {e}").into());
                }
                if let Some(status) = ctl.child.try_wait()? {
                    return Err(format!("controller exited with {status}").into());
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    let rebuilt = ctl.rebuilt(Duration::from_secs(10)).await?;
    // Let start-up allocations settle before reading memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss, hwm) = memory_kib(ctl.pid());
    let smaps = smaps_summary(ctl.pid());
    let heap = if inspect {
        inspect_heap(ctl.pid(), &ctl.log)
    } else {
        None
    };
    unpublish(&mut csi, probe).await?;
    let after = parse_metrics(&api_get(w, "/metrics").await);
    // Every LIST of the kind during the start: the rebuild's pages and,
    // for PVs, the orphan sweep's.
    let list = |resource: &str| {
        let labels = [resource, "verb=\"LIST\"", "scope=\"cluster\""];
        let d = |n: &str| msum(&after, n, &labels) - msum(&before, n, &labels);
        (
            d("apiserver_request_duration_seconds_sum"),
            d("apiserver_request_duration_seconds_count"),
        )
    };
    Ok(Start {
        label: label.to_string(),
        list_pv: list("resource=\"persistentvolumes\""),
        list_va: list("resource=\"volumeattachments\""),
        heap,
        rebuilt,
        first_publish,
        rss,
        hwm,
        smaps,
    })
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attachments benchmark failed: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> BoxResult<()> {
    let bench_start = Instant::now();
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().to_path_buf();
    let api = ApiServer::get(&dir)?;
    let client = kube_client(&api.kubeconfig).await?;
    let version = client.apiserver_version().await?;

    let key = dir.join("client_ed25519");
    let k = write_key(&key)?;
    let sim = rds_sim::start(rds_sim::SimConfig {
        authorized_keys: vec![k.public_key().clone()],
        pool_size: 64 << 40,
        ..Default::default()
    })
    .await?;
    let suffix: u32 = rand::random::<u32>() % 0xfffff;
    let run = format!("bench-{suffix:05x}");
    let w = Arc::new(World {
        dir: dir.clone(),
        sim,
        key,
        kubeconfig: api.kubeconfig.clone(),
        driver: format!("{run}.attach.rds.csi.srvlab.io"),
        run,
        client,
        apiserver_pid: api.pid("apiserver"),
        etcd_pid: api.pid("etcd"),
        etcd_port: api.pid("etcd").and_then(etcd_client_port),
    });
    eprintln!(
        "API server {}; driver {}; controller binary {BIN}",
        version.git_version, w.driver
    );

    let result = bench(&w, bench_start).await;
    if api.owned.is_none() {
        eprintln!("deleting this run's objects");
        if let Err(e) = cleanup(&w).await {
            eprintln!("cleanup failed: {e}");
        }
    }
    let out = result?;
    print!("{out}");
    Ok(())
}

async fn bench(w: &Arc<World>, bench_start: Instant) -> BoxResult<String> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    // --- setup: nodes -------------------------------------------------------
    let nodes_took = par(NODES, IN_FLIGHT, {
        let w = w.clone();
        move |i| {
            let w = w.clone();
            async move {
                let node: Node = serde_json::from_value(json!({
                    "metadata": {"name": w.node(i), "labels": w.labels(),
                                 "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"}}
                }))?;
                Api::<Node>::all(w.client.clone())
                    .create(&PostParams::default(), &node)
                    .await?;
                Ok(())
            }
        }
    })
    .await?;

    // --- controller 1: idle, then 1,000 volumes ----------------------------
    let mut ctl = w.spawn("publish")?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (idle_rss, idle_hwm) = memory_kib(ctl.pid());

    eprintln!("creating {VOLUMES} volumes and their PVs");
    let contexts = Arc::new(std::sync::Mutex::new(vec![HashMap::new(); VOLUMES]));
    let create_took = par(VOLUMES, IN_FLIGHT, {
        let (w, csi, contexts) = (w.clone(), ctl.csi.clone(), contexts.clone());
        move |i| {
            let (w, mut csi, contexts) = (w.clone(), csi.clone(), contexts.clone());
            async move {
                let id = w.volume(i);
                let claim = format!("disk-{i:04}");
                let vol = csi
                    .create_volume(proto::CreateVolumeRequest {
                        name: id.clone(),
                        capacity_range: Some(proto::CapacityRange {
                            required_bytes: GIB,
                            limit_bytes: 0,
                        }),
                        volume_capabilities: vec![capability()],
                        parameters: [
                            ("csi.storage.k8s.io/pvc/name", claim.as_str()),
                            ("csi.storage.k8s.io/pvc/namespace", w.run.as_str()),
                            ("csi.storage.k8s.io/pv/name", id.as_str()),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                        ..Default::default()
                    })
                    .await
                    .map_err(|s| format!("CreateVolume {id}: {s}"))?
                    .into_inner()
                    .volume
                    .ok_or("CreateVolume returned no volume")?;
                contexts.lock().unwrap()[i] = vol.volume_context;
                Ok(())
            }
        }
    })
    .await?;
    let contexts = std::mem::take(&mut *contexts.lock().unwrap());
    let vols: Arc<Vec<Vol>> = Arc::new(
        contexts
            .into_iter()
            .enumerate()
            .map(|(i, context)| Vol {
                id: w.volume(i),
                node: w.node(i),
                context,
            })
            .collect(),
    );
    let pvs_took = par(VOLUMES, IN_FLIGHT, {
        let (w, vols) = (w.clone(), vols.clone());
        move |i| {
            let (w, vols) = (w.clone(), vols.clone());
            async move {
                let v = &vols[i];
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": v.id, "labels": w.labels(),
                                 "annotations": {"pv.kubernetes.io/provisioned-by": w.driver}},
                    "spec": {
                        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                        "volumeMode": "Filesystem", "persistentVolumeReclaimPolicy": "Delete",
                        "claimRef": {"namespace": w.run, "name": format!("disk-{i:04}")},
                        "csi": {"driver": w.driver, "volumeHandle": v.id, "volumeAttributes": v.context}
                    }
                }))?;
                Api::<PersistentVolume>::all(w.client.clone())
                    .create(&PostParams::default(), &pv)
                    .await?;
                Ok(())
            }
        }
    })
    .await?;

    // --- publish / unpublish ------------------------------------------------
    let mut runs = Vec::new();
    eprintln!("sequential, first publish of each volume");
    runs.push(sequential("sequential, first use of each volume", w, &ctl, &vols).await?);
    eprintln!("sequential, second pass");
    runs.push(sequential("sequential, second pass", w, &ctl, &vols).await?);
    let (busy_rss, busy_hwm) = memory_kib(ctl.pid());
    drop(ctl);
    // A fresh controller, so the concurrent run also starts cold (no PV
    // names cached).
    let mut ctl = w.spawn("publish-2")?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    eprintln!("{NODES} concurrent, first publish of each volume");
    runs.push(
        concurrent(
            &format!("{NODES} concurrent, first use of each volume"),
            w,
            &ctl,
            &vols,
        )
        .await?,
    );
    eprintln!("{NODES} concurrent, second pass");
    runs.push(concurrent(&format!("{NODES} concurrent, second pass"), w, &ctl, &vols).await?);
    drop(ctl);
    // Diagnostic: the same with as many SSH channels as tasks.
    let mut ctl = w.spawn_with("publish-wide", &["--rds-max-sessions", "64"], &[])?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    eprintln!("{NODES} concurrent with --rds-max-sessions 64");
    runs.push(
        concurrent(
            &format!("{NODES} concurrent, first use, `--rds-max-sessions 64` (diagnostic)"),
            w,
            &ctl,
            &vols,
        )
        .await?,
    );
    drop(ctl);
    // The floor: the controller's PV patch alone, without the controller.
    eprintln!("bare PV merge-patches from this process, sequential and {NODES} concurrent");
    runs.push(
        bare_patches(
            "bare PV merge-patch, no controller (floor), sequential",
            w,
            &vols,
            1,
        )
        .await?,
    );
    for pass in ["first", "second"] {
        runs.push(
            bare_patches(
                &format!(
                    "bare PV merge-patch, no controller (floor), {NODES} concurrent, {pass} pass"
                ),
                w,
                &vols,
                NODES,
            )
            .await?,
        );
    }

    // --- rebuild from REBUILD attachments --------------------------------
    eprintln!("creating {REBUILD} PVs and {REBUILD} attached VolumeAttachments");
    let rebuild_setup = par(REBUILD, IN_FLIGHT, {
        let w = w.clone();
        move |i| {
            let w = w.clone();
            async move {
                let id = format!("pvc-{}-r{i:04}", w.run);
                let node = w.node(i);
                let pv: PersistentVolume = serde_json::from_value(json!({
                    "metadata": {"name": id, "labels": w.labels(),
                                 "annotations": {"pv.kubernetes.io/provisioned-by": w.driver,
                                                 ANN_ATTACHED_NODE: node,
                                                 ANN_ATTACHED_AT: jiff::Timestamp::now().to_string()}},
                    "spec": {
                        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                        "volumeMode": "Filesystem", "persistentVolumeReclaimPolicy": "Delete",
                        "claimRef": {"namespace": w.run, "name": format!("r-{i:04}")},
                        "csi": {"driver": w.driver, "volumeHandle": id}
                    }
                }))?;
                Api::<PersistentVolume>::all(w.client.clone())
                    .create(&PostParams::default(), &pv)
                    .await?;
                let va_name = format!("csi-{id}");
                let va: VolumeAttachment = serde_json::from_value(json!({
                    "metadata": {"name": va_name, "labels": w.labels()},
                    "spec": {"attacher": w.driver, "nodeName": node, "source": {"persistentVolumeName": id}}
                }))?;
                let vas = Api::<VolumeAttachment>::all(w.client.clone());
                vas.create(&PostParams::default(), &va).await?;
                vas.patch_status(
                    &va_name,
                    &PatchParams::default(),
                    &Patch::Merge(&json!({"status": {"attached": true}})),
                )
                .await?;
                Ok(())
            }
        }
    })
    .await?;

    let pv_list_bytes = api_get(w, "/api/v1/persistentvolumes").await.len();
    let va_list_bytes = api_get(w, "/apis/storage.k8s.io/v1/volumeattachments")
        .await
        .len();
    let mut starts = Vec::new();
    for s in 0..STARTS {
        eprintln!("controller start {} of {STARTS}", s + 1);
        // The last start is also inspected (after its memory is read).
        let label = (s + 1).to_string();
        let inspect = s + 1 == STARTS;
        starts.push(measure_start(w, &format!("rebuild-{s}"), &label, inspect, &vols[s]).await?);
    }
    for s in &starts {
        if s.rebuilt.attached != REBUILD as u64 {
            return Err(format!(
                "the controller rebuilt {} attachments, expected {REBUILD}",
                s.rebuilt.attached
            )
            .into());
        }
    }

    // --- report ------------------------------------------------------------
    let mut out = String::new();
    writeln!(
        out,
        "# rds-csi attachment benchmark\n\n\
         kube-apiserver + etcd on 127.0.0.1; simulator in-process; controller `{BIN}` \
         as a child process with `--kubeconfig`; {} CPU(s); load average {} at the start.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load,
    )?;
    writeln!(
        out,
        "## ControllerPublish / ControllerUnpublish ({VOLUMES} volumes, {NODES} nodes)\n"
    )?;
    writeln!(
        out,
        "| run | publish p50 ms | publish p99 ms | publish max ms | unpublish p50 ms | unpublish p99 ms | unpublish max ms | publishes/s | unpublishes/s | ops/s overall |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in &runs {
        writeln!(out, "{}", r.row())?;
    }
    writeln!(
        out,
        "\n### Where the time goes (means in ms; CPU in seconds over the run)\n"
    )?;
    writeln!(
        out,
        "| run | publish, client | publish RPC | of which attachment manager | SSH command | publish RPC minus SSH command and API server PATCH | unpublish, client | unpublish RPC | of which attachment manager | API server PATCH PV | etcd update PV | etcd WAL fsync (count) | CPU controller | CPU kube-apiserver | CPU etcd | CPU bench + simulator | CPU used by these | CPU busy, whole machine |"
    )?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for r in &runs {
        writeln!(out, "{}", r.breakdown_row())?;
    }
    writeln!(
        out,
        "\nTCP connections to the API server at the end of each run (the controller's; \
         for the floor rows, this process's, which also made the objects):\n"
    )?;
    for r in &runs {
        writeln!(
            out,
            "- {}: {}",
            r.label,
            r.api_conns.map_or("n/a".into(), |n| n.to_string())
        )?;
    }
    writeln!(
        out,
        "\nSetup: {NODES} Nodes in {:.2} s; {VOLUMES} CreateVolume calls in {:.2} s; \
         {VOLUMES} PVs in {:.2} s ({IN_FLIGHT} in flight).",
        nodes_took.as_secs_f64(),
        create_took.as_secs_f64(),
        pvs_took.as_secs_f64()
    )?;

    writeln!(
        out,
        "\n## Start with {REBUILD} attached VolumeAttachments\n\n\
         Setup: {REBUILD} PVs + {REBUILD} VolumeAttachments + {REBUILD} status patches \
         ({} requests, {IN_FLIGHT} in flight) in {:.1} s ({:.0} requests/s).\n",
        3 * REBUILD,
        rebuild_setup.as_secs_f64(),
        (3 * REBUILD) as f64 / rebuild_setup.as_secs_f64()
    )?;
    writeln!(
        out,
        "| start | spawn to \"rebuilt\" log line | rebuild (controller's own timing) | LISTs of PVs, API server time (requests) | LISTs of VolumeAttachments, API server time (requests) | attached | spawn to first successful publish | VmRSS 2 s later | VmHWM |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for s in &starts {
        writeln!(
            out,
            "| {} | {:.3} s | {} | {} ms ({:.0}) | {} ms ({:.0}) | {} | {:.3} s | {} | {} |",
            s.label,
            s.rebuilt.since_spawn.as_secs_f64(),
            s.rebuilt.elapsed,
            ms_f(s.list_pv.0),
            s.list_pv.1,
            ms_f(s.list_va.0),
            s.list_va.1,
            s.rebuilt.attached,
            s.first_publish.as_secs_f64(),
            mib(s.rss),
            mib(s.hwm)
        )?;
    }
    writeln!(
        out,
        "\nThe controller's two LIST responses (JSON, as this benchmark's client receives them): \
         PVs {:.1} MiB ({} PVs), VolumeAttachments {:.1} MiB.",
        pv_list_bytes as f64 / (1 << 20) as f64,
        VOLUMES + REBUILD,
        va_list_bytes as f64 / (1 << 20) as f64
    )?;

    writeln!(out, "\n## Controller memory\n")?;
    writeln!(out, "| state | VmRSS | VmHWM |\n|---|---:|---:|")?;
    writeln!(
        out,
        "| idle after start (nothing attached) | {} | {} |",
        mib(idle_rss),
        mib(idle_hwm)
    )?;
    writeln!(
        out,
        "| after 2 x {VOLUMES} sequential publish/unpublish | {} | {} |",
        mib(busy_rss),
        mib(busy_hwm)
    )?;
    let worst = starts.iter().map(|s| s.rss).max().unwrap_or(0);
    writeln!(
        out,
        "| tracking {REBUILD} attached volumes (worst of {STARTS} starts) | {} | {} |",
        mib(worst),
        mib(starts.iter().map(|s| s.hwm).max().unwrap_or(0))
    )?;
    for s in &starts {
        writeln!(out, "\nStart {}: {}.", s.label, s.smaps)?;
    }
    match starts.last().and_then(|s| s.heap.map(|h| (s, h))) {
        Some((s, (in_use, trimmed))) => writeln!(
            out,
            "\nStart {STARTS}, inspected with gdb after its memory was read: glibc reports \
             {:.1} MiB of heap in use (malloc_stats); after malloc_trim(0) VmRSS fell \
             from {} to {}.",
            in_use as f64 / (1 << 20) as f64,
            mib(s.rss),
            mib(trimmed)
        )?,
        None => writeln!(out, "\n(gdb not available: heap not inspected.)")?,
    }

    let con = &runs[2];
    let p99 = percentile(&con.publishes, 99.0);
    let slowest_start = starts
        .iter()
        .map(|s| s.rebuilt.since_spawn.max(s.first_publish))
        .max()
        .unwrap_or_default();
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    writeln!(out, "\n## Goals\n\n| goal | result | |\n|---|---|---|")?;
    writeln!(
        out,
        "| publish p99 < 50 ms at {NODES} concurrent | {} ms (first use), {} ms (second pass) | {} |",
        ms(p99),
        ms(percentile(&runs[3].publishes, 99.0)),
        met(p99 < Duration::from_millis(50)
            && percentile(&runs[3].publishes, 99.0) < Duration::from_millis(50))
    )?;
    writeln!(
        out,
        "| rebuild of {REBUILD} attachments < 3 s from start | slowest of {STARTS}: {:.3} s to the later of \"rebuilt\" and the first publish | {} |",
        slowest_start.as_secs_f64(),
        met(slowest_start < Duration::from_secs(3))
    )?;
    writeln!(
        out,
        "| RSS < 60 MiB with {REBUILD} tracked volumes | {} | {} |",
        mib(worst),
        met(worst < 60 * 1024)
    )?;
    writeln!(
        out,
        "\nTotal benchmark time: {:.1} s.",
        bench_start.elapsed().as_secs_f64()
    )?;
    Ok(out)
}
