//! NodePublishVolume and NodeUnpublishVolume.

use super::*;

#[tokio::test]
async fn publish_bind_mounts_from_staging_honouring_readonly_and_flags() {
    let e = node_with(StagedFs).await;
    e.f.clear_calls();
    e.publish(publish_req(
        cap(
            false,
            "ext4",
            Mode::SingleNodeWriter,
            &["nosuid", "discard"],
        ),
        STAGING,
        TARGET,
        true,
    ))
    .await
    .unwrap();
    let m = e.mount_calls();
    assert_eq!(m.len(), 2);
    assert_eq!(m[0].source.as_deref(), Some(Path::new(STAGING)));
    assert_eq!(m[0].flags, MsFlags::MS_BIND);
    assert_eq!(
        m[1].flags,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
    );
    let t = e.mounts_at(TARGET);
    assert_eq!(t.len(), 1);
    assert!(t[0].read_only());
    assert_eq!(t[0].dev(), e.dev());
    assert_eq!(
        e.record().unwrap().targets.get(Path::new(TARGET)),
        Some(&true)
    );
}

#[tokio::test]
async fn publish_is_idempotent() {
    let e = node_with(PublishedFs).await;
    e.f.clear_calls();
    e.publish_fs(TARGET, false).await.unwrap();
    assert!(e.mount_calls().is_empty());
    assert_eq!(e.mounts_at(TARGET).len(), 1);
}

#[tokio::test]
async fn publish_with_another_readonly_flag_is_already_exists() {
    let e = node_with(PublishedFs).await;
    let err = e.publish_fs(TARGET, true).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn publish_before_stage_is_a_failed_precondition() {
    let e = env();
    let err = e.publish_fs(TARGET, false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(e.mount_calls().is_empty());
}

#[tokio::test]
async fn a_single_writer_volume_is_published_once() {
    // A multi-writer volume may be published twice on one node.
    let second_publish = [
        (Mode::SingleNodeSingleWriter, Err(Code::FailedPrecondition)),
        (Mode::SingleNodeMultiWriter, Ok(())),
    ];
    for (mode, want) in second_publish {
        let e = env();
        let c = cap(false, "ext4", mode, &[]);
        e.stage(stage_req(c.clone(), STAGING)).await.unwrap();
        e.publish(publish_req(c.clone(), STAGING, TARGET, false))
            .await
            .unwrap();
        let got = e.publish(publish_req(c, STAGING, TARGET2, false)).await;
        assert_eq!(got.map_err(|s| s.code()), want, "{mode:?}");
    }
}

#[tokio::test]
async fn block_publish_creates_a_device_node_not_a_bind_mount() {
    let e = node_with(StagedBlock).await;
    e.f.clear_calls();
    e.publish_block(false).await.unwrap();
    assert!(e.mount_calls().is_empty(), "no mount of any kind");
    assert!(e.f.calls().contains(&Call::Mknod {
        path: BTARGET.into(),
        mode: 0o660,
        dev: e.dev()
    }));
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.kind, FileKind::BlockDevice);
    assert_eq!(st.rdev, Some(e.dev()));
    // Again: nothing changes.
    e.f.clear_calls();
    e.publish_block(false).await.unwrap();
    assert!(!e.f.calls().iter().any(|c| matches!(c, Call::Mknod { .. })));
    // Read-only is the node's mode.
    let err = e.publish_block(true).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
}

#[tokio::test]
async fn block_publish_replaces_a_device_node_of_another_number() {
    let e = node_with(StagedBlock).await;
    e.f.put_device_node(Path::new(BTARGET), DevId::new(259, 999));
    e.publish_block(false).await.unwrap();
    let st = e.f.lstat(Path::new(BTARGET)).await.unwrap();
    assert_eq!(st.rdev, Some(e.dev()));
}

#[tokio::test]
async fn block_publish_never_replaces_a_file_with_content() {
    let e = node_with(StagedBlock).await;
    e.f.write(Path::new(BTARGET), "data");
    let err = e.publish_block(false).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(e.f.read(Path::new(BTARGET)).as_deref(), Some("data"));
}

#[tokio::test]
async fn staged_as_block_and_published_as_filesystem_is_refused() {
    let e = node_with(StagedBlock).await;
    let err = e
        .publish(publish_req(fs_cap(), BSTAGING, TARGET, false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn unpublish_unmounts_and_removes_the_target_directory() {
    let e = node_with(PublishedFs).await;
    e.unpublish(TARGET).await.unwrap();
    assert!(e.mounts_at(TARGET).is_empty());
    assert!(!e.f.exists(Path::new(TARGET)));
    assert!(e.record().unwrap().targets.is_empty());
    // Again: already gone is success.
    e.unpublish(TARGET).await.unwrap();
    // The staging mount is untouched.
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}

#[tokio::test]
async fn unpublish_never_removes_a_path_that_is_still_mounted() {
    let e = node_with(PublishedFs).await;
    e.f.fail(SysOp::Umount, Errno::EBUSY);
    e.f.clear_calls();
    let err = e.unpublish(TARGET).await.unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    assert!(removed(&e.f).is_empty(), "{:?}", e.f.calls());
    assert_eq!(e.mounts_at(TARGET).len(), 1);
}

#[tokio::test]
async fn unpublish_takes_off_stacked_mounts_before_removing_anything() {
    let e = node_with(PublishedFs).await;
    // A buggy earlier driver stacked two more mounts on the target.
    e.f.add_mount(e.dev(), Path::new(TARGET), "ext4", "/dev/nvme0n1");
    e.f.add_mount(e.dev(), Path::new(TARGET), "ext4", "/dev/nvme0n1");
    e.unpublish(TARGET).await.unwrap();
    assert!(e.mounts_at(TARGET).is_empty());
    let calls = e.f.calls();
    let last_umount = calls
        .iter()
        .rposition(|c| matches!(c, Call::Umount { .. }))
        .unwrap();
    let rmdir = calls
        .iter()
        .position(|c| matches!(c, Call::RemoveDir(_)))
        .unwrap();
    assert!(rmdir > last_umount);
}

#[tokio::test]
async fn unpublish_never_deletes_a_directory_with_content() {
    let e = env();
    let file = Path::new(TARGET).join("precious");
    e.f.write(&file, "data");
    let err = e.unpublish(TARGET).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(e.f.read(&file).as_deref(), Some("data"));
    assert_eq!(
        removed(&e.f),
        vec![PathBuf::from(TARGET)],
        "one rmdir, nothing recursive"
    );
}

#[tokio::test]
async fn block_unpublish_removes_the_device_node() {
    let e = node_with(PublishedBlock).await;
    e.unpublish(BTARGET).await.unwrap();
    assert!(!e.f.exists(Path::new(BTARGET)));
    assert!(e.f.calls().contains(&Call::RemoveFile(BTARGET.into())));
    assert!(e.f.is_connected(NQN), "unpublish never disconnects");
}
