//! NodeUnstageVolume: unmount and disconnect, never while in use.

use super::*;

#[tokio::test]
async fn unstage_unmounts_disconnects_and_is_idempotent() {
    let e = node_with(StagedFs).await;
    e.unstage(STAGING).await.unwrap();
    assert!(e.mounts_at(STAGING).is_empty());
    assert!(!e.f.is_connected(NQN));
    assert!(e.record().is_none());
    assert!(
        e.f.exists(Path::new(STAGING)),
        "the CO's staging directory stays"
    );
    e.f.clear_calls();
    e.unstage(STAGING).await.unwrap();
    assert!(e.f.commands().is_empty());
}

#[tokio::test]
async fn unstage_refuses_while_still_published() {
    let e = node_with(PublishedFs).await;
    let err = e.unstage_error(STAGING).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        matches!(&err, NodeError::StillPublished { at, .. } if at == Path::new(TARGET)),
        "{err:?}"
    );
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(e.f.is_connected(NQN));
}

#[tokio::test]
async fn unstage_refuses_to_disconnect_a_device_mounted_elsewhere() {
    let e = node_with(StagedFs).await;
    e.f.add_mount(e.dev(), Path::new("/mnt/someone"), "ext4", "/dev/nvme0n1");
    let err = e.unstage(STAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0);
}

#[tokio::test]
async fn unstage_refuses_to_disconnect_a_device_open_exclusively() {
    let e = node_with(StagedBlock).await;
    e.f.claim(&e.f.device(NQN).unwrap().0);
    let err = e.unstage_error(BSTAGING).await;
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        matches!(&err, NodeError::DeviceInUse { why, .. } if why.contains("exclusively")),
        "{err:?}"
    );
    assert_eq!(e.f.ran(Program::NvmeDisconnect), 0);
}

#[tokio::test]
async fn block_unstage_refuses_while_a_device_node_is_published() {
    let e = node_with(PublishedBlock).await;
    let err = e.unstage(BSTAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(e.f.is_connected(NQN));
    e.unpublish(BTARGET).await.unwrap();
    e.unstage(BSTAGING).await.unwrap();
    assert!(!e.f.is_connected(NQN));
}

#[tokio::test]
async fn unstage_without_a_record_disconnects_by_the_naming_rule() {
    let e = node_with(StagedFs).await;
    e.f.write(&Path::new(STATE).join("pvc-1.json"), "garbage");
    e.unstage(STAGING).await.unwrap();
    assert_eq!(
        e.f.commands().last(),
        Some(&HostCommand::NvmeDisconnect { nqn: NQN.into() })
    );
}

#[tokio::test]
async fn unstage_never_disconnects_outside_the_prefix() {
    let e = env();
    // A record tampered with to point at someone else's subsystem.
    e.f.connect_now("nqn.2014-08.org.example:root");
    e.stage_block().await;
    let path = Path::new(STATE).join("pvc-1.json");
    let text =
        e.f.read(&path)
            .unwrap()
            .replace(NQN, "nqn.2014-08.org.example:root");
    e.f.write(&path, &text);
    let err = e.unstage(BSTAGING).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(e.f.is_connected("nqn.2014-08.org.example:root"));
}
