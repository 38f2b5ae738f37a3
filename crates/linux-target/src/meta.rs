//! What the driver records on each logical volume it makes, as LVM tags:
//! the same facts an RDS disk keeps in its comment (which cluster made it
//! and when, a snapshot's volume, the orphan sweep's marks), plus a clone's
//! source.
//!
//! One tag per fact: `rds-csi` marks the volume as the driver's, then
//! `rds-csi.created=<time>`, `rds-csi.cluster=<id>`,
//! `rds-csi.snapshot-of=<volume>` with `rds-csi.size=<bytes>` (the
//! volume's size when the snapshot was taken) and `rds-csi.method=<how>`,
//! `rds-csi.clone-of=<volume>`, `rds-csi.copy-of=<volume>` (a copy not yet
//! known complete), `rds-csi.retain` and `rds-csi.orphaned-since=<time>`. Every character
//! is one LVM allows in a tag (letters, digits, `_ + . - / = ! : & #`).
//! Tags are a set changed one at a time (`--addtag`/`--deltag`), so
//! marking a volume never rewrites the facts it does not change.

use jiff::Timestamp;
use routeros::ClusterId;
use storage::CopyMethod;

use crate::names::VolumeName;

/// The tag on every logical volume the driver made.
pub const TAG: &str = "rds-csi";
const CREATED: &str = "rds-csi.created=";
const CLUSTER: &str = "rds-csi.cluster=";
const SNAPSHOT_OF: &str = "rds-csi.snapshot-of=";
const CLONE_OF: &str = "rds-csi.clone-of=";
const SIZE: &str = "rds-csi.size=";
const METHOD: &str = "rds-csi.method=";
const COPY_OF: &str = "rds-csi.copy-of=";
const RETAIN: &str = "rds-csi.retain";
const ORPHANED: &str = "rds-csi.orphaned-since=";
/// The full ID of a volume whose logical volume has a derived name (see
/// [`crate::names::LvName`]). Not a record: the name depends on it, so
/// nothing but the removal of the volume takes it away.
const ID: &str = "rds-csi.id=";

/// The tag that keeps a volume's ID on a logical volume of a derived name.
pub fn id_tag(id: &VolumeName) -> String {
    format!("{ID}{id}")
}

/// The ID the tags (as `lvs` prints them) keep, if exactly one is there
/// and valid: two different ones name no volume. Total: never panics.
pub fn parse_id(tags: &str) -> Option<VolumeName> {
    let mut ids = tags
        .split(',')
        .filter_map(|t| t.trim().strip_prefix(ID))
        .map(VolumeName::new);
    let first = ids.next()?.ok()?;
    ids.all(|i| i.as_ref() == Ok(&first)).then_some(first)
}

/// The driver's records on one volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// When it was made.
    pub created: Option<Timestamp>,
    /// The cluster that made it; `None` when none or more than one is
    /// recorded.
    pub cluster: Option<ClusterId>,
    /// Set on a snapshot: the volume it is a snapshot of. LVM forgets a
    /// thin snapshot's origin when the origin is removed; this does not.
    pub snapshot_of: Option<VolumeName>,
    /// With `snapshot_of`: the volume's size when the snapshot was taken
    /// (`None`: the snapshot's own size says it).
    pub size: Option<u64>,
    /// With `snapshot_of`: how the data was copied.
    pub method: Option<CopyMethod>,
    /// Set on a volume made from a snapshot or another volume.
    pub clone_of: Option<VolumeName>,
    /// A copy into this volume not yet known complete.
    pub copy_of: Option<VolumeName>,
    /// Its PersistentVolume's reclaim policy was Retain when the orphan
    /// sweep last saw it.
    pub retain: bool,
    /// When the orphan sweep first saw it without a PersistentVolume.
    pub orphaned_since: Option<Timestamp>,
}

fn render_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Meta {
    /// The records of a volume made now.
    pub fn created(at: Timestamp, cluster: Option<ClusterId>) -> Meta {
        Meta {
            created: Some(at),
            cluster,
            ..Meta::default()
        }
    }

    /// The tags, the marker first.
    pub fn tags(&self) -> Vec<String> {
        let mut tags = vec![TAG.to_string()];
        if let Some(at) = self.created {
            tags.push(format!("{CREATED}{}", render_time(at)));
        }
        if let Some(id) = &self.cluster {
            tags.push(format!("{CLUSTER}{id}"));
        }
        if let Some(v) = &self.snapshot_of {
            tags.push(format!("{SNAPSHOT_OF}{v}"));
        }
        if let Some(n) = self.size {
            tags.push(format!("{SIZE}{n}"));
        }
        if let Some(m) = self.method {
            tags.push(format!("{METHOD}{m}"));
        }
        if let Some(v) = &self.clone_of {
            tags.push(format!("{CLONE_OF}{v}"));
        }
        if let Some(v) = &self.copy_of {
            tags.push(format!("{COPY_OF}{v}"));
        }
        tags.extend(self.mark_tags());
        tags
    }

    /// The tags of the orphan sweep's marks alone.
    fn mark_tags(&self) -> Vec<String> {
        let mut tags = Vec::new();
        if self.retain {
            tags.push(RETAIN.to_string());
        }
        if let Some(at) = self.orphaned_since {
            tags.push(format!("{ORPHANED}{}", render_time(at)));
        }
        tags
    }

    /// Reads a volume's tags (as `lvs` prints them, comma-separated).
    /// `None` without the marker: not the driver's. A value that does not
    /// parse leaves its fact unknown; two different clusters are no
    /// cluster. Total: never panics.
    pub fn parse(tags: &str) -> Option<Meta> {
        let tags: Vec<&str> = tags.split(',').map(str::trim).collect();
        if !tags.contains(&TAG) {
            return None;
        }
        let mut m = Meta::default();
        let mut clusters = Vec::new();
        for tag in tags {
            if let Some(v) = tag.strip_prefix(CREATED) {
                m.created = m.created.or_else(|| v.parse().ok());
            } else if let Some(v) = tag.strip_prefix(CLUSTER) {
                clusters.push(ClusterId::new(v).ok());
            } else if let Some(v) = tag.strip_prefix(SNAPSHOT_OF) {
                m.snapshot_of = m.snapshot_of.or_else(|| VolumeName::new(v).ok());
            } else if let Some(v) = tag.strip_prefix(CLONE_OF) {
                m.clone_of = m.clone_of.or_else(|| VolumeName::new(v).ok());
            } else if let Some(v) = tag.strip_prefix(COPY_OF) {
                m.copy_of = m.copy_of.or_else(|| VolumeName::new(v).ok());
            } else if let Some(v) = tag.strip_prefix(SIZE) {
                m.size = m.size.or_else(|| v.parse().ok());
            } else if let Some(v) = tag.strip_prefix(METHOD) {
                m.method = m.method.or_else(|| CopyMethod::parse(v));
            } else if tag == RETAIN {
                m.retain = true;
            } else if let Some(v) = tag.strip_prefix(ORPHANED) {
                m.orphaned_since = m.orphaned_since.or_else(|| v.parse().ok());
            }
        }
        m.cluster = match clusters.split_first() {
            Some((first, rest)) if rest.iter().all(|c| c == first) => first.clone(),
            _ => None,
        };
        Some(m)
    }

    /// The `--deltag`/`--addtag` changes that take `current` (as `lvs`
    /// printed it) to these marks, leaving every other tag alone.
    pub(crate) fn mark_changes(&self, current: &str) -> (Vec<String>, Vec<String>) {
        let marks = |t: &str| t == RETAIN || t.starts_with(ORPHANED);
        changes(current, self.mark_tags(), marks)
    }

    /// The `--deltag`/`--addtag` changes that take `current` to exactly
    /// these records, leaving tags that are not the driver's alone.
    pub(crate) fn changes(&self, current: &str) -> (Vec<String>, Vec<String>) {
        let ours = |t: &str| t == TAG || (t.starts_with("rds-csi.") && !t.starts_with(ID));
        changes(current, self.tags(), ours)
    }
}

/// The changes that take the tags of `current` that `owned` selects to
/// `want`.
fn changes(
    current: &str,
    want: Vec<String>,
    owned: impl Fn(&str) -> bool,
) -> (Vec<String>, Vec<String>) {
    let have: Vec<&str> = current
        .split(',')
        .map(str::trim)
        .filter(|t| owned(t))
        .collect();
    let remove = have
        .iter()
        .filter(|t| !want.iter().any(|w| w == *t))
        .map(|t| t.to_string())
        .collect();
    let add = want
        .into_iter()
        .filter(|w| !have.contains(&w.as_str()))
        .collect();
    (remove, add)
}

/// Whether a tag has only characters LVM accepts in tags.
pub fn is_lvm_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 1024
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+.-/=!:&#".contains(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn tags_read_back_what_was_written() {
        let m = Meta {
            created: Some(at("2026-12-07T11:00:00Z")),
            cluster: Some(ClusterId::new("0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap()),
            snapshot_of: Some(VolumeName::new("pvc-1").unwrap()),
            size: Some(1 << 30),
            method: Some(CopyMethod::CopyFrom),
            clone_of: None,
            copy_of: Some(VolumeName::new("pvc-0").unwrap()),
            retain: true,
            orphaned_since: Some(at("2026-12-08T00:00:00Z")),
        };
        let tags = m.tags();
        assert_eq!(tags[0], "rds-csi");
        assert!(tags.iter().all(|t| is_lvm_tag(t)), "{tags:?}");
        // lvs prints tags sorted and comma-separated.
        let mut sorted = tags.clone();
        sorted.sort();
        assert_eq!(Meta::parse(&sorted.join(",")), Some(m));
    }

    /// A volume as `lvs` listed it after `lvcreate --addtag` (lvm2 2.03.16).
    #[test]
    fn tags_as_lvs_printed_them_read() {
        let m = Meta::parse("rds-csi,rds-csi.cluster=abc,rds-csi.created=2026-12-07T11:00:00Z")
            .unwrap();
        assert_eq!(m.created, Some(at("2026-12-07T11:00:00Z")));
        assert_eq!(m.cluster.unwrap().as_str(), "abc");
    }

    #[test]
    fn a_volume_without_the_marker_is_not_the_driver_s() {
        assert_eq!(Meta::parse(""), None);
        assert_eq!(Meta::parse("rds-csi.cluster=abc"), None);
        assert_eq!(Meta::parse("other,rds-csix"), None);
    }

    #[test]
    fn two_clusters_are_no_cluster_and_bad_values_are_unknown() {
        let m =
            Meta::parse("rds-csi,rds-csi.cluster=a,rds-csi.cluster=b,rds-csi.created=yesterday")
                .unwrap();
        assert_eq!(m.cluster, None);
        assert_eq!(m.created, None);
    }

    #[test]
    fn marking_changes_only_the_marks() {
        let current = "rds-csi,rds-csi.cluster=a,rds-csi.orphaned-since=2026-12-01T00:00:00Z";
        let m = Meta {
            retain: true,
            ..Meta::default()
        };
        let (remove, add) = m.mark_changes(current);
        assert_eq!(remove, vec!["rds-csi.orphaned-since=2026-12-01T00:00:00Z"]);
        assert_eq!(add, vec!["rds-csi.retain"]);
        let (remove, add) = Meta::parse(current).unwrap().mark_changes(current);
        assert!(remove.is_empty() && add.is_empty());
    }

    #[test]
    fn replacing_the_records_changes_only_the_driver_s_tags() {
        let current = "other,rds-csi,rds-csi.clone-of=snap-1,rds-csi.copy-of=pvc-0,rds-csi.retain";
        let want = Meta {
            clone_of: Some(VolumeName::new("snap-1").unwrap()),
            ..Meta::default()
        };
        let (remove, add) = want.changes(current);
        assert_eq!(remove, vec!["rds-csi.copy-of=pvc-0", "rds-csi.retain"]);
        assert!(add.is_empty(), "{add:?}");
    }

    #[test]
    fn the_id_tag_reads_back_and_survives_replacing_the_records() {
        let id = VolumeName::new(&format!("sanity-{}", "x".repeat(121))).unwrap();
        let tag = id_tag(&id);
        assert!(is_lvm_tag(&tag), "{tag}");
        let current = format!("rds-csi,rds-csi.created=2026-12-07T11:00:00Z,{tag}");
        assert_eq!(parse_id(&current), Some(id.clone()));
        assert_eq!(parse_id("rds-csi"), None);
        assert_eq!(parse_id("rds-csi.id=a+b"), None, "not an ID");
        assert_eq!(
            parse_id("rds-csi.id=a,rds-csi.id=b"),
            None,
            "two IDs name none"
        );
        assert_eq!(
            parse_id("rds-csi.id=a,rds-csi.id=a"),
            VolumeName::new("a").ok()
        );
        // The ID is not one of the records: replacing them keeps it.
        let (remove, add) = Meta::default().changes(&current);
        assert_eq!(remove, vec!["rds-csi.created=2026-12-07T11:00:00Z"]);
        assert!(add.is_empty(), "{add:?}");
        assert_eq!(
            Meta::parse(&current).unwrap().created,
            Some(at("2026-12-07T11:00:00Z"))
        );
    }

    proptest! {
        #[test]
        fn the_id_tag_parser_never_panics(s in any::<String>()) {
            let _ = parse_id(&s);
            let _ = parse_id(&format!("rds-csi.id={s}"));
        }

        #[test]
        fn every_id_round_trips_through_its_tag(id in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}") {
            let id = VolumeName::new(&id).unwrap();
            prop_assert!(is_lvm_tag(&id_tag(&id)));
            prop_assert_eq!(parse_id(&format!("rds-csi,{}", id_tag(&id))), Some(id));
        }

        #[test]
        fn the_tag_parser_never_panics(s in any::<String>()) {
            let _ = Meta::parse(&s);
            let _ = Meta::parse(&format!("rds-csi,{s}"));
            let _ = Meta::default().mark_changes(&s);
            let _ = Meta::default().changes(&s);
        }

        #[test]
        fn every_tag_written_is_one_lvm_accepts(
            created in proptest::option::of(0i64..253_402_300_799),
            cluster in proptest::option::of("[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"),
            source in proptest::option::of("[a-z0-9][a-z0-9.-]{0,99}"),
            retain in any::<bool>(),
            size in proptest::option::of(any::<u64>()),
            method in proptest::option::of(prop_oneof![
                Just(CopyMethod::Subvolume),
                Just(CopyMethod::CopyFrom),
                Just(CopyMethod::ByteCopy)
            ]),
        ) {
            let m = Meta {
                created: created.map(|s| Timestamp::from_second(s).unwrap()),
                cluster: cluster.map(|c| ClusterId::new(&c).unwrap()),
                snapshot_of: source.as_deref().and_then(|s| VolumeName::new(s).ok()),
                size,
                method,
                clone_of: source.as_deref().and_then(|s| VolumeName::new(s).ok()),
                copy_of: source.as_deref().and_then(|s| VolumeName::new(s).ok()),
                retain,
                orphaned_since: created.map(|s| Timestamp::from_second(s).unwrap()),
            };
            for t in m.tags() {
                prop_assert!(is_lvm_tag(&t), "{}", t);
            }
            prop_assert_eq!(Meta::parse(&m.tags().join(",")), Some(m));
        }
    }
}
