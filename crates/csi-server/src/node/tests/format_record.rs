//! The durable format record (the PV annotation) in NodeStageVolume, over
//! an in-memory record and the fake host.

use std::sync::Mutex;

use futures::future::BoxFuture;

use super::*;
use crate::node::format_record::{RecordError, RecordRef, Recorded, ANNOTATION};

/// An in-memory record with the PV annotation's meaning. Volumes not
/// `kept` have no PV. Remembers where in the host's calls each write
/// landed, to check it came after mkfs and before the mount.
struct MemRecord {
    host: FakeHost,
    s: Mutex<MemState>,
}

#[derive(Default)]
struct MemState {
    kept: HashMap<String, Option<String>>,
    fail_reads: usize,
    fail_writes: usize,
    reads: usize,
    /// (volume, filesystem, number of host calls made before it).
    writes: Vec<(String, String, usize)>,
}

impl MemRecord {
    fn new(host: &FakeHost) -> Arc<Self> {
        Arc::new(MemRecord {
            host: host.clone(),
            s: Mutex::new(MemState::default()),
        })
    }

    fn keep(&self, volume: &str, formatted: Option<&str>) {
        self.s
            .lock()
            .unwrap()
            .kept
            .insert(volume.into(), formatted.map(String::from));
    }

    fn says(&self, volume: &str) -> Option<String> {
        self.s.lock().unwrap().kept.get(volume).cloned().flatten()
    }

    fn fail_reads(&self, n: usize) {
        self.s.lock().unwrap().fail_reads = n;
    }

    fn fail_writes(&self, n: usize) {
        self.s.lock().unwrap().fail_writes = n;
    }

    fn reads(&self) -> usize {
        self.s.lock().unwrap().reads
    }

    fn writes(&self) -> Vec<(String, String, usize)> {
        self.s.lock().unwrap().writes.clone()
    }
}

impl FormatRecord for MemRecord {
    fn read<'a>(
        &'a self,
        volume: &'a str,
        pv: &'a str,
    ) -> BoxFuture<'a, Result<Recorded, RecordError>> {
        Box::pin(async move {
            let mut s = self.s.lock().unwrap();
            s.reads += 1;
            if s.fail_reads > 0 {
                s.fail_reads -= 1;
                return Err(RecordError(format!(
                    "read PersistentVolume {pv}: connection refused"
                )));
            }
            Ok(match s.kept.get(volume) {
                None => Recorded::NotKept(format!("no PersistentVolume named {pv}")),
                Some(formatted) => Recorded::Kept {
                    at: RecordRef {
                        name: pv.into(),
                        uid: Some("uid-1".into()),
                    },
                    formatted: formatted.clone(),
                },
            })
        })
    }

    fn write<'a>(
        &'a self,
        volume: &'a str,
        _at: &'a RecordRef,
        fs: FsType,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move {
            let calls = self.host.calls().len();
            let mut s = self.s.lock().unwrap();
            if s.fail_writes > 0 {
                s.fail_writes -= 1;
                return Err(RecordError("annotate PersistentVolume: timed out".into()));
            }
            s.kept.insert(volume.into(), Some(fs.as_str().into()));
            s.writes.push((volume.into(), fs.as_str().into(), calls));
            Ok(())
        })
    }

    fn describe(&self, at: &RecordRef, fs: &str) -> String {
        format!(
            "the annotation {ANNOTATION}={fs} on PersistentVolume {}",
            at.name
        )
    }
}

/// A node that keeps the format record in memory; the test volume has no
/// PV there.
fn env_recorded() -> (Env, Arc<MemRecord>) {
    let Env { f, svc, recorded } = env();
    let r = MemRecord::new(&f);
    let svc = svc.with_format_record(r.clone());
    (Env { f, svc, recorded }, r)
}

/// As [`env_recorded`], the test volume with a PV whose annotation names
/// `formatted` (none: not annotated yet).
fn env_with_pv(formatted: Option<&str>) -> (Env, Arc<MemRecord>) {
    let (e, r) = env_recorded();
    r.keep(ID, formatted);
    (e, r)
}

/// The index of the first recorded call matching `p`.
fn first(f: &FakeHost, p: impl Fn(&Call) -> bool) -> usize {
    f.calls().iter().position(p).expect("the call was made")
}

fn is_mkfs(c: &Call) -> bool {
    matches!(c, Call::Exec(HostCommand::Mkfs { .. }))
}

fn is_staging_mount(c: &Call) -> bool {
    matches!(c, Call::Mount(m) if m.target == Path::new(STAGING))
}

#[tokio::test]
async fn an_annotated_formatted_volume_that_probes_empty_is_refused_and_nothing_is_written() {
    // Formatted on another node; now the target serves zeros.
    let (e, r) = env_with_pv(Some("ext4"));
    let err = e.stage_fs_refused(Code::FailedPrecondition).await;
    assert!(
        err.message().contains(&format!("{ANNOTATION}=ext4")),
        "{}",
        err.message()
    );
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(e.f.ran(Program::E2fsck), 0);
    assert!(e.mount_calls().is_empty(), "{:?}", e.mount_calls());
    assert_eq!(
        e.f.volume(NQN).unwrap().fs,
        None,
        "the device was not written"
    );
    assert!(r.writes().is_empty(), "the record was not rewritten");
    let ev = the_event(&e, FORMAT_REFUSED).await;
    assert!(ev.message.contains(ID), "{}", ev.message);
    assert!(ev.message.contains(ANNOTATION), "{}", ev.message);
    assert!(ev.message.contains("needs a person"), "{}", ev.message);
    // Still refused on every retry.
    e.stage_fs_refused(Code::FailedPrecondition).await;
    assert_eq!(e.f.ran(Program::Mkfs), 0);
}

#[tokio::test]
async fn a_fresh_volume_is_formatted_and_the_annotation_written_before_stage_returns() {
    let (e, r) = env_with_pv(None);
    e.stage_fs().await;
    assert_eq!(r.says(ID).as_deref(), Some("ext4"));
    let writes = r.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let (_, fs, at) = &writes[0];
    assert_eq!(fs, "ext4");
    // After mkfs, before the staging mount (so before the stage returns).
    assert!(first(&e.f, is_mkfs) < *at, "written after mkfs");
    assert!(
        *at <= first(&e.f, is_staging_mount),
        "written before the mount"
    );
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert_eq!(e.events().await, vec![]);
    // Staged again: nothing more to read or write.
    let reads = r.reads();
    e.stage_fs().await;
    assert_eq!(r.reads(), reads);
    assert_eq!(r.writes().len(), 1);
}

#[tokio::test]
async fn an_annotation_write_failure_after_mkfs_fails_the_stage_and_the_retry_finds_the_filesystem_and_records_it(
) {
    let (e, r) = env_with_pv(None);
    r.fail_writes(1);
    let err = e.stage_fs_error().await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        matches!(
            err,
            NodeError::FormatRecordUnwritten {
                made_now: true,
                fs: FsType::Ext4,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(e.f.ran(Program::Mkfs), 1);
    assert!(
        e.mounts_at(STAGING).is_empty(),
        "not staged without the record"
    );
    assert_eq!(r.says(ID), None);
    // kubelet retries: the probe finds the filesystem, no second mkfs.
    e.stage_fs().await;
    assert_eq!(e.f.ran(Program::Mkfs), 1, "formatted once");
    assert_eq!(r.says(ID).as_deref(), Some("ext4"));
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}

#[tokio::test]
async fn an_unreadable_annotation_means_no_probe_and_no_mkfs() {
    let (e, r) = env_with_pv(None);
    r.fail_reads(1);
    let err = e.stage_fs_error().await;
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        matches!(err, NodeError::FormatRecordUnread { .. }),
        "{err:?}"
    );
    assert_eq!(e.f.ran(Program::Blkid), 0);
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert!(!e.f.calls().iter().any(|c| matches!(c, Call::ReadHead(_))));
    assert!(e.mount_calls().is_empty());
    // Once the API answers, the stage goes through.
    e.stage_fs().await;
    assert_eq!(e.f.ran(Program::Mkfs), 1);
    assert_eq!(r.says(ID).as_deref(), Some("ext4"));
}

#[tokio::test]
async fn an_existing_filesystem_the_annotation_does_not_name_yet_is_recorded() {
    let (e, r) = env_with_pv(None);
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.stage_fs().await;
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(r.says(ID).as_deref(), Some("ext4"));
}

#[tokio::test]
async fn an_annotated_volume_whose_filesystem_is_there_is_mounted_without_a_write() {
    let (e, r) = env_with_pv(Some("ext4"));
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.stage_fs().await;
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert!(r.writes().is_empty());
}

#[tokio::test]
async fn a_volume_without_a_pv_is_staged_on_the_probe_alone() {
    let (e, r) = env_recorded();
    e.stage_fs().await;
    assert_eq!(e.f.ran(Program::Mkfs), 1);
    assert!(r.writes().is_empty(), "nowhere to record it");
}

#[tokio::test]
async fn recovering_a_staged_volume_needs_no_record() {
    let (e, r) = env_with_pv(None);
    e.stage_fs().await;
    // The API server goes away; the controller renumbers: the stage
    // remounts from the new device without asking (it never formats).
    r.fail_reads(100);
    e.f.renumber(NQN);
    let reads = r.reads();
    e.stage_fs().await;
    assert_eq!(r.reads(), reads);
    assert_eq!(e.f.ran(Program::Mkfs), 1);
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}

#[tokio::test]
async fn a_raw_block_volume_never_reads_the_record() {
    let (e, r) = env_with_pv(None);
    r.fail_reads(100);
    e.stage_block().await;
    assert_eq!(r.reads(), 0);
}

#[tokio::test]
async fn the_device_identity_is_re_checked_right_before_mkfs() {
    let (e, r) = env_with_pv(None);
    let other = "nqn.2000-02.com.mikrotik:pvc-2";
    e.f.add_volume(other, 1 << 30);
    e.f.update_volume(other, |v| v.fs = Some("ext4".into()));
    e.f.connect_now(other);
    // Between the probe (empty) and mkfs, this volume's device name and
    // number come to serve another volume that holds a filesystem.
    e.f.then_after(Program::Blkid, Then::Swap(NQN.into(), other.into()));
    e.stage_fs_refused(Code::Unavailable).await;
    assert_eq!(
        e.f.ran(Program::Mkfs),
        0,
        "mkfs never ran on the wrong device"
    );
    assert_eq!(e.f.volume(other).unwrap().fs.as_deref(), Some("ext4"));
    assert!(r.writes().is_empty());
    assert!(e.mount_calls().is_empty());
}
