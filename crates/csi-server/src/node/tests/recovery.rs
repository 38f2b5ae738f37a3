//! Stale mounts after a controller renumbering or loss, and connections
//! without a device.

use super::*;

#[tokio::test]
async fn stale_mount_on_renumbered_controller_is_remounted() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-other");
    e.stage_fs().await;
    e.publish_fs(TARGET, true).await.unwrap();
    let old = e.dev();
    // The controller is lost and comes back under new numbers.
    e.f.renumber(NQN);
    let new = e.dev();
    assert_ne!(old, new);
    e.f.clear_calls();
    // kubelet publishes again (e.g. the pod restarted).
    e.publish_fs(TARGET, true).await.unwrap();
    assert_eq!(e.f.ran(Program::Mkfs), 0, "recovery never formats");
    let s = e.mounts_at(STAGING);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].dev(), new);
    let t = e.mounts_at(TARGET);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].dev(), new);
    assert!(t[0].read_only());
}

#[tokio::test]
async fn stage_remounts_a_staging_path_whose_device_vanished() {
    let e = node_with(StagedFs).await;
    e.f.renumber(NQN);
    e.stage_fs().await;
    let s = e.mounts_at(STAGING);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].dev(), e.dev());
    assert_eq!(e.f.ran(Program::Mkfs), 1, "only the first stage formatted");
}

#[tokio::test]
async fn a_volume_once_mounted_here_is_never_formatted_when_it_reads_empty_after_a_reconnect() {
    let e = node_with(StagedFs).await;
    assert!(e.record().unwrap().filesystem_seen);
    // After the reconnect the device reads as empty for a while.
    e.f.renumber(NQN);
    e.f.update_volume(NQN, |v| v.fs = None);
    e.stage_fs_refused(Code::Unavailable).await;
    assert_eq!(e.f.ran(Program::Mkfs), 1, "only the first stage formatted");
    // Once the data is visible again, the same call succeeds.
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_never_torn_down_while_the_volume_is_mounted() {
    let e = node_with(PublishedFs).await;
    e.reconnect_without_namespace();
    let err = e.stage_fs_refused(Code::Unavailable).await;
    assert!(
        err.message().contains("no block device"),
        "{}",
        err.message()
    );
    let err = e.publish_fs(TARGET, false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0, "{:?}", e.f.commands());
    assert_eq!(e.f.ran(Program::NvmeConnect), 0, "{:?}", e.f.commands());
    assert!(e.f.is_connected(NQN));
    assert_eq!(e.mounts_at(STAGING).len(), 1, "mounts untouched");
    assert_eq!(e.mounts_at(TARGET).len(), 1);
    // Once the namespace shows, the retries recover.
    e.f.show_namespaces(NQN);
    e.stage_and_publish_fs().await;
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
    assert_eq!(e.mounts_at(TARGET)[0].dev(), e.dev());
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_is_never_torn_down_while_a_block_volume_is_published() {
    let e = node_with(PublishedBlock).await;
    e.reconnect_without_namespace();
    let err = e.publish_block(false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    let err = e.stage(stage_req(block_cap(), BSTAGING)).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{}", err.message());
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0, "{:?}", e.f.commands());
    assert!(e.f.is_connected(NQN));
    assert!(e.f.exists(Path::new(BTARGET)), "the device node stays");
}

#[tokio::test(start_paused = true)]
async fn a_connection_without_a_device_and_nothing_mounted_is_made_again() {
    let e = env();
    e.f.defer_namespaces(true);
    e.f.connect_now(NQN);
    e.f.defer_namespaces(false);
    e.stage_fs().await;
    let programs: Vec<Program> =
        e.f.commands()
            .iter()
            .map(Program::of)
            .filter(|p| matches!(p, Program::NvmeConnect | Program::NvmeDisconnect))
            .collect();
    assert_eq!(
        programs,
        vec![Program::NvmeDisconnect, Program::NvmeConnect]
    );
    assert_eq!(e.mounts_at(STAGING)[0].dev(), e.dev());
}

#[tokio::test]
async fn a_mount_of_another_live_device_is_never_touched() {
    let e = env();
    e.f.connect_now("nqn.2000-02.com.mikrotik:pvc-other");
    let other = e.f.device("nqn.2000-02.com.mikrotik:pvc-other").unwrap().1;
    e.f.add_mount(other, Path::new(STAGING), "ext4", "/dev/nvme0n1");
    e.stage_fs_refused(Code::FailedPrecondition).await;
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(!e.f.calls().iter().any(|c| matches!(c, Call::Umount { .. })));
}

#[tokio::test]
async fn stats_detect_and_remount_a_renumbered_volume() {
    let e = node_with(PublishedFs).await;
    e.f.renumber(NQN);
    let r = e.stats(TARGET).await.unwrap();
    let c = r.volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("remounted"), "{}", c.message);
    assert_eq!(e.mounts_at(TARGET)[0].dev(), e.dev());
    let r = e.stats(TARGET).await.unwrap();
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn block_publish_after_a_controller_loss_reconnects_and_recreates_the_node() {
    let e = node_with(PublishedBlock).await;
    e.f.lose_connection(NQN);
    e.publish_block(false).await.unwrap();
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.rdev, Some(e.dev()));
}
