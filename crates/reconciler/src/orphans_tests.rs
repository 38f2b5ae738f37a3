use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use prometheus::Registry;

use super::*;

const OURS: &str = "cluster-a";
const THEIRS: &str = "cluster-b";
const HOUR: Duration = Duration::from_secs(3600);

type Hook = Box<dyn FnOnce(&mut Vec<Disk>) + Send>;

#[derive(Default)]
struct FakeBackend {
    disks: Mutex<Vec<Disk>>,
    files: Mutex<Vec<FileEntry>>,
    deleted: Mutex<Vec<String>>,
    fail_comments: AtomicBool,
    /// Runs on the next fresh lookup of one disk (right before a delete).
    before_get: Mutex<Option<Hook>>,
}

impl FakeBackend {
    fn comment(&self, slot: &str) -> DiskComment {
        self.disks
            .lock()
            .unwrap()
            .iter()
            .find(|d| d.slot == slot)
            .map(|d| d.comment.clone())
            .expect("disk exists")
    }

    fn has(&self, slot: &str) -> bool {
        self.disks.lock().unwrap().iter().any(|d| d.slot == slot)
    }
}

impl OrphanBackend for FakeBackend {
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>> {
        let d = self.disks.lock().unwrap().clone();
        Box::pin(async move { Ok(d) })
    }
    fn get_disk<'a>(
        &'a self,
        slot: &'a str,
    ) -> BoxFuture<'a, Result<Option<Disk>, routeros::Error>> {
        let mut disks = self.disks.lock().unwrap();
        if let Some(hook) = self.before_get.lock().unwrap().take() {
            hook(&mut disks);
        }
        let d = disks.iter().find(|d| d.slot == slot).cloned();
        Box::pin(async move { Ok(d) })
    }
    fn files_under<'a>(
        &'a self,
        _: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>> {
        let f = self.files.lock().unwrap().clone();
        Box::pin(async move { Ok(f) })
    }
    fn set_comment<'a>(
        &'a self,
        slot: &'a str,
        comment: &'a DiskComment,
    ) -> BoxFuture<'a, Result<(), routeros::Error>> {
        let r = if self.fail_comments.load(Ordering::SeqCst) {
            Err(routeros::Error::Unreachable("connection lost".into()))
        } else {
            for d in self.disks.lock().unwrap().iter_mut() {
                if d.slot == slot {
                    d.comment = comment.clone();
                }
            }
            Ok(())
        };
        Box::pin(async move { r })
    }
    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>> {
        self.disks.lock().unwrap().retain(|d| d.slot != disk.slot);
        self.deleted.lock().unwrap().push(disk.slot.clone());
        Box::pin(async { Ok(()) })
    }
}

/// PVs by handle; `appear_on_call` adds a PV for `appear` when that many
/// lists have been made (to place a PV creation exactly inside a sweep).
#[derive(Default)]
struct FakePvs {
    handles: Arc<Mutex<PvHandles>>,
    calls: AtomicUsize,
    appear: Option<(usize, String)>,
    fail: Arc<AtomicBool>,
}

impl VolumeReferences for FakePvs {
    fn volume_handles(&self) -> BoxFuture<'_, Result<PvHandles, String>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, slot)) = &self.appear {
            if n == *at {
                self.handles
                    .lock()
                    .unwrap()
                    .insert(slot.clone(), Reclaim::Delete);
            }
        }
        let r = if self.fail.load(Ordering::SeqCst) {
            Err("apiserver down".to_string())
        } else {
            Ok(self.handles.lock().unwrap().clone())
        };
        Box::pin(async move { r })
    }
}

/// A disk as CreateVolume of `cluster` left it `age` ago; `None`: no
/// comment at all (made by hand).
fn disk(slot: &str, made: Option<(&str, Duration)>) -> Disk {
    let comment = match made {
        Some((cluster, age)) => DiskComment::created(
            Timestamp::now() - jiff::SignedDuration::try_from(age).unwrap(),
            Some(ClusterId::new(cluster).unwrap()),
        ),
        None => DiskComment::default(),
    };
    Disk {
        slot: slot.into(),
        file_path: Some(format!("/storage-pool/metal-csi/{slot}.img")),
        size_bytes: 1 << 30,
        nqn: None,
        port: None,
        exported: true,
        comment,
        status: None,
        allowed_hosts: None,
    }
}

fn file(name: &str, kind: &str) -> FileEntry {
    FileEntry {
        name: name.into(),
        size_bytes: Some(1),
        last_modified: None,
        kind: Some(kind.into()),
    }
}

/// A sweeper of cluster `OURS` whose clock the test moves.
struct Rig {
    s: OrphanSweeper<FakeBackend, FakePvs>,
    m: OrphanMetrics,
    b: Arc<FakeBackend>,
    pvs: Arc<Mutex<PvHandles>>,
    now: Arc<Mutex<Timestamp>>,
}

impl Rig {
    fn new(b: Arc<FakeBackend>, pvs: FakePvs, delete: bool) -> Rig {
        Rig::at(b, pvs, delete, Arc::new(Mutex::new(Timestamp::now())))
    }

    /// A sweeper reading the clock `now` (a restarted controller shares
    /// the world's time with the one before it).
    fn at(b: Arc<FakeBackend>, pvs: FakePvs, delete: bool, now: Arc<Mutex<Timestamp>>) -> Rig {
        let m = OrphanMetrics::register(&Registry::new()).unwrap();
        let handles = pvs.handles.clone();
        let mut s = OrphanSweeper::new(
            b.clone(),
            pvs,
            VolumeLocks::default(),
            RecentCreates::default(),
            OrphanConfig {
                interval: HOUR,
                delete,
                grace_period: HOUR,
                volume_prefix: SlotPrefix::new("pvc-").unwrap(),
                volume_path: RosPath::new("/storage-pool/metal-csi").unwrap(),
                cluster_id: ClusterId::new(OURS).unwrap(),
            },
            m.clone(),
            Box::new(LogOnly),
        );
        let clock = now.clone();
        s.clock = Box::new(move || *clock.lock().unwrap());
        Rig {
            s,
            m,
            b,
            pvs: handles,
            now,
        }
    }

    /// A rig that deletes, after a first sweep found the orphans and the
    /// grace period (one hour) passed twice over: the next sweep may delete.
    async fn past_grace(b: Arc<FakeBackend>, pvs: FakePvs) -> Rig {
        let rig = Rig::new(b, pvs, true);
        rig.sweep().await;
        rig.advance(2 * HOUR);
        rig
    }

    fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap();
        *now += jiff::SignedDuration::try_from(by).unwrap();
    }

    async fn sweep(&self) -> SweepResult {
        self.s.sweep().await.unwrap()
    }

    fn deleted(&self) -> Vec<String> {
        self.b.deleted.lock().unwrap().clone()
    }
}

fn backend(disks: Vec<Disk>) -> Arc<FakeBackend> {
    let b = Arc::new(FakeBackend::default());
    *b.disks.lock().unwrap() = disks;
    b
}

/// The usual world: a bound volume, an old orphan of ours, a young one, one
/// made by hand, one of another cluster, one outside the prefix, and files.
fn setup() -> Arc<FakeBackend> {
    let b = backend(vec![
        disk("pvc-bound", Some((OURS, 3 * HOUR))),
        disk("pvc-old", Some((OURS, 2 * HOUR))),
        disk("pvc-young", Some((OURS, HOUR / 2))),
        disk("pvc-by-hand", None),
        disk("pvc-theirs", Some((THEIRS, 5 * HOUR))),
        disk("other-volume", Some((OURS, 5 * HOUR))),
    ]);
    *b.files.lock().unwrap() = vec![
        file("storage-pool/metal-csi", "directory"),
        file("storage-pool/metal-csi/pvc-bound.img", ".img file"),
        file("storage-pool/metal-csi/pvc-old.img", ".img file"),
        file("storage-pool/metal-csi/other-volume.img", ".img file"),
        file("storage-pool/metal-csi/leftover.img", ".img file"),
    ];
    b
}

fn pvs(handles: &[(&str, Reclaim)]) -> FakePvs {
    FakePvs {
        handles: Arc::new(Mutex::new(
            handles.iter().map(|(s, r)| (s.to_string(), *r)).collect(),
        )),
        ..Default::default()
    }
}

fn bound() -> FakePvs {
    pvs(&[("pvc-bound", Reclaim::Delete)])
}

fn reasons(r: &SweepResult) -> Vec<(&str, OrphanReason)> {
    r.volumes
        .iter()
        .map(|v| (v.slot.as_str(), v.reason))
        .collect()
}

#[tokio::test]
async fn report_only_reports_with_reasons_and_never_deletes() {
    let rig = Rig::new(setup(), bound(), false);
    for _ in 0..3 {
        let r = rig.sweep().await;
        assert_eq!(
            reasons(&r),
            [
                ("pvc-by-hand", OrphanReason::NoIdentity),
                ("pvc-old", OrphanReason::Own),
                ("pvc-young", OrphanReason::Own),
            ]
        );
        assert_eq!(r.foreign, ["pvc-theirs"]);
        assert_eq!(r.files, ["storage-pool/metal-csi/leftover.img"]);
        assert!(r.deleted.is_empty());
        rig.advance(2 * HOUR);
    }
    assert!(rig.deleted().is_empty());
    assert_eq!(rig.m.volumes.get(), 3);
    assert_eq!(rig.m.by_reason.with_label_values(&["own"]).get(), 2);
    assert_eq!(rig.m.by_reason.with_label_values(&["no-identity"]).get(), 1);
    assert_eq!(rig.m.by_reason.with_label_values(&["retained"]).get(), 0);
    assert_eq!(rig.m.foreign.get(), 1);
    assert_eq!(rig.m.files.get(), 1);
    assert_eq!(rig.m.deleted.get(), 0);
    // The marks are written in report-only mode too.
    assert!(rig.b.comment("pvc-old").orphaned_since.is_some());
}

#[tokio::test]
async fn deletion_needs_two_sweeps_and_the_grace_period_since_first_found_orphaned() {
    let rig = Rig::new(setup(), bound(), true);
    let first_seen = *rig.now.lock().unwrap();
    let first = rig.sweep().await;
    assert!(first.deleted.is_empty(), "one sweep is never enough");
    assert_eq!(
        rig.b.comment("pvc-old").orphaned_since,
        Some(first_seen),
        "the first sweep that finds it orphaned marks the disk"
    );
    rig.advance(HOUR / 2);
    assert!(
        rig.sweep().await.deleted.is_empty(),
        "created 2h ago, but orphaned only 30 min: within the grace period"
    );
    rig.advance(HOUR);
    let r = rig.sweep().await;
    assert_eq!(r.deleted, ["pvc-old", "pvc-young"]);
    assert_eq!(rig.deleted(), ["pvc-old", "pvc-young"]);
    assert_eq!(rig.m.deleted.get(), 2);
    assert_eq!(rig.m.volumes.get(), 1, "the disk made by hand remains");
    // Files, disks made by hand and other clusters' disks never go.
    for _ in 0..3 {
        rig.advance(10 * HOUR);
        assert!(rig.sweep().await.deleted.is_empty());
    }
    assert_eq!(rig.deleted(), ["pvc-old", "pvc-young"]);
}

#[tokio::test]
async fn snapshots_are_never_orphans_even_when_the_volume_prefix_matches_them() {
    // A driver run with an empty volume prefix (as csi-sanity runs it) sees
    // every disk, snapshots included; none has a PersistentVolume.
    let mut ours = disk("snap-1", Some((OURS, 5 * HOUR)));
    ours.comment.snapshot = Some(routeros::Lineage {
        source: Slot::new("pvc-gone").unwrap(),
        size_bytes: Some(1 << 30),
        method: routeros::CopyMethod::Subvolume,
    });
    let go = disk(
        "snap-a1b2c3d4-e5f6-7890-abcd-ef1234567890-at-1739800000",
        None,
    );
    let b = backend(vec![ours, go, disk("pvc-old", Some((OURS, 5 * HOUR)))]);
    let mut rig = Rig::past_grace(b, bound()).await;
    rig.s.config.volume_prefix = SlotPrefix::new("").unwrap();
    let r = rig.sweep().await;
    assert_eq!(
        reasons(&r).iter().map(|v| v.0).collect::<Vec<_>>(),
        ["pvc-old"]
    );
    assert_eq!(rig.deleted(), ["pvc-old"]);
}

#[tokio::test]
async fn disks_with_another_clusters_identity_are_never_deleted_nor_reported() {
    let b = backend(vec![
        disk("pvc-theirs-1", Some((THEIRS, 50 * HOUR))),
        disk("pvc-theirs-2", Some(("cluster-c", 50 * HOUR))),
        disk("pvc-ours", Some((OURS, 50 * HOUR))),
    ]);
    let rig = Rig::new(b, pvs(&[]), true);
    let before = rig.b.disks.lock().unwrap().clone();
    for _ in 0..5 {
        let r = rig.sweep().await;
        assert_eq!(r.foreign, ["pvc-theirs-1", "pvc-theirs-2"]);
        assert!(r.volumes.iter().all(|v| !v.slot.starts_with("pvc-theirs")));
        rig.advance(2 * HOUR);
    }
    assert_eq!(rig.deleted(), ["pvc-ours"]);
    for (slot, was) in [("pvc-theirs-1", &before[0]), ("pvc-theirs-2", &before[1])] {
        assert_eq!(
            rig.b.comment(slot),
            was.comment,
            "another cluster's disk is not even marked"
        );
    }
    assert_eq!(rig.m.foreign.get(), 2);
    assert_eq!(rig.m.volumes.get(), 0);
}

#[tokio::test]
async fn a_retained_pvs_disk_is_never_deleted_even_after_its_pv_is_gone() {
    let b = backend(vec![disk("pvc-keep", Some((OURS, 5 * HOUR)))]);
    let p = pvs(&[("pvc-keep", Reclaim::Retain)]);
    let rig = Rig::new(b, p, true);
    assert!(rig.sweep().await.volumes.is_empty());
    assert!(
        rig.b.comment("pvc-keep").retain,
        "marked while the PV exists"
    );
    rig.pvs.lock().unwrap().clear();
    for _ in 0..5 {
        let r = rig.sweep().await;
        assert_eq!(reasons(&r), [("pvc-keep", OrphanReason::Retained)]);
        rig.advance(10 * HOUR);
    }
    assert!(rig.deleted().is_empty());
    assert!(rig.b.has("pvc-keep"));
    assert_eq!(rig.b.comment("pvc-keep").orphaned_since, None);
    assert_eq!(rig.m.by_reason.with_label_values(&["retained"]).get(), 1);

    // A restarted controller reads the mark from the disk.
    let again = Rig::at(rig.b.clone(), pvs(&[]), true, rig.now.clone());
    for _ in 0..3 {
        again.advance(10 * HOUR);
        assert!(again.sweep().await.deleted.is_empty());
    }
    assert!(rig.b.has("pvc-keep"));
}

#[tokio::test]
async fn the_retain_mark_follows_the_pvs_current_policy() {
    let b = backend(vec![disk("pvc-x", Some((OURS, 5 * HOUR)))]);
    let rig = Rig::new(b, pvs(&[("pvc-x", Reclaim::Retain)]), true);
    rig.sweep().await;
    assert!(rig.b.comment("pvc-x").retain);
    // Patched back to Delete: Kubernetes deletes the volume with its PV,
    // and the mark no longer holds.
    rig.pvs
        .lock()
        .unwrap()
        .insert("pvc-x".into(), Reclaim::Delete);
    rig.sweep().await;
    assert!(!rig.b.comment("pvc-x").retain);
}

#[tokio::test]
async fn a_disk_with_no_identity_is_reported_and_never_deleted() {
    let mut go = disk("pvc-go", None);
    // The comment versions before identities wrote.
    go.comment = DiskComment::parse("rds-csi created=2020-01-01T00:00:00Z").unwrap();
    let b = backend(vec![disk("pvc-by-hand", None), go.clone()]);
    let rig = Rig::new(b, pvs(&[]), true);
    for _ in 0..5 {
        let r = rig.sweep().await;
        assert_eq!(
            reasons(&r),
            [
                ("pvc-by-hand", OrphanReason::NoIdentity),
                ("pvc-go", OrphanReason::NoIdentity)
            ]
        );
        rig.advance(10 * HOUR);
    }
    assert!(rig.deleted().is_empty());
    assert_eq!(rig.b.comment("pvc-go"), go.comment, "not ours to mark");
    assert_eq!(rig.b.comment("pvc-by-hand"), DiskComment::default());
    assert_eq!(rig.m.by_reason.with_label_values(&["no-identity"]).get(), 2);
}

#[tokio::test]
async fn a_disk_made_long_ago_that_just_lost_its_pv_waits_the_grace_period_from_then() {
    let b = backend(vec![disk("pvc-ancient", Some((OURS, 1000 * HOUR)))]);
    let rig = Rig::new(b, pvs(&[("pvc-ancient", Reclaim::Delete)]), true);
    for _ in 0..3 {
        assert!(rig.sweep().await.volumes.is_empty());
        rig.advance(HOUR);
    }
    rig.pvs.lock().unwrap().clear();
    for _ in 0..4 {
        assert!(rig.sweep().await.deleted.is_empty());
        rig.advance(HOUR / 4);
    }
    assert!(rig.b.has("pvc-ancient"), "orphaned for one hour, not more");
    rig.advance(HOUR / 4);
    assert_eq!(rig.sweep().await.deleted, ["pvc-ancient"]);
}

#[tokio::test]
async fn the_orphaned_since_mark_survives_a_restart() {
    let b = backend(vec![disk("pvc-lost", Some((OURS, 3 * HOUR)))]);
    let first = Rig::new(b.clone(), pvs(&[]), true);
    first.sweep().await;
    let marked = b.comment("pvc-lost").orphaned_since.unwrap();
    first.advance(HOUR / 2);
    drop(first.s);

    // A new controller 30 min later: the clock did not restart.
    let second = Rig::at(b.clone(), pvs(&[]), true, first.now.clone());
    let r = second.sweep().await;
    assert_eq!(r.volumes[0].orphaned_for, Some(HOUR / 2));
    assert_eq!(b.comment("pvc-lost").orphaned_since, Some(marked));
    second.advance(HOUR / 4);
    assert!(second.sweep().await.deleted.is_empty());
    second.advance(HOUR / 2);
    assert_eq!(
        second.sweep().await.deleted,
        ["pvc-lost"],
        "1h15 after the first sweep marked it"
    );
}

#[tokio::test]
async fn a_pv_reappearing_clears_the_mark() {
    let b = backend(vec![disk("pvc-back", Some((OURS, 3 * HOUR)))]);
    let rig = Rig::new(b, pvs(&[]), true);
    rig.sweep().await;
    assert!(rig.b.comment("pvc-back").orphaned_since.is_some());
    rig.advance(HOUR / 2);
    rig.pvs
        .lock()
        .unwrap()
        .insert("pvc-back".into(), Reclaim::Delete);
    assert!(rig.sweep().await.volumes.is_empty());
    assert_eq!(rig.b.comment("pvc-back").orphaned_since, None);
    assert!(!rig.b.comment("pvc-back").retain);

    // Lost again: the count starts anew.
    rig.pvs.lock().unwrap().clear();
    rig.advance(HOUR);
    let again = *rig.now.lock().unwrap();
    rig.sweep().await;
    assert_eq!(rig.b.comment("pvc-back").orphaned_since, Some(again));
    rig.advance(HOUR / 2);
    assert!(rig.sweep().await.deleted.is_empty());
}

#[tokio::test]
async fn an_unwritten_mark_leaves_the_age_unknown_and_nothing_is_deleted() {
    let b = backend(vec![disk("pvc-lost", Some((OURS, 3 * HOUR)))]);
    b.fail_comments.store(true, Ordering::SeqCst);
    let rig = Rig::new(b, pvs(&[]), true);
    for _ in 0..3 {
        let r = rig.sweep().await;
        assert_eq!(r.volumes[0].orphaned_for, None);
        rig.advance(2 * HOUR);
    }
    assert!(rig.deleted().is_empty());
    assert_eq!(rig.m.mark_failures.get(), 3);
}

#[tokio::test]
async fn a_comment_changed_right_before_the_delete_stops_it() {
    let b = backend(vec![disk("pvc-lost", Some((OURS, 3 * HOUR)))]);
    let rig = Rig::past_grace(b, pvs(&[])).await;
    // An operator marks it retain by hand between the list and the delete.
    *rig.b.before_get.lock().unwrap() = Some(Box::new(|disks: &mut Vec<Disk>| {
        disks[0].comment.retain = true;
    }));
    assert!(rig.sweep().await.deleted.is_empty());
    assert!(rig.b.has("pvc-lost"));
}

#[tokio::test]
async fn a_pv_appearing_between_the_two_sweeps_saves_the_disk() {
    let rig = Rig::past_grace(setup(), bound()).await;
    rig.pvs
        .lock()
        .unwrap()
        .insert("pvc-old".into(), Reclaim::Delete);
    let r = rig.sweep().await;
    assert!(!r.deleted.contains(&"pvc-old".to_string()));
    assert!(rig.b.has("pvc-old"));
}

#[tokio::test]
async fn a_pv_appearing_between_decision_and_delete_saves_the_disk() {
    let b = backend(vec![disk("pvc-old", Some((OURS, 2 * HOUR)))]);
    // Lists: 1 = first sweep, 2 = second sweep, 3 = the re-check right
    // before the delete. The PV appears at exactly that moment.
    let p = FakePvs {
        appear: Some((3, "pvc-old".into())),
        ..pvs(&[])
    };
    let rig = Rig::past_grace(b, p).await;
    assert!(rig.sweep().await.deleted.is_empty());
    assert!(rig.deleted().is_empty());
    // And it is no orphan afterwards.
    assert!(rig.sweep().await.volumes.is_empty());
    assert_eq!(rig.b.comment("pvc-old").orphaned_since, None);
}

#[tokio::test]
async fn a_volume_busy_or_just_returned_by_create_volume_is_not_deleted() {
    let b = backend(vec![disk("pvc-old", Some((OURS, 2 * HOUR)))]);
    let rig = Rig::past_grace(b, pvs(&[])).await;
    let guard = rig.s.locks.try_lock("pvc-old").unwrap();
    assert!(rig.sweep().await.deleted.is_empty(), "operation in flight");
    drop(guard);
    rig.s.recent.note("pvc-old");
    assert!(
        rig.sweep().await.deleted.is_empty(),
        "CreateVolume just returned it: the provisioner may be creating its PV"
    );
    assert!(rig.deleted().is_empty());
}

#[tokio::test]
async fn a_failed_pv_list_decides_nothing() {
    let b = backend(vec![disk("pvc-old", Some((OURS, 2 * HOUR)))]);
    let p = pvs(&[]);
    let fail = p.fail.clone();
    let rig = Rig::new(b, p, true);
    fail.store(true, Ordering::SeqCst);
    assert!(rig.s.sweep().await.is_err());
    assert!(rig.s.sweep().await.is_err());
    assert_eq!(
        rig.b.comment("pvc-old").orphaned_since,
        None,
        "nothing is marked without a PV list"
    );

    // A failure between two good sweeps breaks the run of two.
    fail.store(false, Ordering::SeqCst);
    assert!(rig.sweep().await.deleted.is_empty());
    rig.advance(2 * HOUR);
    fail.store(true, Ordering::SeqCst);
    assert!(rig.s.sweep().await.is_err());
    fail.store(false, Ordering::SeqCst);
    assert!(rig.sweep().await.deleted.is_empty());
    assert_eq!(rig.sweep().await.deleted, ["pvc-old"]);
}

#[test]
fn anything_but_an_explicit_delete_policy_keeps_the_disk() {
    assert_eq!(Reclaim::from_policy(Some("Delete")), Reclaim::Delete);
    for other in [Some("Retain"), Some("Recycle"), Some(""), None] {
        assert_eq!(Reclaim::from_policy(other), Reclaim::Retain, "{other:?}");
    }
}

#[tokio::test]
async fn a_comment_read_back_cut_short_is_neither_rewritten_nor_deleted() {
    let mut cut = disk("pvc-cut", None);
    // Ours and retained, but the RDS printed it cut after `ret`.
    cut.comment =
        DiskComment::parse("rds-csi created=2020-01-01T00:00:00Z cluster=cluster-a ret").unwrap();
    let b = backend(vec![cut.clone()]);
    let rig = Rig::new(b, pvs(&[]), true);
    for _ in 0..3 {
        let r = rig.sweep().await;
        assert_eq!(reasons(&r), [("pvc-cut", OrphanReason::NoIdentity)]);
        rig.advance(10 * HOUR);
    }
    assert!(rig.deleted().is_empty());
    assert_eq!(rig.b.comment("pvc-cut"), cut.comment, "never rewritten");
}
