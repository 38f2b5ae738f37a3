//! The nvmet scripts through a real `sh` on a plain directory standing in
//! for configfs (see `common`): quoting, idempotence, the order of steps
//! and what a retry after a half-done step finds.

mod common;

use std::fs;
use std::sync::Arc;

use common::StandIn;
use linux_target::{Nqn, VolumeName};

const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";

fn vol() -> VolumeName {
    VolumeName::new("pvc-1").unwrap()
}

fn host(s: &str) -> Nqn {
    Nqn::new(&format!("nqn.2014-08.org.nvmexpress:uuid:{s}")).unwrap()
}

#[tokio::test]
async fn an_export_is_locked_to_its_hosts_on_the_port_and_a_second_export_changes_nothing() {
    let s = StandIn::new();
    let dev = s.block_device("pvc-1");
    let t = s.target(Arc::new(s.shell()));
    let e = t.export(&vol(), &[host("a")]).await.unwrap();
    assert_eq!(e.allowed_hosts, [host("a").to_string()]);
    assert!(!e.any_host && e.on_port);
    assert_eq!(e.device_path.as_deref(), Some(dev.to_str().unwrap()));

    let sub = format!("subsystems/{NQN}");
    assert_eq!(s.read(&format!("{sub}/attr_allow_any_host")), "0");
    assert_eq!(s.read(&format!("{sub}/namespaces/1/enable")), "1");
    assert_eq!(s.read("ports/1/addr_trtype"), "tcp");
    assert_eq!(s.read("ports/1/addr_adrfam"), "ipv4");
    assert_eq!(s.read("ports/1/addr_traddr"), "127.0.0.1");
    assert_eq!(s.read("ports/1/addr_trsvcid"), "4420");
    assert_eq!(
        s.link(&format!("ports/1/subsystems/{NQN}")),
        Some(s.root().join(&sub))
    );
    let admitted = s
        .link(&format!("{sub}/allowed_hosts/{}", host("a")))
        .unwrap();
    assert_eq!(admitted, s.root().join(format!("hosts/{}", host("a"))));

    let again = t.export(&vol(), &[host("a")]).await.unwrap();
    assert_eq!(again, e);
    assert_eq!(t.list_exports().await.unwrap(), vec![e]);
}

#[tokio::test]
async fn hosts_are_added_and_removed_one_at_a_time_and_a_fence_leaves_the_export_reachable() {
    let s = StandIn::new();
    s.block_device("pvc-1");
    let t = s.target(Arc::new(s.shell()));
    t.export(&vol(), &[host("a")]).await.unwrap();
    let e = t.allow_host(&vol(), &host("b")).await.unwrap();
    assert_eq!(
        e.allowed_hosts,
        [host("a").to_string(), host("b").to_string()]
    );
    let e = t
        .revoke(&vol(), &[host("a")], false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.allowed_hosts, [host("b").to_string()]);
    // Removing a host that is not there, and cutting: still exported, linked.
    let e = t.revoke(&vol(), &[host("a")], true).await.unwrap().unwrap();
    assert_eq!(e.allowed_hosts, [host("b").to_string()]);
    assert!(e.on_port);
    // The host entry stays for other subsystems.
    assert!(s.exists(&format!("hosts/{}", host("a"))));
}

#[tokio::test]
async fn a_retry_completes_an_export_or_a_cut_that_stopped_half_way() {
    let s = StandIn::new();
    s.block_device("pvc-1");
    let t = s.target(Arc::new(s.shell()));
    t.export(&vol(), &[host("a")]).await.unwrap();
    // A cut that unlinked the port and was lost before it linked back.
    fs::remove_file(s.root().join(format!("ports/1/subsystems/{NQN}"))).unwrap();
    assert!(!t.export_state(&vol()).await.unwrap().unwrap().on_port);
    assert!(t.revoke(&vol(), &[], true).await.unwrap().unwrap().on_port);
    // An export that stopped before enabling the namespace and linking.
    fs::remove_file(s.root().join(format!("ports/1/subsystems/{NQN}"))).unwrap();
    fs::write(
        s.root()
            .join(format!("subsystems/{NQN}/namespaces/1/enable")),
        "0",
    )
    .unwrap();
    let e = t.export(&vol(), &[host("a")]).await.unwrap();
    assert!(e.on_port && e.device_path.is_some());
}

#[tokio::test]
async fn an_export_never_rewrites_a_port_in_use_or_a_namespace_on_another_device() {
    let s = StandIn::new();
    s.block_device("pvc-1");
    s.block_device("pvc-2");
    let t = s.target(Arc::new(s.shell()));
    t.export(&vol(), &[]).await.unwrap();
    fs::write(s.root().join("ports/1/addr_trsvcid"), "4421\n").unwrap();
    let e = t
        .export(&VolumeName::new("pvc-2").unwrap(), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert!(
        e.to_string().contains("in use with addr_trsvcid=4421"),
        "{e}"
    );
    fs::write(s.root().join("ports/1/addr_trsvcid"), "4420\n").unwrap();

    let ns = s
        .root()
        .join(format!("subsystems/{NQN}/namespaces/1/device_path"));
    fs::write(&ns, "/dev/elsewhere\n").unwrap();
    let e = t.export(&vol(), &[]).await.unwrap_err();
    assert!(e.to_string().contains("enabled on /dev/elsewhere"), "{e}");
}

#[tokio::test]
async fn unexporting_removes_everything_of_the_volume_and_twice_is_fine() {
    let s = StandIn::new();
    s.block_device("pvc-1");
    s.block_device("pvc-2");
    let t = s.target(Arc::new(s.shell()));
    t.export(&vol(), &[host("a"), host("b")]).await.unwrap();
    t.export(&VolumeName::new("pvc-2").unwrap(), &[host("a")])
        .await
        .unwrap();
    t.unexport(&vol()).await.unwrap();
    assert!(!s.exists(&format!("subsystems/{NQN}")));
    assert!(!s.exists(&format!("ports/1/subsystems/{NQN}")));
    assert_eq!(t.export_state(&vol()).await.unwrap(), None);
    t.unexport(&vol()).await.unwrap();
    let left = t.list_exports().await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].nqn, "nqn.2000-02.com.mikrotik:pvc-2");
}

#[tokio::test]
async fn a_volume_whose_device_is_missing_is_not_exported() {
    let s = StandIn::new();
    // No device node, and no lvchange that could make one appear.
    let e = s
        .target(Arc::new(s.shell()))
        .export(&vol(), &[])
        .await
        .unwrap_err();
    // lvchange fails: no such volume group here, or no lvm2 at all.
    assert_eq!(e.kind(), "failed", "{e}");
    assert!(!s.exists(&format!("subsystems/{NQN}")));
}

#[tokio::test]
async fn a_host_without_the_nvmet_tree_is_a_failure_not_an_absent_export() {
    let s = StandIn::new();
    fs::remove_dir_all(s.root()).unwrap();
    let e = s
        .target(Arc::new(s.shell()))
        .export_state(&vol())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert!(e.to_string().contains("is the nvmet module loaded"), "{e}");
}

#[tokio::test]
async fn an_exact_export_admits_only_the_hosts_given_and_remakes_a_lost_export() {
    let s = StandIn::new();
    s.block_device("pvc-1");
    let t = s.target(Arc::new(s.shell()));
    t.export(&vol(), &[host("a"), host("b")]).await.unwrap();
    let e = t.export_exactly(&vol(), &[host("b")]).await.unwrap();
    assert_eq!(e.allowed_hosts, [host("b").to_string()]);
    assert!(e.on_port && !e.any_host);
    let e = t.export_exactly(&vol(), &[]).await.unwrap();
    assert!(e.allowed_hosts.is_empty(), "{e:?}");
    assert!(e.on_port, "a volume admitting no host stays exported");
    // configfs emptied (a reboot of the host): the export is made anew.
    t.unexport(&vol()).await.unwrap();
    let e = t.export_exactly(&vol(), &[host("a")]).await.unwrap();
    assert_eq!(e.allowed_hosts, [host("a").to_string()]);
    assert!(e.on_port && e.device_path.is_some());
    // The host entries themselves stay for other subsystems.
    assert!(s.exists(&format!("hosts/{}", host("b"))));
}
