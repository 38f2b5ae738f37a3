//! What the driver records with each volume and snapshot it makes: which
//! cluster made it and when, a snapshot's lineage, a byte copy not yet
//! known complete, and what the orphan sweep learned about it (its
//! PersistentVolume's reclaim policy was Retain; since when it has had no
//! PersistentVolume). The backend keeps it beside the volume (on the RDS,
//! the disk's comment, the only per-disk text RouterOS keeps across a
//! controller restart), in the one-line text form of [`VolumeMeta::render`].

use std::fmt;

use jiff::Timestamp;

use crate::names::{ValidationError, VolumeId};

/// The first word of every comment the driver writes on a disk. The
/// comment is the only place RouterOS keeps the driver's records.
pub const COMMENT_TAG: &str = "rds-csi";

/// Longest cluster identity accepted (a Kubernetes UID is 36 characters).
pub const MAX_CLUSTER_ID_LEN: usize = 63;

/// The identity of the cluster a disk belongs to (`--cluster-id`; by
/// default the UID of the `kube-system` namespace). Letters, digits, `-`,
/// `_` and `.`, starting and ending with a letter or digit: nothing that
/// means anything inside a quoted RouterOS string, no space that would end
/// the comment's field.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClusterId(String);

impl ClusterId {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let err = |r: &str| Err(ValidationError::new("cluster id", s, r));
        if s.is_empty() {
            return err("must not be empty");
        }
        if s.len() > MAX_CLUSTER_ID_LEN {
            return err(&format!("longer than {MAX_CLUSTER_ID_LEN} characters"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return err("only letters, digits, '-', '_' and '.' are allowed");
        }
        let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
        if !alnum(s.chars().next()) || !alnum(s.chars().last()) {
            return err("must start and end with a letter or digit");
        }
        Ok(ClusterId(s.to_string()))
    }
}

crate::text!(ClusterId);

/// How a snapshot's data was copied from its volume (`method=` in the
/// comment); see `docs/snapshots.md` for what each guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyMethod {
    /// A read-only Btrfs subvolume snapshot: instant, copy-on-write,
    /// point in time.
    Subvolume,
    /// `/disk add copy-from=`: what the Go driver does.
    CopyFrom,
    /// `/disk copy`: a background byte copy, not point in time.
    ByteCopy,
}

impl CopyMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            CopyMethod::Subvolume => "subvolume",
            CopyMethod::CopyFrom => "copy-from",
            CopyMethod::ByteCopy => "copy",
        }
    }

    pub fn parse(s: &str) -> Option<CopyMethod> {
        [
            CopyMethod::Subvolume,
            CopyMethod::CopyFrom,
            CopyMethod::ByteCopy,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
}

impl fmt::Display for CopyMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a snapshot disk came from, which RouterOS does not record: its
/// volume, that volume's size when the snapshot was taken (the smallest a
/// restore may be; `None` when the snapshot's own disk size says it, as
/// for a subvolume snapshot made without looking the volume up) and how
/// the data was copied. The snapshot's creation time is the comment's
/// `created`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lineage {
    pub source: VolumeId,
    pub size_bytes: Option<u64>,
    pub method: CopyMethod,
}

/// What the driver records in a disk's comment:
/// `rds-csi created=<time> cluster=<id> [snapshot-of=<volume> size=<bytes>
/// method=<method>] [copy-of=<disk>] [retain=yes] [orphaned-since=<time>]`.
///
/// Built only from timestamps, a validated [`ClusterId`] and fixed words, so
/// a rendered comment holds nothing but letters, digits, `-`, `_`, `.`, `:`,
/// `=` and single spaces: nothing a caller could use to inject syntax into
/// the quoted `comment="..."` argument. The fields that keep data safe
/// (`cluster`, `retain`) come first, in case a long comment is ever cut.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMeta {
    /// When CreateVolume made the disk.
    pub created: Option<Timestamp>,
    /// The cluster that made it. `None`: no identity (made by hand, by the
    /// Go driver, or by a version of this driver before identities).
    pub cluster: Option<ClusterId>,
    /// Set on a snapshot: what it is a snapshot of.
    pub snapshot: Option<Lineage>,
    /// A byte copy (`/disk copy`) from this disk into this one was started
    /// and is not yet known to be complete: until the mark is cleared the
    /// disk's data is not to be trusted, whatever its `status` says.
    pub copy_of: Option<VolumeId>,
    /// The disk's PersistentVolume had reclaim policy Retain when the orphan
    /// sweep last saw it: never deleted by the sweep.
    pub retain: bool,
    /// When the orphan sweep first saw the disk without a PersistentVolume.
    pub orphaned_since: Option<Timestamp>,
}

fn render_time(at: Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl VolumeMeta {
    /// The comment of a disk CreateVolume makes now.
    pub fn created(at: Timestamp, cluster: Option<ClusterId>) -> Self {
        VolumeMeta {
            created: Some(at),
            cluster,
            ..VolumeMeta::default()
        }
    }

    /// Nothing recorded: no comment is written.
    pub fn is_empty(&self) -> bool {
        *self == VolumeMeta::default()
    }

    /// The comment text (without quotes).
    pub fn render(&self) -> String {
        let mut s = COMMENT_TAG.to_string();
        if let Some(at) = self.created {
            s.push_str(&format!(" created={}", render_time(at)));
        }
        if let Some(id) = &self.cluster {
            s.push_str(&format!(" cluster={id}"));
        }
        if let Some(l) = &self.snapshot {
            s.push_str(&format!(" snapshot-of={}", l.source));
            if let Some(size) = l.size_bytes {
                s.push_str(&format!(" size={size}"));
            }
            s.push_str(&format!(" method={}", l.method));
        }
        if let Some(from) = &self.copy_of {
            s.push_str(&format!(" copy-of={from}"));
        }
        if self.retain {
            s.push_str(" retain=yes");
        }
        if let Some(at) = self.orphaned_since {
            s.push_str(&format!(" orphaned-since={}", render_time(at)));
        }
        s
    }

    /// Reads a disk's comment. `None` for a comment the driver did not
    /// write (a disk made by hand or by another driver). The older form
    /// `rds-csi created=<time>` reads as a comment with no identity.
    ///
    /// A comment that does not read back word for word as this version
    /// would write it (an unknown word, a value that does not parse, a
    /// field twice, a comment cut short) keeps what could be read but has
    /// no identity: the orphan sweep then neither rewrites it (which could
    /// drop a `retain=yes` it failed to read) nor deletes the disk.
    /// Total: never panics, whatever the input.
    pub fn parse(comment: &str) -> Option<VolumeMeta> {
        let rest = comment.trim().strip_prefix(COMMENT_TAG)?;
        if !(rest.is_empty() || rest.starts_with(char::is_whitespace)) {
            return None;
        }
        let mut c = VolumeMeta::default();
        let mut clusters = Vec::new();
        let (mut source, mut size, mut method) = (None, None, None);
        for word in rest.split_whitespace() {
            let Some((key, value)) = word.split_once('=') else {
                continue;
            };
            match key {
                "created" => {
                    c.created = c.created.or_else(|| value.parse().ok());
                }
                "orphaned-since" => {
                    c.orphaned_since = c.orphaned_since.or_else(|| value.parse().ok());
                }
                "retain" => c.retain |= value == "yes",
                "cluster" => clusters.push(ClusterId::new(value).ok()),
                "snapshot-of" => source = source.or_else(|| VolumeId::new(value).ok()),
                "size" => size = size.or(Some(value.parse::<u64>().ok())),
                "method" => method = method.or_else(|| CopyMethod::parse(value)),
                "copy-of" => c.copy_of = c.copy_of.take().or_else(|| VolumeId::new(value).ok()),
                _ => {}
            }
        }
        // A snapshot's lineage counts only whole (a size given but
        // unreadable is a part missing): a part alone could make a restore
        // of the wrong size.
        let size = match size {
            None => Some(None),
            Some(Some(n)) => Some(Some(n)),
            Some(None) => None,
        };
        if let (Some(source), Some(method), Some(size_bytes)) = (source, method, size) {
            c.snapshot = Some(Lineage {
                source,
                size_bytes,
                method,
            });
        }
        c.cluster = match clusters.split_first() {
            Some((first, rest)) if rest.iter().all(|c| c == first) => first.clone(),
            _ => None,
        };
        let words: Vec<&str> = comment.split_whitespace().collect();
        if c.render() != words.join(" ") {
            c.cluster = None;
        }
        Some(c)
    }
}

impl fmt::Display for VolumeMeta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

/// Arbitrary records, for property tests here and in every backend that
/// stores them (feature `strategies`).
#[cfg(any(test, feature = "strategies"))]
pub mod strategies {
    use jiff::Timestamp;
    use proptest::prelude::*;

    use super::{ClusterId, CopyMethod, Lineage, VolumeMeta};
    use crate::names::VolumeId;

    /// Records whose volume IDs (lineage source, copy source) are drawn
    /// from `names`, times in whole seconds (as they are kept).
    pub fn metas<S>(names: S) -> impl Strategy<Value = VolumeMeta>
    where
        S: Strategy<Value = String> + Clone,
    {
        let id = |s: String| VolumeId::new(&s).expect("the strategy gives valid IDs");
        let lineage = (
            names.clone(),
            proptest::option::of(any::<u64>()),
            prop_oneof![
                Just(CopyMethod::Subvolume),
                Just(CopyMethod::CopyFrom),
                Just(CopyMethod::ByteCopy)
            ],
        )
            .prop_map(move |(source, size_bytes, method)| Lineage {
                source: id(source),
                size_bytes,
                method,
            });
        let time = || proptest::option::of(0i64..253_402_300_799);
        (
            time(),
            proptest::option::of("[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?"),
            proptest::option::of(lineage),
            proptest::option::of(names),
            any::<bool>(),
            time(),
        )
            .prop_map(
                move |(created, cluster, snapshot, copy_of, retain, since)| VolumeMeta {
                    created: created.map(|s| Timestamp::from_second(s).unwrap()),
                    cluster: cluster.map(|c| ClusterId::new(&c).unwrap()),
                    snapshot,
                    copy_of: copy_of.map(id),
                    retain,
                    orphaned_since: since.map(|s| Timestamp::from_second(s).unwrap()),
                },
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UID: &str = "0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3";

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_kubernetes_uid_is_a_cluster_id_and_syntax_is_not() {
        assert!(ClusterId::new(UID).is_ok());
        assert!(ClusterId::new("lab.cluster_2").is_ok());
        for bad in [
            "",
            "a b",
            "a\"b",
            "a;b",
            "a]b",
            "$x",
            "a=b",
            "a\\b",
            "a\nb",
            "-lead",
            "trail-",
            "ä",
            &"x".repeat(64),
        ] {
            assert!(ClusterId::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_comment_reads_back_what_was_written() {
        let c = VolumeMeta {
            created: Some(at("2026-11-22T07:10:05Z")),
            cluster: Some(ClusterId::new(UID).unwrap()),
            snapshot: None,
            copy_of: None,
            retain: true,
            orphaned_since: Some(at("2026-11-23T08:00:00Z")),
        };
        assert_eq!(
            c.render(),
            format!(
                "rds-csi created=2026-11-22T07:10:05Z cluster={UID} retain=yes \
                 orphaned-since=2026-11-23T08:00:00Z"
            )
        );
        assert_eq!(VolumeMeta::parse(&c.render()), Some(c));
    }

    #[test]
    fn the_older_comment_has_a_creation_time_and_no_identity() {
        let c = VolumeMeta::parse("rds-csi created=2026-11-22T07:10:05Z").unwrap();
        assert_eq!(c.created, Some(at("2026-11-22T07:10:05Z")));
        assert_eq!(c.cluster, None);
        assert!(!c.retain);
        assert_eq!(c.orphaned_since, None);
    }

    #[test]
    fn comments_the_driver_did_not_write_are_none() {
        for other in ["", "made by hand", "rds-csix created=1", "csi created=x"] {
            assert_eq!(VolumeMeta::parse(other), None, "{other:?}");
        }
    }

    #[test]
    fn bad_values_leave_their_field_unknown_and_unknown_words_are_skipped() {
        let c = VolumeMeta::parse(
            "rds-csi created=yesterday cluster=a\"b retain=maybe future=1 lone \
             orphaned-since=2026-11-23T08:00:00Z",
        )
        .unwrap();
        assert_eq!(c.created, None);
        assert_eq!(c.cluster, None);
        assert!(!c.retain);
        assert_eq!(c.orphaned_since, Some(at("2026-11-23T08:00:00Z")));
    }

    #[test]
    fn a_snapshot_comment_records_its_volume_size_and_method() {
        let text = format!(
            "rds-csi created=2026-12-07T11:00:00Z cluster={UID} snapshot-of=pvc-1 \
             size=1073741824 method=subvolume"
        );
        let c = VolumeMeta::parse(&text).unwrap();
        assert_eq!(
            c.snapshot,
            Some(Lineage {
                source: VolumeId::new("pvc-1").unwrap(),
                size_bytes: Some(1 << 30),
                method: CopyMethod::Subvolume,
            })
        );
        assert_eq!(c.render(), text);
        assert!(c.cluster.is_some());
        // Without a size: the snapshot disk's own size is the restore size.
        let sized_by_disk = format!(
            "rds-csi created=2026-12-07T11:00:00Z cluster={UID} snapshot-of=pvc-1 method=subvolume"
        );
        let c = VolumeMeta::parse(&sized_by_disk).unwrap();
        assert_eq!(c.snapshot.unwrap().size_bytes, None);
    }

    #[test]
    fn a_snapshot_lineage_missing_a_part_is_no_lineage_and_no_identity() {
        for bad in [
            format!("rds-csi cluster={UID} snapshot-of=pvc-1 size=10"),
            format!("rds-csi cluster={UID} snapshot-of=pvc-1 size=ten method=copy"),
            format!("rds-csi cluster={UID} snapshot-of=a]b size=10 method=copy"),
            format!("rds-csi cluster={UID} snapshot-of=pvc-1 size=10 method=magic"),
        ] {
            let c = VolumeMeta::parse(&bad).unwrap();
            assert_eq!(c.snapshot, None, "{bad:?}");
            assert_eq!(c.cluster, None, "{bad:?}");
        }
    }

    #[test]
    fn two_different_clusters_in_one_comment_are_no_identity() {
        let c = VolumeMeta::parse("rds-csi cluster=a cluster=b").unwrap();
        assert_eq!(c.cluster, None);
    }

    #[test]
    fn a_comment_that_does_not_read_back_word_for_word_has_no_identity() {
        let full = format!(
            "rds-csi created=2026-11-22T07:10:05Z cluster={UID} retain=yes \
             orphaned-since=2026-11-23T08:00:00Z"
        );
        assert!(VolumeMeta::parse(&full).unwrap().cluster.is_some());
        // Extra spaces or a line break between words change nothing.
        let spaced = full.replace(' ', "  \n ");
        assert!(VolumeMeta::parse(&spaced).unwrap().cluster.is_some());
        for bad in [
            // Cut short in the middle of a field: the retain mark is lost.
            format!("rds-csi created=2026-11-22T07:10:05Z cluster={UID} ret"),
            format!("rds-csi cluster={UID} retain=maybe"),
            format!("rds-csi cluster={UID} future=1"),
            format!("rds-csi cluster={UID} cluster={UID}"),
            format!("rds-csi created=2026-11-22T07:10:05.5Z cluster={UID}"),
        ] {
            let c = VolumeMeta::parse(&bad).unwrap();
            assert_eq!(c.cluster, None, "{bad:?}");
        }
        // Set by hand to hand an older disk to a cluster: exact, so owned.
        let c = VolumeMeta::parse(&format!("rds-csi cluster={UID}")).unwrap();
        assert_eq!(c.cluster, Some(ClusterId::new(UID).unwrap()));
    }

    proptest! {
        #[test]
        fn rendered_comments_hold_no_routeros_syntax_and_read_back(
            c in strategies::metas("[a-z0-9][a-z0-9.-]{0,40}")
        ) {
            let text = c.render();
            let clean = text
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.:= ".contains(ch));
            prop_assert!(clean, "{}", text);
            prop_assert!(!text.contains("  "));
            prop_assert_eq!(VolumeMeta::parse(&text), Some(c));
        }

        #[test]
        fn the_comment_parser_never_panics(s in any::<String>()) {
            let _ = VolumeMeta::parse(&s);
            let _ = VolumeMeta::parse(&format!("rds-csi {s}"));
        }

        #[test]
        fn no_accepted_cluster_id_contains_routeros_syntax(s in any::<String>()) {
            if let Ok(id) = ClusterId::new(&s) {
                let syntax = ['"', '[', ']', ';', '$', ' ', '\\', '\n', '{', '}', '='];
                prop_assert!(!id.as_str().contains(syntax));
            }
        }
    }
}
