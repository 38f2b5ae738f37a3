//! Snapshot benchmark: CreateSnapshot latency and RouterOS commands per
//! snapshot, for each copy method the controller offers.
//!
//! - **subvolume**: source volumes made with `volumeLayout: subvolume`;
//!   a snapshot is a read-only Btrfs subvolume snapshot plus its disk.
//! - **copy-from**: source volumes in the flat layout (the default); a
//!   snapshot is `/disk add copy-from=`.
//!
//! Each method is run sequentially and with 16 concurrent callers (each on
//! its own source volume), at 0 ms and 20 ms of latency the simulator adds
//! before every RouterOS reply. As in the controller benchmark, the
//! simulator runs in this process (its command and connection counters are
//! read) and the controller is a child process reached over its CSI socket;
//! everything goes over real SSH.
//!
//!     cargo bench --bench snapshots
//!
//! Results are printed as Markdown on stdout; see docs/benchmarks.md.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_server::proto;
use rds_sim::SimHandle;

#[path = "support/standalone.rs"]
mod standalone;
mod support;
use standalone::{Client, Controller};
use support::{
    capability, memory_row, met, ms, par, percentile, start_sim, total_time, BoxResult, BIN, GIB,
};

const PREFIX: &str = "bench-";
/// Concurrent callers, and source volumes per method (one per caller).
const TASKS: usize = 16;
/// Snapshots each concurrent caller takes, one after the other.
const PER_TASK: usize = 13;
/// Snapshots per measured run (sequential and concurrent alike).
const N: usize = TASKS * PER_TASK;
/// Latency injected in the "slow RDS" runs.
const SLOW: Duration = Duration::from_millis(20);
/// The goal for the subvolume method: RouterOS round trips per
/// CreateSnapshot.
const SUBVOLUME_GOAL: u64 = 2;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Subvolume,
    CopyFrom,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Subvolume => "subvolume",
            Method::CopyFrom => "copy-from",
        }
    }

    /// StorageClass parameters of the source volumes.
    fn parameters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Method::Subvolume => &[("volumeLayout", "subvolume")],
            Method::CopyFrom => &[],
        }
    }

    /// The source volume of caller `t`.
    fn volume(self, t: usize) -> String {
        format!("{PREFIX}{}-{t}", self.name())
    }
}

/// One measured run of `N` CreateSnapshot calls.
struct Run {
    method: Method,
    label: String,
    latencies: Vec<Duration>,
    wall: Duration,
    /// RouterOS commands per call: exact for each call when sequential,
    /// the run's total spread evenly when concurrent.
    cmds: Vec<u64>,
    connections: u64,
    /// The snapshot IDs made, for the clean-up.
    ids: Vec<String>,
}

impl Run {
    fn avg_cmds(&self) -> f64 {
        self.cmds.iter().sum::<u64>() as f64 / self.cmds.len().max(1) as f64
    }

    fn max_cmds(&self) -> u64 {
        self.cmds.iter().copied().max().unwrap_or(0)
    }

    fn row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.0} | {:.2} (max {}) | {} |",
            self.method.name(),
            self.label,
            ms(percentile(&self.latencies, 50.0)),
            ms(percentile(&self.latencies, 99.0)),
            ms(percentile(&self.latencies, 100.0)),
            self.wall.as_secs_f64(),
            self.latencies.len() as f64 / self.wall.as_secs_f64(),
            self.avg_cmds(),
            self.max_cmds(),
            self.connections,
        )
    }
}

/// Takes snapshot `name` of `volume` and checks the answer; returns the
/// snapshot ID and the latency.
async fn snapshot(client: &mut Client, volume: &str, name: &str) -> (String, Duration) {
    let req = proto::CreateSnapshotRequest {
        source_volume_id: volume.to_string(),
        name: name.to_string(),
        ..Default::default()
    };
    let t = Instant::now();
    let resp = match client.create_snapshot(req).await {
        Ok(r) => r.into_inner(),
        Err(s) => panic!("CreateSnapshot {name} of {volume}: {s}"),
    };
    let took = t.elapsed();
    let snap = resp.snapshot.expect("CreateSnapshot answered no snapshot");
    assert!(snap.ready_to_use, "{name}: not ready to use");
    assert_eq!(snap.source_volume_id, volume, "{name}: wrong source");
    assert_eq!(snap.size_bytes, GIB, "{name}: wrong size");
    (snap.snapshot_id, took)
}

/// `N` snapshots, one after the other, of the method's volumes in turn.
/// Commands are counted around every single call.
async fn sequential(method: Method, label: &str, client: &Client, sim: &SimHandle) -> Run {
    let mut c = client.clone();
    let before = sim.stats();
    let mut run = Run {
        method,
        label: label.to_string(),
        latencies: Vec::with_capacity(N),
        wall: Duration::ZERO,
        cmds: Vec::with_capacity(N),
        connections: 0,
        ids: Vec::with_capacity(N),
    };
    let start = Instant::now();
    for i in 0..N {
        let name = format!("{}-{label}-{i}", method.name());
        let c0 = sim.stats().commands;
        let (id, took) = snapshot(&mut c, &method.volume(i % TASKS), &name).await;
        run.cmds.push(sim.stats().commands - c0);
        run.latencies.push(took);
        run.ids.push(id);
    }
    run.wall = start.elapsed();
    run.connections = sim.stats().connections - before.connections;
    run
}

/// `TASKS` callers released together, each taking `PER_TASK` snapshots of
/// its own volume one after the other.
async fn concurrent(method: Method, label: &str, client: &Client, sim: &SimHandle) -> Run {
    let gate = Arc::new(tokio::sync::Barrier::new(TASKS + 1));
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let mut c = client.clone();
        let gate = gate.clone();
        let volume = method.volume(t);
        let names: Vec<String> = (0..PER_TASK)
            .map(|k| format!("{}-{label}-{t}-{k}", method.name()))
            .collect();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let mut out = Vec::with_capacity(names.len());
            for name in &names {
                out.push(snapshot(&mut c, &volume, name).await);
            }
            out
        }));
    }
    let before = sim.stats();
    gate.wait().await;
    let start = Instant::now();
    let mut latencies = Vec::with_capacity(N);
    let mut ids = Vec::with_capacity(N);
    for t in tasks {
        for (id, took) in t.await.expect("benchmark task panicked") {
            latencies.push(took);
            ids.push(id);
        }
    }
    let wall = start.elapsed();
    let after = sim.stats();
    let total = after.commands - before.commands;
    let (q, r) = (total / N as u64, (total % N as u64) as usize);
    Run {
        method,
        label: label.to_string(),
        latencies,
        wall,
        cmds: (0..N).map(|i| q + u64::from(i < r)).collect(),
        connections: after.connections - before.connections,
        ids,
    }
}

/// The machine's load averages, as /proc/loadavg gives them: other work on
/// the same cores shows in the tail latencies.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "unknown".into())
}

/// Read-only subvolume snapshots on the simulator.
fn read_only_subvolumes(sim: &SimHandle) -> usize {
    sim.subvolumes().iter().filter(|s| s.1).count()
}

/// Checks that `run` made its snapshots with its method, then deletes
/// them (untimed, no latency) so every run starts from the same RDS.
async fn check_and_clean(run: &Run, client: &Client, sim: &SimHandle) -> BoxResult<()> {
    let expected_ro = match run.method {
        Method::Subvolume => run.ids.len(),
        Method::CopyFrom => 0,
    };
    let ro = read_only_subvolumes(sim);
    if ro != expected_ro {
        return Err(format!(
            "{} {}: {ro} read-only subvolumes on the RDS, expected {expected_ro}",
            run.method.name(),
            run.label
        )
        .into());
    }
    sim.faults().set_latency(Duration::ZERO);
    let ids = Arc::new(run.ids.clone());
    let client = client.clone();
    par(ids.len(), TASKS, move |i| {
        let mut c = client.clone();
        let id = ids[i].clone();
        async move {
            c.delete_snapshot(proto::DeleteSnapshotRequest {
                snapshot_id: id.clone(),
                ..Default::default()
            })
            .await
            .map_err(|s| format!("DeleteSnapshot {id}: {s}"))?;
            Ok(())
        }
    })
    .await?;
    let left = sim.disks().len();
    if left != 2 * TASKS || read_only_subvolumes(sim) != 0 {
        return Err(format!("snapshots left over after {}: {left} disks", run.label).into());
    }
    Ok(())
}

/// The `TASKS` source volumes of `method`, made at no latency.
async fn sources(method: Method, client: &Client) -> BoxResult<()> {
    for t in 0..TASKS {
        let name = method.volume(t);
        client
            .clone()
            .create_volume(testkit::csi::create_volume(
                &name,
                GIB,
                capability(),
                method.parameters(),
            ))
            .await
            .map_err(|s| format!("CreateVolume {name}: {s}"))?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let bench_start = Instant::now();
    let load_before = load_average();
    let dir = tempfile::tempdir()?;
    let (sim, key_path) = start_sim(dir.path()).await?;
    eprintln!("simulator on {}; controller binary {BIN}", sim.addr());
    let ctl = Controller::start(dir.path(), "snapshots", &sim, &key_path, PREFIX, None).await?;
    let startup = sim.stats();
    let idle = ctl.settled_memory(Duration::from_millis(500)).await;

    let methods = [Method::Subvolume, Method::CopyFrom];
    for method in methods {
        sources(method, &ctl.client).await?;
    }
    let plain_subvolumes = sim.subvolumes().len();
    if plain_subvolumes != TASKS {
        return Err(format!("{plain_subvolumes} subvolumes for {TASKS} subvolume volumes").into());
    }

    let mut runs = Vec::new();
    for method in methods {
        for latency in [Duration::ZERO, SLOW] {
            let l = latency.as_millis();
            for concurrently in [false, true] {
                let label = if concurrently {
                    format!("{l} ms, {TASKS} concurrent")
                } else {
                    format!("{l} ms, sequential")
                };
                eprintln!("{}: {label}", method.name());
                sim.faults().set_latency(latency);
                let run = if concurrently {
                    concurrent(method, &label, &ctl.client, &sim).await
                } else {
                    sequential(method, &label, &ctl.client, &sim).await
                };
                check_and_clean(&run, &ctl.client, &sim).await?;
                runs.push(run);
            }
        }
    }
    let total = sim.stats();
    let load_after = load_average();
    let after_runs = ctl.settled_memory(Duration::from_millis(200)).await;
    drop(ctl);
    sim.shutdown().await;

    // --- report ------------------------------------------------------------
    let mut out = String::new();
    writeln!(
        out,
        "# rds-csi snapshot benchmark\n\n\
         Simulator in-process over SSH on 127.0.0.1 (Btrfs pool); controller `{BIN}` \
         as a child process with its default `--rds-max-sessions`; {} CPU(s). \
         Source volumes: {TASKS} per method, 1 GiB filesystem volumes. Latency is added \
         by the simulator before every RouterOS command's reply. Load average \
         (1, 5, 15 min) before the runs: {load_before}; after them: {load_after}.\n",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;
    let rows: Vec<String> = runs.iter().map(Run::row).collect();
    writeln!(
        out,
        "## CreateSnapshot ({N} per row)\n\n\
         | method | run | p50 ms | p99 ms | max ms | wall s | snapshots/s | RouterOS cmds per snapshot | new SSH connections |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|\n{}",
        rows.join("\n")
    )?;

    writeln!(out, "\n## Round trips per CreateSnapshot\n")?;
    writeln!(
        out,
        "| method | most commands in one call | goal |\n|---|---:|---|"
    )?;
    for method in methods {
        let most = runs
            .iter()
            .filter(|r| r.method == method)
            .map(Run::max_cmds)
            .max()
            .unwrap_or(0);
        let goal = match method {
            Method::Subvolume => format!("<= {SUBVOLUME_GOAL}: {}", met(most <= SUBVOLUME_GOAL)),
            Method::CopyFrom => "–".to_string(),
        };
        writeln!(out, "| {} | {most} | {goal} |", method.name())?;
    }

    writeln!(
        out,
        "\n## SSH connections\n\n| measure | value |\n|---|---:|\n\
         | connections while the controller started (incl. first health check) | {} |\n\
         | connections over the whole benchmark ({} CreateSnapshot, as many DeleteSnapshot, \
         {} CreateVolume) | {} |",
        startup.connections,
        runs.len() * N,
        methods.len() * TASKS,
        total.connections
    )?;
    writeln!(out, "\n## Controller memory\n")?;
    writeln!(
        out,
        "| state | VmRSS | VmHWM (peak so far) |\n|---|---:|---:|"
    )?;
    writeln!(out, "{}", memory_row("idle after start", idle))?;
    writeln!(out, "{}", memory_row("after every run", after_runs))?;
    writeln!(out, "{}", total_time(bench_start))?;
    print!("{out}");
    Ok(())
}
