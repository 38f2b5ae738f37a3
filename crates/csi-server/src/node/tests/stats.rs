//! NodeGetVolumeStats: usage and the volume condition.

use super::*;

#[tokio::test]
async fn stats_report_bytes_inodes_and_a_normal_condition() {
    let e = node_with(PublishedFs).await;
    e.f.set_statfs(nvme::FsStats {
        total_bytes: 1000,
        free_bytes: 400,
        available_bytes: 300,
        total_inodes: 50,
        free_inodes: 20,
    });
    let r = e.stats(TARGET).await.unwrap();
    assert_eq!(r.usage.len(), 2);
    assert_eq!(
        (r.usage[0].total, r.usage[0].used, r.usage[0].available),
        (1000, 600, 300)
    );
    assert_eq!(r.usage[0].unit, proto::volume_usage::Unit::Bytes as i32);
    assert_eq!(
        (r.usage[1].total, r.usage[1].used, r.usage[1].available),
        (50, 30, 20)
    );
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn stats_report_abnormal_when_the_device_is_gone() {
    let e = node_with(PublishedFs).await;
    e.f.lose_connection(NQN);
    e.f.update_volume(NQN, |v| v.reachable = false);
    let r = e.stats(TARGET).await.unwrap();
    let c = r.volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("no longer exists"), "{}", c.message);
    assert!(c.message.contains("not connected"), "{}", c.message);
}

#[tokio::test]
async fn stats_never_reconnect_a_volume_someone_disconnected() {
    let e = node_with(PublishedFs).await;
    e.f.lose_connection(NQN);
    e.f.clear_calls();
    let c = e.stats(TARGET).await.unwrap().volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(e.f.commands().is_empty(), "{:?}", e.f.commands());
    assert!(!e.f.is_connected(NQN));
}

#[tokio::test]
async fn stats_report_abnormal_while_the_controller_reconnects() {
    let e = node_with(StagedFs).await;
    e.f.set_state(NQN, "connecting");
    let c = e.stats(STAGING).await.unwrap().volume_condition.unwrap();
    assert!(c.abnormal);
    assert!(c.message.contains("connecting"), "{}", c.message);
}

#[tokio::test]
async fn stats_of_a_block_volume_report_its_size() {
    let e = node_with(PublishedBlock).await;
    let r = e.stats(BTARGET).await.unwrap();
    assert_eq!(r.usage.len(), 1);
    assert_eq!(r.usage[0].total, 1 << 30);
    assert!(!r.volume_condition.unwrap().abnormal);
}

#[tokio::test]
async fn stats_of_a_missing_or_unmounted_path_are_not_found() {
    let e = env();
    assert_eq!(
        e.stats("/nowhere").await.unwrap_err().code(),
        Code::NotFound
    );
    e.f.mkdir(Path::new(TARGET));
    assert_eq!(e.stats(TARGET).await.unwrap_err().code(), Code::NotFound);
}
