//! The orphan sweep at start and the periodic scans.

use super::*;

#[tokio::test]
async fn orphan_cleanup_disconnects_only_what_nothing_accounts_for() {
    let e = env();
    let p = "nqn.2000-02.com.mikrotik:";
    // Staged through the service: recorded, kept.
    e.stage_fs().await;
    // Someone else's subsystem: never considered.
    e.f.connect_now("nqn.2014-08.org.example:root-disk");
    // Under the prefix, nothing knows it: an orphan.
    e.f.connect_now(&format!("{p}pvc-orphan"));
    // Under the prefix, mounted somewhere: kept.
    e.f.connect_now(&format!("{p}pvc-mounted"));
    let d = e.f.device(&format!("{p}pvc-mounted")).unwrap().1;
    e.f.add_mount(d, Path::new("/mnt/x"), "ext4", "/dev/x");
    // Under the prefix, published as a device node under kubelet: kept.
    e.f.connect_now(&format!("{p}pvc-vm"));
    let d = e.f.device(&format!("{p}pvc-vm")).unwrap().1;
    e.f.put_device_node(
        Path::new("/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-vm/pod"),
        d,
    );
    // Under the prefix, recorded but its staging path is gone: an orphan.
    e.f.connect_now(&format!("{p}pvc-gone"));
    e.f.write(
        &Path::new(STATE).join("pvc-gone.json"),
        &serde_json::to_string(&VolumeRecord {
            volume_id: "pvc-gone".into(),
            nqn: format!("{p}pvc-gone"),
            address: "10.0.0.1".into(),
            port: 4420,
            ctrl_loss_tmo: 600,
            reconnect_delay: 5,
            keep_alive_tmo: 5,
            staging_path: "/var/lib/kubelet/plugins/gone/globalmount".into(),
            block: false,
            fs_type: Some("ext4".into()),
            mount_flags: vec![],
            formatted_here: false,
            filesystem_seen: true,
            targets: Default::default(),
            pvc: None,
        })
        .unwrap(),
    );
    e.f.clear_calls();
    let r = e.clean(OrphanCleanup::Disconnect).await;
    let mut orphans = r.orphans.clone();
    orphans.sort();
    assert_eq!(
        orphans,
        vec![format!("{p}pvc-gone"), format!("{p}pvc-orphan")]
    );
    assert_eq!(r.disconnected.len(), 2);
    assert_eq!(r.kept.len(), 3, "{:?}", r.kept);
    assert!(e.f.is_connected("nqn.2014-08.org.example:root-disk"));
    assert!(e.f.is_connected(NQN));
    assert!(e.f.is_connected(&format!("{p}pvc-mounted")));
    assert!(e.f.is_connected(&format!("{p}pvc-vm")));
    assert!(!e.f.is_connected(&format!("{p}pvc-orphan")));
    assert!(!e.f.is_connected(&format!("{p}pvc-gone")));
    for c in e.f.commands() {
        let HostCommand::NvmeDisconnect { nqn } = c else {
            panic!("{c:?}")
        };
        assert!(nqn.starts_with(p));
    }
}

#[tokio::test]
async fn subsystems_of_another_volume_prefix_or_another_nqn_are_never_disconnected() {
    let e = env();
    // The driver's NQN prefix but a volume ID this installation never
    // makes (another cluster on the same RDS, a disk made by hand).
    let other = "nqn.2000-02.com.mikrotik:other-1";
    // A diskless node's NVMe-oF root disk.
    let root = "nqn.2014-08.org.nvmexpress:uuid:5f2ab2c1-0000-4000-8000-000000000001";
    e.f.connect_now(other);
    e.f.connect_now(root);
    let r = e.clean(OrphanCleanup::Disconnect).await;
    assert!(r.orphans.is_empty(), "{:?}", r.orphans);
    let mut suspects = HashSet::new();
    for _ in 0..3 {
        let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
        assert!(r.orphans.is_empty(), "{:?}", r.orphans);
    }
    // Nor does an unstage of such a volume ID disconnect it.
    let err = e
        .svc
        .node_unstage_volume(Request::new(proto::NodeUnstageVolumeRequest {
            volume_id: "other-1".into(),
            staging_target_path: STAGING.into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        !e.f.commands()
            .iter()
            .any(|c| matches!(c, HostCommand::NvmeDisconnect { .. })),
        "{:?}",
        e.f.commands()
    );
    assert!(e.f.is_connected(other));
    assert!(e.f.is_connected(root));
}

#[tokio::test]
async fn periodic_scans_disconnect_only_what_two_scans_in_a_row_found_orphaned() {
    let e = env();
    let p = "nqn.2000-02.com.mikrotik:";
    let orphan = format!("{p}pvc-orphan");
    let brief = format!("{p}pvc-brief");
    e.f.connect_now("nqn.2014-08.org.example:root-disk");
    e.f.connect_now(&orphan);
    e.f.connect_now(&brief);
    let mut suspects = HashSet::new();

    let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
    assert_eq!(r.orphans.len(), 2);
    assert_eq!(r.pending.len(), 2, "first sighting: nothing disconnected");
    assert!(r.disconnected.is_empty());
    assert!(e.f.commands().is_empty());

    // Between the scans `brief` gets mounted (a NodeStage finished): it is
    // no orphan any more and the second scan must leave it alone.
    let d = e.f.device(&brief).unwrap().1;
    e.f.add_mount(d, Path::new("/mnt/brief"), "ext4", "/dev/x");
    let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
    assert_eq!(r.disconnected, vec![orphan.clone()]);
    assert!(!e.f.is_connected(&orphan));
    assert!(e.f.is_connected(&brief));
    assert!(e.f.is_connected("nqn.2014-08.org.example:root-disk"));
    assert!(suspects.is_empty());
}

#[tokio::test]
async fn a_periodic_scan_skips_a_volume_with_an_rpc_in_flight_and_restarts_its_count() {
    let e = env();
    let nqn = "nqn.2000-02.com.mikrotik:pvc-busy";
    e.f.connect_now(nqn);
    let mut suspects = HashSet::new();
    e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
    assert!(suspects.contains(nqn));
    {
        let _busy = e.svc.inner.locks.try_lock("pvc-busy").unwrap();
        let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
        assert!(r.disconnected.is_empty());
        assert!(suspects.is_empty(), "kept: the count starts over");
    }
    let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
    assert!(
        r.disconnected.is_empty(),
        "one scan after the RPC is not enough"
    );
    let r = e.scan(OrphanCleanup::Disconnect, &mut suspects).await;
    assert_eq!(r.disconnected, vec![nqn.to_string()]);
}

#[tokio::test]
async fn periodic_scans_in_report_mode_never_disconnect() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    let mut suspects = HashSet::new();
    for _ in 0..3 {
        let r = e.scan(OrphanCleanup::Report, &mut suspects).await;
        assert_eq!(r.orphans.len(), 1);
    }
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn orphan_cleanup_in_report_mode_touches_nothing() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    let r = e.clean(OrphanCleanup::Report).await;
    assert_eq!(r.orphans.len(), 1);
    assert!(r.disconnected.is_empty());
    assert!(e.f.commands().is_empty());
    let r = e.clean(OrphanCleanup::Off).await;
    assert_eq!(r, OrphanReport::default());
}

#[tokio::test]
async fn orphan_cleanup_only_reports_when_the_records_cannot_be_read() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-orphan");
    // The state directory is not a directory.
    e.f.write(Path::new(STATE), "oops");
    let r = e.clean(OrphanCleanup::Disconnect).await;
    assert_eq!(r.orphans.len(), 1);
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn an_unreadable_record_still_claims_its_volume() {
    let e = env();
    e.f.connect_now(NQN);
    e.f.write(&Path::new(STATE).join("pvc-1.json"), "{");
    let r = e.clean(OrphanCleanup::Disconnect).await;
    assert!(r.orphans.is_empty());
    assert!(e.f.is_connected(NQN));
}
