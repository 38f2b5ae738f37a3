//! Fencing benchmark: what fencing at the RDS (`--rds-fencing`) adds to
//! CreateVolume, ControllerPublish and ControllerUnpublish, in time and in
//! RouterOS commands, against the simulator over real SSH with latency
//! injected per command (as a real RDS answers in milliseconds).
//!
//!     cargo bench --bench fencing
//!
//! Two standalone controllers (with and without fencing) take the same
//! sequence per volume: create, publish to node A, a second publish to A
//! (the sidecar's repeat), unpublish A (the last holder: the fence cuts),
//! publish to node B (a handoff). Markdown on stdout; see
//! docs/benchmarks.md.

use std::time::{Duration, Instant};

use csi_server::proto;
use rds_sim::SimHandle;

// Shared with the other benchmarks; this one uses a part.
#[allow(dead_code)]
#[path = "support/standalone.rs"]
mod standalone;
#[allow(dead_code)]
mod support;
use standalone::{Client, Controller, PREFIX};
use support::{capability, ms, percentile, start_sim, BoxResult, GIB};

/// Volumes per controller.
const N: usize = 20;
/// Latency injected per RouterOS command.
const LATENCY: Duration = Duration::from_millis(20);

const STEPS: [&str; 5] = [
    "CreateVolume",
    "ControllerPublish (new holder)",
    "ControllerPublish (repeat)",
    "ControllerUnpublish (last holder)",
    "ControllerPublish (next node)",
];

fn host(node: &str) -> String {
    format!("nqn.2014-08.org.example:{node}")
}

/// Runs `rpc`, returning its time and the RouterOS commands it sent.
async fn timed<F, Fut, T>(sim: &SimHandle, rpc: F) -> (Duration, u64)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<T, tonic::Status>>,
{
    sim.reset_stats();
    let t = Instant::now();
    if let Err(s) = rpc().await {
        panic!("{s}");
    }
    (t.elapsed(), sim.stats().commands)
}

async fn publish(mut c: Client, vol: String, node: &str) -> Result<(), tonic::Status> {
    let req = proto::ControllerPublishVolumeRequest {
        volume_id: vol,
        node_id: node.into(),
        volume_capability: Some(capability()),
        ..Default::default()
    };
    c.controller_publish_volume(req).await.map(drop)
}

async fn unpublish(mut c: Client, vol: String, node: &str) -> Result<(), tonic::Status> {
    let req = proto::ControllerUnpublishVolumeRequest {
        volume_id: vol,
        node_id: node.into(),
        ..Default::default()
    };
    c.controller_unpublish_volume(req).await.map(drop)
}

/// Per step: the samples and the commands of the last run.
async fn run(client: &Client, sim: &SimHandle, tag: &str) -> Vec<(Vec<Duration>, u64)> {
    let mut steps = vec![(Vec::new(), 0); STEPS.len()];
    for i in 0..N {
        let vol = format!("{PREFIX}{tag}-{i}");
        let c = client.clone();
        let results = [
            timed(sim, || {
                let mut c = c.clone();
                let req = testkit::csi::create_volume(&vol, GIB, capability(), &[]);
                async move { c.create_volume(req).await }
            })
            .await,
            timed(sim, || publish(c.clone(), vol.clone(), "node-a")).await,
            timed(sim, || publish(c.clone(), vol.clone(), "node-a")).await,
            timed(sim, || unpublish(c.clone(), vol.clone(), "node-a")).await,
            timed(sim, || publish(c.clone(), vol.clone(), "node-b")).await,
        ];
        for (step, (t, cmds)) in steps.iter_mut().zip(results) {
            step.0.push(t);
            step.1 = cmds;
        }
    }
    steps
}

#[tokio::main]
async fn main() -> BoxResult<()> {
    let dir = tempfile::tempdir()?;
    let (sim, key) = start_sim(dir.path()).await?;
    let nodes = format!("--node=node-a={},node-b={}", host("node-a"), host("node-b"));
    let plain = Controller::start_with(
        dir.path(),
        "plain",
        &sim,
        &key,
        std::slice::from_ref(&nodes),
    )
    .await?;
    let fenced = Controller::start_with(
        dir.path(),
        "fenced",
        &sim,
        &key,
        &[nodes, "--rds-fencing=true".into()],
    )
    .await?;
    sim.faults().set_latency(LATENCY);
    eprintln!("without fencing");
    let without = run(&plain.client, &sim, "p").await;
    eprintln!("with fencing");
    let with = run(&fenced.client, &sim, "f").await;
    sim.faults().set_latency(Duration::ZERO);
    sim.shutdown().await;

    println!(
        "### Fencing at the RDS: cost per RPC ({} ms per RouterOS command, {N} volumes, sequential)\n",
        LATENCY.as_millis()
    );
    println!("| RPC | without: p50 | commands | with `--rds-fencing`: p50 | p95 | commands |");
    println!("|---|---|---|---|---|---|");
    for (i, name) in STEPS.iter().enumerate() {
        let (a, ac) = &without[i];
        let (b, bc) = &with[i];
        println!(
            "| {name} | {} | {ac} | {} | {} | {bc} |",
            ms(percentile(a, 0.5)),
            ms(percentile(b, 0.5)),
            ms(percentile(b, 0.95)),
        );
    }
    Ok(())
}
