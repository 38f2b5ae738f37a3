//! Controller benchmark: CreateVolume/DeleteVolume latency, throughput,
//! RouterOS command counts and resident memory.
//!
//! The RouterOS simulator runs in this process (so its command and
//! connection counters can be read), the controller runs as a child process
//! (`rds-csi controller`) so its memory can be read from /proc. Everything
//! goes over real SSH and a real CSI unix socket.
//!
//!     cargo bench --bench controller
//!
//! Results are printed as Markdown on stdout; see docs/benchmarks.md.

use std::fmt::Write as _;
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

/// Pairs in the sequential runs and tasks in the concurrent runs.
const N: usize = 64;
/// Volumes kept at once for the memory measurement.
const MANY: usize = 1000;
/// Requests in flight while creating and deleting the `MANY` volumes.
const MANY_IN_FLIGHT: usize = 32;
/// Latency injected in the "slow RDS" runs.
const SLOW: Duration = Duration::from_millis(20);
/// `--rds-max-sessions` of the optional second controller.
const WIDE_SESSIONS: u32 = 64;

async fn create(client: &mut Client, name: &str) -> Duration {
    let t = Instant::now();
    if let Err(s) = client
        .create_volume(testkit::csi::create_volume(name, GIB, capability(), &[]))
        .await
    {
        panic!("CreateVolume {name}: {s}");
    }
    t.elapsed()
}

async fn delete(client: &mut Client, name: &str) -> Duration {
    let t = Instant::now();
    let req = proto::DeleteVolumeRequest {
        volume_id: name.to_string(),
        ..Default::default()
    };
    if let Err(s) = client.delete_volume(req).await {
        panic!("DeleteVolume {name}: {s}");
    }
    t.elapsed()
}

/// One measured run of `N` creates and `N` deletes.
struct Run {
    label: String,
    creates: Vec<Duration>,
    deletes: Vec<Duration>,
    /// Wall time of the create part alone.
    create_wall: Duration,
    /// Wall time of the whole run.
    wall: Duration,
    create_cmds: Vec<u64>,
    delete_cmds: Vec<u64>,
    connections: u64,
}

impl Run {
    fn row(&self) -> String {
        let ops = (self.creates.len() + self.deletes.len()) as f64;
        let avg = |v: &[u64]| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
        let max = |v: &[u64]| v.iter().copied().max().unwrap_or(0);
        format!(
            "| {} | {} | {} | {} | {} | {:.3} | {:.0} | {:.2} (max {}) | {:.2} (max {}) | {} |",
            self.label,
            ms(percentile(&self.creates, 50.0)),
            ms(percentile(&self.creates, 99.0)),
            ms(percentile(&self.deletes, 50.0)),
            ms(percentile(&self.deletes, 99.0)),
            self.wall.as_secs_f64(),
            ops / self.wall.as_secs_f64(),
            avg(&self.create_cmds),
            max(&self.create_cmds),
            avg(&self.delete_cmds),
            max(&self.delete_cmds),
            self.connections,
        )
    }
}

/// `N` create+delete pairs, one after the other. Commands are counted for
/// every single RPC.
async fn sequential(label: &str, client: &Client, sim: &SimHandle, tag: &str) -> Run {
    let mut c = client.clone();
    let before = sim.stats();
    let mut run = Run {
        label: label.to_string(),
        creates: Vec::with_capacity(N),
        deletes: Vec::with_capacity(N),
        create_wall: Duration::ZERO,
        wall: Duration::ZERO,
        create_cmds: Vec::with_capacity(N),
        delete_cmds: Vec::with_capacity(N),
        connections: 0,
    };
    let start = Instant::now();
    for i in 0..N {
        let name = format!("{PREFIX}{tag}-{i}");
        let c0 = sim.stats().commands;
        run.creates.push(create(&mut c, &name).await);
        let c1 = sim.stats().commands;
        run.deletes.push(delete(&mut c, &name).await);
        let c2 = sim.stats().commands;
        run.create_cmds.push(c1 - c0);
        run.delete_cmds.push(c2 - c1);
    }
    run.wall = start.elapsed();
    run.create_wall = run.creates.iter().sum();
    run.connections = sim.stats().connections - before.connections;
    run
}

/// `N` tasks, each creating its own volume and then deleting it. All
/// creates start together; the deletes start together once every create
/// has returned, so the create phase can be timed (and its commands
/// counted) on its own.
async fn concurrent(label: &str, client: &Client, sim: &SimHandle, tag: &str) -> Run {
    let (start_gate, mid_gate) = two_phases(N);
    let mut tasks = Vec::with_capacity(N);
    for i in 0..N {
        let mut c = client.clone();
        let (g1, g2) = (start_gate.clone(), mid_gate.clone());
        let name = format!("{PREFIX}{tag}-{i}");
        tasks.push(tokio::spawn(async move {
            g1.wait().await;
            let cd = create(&mut c, &name).await;
            g2.wait().await;
            let dd = delete(&mut c, &name).await;
            (cd, dd)
        }));
    }
    let before = sim.stats();
    start_gate.wait().await;
    let start = Instant::now();
    mid_gate.wait().await;
    let create_wall = start.elapsed();
    let mid = sim.stats();
    let mut creates = Vec::with_capacity(N);
    let mut deletes = Vec::with_capacity(N);
    for t in tasks {
        let (cd, dd) = t.await.expect("benchmark task panicked");
        creates.push(cd);
        deletes.push(dd);
    }
    let wall = start.elapsed();
    let after = sim.stats();
    // Per-operation averages: the phases are separated, so each phase's
    // commands divided evenly over its N operations.
    let per = |n: u64| -> Vec<u64> {
        let q = n / N as u64;
        let r = (n % N as u64) as usize;
        (0..N).map(|i| q + u64::from(i < r)).collect()
    };
    Run {
        label: label.to_string(),
        creates,
        deletes,
        create_wall,
        wall,
        create_cmds: per(mid.commands - before.commands),
        delete_cmds: per(after.commands - mid.commands),
        connections: after.connections - before.connections,
    }
}

/// Runs `op` on the `MANY` volumes `bench-many-<i>` with `MANY_IN_FLIGHT`
/// workers; returns the wall time.
async fn many<F, Fut>(client: &Client, op: F) -> BoxResult<Duration>
where
    F: Fn(Client, String) -> Fut + Send + Sync + Copy + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let client = client.clone();
    par(MANY, MANY_IN_FLIGHT, move |i| {
        let c = client.clone();
        async move {
            op(c, format!("{PREFIX}many-{i}")).await;
            Ok(())
        }
    })
    .await
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let bench_start = Instant::now();
    let dir = tempfile::tempdir()?;
    let (sim, key_path) = start_sim(dir.path()).await?;
    eprintln!("simulator on {}; controller binary {BIN}", sim.addr());

    // --- default controller: idle memory ---------------------------------
    let ctl = Controller::start(dir.path(), "default", &sim, &key_path, None).await?;
    let idle = ctl.settled_memory(Duration::from_millis(500)).await;
    let startup = sim.stats();

    // --- latency and throughput --------------------------------------------
    let mut runs = Vec::new();
    for latency in [Duration::ZERO, SLOW] {
        sim.faults().set_latency(latency);
        let l = latency.as_millis();
        eprintln!("{l} ms: sequential");
        runs.push(
            sequential(
                &format!("{l} ms, sequential"),
                &ctl.client,
                &sim,
                &format!("s{l}"),
            )
            .await,
        );
        eprintln!("{l} ms: concurrent");
        runs.push(
            concurrent(
                &format!("{l} ms, {N} concurrent"),
                &ctl.client,
                &sim,
                &format!("c{l}"),
            )
            .await,
        );
    }
    sim.faults().set_latency(Duration::ZERO);
    assert!(sim.disks().is_empty(), "volumes left over after the runs");

    // --- memory with many volumes -----------------------------------------
    eprintln!("creating {MANY} volumes");
    let before_many = sim.stats();
    let many_create = many(&ctl.client, |mut c, name| async move {
        create(&mut c, &name).await
    })
    .await?;
    assert_eq!(sim.disks().len(), MANY, "not every volume was created");
    let holding_many = ctl.settled_memory(Duration::from_millis(200)).await;
    eprintln!("deleting {MANY} volumes");
    let many_delete = many(&ctl.client, |mut c, name| async move {
        delete(&mut c, &name).await
    })
    .await?;
    assert!(sim.disks().is_empty(), "not every volume was deleted");
    let after_many = ctl.settled_memory(Duration::from_millis(200)).await;
    let stats_after_many = sim.stats();
    let default_connections = stats_after_many.connections;
    drop(ctl);

    // --- optional: a controller with more SSH channels -----------------------
    eprintln!("20 ms: concurrent with --rds-max-sessions {WIDE_SESSIONS}");
    let wide = Controller::start(dir.path(), "wide", &sim, &key_path, Some(WIDE_SESSIONS)).await?;
    sim.faults().set_latency(SLOW);
    let wide_run = concurrent(
        &format!("20 ms, {N} concurrent, {WIDE_SESSIONS} sessions"),
        &wide.client,
        &sim,
        "w20",
    )
    .await;
    sim.faults().set_latency(Duration::ZERO);
    drop(wide);
    let total = sim.stats();
    sim.shutdown().await;

    // --- report ------------------------------------------------------------
    let mut out = String::new();
    writeln!(
        out,
        "# rds-csi controller benchmark\n\n\
         Simulator in-process over SSH on 127.0.0.1; controller `{}` as a child process; \
         {} CPU(s). 1 GiB filesystem volumes. Latency is added by the simulator \
         before every RouterOS command's reply.\n",
        BIN,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    )?;
    writeln!(
        out,
        "## CreateVolume / DeleteVolume ({N} of each per row)\n"
    )?;
    writeln!(
        out,
        "| run | create p50 ms | create p99 ms | delete p50 ms | delete p99 ms | wall s | RPCs/s | RouterOS cmds per create | RouterOS cmds per delete | new SSH connections |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in runs.iter().chain(std::iter::once(&wide_run)) {
        writeln!(out, "{}", r.row())?;
    }

    let seq20 = &runs[2];
    let con20 = &runs[3];
    writeln!(out, "\n## Concurrency at 20 ms per command\n")?;
    writeln!(
        out,
        "| comparison | 64 sequential creates | 64 concurrent creates | speedup | goal |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---|")?;
    for (name, r) in [
        ("default --rds-max-sessions (8)", con20),
        ("--rds-max-sessions 64", &wide_run),
    ] {
        let speedup = seq20.create_wall.as_secs_f64() / r.create_wall.as_secs_f64();
        writeln!(
            out,
            "| {name} | {:.3} s | {:.3} s | {:.1}x | >= 4x: {} |",
            seq20.create_wall.as_secs_f64(),
            r.create_wall.as_secs_f64(),
            speedup,
            met(speedup >= 4.0)
        )?;
    }

    writeln!(out, "\n## SSH connections\n")?;
    writeln!(out, "| measure | value |\n|---|---:|")?;
    writeln!(
        out,
        "| connections while the default controller started (incl. first health check) | {} |",
        startup.connections
    )?;
    writeln!(
        out,
        "| commands while the default controller started | {} |",
        startup.commands
    )?;
    writeln!(
        out,
        "| connections over the default controller's whole life ({} RPCs) | {} |",
        4 * 2 * N + 2 * MANY,
        default_connections
    )?;
    writeln!(
        out,
        "| connections over the whole benchmark (2 controller processes) | {} |",
        total.connections
    )?;

    writeln!(out, "\n## Controller memory (default controller)\n")?;
    writeln!(
        out,
        "| state | VmRSS | VmHWM (peak so far) | goal |\n|---|---:|---:|---|"
    )?;
    writeln!(
        out,
        "{} < 20 MiB: {} |",
        memory_row("idle after start", idle),
        met(idle.0 < 20 * 1024)
    )?;
    let holding = format!("holding {MANY} volumes");
    for (state, memory) in [
        (holding.as_str(), holding_many),
        ("after deleting them", after_many),
    ] {
        writeln!(out, "{} |", memory_row(state, memory))?;
    }
    let many_cmds = stats_after_many.commands - before_many.commands;
    writeln!(
        out,
        "\n{MANY} creates took {:.2} s ({:.0}/s) and {MANY} deletes {:.2} s ({:.0}/s), \
         {MANY_IN_FLIGHT} in flight, 0 ms latency; {} RouterOS commands in all.",
        many_create.as_secs_f64(),
        MANY as f64 / many_create.as_secs_f64(),
        many_delete.as_secs_f64(),
        MANY as f64 / many_delete.as_secs_f64(),
        many_cmds,
    )?;
    writeln!(out, "{}", total_time(bench_start))?;
    print!("{out}");
    Ok(())
}
