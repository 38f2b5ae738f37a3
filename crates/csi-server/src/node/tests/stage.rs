//! NodeStageVolume: connect, format only what is definitively empty, mount.

use super::*;

#[tokio::test]
async fn stage_connects_formats_an_empty_volume_and_mounts_it() {
    let e = node_with(StagedFs).await;
    let programs: Vec<Program> = e.f.commands().iter().map(Program::of).collect();
    assert_eq!(
        programs,
        vec![Program::NvmeConnect, Program::Blkid, Program::Mkfs],
        "one probe before mkfs; the typed mount checks what mkfs made"
    );
    let m = e.mounts_at(STAGING);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].dev(), e.dev());
    assert_eq!(m[0].fs_type, "ext4");
    let rec = e.record().unwrap();
    assert_eq!(rec.nqn, NQN);
    assert!(rec.formatted_here);
    assert_eq!(rec.staging_path, PathBuf::from(STAGING));
}

#[tokio::test]
async fn stage_is_idempotent_and_never_stacks_mounts() {
    let e = node_with(StagedFs).await;
    e.f.clear_calls();
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING).len(), 1);
    assert!(e.f.commands().is_empty(), "{:?}", e.f.commands());
    assert!(e.mount_calls().is_empty());
}

#[tokio::test]
async fn stage_mounts_an_existing_filesystem_without_formatting() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage(stage_req(
        cap(false, "xfs", Mode::SingleNodeWriter, &["noatime"]),
        STAGING,
    ))
    .await
    .unwrap();
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    let m = e.mount_calls();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].fstype.as_deref(), Some("xfs"));
    assert!(m[0].flags.contains(MsFlags::MS_NOATIME));
}

#[tokio::test]
async fn the_context_fs_type_is_used_when_the_capability_names_none() {
    let e = env();
    let mut r = stage_req(cap(false, "", Mode::SingleNodeWriter, &[]), STAGING);
    r.volume_context.insert("fsType".into(), "xfs".into());
    e.stage(r).await.unwrap();
    assert_eq!(e.mounts_at(STAGING)[0].fs_type, "xfs");
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.insert("fsType".into(), "xfs".into());
    assert_eq!(e.stage(r).await.unwrap_err().code(), Code::InvalidArgument);
}

#[tokio::test]
async fn blkid_error_never_leads_to_mkfs() {
    for reply in [
        Reply::exit(4),
        Reply::exit(8),
        Reply::Timeout,
        Reply::SpawnError,
    ] {
        let e = env();
        e.f.reply(Program::Blkid, reply);
        e.stage_fs_refused(Code::Unavailable).await;
        assert_eq!(e.f.ran(Program::Mkfs), 0);
        assert!(e.mounts_at(STAGING).is_empty());
    }
}

#[tokio::test]
async fn an_unreadable_device_is_never_formatted_by_stage() {
    let e = env();
    e.f.connect_now(NQN);
    e.f.make_unreadable(&e.f.device(NQN).unwrap().0);
    e.stage_fs_refused(Code::Unavailable).await;
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(e.f.ran(Program::Blkid), 0);
}

#[tokio::test]
async fn a_volume_whose_context_says_formatted_is_never_formatted() {
    let e = env();
    let err = e.stage(formatted_stage_req()).await.unwrap_err();
    assert!(
        err.message().contains("formatted before"),
        "{}",
        err.message()
    );
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert!(e.mounts_at(STAGING).is_empty());
}

#[tokio::test]
async fn stage_never_replaces_a_filesystem_of_another_type() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage_fs_refused(Code::FailedPrecondition).await;
    assert_eq!(e.f.ran(Program::Mkfs), 0);
    assert_eq!(e.f.volume(NQN).unwrap().fs.as_deref(), Some("xfs"));
}

#[tokio::test]
async fn ext4_with_errors_e2fsck_cannot_fix_is_not_mounted() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("ext4".into()));
    e.f.reply(Program::E2fsck, Reply::exit(4));
    e.stage_fs_refused(Code::FailedPrecondition).await;
    assert!(e.mounts_at(STAGING).is_empty());
}

#[tokio::test]
async fn stage_refuses_a_foreign_nqn_before_connecting() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context
        .insert("nqn".into(), "nqn.2014-08.org.example:root".into());
    let err = e.stage(r).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(e.f.calls().is_empty(), "{:?}", e.f.calls());
}

#[tokio::test]
async fn the_publish_context_is_preferred_for_the_target() {
    let e = env();
    let mut r = stage_req(fs_cap(), STAGING);
    r.publish_context = HashMap::from([
        ("nvmeAddress".to_string(), "10.9.9.9".to_string()),
        ("nvmePort".to_string(), "4430".to_string()),
    ]);
    e.stage(r).await.unwrap();
    let HostCommand::NvmeConnect(a) = &e.f.commands()[0] else {
        panic!()
    };
    assert_eq!((a.address.as_str(), a.port), ("10.9.9.9", 4430));
}

#[tokio::test]
async fn every_rpc_validates_its_input_before_touching_the_host() {
    let e = env();
    let bad_stage = [
        proto::NodeStageVolumeRequest {
            volume_id: String::new(),
            ..stage_req(fs_cap(), STAGING)
        },
        proto::NodeStageVolumeRequest {
            volume_id: "../etc".into(),
            ..stage_req(fs_cap(), STAGING)
        },
        stage_req(fs_cap(), ""),
        stage_req(fs_cap(), "relative"),
        stage_req(fs_cap(), "/a/../b"),
        proto::NodeStageVolumeRequest {
            volume_capability: None,
            ..stage_req(fs_cap(), STAGING)
        },
        stage_req(cap(false, "btrfs", Mode::SingleNodeWriter, &[]), STAGING),
        stage_req(cap(false, "ext4", Mode::MultiNodeMultiWriter, &[]), STAGING),
        stage_req(
            cap(false, "ext4", Mode::SingleNodeWriter, &["bind"]),
            STAGING,
        ),
        stage_req(cap(false, "ext4", Mode::Unknown, &[]), STAGING),
        proto::NodeStageVolumeRequest {
            volume_context: HashMap::new(),
            ..stage_req(fs_cap(), STAGING)
        },
    ];
    for r in bad_stage {
        let err = e.stage(r.clone()).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{r:?}: {}",
            err.message()
        );
    }
    assert_eq!(
        e.publish(publish_req(fs_cap(), STAGING, STAGING, false))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.publish(publish_req(fs_cap(), "", TARGET, false))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.unpublish("").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.unstage("x").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(e.stats("").await.unwrap_err().code(), Code::InvalidArgument);
    // csi-sanity: a volume_path that cannot be the volume's is NOT_FOUND.
    assert_eq!(
        e.stats("some/path").await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        e.expand("some/path", 0, None).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        e.expand("", 0, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        e.expand(TARGET, -1, None).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert!(e.f.calls().is_empty(), "{:?}", e.f.calls());
}

#[tokio::test]
async fn block_stage_connects_only() {
    let e = node_with(StagedBlock).await;
    assert_eq!(e.f.commands().len(), 1);
    assert!(e.mount_calls().is_empty());
    assert!(e.f.is_connected(NQN));
    assert!(e.record().unwrap().block);
}

#[tokio::test]
async fn concurrent_calls_for_one_volume_are_aborted() {
    let e = env();
    let guard = e.svc.inner.locks.try_lock(ID).unwrap();
    e.stage_fs_refused(Code::Aborted).await;
    assert_eq!(e.unstage(STAGING).await.unwrap_err().code(), Code::Aborted);
    assert_eq!(e.unpublish(TARGET).await.unwrap_err().code(), Code::Aborted);
    assert!(e.f.calls().is_empty());
    drop(guard);
    e.stage_fs().await;
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_stage_finishes_its_work_and_holds_the_guard_until_then() {
    let e = env();
    e.f.defer_namespaces(true);
    let first = tokio::time::timeout(
        Duration::from_millis(50),
        e.stage(stage_req(fs_cap(), STAGING)),
    )
    .await;
    assert!(first.is_err(), "the caller gave up");
    // The work goes on under the guard.
    e.stage_fs_refused(Code::Aborted).await;
    e.f.show_namespaces(NQN);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(e.mounts_at(STAGING).len(), 1, "the abandoned call finished");
    e.stage_fs().await;
    assert_eq!(e.mounts_at(STAGING).len(), 1);
}
