//! The benchmark's Markdown report: the tables, then the goals.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use crate::metrics::ms_f;
use crate::publish::Run;
use crate::rebuild::Start;
use crate::support::{memory_row, met, mib, ms, percentile, total_time, BIN};
use crate::{IN_FLIGHT, NODES, REBUILD, STARTS, VOLUMES};

/// Everything a run measured.
pub struct Results {
    /// /proc/loadavg's three averages at the start.
    pub load: String,
    pub bench_start: Instant,
    pub nodes_took: Duration,
    pub create_took: Duration,
    pub pvs_took: Duration,
    /// Publish/unpublish runs; the third and fourth are the concurrent
    /// first use and second pass the goal is about.
    pub runs: Vec<Run>,
    /// VmRSS and VmHWM (KiB) of the first controller idle after start, and
    /// after its sequential runs.
    pub idle: (u64, u64),
    pub busy: (u64, u64),
    pub rebuild_setup: Duration,
    pub pv_list_bytes: usize,
    pub va_list_bytes: usize,
    pub starts: Vec<Start>,
}

pub fn render(res: &Results) -> Result<String, std::fmt::Error> {
    let Results {
        load,
        bench_start,
        nodes_took,
        create_took,
        pvs_took,
        runs,
        idle: idle_kib,
        busy: busy_kib,
        rebuild_setup,
        pv_list_bytes,
        va_list_bytes,
        starts,
    } = res;
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
    for r in runs {
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
    for r in runs {
        writeln!(out, "{}", r.breakdown_row())?;
    }
    writeln!(
        out,
        "\nTCP connections to the API server at the end of each run (the controller's; \
         for the floor rows, this process's, which also made the objects):\n"
    )?;
    for r in runs {
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
    for s in starts {
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
        *pv_list_bytes as f64 / (1 << 20) as f64,
        VOLUMES + REBUILD,
        *va_list_bytes as f64 / (1 << 20) as f64
    )?;

    writeln!(out, "\n## Controller memory\n")?;
    writeln!(out, "| state | VmRSS | VmHWM |\n|---|---:|---:|")?;
    let busy_state = format!("after 2 x {VOLUMES} sequential publish/unpublish");
    let worst = starts.iter().map(|s| s.rss).max().unwrap_or(0);
    let worst_hwm = starts.iter().map(|s| s.hwm).max().unwrap_or(0);
    let worst_state = format!("tracking {REBUILD} attached volumes (worst of {STARTS} starts)");
    for (state, memory) in [
        ("idle after start (nothing attached)", *idle_kib),
        (busy_state.as_str(), *busy_kib),
        (worst_state.as_str(), (worst, worst_hwm)),
    ] {
        writeln!(out, "{}", memory_row(state, memory))?;
    }
    for s in starts {
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
    writeln!(out, "{}", total_time(*bench_start))?;
    Ok(out)
}
