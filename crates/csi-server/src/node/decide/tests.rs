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

/// The file found at a target: a directory, a device node of `rdev` with
/// `mode`, a regular file of `size` bytes, a symlink, or something else of
/// `kind`.
fn dir() -> Option<FileStat> {
    Some(stat(FileKind::Dir, None, 0, 0o755))
}

fn node(rdev: DevId, mode: u32) -> Option<FileStat> {
    Some(stat(FileKind::BlockDevice, Some(rdev), 0, mode))
}

fn file(size: u64) -> Option<FileStat> {
    Some(stat(FileKind::File, None, size, 0o644))
}

fn symlink() -> Option<FileStat> {
    Some(stat(FileKind::Symlink, None, 0, 0o777))
}

fn other(kind: FileKind) -> Option<FileStat> {
    Some(stat(kind, None, 0, 0o666))
}

/// A device node's mode when published read-write, and read-only.
const RW: u32 = 0o660;
const RO: u32 = 0o440;

/// One row of a table, by its label: the decision, or the refusal by name.
fn check<T: PartialEq + std::fmt::Debug>(
    row: &str,
    got: Result<T, NodeError>,
    want: Result<T, &str>,
) {
    match want {
        Ok(d) => assert_eq!(got.unwrap(), d, "{row}"),
        Err(name) => assert_eq!(refusal(got), name, "{row}"),
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
    let keep = |format_history, targets| {
        Ok(Keep {
            format_history,
            targets,
        })
    };
    // (row, previous staging path, block, nqn, mounted, requested block) -> outcome;
    // the request is always at STAGING.
    #[rustfmt::skip]
    let cases: &[(&str, &str, bool, &str, bool, bool, Result<Keep, &str>)] = &[
        ("again, mounted",       STAGING,       false, NQN,       true,  false, keep(true, true)),
        ("again, unmounted",     STAGING,       false, NQN,       false, false, keep(true, true)),
        ("elsewhere, mounted",   OTHER_STAGING, false, NQN,       true,  false, Err("staged elsewhere")),
        ("elsewhere, unmounted", OTHER_STAGING, false, NQN,       false, false, keep(true, false)),
        ("was block, mounted",   STAGING,       true,  NQN,       true,  false, Err("staged as other kind")),
        ("now block, mounted",   STAGING,       false, NQN,       true,  true,  Err("staged as other kind")),
        ("was block, unmounted", STAGING,       true,  NQN,       false, false, keep(true, true)),
        ("another NQN",          STAGING,       false, OTHER_NQN, false, false, keep(false, true)),
    ];
    for (row, pp, pb, pn, mounted, rb, want) in cases {
        let prev = Previous {
            staging_path: Path::new(pp),
            block: *pb,
            nqn: pn,
            mounted: *mounted,
        };
        let req = Staging {
            volume: ID,
            staging_path: Path::new(STAGING),
            block: *rb,
            nqn: NQN,
        };
        check(row, restage(&prev, &req), *want);
    }
}

#[test]
fn the_staging_path_decides_between_done_remount_and_mount() {
    use MountState::*;
    let ext4 = mount(STAGING, "ext4", 1, "rw");
    let stale = mount(STAGING, "ext4", 9, "rw");
    #[rustfmt::skip]
    let cases = [
        ("current",           Current(ext4.clone()), FsType::Ext4, Ok(StagingMount::Done)),
        ("current, other fs", Current(ext4),         FsType::Xfs,  Err("staged with other fs")),
        ("stale",             Other(stale.clone()),  FsType::Ext4, Ok(StagingMount::DropStale(stale))),
        ("not mounted",       NotMounted,            FsType::Xfs,  Ok(StagingMount::Mount)),
    ];
    for (row, state, fs, want) in cases {
        check(row, staging_mount(ID, Path::new(STAGING), fs, state), want);
    }
}

#[test]
fn a_device_mounted_elsewhere_is_shared_and_the_record_is_read_only_when_formatting_is_possible() {
    let dev_path = Path::new("/dev/nvme0n1");
    let ext4 = mount(OTHER_STAGING, "ext4", 1, "rw");
    let prepare = |read_record| Ok(Filesystem::Prepare { read_record });
    #[rustfmt::skip]
    let cases = [
        ("shared",                      Some(&ext4), FsType::Ext4, false, Ok(Filesystem::Shared)),
        ("shared, formatted before",    Some(&ext4), FsType::Ext4, true,  Ok(Filesystem::Shared)),
        ("shared, other fs",            Some(&ext4), FsType::Xfs,  false, Err("mounted as other fs")),
        ("unmounted",                   None,        FsType::Ext4, false, prepare(true)),
        ("unmounted, formatted before", None,        FsType::Ext4, true,  prepare(false)),
    ];
    for (row, elsewhere, fs, before, want) in cases {
        check(row, filesystem(dev_path, fs, elsewhere, before), want);
    }
}

#[test]
fn a_publish_keeps_the_staged_kind_and_a_single_writer_to_one_target() {
    let other = Some(Path::new("/k/pods/p2/mount"));
    // (row, staged block, requested block, single writer, published elsewhere) -> outcome
    #[rustfmt::skip]
    let cases: &[(&str, bool, bool, bool, Option<&Path>, Result<(), &str>)] = &[
        ("filesystem",           false, false, false, None,  Ok(())),
        ("block, twice",         true,  true,  false, other, Ok(())),
        ("filesystem, twice",    false, false, false, other, Ok(())),
        ("single writer, once",  false, false, true,  None,  Ok(())),
        ("single writer, twice", false, false, true,  other, Err("single writer published")),
        ("staged block",         true,  false, false, None,  Err("published as other kind")),
        ("staged filesystem",    false, true,  true,  other, Err("published as other kind")),
    ];
    for (row, sb, rb, sw, elsewhere, want) in cases {
        check(row, may_publish(ID, *sb, *rb, *sw, *elsewhere), *want);
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
    use MountState::*;
    let rw = mount(TARGET, "ext4", 1, "rw,relatime");
    let ro = mount(TARGET, "ext4", 1, "ro,relatime");
    let stale = mount(TARGET, "ext4", 9, "rw");
    #[rustfmt::skip]
    let cases = [
        ("bound read-write",             Current(rw.clone()),  false, Ok(BindTarget::Done)),
        ("bound read-only",              Current(ro.clone()),  true,  Ok(BindTarget::Done)),
        ("read-write, read-only wanted", Current(rw),          true,  Err("other read-only")),
        ("read-only, read-write wanted", Current(ro),          false, Err("other read-only")),
        ("stale",                        Other(stale.clone()), false, Ok(BindTarget::DropStaleThenBind(stale))),
        ("not mounted",                  NotMounted,           true,  Ok(BindTarget::Bind)),
    ];
    for (row, state, readonly, want) in cases {
        check(
            row,
            bind_target(ID, Path::new(TARGET), readonly, state),
            want,
        );
    }
}

#[test]
fn a_block_target_gets_a_device_node_and_never_replaces_what_it_must_not() {
    use NodeTarget::*;
    let old = DevId::new(259, 9);
    let replace_old = Ok(Create(Clear::OtherDeviceNode { old: Some(old) }));
    // (row, existing, mounted, readonly) -> outcome
    #[rustfmt::skip]
    let cases: &[(&str, Option<FileStat>, bool, bool, Result<NodeTarget, &str>)] = &[
        ("nothing there",                None,                        false, false, Ok(Create(Clear::Nothing))),
        ("the node",                     node(dev(), RW),             false, false, Ok(Done)),
        ("the read-only node",           node(dev(), RO),             false, true,  Ok(Done)),
        ("read-write, read-only wanted", node(dev(), RW),             false, true,  Err("other read-only")),
        ("read-only, read-write wanted", node(dev(), RO),             false, false, Err("other read-only")),
        ("an older bind mount",          node(dev(), RW),             true,  true,  Ok(OlderBindMount)),
        ("another device mounted",       node(old, RW),               true,  false, Err("another mount")),
        ("a mounted directory",          dir(),                       true,  false, Err("another mount")),
        ("a node of another device",     node(old, RW),               false, false, replace_old),
        ("an empty file",                file(0),                     false, false, Ok(Create(Clear::EmptyFile))),
        ("a file with content",          file(10),                    false, false, Err("occupied")),
        ("an empty directory",           dir(),                       false, false, Ok(Create(Clear::Directory))),
        ("a symlink",                    symlink(),                   false, false, Err("occupied")),
        ("a char device",                other(FileKind::CharDevice), false, false, Err("occupied")),
    ];
    for (row, existing, mounted, readonly, want) in cases {
        let target = Path::new(TARGET);
        let got = device_node_target(ID, target, *readonly, dev(), existing.as_ref(), *mounted);
        check(row, got, *want);
    }
}

#[test]
fn unpublish_removes_only_what_it_may_and_never_a_mount_point() {
    use Removal::*;
    #[rustfmt::skip]
    let cases: &[(&str, bool, Option<FileStat>, Result<Option<Removal>, &str>)] = &[
        ("still mounted",       true,  dir(),                       Err("still a mount point")),
        ("gone",                false, None,                        Ok(None)),
        ("a directory",         false, dir(),                       Ok(Some(Rmdir))),
        ("a device node",       false, node(dev(), RW),             Ok(Some(Unlink))),
        ("a symlink",           false, symlink(),                   Ok(Some(Unlink))),
        ("an empty file",       false, file(0),                     Ok(Some(Unlink))),
        ("a file with content", false, file(1),                     Err("has content")),
        ("a char device",       false, other(FileKind::CharDevice), Err("has content")),
        ("something else",      false, other(FileKind::Other),      Err("has content")),
    ];
    for (row, mounted, existing, want) in cases {
        let got = unpublished_removal(Path::new(TARGET), *mounted, existing.as_ref());
        check(row, got, *want);
    }
}

#[test]
fn unstage_unmounts_only_when_nothing_else_holds_the_volume() {
    use MountState::*;
    let cur = mount(STAGING, "ext4", 1, "rw");
    let stale = mount(STAGING, "ext4", 9, "rw");
    let target = Some(Path::new(TARGET));
    let device = Some((Path::new("/dev/nvme0n1"), Path::new("/mnt/elsewhere")));
    #[rustfmt::skip]
    let cases = [
        ("published",                    target, None,   Current(cur.clone()), Err("still published")),
        ("published, mounted elsewhere", target, device, NotMounted,           Err("still published")),
        ("mounted elsewhere",            None,   device, Current(cur.clone()), Err("still mounted")),
        ("staged",                       None,   None,   Current(cur),         Ok(Unmount::Staging)),
        ("stale",                        None,   None,   Other(stale.clone()), Ok(Unmount::Stale(stale))),
        ("not mounted",                  None,   None,   NotMounted,           Ok(Unmount::Nothing)),
    ];
    for (row, published, elsewhere, state, want) in cases {
        check(row, unstage(ID, published, elsewhere, state), want);
    }
    may_disconnect(ID, None).unwrap();
    assert_eq!(
        refusal(may_disconnect(ID, Some("held open".into()))),
        "in use"
    );
}

#[test]
fn a_target_still_holds_the_volume_while_mounted_or_a_node_of_its_device() {
    let devs = [dev()];
    #[rustfmt::skip]
    let cases = [
        ("gone",                     None,                         false, false),
        ("gone, in the mount table", None,                         true,  false),
        ("a mounted directory",      dir(),                        true,  true),
        ("a directory",              dir(),                        false, false),
        ("a node of the device",     node(dev(), RW),              false, true),
        ("a node of another device", node(DevId::new(259, 9), RW), false, false),
        ("a file",                   file(0),                      false, false),
    ];
    for (row, existing, mounted, want) in cases {
        let got = still_published(existing.as_ref(), mounted, &devs);
        assert_eq!(got, want, "{row}");
    }
}
