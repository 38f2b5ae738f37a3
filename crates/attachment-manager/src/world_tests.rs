//! The rules driven as the manager and the reconcilers drive them, against
//! a model of the cluster: VolumeAttachments, Node deletions, taints, and
//! restarts rebuilt from the annotations the manager persists.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use crate::kube_store::{annotations_for, rebuild_volume, SeenAttachment};
use crate::rules::{AccessKind, Policy, Publish, PublishDecision, UnpublishDecision, VolumeState};

const RWO: AccessKind = AccessKind::SingleNode;
const RWX: AccessKind = AccessKind::MultiNodeBlock;

fn t(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn publish(node: &str, kind: AccessKind, now: Timestamp) -> Publish<'_> {
    Publish::new(node, kind, now, Duration::from_secs(300))
}

fn attached(d: &PublishDecision) -> bool {
    matches!(d, PublishDecision::Attached { .. })
}

/// Events of the cluster around one volume, for the world model below.
#[derive(Debug, Clone)]
enum WorldEv {
    /// The attach/detach controller creates the node's VolumeAttachment
    /// and the attacher calls ControllerPublish.
    Publish {
        node: u8,
        target: bool,
    },
    /// The attacher records a successful publish (`status.attached`).
    Record {
        node: u8,
    },
    /// ControllerUnpublish, then the VolumeAttachment is deleted.
    Unpublish {
        node: u8,
    },
    /// The Node object is deleted; the machine may still run.
    DeleteNode {
        node: u8,
    },
    /// The VolumeAttachment vanishes without an unpublish (finalizer
    /// stripped); the periodic pass then runs.
    VaGone {
        node: u8,
    },
    /// The node is tainted out-of-service.
    Taint {
        node: u8,
    },
    /// The controller restarts and rebuilds from VolumeAttachments and the
    /// PV annotations it persisted.
    Restart,
    Tick,
}

fn world_ev() -> impl Strategy<Value = WorldEv> {
    prop_oneof![
        4 => (0u8..4, any::<bool>()).prop_map(|(node, target)| WorldEv::Publish { node, target }),
        3 => (0u8..4).prop_map(|node| WorldEv::Record { node }),
        2 => (0u8..4).prop_map(|node| WorldEv::Unpublish { node }),
        1 => (0u8..4).prop_map(|node| WorldEv::DeleteNode { node }),
        1 => (0u8..4).prop_map(|node| WorldEv::VaGone { node }),
        1 => (0u8..4).prop_map(|node| WorldEv::Taint { node }),
        1 => Just(WorldEv::Restart),
        1 => Just(WorldEv::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The rules as the manager and the reconcilers drive them, with the
    /// cluster's VolumeAttachments, Node deletions, taints and restarts
    /// from persisted annotations: RWO never has two nodes, RWX never
    /// three, a second node is never admitted without a verified
    /// migration, a deleted Node releases nothing, and a restart keeps
    /// every holder.
    #[test]
    fn no_cluster_history_gives_a_second_writer(
        events in prop::collection::vec(world_ev(), 1..60),
        rwx_pv in any::<bool>(),
    ) {
        use std::collections::{BTreeMap, BTreeSet};
        let policy = Policy::default();
        let kind = if rwx_pv { RWX } else { RWO };
        let names = ["a", "b", "c", "d"];
        let mut s = VolumeState::default();
        // node -> (created, attached)
        let mut vas: BTreeMap<&str, (Timestamp, bool)> = BTreeMap::new();
        let mut deleted: BTreeSet<&str> = BTreeSet::new();
        let mut tainted: BTreeSet<&str> = BTreeSet::new();
        let mut persisted: BTreeMap<String, String> = BTreeMap::new();
        let persist = |s: &VolumeState, p: &mut BTreeMap<String, String>| {
            for (k, v) in annotations_for(s) {
                match v {
                    Some(v) => { p.insert(k.to_string(), v); }
                    None => { p.remove(k); }
                }
            }
        };
        for (i, e) in events.into_iter().enumerate() {
            let now = t(i as i64 * 7);
            let before = s.clone();
            match e {
                WorldEv::Publish { node, target } => {
                    let node = names[node as usize];
                    // The controller answers NOT_FOUND / FAILED_PRECONDITION
                    // for a deleted or tainted publishing node.
                    if deleted.contains(node) || tainted.contains(node) { continue; }
                    vas.entry(node).or_insert((now, false));
                    let gone: Vec<String> = s.holders().into_iter()
                        .filter(|h| tainted.contains(h.as_str()) || !vas.contains_key(h.as_str()))
                        .collect();
                    let d = s.publish(&policy, &Publish { gone_holders: &gone, migration_target: target, ..publish(node, kind, now) });
                    match &d {
                        PublishDecision::Attached { .. } => persist(&s, &mut persisted),
                        PublishDecision::Refused(_) => prop_assert_eq!(&s, &before, "a refusal never changes state"),
                        PublishDecision::AlreadyAttached => {}
                    }
                    let kept = before.nodes.iter().filter(|a| !gone.contains(&a.node)).count();
                    if attached(&d) && kept == 1 {
                        prop_assert!(target, "a second node only as a verified migration target");
                    }
                }
                WorldEv::Record { node } => {
                    let node = names[node as usize];
                    if s.holds(node) {
                        if let Some(va) = vas.get_mut(node) { va.1 = true; }
                    }
                }
                WorldEv::Unpublish { node } => {
                    let node = names[node as usize];
                    if let UnpublishDecision::Detached { .. } = s.unpublish(node, now) {
                        persist(&s, &mut persisted);
                    }
                    vas.remove(node);
                }
                WorldEv::DeleteNode { node } => {
                    deleted.insert(names[node as usize]);
                    prop_assert_eq!(&s, &before, "deleting a Node releases nothing");
                }
                WorldEv::VaGone { node } => {
                    let node = names[node as usize];
                    vas.remove(node);
                    if s.node_gone(node).is_some() { persist(&s, &mut persisted); }
                }
                WorldEv::Taint { node } => {
                    let node = names[node as usize];
                    tainted.insert(node);
                    if s.node_gone(node).is_some() { persist(&s, &mut persisted); }
                }
                WorldEv::Restart => {
                    let seen: Vec<SeenAttachment> = vas.iter()
                        .map(|(n, (since, attached))| SeenAttachment { node: n.to_string(), since: *since, attached: *attached })
                        .collect();
                    let rebuilt = rebuild_volume(&seen, &persisted, rwx_pv, Duration::from_secs(300), &|n| tainted.contains(n));
                    let holders = |s: &VolumeState| s.holders().into_iter().collect::<BTreeSet<_>>();
                    match rebuilt {
                        None => prop_assert!(!s.is_attached(), "a restart keeps every holder"),
                        Some(r) => {
                            prop_assert_eq!(r.conflict, None, "the rules never leave two writers to find");
                            prop_assert_eq!(holders(&r.state), holders(&s), "a restart keeps every holder");
                            prop_assert_eq!(r.state.migration.as_ref().map(|m| (&m.source, &m.target, m.deadline, m.timeout_reported)),
                                            s.migration.as_ref().map(|m| (&m.source, &m.target, m.deadline, m.timeout_reported)));
                            s = r.state;
                        }
                    }
                    if !s.is_attached() { s = VolumeState::default(); }
                }
                WorldEv::Tick => {
                    if s.tick(now).is_some() { persist(&s, &mut persisted); }
                }
            }
            if let Err(e) = s.check_invariants() {
                prop_assert!(false, "invariant broken: {}: {:?}", e, s);
            }
            if kind == RWO { prop_assert!(s.nodes.len() <= 1, "RWO never has two nodes"); }
            prop_assert!(s.nodes.len() <= 2, "never three nodes");
        }
    }
}
