//! Orphan volumes against a real API server and the simulator: what is
//! reported, what is deleted, and that a cluster only ever deletes its own.

use routeros::{ClusterId, DiskComment};

use crate::world::*;

impl World {
    /// A disk made behind the driver's back (as a crashed provisioner run
    /// or a person would leave it) with the given comment.
    async fn backend_disk(&self, slot: &str, comment: DiskComment) {
        let client = routeros::Client::new(
            routeros::ClientConfig::new(
                self.sim.addr().to_string(),
                "csi",
                routeros::HostKeyPolicy::Pinned(self.sim.host_key_fingerprint()),
            ),
            routeros::load_key(&self.key_file).unwrap(),
            None,
        );
        let s = routeros::Slot::new(slot).unwrap();
        routeros::Rds::new(client.clone())
            .create_disk(&routeros::NewDisk {
                file: routeros::RosPath::new(&format!("/storage-pool/metal-csi/{slot}.img"))
                    .unwrap(),
                size_bytes: 1 << 20,
                port: 4420,
                nqn: routeros::Nqn::for_volume("nqn.2000-02.com.mikrotik:", &s).unwrap(),
                slot: s,
                comment,
            })
            .await
            .unwrap();
        client.close().await;
    }

    fn has_disk(&self, slot: &str) -> bool {
        self.sim.disks().iter().any(|d| d.slot == slot)
    }

    /// The disk's comment as the simulator stores it.
    fn comment(&self, slot: &str) -> String {
        self.sim
            .disks()
            .into_iter()
            .find(|d| d.slot == slot)
            .map(|d| d.comment)
            .unwrap_or_else(|| panic!("no disk {slot}"))
    }

    async fn wait_comment(&self, slot: &str, what: &str, holds: impl Fn(&str) -> bool) {
        eventually(
            &format!("comment of {slot}: {what}"),
            Duration::from_secs(20),
            || async { holds(&self.comment(slot)).then_some(()) },
        )
        .await;
    }

    async fn orphan_gauge_is(&self, volumes: f64) {
        eventually(
            &format!("rds_csi_orphan_volumes == {volumes}"),
            Duration::from_secs(20),
            || async {
                (metric(&self.scrape(), "rds_csi_orphan_volumes") == volumes).then_some(())
            },
        )
        .await;
    }

    async fn kube_system_uid(&self) -> String {
        Api::<Namespace>::all(self.client.clone())
            .get("kube-system")
            .await
            .unwrap()
            .metadata
            .uid
            .unwrap()
    }
}

/// CreateVolume as the external-provisioner calls it (no PV made).
async fn create_via(csi: &mut ControllerClient<Channel>, id: &str) {
    csi.create_volume(testkit::csi::create_volume(id, GIB, cap(false), &[]))
        .await
        .unwrap();
}

fn made(hours: i64, cluster: Option<&str>) -> DiskComment {
    DiskComment::created(
        jiff::Timestamp::now() - jiff::SignedDuration::from_hours(hours),
        cluster.map(|c| ClusterId::new(c).unwrap()),
    )
}

fn by_reason(scrape: &str, reason: &str) -> f64 {
    metric(
        scrape,
        &format!("rds_csi_orphan_volumes_by_reason{{reason=\"{reason}\"}}"),
    )
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn orphans_are_reported_by_reason_and_only_this_clusters_are_deleted() {
    let mut w = World::new("orphans", &[]).await;
    // No --cluster-id: the cluster is the kube-system namespace's UID.
    let uid = w.kube_system_uid().await;
    let own = format!("pvc-{}-own", w.name);
    let by_hand = format!("pvc-{}-by-hand", w.name);
    let older = format!("pvc-{}-older-version", w.name);
    w.backend_disk(&own, made(2, Some(&uid))).await;
    w.backend_disk(&by_hand, DiskComment::default()).await;
    w.backend_disk(&older, made(2, None)).await;
    w.sim
        .add_file("storage-pool/metal-csi/leftover.img", 1 << 20);

    // Report-only (the default): reported on every sweep, never deleted.
    w.start_controller_with(&kubeconfig(), &["--orphan-reconcile-interval", "300ms"])
        .await;
    let bound = w.volume("bound", false).await;
    assert!(
        w.comment(&bound).contains(&format!("cluster={uid}")),
        "CreateVolume writes the cluster identity: {:?}",
        w.comment(&bound)
    );
    w.orphan_gauge_is(3.0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let m = w.scrape();
    assert_eq!(metric(&m, "rds_csi_orphan_volumes"), 3.0, "{m}");
    assert_eq!(by_reason(&m, "own"), 1.0, "{m}");
    assert_eq!(by_reason(&m, "no-identity"), 2.0, "{m}");
    assert_eq!(metric(&m, "rds_csi_orphan_files"), 1.0, "{m}");
    assert_eq!(metric(&m, "rds_csi_orphan_deleted_total"), 0.0, "{m}");
    for d in [&own, &by_hand, &older, &bound] {
        assert!(w.has_disk(d), "{d} must survive report-only sweeps");
    }
    assert!(
        w.comment(&own).contains("orphaned-since="),
        "report-only sweeps mark too: {:?}",
        w.comment(&own)
    );
    assert!(!w.comment(&bound).contains("orphaned-since="));
    assert_eq!(w.comment(&by_hand), "", "not ours to mark");
    w.wait_event(CONTROLLER_POD, "OrphanVolumes").await;
    w.wait_event(CONTROLLER_POD, "UnownedOrphanVolumes").await;
    w.wait_event(CONTROLLER_POD, "OrphanFiles").await;
    w.kill_controller();

    // Deletion on, sweeps 3s apart: the first sweep after the restart only
    // notes the orphan; the mark written before the restart still counts.
    w.start_controller_with(
        &kubeconfig(),
        &[
            "--orphan-reconcile-interval",
            "3s",
            "--orphan-delete=true",
            "--orphan-grace-period",
            "2s",
        ],
    )
    .await;
    w.orphan_gauge_is(3.0).await;
    assert!(w.has_disk(&own), "one sweep is never enough");
    w.orphan_gauge_is(2.0).await;
    assert!(!w.has_disk(&own), "own orphan deleted on the second sweep");
    assert!(
        !w.sim
            .files()
            .iter()
            .any(|(f, _)| f.ends_with(&format!("{own}.img"))),
        "with its backing file"
    );
    for d in [&by_hand, &older, &bound] {
        assert!(w.has_disk(d), "{d} must never be deleted");
    }
    assert!(
        w.sim
            .files()
            .iter()
            .any(|(f, _)| f.ends_with("leftover.img")),
        "orphan files are only reported"
    );
    assert_eq!(metric(&w.scrape(), "rds_csi_orphan_deleted_total"), 1.0);
    w.wait_event(CONTROLLER_POD, "OrphanVolumeDeleted").await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_pv_created_between_two_sweeps_saves_its_volume_and_clears_its_mark() {
    let mut w = World::new("orphan-race", &[]).await;
    let vol = format!("pvc-{}-late-pv", w.name);
    w.backend_disk(&vol, made(2, Some("tier3-own"))).await;
    w.start_controller_with(
        &kubeconfig(),
        &[
            "--cluster-id",
            "tier3-own",
            "--orphan-reconcile-interval",
            "3s",
            "--orphan-delete=true",
            "--orphan-grace-period",
            "1s",
        ],
    )
    .await;
    // The first sweep saw it orphaned and marked it; the provisioner
    // creates its PV before the second.
    w.orphan_gauge_is(1.0).await;
    assert!(w.comment(&vol).contains("orphaned-since="));
    w.pv_for(&vol).await;
    w.orphan_gauge_is(0.0).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(w.has_disk(&vol));
    assert!(
        !w.comment(&vol).contains("orphaned-since="),
        "the mark is cleared: {:?}",
        w.comment(&vol)
    );
    assert_eq!(metric(&w.scrape(), "rds_csi_orphan_deleted_total"), 0.0);
    w.cleanup().await;
}

/// Two clusters on one RDS, same prefix, both deleting orphans with short
/// intervals: each sees the other's volumes without a PV of its own (A's
/// PVs are for driver A, B's for driver B), and neither deletes them, not
/// even while the other is down. Each still deletes its own true orphan,
/// and a volume whose PV had reclaim policy Retain outlives its PV.
#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn two_clusters_sharing_one_rds_never_delete_each_others_volumes() {
    let mut w = World::new("clusters", &[]).await;
    let fast = [
        "--orphan-delete=true",
        "--orphan-reconcile-interval",
        "500ms",
        "--orphan-grace-period",
        "1s",
    ];
    let a_args: Vec<&str> = ["--cluster-id", "tier3-a"]
        .into_iter()
        .chain(fast)
        .collect();
    w.start_with(&a_args).await;
    let driver_b = format!("b.{}", w.driver());
    let b_args: Vec<&str> = ["--cluster-id", "tier3-b"]
        .into_iter()
        .chain(fast)
        .collect();
    // Killed when the test ends (its drop).
    let mut b = w
        .spawn_controller(&driver_b, "controller-b.log", &kubeconfig(), &b_args)
        .await;
    let b_log_path = w.dir.path().join("controller-b.log");
    let b_log = || std::fs::read_to_string(&b_log_path).unwrap_or_default();

    let name = w.name.clone();
    let id = |s: &str| format!("pvc-{name}-{s}");
    // A: one bound, one kept by a Retain PV, one true orphan.
    let a_bound = w.volume("a-bound", false).await;
    let a_kept = id("a-kept");
    create_via(w.csi(), &a_kept).await;
    w.create_pv(&a_kept, &w.driver(), &a_kept, "Retain").await;
    let a_orphan = id("a-orphan");
    create_via(w.csi(), &a_orphan).await;
    // B: one bound (its PV names driver B), one true orphan.
    let b_bound = id("b-bound");
    create_via(&mut b.csi, &b_bound).await;
    w.create_pv(&b_bound, &driver_b, &b_bound, "Delete").await;
    let b_orphan = id("b-orphan");
    create_via(&mut b.csi, &b_orphan).await;
    assert!(w.comment(&a_bound).contains("cluster=tier3-a"));
    assert!(w.comment(&b_bound).contains("cluster=tier3-b"));

    // The Retain policy is written on the disk while the PV exists; then
    // the PV goes, as an operator deleting a Retain PV leaves it.
    w.wait_comment(&a_kept, "retain=yes", |c| c.contains("retain=yes"))
        .await;
    w.delete_pv(&a_kept).await;

    eventually(
        "both true orphans deleted",
        Duration::from_secs(20),
        || async { (!w.has_disk(&a_orphan) && !w.has_disk(&b_orphan)).then_some(()) },
    )
    .await;
    // Many more sweeps of both.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for d in [&a_bound, &a_kept, &b_bound] {
        assert!(w.has_disk(d), "{d} deleted; A: {}\nB: {}", w.log(), b_log());
    }
    assert!(!w.comment(&a_kept).contains("orphaned-since="));
    let (ma, mb) = (w.scrape(), testkit::metrics::scrape(b.metrics_port));
    assert_eq!(metric(&ma, "rds_csi_orphan_deleted_total"), 1.0, "{ma}");
    assert_eq!(metric(&mb, "rds_csi_orphan_deleted_total"), 1.0, "{mb}");
    assert_eq!(
        metric(&ma, "rds_csi_foreign_volumes"),
        1.0,
        "A sees b-bound: {ma}"
    );
    assert_eq!(
        metric(&mb, "rds_csi_foreign_volumes"),
        2.0,
        "B sees a-bound and a-kept: {mb}"
    );
    assert_eq!(by_reason(&ma, "retained"), 1.0, "{ma}");
    assert_eq!(metric(&ma, "rds_csi_orphan_volumes"), 1.0, "{ma}");
    assert_eq!(metric(&mb, "rds_csi_orphan_volumes"), 0.0, "{mb}");
    w.wait_event(CONTROLLER_POD, "RetainedOrphanVolumes").await;

    // Cluster B down (nobody there to clear a mark): A sweeps on and still
    // neither marks nor deletes B's volume.
    drop(b);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(w.has_disk(&b_bound), "{}", w.log());
    assert!(
        !w.comment(&b_bound).contains("orphaned-since="),
        "another cluster's disk is never marked: {:?}",
        w.comment(&b_bound)
    );
    w.cleanup().await;
}
