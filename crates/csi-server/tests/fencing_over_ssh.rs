//! Fencing at the RDS (`--rds-fencing`) against the simulator over real
//! SSH: the simulator enforces what the driver assumes of RouterOS's
//! `nvme-tcp-server-allow-host-name` (a list of host NQNs, empty = any
//! host; a change leaves open sessions; an export toggle drops them), so
//! each assertion reads the disk as RouterOS would show it.

mod ssh_env;

use attachment_manager::NodeStatus;
use csi_server::proto;
use csi_server::proto::volume_capability::access_mode::Mode;
use rds_sim::{PoolFs, Storage};
use ssh_env::*;
use tonic::Code;

fn host(node: &str) -> String {
    format!("nqn.2014-08.org.example:{node}")
}

async fn fenced() -> Env {
    env_with(Storage::Memory, PoolFs::Btrfs, true).await
}

impl Env {
    /// The disk's allow-list and how often its sessions were cut.
    fn access(&self, volume: &str) -> (String, u64) {
        let d = self
            .sim
            .disks()
            .into_iter()
            .find(|d| d.slot == volume)
            .expect("the disk");
        (d.allow_host, d.export_cuts)
    }

    async fn block_volume(&self, name: &str) {
        let req = proto::CreateVolumeRequest {
            name: name.into(),
            capacity_range: at_least(GIB),
            volume_capabilities: vec![block_rwx()],
            ..Default::default()
        };
        self.client.clone().create_volume(req).await.unwrap();
    }
}

fn block_rwx() -> proto::VolumeCapability {
    testkit::csi::block(Mode::MultiNodeMultiWriter)
}

#[tokio::test]
async fn a_forced_release_moves_the_allow_list_and_cuts_the_old_host() {
    let e = fenced().await;
    let commands = e.commands_of(e.create("pvc-f", GIB)).await;
    assert_eq!(commands, 4, "lookup, add, and the list (lookup, set)");
    let (list, _) = e.access("pvc-f");
    assert!(
        !list.is_empty() && !list.contains("example"),
        "a new volume admits no host: {list:?}"
    );

    let commands = e.commands_of(e.publish("pvc-f", "node-a", cap())).await;
    assert_eq!(e.access("pvc-f"), (host("node-a"), 0));
    assert_eq!(commands, 3, "lookup, then the list: lookup and set");

    // node-a is declared out of service while still connected: the next
    // publish releases it without an unpublish of its own.
    e.nodes.set("node-a", NodeStatus::OutOfService);
    let commands = e.commands_of(e.publish("pvc-f", "node-b", cap())).await;
    assert_eq!(
        commands, 6,
        "lookup, the list (2), the cut (lookup, off, on)"
    );
    assert_eq!(
        e.access("pvc-f"),
        (host("node-b"), 1),
        "only node-b admitted, node-a's sessions cut once"
    );
    // A repeat publish changes nothing and cuts nothing.
    let commands = e.commands_of(e.publish("pvc-f", "node-b", cap())).await;
    assert_eq!(e.access("pvc-f"), (host("node-b"), 1));
    assert_eq!(commands, 1, "one lookup");
}

#[tokio::test]
async fn an_unpublish_with_nobody_left_fences_everyone_out_and_cuts() {
    let e = fenced().await;
    e.create("pvc-u", GIB).await.unwrap();
    e.publish("pvc-u", "node-a", cap()).await.unwrap();
    let commands = e.commands_of(e.unpublish("pvc-u", "node-a")).await;
    assert_eq!(commands, 6, "lookup, the list (2), the cut (3)");
    let (list, cuts) = e.access("pvc-u");
    assert!(!list.contains("example"), "nobody admitted: {list:?}");
    assert_eq!(cuts, 1);
    let d = e
        .sim
        .disks()
        .into_iter()
        .find(|d| d.slot == "pvc-u")
        .unwrap();
    assert!(d.export, "the cut leaves the disk exported");
    // The sidecar's retry is a success and leaves the list as it is.
    e.unpublish("pvc-u", "node-a").await.unwrap();
    assert_eq!(e.access("pvc-u").0, list);
}

#[tokio::test]
async fn a_migration_window_admits_both_hosts_and_its_end_removes_the_leaver_without_a_cut() {
    let e = fenced().await;
    e.block_volume("pvc-m").await;
    e.publish("pvc-m", "node-a", block_rwx()).await.unwrap();
    e.publish("pvc-m", "node-b", block_rwx()).await.unwrap();
    let (list, cuts) = e.access("pvc-m");
    let mut admitted: Vec<&str> = list.split(',').collect();
    admitted.sort();
    assert_eq!(admitted, [host("node-a"), host("node-b")]);
    assert_eq!(cuts, 0);
    e.unpublish("pvc-m", "node-a").await.unwrap();
    assert_eq!(
        e.access("pvc-m"),
        (host("node-b"), 0),
        "node-b keeps its session"
    );
}

#[tokio::test]
async fn an_unreachable_rds_fails_the_publish_instead_of_skipping_the_fence() {
    // (A failure of the allow-list write alone, after the lookup answered,
    // is the controller's unit test `a_failed_fence_fails_the_publish_...`.)
    let e = fenced().await;
    e.create("pvc-x", GIB).await.unwrap();
    e.sim.faults().refuse_connections(true);
    let err = e.publish("pvc-x", "node-a", cap()).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded),
        "{err:?}"
    );
    assert!(!e.access("pvc-x").0.contains("example"), "nobody admitted");
    e.sim.faults().refuse_connections(false);
    while_unavailable(|| e.publish("pvc-x", "node-a", cap())).await;
    assert_eq!(e.access("pvc-x").0, host("node-a"));
}
