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
//!
//! The modules follow the run: `setup` makes the objects, `publish` times
//! publish/unpublish (and the bare PV patch under it), `rebuild` times
//! controller starts, `metrics` and `memory` say where time and memory
//! went, `report` writes the tables.

use std::sync::Arc;
use std::time::{Duration, Instant};

use csi_server::proto::controller_client::ControllerClient;
use tonic::transport::Channel;

mod apiserver;
mod memory;
mod metrics;
mod publish;
mod rebuild;
mod report;
mod setup;
#[path = "../support/mod.rs"]
mod support;
mod world;

use apiserver::{api_get, cleanup, etcd_client_port, kube_client, ApiServer};
use publish::{in_phases, sequential};
use report::Results;
use support::{memory_kib, start_sim, BoxResult, BIN};
use world::World;

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

    let (sim, key) = start_sim(&dir).await?;
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
    let out = report::render(&result?)?;
    print!("{out}");
    Ok(())
}

async fn bench(w: &Arc<World>, bench_start: Instant) -> BoxResult<Results> {
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let nodes_took = setup::nodes(w).await?;

    // --- controller 1: idle, then 1,000 volumes ----------------------------
    let mut ctl = w.spawn("publish")?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = memory_kib(ctl.pid());

    eprintln!("creating {VOLUMES} volumes and their PVs");
    let volumes = setup::volumes(w, &ctl.csi).await?;
    let vols = &volumes.vols;

    // --- publish / unpublish ------------------------------------------------
    let mut runs = Vec::new();
    eprintln!("sequential, first publish of each volume");
    runs.push(sequential("sequential, first use of each volume", w, &ctl, vols).await?);
    eprintln!("sequential, second pass");
    runs.push(sequential("sequential, second pass", w, &ctl, vols).await?);
    let busy = memory_kib(ctl.pid());
    drop(ctl);
    // A fresh controller, so the concurrent run also starts cold (no PV
    // names cached).
    let mut ctl = w.spawn("publish-2")?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    for pass in ["first use of each volume", "second pass"] {
        eprintln!("{NODES} concurrent, {pass}");
        let label = format!("{NODES} concurrent, {pass}");
        runs.push(in_phases(&label, w, Some(&ctl), vols, NODES).await?);
    }
    drop(ctl);
    // Diagnostic: the same with as many SSH channels as tasks.
    let mut ctl = w.spawn_with("publish-wide", &["--rds-max-sessions", "64"])?;
    ctl.rebuilt(Duration::from_secs(30)).await?;
    eprintln!("{NODES} concurrent with --rds-max-sessions 64");
    let label = format!("{NODES} concurrent, first use, `--rds-max-sessions 64` (diagnostic)");
    runs.push(in_phases(&label, w, Some(&ctl), vols, NODES).await?);
    drop(ctl);
    // The floor: the controller's PV patch alone, without the controller.
    eprintln!("bare PV merge-patches from this process, sequential and {NODES} concurrent");
    let floor = "bare PV merge-patch, no controller (floor)";
    runs.push(in_phases(&format!("{floor}, sequential"), w, None, vols, 1).await?);
    for pass in ["first", "second"] {
        let label = format!("{floor}, {NODES} concurrent, {pass} pass");
        runs.push(in_phases(&label, w, None, vols, NODES).await?);
    }

    // --- rebuild from REBUILD attachments --------------------------------
    eprintln!("creating {REBUILD} PVs and {REBUILD} attached VolumeAttachments");
    let rebuild_setup = setup::attached(w).await?;
    let pv_list_bytes = api_get(w, "/api/v1/persistentvolumes").await.len();
    let va_list_bytes = api_get(w, "/apis/storage.k8s.io/v1/volumeattachments")
        .await
        .len();
    let starts = rebuild::starts(w, vols).await?;

    Ok(Results {
        load,
        bench_start,
        nodes_took,
        create_took: volumes.create_took,
        pvs_took: volumes.pvs_took,
        runs,
        idle,
        busy,
        rebuild_setup,
        pv_list_bytes,
        va_list_bytes,
        starts,
    })
}
