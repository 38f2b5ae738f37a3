//! Who holds a volume: handoffs between nodes, fencing when a node is
//! deleted or taken out of service, concurrent publishes, and host NQNs
//! shared by cloned machines.

use crate::world::*;

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn vm_restart_on_another_node_is_a_timed_handoff() {
    let (mut w, vol) = World::with_disk_on_a("handoff", &["a", "b"], &[]).await;
    w.assert_held_by(&vol, "a").await;
    // The old virt-launcher pod terminates; the new one lands on b.
    w.detach(&vol, "a").await.unwrap();
    assert!(w.holder(&vol).await.is_none());
    w.attach(&vol, "b", false).await.unwrap();
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/attached-node"], w.node("b"));
    assert!(
        ann["rds.csi.srvlab.io/attached-at"]
            .parse::<jiff::Timestamp>()
            .is_ok(),
        "RFC 3339: {ann:?}"
    );
    w.wait_event("disk", "Handoff").await;
    let m = w.scrape();
    assert_eq!(
        metric(&m, "rds_csi_attachment_grace_period_used_total"),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "rds_csi_handoff_duration_seconds_count"), 1.0);
    // While b holds it, a gets nothing.
    // The refusal names the holder.
    let holder = w.node("b");
    w.refused_saying(&vol, "a", false, &holder).await;
    w.wait_event("disk", "AttachConflict").await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_node_deleted_while_attached_keeps_its_volume_until_its_volume_attachment_goes() {
    let (mut w, vol) = World::with_disk_on_a("nodedel", &["a", "b"], &[]).await;
    w.delete_node("a").await;
    // The machine may still run: deleting its Node object fences nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.refused(&vol, "b", false).await;
    w.wait_event("disk", "AttachedToDeletedNode").await;
    w.assert_held_by(&vol, "a").await;
    assert!(metric(&w.scrape(), "rds_csi_attachment_deleted_node_kept_total") >= 1.0);
    // Kubernetes detaches it (here: its VolumeAttachment is deleted
    // without an unpublish, as after a force-detach): now b may have it.
    w.delete_volume_attachment(&vol, &w.node("a"))
        .await
        .unwrap();
    w.attach_within(&vol, "b", false, Duration::from_secs(10))
        .await
        .unwrap();
    w.wait_event("disk", "StaleAttachmentCleared").await;
    w.assert_held_by(&vol, "b").await;
    w.assert_metric("rds_csi_attachment_stale_cleared_total", 1.0);
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn an_out_of_service_taint_releases_the_node_s_volume() {
    let (mut w, vol) = World::with_disk_on_a("oos", &["a", "b"], &[]).await;
    w.patch_node("a", out_of_service_taint(), false).await;
    w.attach_within(&vol, "b", false, Duration::from_secs(10))
        .await
        .unwrap();
    w.wait_event("disk", "StaleAttachmentCleared").await;
    // The fenced node itself gets nothing.
    let other = w.volume("other", false).await;
    w.refused(&other, "a", false).await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn of_64_concurrent_publishes_to_different_nodes_exactly_one_wins() {
    let names: Vec<String> = (0..64).map(|i| format!("n{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut w = World::started("race", &refs).await;
    let vol = w.volume("disk", false).await;
    let ctx = w.volume_context(&vol).await;
    let csi = w.csi().clone();
    let mut tasks = Vec::new();
    for n in &names {
        let mut csi = csi.clone();
        let req = proto::ControllerPublishVolumeRequest {
            volume_id: vol.clone(),
            node_id: w.node(n),
            volume_capability: Some(cap(false)),
            volume_context: ctx.clone(),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            csi.controller_publish_volume(req)
                .await
                .map(drop)
                .map_err(|s| s.code())
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => won += 1,
            Err(code) => assert!(
                matches!(code, Code::Aborted | Code::FailedPrecondition),
                "{code:?}"
            ),
        }
    }
    assert_eq!(won, 1, "exactly one node wins");
    let holder = w.annotations(&vol).await["rds.csi.srvlab.io/attached-node"].clone();
    assert!(!holder.contains(','), "one holder: {holder}");
    let _ = w
        .ctl
        .as_mut()
        .unwrap()
        .identity
        .probe(proto::ProbeRequest {})
        .await
        .unwrap();
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_publish_to_a_node_whose_host_nqn_another_node_reports_is_refused_naming_both() {
    use attachment_manager::host_nqn::{record_host_nqn, HOST_NQN_ANNOTATION};
    let mut w = World::new("hostnqn", &["a", "b", "c"]).await;
    // What each node plugin does at start, as the node plugins of two
    // machines cloned from one image would.
    let shared = format!("nqn.2014-08.org.nvmexpress:{}-cloned", w.name);
    for n in ["a", "b"] {
        record_host_nqn(w.client.clone(), &w.node(n), &shared)
            .await
            .unwrap();
    }
    let own = format!("nqn.2014-08.org.nvmexpress:{}-c", w.name);
    record_host_nqn(w.client.clone(), &w.node("c"), &own)
        .await
        .unwrap();
    let on_node = Api::<Node>::all(w.client.clone())
        .get(&w.node("a"))
        .await
        .unwrap()
        .metadata
        .annotations
        .unwrap_or_default();
    assert_eq!(on_node.get(HOST_NQN_ANNOTATION), Some(&shared));
    // Started after the annotations: its Node watch has them from the
    // first list, before any publish is answered.
    w.start().await;
    let vol = w.volume("disk", false).await;
    let err = w.refused(&vol, "a", false).await;
    for want in [w.node("a"), w.node("b"), shared.clone()] {
        assert!(err.message().contains(&want), "{want}: {}", err.message());
    }
    assert!(w.holder(&vol).await.is_none(), "nothing attached");
    w.refused(&vol, "b", false).await;
    // The operator gives node b its own host NQN and its plugin restarts:
    // an attach retry to a succeeds once the watch has seen it.
    record_host_nqn(
        w.client.clone(),
        &w.node("b"),
        &format!("nqn.2014-08.org.nvmexpress:{}-b", w.name),
    )
    .await
    .unwrap();
    w.attach_within(&vol, "a", false, Duration::from_secs(5))
        .await
        .unwrap();
    w.cleanup().await;
}
