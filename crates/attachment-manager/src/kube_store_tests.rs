use super::*;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

/// [`rebuild_volume`] with a 60 s migration timeout and no node fenced.
fn rebuild(
    vas: &[SeenAttachment],
    annotations: &BTreeMap<String, String>,
    rwx_block: bool,
) -> Option<RebuiltState> {
    rebuild_volume(
        vas,
        annotations,
        rwx_block,
        Duration::from_secs(60),
        &|_| false,
    )
}

#[test]
fn event_notes_are_cut_to_the_api_limit_on_a_character_boundary() {
    assert_eq!(truncated("short".into(), NOTE_LIMIT), "short");
    let long = "é".repeat(NOTE_LIMIT);
    let cut = truncated(long, NOTE_LIMIT);
    assert!(cut.len() <= NOTE_LIMIT, "{}", cut.len());
    assert!(cut.ends_with('…'));
    assert!(cut.len() > NOTE_LIMIT - 8);
}

/// A window a -> b opened at 10 with `deadline`: the migration and the
/// state that holds it.
fn migrating(deadline: Timestamp, timeout_reported: bool) -> (Migration, VolumeState) {
    let m = Migration {
        source: "a".into(),
        target: "b".into(),
        started: t(10),
        deadline,
        timeout_reported,
    };
    let at = |node: &str, s: i64| Attachment {
        node: node.into(),
        since: t(s),
    };
    let state = VolumeState {
        kind: AccessKind::MultiNodeBlock,
        nodes: vec![at("a", 0), at("b", 10)],
        migration: Some(m.clone()),
        last_detach: None,
    };
    (m, state)
}

/// The annotations a PV carries after `s` was saved.
fn persisted(s: &VolumeState) -> BTreeMap<String, String> {
    annotations_for(s)
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
        .collect()
}

#[test]
fn annotations_round_trip_a_migration_through_a_rebuild() {
    let (m, s) = migrating(t(310), false);
    let ann = persisted(&s);
    assert_eq!(ann[ANN_ATTACHED_NODE], "a,b");
    // The VolumeAttachments were created a little later than the
    // recorded times; the recorded deadline wins.
    let rebuilt = state_from_cluster(
        vec![("b".into(), t(12)), ("a".into(), t(1))],
        &ann,
        true,
        Duration::from_secs(300),
    );
    assert_eq!(rebuilt.migration, Some(m));
    assert_eq!(rebuilt.kind, AccessKind::MultiNodeBlock);
    rebuilt.check_invariants().unwrap();
}

#[test]
fn a_released_volume_clears_every_annotation() {
    let ann = annotations_for(&VolumeState::default());
    assert!(ann.values().all(Option::is_none));
    assert_eq!(ann.len(), 7);
}

fn seen(node: &str, at: i64, attached: bool) -> SeenAttachment {
    SeenAttachment {
        node: node.into(),
        since: t(at),
        attached,
    }
}

fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn the_rebuild_keeps_an_annotation_holder_whose_volume_attachment_exists_unattached() {
    let r = rebuild(
        &[seen("a", 0, false)],
        &ann(&[(ANN_ATTACHED_NODE, "a")]),
        false,
    )
    .expect("acknowledged publish kept");
    assert_eq!(r.state.holders(), vec!["a"]);
    assert_eq!(r.conflict, None);
}

#[test]
fn an_unattached_volume_attachment_the_annotations_do_not_name_holds_nothing() {
    assert_eq!(
        rebuild(&[seen("a", 0, false)], &BTreeMap::new(), false),
        None
    );
    // Named, but its VolumeAttachment is gone: not a holder either.
    assert_eq!(rebuild(&[], &ann(&[(ANN_ATTACHED_NODE, "a")]), false), None);
}

#[test]
fn a_single_node_volume_with_two_attached_volume_attachments_is_a_conflict_not_a_migration() {
    let r = rebuild(
        &[seen("a", 0, true), seen("b", 5, true)],
        &BTreeMap::new(),
        false,
    )
    .unwrap();
    assert_eq!(r.state.holders(), vec!["a", "b"]);
    assert_eq!(r.state.kind, AccessKind::SingleNode);
    assert_eq!(r.state.migration, None);
    assert!(r.conflict.unwrap().contains("[\"a\", \"b\"]"));
    // The same on an RWX block volume is the migration window it was.
    let r = rebuild(
        &[seen("a", 0, true), seen("b", 5, true)],
        &BTreeMap::new(),
        true,
    )
    .unwrap();
    assert!(r.state.migration.is_some());
    assert_eq!(r.conflict, None);
}

#[test]
fn an_out_of_service_node_holds_nothing_after_a_rebuild() {
    let r = rebuild_volume(
        &[seen("a", 0, true), seen("b", 5, false)],
        &ann(&[(ANN_ATTACHED_NODE, "b")]),
        false,
        Duration::from_secs(60),
        &|n| n == "a",
    )
    .unwrap();
    assert_eq!(r.state.holders(), vec!["b"]);
    assert_eq!(r.conflict, None);
}

#[test]
fn a_reported_migration_timeout_survives_a_rebuild() {
    let (mut m, s) = migrating(t(40), true);
    let a = persisted(&s);
    let r = rebuild_volume(
        &[seen("a", 0, true), seen("b", 10, true)],
        &a,
        true,
        Duration::from_secs(30),
        &|_| false,
    )
    .unwrap();
    assert_eq!(r.state.migration.as_ref(), Some(&m));
    let mut again = r.state.clone();
    assert_eq!(again.tick(t(100)), None, "not reported twice");
    m.timeout_reported = false;
    assert!(annotations_for(&VolumeState {
        migration: Some(m),
        ..s
    })[ANN_MIGRATION_TIMEOUT_REPORTED]
        .is_none());
}

#[test]
fn two_attachments_without_a_record_get_a_deadline_from_the_later_one() {
    let s = state_from_cluster(
        vec![("a".into(), t(0)), ("b".into(), t(100))],
        &BTreeMap::new(),
        false,
        Duration::from_secs(60),
    );
    let m = s.migration.unwrap();
    assert_eq!((m.source.as_str(), m.target.as_str()), ("a", "b"));
    assert_eq!(m.deadline, t(160));
}

#[test]
fn one_attachment_of_a_filesystem_volume_is_single_node() {
    let s = state_from_cluster(
        vec![("a".into(), t(0))],
        &BTreeMap::new(),
        false,
        Duration::from_secs(60),
    );
    assert_eq!(s.kind, AccessKind::SingleNode);
    assert_eq!(s.holders(), vec!["a"]);
    assert!(s.migration.is_none());
}
