use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

#[derive(Default)]
struct FakeBackend {
    disks: Mutex<Vec<Disk>>,
    files: Mutex<Vec<FileEntry>>,
    deleted: Mutex<Vec<String>>,
}

impl OrphanBackend for FakeBackend {
    fn all_disks(&self) -> BoxFuture<'_, Result<Vec<Disk>, routeros::Error>> {
        let d = self.disks.lock().unwrap().clone();
        Box::pin(async move { Ok(d) })
    }
    fn files_under<'a>(
        &'a self,
        _: &'a RosPath,
    ) -> BoxFuture<'a, Result<Vec<FileEntry>, routeros::Error>> {
        let f = self.files.lock().unwrap().clone();
        Box::pin(async move { Ok(f) })
    }
    fn delete<'a>(&'a self, disk: &'a Disk) -> BoxFuture<'a, Result<(), routeros::Error>> {
        self.disks.lock().unwrap().retain(|d| d.slot != disk.slot);
        self.deleted.lock().unwrap().push(disk.slot.clone());
        Box::pin(async { Ok(()) })
    }
}

/// PVs; `appear_on_call` adds a PV for `appear` when that many lists have
/// been made (to place a PV creation exactly inside a sweep).
#[derive(Default)]
struct FakePvs {
    handles: Arc<Mutex<HashSet<String>>>,
    calls: AtomicUsize,
    appear: Option<(usize, String)>,
    fail: Arc<std::sync::atomic::AtomicBool>,
}

impl VolumeReferences for FakePvs {
    fn volume_handles(&self) -> BoxFuture<'_, Result<HashSet<String>, String>> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((at, slot)) = &self.appear {
            if n == *at {
                self.handles.lock().unwrap().insert(slot.clone());
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

fn disk(slot: &str, age: Option<Duration>) -> Disk {
    Disk {
        slot: slot.into(),
        file_path: Some(format!("/storage-pool/metal-csi/{slot}.img")),
        size_bytes: 1 << 30,
        nqn: None,
        port: None,
        exported: true,
        created: age.map(|a| Timestamp::now() - jiff::SignedDuration::try_from(a).unwrap()),
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

const HOUR: Duration = Duration::from_secs(3600);

fn sweeper(
    backend: Arc<FakeBackend>,
    pvs: FakePvs,
    delete: bool,
) -> (OrphanSweeper<FakeBackend, FakePvs>, OrphanMetrics) {
    let metrics = OrphanMetrics::register(&Registry::new()).unwrap();
    let s = OrphanSweeper::new(
        backend,
        pvs,
        VolumeLocks::default(),
        RecentCreates::default(),
        OrphanConfig {
            interval: HOUR,
            delete,
            grace_period: HOUR,
            volume_prefix: SlotPrefix::new("pvc-").unwrap(),
            volume_path: RosPath::new("/storage-pool/metal-csi").unwrap(),
        },
        metrics.clone(),
        Box::new(LogOnly),
    );
    (s, metrics)
}

fn setup() -> Arc<FakeBackend> {
    let b = Arc::new(FakeBackend::default());
    *b.disks.lock().unwrap() = vec![
        disk("pvc-bound", Some(3 * HOUR)),
        disk("pvc-old", Some(2 * HOUR)),
        disk("pvc-young", Some(HOUR / 2)),
        disk("pvc-by-hand", None),
        disk("other-volume", Some(5 * HOUR)),
    ];
    *b.files.lock().unwrap() = vec![
        file("storage-pool/metal-csi", "directory"),
        file("storage-pool/metal-csi/pvc-bound.img", ".img file"),
        file("storage-pool/metal-csi/pvc-old.img", ".img file"),
        file("storage-pool/metal-csi/other-volume.img", ".img file"),
        file("storage-pool/metal-csi/leftover.img", ".img file"),
    ];
    b
}

fn pvs(handles: &[&str]) -> FakePvs {
    FakePvs {
        handles: Arc::new(Mutex::new(handles.iter().map(|s| s.to_string()).collect())),
        ..Default::default()
    }
}

#[tokio::test]
async fn report_only_reports_with_ages_and_never_deletes() {
    let b = setup();
    let (s, m) = sweeper(b.clone(), pvs(&["pvc-bound"]), false);
    for _ in 0..3 {
        let r = s.sweep().await.unwrap();
        let slots: Vec<_> = r.volumes.iter().map(|v| v.slot.as_str()).collect();
        assert_eq!(slots, ["pvc-by-hand", "pvc-old", "pvc-young"]);
        assert_eq!(r.volumes[0].age, None, "no comment: age unknown");
        assert!(r.volumes[1].age.unwrap() > HOUR);
        assert_eq!(r.files, ["storage-pool/metal-csi/leftover.img"]);
        assert!(r.deleted.is_empty());
    }
    assert!(b.deleted.lock().unwrap().is_empty());
    assert_eq!(m.volumes.get(), 3);
    assert_eq!(m.files.get(), 1);
    assert_eq!(m.deleted.get(), 0);
}

#[tokio::test]
async fn deletion_needs_two_sweeps_a_known_age_past_the_grace_period() {
    let b = setup();
    let (s, m) = sweeper(b.clone(), pvs(&["pvc-bound"]), true);
    let first = s.sweep().await.unwrap();
    assert!(first.deleted.is_empty(), "one sweep is never enough");
    let second = s.sweep().await.unwrap();
    assert_eq!(second.deleted, ["pvc-old"]);
    assert_eq!(*b.deleted.lock().unwrap(), ["pvc-old"]);
    assert_eq!(m.deleted.get(), 1);
    assert_eq!(m.volumes.get(), 2, "young and age-unknown remain");
    // Files are never deleted; the by-hand disk never is.
    for _ in 0..3 {
        assert!(s.sweep().await.unwrap().deleted.is_empty());
    }
    assert_eq!(*b.deleted.lock().unwrap(), ["pvc-old"]);
}

#[tokio::test]
async fn a_pv_appearing_between_the_two_sweeps_saves_the_disk() {
    let b = setup();
    let p = pvs(&["pvc-bound"]);
    let handles = p.handles.clone();
    let (s, _) = sweeper(b.clone(), p, true);
    s.sweep().await.unwrap();
    handles.lock().unwrap().insert("pvc-old".into());
    let r = s.sweep().await.unwrap();
    assert!(r.deleted.is_empty());
    assert!(b.deleted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_pv_appearing_between_decision_and_delete_saves_the_disk() {
    let b = setup();
    // Lists: 1 = first sweep, 2 = second sweep, 3 = the re-check right
    // before the delete. The PV appears at exactly that moment.
    let p = FakePvs {
        appear: Some((3, "pvc-old".into())),
        ..pvs(&["pvc-bound"])
    };
    let (s, _) = sweeper(b.clone(), p, true);
    s.sweep().await.unwrap();
    let r = s.sweep().await.unwrap();
    assert!(r.deleted.is_empty());
    assert!(b.deleted.lock().unwrap().is_empty());
    // And it is no orphan afterwards.
    assert!(s
        .sweep()
        .await
        .unwrap()
        .volumes
        .iter()
        .all(|v| v.slot != "pvc-old"));
}

#[tokio::test]
async fn a_volume_busy_or_just_returned_by_create_volume_is_not_deleted() {
    let b = setup();
    let (s, _) = sweeper(b.clone(), pvs(&["pvc-bound"]), true);
    s.sweep().await.unwrap();
    let guard = s.locks.try_lock("pvc-old").unwrap();
    assert!(
        s.sweep().await.unwrap().deleted.is_empty(),
        "operation in flight"
    );
    drop(guard);
    s.recent.note("pvc-old");
    assert!(
        s.sweep().await.unwrap().deleted.is_empty(),
        "CreateVolume just returned it: the provisioner may be creating its PV"
    );
    assert!(b.deleted.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_pv_list_decides_nothing() {
    let b = setup();
    let p = pvs(&["pvc-bound"]);
    let fail = p.fail.clone();
    let (s, _) = sweeper(b.clone(), p, true);
    fail.store(true, Ordering::SeqCst);
    assert!(s.sweep().await.is_err());
    assert!(s.sweep().await.is_err());
    assert!(b.deleted.lock().unwrap().is_empty());

    // A failure between two good sweeps breaks the run of two.
    fail.store(false, Ordering::SeqCst);
    assert!(s.sweep().await.unwrap().deleted.is_empty());
    fail.store(true, Ordering::SeqCst);
    assert!(s.sweep().await.is_err());
    fail.store(false, Ordering::SeqCst);
    assert!(s.sweep().await.unwrap().deleted.is_empty());
    assert_eq!(s.sweep().await.unwrap().deleted, ["pvc-old"]);
}
