//! What the controller rebuilds from the cluster after a restart, and what
//! its periodic reconciler releases or only reports: vanished
//! VolumeAttachments, deleted, tainted and long not-ready nodes; and the
//! paged LISTs both read.

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Patch, PatchParams};

use crate::world::*;

async fn wait_detached(w: &World, vol: &str, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(
        "the attachment annotation to be cleared",
        within,
        || async { w.holder(vol).await.is_none().then_some(()) },
    )
    .await;
    started.elapsed()
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_holder_whose_volume_attachment_vanishes_is_released_by_the_periodic_pass() {
    let mut w = World::new("vagone", &["a", "b"]).await;
    w.start_with(&["--attachment-reconcile-interval", "1s"])
        .await;
    let vol = w.volume("disk", false).await;
    let kept = w.volume("kept", false).await;
    w.attach(&vol, "a", false).await.unwrap();
    w.attach(&kept, "b", false).await.unwrap();
    // Its finalizer stripped by hand: the VolumeAttachment is gone and no
    // unpublish ever comes.
    w.delete_volume_attachment(&vol, &w.node("a"))
        .await
        .unwrap();
    wait_detached(&w, &vol, Duration::from_secs(10)).await;
    w.wait_event("disk", "StaleAttachmentCleared").await;
    // The reconciler never deletes PVs itself, and other attachments are
    // untouched.
    assert!(Api::<PersistentVolume>::all(w.client.clone())
        .get_opt(&vol)
        .await
        .unwrap()
        .is_some());
    w.assert_held_by(&kept, "b").await;
    w.assert_metric(
        "rds_csi_reconciler_stale_attachments_released_total{trigger=\"attachment_gone\"}",
        1.0,
    );
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn deleting_a_node_releases_nothing_and_reports_its_attachments() {
    let flags = ["--attachment-reconcile-interval", "1s"];
    let (w, vol) = World::with_disk_on_a("recdel", &["a"], &flags).await;
    w.delete_node("a").await;
    w.wait_event("disk", "AttachedToDeletedNode").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Reported, not released.
    w.assert_held_by(&vol, "a").await;
    w.assert_metric("rds_csi_reconciler_deleted_node_attachments", 1.0);
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn an_acknowledged_publish_the_attacher_has_not_recorded_survives_a_restart() {
    let mut w = World::started("ackd", &["a", "b"]).await;
    let vol = w.volume("disk", false).await;
    // The attach/detach controller's VolumeAttachment, and a publish the
    // driver answered, but the attacher died before setting attached.
    let node = w.node("a");
    w.create_volume_attachment(&vol, &node).await.unwrap();
    w.publish(&vol, &node, false).await.unwrap();
    w.kill_controller();
    w.start().await;
    w.refused_saying(&vol, "b", false, &node).await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn two_attached_volume_attachments_of_an_rwo_volume_rebuild_as_a_reported_conflict() {
    let mut w = World::started("conflict", &["a", "b", "c"]).await;
    let vol = w.volume("disk", false).await;
    w.kill_controller();
    // What no rule of the driver allows, found in the cluster (left by
    // another tool, or by hand).
    for n in ["a", "b"] {
        let node = w.node(n);
        w.create_volume_attachment(&vol, &node).await.unwrap();
        Api::<VolumeAttachment>::all(w.client.clone())
            .patch_status(
                &w.va_name(&vol, &node),
                &PatchParams::default(),
                &Patch::Merge(&json!({"status": {"attached": true}})),
            )
            .await
            .unwrap();
    }
    w.start().await;
    w.wait_event("disk", "AttachConflictOnRebuild").await;
    w.assert_metric("rds_csi_attachment_rebuild_conflicts_total", 1.0);
    assert!(
        !w.annotations(&vol)
            .await
            .contains_key("rds.csi.srvlab.io/migration-source"),
        "no invented migration"
    );
    // Both are kept; nothing else gets in.
    w.refused(&vol, "c", false).await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn tainting_a_node_out_of_service_clears_its_attachments() {
    let (w, vol) = World::with_disk_on_a("rectaint", &["a"], &[]).await;
    w.patch_node("a", out_of_service_taint(), false).await;
    let took = wait_detached(&w, &vol, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(1), "cleared in {took:?}");
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn attachments_on_a_long_not_ready_node_are_reported_not_released() {
    let flags = [
        "--not-ready-threshold",
        "1s",
        "--attachment-reconcile-interval",
        "1s",
    ];
    let (w, vol) = World::with_disk_on_a("notready", &["a"], &flags).await;
    // What the node lifecycle controller writes when the kubelet stops
    // posting status.
    let since = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(600);
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
        "lastHeartbeatTime": since.to_string(), "lastTransitionTime": since.to_string()}]}});
    w.patch_node("a", status, true).await;
    w.wait_event("disk", "AttachedToNotReadyNode").await;
    let m = w.scrape();
    assert_eq!(
        metric(&m, "rds_csi_reconciler_not_ready_attachments"),
        1.0,
        "{m}"
    );
    assert!(metric(&m, "rds_csi_reconciler_not_ready_oldest_seconds") >= 600.0);
    // Reported, not released.
    w.assert_held_by(&vol, "a").await;
    w.cleanup().await;
}

/// The controller's paged LISTs (pages of 500 decoded into minimal structs)
/// follow the API server's continue tokens to the end: with pages of 2,
/// every PV of the driver is seen once.
#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn paged_minimal_lists_follow_continue_tokens_to_the_end() {
    use attachment_manager::lists::{self, PvFacts};
    let w = World::new("pages", &[]).await;
    let ids: std::collections::BTreeSet<String> =
        (0..5).map(|i| format!("pvc-{}-{i}", w.name)).collect();
    for id in &ids {
        w.pv_for(id).await;
    }
    let driver = w.driver();
    let mut seen = Vec::new();
    let mut pages = 0;
    lists::for_each_page_of(&w.client, lists::PV_PATH, 2, |page: Vec<PvFacts>| {
        pages += 1;
        assert!(page.len() <= 2, "a page of {} objects", page.len());
        seen.extend(
            page.iter()
                .filter_map(|pv| pv.handle_for(&driver).map(str::to_string)),
        );
    })
    .await
    .unwrap();
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(seen.len(), ids.len(), "{seen:?}");
    assert_eq!(
        seen.into_iter().collect::<std::collections::BTreeSet<_>>(),
        ids
    );
    w.cleanup().await;
}
