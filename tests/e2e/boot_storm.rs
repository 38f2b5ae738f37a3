//! A VM pool's boot: many claims and pods at once, and what the driver
//! spent on them (the figure docs/benchmarks.md reports).

use crate::cluster::*;

/// The sum and count of an RPC's duration histogram.
fn rpc_time(scrape: &str, method: &str) -> (f64, f64) {
    (
        metric(
            scrape,
            &format!("rds_csi_rpc_duration_seconds_sum{{method=\"{method}\"}}"),
        ),
        metric(
            scrape,
            &format!("rds_csi_rpc_duration_seconds_count{{method=\"{method}\"}}"),
        ),
    )
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_boot_storm_of_20_claims_and_pods_all_attach() {
    const N: usize = 20;
    let s = Scenario::new("e2e-storm").await;
    let nodes = ["node-a", "node-b", "node-c"];
    let before = s.scrape().await;
    let start = Instant::now();
    // As a VM pool's boot: all claims and pods at once; the scheduler
    // spreads them over the nodes.
    let mut tasks = vec![];
    for i in 0..N {
        let (name, node) = (format!("vm{i}"), nodes[i % nodes.len()]);
        let s = &s;
        tasks.push(async move {
            s.claim(&name, EXT4, Mode::Filesystem, false).await;
            s.pod(&name, node, &[(&name, Mode::Filesystem)], json!({}))
                .await;
            s.select_node(&name, node).await;
        });
    }
    futures::future::join_all(tasks).await;
    let mut pvs = vec![];
    for i in 0..N {
        pvs.push((s.bound(&format!("vm{i}")).await, nodes[i % nodes.len()]));
    }
    let bound = start.elapsed();
    for (pv, node) in &pvs {
        s.wait_attached(pv, node).await;
    }
    let attached = start.elapsed();
    let after = s.scrape().await;
    let mut driver = 0.0;
    let mut calls = 0.0;
    for method in ["CreateVolume", "ControllerPublishVolume"] {
        let (sum0, n0) = rpc_time(&before, method);
        let (sum1, n1) = rpc_time(&after, method);
        driver += sum1 - sum0;
        calls += n1 - n0;
    }
    println!(
        "BOOT STORM: {N} claims and pods: all bound after {:.2}s, all attached after {:.2}s; \
         the driver spent {:.3}s in {calls} CreateVolume/ControllerPublishVolume calls \
         ({:.1} ms each on average)",
        bound.as_secs_f64(),
        attached.as_secs_f64(),
        driver,
        driver * 1000.0 / calls.max(1.0)
    );
    assert!(calls >= 2.0 * N as f64, "every claim created and published");
    s.cleanup().await;
}
