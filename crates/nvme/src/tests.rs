//! The data path against the recording fake: every decision and refusal.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::errno::Errno;

use crate::fake::{config, Call, FakeHost, Program, Reply, SysOp, Then, Volume};
use crate::mount::MountOptions;
use crate::*;

const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";
const FOREIGN: &str = "nqn.2014-08.org.example:root-disk";

fn dp(f: &FakeHost) -> DataPath<FakeHost, FakeHost> {
    DataPath::new(f.clone(), f.clone(), config())
}

fn target(nqn: &str) -> Target {
    Target {
        address: "10.0.0.1".into(),
        port: 4420,
        nqn: nqn.into(),
        ctrl_loss_tmo: 600,
        reconnect_delay: 5,
        keep_alive_tmo: 5,
    }
}

fn host() -> FakeHost {
    let f = FakeHost::new();
    f.add_volume(NQN, 1 << 30);
    f
}

#[tokio::test]
async fn connect_runs_nvme_connect_and_finds_the_multipath_head_through_sysfs() {
    let f = host();
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    assert!(!c.reused);
    assert_eq!(c.device.path, PathBuf::from("/dev/nvme0n1"));
    assert_eq!(Some((c.device.path.clone(), c.device.dev)), f.device(NQN));
    assert_eq!(c.device.size_bytes, 1 << 30);
    let cmds = f.commands();
    assert_eq!(cmds.len(), 1);
    let HostCommand::NvmeConnect(a) = &cmds[0] else {
        panic!("{cmds:?}")
    };
    assert_eq!(a.nqn, NQN);
    assert_eq!(a.host_nqn, config().host.nqn);
}

#[tokio::test]
async fn without_multipath_the_namespace_under_the_controller_is_used() {
    let f = host();
    f.set_multipath(false);
    f.connect_now(FOREIGN); // takes controller 0
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    assert_eq!(c.device.path, PathBuf::from("/dev/nvme1n1"));
}

#[tokio::test]
async fn a_live_connection_with_a_device_is_reused() {
    let f = host();
    f.connect_now(NQN);
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    assert!(c.reused);
    assert!(f.commands().is_empty(), "{:?}", f.commands());
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_disconnected_and_made_again() {
    let f = host();
    f.defer_namespaces(true);
    f.connect_now(NQN);
    f.defer_namespaces(false);
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    assert!(!c.reused);
    let programs: Vec<Program> = f.commands().iter().map(Program::of).collect();
    assert_eq!(
        programs,
        vec![Program::NvmeDisconnect, Program::NvmeConnect]
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_kept_when_the_volume_is_in_use() {
    let f = host();
    f.defer_namespaces(true);
    f.connect_now(NQN);
    let e = dp(&f)
        .connect_with(&target(NQN), Deviceless::Keep)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(f.commands().is_empty(), "{:?}", f.commands());
    assert!(f.is_connected(NQN));
    // The namespace shows up: the same call takes it.
    f.show_namespaces(NQN);
    let c = dp(&f)
        .connect_with(&target(NQN), Deviceless::Keep)
        .await
        .unwrap();
    assert!(c.reused);
}

#[tokio::test(start_paused = true)]
async fn a_device_that_appears_late_is_waited_for_by_polling_sysfs() {
    let f = host();
    f.defer_namespaces(true);
    let g = f.clone();
    let show = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        g.show_namespaces(NQN);
    });
    let start = tokio::time::Instant::now();
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    show.await.unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // Seen within a poll interval of appearing.
    assert!(waited <= Duration::from_millis(320), "{waited:?}");
    assert_eq!(c.device.path, PathBuf::from("/dev/nvme0n1"));
}

#[tokio::test(start_paused = true)]
async fn no_device_within_the_deadline_is_unavailable() {
    let f = host();
    f.defer_namespaces(true);
    let e = dp(&f).connect(&target(NQN)).await.unwrap_err();
    assert!(matches!(e, Error::NoDevice { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn an_unreachable_target_fails_the_connect_as_unavailable() {
    let f = host();
    f.update_volume(NQN, |v| v.reachable = false);
    let e = dp(&f).connect(&target(NQN)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(chain(&e).contains("nvme-fabrics"), "{}", chain(&e));
}

#[tokio::test]
async fn a_connect_that_times_out_is_deadline_exceeded() {
    let f = host();
    f.reply(Program::NvmeConnect, Reply::Timeout);
    let e = dp(&f).connect(&target(NQN)).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::DeadlineExceeded, "{e}");
}

#[tokio::test]
async fn a_connect_race_that_nvme_cli_reports_as_failure_still_succeeds() {
    let f = host();
    // nvme-cli fails, but the subsystem got connected meanwhile.
    f.reply(Program::NvmeConnect, Reply::WorkThenExit(1));
    let c = dp(&f).connect(&target(NQN)).await.unwrap();
    assert_eq!(Some((c.device.path, c.device.dev)), f.device(NQN));
}

#[tokio::test]
async fn connect_refuses_a_foreign_nqn() {
    let f = host();
    f.add_volume(FOREIGN, 1 << 30);
    let e = dp(&f).connect(&target(FOREIGN)).await.unwrap_err();
    assert!(matches!(e, Error::ForeignNqn { .. }), "{e}");
    assert!(f.commands().is_empty());
}

#[tokio::test]
async fn a_subsystem_with_another_volume_id_prefix_is_never_connected_or_disconnected() {
    let f = host();
    let other = "nqn.2000-02.com.mikrotik:other-1";
    f.connect_now(other);
    let e = dp(&f).disconnect(other).await.unwrap_err();
    assert!(matches!(e, Error::ForeignNqn { .. }), "{e}");
    assert!(e.to_string().contains("mikrotik:pvc-"), "{e}");
    let e = dp(&f).connect(&target(other)).await.unwrap_err();
    assert!(matches!(e, Error::ForeignNqn { .. }), "{e}");
    assert!(f.commands().is_empty(), "no command may run");
    assert!(f.is_connected(other));
}

#[tokio::test]
async fn disconnect_refuses_foreign_nqn() {
    let f = host();
    f.connect_now(FOREIGN);
    let e = dp(&f).disconnect(FOREIGN).await.unwrap_err();
    assert!(matches!(e, Error::ForeignNqn { .. }), "{e}");
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(f.commands().is_empty(), "no command may run");
    assert!(f.is_connected(FOREIGN));
}

#[tokio::test]
async fn disconnect_refuses_the_bare_prefix_and_malformed_names() {
    let f = host();
    for bad in [
        "nqn.2000-02.com.mikrotik:",
        "nqn.2000-02.com.mikrotik:x y",
        "",
    ] {
        assert!(dp(&f).disconnect(bad).await.is_err(), "{bad:?}");
    }
    assert!(f.commands().is_empty());
}

#[tokio::test(start_paused = true)]
async fn disconnect_removes_the_controllers_and_is_idempotent() {
    let f = host();
    f.connect_now(NQN);
    let d = dp(&f);
    d.disconnect(NQN).await.unwrap();
    assert!(!f.is_connected(NQN));
    d.disconnect(NQN).await.unwrap();
    assert_eq!(f.ran(Program::NvmeDisconnect), 1);
}

#[tokio::test]
async fn resolution_is_never_cached_across_renumbering() {
    let f = host();
    f.connect_now(FOREIGN);
    let (d, before) = connected_now(&f).await;
    f.renumber(NQN);
    let after = device_of(&d).await;
    assert_ne!(before.dev, after.dev);
    assert_ne!(before.path, after.path);
    assert_eq!(Some((after.path, after.dev)), f.device(NQN));
}

#[tokio::test]
async fn a_device_node_that_does_not_match_sysfs_is_not_used() {
    let f = host();
    f.connect_now(NQN);
    let (path, dev) = f.device(NQN).unwrap();
    // Someone replaced /dev/nvme0n1 with a node for another device.
    f.put_device_node(&path, DevId::new(dev.major, dev.minor + 100));
    let s = dp(&f).resolve(NQN).await.unwrap();
    assert!(s.device().is_none());
    assert_eq!(s.pending, vec!["nvme0n1".to_string()]);
}

#[tokio::test]
async fn all_subsystems_are_listed_with_their_nqns() {
    let f = host();
    f.connect_now(FOREIGN);
    f.connect_now(NQN);
    let all = dp(&f).subsystems().await.unwrap();
    let nqns: Vec<&str> = all.iter().map(|s| s.nqn.as_str()).collect();
    assert_eq!(nqns, vec![NQN, FOREIGN]);
    assert!(all.iter().all(|s| s.all_live() && s.device().is_some()));
}

// ---------------------------------------------------------------- format safety

/// The block device of [`NQN`] as sysfs shows it now.
async fn device_of(d: &DataPath<FakeHost, FakeHost>) -> BlockDevice {
    d.resolve(NQN).await.unwrap().device().unwrap().clone()
}

/// [`NQN`] connected by the host itself (not through the data path), and
/// its device.
async fn connected_now(f: &FakeHost) -> (DataPath<FakeHost, FakeHost>, BlockDevice) {
    f.connect_now(NQN);
    let d = dp(f);
    let dev = device_of(&d).await;
    (d, dev)
}

/// Prepares `fs` on `dev` of [`NQN`], with no record of an earlier format.
async fn prepare(
    d: &DataPath<FakeHost, FakeHost>,
    dev: &BlockDevice,
    fs: FsType,
) -> Result<Prepared> {
    d.prepare_filesystem(NQN, dev, fs, false).await
}

async fn connected(f: &FakeHost) -> (DataPath<FakeHost, FakeHost>, BlockDevice) {
    let d = dp(f);
    let dev = d.connect(&target(NQN)).await.unwrap().device;
    f.clear_calls();
    (d, dev)
}

#[tokio::test]
async fn an_empty_device_is_formatted_after_a_read_and_a_definitive_probe() {
    let f = host();
    let (d, dev) = connected(&f).await;
    let p = prepare(&d, &dev, FsType::Ext4).await.unwrap();
    assert_eq!(p, Prepared::Formatted);
    let calls = f.calls();
    assert_eq!(calls[0], Call::ReadHead(dev.path.clone()));
    assert_eq!(
        calls[1],
        Call::Exec(HostCommand::BlkidProbe {
            device: dev.path.clone()
        })
    );
    assert_eq!(
        calls[2],
        Call::Exec(HostCommand::Mkfs {
            fs: FsType::Ext4,
            device: dev.path.clone()
        })
    );
    assert_eq!(f.volume(NQN).unwrap().fs.as_deref(), Some("ext4"));
}

#[tokio::test]
async fn an_existing_filesystem_is_checked_and_kept() {
    let f = host();
    f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    let (d, dev) = connected(&f).await;
    let p = d
        .prepare_filesystem(NQN, &dev, FsType::Ext4, true)
        .await
        .unwrap();
    assert_eq!(p, Prepared::Existing);
    assert_eq!(f.ran(Program::Mkfs), 0);
    assert_eq!(f.ran(Program::E2fsck), 1);
}

#[tokio::test]
async fn xfs_is_not_checked_before_mount() {
    let f = host();
    f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let (d, dev) = connected(&f).await;
    prepare(&d, &dev, FsType::Xfs).await.unwrap();
    assert_eq!(f.ran(Program::E2fsck), 0);
    assert_eq!(f.ran(Program::Mkfs), 0);
}

async fn refused(f: &FakeHost, formatted_before: bool) -> Error {
    let d = dp(f);
    let dev = device_of(&d).await;
    let e = d
        .prepare_filesystem(NQN, &dev, FsType::Ext4, formatted_before)
        .await
        .unwrap_err();
    assert_eq!(f.ran(Program::Mkfs), 0, "mkfs ran after {e}");
    e
}

/// A probe that fails or times out proves nothing: never mkfs.
#[tokio::test]
async fn a_failed_probe_never_leads_to_mkfs() {
    // (case, what blkid answers)
    let cases = [
        ("blkid_error_never_leads_to_mkfs: exit 1", Reply::exit(1)),
        ("blkid_error_never_leads_to_mkfs: exit 4", Reply::exit(4)),
        ("blkid_error_never_leads_to_mkfs: exit 8", Reply::exit(8)),
        (
            "blkid_error_never_leads_to_mkfs: exit 127",
            Reply::exit(127),
        ),
        ("blkid_timeout_never_leads_to_mkfs", Reply::Timeout),
        (
            "blkid_timeout_never_leads_to_mkfs: spawn error",
            Reply::SpawnError,
        ),
    ];
    for (case, reply) in cases {
        let f = host();
        f.connect_now(NQN);
        f.reply(Program::Blkid, reply);
        let e = refused(&f, false).await;
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{case}: {e}");
    }
}

/// Anything on the device but zeros is someone's data: never mkfs.
#[tokio::test]
async fn a_device_holding_anything_is_never_formatted() {
    /// What the volume holds.
    type Holds = fn(&mut Volume);
    // (case, what the volume holds)
    let cases: [(&str, Holds); 3] = [
        ("a_device_with_raw_data_is_never_formatted", |v| {
            v.raw_data = true
        }),
        (
            "a_partition_table_or_another_filesystem_is_never_formatted: gpt",
            |v| v.other = Some("gpt".into()),
        ),
        (
            "a_partition_table_or_another_filesystem_is_never_formatted: xfs",
            |v| v.fs = Some("xfs".into()),
        ),
    ];
    for (case, holds) in cases {
        let f = host();
        f.update_volume(NQN, holds);
        f.connect_now(NQN);
        let e = refused(&f, false).await;
        assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{case}: {e}");
    }
}

#[tokio::test]
async fn a_device_behind_a_reconnecting_controller_is_never_formatted() {
    let f = host();
    f.connect_now(NQN);
    f.set_state(NQN, "connecting");
    let e = refused(&f, false).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn an_unreadable_device_is_never_probed_nor_formatted() {
    let f = host();
    f.connect_now(NQN);
    f.make_unreadable(&f.device(NQN).unwrap().0);
    let e = refused(&f, false).await;
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert_eq!(f.ran(Program::Blkid), 0);
}

#[tokio::test]
async fn a_volume_formatted_before_that_reads_empty_is_never_formatted() {
    let f = host();
    f.connect_now(NQN);
    let e = refused(&f, true).await;
    assert!(chain(&e).contains("formatted before"), "{}", chain(&e));
}

#[tokio::test]
async fn a_device_that_vanished_before_the_probe_is_never_formatted() {
    // blkid on a path that no longer exists exits 2, like "nothing found".
    let f = host();
    let (d, dev) = connected_now(&f).await;
    f.renumber(NQN);
    let e = prepare(&d, &dev, FsType::Ext4).await.unwrap_err();
    assert_eq!(f.ran(Program::Mkfs), 0, "{e}");
}

const OTHER: &str = "nqn.2000-02.com.mikrotik:pvc-2";

#[tokio::test]
async fn a_device_renumbered_between_the_probe_and_mkfs_is_never_formatted() {
    let f = host();
    let (d, dev) = connected(&f).await;
    // The probe sees an empty device; right after it, the controller
    // reconnects under new numbers.
    f.then_after(Program::Blkid, Then::Renumber(NQN.into()));
    let e = prepare(&d, &dev, FsType::Ext4).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(chain(&e).contains("device changed"), "{}", chain(&e));
    assert_eq!(f.ran(Program::Blkid), 1, "the probe ran");
    assert_eq!(f.ran(Program::Mkfs), 0, "mkfs never ran");
    assert_eq!(f.volume(NQN).unwrap().fs, None);
}

#[tokio::test]
async fn a_device_swapped_for_another_volume_s_between_the_probe_and_mkfs_is_never_formatted() {
    let f = host();
    f.add_volume(OTHER, 1 << 30);
    f.update_volume(OTHER, |v| v.fs = Some("ext4".into()));
    let (d, dev) = connected(&f).await;
    f.connect_now(OTHER);
    // After the probe of our (empty) device, the same /dev name and
    // major:minor serve the other volume, which holds a filesystem: mkfs
    // on that path would wipe it.
    f.then_after(Program::Blkid, Then::Swap(NQN.into(), OTHER.into()));
    let e = prepare(&d, &dev, FsType::Ext4).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(f.ran(Program::Mkfs), 0, "mkfs never ran");
    assert_eq!(
        f.device(OTHER),
        Some((dev.path.clone(), dev.dev)),
        "the swap happened"
    );
    assert_eq!(f.volume(OTHER).unwrap().fs.as_deref(), Some("ext4"));
    // Without the swap the same call formats: the check, not chance,
    // stopped it.
    let (p, _) = f.device(NQN).unwrap();
    let now = device_of(&d).await;
    assert_eq!(now.path, p);
    assert_eq!(
        prepare(&d, &now, FsType::Ext4).await.unwrap(),
        Prepared::Formatted
    );
    assert_eq!(f.volume(NQN).unwrap().fs.as_deref(), Some("ext4"));
}

#[tokio::test]
async fn a_durable_record_of_a_format_refuses_an_empty_device_for_a_person() {
    let f = host();
    let (d, dev) = connected_now(&f).await;
    let e = d
        .prepare_filesystem(
            NQN,
            &dev,
            FsType::Ext4,
            format::History {
                formatted_before: false,
                recorded: Some("the PV annotation a=ext4".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition, "{e}");
    assert!(
        chain(&e).contains("the PV annotation a=ext4"),
        "{}",
        chain(&e)
    );
    assert_eq!(f.ran(Program::Mkfs), 0);
}

#[tokio::test]
async fn uncorrected_e2fsck_errors_refuse_the_mount() {
    let f = host();
    f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    f.connect_now(NQN);
    f.reply(Program::E2fsck, Reply::exit(4));
    let e = refused(&f, false).await;
    assert_eq!(e.kind(), ErrorKind::FailedPrecondition);
    assert!(chain(&e).contains("by hand"), "{}", chain(&e));
    let f = host();
    f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    f.reply(Program::E2fsck, Reply::exit(1));
    let (d, dev) = connected_now(&f).await;
    assert_eq!(
        prepare(&d, &dev, FsType::Ext4).await.unwrap(),
        Prepared::Existing,
        "corrected errors are fine"
    );
}

#[tokio::test]
async fn a_failed_mkfs_is_an_error() {
    let f = host();
    f.reply(Program::Mkfs, Reply::exit(1));
    let (d, dev) = connected_now(&f).await;
    let e = prepare(&d, &dev, FsType::Xfs).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn a_mkfs_that_made_nothing_is_caught_by_the_typed_mount_and_probed_again() {
    // mkfs is trusted on exit 0 (no second blkid); should it lie, the mount
    // names the type and fails, nothing is mounted, and the next attempt
    // starts with a fresh probe like any other.
    let f = host();
    let (d, dev) = connected(&f).await;
    f.reply(Program::Mkfs, Reply::exit(0));
    assert_eq!(
        prepare(&d, &dev, FsType::Ext4).await.unwrap(),
        Prepared::Formatted
    );
    assert_eq!(f.ran(Program::Blkid), 1, "one probe, before mkfs only");
    let staging = Path::new("/k/staging");
    d.mount_device(&dev, staging, FsType::Ext4, &MountOptions::default())
        .await
        .unwrap_err();
    assert!(f.mounts_at(staging).is_empty());
    f.clear_calls();
    prepare(&d, &dev, FsType::Ext4).await.unwrap();
    let programs: Vec<Program> = f.commands().iter().map(Program::of).collect();
    assert_eq!(programs, vec![Program::Blkid, Program::Mkfs]);
}

// ---------------------------------------------------------------- mounts

const STAGING: &str = "/k/staging";

/// An ext4 volume connected and mounted at [`STAGING`].
async fn staged(f: &FakeHost) -> (DataPath<FakeHost, FakeHost>, BlockDevice) {
    f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    let (d, dev) = connected(f).await;
    d.mount_device(
        &dev,
        Path::new(STAGING),
        FsType::Ext4,
        &MountOptions::default(),
    )
    .await
    .unwrap();
    (d, dev)
}

#[tokio::test]
async fn mount_bind_and_unmount_follow_the_mount_table() {
    let f = host();
    let (d, dev) = staged(&f).await;
    let target = Path::new("/k/pods/p/mount");
    d.bind_mount(Path::new(STAGING), target, dev.dev, MsFlags::MS_RDONLY)
        .await
        .unwrap();
    let m = f.mounts_at(target);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].dev(), dev.dev);
    assert!(m[0].read_only());
    let remount = f.calls().into_iter().find_map(|c| match c {
        Call::Mount(r) if r.flags.contains(MsFlags::MS_REMOUNT) => Some(r),
        _ => None,
    });
    assert!(remount
        .unwrap()
        .flags
        .contains(MsFlags::MS_BIND | MsFlags::MS_RDONLY));
    assert_eq!(d.unmount_all(target, false).await.unwrap(), 1);
    assert_eq!(d.unmount_all(target, false).await.unwrap(), 0);
    assert!(f.mounts_at(target).is_empty());
}

#[tokio::test]
async fn a_failed_read_only_remount_leaves_no_writable_bind_behind() {
    let f = host();
    let (d, dev) = staged(&f).await;
    let target = Path::new("/k/target");
    f.mkdir(target);
    // The bind succeeds, the read-only remount fails.
    f.fail_after(SysOp::Mount, 1, Errno::EPERM);
    let e = d
        .bind_mount(Path::new(STAGING), target, dev.dev, MsFlags::MS_RDONLY)
        .await
        .unwrap_err();
    assert!(chain(&e).contains(&target.display().to_string()));
    assert!(f.mounts_at(target).is_empty());
}

#[tokio::test]
async fn stacked_mounts_are_all_taken_off() {
    let f = host();
    let p = Path::new("/k/t");
    f.add_mount(DevId::new(259, 1), p, "ext4", "/dev/nvme0n1");
    f.add_mount(DevId::new(259, 1), p, "ext4", "/dev/nvme0n1");
    f.add_mount(DevId::new(259, 1), p, "ext4", "/dev/nvme0n1");
    assert_eq!(dp(&f).unmount_all(p, false).await.unwrap(), 3);
}

#[tokio::test]
async fn an_unmount_failure_is_reported_and_stops_the_loop() {
    let f = host();
    let p = Path::new("/k/t");
    f.add_mount(DevId::new(259, 1), p, "ext4", "/dev/nvme0n1");
    f.fail(SysOp::Umount, Errno::EBUSY);
    let e = dp(&f).unmount_all(p, false).await.unwrap_err();
    assert!(chain(&e).contains("busy"), "{}", chain(&e));
    assert_eq!(f.mounts_at(p).len(), 1);
}

#[tokio::test]
async fn block_device_nodes_get_the_device_number_and_a_read_only_mode() {
    let f = host();
    let d = dp(&f);
    let p = Path::new("/k/publish/pvc-1/pod");
    d.make_device_node(p, DevId::new(259, 4), true)
        .await
        .unwrap();
    assert!(f.calls().contains(&Call::Mknod {
        path: p.into(),
        mode: 0o440,
        dev: DevId::new(259, 4)
    }));
    let st = f.lstat(p).await.unwrap();
    assert_eq!(st.kind, FileKind::BlockDevice);
    assert_eq!(st.rdev, Some(DevId::new(259, 4)));
}

#[tokio::test]
async fn a_device_in_use_is_reported_with_the_reason() {
    let f = host();
    f.connect_now(NQN);
    let d = dp(&f);
    let s = d.resolve(NQN).await.unwrap();
    let (path, dev) = f.device(NQN).unwrap();
    assert_eq!(
        d.in_use(&s, &d.mounts().await.unwrap()).await.unwrap(),
        None
    );
    f.add_mount(dev, Path::new("/elsewhere"), "ext4", "/dev/nvme0n1");
    let why = d.in_use(&s, &d.mounts().await.unwrap()).await.unwrap();
    assert!(why.unwrap().contains("/elsewhere"));
    let f = host();
    f.connect_now(NQN);
    let s = dp(&f).resolve(NQN).await.unwrap();
    f.claim(&path);
    let why = dp(&f).in_use(&s, &[]).await.unwrap();
    assert!(why.unwrap().contains("exclusively"));
    let f = host();
    f.connect_now(NQN);
    f.mkdir(Path::new("/sys/class/block/nvme0n1/holders/dm-0"));
    let s = dp(&f).resolve(NQN).await.unwrap();
    let why = dp(&f).in_use(&s, &[]).await.unwrap();
    assert!(why.unwrap().contains("dm-0"));
}

#[tokio::test]
async fn the_device_node_scan_does_not_enter_mounted_directories() {
    let f = host();
    f.put_device_node(Path::new("/k/plugins/a/b/node"), DevId::new(259, 1));
    f.put_device_node(Path::new("/k/pods/x/mnt/inside"), DevId::new(259, 2));
    f.add_mount(
        DevId::new(259, 9),
        Path::new("/k/pods/x/mnt"),
        "ext4",
        "/dev/x",
    );
    let d = dp(&f);
    let scan = d
        .device_nodes_under(Path::new("/k"), &d.mounts().await.unwrap(), 8, 1000)
        .await;
    assert!(scan.complete);
    assert_eq!(
        scan.nodes.keys().copied().collect::<Vec<_>>(),
        vec![DevId::new(259, 1)]
    );
    let small = d
        .device_nodes_under(Path::new("/k"), &d.mounts().await.unwrap(), 8, 2)
        .await;
    assert!(!small.complete, "a truncated walk proves nothing");
}

#[tokio::test(start_paused = true)]
async fn rescan_runs_on_every_controller_and_waits_for_the_new_size() {
    let f = host();
    f.connect_now(NQN);
    f.update_volume(NQN, |v| v.size_bytes = 2 << 30);
    let d = dp(&f);
    let dev = d.rescan(NQN, 2 << 30).await.unwrap();
    assert_eq!(dev.size_bytes, 2 << 30);
    assert_eq!(
        f.commands(),
        vec![HostCommand::NvmeNsRescan {
            controller: "/dev/nvme0".into()
        }]
    );
    let e = d.rescan(NQN, 3 << 30).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn device_gone_reads_sysfs_dev_block() {
    let f = host();
    f.connect_now(NQN);
    let (_, dev) = f.device(NQN).unwrap();
    let d = dp(&f);
    assert!(!d.device_gone(dev).await.unwrap());
    f.lose_connection(NQN);
    assert!(d.device_gone(dev).await.unwrap());
}
