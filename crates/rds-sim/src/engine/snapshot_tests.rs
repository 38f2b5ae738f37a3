//! Subvolumes, snapshots, adopted files and `/disk copy`, through
//! [`Engine::execute`], with backing files on disk so the data is checked.

use std::path::PathBuf;

use super::*;

struct Pool {
    _dir: tempfile::TempDir,
    root: PathBuf,
    engine: Engine,
}

fn pool(fs: PoolFs) -> Pool {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let config = PoolConfig {
        fs,
        ..PoolConfig::sized(1 << 30)
    };
    let engine = Engine::new(Store::Dir(root.clone()), config, None).unwrap();
    Pool {
        _dir: dir,
        root,
        engine,
    }
}

impl Pool {
    fn run(&self, line: &str) -> Reply {
        self.engine.execute(line, &Faults::default())
    }

    /// Runs a command that must succeed with no output.
    fn ok(&self, line: &str) {
        assert_eq!(self.run(line), Reply::ok(String::new()), "{line}");
    }

    /// A read-only snapshot `name` of subvolume `of`.
    fn snapshot(&self, name: &str, of: &str) {
        self.ok(&format!(
            "/disk/btrfs/subvolume/add fs=storage-pool name={name} parent={of} read-only=yes"
        ));
    }

    /// Runs a command that must be refused with exactly `want`.
    fn refused(&self, line: &str, want: &str) {
        assert_eq!(self.failure(line), want, "{line}");
    }

    fn failure(&self, line: &str) -> String {
        let r = self.run(line);
        assert!(r.stdout.starts_with("failure: "), "{line}: {r:?}");
        r.stdout.trim_end().to_string()
    }

    fn write(&self, rel: &str, at: u64, data: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(self.root.join(rel))
            .unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(data).unwrap();
    }

    fn read(&self, rel: &str, at: u64, len: usize) -> Vec<u8> {
        let all = std::fs::read(self.root.join(rel)).unwrap();
        all[at as usize..at as usize + len].to_vec()
    }

    /// A volume in a subvolume of its own, as the driver's subvolume layout
    /// makes it, holding `data` at offset 4096.
    fn volume_in_subvolume(&self, id: &str, data: &[u8]) {
        self.ok(&format!(
            "/disk/btrfs/subvolume/add fs=storage-pool name={id}"
        ));
        self.ok(&format!(
            "/disk add type=file file-path=/storage-pool/{id}/volume.img file-size=1M slot={id} nvme-tcp-export=yes"
        ));
        self.write(&format!("{id}/volume.img"), 4096, data);
    }

    fn disk(&self, slot: &str) -> Disk {
        self.engine
            .settled()
            .disks
            .iter()
            .find(|d| d.slot == slot)
            .cloned()
            .unwrap()
    }
}

#[test]
fn a_read_only_snapshot_keeps_the_data_the_volume_had_when_it_was_taken() {
    let p = pool(PoolFs::Btrfs);
    p.volume_in_subvolume("pvc-1", b"before");
    p.snapshot("snap-1", "pvc-1");
    p.write("pvc-1/volume.img", 4096, b"after!");

    assert_eq!(p.read("snap-1/volume.img", 4096, 6), b"before");
    assert_eq!(p.read("pvc-1/volume.img", 4096, 6), b"after!");
    let out = p
        .run("/disk/btrfs/subvolume/print detail where name=snap-1")
        .stdout;
    assert!(out.contains("read-only=yes"), "{out}");
    assert!(out.contains("parent=\"pvc-1\""), "{out}");
}

#[test]
fn a_disk_added_over_a_file_that_exists_adopts_it_with_its_size_and_data() {
    let p = pool(PoolFs::Btrfs);
    p.volume_in_subvolume("pvc-1", b"kept");
    p.snapshot("snap-1", "pvc-1");
    p.ok("/disk add type=file file-path=/storage-pool/snap-1/volume.img slot=snap-1 comment=\"rds-csi snapshot\"");

    let snap = p.disk("snap-1");
    assert_eq!(snap.size, 1 << 20);
    assert!(!snap.export);
    assert_eq!(p.read("snap-1/volume.img", 4096, 4), b"kept");
    // The same file twice, or a size for a file that exists, is refused.
    p.refused(
        "/disk add type=file file-path=/storage-pool/snap-1/volume.img slot=again",
        "failure: file is in use",
    );
    p.refused(
        "/disk add type=file file-path=/storage-pool/snap-1/volume.img file-size=2M slot=again",
        "failure: file already exists",
    );
}

#[test]
fn nothing_inside_a_read_only_subvolume_can_be_changed_or_removed() {
    let p = pool(PoolFs::Btrfs);
    p.volume_in_subvolume("pvc-1", b"x");
    p.snapshot("snap-1", "pvc-1");
    p.ok("/disk add type=file file-path=/storage-pool/snap-1/volume.img slot=snap-1");

    for line in [
        "/disk set [find slot=snap-1] file-size=2M",
        "/disk add type=file file-path=/storage-pool/snap-1/new.img file-size=1M slot=new",
        "/disk copy src=pvc-1 dst=snap-1",
    ] {
        p.refused(line, "failure: read-only file system");
    }
    p.ok("/disk remove [find slot=snap-1]");
    p.refused(
        "/file remove [find name=\"storage-pool/snap-1/volume.img\"]",
        "failure: read-only file system",
    );
    p.refused(
        "/file remove [find name=\"storage-pool/snap-1\"]",
        "failure: can not remove subvolume",
    );
}

#[test]
fn a_writable_snapshot_of_a_snapshot_is_a_clone_that_can_be_exported_and_grown() {
    let p = pool(PoolFs::Btrfs);
    p.volume_in_subvolume("pvc-1", b"golden");
    p.snapshot("snap-1", "pvc-1");
    p.ok("/disk/btrfs/subvolume/add fs=storage-pool name=pvc-2 parent=snap-1 read-only=no");
    p.ok("/disk add type=file file-path=/storage-pool/pvc-2/volume.img slot=pvc-2 nvme-tcp-export=yes nvme-tcp-server-port=4420");
    p.ok("/disk set [find slot=pvc-2] file-size=2M");

    let clone = p.disk("pvc-2");
    assert_eq!(clone.size, 2 << 20);
    assert_eq!(clone.nqn.as_deref(), Some("nqn.2000-02.com.mikrotik:pvc-2"));
    assert_eq!(p.read("pvc-2/volume.img", 4096, 6), b"golden");
    p.write("pvc-2/volume.img", 4096, b"edited");
    assert_eq!(p.read("snap-1/volume.img", 4096, 6), b"golden");
}

#[test]
fn a_subvolume_a_disk_uses_stays_and_removing_it_afterwards_leaves_no_file() {
    let p = pool(PoolFs::Btrfs);
    p.volume_in_subvolume("pvc-1", b"x");
    p.refused(
        "/disk/btrfs/subvolume/remove [find where name=pvc-1]",
        "failure: subvolume is in use",
    );
    p.ok("/disk remove [find slot=pvc-1]");
    p.ok("/disk/btrfs/subvolume/remove [find where name=pvc-1]");

    let state = p.engine.lock();
    assert!(state.subvolumes.is_empty());
    assert!(state.files.is_empty(), "{:?}", state.files);
    assert!(!p.root.join("pvc-1").exists());
    // Removing what is gone: `[find]` matches nothing, a name does not exist.
    drop(state);
    p.ok("/disk/btrfs/subvolume/remove [find where name=pvc-1]");
    p.refused(
        "/disk/btrfs/subvolume/remove pvc-1",
        "failure: no such item",
    );
}

#[test]
fn subvolume_names_and_sources_are_checked() {
    let p = pool(PoolFs::Btrfs);
    p.ok("/disk/btrfs/subvolume/add fs=storage-pool name=a");
    p.refused(
        "/disk/btrfs/subvolume/add fs=storage-pool name=a",
        "failure: subvolume already exists",
    );
    p.refused(
        "/disk/btrfs/subvolume/add fs=storage-pool name=b parent=nope",
        "failure: no such item",
    );
    p.refused(
        "/disk/btrfs/subvolume/add fs=other name=b",
        "failure: no such item",
    );
    let r = p.run("/disk/btrfs/subvolume/add fs=storage-pool name=\"x/y\"");
    assert_eq!(r.status, 1, "{r:?}");
    let r = p.run("/disk/btrfs/subvolume/print count-only where read-only=no");
    assert_eq!(r.stdout, "1\r\n");
}

#[test]
fn an_xfs_pool_says_so_and_has_no_subvolumes() {
    let p = pool(PoolFs::Xfs);
    let out = p
        .run("/disk print detail where mount-point=\"storage-pool\"")
        .stdout;
    assert!(out.contains("fs=xfs"), "{out}");
    p.refused(
        "/disk/btrfs/subvolume/add fs=storage-pool name=a",
        "failure: no such item",
    );
    // copy-from still works on XFS.
    p.ok("/disk add type=file file-path=/storage-pool/v/a.img file-size=1M slot=a");
    p.write("v/a.img", 0, b"flat");
    p.ok("/disk add type=file copy-from=[find slot=a] file-path=/storage-pool/v/s.img slot=s");
    assert_eq!(p.read("v/s.img", 0, 4), b"flat");
}

#[test]
fn a_disk_copy_shows_progress_and_lands_the_data_when_it_completes() {
    let p = pool(PoolFs::Xfs);
    p.ok("/disk add type=file file-path=/storage-pool/v/a.img file-size=1M slot=a");
    p.ok("/disk add type=file file-path=/storage-pool/v/b.img file-size=2M slot=b");
    p.write("v/a.img", 100, b"payload");
    p.write("v/b.img", 200, b"old");
    p.engine.lock().copy_rate = 1;
    p.ok("/disk copy src=a dst=b");

    let out = p.run("/disk print detail where slot=b").stdout;
    assert!(out.contains("status=\"0 / 1 048 576 (0%)\""), "{out}");
    p.refused(
        "/disk copy src=a dst=b",
        "failure: copy already in progress",
    );
    p.refused("/disk remove [find slot=a]", "failure: disk is in use");
    assert_eq!(p.read("v/b.img", 100, 7), vec![0; 7]);

    p.engine.lock().copy_rate = u64::MAX;
    let b = p.disk("b");
    assert_eq!(b.copy, None);
    assert_eq!(b.size, 2 << 20);
    assert_eq!(p.read("v/b.img", 100, 7), b"payload");
    // What the source had as a hole is zero in the copy, not old data.
    assert_eq!(p.read("v/b.img", 200, 3), vec![0; 3]);
    let out = p.run("/disk print detail where slot=b").stdout;
    assert!(!out.contains("status="), "{out}");
}

#[test]
fn a_disk_copy_needs_two_different_disks_and_room_for_the_source() {
    let p = pool(PoolFs::Btrfs);
    p.ok("/disk add type=file file-path=/storage-pool/v/a.img file-size=2M slot=a");
    p.ok("/disk add type=file file-path=/storage-pool/v/b.img file-size=1M slot=b");
    for (line, want) in [
        (
            "/disk copy src=a dst=b",
            "failure: destination is smaller than source",
        ),
        (
            "/disk copy src=a dst=a",
            "failure: source and destination are the same disk",
        ),
        ("/disk copy src=a dst=nope", "failure: no such item"),
        (
            "/disk copy src=a",
            "failure: invalid parameter: dst is required",
        ),
        (
            "/disk copy src=storage-pool dst=a",
            "failure: can not copy this disk",
        ),
    ] {
        p.refused(line, want);
    }
}
