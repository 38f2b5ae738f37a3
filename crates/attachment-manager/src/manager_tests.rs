use std::collections::HashSet;
use std::sync::Arc;

use super::*;
use crate::cluster::{LogEvents, MemoryStore, StaticNodes};

struct Verifier(Mutex<Vec<String>>);

impl MigrationCheck for Verifier {
    fn verify_target<'a>(&'a self, query: MigrationQuery<'a>) -> MigrationVerdict<'a> {
        let ok = lock(&self.0).iter().any(|n| n == query.node);
        Box::pin(async move {
            Ok(if ok {
                MigrationEvidence::Verified("listed".into())
            } else {
                MigrationEvidence::Unverified("no migration of this VM is in progress".into())
            })
        })
    }
}

struct Env {
    m: Arc<Manager>,
    store: Arc<MemoryStore>,
    nodes: Arc<StaticNodes>,
    events: Arc<LogEvents>,
    targets: Arc<Verifier>,
}

fn env() -> Env {
    let store = Arc::new(MemoryStore::default());
    let nodes = Arc::new(StaticNodes::new(["a", "b", "c"].map(String::from)));
    let events = Arc::new(LogEvents::default());
    let targets = Arc::new(Verifier(Mutex::new(vec![])));
    let m = Arc::new(Manager::new(
        Policy::default(),
        store.clone(),
        nodes.clone(),
        targets.clone(),
        events.clone(),
        AttachMetrics::unregistered(),
    ));
    Env {
        m,
        store,
        nodes,
        events,
        targets,
    }
}

/// An environment whose state is rebuilt (empty), ready to publish.
async fn ready() -> Env {
    let e = env();
    e.m.rebuild().await.unwrap();
    e
}

impl Env {
    async fn rwo(&self, volume: &str, node: &str) -> PublishDecision {
        self.m
            .publish(req(volume, node, AccessKind::SingleNode))
            .await
            .unwrap()
    }

    async fn rwx(&self, volume: &str, node: &str) -> PublishDecision {
        self.m
            .publish(req(volume, node, AccessKind::MultiNodeBlock))
            .await
            .unwrap()
    }
}

fn req<'a>(volume: &'a str, node: &'a str, kind: AccessKind) -> PublishRequest<'a> {
    PublishRequest {
        volume,
        node,
        kind,
        pvc: Some(("vms".into(), "disk".into())),
        migration_timeout: Duration::from_secs(300),
    }
}

fn reasons(e: &Env) -> Vec<&'static str> {
    lock(&e.events.seen).iter().map(|ev| ev.reason).collect()
}

#[tokio::test]
async fn publish_before_rebuild_is_refused_fail_closed() {
    let e = env();
    assert!(matches!(
        e.m.publish(req("v", "a", AccessKind::SingleNode)).await,
        Err(ManagerError::NotReady)
    ));
    assert!(matches!(
        e.m.unpublish("v", "a").await,
        Err(ManagerError::NotReady)
    ));
    e.m.rebuild().await.unwrap();
    assert!(matches!(
        e.m.publish(req("v", "a", AccessKind::SingleNode)).await,
        Ok(PublishDecision::Attached { .. })
    ));
}

#[tokio::test]
async fn a_failed_rebuild_is_retried_until_it_succeeds() {
    let e = env();
    *lock(&e.store.fail_loads) = 2;
    let mut s = VolumeState::default();
    s.publish(
        &Policy::default(),
        &Publish {
            node: "a",
            kind: AccessKind::SingleNode,
            now: Timestamp::now(),
            gone_holders: &[],
            migration_target: false,
            migration_note: "",
            migration_timeout: Duration::from_secs(1),
        },
    );
    lock(&e.store.initial).push(crate::cluster::Rebuilt {
        volume: "v".into(),
        state: s,
        pvc: Some(("vms".into(), "disk".into())),
        conflict: None,
    });
    let cancel = CancellationToken::new();
    let task = tokio::spawn(e.m.clone().run(Duration::from_secs(60), cancel.clone()));
    for _ in 0..100 {
        if e.m.is_ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(e.m.is_ready(), "ready after two failed loads");
    assert_eq!(e.m.holders("v"), vec!["a"]);
    // The rebuilt holder is enforced.
    let d = e.rwo("v", "b").await;
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::AttachedElsewhere { .. })
    ));
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_failed_persist_changes_nothing_and_the_retry_works() {
    let e = ready().await;
    *lock(&e.store.fail_saves) = 1;
    assert!(matches!(
        e.m.publish(req("v", "a", AccessKind::SingleNode)).await,
        Err(ManagerError::Cluster { .. })
    ));
    assert!(e.m.holders("v").is_empty());
    assert!(lock(&e.store.saved).is_empty());
    assert!(matches!(
        e.m.publish(req("v", "a", AccessKind::SingleNode)).await,
        Ok(PublishDecision::Attached { .. })
    ));
    assert_eq!(lock(&e.store.saved)["v"].holders(), vec!["a"]);
    e.m.unpublish("v", "a").await.unwrap();
    assert!(
        !lock(&e.store.saved).contains_key("v"),
        "a released volume is cleared from the store"
    );
}

#[tokio::test]
async fn a_handoff_is_counted_timed_and_evented() {
    let e = ready().await;
    e.rwo("v", "a").await;
    e.m.unpublish("v", "a").await.unwrap();
    let d = e.rwo("v", "b").await;
    assert!(matches!(
        d,
        PublishDecision::Attached {
            handoff: Some(_),
            ..
        }
    ));
    assert_eq!(e.m.metrics.grace_period_used.get(), 1);
    assert_eq!(e.m.metrics.handoff_duration.get_sample_count(), 1);
    assert_eq!(reasons(&e), vec!["Handoff"]);
    let ev = &lock(&e.events.seen)[0];
    assert_eq!(ev.pvc, Some(("vms".into(), "disk".into())));
}

#[tokio::test]
async fn a_conflict_is_refused_counted_and_evented_on_the_pvc() {
    let e = ready().await;
    e.rwo("v", "a").await;
    let d = e.rwo("v", "b").await;
    assert!(matches!(d, PublishDecision::Refused(_)));
    assert_eq!(e.m.metrics.conflicts.get(), 1);
    assert_eq!(reasons(&e), vec!["AttachConflict"]);
}

/// What a publish to `b` does while `a` holds the volume and the cluster
/// reports `a`'s node in some state.
struct HolderCase {
    case: &'static str,
    status: NodeStatus,
    /// The VolumeAttachments the store shows; `None`: it cannot tell
    /// (standalone mode).
    attachments: Option<HashSet<(String, String)>>,
    /// Whether `a`'s hold is released and `b` gets the volume.
    released: bool,
    kept_for_deleted_node: u64,
    reasons: &'static [&'static str],
    /// Part of the first event's message.
    first_event: &'static str,
}

#[tokio::test]
async fn a_holder_is_released_for_a_new_node_only_when_its_machine_is_known_to_be_off() {
    let attached_to_a = || Some([("v".to_string(), "a".to_string())].into());
    let cases = [
        HolderCase {
            case: "an_out_of_service_holder_is_dropped_for_the_new_node",
            status: NodeStatus::OutOfService,
            attachments: None,
            released: true,
            kept_for_deleted_node: 0,
            reasons: &["StaleAttachmentCleared"],
            first_event: "out-of-service",
        },
        HolderCase {
            case: "deleting_a_node_with_an_attached_volume_attachment_releases_nothing",
            status: NodeStatus::Missing,
            attachments: attached_to_a(),
            released: false,
            kept_for_deleted_node: 1,
            reasons: &["AttachedToDeletedNode", "AttachConflict"],
            first_event: "a deleted Node may still be running",
        },
        HolderCase {
            case: "a_deleted_node_whose_volume_attachment_is_gone_is_dropped_for_the_new_node",
            status: NodeStatus::Missing,
            attachments: Some(HashSet::new()),
            released: true,
            kept_for_deleted_node: 0,
            reasons: &["StaleAttachmentCleared"],
            first_event: "VolumeAttachment no longer exists",
        },
        HolderCase {
            // Standalone mode: the store cannot tell, so nothing is released.
            case: "without_volume_attachments_to_look_at_a_deleted_node_keeps_its_volume",
            status: NodeStatus::Missing,
            attachments: None,
            released: false,
            kept_for_deleted_node: 1,
            reasons: &["AttachedToDeletedNode", "AttachConflict"],
            first_event: "a deleted Node may still be running",
        },
    ];
    for c in cases {
        let e = ready().await;
        e.rwo("v", "a").await;
        *lock(&e.store.attachments) = c.attachments;
        e.nodes.set("a", c.status);
        let d = e.rwo("v", "b").await;
        let case = c.case;
        if c.released {
            assert!(
                matches!(d, PublishDecision::Attached { ref stale_cleared, .. } if stale_cleared == &vec!["a".to_string()]),
                "{case}: {d:?}"
            );
            assert_eq!(e.m.holders("v"), vec!["b"], "{case}");
        } else {
            assert!(
                matches!(
                    d,
                    PublishDecision::Refused(Refusal::AttachedElsewhere { .. })
                ),
                "{case}: {d:?}"
            );
            assert_eq!(e.m.holders("v"), vec!["a"], "{case}");
        }
        let cleared = u64::from(c.released);
        assert_eq!(e.m.metrics.stale_cleared.get(), cleared, "{case}");
        assert_eq!(
            e.m.metrics.kept_for_deleted_node.get(),
            c.kept_for_deleted_node,
            "{case}"
        );
        assert_eq!(reasons(&e), c.reasons, "{case}");
        let first = lock(&e.events.seen)[0].message.clone();
        assert!(first.contains(c.first_event), "{case}: {first}");
    }
}

#[tokio::test]
async fn a_holder_whose_volume_attachment_disappears_is_released_by_the_periodic_pass() {
    let e = ready().await;
    e.rwo("v1", "a").await;
    e.rwo("v2", "b").await;
    *lock(&e.store.attachments) = Some([("v2".to_string(), "b".to_string())].into());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let released = e.m.release_without_attachment().await.unwrap();
    assert_eq!(released, vec![("v1".to_string(), "a".to_string())]);
    assert!(e.m.holders("v1").is_empty());
    assert_eq!(e.m.holders("v2"), vec!["b"]);
    assert!(
        !lock(&e.store.saved).contains_key("v1"),
        "the release is persisted"
    );
    assert_eq!(reasons(&e), vec!["StaleAttachmentCleared"]);
    assert_eq!(e.m.metrics.stale_cleared.get(), 1);
    // Nothing more to do on the next pass.
    assert!(e.m.release_without_attachment().await.unwrap().is_empty());
}

#[tokio::test]
async fn the_periodic_pass_waits_for_the_rebuild_and_skips_busy_volumes() {
    let e = env();
    assert!(matches!(
        e.m.release_without_attachment().await,
        Err(ManagerError::NotReady)
    ));
    e.m.rebuild().await.unwrap();
    e.rwo("v", "a").await;
    *lock(&e.store.attachments) = Some(Default::default());
    tokio::time::sleep(Duration::from_millis(2)).await;
    let guard = e.m.locks().try_lock("v").unwrap();
    assert!(e.m.release_without_attachment().await.unwrap().is_empty());
    drop(guard);
    assert_eq!(e.m.release_without_attachment().await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_unverified_second_node_is_refused_with_what_was_missing() {
    let e = ready().await;
    e.rwx("v", "a").await;
    let d = e.rwx("v", "b").await;
    let PublishDecision::Refused(r) = d else {
        panic!("{d:?}")
    };
    assert!(
        r.to_string()
            .contains("no migration of this VM is in progress"),
        "{r}"
    );
}

/// A manager rebuilt from a cluster that shows the volume `v` attached to
/// `nodes`, its PV bound to the claim `vms/disk`.
async fn rebuilt_attached_to(nodes: &[&str]) -> Env {
    let e = env();
    let seen: Vec<_> = nodes
        .iter()
        .map(|n| crate::kube_store::SeenAttachment {
            node: n.to_string(),
            since: Timestamp::UNIX_EPOCH,
            attached: true,
        })
        .collect();
    let state = crate::kube_store::rebuild_volume(
        &seen,
        &Default::default(),
        false,
        Duration::from_secs(300),
        &|_| false,
    )
    .unwrap();
    lock(&e.store.initial).push(crate::cluster::Rebuilt {
        volume: "v".into(),
        state: state.state,
        pvc: Some(("vms".into(), "disk".into())),
        conflict: state.conflict,
    });
    e.m.rebuild().await.unwrap();
    e
}

#[tokio::test]
async fn a_rebuilt_conflict_is_kept_fenced_reported_and_counted() {
    let e = rebuilt_attached_to(&["a", "b"]).await;
    assert_eq!(e.m.holders("v"), vec!["a", "b"]);
    assert_eq!(e.m.metrics.rebuild_conflicts.get(), 1);
    assert_eq!(reasons(&e), vec!["AttachConflictOnRebuild"]);
    assert!(e.m.state("v").migration.is_none(), "no invented migration");
    let d = e.rwo("v", "c").await;
    assert!(matches!(d, PublishDecision::Refused(_)), "{d:?}");
    // One side leaving resolves it.
    e.m.unpublish("v", "b").await.unwrap();
    assert_eq!(e.m.holders("v"), vec!["a"]);
}

#[tokio::test]
async fn a_volume_whose_context_names_no_claim_gets_its_events_on_the_claim_its_pv_is_bound_to() {
    // A volume another driver attached (its provisioner passed no claim in
    // the volume context), rebuilt with the claim from its PV's claimRef.
    let e = rebuilt_attached_to(&["a"]).await;
    let bare = |node| PublishRequest {
        pvc: None,
        ..req("v", node, AccessKind::SingleNode)
    };
    let d = e.m.publish(bare("b")).await.unwrap();
    assert!(matches!(d, PublishDecision::Refused(_)), "{d:?}");
    e.m.unpublish("v", "a").await.unwrap();
    let d = e.m.publish(bare("b")).await.unwrap();
    assert!(
        matches!(
            d,
            PublishDecision::Attached {
                handoff: Some(_),
                ..
            }
        ),
        "{d:?}"
    );
    assert_eq!(reasons(&e), vec!["AttachConflict", "Handoff"]);
    for ev in lock(&e.events.seen).iter() {
        assert_eq!(ev.pvc, Some(("vms".into(), "disk".into())), "{}", ev.reason);
    }
}

#[tokio::test]
async fn a_verified_migration_runs_its_course_with_metrics_and_events() {
    let e = ready().await;
    e.rwx("v", "a").await;
    let d = e.rwx("v", "b").await;
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::NotAMigrationTarget { .. })
    ));
    lock(&e.targets.0).push("b".into());
    let d = e.rwx("v", "b").await;
    assert!(matches!(
        d,
        PublishDecision::Attached {
            migration_started: Some(_),
            ..
        }
    ));
    assert_eq!(e.m.metrics.active_migrations.get(), 1);
    assert!(
        lock(&e.store.saved)["v"].migration.is_some(),
        "the window and its deadline are persisted"
    );
    e.m.unpublish("v", "a").await.unwrap();
    assert_eq!(e.m.metrics.active_migrations.get(), 0);
    assert_eq!(
        e.m.metrics
            .migrations
            .with_label_values(&["completed"])
            .get(),
        1
    );
    assert_eq!(
        reasons(&e),
        vec!["AttachConflict", "MigrationStarted", "MigrationCompleted"]
    );
}

#[tokio::test]
async fn a_migration_past_its_deadline_is_reported_by_the_tick() {
    let e = ready().await;
    lock(&e.targets.0).push("b".into());
    let mut r = req("v", "a", AccessKind::MultiNodeBlock);
    r.migration_timeout = Duration::from_secs(1);
    e.m.publish(r.clone()).await.unwrap();
    r.node = "b";
    e.m.publish(r).await.unwrap();
    e.m.tick(Timestamp::now()).await;
    assert_eq!(
        e.m.metrics
            .migrations
            .with_label_values(&["timed_out"])
            .get(),
        0
    );
    e.m.tick(Timestamp::now() + jiff::SignedDuration::from_secs(2))
        .await;
    e.m.tick(Timestamp::now() + jiff::SignedDuration::from_secs(3))
        .await;
    assert_eq!(
        e.m.metrics
            .migrations
            .with_label_values(&["timed_out"])
            .get(),
        1
    );
    assert!(reasons(&e).contains(&"MigrationTimedOut"));
    assert!(
        lock(&e.store.saved)["v"]
            .migration
            .as_ref()
            .unwrap()
            .timeout_reported,
        "the report is persisted"
    );
    // A controller started from what was persisted does not report again.
    let again = env();
    lock(&again.store.initial).push(crate::cluster::Rebuilt {
        volume: "v".into(),
        state: lock(&e.store.saved)["v"].clone(),
        pvc: None,
        conflict: None,
    });
    again.m.rebuild().await.unwrap();
    again
        .m
        .tick(Timestamp::now() + jiff::SignedDuration::from_secs(10))
        .await;
    assert!(!reasons(&again).contains(&"MigrationTimedOut"));
}

#[tokio::test]
async fn an_out_of_service_node_releases_its_volumes_and_the_tick_forgets_released_ones() {
    let e = ready().await;
    e.rwo("v1", "a").await;
    e.rwo("v2", "a").await;
    e.rwo("v3", "b").await;
    let mut released = e.m.release_out_of_service("a").await;
    released.sort();
    assert_eq!(released, vec!["v1", "v2"]);
    assert_eq!(e.m.holders("v3"), vec!["b"]);
    e.m.unpublish("v3", "b").await.unwrap();
    assert_eq!(e.m.tracked(), 3);
    e.m.tick(Timestamp::now() + jiff::SignedDuration::from_secs(60))
        .await;
    assert_eq!(e.m.tracked(), 0, "memory follows the attached set");
}

#[tokio::test]
async fn of_64_concurrent_publishes_to_different_nodes_exactly_one_wins() {
    let e = env();
    // Every node exists.
    let m = Arc::new(Manager::new(
        Policy::default(),
        e.store.clone(),
        Arc::new(StaticNodes::default()),
        e.targets.clone(),
        e.events.clone(),
        AttachMetrics::unregistered(),
    ));
    m.rebuild().await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let node = format!("node-{i}");
            let Ok(_guard) = m.locks().try_lock("v") else {
                return "busy";
            };
            match m
                .publish(req("v", &node, AccessKind::SingleNode))
                .await
                .unwrap()
            {
                PublishDecision::Attached { .. } => "won",
                _ => "refused",
            }
        }));
    }
    let mut won = 0;
    for t in tasks {
        if t.await.unwrap() == "won" {
            won += 1;
        }
    }
    assert_eq!(won, 1);
    assert_eq!(m.holders("v").len(), 1);
    assert!(m.locks().is_empty());
}
