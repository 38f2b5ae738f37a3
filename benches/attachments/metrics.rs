//! Where the time of a run went: Prometheus scrapes of the controller, the
//! API server and etcd, CPU accounting from /proc, before and after a run.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::apiserver::api_get;
use crate::world::{Controller, World};

/// The body of a GET against 127.0.0.1.
fn http_get(port: u16, path: &str) -> Option<String> {
    testkit::metrics::http_get(port, path).map(|(_, text)| text)
}

/// A Prometheus scrape: series (name and labels) to value.
pub type Metrics = HashMap<String, f64>;

pub fn parse_metrics(text: &str) -> Metrics {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Sum of the series of `name` whose labels contain every one of `labels`.
pub fn msum(m: &Metrics, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            let (n, rest) = k.split_once('{').unwrap_or((k.as_str(), ""));
            n == name && labels.iter().all(|l| rest.contains(l))
        })
        .map(|(_, v)| v)
        .sum()
}

/// CPU time (user + system) of a process, in seconds.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / clock_ticks())
}

pub fn clock_ticks() -> f64 {
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
pub struct Snap {
    pub at: Instant,
    /// CPU seconds of the controller, kube-apiserver, etcd and this process.
    pub cpu: [Option<f64>; 4],
    pub ctl: Metrics,
    pub api: Metrics,
    pub etcd: Metrics,
    /// Busy and total jiffies of the whole machine (/proc/stat).
    pub machine: (u64, u64),
}

/// Busy and total time of all CPUs, in jiffies, from /proc/stat.
pub fn machine_jiffies() -> (u64, u64) {
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

pub async fn snap(w: &World, ctl: &Controller) -> Snap {
    snap_of(w, Some(ctl)).await
}

/// A snapshot; without a controller its metrics and CPU are absent.
pub async fn snap_of(w: &World, ctl: Option<&Controller>) -> Snap {
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
pub struct Breakdown {
    /// Mean seconds per call: (sum delta, count delta) of a histogram.
    pub rpc_publish: f64,
    pub manager_publish: f64,
    pub ssh: f64,
    pub rpc_unpublish: f64,
    pub manager_unpublish: f64,
    pub api_patch_pv: f64,
    pub etcd_update_pv: f64,
    pub wal_fsync: f64,
    pub wal_fsyncs: f64,
    pub cpu: [Option<f64>; 4],
    pub wall: Duration,
    /// Share of the machine's CPU time that was busy (all processes).
    pub machine_busy: f64,
}

pub fn breakdown(a: &Snap, b: &Snap) -> Breakdown {
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

pub fn ms_f(s: f64) -> String {
    if s.is_nan() {
        "n/a".into()
    } else {
        format!("{:.2}", s * 1000.0)
    }
}

pub fn cpu_s(c: Option<f64>) -> String {
    c.map_or("n/a".into(), |c| format!("{c:.1}"))
}

/// Established TCP connections of process `pid` to the API server (the
/// port of the kubeconfig's `server:`), from `ss`; None without `ss`.
pub fn api_connections(kubeconfig: &Path, pid: u32) -> Option<usize> {
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
