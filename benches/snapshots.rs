//! Snapshot benchmark: CreateSnapshot latency and RouterOS commands per
//! snapshot, for each copy method the controller offers.
//!
//! - **subvolume**: source volumes made with `volumeLayout: subvolume`;
//!   a snapshot is a read-only Btrfs subvolume snapshot plus its disk.
//! - **copy-from**: source volumes in the flat layout (the default); a
//!   snapshot is `/disk add copy-from=`.
//! - **copy**: flat source volumes, VolumeSnapshotClass `copyMethod: copy`;
//!   a snapshot is a background `/disk copy` (made to finish at once here).
//!
//! Each snapshot is taken (the first CreateSnapshot, whose answer carries
//! the creation time a frozen guest waits for) and then asked for again
//! until it is ready, as the csi-snapshotter does. Each method is run
//! sequentially and with 16 concurrent callers (each on its own source
//! volume), at 0 ms and 20 ms of latency the simulator adds before every
//! RouterOS reply. As in the controller benchmark, the simulator runs in
//! this process (its command and connection counters are read) and the
//! controller is a child process reached over its CSI socket; everything
//! goes over real SSH.
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
use standalone::{Client, Controller, PREFIX};
use support::{
    capability, memory_row, met, ms, par, percentile, start_sim, total_time, two_phases, BoxResult,
    BIN, GIB,
};

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

const METHODS: [Method; 3] = [Method::Subvolume, Method::CopyFrom, Method::ByteCopy];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Subvolume,
    CopyFrom,
    ByteCopy,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Subvolume => "subvolume",
            Method::CopyFrom => "copy-from",
            Method::ByteCopy => "copy",
        }
    }

    /// StorageClass parameters of the source volumes.
    fn volume_parameters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Method::Subvolume => &[("volumeLayout", "subvolume")],
            Method::CopyFrom | Method::ByteCopy => &[],
        }
    }

    /// VolumeSnapshotClass parameters.
    fn class_parameters(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Method::ByteCopy => &[("copyMethod", "copy")],
            Method::Subvolume | Method::CopyFrom => &[],
        }
    }

    /// The source volume of caller `t`.
    fn volume(self, t: usize) -> String {
        format!("{PREFIX}{}-{t}", self.name())
    }
}

/// One measured run of `N` snapshots, each taken (the first
/// CreateSnapshot answer, which carries the creation time) and then asked
/// for again until ready, as the csi-snapshotter does.
struct Run {
    method: Method,
    label: String,
    /// Latency of the first CreateSnapshot of each snapshot.
    first: Vec<Duration>,
    /// From the first call to the ready answer; sequential runs only.
    ready: Option<Vec<Duration>>,
    /// RouterOS commands up to the first answer, and up to the ready one
    /// (first included): exact per snapshot when sequential, each phase's
    /// total spread evenly when concurrent.
    first_cmds: Vec<u64>,
    ready_cmds: Vec<u64>,
    /// CreateSnapshot calls in all, first ones included.
    calls: usize,
    connections: u64,
    /// The snapshot IDs made, for the clean-up.
    ids: Vec<String>,
}

fn avg(v: &[u64]) -> f64 {
    v.iter().sum::<u64>() as f64 / v.len().max(1) as f64
}

fn most(v: &[u64]) -> u64 {
    v.iter().copied().max().unwrap_or(0)
}

/// Commands spread evenly over the `N` snapshots of a concurrent phase.
fn spread(total: u64) -> Vec<u64> {
    let (q, r) = (total / N as u64, (total % N as u64) as usize);
    (0..N).map(|i| q + u64::from(i < r)).collect()
}

impl Run {
    fn row(&self) -> String {
        let ready = self
            .ready
            .as_ref()
            .map_or("–".to_string(), |r| ms(percentile(r, 50.0)));
        format!(
            "| {} | {} | {} | {} | {} | {:.2} (max {}) | {:.2} | {:.2} (max {}) | {ready} | {} |",
            self.method.name(),
            self.label,
            ms(percentile(&self.first, 50.0)),
            ms(percentile(&self.first, 99.0)),
            ms(percentile(&self.first, 100.0)),
            avg(&self.first_cmds),
            most(&self.first_cmds),
            self.calls as f64 / self.first.len() as f64,
            avg(&self.ready_cmds),
            most(&self.ready_cmds),
            self.connections,
        )
    }
}

fn request(method: Method, volume: &str, name: &str) -> proto::CreateSnapshotRequest {
    proto::CreateSnapshotRequest {
        source_volume_id: volume.to_string(),
        name: name.to_string(),
        parameters: method
            .class_parameters()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

async fn call(c: &mut Client, req: proto::CreateSnapshotRequest) -> proto::Snapshot {
    let what = format!("CreateSnapshot {} of {}", req.name, req.source_volume_id);
    match c.create_snapshot(req).await {
        Ok(r) => r
            .into_inner()
            .snapshot
            .expect("CreateSnapshot answered no snapshot"),
        Err(s) => panic!("{what}: {s}"),
    }
}

/// The first CreateSnapshot of `name`, checked; returns its answer and
/// latency.
async fn take(
    c: &mut Client,
    method: Method,
    volume: &str,
    name: &str,
) -> (proto::Snapshot, Duration) {
    let t = Instant::now();
    let snap = call(c, request(method, volume, name)).await;
    let took = t.elapsed();
    assert_eq!(snap.source_volume_id, volume, "{name}: wrong source");
    assert!(snap.creation_time.is_some(), "{name}: no creation time");
    (snap, took)
}

/// Asks again until `first` is ready, as the csi-snapshotter does, and
/// checks the ready answer; returns the calls it took.
async fn settle(
    c: &mut Client,
    method: Method,
    volume: &str,
    name: &str,
    first: proto::Snapshot,
) -> usize {
    let mut snap = first.clone();
    let mut calls = 0;
    while !snap.ready_to_use {
        assert!(calls < 1000, "{name}: not ready after {calls} more calls");
        if calls > 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        snap = call(c, request(method, volume, name)).await;
        calls += 1;
    }
    assert_eq!(
        snap.snapshot_id, first.snapshot_id,
        "{name}: another snapshot"
    );
    assert_eq!(
        snap.creation_time, first.creation_time,
        "{name}: creation time moved"
    );
    assert_eq!(snap.size_bytes, GIB, "{name}: wrong size");
    calls
}

/// `N` snapshots, one after the other, of the method's volumes in turn,
/// each made ready before the next. Commands are counted around every
/// single call.
async fn sequential(method: Method, label: &str, client: &Client, sim: &SimHandle) -> Run {
    let mut c = client.clone();
    let before = sim.stats();
    let mut run = Run {
        method,
        label: label.to_string(),
        first: Vec::with_capacity(N),
        ready: Some(Vec::with_capacity(N)),
        first_cmds: Vec::with_capacity(N),
        ready_cmds: Vec::with_capacity(N),
        calls: 0,
        connections: 0,
        ids: Vec::with_capacity(N),
    };
    for i in 0..N {
        let name = format!("{}-{label}-{i}", method.name());
        let volume = method.volume(i % TASKS);
        let c0 = sim.stats().commands;
        let t = Instant::now();
        let (snap, took) = take(&mut c, method, &volume, &name).await;
        let c1 = sim.stats().commands;
        run.ids.push(snap.snapshot_id.clone());
        run.calls += 1 + settle(&mut c, method, &volume, &name, snap).await;
        let ready = t.elapsed();
        let c2 = sim.stats().commands;
        run.first.push(took);
        run.ready.as_mut().expect("sequential").push(ready);
        run.first_cmds.push(c1 - c0);
        run.ready_cmds.push(c2 - c0);
    }
    run.connections = sim.stats().connections - before.connections;
    run
}

/// `TASKS` callers released together, each taking `PER_TASK` snapshots of
/// its own volume one after the other; once every first answer is in,
/// they are all released again to ask until their snapshots are ready.
async fn concurrent(method: Method, label: &str, client: &Client, sim: &SimHandle) -> Run {
    let (start_gate, mid_gate) = two_phases(TASKS);
    let mut tasks = Vec::with_capacity(TASKS);
    for t in 0..TASKS {
        let mut c = client.clone();
        let (g1, g2) = (start_gate.clone(), mid_gate.clone());
        let volume = method.volume(t);
        let names: Vec<String> = (0..PER_TASK)
            .map(|k| format!("{}-{label}-{t}-{k}", method.name()))
            .collect();
        tasks.push(tokio::spawn(async move {
            g1.wait().await;
            let mut taken = Vec::with_capacity(names.len());
            for name in &names {
                taken.push(take(&mut c, method, &volume, name).await);
            }
            g2.wait().await;
            let mut out = Vec::with_capacity(names.len());
            for (name, (snap, took)) in names.iter().zip(taken) {
                let id = snap.snapshot_id.clone();
                let calls = 1 + settle(&mut c, method, &volume, name, snap).await;
                out.push((id, took, calls));
            }
            out
        }));
    }
    let before = sim.stats();
    start_gate.wait().await;
    mid_gate.wait().await;
    let mid = sim.stats();
    let mut first = Vec::with_capacity(N);
    let mut ids = Vec::with_capacity(N);
    let mut calls = 0;
    for t in tasks {
        for (id, took, n) in t.await.expect("benchmark task panicked") {
            first.push(took);
            ids.push(id);
            calls += n;
        }
    }
    let after = sim.stats();
    Run {
        method,
        label: label.to_string(),
        first,
        ready: None,
        first_cmds: spread(mid.commands - before.commands),
        ready_cmds: spread(after.commands - before.commands),
        calls,
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
        Method::CopyFrom | Method::ByteCopy => 0,
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
    if left != METHODS.len() * TASKS || read_only_subvolumes(sim) != 0 {
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
                method.volume_parameters(),
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
    let ctl = Controller::start(dir.path(), "snapshots", &sim, &key_path, None).await?;
    let startup = sim.stats();
    let idle = ctl.settled_memory(Duration::from_millis(500)).await;

    // Byte copies finish at once: what is measured is the driver's
    // commands, not the RDS's copying.
    sim.set_copy_rate(u64::MAX);
    for method in METHODS {
        sources(method, &ctl.client).await?;
    }
    let plain_subvolumes = sim.subvolumes().len();
    if plain_subvolumes != TASKS {
        return Err(format!("{plain_subvolumes} subvolumes for {TASKS} subvolume volumes").into());
    }

    let mut runs = Vec::new();
    for method in METHODS {
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
         | method | run | first answer p50 ms | p99 ms | max ms | RouterOS cmds to the first answer | calls until ready | RouterOS cmds until ready | ready p50 ms | new SSH connections |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n{}",
        rows.join("\n")
    )?;

    writeln!(out, "\n## Round trips per CreateSnapshot\n")?;
    writeln!(
        out,
        "| method | most commands to a first answer | most until ready | goal (first answer) |\n|---|---:|---:|---|"
    )?;
    for method in METHODS {
        let of = |f: fn(&Run) -> &[u64]| {
            runs.iter()
                .filter(|r| r.method == method)
                .map(|r| most(f(r)))
                .max()
                .unwrap_or(0)
        };
        let (first, ready) = (of(|r| &r.first_cmds), of(|r| &r.ready_cmds));
        let goal = match method {
            Method::Subvolume => format!("<= {SUBVOLUME_GOAL}: {}", met(first <= SUBVOLUME_GOAL)),
            Method::CopyFrom | Method::ByteCopy => "–".to_string(),
        };
        writeln!(out, "| {} | {first} | {ready} | {goal} |", method.name())?;
    }

    writeln!(
        out,
        "\n## SSH connections\n\n| measure | value |\n|---|---:|\n\
         | connections while the controller started (incl. first health check) | {} |\n\
         | connections over the whole benchmark ({} CreateSnapshot, {} DeleteSnapshot, \
         {} CreateVolume) | {} |",
        startup.connections,
        runs.iter().map(|r| r.calls).sum::<usize>(),
        runs.len() * N,
        METHODS.len() * TASKS,
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
