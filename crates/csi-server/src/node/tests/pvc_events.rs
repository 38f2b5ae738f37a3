//! Events on the PVC: what the node raises, and only then.

use super::*;

/// Checks the one FORMAT_REFUSED event (see [`the_event`]) says each of
/// `words`.
async fn format_refused_says(e: &Env, words: &[&str]) {
    let ev = the_event(e, FORMAT_REFUSED).await;
    for w in words {
        assert!(ev.message.contains(w), "{w:?} in {}", ev.message);
    }
}

#[tokio::test]
async fn a_stage_and_publish_that_succeed_raise_no_event() {
    let e = node_with(PublishedFs).await;
    e.stats(TARGET).await.unwrap();
    e.unpublish(TARGET).await.unwrap();
    e.unstage(STAGING).await.unwrap();
    e.stage_and_publish_block().await;
    assert_eq!(e.events().await, vec![]);
}

#[tokio::test]
async fn a_foreign_filesystem_raises_format_refused_on_the_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    e.stage_fs_refused(Code::FailedPrecondition).await;
    format_refused_says(&e, &["xfs", "needs a person"]).await;
    assert_eq!(e.reasons().await, vec![FORMAT_REFUSED]);
}

#[tokio::test]
async fn a_volume_that_reads_empty_after_being_formatted_raises_format_refused() {
    let e = env();
    e.stage(formatted_stage_req()).await.unwrap_err();
    format_refused_says(&e, &["formatted before"]).await;
}

#[tokio::test]
async fn a_transient_refusal_says_it_may_clear() {
    let e = env();
    e.f.reply(Program::Blkid, Reply::Timeout);
    e.stage_fs_refused(Code::Unavailable).await;
    format_refused_says(&e, &["may clear by itself"]).await;
}

#[tokio::test]
async fn a_failed_staging_mount_raises_mount_failed_and_no_refusal() {
    let e = env();
    e.f.fail(SysOp::Mount, Errno::EIO);
    let err = e.stage_fs_refused(Code::Internal).await;
    assert!(e.mounts_at(STAGING).is_empty());
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains(STAGING), "{}", ev.message);
    assert!(err.message().contains(STAGING), "{}", err.message());
    assert_eq!(e.reasons().await, vec![MOUNT_FAILED]);
    // kubelet retries; the mount works now and nothing more is raised.
    e.stage_fs().await;
    assert_eq!(e.reasons().await, vec![MOUNT_FAILED]);
}

#[tokio::test]
async fn a_failed_mkfs_raises_mount_failed() {
    let e = env();
    e.f.reply(Program::Mkfs, Reply::exit(1));
    e.stage_fs_refused(Code::Internal).await;
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains("mkfs"), "{}", ev.message);
}

#[tokio::test]
async fn a_failed_publish_bind_mount_raises_mount_failed() {
    let e = node_with(StagedFs).await;
    e.f.fail(SysOp::Mount, Errno::EACCES);
    e.publish_fs(TARGET, false).await.unwrap_err();
    let ev = the_event(&e, MOUNT_FAILED).await;
    assert!(ev.message.contains(TARGET), "{}", ev.message);
}

#[tokio::test]
async fn publish_recovering_a_stale_staging_mount_raises_stale_mount_recovered() {
    let e = node_with(StagedFs).await;
    e.publish_fs(TARGET, true).await.unwrap();
    e.f.renumber(NQN);
    assert_eq!(e.events().await, vec![]);
    e.publish_fs(TARGET, true).await.unwrap();
    let ev = the_event(&e, STALE_MOUNT_RECOVERED).await;
    assert!(ev.message.contains("remounted"), "{}", ev.message);
    assert!(ev.message.contains("re-bound"), "{}", ev.message);
    // Recovered once: the next publish finds everything current.
    e.publish_fs(TARGET, true).await.unwrap();
    assert_eq!(e.reasons().await, vec![STALE_MOUNT_RECOVERED]);
}

#[tokio::test]
async fn stage_remounting_a_vanished_device_raises_stale_mount_recovered() {
    let e = node_with(StagedFs).await;
    e.f.renumber(NQN);
    e.stage_fs().await;
    let ev = the_event(&e, STALE_MOUNT_RECOVERED).await;
    assert!(ev.message.contains("remounted from"), "{}", ev.message);
}

#[tokio::test]
async fn stats_recovery_reaches_the_pvc_through_the_record() {
    let e = node_with(PublishedFs).await;
    assert_eq!(
        e.record().unwrap().pvc,
        Some((PVC_NS.to_string(), PVC_NAME.to_string()))
    );
    e.f.renumber(NQN);
    // NodeGetVolumeStats carries no volume context.
    e.stats(TARGET).await.unwrap();
    the_event(&e, STALE_MOUNT_RECOVERED).await;
}

#[tokio::test]
async fn without_pvc_keys_in_the_context_events_name_no_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context
        .retain(|k, _| !k.starts_with("csi.storage.k8s.io/"));
    e.stage(r).await.unwrap_err();
    let all = e.events().await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0].reason, FORMAT_REFUSED);
    assert_eq!(all[0].pvc, None, "only logged: no PVC to record it on");
}

#[tokio::test]
async fn only_the_namespace_and_name_together_identify_the_pvc() {
    let e = env();
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    let mut r = stage_req(fs_cap(), STAGING);
    r.volume_context.remove("csi.storage.k8s.io/pvc/namespace");
    e.stage(r).await.unwrap_err();
    assert_eq!(e.events().await[0].pvc, None);
}

#[tokio::test]
async fn a_hung_event_sink_never_delays_an_rpc() {
    struct Hung;
    impl attachment_manager::EventSink for Hung {
        fn emit(&self, _: VolumeEvent) -> futures::future::BoxFuture<'_, ()> {
            Box::pin(std::future::pending())
        }
    }
    let e = env_with(
        Arc::new(LogEvents::default()),
        NodeEvents::spawn(Arc::new(Hung), 1, Duration::from_secs(3600)),
    );
    e.f.update_volume(NQN, |v| v.fs = Some("xfs".into()));
    for _ in 0..5 {
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            e.stage(stage_req(fs_cap(), STAGING)),
        )
        .await
        .expect("the RPC answers while the sink hangs");
        assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    }
}
