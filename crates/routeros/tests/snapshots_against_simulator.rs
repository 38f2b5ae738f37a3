//! The snapshot and copy operations of the RouterOS client against the
//! simulator over real SSH: each copy method keeps the data, lineage reads
//! back from the comment, a byte copy reports its progress, and the pool's
//! file system decides which methods exist.

use std::path::Path;
use std::time::Duration;

use rds_sim::{PoolFs, SimConfig, SimHandle, Storage};
use routeros::{
    Client, ClientConfig, CopyMethod, CopyState, DiskComment, Error, HostKeyPolicy, Lineage,
    NewDisk, Nqn, PoolFilesystem, Rds, RosPath, Slot,
};
use russh::keys::{Algorithm, PrivateKey};

struct Setup {
    sim: SimHandle,
    rds: Rds,
    dir: tempfile::TempDir,
}

async fn setup(fs: PoolFs) -> Setup {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sim = rds_sim::start(SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        storage: Storage::Dir(dir.path().to_path_buf()),
        pool_size: 1 << 30,
        pool_fs: fs,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut cfg = ClientConfig::new(
        sim.addr().to_string(),
        "csi",
        HostKeyPolicy::Pinned(sim.host_key_fingerprint()),
    );
    cfg.command_timeout = Duration::from_secs(3);
    let rds = Rds::new(Client::new(cfg, key, None));
    Setup { sim, rds, dir }
}

impl Setup {
    /// An exported 1 MiB volume `id` with its image at `file`.
    async fn volume(&self, id: &str, file: &str) -> Slot {
        let vol = slot(id);
        self.rds
            .create_disk(&NewDisk {
                slot: vol.clone(),
                file: path(file),
                size_bytes: 1 << 20,
                port: 4420,
                nqn: nqn(&vol),
                comment: DiskComment::default(),
            })
            .await
            .unwrap();
        vol
    }
}

fn slot(s: &str) -> Slot {
    Slot::new(s).unwrap()
}

fn path(s: &str) -> RosPath {
    RosPath::new(s).unwrap()
}

fn nqn(s: &Slot) -> Nqn {
    Nqn::for_volume("nqn.2000-02.com.mikrotik:", s).unwrap()
}

fn write_at(root: &Path, rel: &str, at: u64, data: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(root.join(rel))
        .unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
}

fn read_at(root: &Path, rel: &str, at: u64, len: usize) -> Vec<u8> {
    std::fs::read(root.join(rel)).unwrap()[at as usize..at as usize + len].to_vec()
}

fn lineage(source: &str, size: u64, method: CopyMethod) -> DiskComment {
    DiskComment {
        created: Some("2026-12-07T11:00:00Z".parse().unwrap()),
        snapshot: Some(Lineage {
            source: slot(source),
            size_bytes: Some(size),
            method,
        }),
        ..DiskComment::default()
    }
}

#[tokio::test]
async fn a_subvolume_snapshot_and_a_clone_of_it_keep_the_volume_data() {
    let s = setup(PoolFs::Btrfs).await;
    let (fs, vol) = (slot("storage-pool"), slot("pvc-1"));
    assert_eq!(
        s.rds.pool_filesystem(&fs).await.unwrap(),
        PoolFilesystem::Btrfs
    );
    s.rds
        .create_subvolume(&fs, &vol, None, false)
        .await
        .unwrap();
    s.volume("pvc-1", "/storage-pool/pvc-1/volume.img").await;
    write_at(s.dir.path(), "pvc-1/volume.img", 512, b"pattern-A");

    // Snapshot: a read-only subvolume, then a disk over its image with the
    // lineage: two commands.
    let snap = slot("snap-1");
    s.sim.reset_stats();
    s.rds
        .create_subvolume(&fs, &snap, Some(&vol), true)
        .await
        .unwrap();
    let comment = lineage("pvc-1", 1 << 20, CopyMethod::Subvolume);
    s.rds
        .adopt_file(
            &snap,
            &path("/storage-pool/snap-1/volume.img"),
            None,
            &comment,
        )
        .await
        .unwrap();
    assert_eq!(s.sim.stats().commands, 2);
    write_at(s.dir.path(), "pvc-1/volume.img", 512, b"pattern-B");

    let disk = s.rds.get_disk(&snap).await.unwrap().unwrap();
    assert_eq!(disk.comment, comment);
    assert!(!disk.exported);
    assert_eq!(disk.size_bytes, 1 << 20);
    let sub = s.rds.get_subvolume(&snap).await.unwrap().unwrap();
    assert!(sub.read_only);

    // Clone: a writable snapshot of the snapshot, exported and grown.
    let clone = slot("pvc-2");
    s.rds
        .create_subvolume(&fs, &clone, Some(&snap), false)
        .await
        .unwrap();
    s.rds
        .adopt_file(
            &clone,
            &path("/storage-pool/pvc-2/volume.img"),
            Some((4420, nqn(&clone))),
            &DiskComment::default(),
        )
        .await
        .unwrap();
    s.rds.resize_disk(&clone, 2 << 20).await.unwrap();
    assert_eq!(
        read_at(s.dir.path(), "pvc-2/volume.img", 512, 9),
        b"pattern-A"
    );
    assert!(s.rds.get_disk(&clone).await.unwrap().unwrap().exported);

    // Deleting in any order leaves nothing: the volume first, then the
    // snapshot, then the clone.
    for name in [&vol, &snap, &clone] {
        s.rds.remove_disk_confirmed(name).await.unwrap();
        s.rds.remove_subvolume(name).await.unwrap();
        assert_eq!(s.rds.get_subvolume(name).await.unwrap(), None);
    }
    assert!(s.sim.files().is_empty(), "{:?}", s.sim.files());
    // Removing again is not an error.
    s.rds.remove_subvolume(&snap).await.unwrap();
}

#[tokio::test]
async fn a_copy_from_snapshot_is_listed_with_its_lineage_and_restores_the_data() {
    let s = setup(PoolFs::Xfs).await;
    assert_eq!(
        s.rds.pool_filesystem(&slot("storage-pool")).await.unwrap(),
        PoolFilesystem::Xfs
    );
    let vol = s.volume("pvc-1", "/storage-pool/metal-csi/pvc-1.img").await;
    write_at(s.dir.path(), "metal-csi/pvc-1.img", 0, b"flat");
    let snap = slot("snap-1");
    let comment = lineage("pvc-1", 1 << 20, CopyMethod::CopyFrom);
    s.rds
        .copy_from(
            &vol,
            &snap,
            &path("/storage-pool/metal-csi/snap-1.img"),
            None,
            &comment,
        )
        .await
        .unwrap();
    assert_eq!(
        s.rds.get_disk(&snap).await.unwrap().unwrap().comment,
        comment
    );
    let restored = slot("pvc-2");
    s.rds
        .copy_from(
            &snap,
            &restored,
            &path("/storage-pool/metal-csi/pvc-2.img"),
            Some((2 << 20, 4420, nqn(&restored))),
            &DiskComment::default(),
        )
        .await
        .unwrap();
    assert_eq!(read_at(s.dir.path(), "metal-csi/pvc-2.img", 0, 4), b"flat");
    // XFS has no subvolumes: RouterOS answers that the file system is not
    // there.
    let err = s
        .rds
        .create_subvolume(&slot("storage-pool"), &slot("x"), None, false)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NotFound(_)), "{err:?}");
}

#[tokio::test]
async fn a_byte_copy_reports_progress_until_the_data_has_landed() {
    let s = setup(PoolFs::Xfs).await;
    let vol = s.volume("pvc-1", "/storage-pool/metal-csi/pvc-1.img").await;
    write_at(s.dir.path(), "metal-csi/pvc-1.img", 4096, b"bytes");
    let snap = slot("snap-1");
    s.rds
        .add_unexported_disk(
            &snap,
            &path("/storage-pool/metal-csi/snap-1.img"),
            1 << 20,
            &lineage("pvc-1", 1 << 20, CopyMethod::ByteCopy),
        )
        .await
        .unwrap();
    s.sim.set_copy_rate(1);
    s.rds.start_byte_copy(&vol, &snap).await.unwrap();
    match s.rds.copy_state(&snap).await.unwrap() {
        CopyState::Copying(p) => {
            assert_eq!(p.total, 1 << 20);
            assert!(p.percent() < 100);
        }
        other => panic!("expected a running copy, got {other:?}"),
    }
    s.sim.set_copy_rate(u64::MAX);
    assert_eq!(s.rds.copy_state(&snap).await.unwrap(), CopyState::Idle);
    assert_eq!(
        read_at(s.dir.path(), "metal-csi/snap-1.img", 4096, 5),
        b"bytes"
    );
    assert_eq!(
        s.rds.copy_state(&slot("nope")).await.unwrap(),
        CopyState::Absent
    );
}
