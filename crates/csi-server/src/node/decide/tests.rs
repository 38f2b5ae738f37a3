//! Each decision as a table: the facts, and the decision they must give.
// The tables spell each case out as a tuple of facts and the decision.
#![allow(clippy::type_complexity)]

use std::path::Path;

use nvme::mount::MountState;
use nvme::mountinfo::Mount;
use nvme::{DevId, FileKind, FileStat, FsType};

use super::*;

const ID: &str = "pvc-1";
const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";
const OTHER_NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1-old";
const STAGING: &str = "/k/plugins/x/globalmount";
const OTHER_STAGING: &str = "/k/plugins/y/globalmount";
const TARGET: &str = "/k/pods/p1/mount";

fn dev() -> DevId {
    DevId::new(259, 1)
}

fn mount(at: &str, fs: &str, minor: u32, options: &str) -> Mount {
    Mount {
        id: 30,
        parent: 1,
        major: 259,
        minor,
        root: "/".into(),
        mount_point: at.into(),
        options: options.into(),
        fs_type: fs.into(),
        source: format!("/dev/nvme0n{minor}"),
    }
}

fn stat(kind: FileKind, rdev: Option<DevId>, size: u64, mode: u32) -> FileStat {
    FileStat {
        kind,
        rdev,
        size,
        mode,
        changed: None,
    }
}

/// One row of a table: the decision, or the refusal by name.
fn check<T: PartialEq + std::fmt::Debug>(
    i: usize,
    got: Result<T, NodeError>,
    want: Result<T, &str>,
) {
    match want {
        Ok(d) => assert_eq!(got.unwrap(), d, "case {i}"),
        Err(name) => assert_eq!(refusal(got), name, "case {i}"),
    }
}

/// The name of a refusal, for the tables.
fn refusal<T: std::fmt::Debug>(r: Result<T, NodeError>) -> &'static str {
    match r {
        Ok(v) => panic!("expected a refusal, got {v:?}"),
        Err(NodeError::StagedElsewhere { .. }) => "staged elsewhere",
        Err(NodeError::StagedAsOtherKind { .. }) => "staged as other kind",
        Err(NodeError::StagedWithOtherFs { .. }) => "staged with other fs",
        Err(NodeError::MountedAsOtherFs { .. }) => "mounted as other fs",
        Err(NodeError::PublishedAsOtherKind { .. }) => "published as other kind",
        Err(NodeError::SingleWriterPublished { .. }) => "single writer published",
        Err(NodeError::NotStaged { .. }) => "not staged",
        Err(NodeError::PublishedWithOtherReadOnly { .. }) => "other read-only",
        Err(NodeError::TargetIsAnotherMount { .. }) => "another mount",
        Err(NodeError::TargetOccupied { .. }) => "occupied",
        Err(NodeError::StillAMountPoint { .. }) => "still a mount point",
        Err(NodeError::TargetHasContent { .. }) => "has content",
        Err(NodeError::StillPublished { .. }) => "still published",
        Err(NodeError::StillMounted { .. }) => "still mounted",
        Err(NodeError::DeviceInUse { .. }) => "in use",
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

#[test]
fn a_second_stage_is_refused_only_while_the_first_is_mounted_elsewhere_or_as_another_kind() {
    // (previous path, previous block, previous nqn, mounted, request path, request block) -> outcome
    let cases: &[(&str, bool, &str, bool, &str, bool, Result<Keep, &str>)] = &[
        (
            STAGING,
            false,
            NQN,
            true,
            STAGING,
            false,
            Ok(Keep {
                format_history: true,
                targets: true,
            }),
        ),
        (
            STAGING,
            false,
            NQN,
            false,
            STAGING,
            false,
            Ok(Keep {
                format_history: true,
                targets: true,
            }),
        ),
        (
            OTHER_STAGING,
            false,
            NQN,
            true,
            STAGING,
            false,
            Err("staged elsewhere"),
        ),
        (
            OTHER_STAGING,
            false,
            NQN,
            false,
            STAGING,
            false,
            Ok(Keep {
                format_history: true,
                targets: false,
            }),
        ),
        (
            STAGING,
            true,
            NQN,
            true,
            STAGING,
            false,
            Err("staged as other kind"),
        ),
        (
            STAGING,
            false,
            NQN,
            true,
            STAGING,
            true,
            Err("staged as other kind"),
        ),
        (
            STAGING,
            true,
            NQN,
            false,
            STAGING,
            false,
            Ok(Keep {
                format_history: true,
                targets: true,
            }),
        ),
        (
            STAGING,
            false,
            OTHER_NQN,
            false,
            STAGING,
            false,
            Ok(Keep {
                format_history: false,
                targets: true,
            }),
        ),
    ];
    for (i, (pp, pb, pn, mounted, rp, rb, want)) in cases.iter().enumerate() {
        let prev = Previous {
            staging_path: Path::new(pp),
            block: *pb,
            nqn: pn,
            mounted: *mounted,
        };
        let req = Staging {
            volume: ID,
            staging_path: Path::new(rp),
            block: *rb,
            nqn: NQN,
        };
        let got = restage(&prev, &req);
        check(i, got, *want);
    }
}

#[test]
fn the_staging_path_decides_between_done_remount_and_mount() {
    let ext4 = mount(STAGING, "ext4", 1, "rw");
    let stale = mount(STAGING, "ext4", 9, "rw");
    let cases = [
        (
            MountState::Current(ext4.clone()),
            FsType::Ext4,
            Ok(StagingMount::Done),
        ),
        (
            MountState::Current(ext4),
            FsType::Xfs,
            Err("staged with other fs"),
        ),
        (
            MountState::Other(stale.clone()),
            FsType::Ext4,
            Ok(StagingMount::DropStale(stale)),
        ),
        (MountState::NotMounted, FsType::Xfs, Ok(StagingMount::Mount)),
    ];
    for (i, (state, fs, want)) in cases.into_iter().enumerate() {
        let got = staging_mount(ID, Path::new(STAGING), fs, state);
        check(i, got, want);
    }
}

#[test]
fn a_device_mounted_elsewhere_is_shared_and_the_record_is_read_only_when_formatting_is_possible() {
    let dev_path = Path::new("/dev/nvme0n1");
    let ext4 = mount(OTHER_STAGING, "ext4", 1, "rw");
    let cases = [
        (Some(&ext4), FsType::Ext4, false, Ok(Filesystem::Shared)),
        (Some(&ext4), FsType::Ext4, true, Ok(Filesystem::Shared)),
        (Some(&ext4), FsType::Xfs, false, Err("mounted as other fs")),
        (
            None,
            FsType::Ext4,
            false,
            Ok(Filesystem::Prepare { read_record: true }),
        ),
        (
            None,
            FsType::Ext4,
            true,
            Ok(Filesystem::Prepare { read_record: false }),
        ),
    ];
    for (i, (elsewhere, fs, before, want)) in cases.into_iter().enumerate() {
        let got = filesystem(dev_path, fs, elsewhere, before);
        check(i, got, want);
    }
}

#[test]
fn a_publish_keeps_the_staged_kind_and_a_single_writer_to_one_target() {
    let other = Path::new("/k/pods/p2/mount");
    // (staged block, requested block, single writer, published elsewhere) -> outcome
    let cases: &[(bool, bool, bool, Option<&Path>, Result<(), &str>)] = &[
        (false, false, false, None, Ok(())),
        (true, true, false, Some(other), Ok(())),
        (false, false, false, Some(other), Ok(())),
        (false, false, true, None, Ok(())),
        (
            false,
            false,
            true,
            Some(other),
            Err("single writer published"),
        ),
        (true, false, false, None, Err("published as other kind")),
        (
            false,
            true,
            true,
            Some(other),
            Err("published as other kind"),
        ),
    ];
    for (i, (sb, rb, sw, elsewhere, want)) in cases.iter().enumerate() {
        let got = may_publish(ID, *sb, *rb, *sw, *elsewhere);
        check(i, got, *want);
    }
}

#[test]
fn a_filesystem_publish_binds_from_a_current_staging_mount_and_recovers_a_stale_one() {
    let cur = mount(STAGING, "ext4", 1, "rw");
    let stale = mount(STAGING, "ext4", 9, "rw");
    assert_eq!(
        staged_from(ID, Path::new(STAGING), MountState::Current(cur.clone())).unwrap(),
        StagedFrom::Current(cur)
    );
    assert_eq!(
        staged_from(ID, Path::new(STAGING), MountState::Other(stale.clone())).unwrap(),
        StagedFrom::Stale(stale)
    );
    assert_eq!(
        refusal(staged_from(ID, Path::new(STAGING), MountState::NotMounted)),
        "not staged"
    );
}

#[test]
fn a_filesystem_target_is_bound_once_with_one_read_only_setting() {
    let rw = mount(TARGET, "ext4", 1, "rw,relatime");
    let ro = mount(TARGET, "ext4", 1, "ro,relatime");
    let stale = mount(TARGET, "ext4", 9, "rw");
    let cases = [
        (MountState::Current(rw.clone()), false, Ok(BindTarget::Done)),
        (MountState::Current(ro.clone()), true, Ok(BindTarget::Done)),
        (MountState::Current(rw), true, Err("other read-only")),
        (MountState::Current(ro), false, Err("other read-only")),
        (
            MountState::Other(stale.clone()),
            false,
            Ok(BindTarget::DropStaleThenBind(stale)),
        ),
        (MountState::NotMounted, true, Ok(BindTarget::Bind)),
    ];
    for (i, (state, readonly, want)) in cases.into_iter().enumerate() {
        let got = bind_target(ID, Path::new(TARGET), readonly, state);
        check(i, got, want);
    }
}

#[test]
fn a_block_target_gets_a_device_node_and_never_replaces_what_it_must_not() {
    use FileKind::*;
    let other = DevId::new(259, 9);
    // (existing, mounted, readonly) -> outcome
    let cases: &[(Option<FileStat>, bool, bool, Result<NodeTarget, &str>)] = &[
        (None, false, false, Ok(NodeTarget::Create(Clear::Nothing))),
        (
            Some(stat(BlockDevice, Some(dev()), 0, 0o660)),
            false,
            false,
            Ok(NodeTarget::Done),
        ),
        (
            Some(stat(BlockDevice, Some(dev()), 0, 0o440)),
            false,
            true,
            Ok(NodeTarget::Done),
        ),
        (
            Some(stat(BlockDevice, Some(dev()), 0, 0o660)),
            false,
            true,
            Err("other read-only"),
        ),
        (
            Some(stat(BlockDevice, Some(dev()), 0, 0o440)),
            false,
            false,
            Err("other read-only"),
        ),
        (
            Some(stat(BlockDevice, Some(dev()), 0, 0o660)),
            true,
            true,
            Ok(NodeTarget::OlderBindMount),
        ),
        (
            Some(stat(BlockDevice, Some(other), 0, 0o660)),
            true,
            false,
            Err("another mount"),
        ),
        (
            Some(stat(Dir, None, 0, 0o755)),
            true,
            false,
            Err("another mount"),
        ),
        (
            Some(stat(BlockDevice, Some(other), 0, 0o660)),
            false,
            false,
            Ok(NodeTarget::Create(Clear::OtherDeviceNode {
                old: Some(other),
            })),
        ),
        (
            Some(stat(File, None, 0, 0o644)),
            false,
            false,
            Ok(NodeTarget::Create(Clear::EmptyFile)),
        ),
        (
            Some(stat(File, None, 10, 0o644)),
            false,
            false,
            Err("occupied"),
        ),
        (
            Some(stat(Dir, None, 0, 0o755)),
            false,
            false,
            Ok(NodeTarget::Create(Clear::Directory)),
        ),
        (
            Some(stat(Symlink, None, 0, 0o777)),
            false,
            false,
            Err("occupied"),
        ),
        (
            Some(stat(CharDevice, None, 0, 0o666)),
            false,
            false,
            Err("occupied"),
        ),
    ];
    for (i, (existing, mounted, readonly, want)) in cases.iter().enumerate() {
        let got = device_node_target(
            ID,
            Path::new(TARGET),
            *readonly,
            dev(),
            existing.as_ref(),
            *mounted,
        );
        check(i, got, *want);
    }
}

#[test]
fn unpublish_removes_only_what_it_may_and_never_a_mount_point() {
    use FileKind::*;
    let cases: &[(bool, Option<FileStat>, Result<Option<Removal>, &str>)] = &[
        (
            true,
            Some(stat(Dir, None, 0, 0o755)),
            Err("still a mount point"),
        ),
        (false, None, Ok(None)),
        (
            false,
            Some(stat(Dir, None, 0, 0o755)),
            Ok(Some(Removal::Rmdir)),
        ),
        (
            false,
            Some(stat(BlockDevice, Some(dev()), 0, 0o660)),
            Ok(Some(Removal::Unlink)),
        ),
        (
            false,
            Some(stat(Symlink, None, 0, 0o777)),
            Ok(Some(Removal::Unlink)),
        ),
        (
            false,
            Some(stat(File, None, 0, 0o644)),
            Ok(Some(Removal::Unlink)),
        ),
        (false, Some(stat(File, None, 1, 0o644)), Err("has content")),
        (
            false,
            Some(stat(CharDevice, None, 0, 0o666)),
            Err("has content"),
        ),
        (false, Some(stat(Other, None, 0, 0o666)), Err("has content")),
    ];
    for (i, (mounted, existing, want)) in cases.iter().enumerate() {
        let got = unpublished_removal(Path::new(TARGET), *mounted, existing.as_ref());
        check(i, got, *want);
    }
}

#[test]
fn unstage_unmounts_only_when_nothing_else_holds_the_volume() {
    let cur = mount(STAGING, "ext4", 1, "rw");
    let stale = mount(STAGING, "ext4", 9, "rw");
    let target = Path::new(TARGET);
    let device = (Path::new("/dev/nvme0n1"), Path::new("/mnt/elsewhere"));
    let cases = [
        (
            Some(target),
            None,
            MountState::Current(cur.clone()),
            Err("still published"),
        ),
        (
            Some(target),
            Some(device),
            MountState::NotMounted,
            Err("still published"),
        ),
        (
            None,
            Some(device),
            MountState::Current(cur.clone()),
            Err("still mounted"),
        ),
        (None, None, MountState::Current(cur), Ok(Unmount::Staging)),
        (
            None,
            None,
            MountState::Other(stale.clone()),
            Ok(Unmount::Stale(stale)),
        ),
        (None, None, MountState::NotMounted, Ok(Unmount::Nothing)),
    ];
    for (i, (published, elsewhere, state, want)) in cases.into_iter().enumerate() {
        let got = unstage(ID, published, elsewhere, state);
        check(i, got, want);
    }
    may_disconnect(ID, None).unwrap();
    assert_eq!(
        refusal(may_disconnect(ID, Some("held open".into()))),
        "in use"
    );
}

#[test]
fn a_target_still_holds_the_volume_while_mounted_or_a_node_of_its_device() {
    use FileKind::*;
    let devs = [dev()];
    let cases = [
        (None, false, false),
        (None, true, false),
        (Some(stat(Dir, None, 0, 0o755)), true, true),
        (Some(stat(Dir, None, 0, 0o755)), false, false),
        (Some(stat(BlockDevice, Some(dev()), 0, 0o660)), false, true),
        (
            Some(stat(BlockDevice, Some(DevId::new(259, 9)), 0, 0o660)),
            false,
            false,
        ),
        (Some(stat(File, None, 0, 0o644)), false, false),
    ];
    for (i, (existing, mounted, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            still_published(existing.as_ref(), mounted, &devs),
            want,
            "case {i}"
        );
    }
}
