//! NodeExpandVolume.

use super::*;

#[tokio::test]
async fn expand_rescans_and_grows_ext4_online() {
    let e = node_with(PublishedFs).await;
    e.f.update_volume(NQN, |v| v.size_bytes = 2 << 30);
    e.f.clear_calls();
    let cap = e.expand(TARGET, 2 << 30, None).await.unwrap();
    assert_eq!(cap, 2 << 30);
    let (dev_path, _) = e.f.device(NQN).unwrap();
    assert_eq!(
        e.f.commands(),
        vec![
            HostCommand::NvmeNsRescan {
                controller: "/dev/nvme0".into()
            },
            HostCommand::Resize2fs { device: dev_path }
        ]
    );
}

#[tokio::test]
async fn expand_grows_xfs_through_its_mount_point() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage(stage_req(
        cap(false, "xfs", Mode::SingleNodeWriter, &[]),
        STAGING,
    ))
    .await
    .unwrap();
    e.f.update_volume(NQN, |v| v.size_bytes = 3 << 30);
    e.f.clear_calls();
    e.expand(STAGING, 3 << 30, None).await.unwrap();
    assert_eq!(
        e.f.commands().last(),
        Some(&HostCommand::XfsGrowfs {
            mount_point: STAGING.into()
        })
    );
}

#[tokio::test]
async fn block_expand_only_rescans() {
    let e = node_with(PublishedBlock).await;
    e.f.update_volume(NQN, |v| v.size_bytes = 2 << 30);
    e.f.clear_calls();
    assert_eq!(
        e.expand(BTARGET, 2 << 30, Some(block_cap())).await.unwrap(),
        2 << 30
    );
    let programs: Vec<Program> = e.f.commands().iter().map(Program::of).collect();
    assert_eq!(programs, vec![Program::NvmeNsRescan]);
}

#[tokio::test]
async fn expand_of_a_volume_not_staged_here_is_not_found() {
    let e = env();
    assert_eq!(
        e.expand(TARGET, 2 << 30, None).await.unwrap_err().code(),
        Code::NotFound
    );
}
