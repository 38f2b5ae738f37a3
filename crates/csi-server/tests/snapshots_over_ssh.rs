//! Snapshots, restores and clones through the controller's gRPC socket,
//! with the real RouterOS client and the simulator over SSH keeping the
//! images as files: what a restored or cloned volume holds is read back
//! byte for byte, for the subvolume and the flat layout.

mod ssh_env;

use std::io::{Seek, SeekFrom, Write};

use csi_server::proto::{self, volume_content_source::Type};
use rds_sim::PoolFs;
use ssh_env::*;
use tonic::Code;

const SUBVOLUME: &[(&str, &str)] = &[("volumeLayout", "subvolume")];
const FLAT: &[(&str, &str)] = &[];

fn write_at(path: &std::path::Path, at: u64, data: &[u8]) {
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
}

fn read_at(path: &std::path::Path, at: u64, len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

impl Env {
    /// The image of volume or snapshot `id` in either layout.
    fn image(&self, id: &str) -> std::path::PathBuf {
        let sub = self.pool_file(&format!("{id}/volume.img"));
        if sub.exists() {
            sub
        } else {
            self.backing_file(id)
        }
    }

    async fn snapshot(&self, name: &str, volume: &str) -> Result<proto::Snapshot, tonic::Status> {
        self.snapshot_with(name, volume, &[]).await
    }

    /// CreateSnapshot asked again until the snapshot is ready, as the
    /// csi-snapshotter does; the first answer and the ready one.
    async fn snapshot_until_ready(
        &self,
        name: &str,
        volume: &str,
    ) -> (proto::Snapshot, proto::Snapshot) {
        let first = self.snapshot(name, volume).await.unwrap();
        let mut last = first.clone();
        for _ in 0..10 {
            if last.ready_to_use {
                return (first, last);
            }
            last = self.snapshot(name, volume).await.unwrap();
        }
        panic!("snapshot {name} never became ready: {last:?}");
    }

    async fn snapshot_with(
        &self,
        name: &str,
        volume: &str,
        params: &[(&str, &str)],
    ) -> Result<proto::Snapshot, tonic::Status> {
        let req = proto::CreateSnapshotRequest {
            name: name.into(),
            source_volume_id: volume.into(),
            parameters: params_of(params),
            ..Default::default()
        };
        let resp = self.client.clone().create_snapshot(req).await?;
        Ok(resp.into_inner().snapshot.unwrap())
    }

    async fn delete_snapshot(&self, id: &str) -> Result<(), tonic::Status> {
        let req = proto::DeleteSnapshotRequest {
            snapshot_id: id.into(),
            ..Default::default()
        };
        self.client.clone().delete_snapshot(req).await.map(drop)
    }

    async fn list_snapshots(&self, source: &str) -> Vec<proto::Snapshot> {
        let req = proto::ListSnapshotsRequest {
            source_volume_id: source.into(),
            ..Default::default()
        };
        let resp = self.client.clone().list_snapshots(req).await.unwrap();
        resp.into_inner()
            .entries
            .into_iter()
            .filter_map(|e| e.snapshot)
            .collect()
    }

    /// CreateVolume `name` of `bytes` from `source` in a class with `params`.
    async fn create_from(
        &self,
        name: &str,
        bytes: i64,
        source: Type,
        params: &[(&str, &str)],
    ) -> Result<proto::Volume, tonic::Status> {
        self.create_from_source(name, bytes, Some(source), params)
            .await
    }

    /// Nothing left on the RDS: no disk, no file, no subvolume.
    fn assert_empty(&self) {
        assert!(self.sim.disks().is_empty(), "{:?}", self.sim.disks());
        assert!(self.sim.files().is_empty(), "{:?}", self.sim.files());
        assert!(
            self.sim.subvolumes().is_empty(),
            "{:?}",
            self.sim.subvolumes()
        );
    }
}

fn from_snapshot(id: &str) -> Type {
    Type::Snapshot(proto::volume_content_source::SnapshotSource {
        snapshot_id: id.into(),
    })
}

fn from_volume(id: &str) -> Type {
    Type::Volume(proto::volume_content_source::VolumeSource {
        volume_id: id.into(),
    })
}

/// Snapshot, overwrite, restore bigger, clone: each new volume holds the
/// bytes it should, in the class's layout.
async fn snapshot_restore_and_clone_keep_the_data(params: &[(&str, &str)]) -> Env {
    let e = Env::on_disk().await;
    e.create_with("pvc-src", GIB, params).await.unwrap();
    write_at(&e.image("pvc-src"), 4096, b"pattern-A");

    let (first, snap) = e.snapshot_until_ready("snapshot-1", "pvc-src").await;
    assert_eq!(first.creation_time, snap.creation_time);
    assert!(snap.snapshot_id.starts_with("snap-"), "{snap:?}");
    assert_eq!(snap.source_volume_id, "pvc-src");
    assert_eq!(snap.size_bytes, GIB);
    assert!(snap.ready_to_use);
    assert!(snap.creation_time.is_some());
    write_at(&e.image("pvc-src"), 4096, b"pattern-B");

    let restored = e
        .create_from(
            "pvc-restored",
            2 * GIB,
            from_snapshot(&snap.snapshot_id),
            params,
        )
        .await
        .unwrap();
    assert_eq!(restored.capacity_bytes, 2 * GIB);
    assert!(restored.content_source.is_some());
    assert_eq!(read_at(&e.image("pvc-restored"), 4096, 9), b"pattern-A");
    assert_eq!(
        std::fs::metadata(e.image("pvc-restored")).unwrap().len(),
        2 << 30
    );

    let clone = e
        .create_from("pvc-clone", GIB, from_volume("pvc-src"), params)
        .await
        .unwrap();
    assert_eq!(clone.capacity_bytes, GIB);
    assert_eq!(read_at(&e.image("pvc-clone"), 4096, 9), b"pattern-B");
    // Writing the copies leaves the source and the snapshot alone.
    write_at(&e.image("pvc-clone"), 4096, b"pattern-C");
    assert_eq!(read_at(&e.image("pvc-src"), 4096, 9), b"pattern-B");
    assert_eq!(read_at(&e.image(&snap.snapshot_id), 4096, 9), b"pattern-A");

    let listed = e.list_snapshots("pvc-src").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot_id, snap.snapshot_id);
    assert_eq!(listed[0].creation_time, snap.creation_time);
    e
}

#[tokio::test]
async fn a_subvolume_volume_snapshot_restores_and_clones_the_bytes_it_held() {
    let e = snapshot_restore_and_clone_keep_the_data(SUBVOLUME).await;
    let subs: Vec<String> = e.sim.subvolumes().into_iter().map(|s| s.0).collect();
    assert_eq!(subs.len(), 4, "{subs:?}");
    // Deleting in any order leaves nothing: the source first.
    e.delete("pvc-src").await.unwrap();
    let snap = e.list_snapshots("pvc-src").await.remove(0).snapshot_id;
    e.delete("pvc-clone").await.unwrap();
    e.delete_snapshot(&snap).await.unwrap();
    e.delete("pvc-restored").await.unwrap();
    e.assert_empty();
}

#[tokio::test]
async fn a_flat_volume_snapshot_by_copy_from_restores_and_clones_the_bytes_it_held() {
    let e = snapshot_restore_and_clone_keep_the_data(FLAT).await;
    assert!(e.sim.subvolumes().is_empty());
    let snap = e.list_snapshots("pvc-src").await.remove(0).snapshot_id;
    assert!(
        e.backing_file(&snap).exists(),
        "the snapshot is a flat image beside its volume"
    );
    e.delete_snapshot(&snap).await.unwrap();
    for v in ["pvc-restored", "pvc-src", "pvc-clone"] {
        e.delete(v).await.unwrap();
    }
    e.assert_empty();
}

#[tokio::test]
async fn a_subvolume_snapshot_takes_two_commands_and_is_ready_on_the_next_ask() {
    let e = Env::on_disk().await;
    e.create_with("pvc-count", GIB, SUBVOLUME).await.unwrap();
    e.sim.reset_stats();
    let first = e.snapshot("snapshot-count", "pvc-count").await.unwrap();
    assert_eq!(
        e.sim.stats().commands,
        2,
        "snapshot the volume's subvolume, add the snapshot's disk"
    );
    // The first answer has the creation time (a frozen guest may thaw) but
    // not the size: the next ask reads the snapshot's disk and is ready.
    assert!(!first.ready_to_use);
    assert!(first.creation_time.is_some());
    e.sim.reset_stats();
    let again = e.snapshot("snapshot-count", "pvc-count").await.unwrap();
    assert_eq!(
        e.sim.stats().commands,
        1,
        "the second ask reads the snapshot's disk"
    );
    assert!(again.ready_to_use);
    assert_eq!(again.size_bytes, GIB);
    assert_eq!(again.creation_time, first.creation_time);
}

#[tokio::test]
async fn a_flat_volume_snapshot_takes_a_lookup_and_one_copy_from() {
    let e = Env::on_disk().await;
    e.create("pvc-flat", GIB).await.unwrap();
    e.sim.reset_stats();
    let snap = e.snapshot("snapshot-flat", "pvc-flat").await.unwrap();
    assert!(snap.ready_to_use);
    assert_eq!(
        e.sim.stats().commands,
        2,
        "a volume known to be flat does not try a subvolume snapshot first"
    );
}

#[tokio::test]
async fn a_half_made_subvolume_snapshot_is_completed_by_the_retry() {
    let e = Env::on_disk().await;
    e.create_with("pvc-half", GIB, SUBVOLUME).await.unwrap();
    let id = csi_server::snapshot::snapshot_id("snapshot-half");
    // A first attempt took the subvolume snapshot, then lost the RDS.
    let fs = routeros::Slot::new("storage-pool").unwrap();
    let vol = routeros::Slot::new("pvc-half").unwrap();
    e.rds
        .create_subvolume(&fs, &id, Some(&vol), true)
        .await
        .unwrap();
    let snap = e.snapshot("snapshot-half", "pvc-half").await.unwrap();
    assert_eq!(snap.snapshot_id, id.as_str());
    assert_eq!(e.list_snapshots("pvc-half").await.len(), 1);
}

#[tokio::test]
async fn the_subvolume_layout_on_an_xfs_pool_is_refused_at_create_volume() {
    let e = Env::on_disk_with(PoolFs::Xfs).await;
    let err = e.create_with("pvc-x", GIB, SUBVOLUME).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("Btrfs"), "{}", err.message());
    // Flat volumes snapshot by copy-from there.
    e.create("pvc-y", GIB).await.unwrap();
    let snap = e.snapshot("snapshot-y", "pvc-y").await.unwrap();
    assert!(snap.ready_to_use);
    e.assert_empty_but(&["pvc-y", &snap.snapshot_id]);
}

impl Env {
    fn assert_empty_but(&self, slots: &[&str]) {
        let mut left: Vec<String> = self.sim.disks().into_iter().map(|d| d.slot).collect();
        left.sort();
        let mut want: Vec<String> = slots.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(left, want);
    }
}

#[tokio::test]
async fn restores_too_small_missing_sources_and_unmanaged_ones_are_refused_with_their_codes() {
    let e = Env::on_disk().await;
    e.create("pvc-big", 2 * GIB).await.unwrap();
    let snap = e.snapshot("snapshot-big", "pvc-big").await.unwrap();
    let cases = [
        (from_snapshot(&snap.snapshot_id), GIB, Code::OutOfRange),
        (from_volume("pvc-big"), GIB, Code::OutOfRange),
        (
            from_snapshot("snap-00000000-0000-5000-8000-000000000000"),
            GIB,
            Code::NotFound,
        ),
        (from_volume("pvc-nope"), GIB, Code::NotFound),
        (from_volume("other-1"), GIB, Code::InvalidArgument),
    ];
    for (i, (source, bytes, code)) in cases.into_iter().enumerate() {
        let err = e
            .create_from(&format!("pvc-r{i}"), bytes, source, FLAT)
            .await
            .unwrap_err();
        assert_eq!(err.code(), code, "case {i}: {err:?}");
    }
    let err = e
        .snapshot("snapshot-none", "pvc-missing")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = e
        .snapshot_with("snapshot-rsync", "pvc-big", &[("copyMethod", "rsync")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = e.create("snap-volume", GIB).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "snap- is for snapshots");
    // Nothing was made by the refusals.
    e.assert_empty_but(&["pvc-big", &snap.snapshot_id]);
}

#[tokio::test]
async fn a_go_driver_snapshot_is_listed_restored_and_deleted() {
    let e = Env::on_disk().await;
    let uuid = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";
    let volume = format!("pvc-{uuid}");
    e.create(&volume, GIB).await.unwrap();
    write_at(&e.image(&volume), 0, b"from-go");
    // What the Go driver's CreateSnapshot sends: copy-from, no comment.
    let slot = format!("snap-{uuid}-at-1739800000");
    e.rds
        .copy_from(
            &routeros::Slot::new(&volume).unwrap(),
            &routeros::Slot::new(&slot).unwrap(),
            &routeros::RosPath::new(&format!("/storage-pool/metal-csi/{slot}.img")).unwrap(),
            None,
            &routeros::DiskComment::default(),
        )
        .await
        .unwrap();

    let listed = e.list_snapshots(&volume).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].snapshot_id, slot);
    assert_eq!(listed[0].size_bytes, GIB);
    assert_eq!(
        listed[0].creation_time.as_ref().map(|t| t.seconds),
        Some(1_739_800_000)
    );

    e.create_from("pvc-from-go", GIB, from_snapshot(&slot), FLAT)
        .await
        .unwrap();
    assert_eq!(read_at(&e.image("pvc-from-go"), 0, 7), b"from-go");
    e.delete_snapshot(&slot).await.unwrap();
    assert!(!e.backing_file(&slot).exists());
    e.assert_empty_but(&[&volume, "pvc-from-go"]);
}

const BYTE_COPY: &[(&str, &str)] = &[("copyMethod", "copy")];

#[tokio::test]
async fn a_byte_copy_snapshot_is_ready_only_once_its_bytes_have_landed() {
    let e = Env::on_disk().await;
    e.create("pvc-slow", GIB).await.unwrap();
    write_at(&e.image("pvc-slow"), 512, b"copied-bytes");
    e.sim.set_copy_rate(1);

    let snap = e
        .snapshot_with("snapshot-slow", "pvc-slow", BYTE_COPY)
        .await
        .unwrap();
    assert!(!snap.ready_to_use, "{snap:?}");
    assert!(!e.list_snapshots("pvc-slow").await[0].ready_to_use);
    // While the copy reads the volume, nobody may attach it.
    let err = e.publish("pvc-slow", "node-a", cap()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("being copied"), "{}", err.message());
    let again = e
        .snapshot_with("snapshot-slow", "pvc-slow", BYTE_COPY)
        .await
        .unwrap();
    assert!(!again.ready_to_use);
    // A restore from it waits for it.
    let err = e
        .create_from("pvc-early", GIB, from_snapshot(&snap.snapshot_id), FLAT)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");

    e.sim.set_copy_rate(u64::MAX);
    let done = e
        .snapshot_with("snapshot-slow", "pvc-slow", BYTE_COPY)
        .await
        .unwrap();
    assert!(done.ready_to_use, "{done:?}");
    assert_eq!(done.creation_time, snap.creation_time);
    assert!(e.list_snapshots("pvc-slow").await[0].ready_to_use);
    assert_eq!(
        read_at(&e.image(&snap.snapshot_id), 512, 12),
        b"copied-bytes"
    );
    e.publish("pvc-slow", "node-a", cap()).await.unwrap();
}

#[tokio::test]
async fn a_byte_copy_clone_answers_unavailable_until_its_copy_is_done() {
    let e = Env::on_disk().await;
    e.create("pvc-golden", GIB).await.unwrap();
    write_at(&e.image("pvc-golden"), 0, b"golden-image");
    e.sim.set_copy_rate(1);
    let err = e
        .create_from("pvc-vm", GIB, from_volume("pvc-golden"), BYTE_COPY)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    let err = e
        .create_from("pvc-vm", GIB, from_volume("pvc-golden"), BYTE_COPY)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "still copying: {err:?}");
    e.sim.set_copy_rate(u64::MAX);
    e.create_from("pvc-vm", GIB, from_volume("pvc-golden"), BYTE_COPY)
        .await
        .unwrap();
    assert_eq!(read_at(&e.image("pvc-vm"), 0, 12), b"golden-image");
    let disk = e
        .sim
        .disks()
        .into_iter()
        .find(|d| d.slot == "pvc-vm")
        .unwrap();
    assert!(
        !disk.comment.contains("copy-of"),
        "mark cleared: {}",
        disk.comment
    );
}

#[tokio::test]
async fn a_byte_copy_of_an_attached_volume_is_refused_and_makes_nothing() {
    let e = Env::on_disk().await;
    e.create("pvc-busy", GIB).await.unwrap();
    e.publish("pvc-busy", "node-a", cap()).await.unwrap();
    let err = e
        .snapshot_with("snapshot-busy", "pvc-busy", BYTE_COPY)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("node-a"), "{}", err.message());
    let err = e
        .create_from("pvc-c", GIB, from_volume("pvc-busy"), BYTE_COPY)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    e.assert_empty_but(&["pvc-busy"]);
}

#[tokio::test]
async fn a_byte_copy_whose_start_was_lost_is_started_again_by_the_retry() {
    let e = Env::on_disk().await;
    e.create("pvc-lost", GIB).await.unwrap();
    write_at(&e.image("pvc-lost"), 0, b"not-lost");
    e.sim.set_copy_rate(u64::MAX);
    // A controller added the snapshot's disk with its mark, then died
    // before starting the copy: the disk looks idle but holds nothing.
    let id = csi_server::snapshot::snapshot_id("snapshot-lost");
    let vol = routeros::Slot::new("pvc-lost").unwrap();
    let comment = routeros::DiskComment {
        created: Some("2026-12-07T11:00:00Z".parse().unwrap()),
        snapshot: Some(routeros::Lineage {
            source: vol.clone(),
            size_bytes: Some(1 << 30),
            method: routeros::CopyMethod::ByteCopy,
        }),
        copy_of: Some(vol),
        ..Default::default()
    };
    let file = routeros::RosPath::new(&format!("/storage-pool/metal-csi/{id}.img")).unwrap();
    e.rds
        .add_unexported_disk(&id, &file, 1 << 30, &comment)
        .await
        .unwrap();
    assert!(!e.list_snapshots("pvc-lost").await[0].ready_to_use);

    let first = e
        .snapshot_with("snapshot-lost", "pvc-lost", BYTE_COPY)
        .await
        .unwrap();
    assert!(
        !first.ready_to_use,
        "the copy was started again, not trusted"
    );
    let done = e
        .snapshot_with("snapshot-lost", "pvc-lost", BYTE_COPY)
        .await
        .unwrap();
    assert!(done.ready_to_use);
    assert_eq!(read_at(&e.image(id.as_str()), 0, 8), b"not-lost");
}
