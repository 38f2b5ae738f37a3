use super::*;
use proptest::prelude::*;

const RWO: AccessKind = AccessKind::SingleNode;
const RWX: AccessKind = AccessKind::MultiNodeBlock;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn policy() -> Policy {
    Policy::default()
}

fn publish(node: &str, kind: AccessKind, now: Timestamp) -> Publish<'_> {
    Publish::new(node, kind, now, Duration::from_secs(300))
}

/// A publish to `node` that KubeVirt's objects show is a migration target.
fn target(node: &str, now: Timestamp) -> Publish<'_> {
    Publish {
        migration_target: true,
        ..publish(node, RWX, now)
    }
}

/// `p`, with the cluster reporting the `gone` nodes out of service.
fn with_gone<'a>(gone: &'a [String], p: Publish<'a>) -> Publish<'a> {
    Publish {
        gone_holders: gone,
        ..p
    }
}

/// A volume attached to `node` at t(0).
fn held_by(node: &str, kind: AccessKind) -> VolumeState {
    let mut s = VolumeState::default();
    s.publish(&policy(), &publish(node, kind, t(0)));
    s
}

/// An RWX volume migrating from `a` (attached at t(0)) to `b` (at t(1)).
fn migrating() -> VolumeState {
    let mut s = held_by("a", RWX);
    s.publish(&policy(), &target("b", t(1)));
    s
}

fn attached(d: &PublishDecision) -> bool {
    matches!(d, PublishDecision::Attached { .. })
}

#[test]
fn first_publish_attaches() {
    let mut s = VolumeState::default();
    let d = s.publish(&policy(), &publish("a", RWO, t(0)));
    assert_eq!(
        d,
        PublishDecision::Attached {
            handoff: None,
            stale_cleared: vec![],
            migration_started: None
        }
    );
    assert_eq!(s.holders(), vec!["a"]);
    assert_eq!(s.nodes[0].since, t(0));
}

#[test]
fn publishing_again_to_the_same_node_is_idempotent() {
    let mut s = held_by("a", RWO);
    let before = s.clone();
    assert_eq!(
        s.publish(&policy(), &publish("a", RWO, t(5))),
        PublishDecision::AlreadyAttached
    );
    assert_eq!(s, before, "the attach time is kept");
}

#[test]
fn second_node_is_refused_while_first_is_attached() {
    let mut s = held_by("a", RWO);
    let before = s.clone();
    let d = s.publish(&policy(), &publish("b", RWO, t(1)));
    assert_eq!(
        d,
        PublishDecision::Refused(Refusal::AttachedElsewhere {
            holders: vec!["a".into()]
        })
    );
    assert_eq!(s, before);
}

#[test]
fn a_different_access_kind_on_the_same_node_is_refused() {
    let mut s = held_by("a", RWO);
    let d = s.publish(&policy(), &publish("a", RWX, t(1)));
    assert_eq!(d, PublishDecision::Refused(Refusal::IncompatibleOnSameNode));
}

#[test]
fn a_gone_holder_is_dropped_and_the_new_node_gets_the_volume() {
    let mut s = held_by("a", RWO);
    let gone = vec!["a".to_string()];
    let d = s.publish(&policy(), &with_gone(&gone, publish("b", RWO, t(10))));
    assert_eq!(
        d,
        PublishDecision::Attached {
            handoff: None,
            stale_cleared: vec!["a".into()],
            migration_started: None
        }
    );
    assert_eq!(s.holders(), vec!["b"]);
}

#[test]
fn a_gone_node_that_is_not_a_holder_changes_nothing() {
    let mut s = held_by("a", RWO);
    let gone = vec!["z".to_string()];
    let d = s.publish(&policy(), &with_gone(&gone, publish("b", RWO, t(1))));
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::AttachedElsewhere { .. })
    ));
}

#[test]
fn a_publish_after_a_release_is_a_handoff_only_to_another_node_within_the_grace_period() {
    let handoff_to_b = Handoff {
        from: "a".into(),
        to: "b".into(),
        after: Duration::from_secs(3),
    };
    // (case, node publishing, when; a released the volume at t(100))
    let cases = [
        (
            "publish_to_another_node_within_the_grace_period_is_a_handoff",
            "b",
            103,
            Some(handoff_to_b),
        ),
        (
            "publish_after_the_grace_period_is_a_plain_attach",
            "b",
            131,
            None,
        ),
        (
            "reattaching_to_the_same_node_is_not_a_handoff",
            "a",
            101,
            None,
        ),
    ];
    for (case, node, at, handoff) in cases {
        let mut s = held_by("a", RWO);
        s.unpublish("a", t(100));
        let d = s.publish(&policy(), &publish(node, RWO, t(at)));
        let want = PublishDecision::Attached {
            handoff,
            stale_cleared: vec![],
            migration_started: None,
        };
        assert_eq!(d, want, "{case}");
    }
}

#[test]
fn old_detach_stamp_never_lets_a_third_node_take_an_attached_volume() {
    let mut s = held_by("a", RWO);
    s.unpublish("a", t(10));
    assert!(attached(&s.publish(&policy(), &publish("b", RWO, t(11)))));
    assert_eq!(
        s.last_detach, None,
        "cleared as soon as a new attachment completed"
    );
    // Still inside a's grace period: c must be refused.
    let d = s.publish(&policy(), &publish("c", RWO, t(12)));
    assert_eq!(
        d,
        PublishDecision::Refused(Refusal::AttachedElsewhere {
            holders: vec!["b".into()]
        })
    );
}

#[test]
fn unpublishing_a_node_that_does_not_hold_the_volume_is_idempotent() {
    let mut s = VolumeState::default();
    assert_eq!(s.unpublish("a", t(0)), UnpublishDecision::NotAttached);
    s.publish(&policy(), &publish("a", RWO, t(0)));
    assert_eq!(s.unpublish("b", t(1)), UnpublishDecision::NotAttached);
    assert_eq!(
        s.unpublish("a", t(2)),
        UnpublishDecision::Detached { ended: None }
    );
    assert_eq!(s.unpublish("a", t(3)), UnpublishDecision::NotAttached);
}

#[test]
fn rwx_block_second_attach_without_migration_target_is_refused() {
    let mut s = held_by("a", RWX);
    let d = s.publish(&policy(), &publish("b", RWX, t(1)));
    assert_eq!(
        d,
        PublishDecision::Refused(Refusal::NotAMigrationTarget {
            node: "b".into(),
            holder: "a".into(),
            why: String::new(),
        })
    );
    assert_eq!(s.holders(), vec!["a"]);
}

#[test]
fn rwx_block_migration_target_is_admitted_with_a_deadline() {
    let mut s = held_by("a", RWX);
    let d = s.publish(&policy(), &target("b", t(10)));
    let m = Migration {
        source: "a".into(),
        target: "b".into(),
        started: t(10),
        deadline: t(310),
        timeout_reported: false,
    };
    assert_eq!(
        d,
        PublishDecision::Attached {
            handoff: None,
            stale_cleared: vec![],
            migration_started: Some(m.clone())
        }
    );
    assert_eq!(s.migration, Some(m));
}

#[test]
fn the_relaxed_policy_admits_an_unverified_second_node_but_never_a_third() {
    let relaxed = Policy {
        allow_unverified_second_node: true,
        ..Policy::default()
    };
    let mut s = VolumeState::default();
    s.publish(&relaxed, &publish("a", RWX, t(0)));
    assert!(attached(&s.publish(&relaxed, &publish("b", RWX, t(1)))));
    let d = s.publish(&relaxed, &target("c", t(2)));
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::TwoNodesAlready { .. })
    ));
}

#[test]
fn a_verified_third_node_is_never_admitted() {
    let mut s = migrating();
    let d = s.publish(&policy(), &target("c", t(2)));
    assert_eq!(
        d,
        PublishDecision::Refused(Refusal::TwoNodesAlready {
            holders: vec!["a".into(), "b".into()]
        })
    );
}

#[test]
fn the_source_leaving_completes_the_migration() {
    let mut s = migrating();
    let d = s.unpublish("a", t(30));
    let UnpublishDecision::Detached {
        ended: Some((m, outcome)),
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(outcome, MigrationOutcome::Completed);
    assert_eq!(m.target, "b");
    assert_eq!(s.holders(), vec!["b"]);
    assert_eq!(s.migration, None);
    assert_eq!(
        s.last_detach, None,
        "still attached to b: nothing to hand off"
    );
}

#[test]
fn the_target_leaving_rolls_the_migration_back() {
    let mut s = migrating();
    let UnpublishDecision::Detached {
        ended: Some((_, outcome)),
    } = s.unpublish("b", t(30))
    else {
        panic!()
    };
    assert_eq!(outcome, MigrationOutcome::RolledBack);
    assert_eq!(s.holders(), vec!["a"]);
}

#[test]
fn after_a_completed_migration_a_new_verified_migration_can_start() {
    let mut s = migrating();
    s.unpublish("a", t(2));
    let d = s.publish(&policy(), &target("c", t(3)));
    assert!(attached(&d));
    assert_eq!(s.migration.as_ref().unwrap().source, "b");
}

#[test]
fn a_migration_past_its_deadline_is_reported_once_and_admits_no_one() {
    let mut s = held_by("a", RWX);
    s.publish(&policy(), &target("b", t(0)));
    assert_eq!(s.tick(t(300)), None, "not yet past the deadline");
    let m = s.tick(t(301)).expect("timed out");
    assert!(m.timeout_reported);
    assert_eq!(s.tick(t(400)), None, "reported once");
    let d = s.publish(&policy(), &target("c", t(401)));
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::TwoNodesAlready { .. })
    ));
    // One side leaving ends it.
    s.unpublish("b", t(402));
    assert_eq!(s.migration, None);
}

#[test]
fn a_single_node_holder_blocks_a_multi_node_publish_elsewhere() {
    let mut s = held_by("a", RWO);
    let d = s.publish(&policy(), &target("b", t(1)));
    assert!(matches!(
        d,
        PublishDecision::Refused(Refusal::KindMismatch { .. })
    ));
}

#[test]
fn a_node_gone_mid_migration_ends_it_as_node_lost() {
    let mut s = migrating();
    let ended = s.node_gone("a").expect("a held it");
    assert_eq!(ended.map(|(_, o)| o), Some(MigrationOutcome::NodeLost));
    assert_eq!(s.holders(), vec!["b"]);
    assert_eq!(s.node_gone("a"), None);
}

#[test]
fn a_gone_node_leaves_no_handoff_stamp() {
    let mut s = held_by("a", RWO);
    s.node_gone("a");
    assert_eq!(s.last_detach, None);
    assert!(!s.is_attached());
}

#[test]
fn a_gone_holder_during_a_migration_publish_is_cleared_before_deciding() {
    let mut s = migrating();
    let gone = vec!["a".to_string()];
    let d = s.publish(
        &policy(),
        &Publish {
            gone_holders: &gone,
            migration_target: true,
            ..publish("c", RWX, t(2))
        },
    );
    let PublishDecision::Attached {
        stale_cleared,
        migration_started,
        ..
    } = d
    else {
        panic!("{d:?}")
    };
    assert_eq!(stale_cleared, vec!["a"]);
    assert_eq!(migration_started.unwrap().source, "b");
    assert_eq!(s.nodes.len(), 2);
}

#[derive(Debug, Clone)]
enum Ev {
    Publish {
        node: u8,
        rwx: bool,
        target: bool,
        gone: Vec<u8>,
    },
    Unpublish {
        node: u8,
    },
    Gone {
        node: u8,
    },
    Tick,
}

fn ev() -> impl Strategy<Value = Ev> {
    prop_oneof![
        4 => (0u8..4, any::<bool>(), any::<bool>(), prop::collection::vec(0u8..4, 0..2))
            .prop_map(|(node, rwx, target, gone)| Ev::Publish { node, rwx, target, gone }),
        2 => (0u8..4).prop_map(|node| Ev::Unpublish { node }),
        1 => (0u8..4).prop_map(|node| Ev::Gone { node }),
        1 => Just(Ev::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_event_sequence_breaks_the_invariants(events in prop::collection::vec(ev(), 1..60), relaxed in any::<bool>()) {
        let policy = Policy { allow_unverified_second_node: relaxed, ..Policy::default() };
        let mut s = VolumeState::default();
        let names = ["a", "b", "c", "d"];
        for (i, e) in events.into_iter().enumerate() {
            let now = t(i as i64 * 7);
            match e {
                Ev::Publish { node, rwx, target, gone } => {
                    let gone: Vec<String> = gone.into_iter().map(|g| names[g as usize].to_string()).collect();
                    let kind = if rwx { RWX } else { RWO };
                    let before = s.clone();
                    let d = s.publish(&policy, &Publish { gone_holders: &gone, migration_target: target, ..publish(names[node as usize], kind, now) });
                    if let PublishDecision::Refused(_) = d {
                        prop_assert_eq!(&s, &before, "a refusal never changes state");
                    }
                    if kind == RWO && attached(&d) {
                        prop_assert_eq!(s.nodes.len(), 1, "an RWO volume never has two nodes");
                    }
                    if !relaxed && !target && before.nodes.len() == 1 && before.nodes.iter().all(|a| !gone.contains(&a.node)) {
                        prop_assert!(!attached(&d), "an unverified second node is never admitted");
                    }
                }
                Ev::Unpublish { node } => { s.unpublish(names[node as usize], now); }
                Ev::Gone { node } => { s.node_gone(names[node as usize]); }
                Ev::Tick => { s.tick(now); }
            }
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "invariant broken: {}: {:?}", e, s);
            }
            prop_assert!(s.nodes.len() <= 2, "never three nodes");
        }
    }
}
