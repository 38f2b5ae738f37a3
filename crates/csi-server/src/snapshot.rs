//! Snapshots as the CSI layer sees them, in pure functions: the snapshot ID
//! a request name gets, the Go driver's snapshot names, what a snapshot
//! disk on the RDS says about itself (lineage from its comment, or from its
//! name for the Go driver's), the volume layouts and copy methods a
//! StorageClass may ask for, and ListSnapshots' filters and pages.
//!
//! Nothing here talks to the RDS; the controller gathers the disks and
//! carries the answers out. What each method guarantees is
//! `docs/snapshots.md`.

use jiff::Timestamp;
use storage::{CopyMethod, Volume, VolumeId};

/// The first characters of every snapshot's slot, ours and the Go
/// driver's. Volume IDs never start with it (CreateVolume refuses such a
/// name), so no listing mistakes a snapshot for a volume.
pub const SNAPSHOT_PREFIX: &str = storage::SNAPSHOT_ID_PREFIX;

/// The snapshot ID for a CreateSnapshot request name: `snap-<uuid>`, the
/// UUID version 5 of the name in the DNS namespace. The same name always
/// gives the same ID (a retry finds what its first attempt made), and it is
/// the ID the Go driver's older releases gave the same name.
pub fn snapshot_id(name: &str) -> VolumeId {
    let id = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, name.as_bytes());
    VolumeId::new(&format!("{SNAPSHOT_PREFIX}{id}")).expect("snap-<uuid> is a valid slot")
}

/// What the name of a snapshot the Go driver made tells:
/// `snap-<volume-uuid>-at-<suffix>`, its source `pvc-<volume-uuid>`, and
/// when the suffix is a Unix time, when it was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoSnapshotName {
    pub source: VolumeId,
    pub created: Option<Timestamp>,
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')))
}

/// Reads a Go driver snapshot name; `None` for anything else. The suffix is
/// a Unix time or a hex hash; only a decimal number of seconds between
/// 2020 and 2200 is taken as a time (a hash that happens to be all digits
/// and land there is read as a time: the creation time is then wrong, the
/// data is not). Never panics.
pub fn parse_go_snapshot_name(slot: &str) -> Option<GoSnapshotName> {
    let rest = slot.strip_prefix(SNAPSHOT_PREFIX)?;
    let uuid = rest.get(..36)?;
    let suffix = rest.get(36..)?.strip_prefix("-at-")?;
    if !is_uuid(uuid)
        || suffix.is_empty()
        || !suffix.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
    {
        return None;
    }
    let created = suffix
        .parse::<i64>()
        .ok()
        .filter(|s| (1_577_836_800..7_258_118_400).contains(s))
        .and_then(|s| Timestamp::from_second(s).ok());
    Some(GoSnapshotName {
        source: VolumeId::new(&format!("pvc-{uuid}")).ok()?,
        created,
    })
}

/// Where a volume's image lives (StorageClass `volumeLayout`): `flat`,
/// `<volumePath>/<volume-id>.img` (the Go driver's layout), or `subvolume`,
/// a Btrfs subvolume per volume, `/<pool>/<volume-id>/volume.img`.
pub use storage::Layout as VolumeLayout;

/// A snapshot as ListSnapshots and CreateSnapshot report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub id: String,
    pub source: String,
    /// The source's size when taken: the smallest restore.
    pub size_bytes: u64,
    /// The point in time the snapshot holds; `None` only for a Go driver
    /// snapshot whose name holds no time (the caller fills it in from the
    /// image file).
    pub created: Option<Timestamp>,
    pub method: CopyMethod,
    /// False while a byte copy into it is still running.
    pub ready: bool,
}

impl SnapshotInfo {
    /// What a snapshot disk says about itself: the lineage in its comment,
    /// or for a disk without one, what a Go driver snapshot name tells.
    /// `None` for a disk that is neither (made by hand, or a comment whose
    /// lineage did not read back whole): such a disk is not listed, and
    /// nothing deletes it but an explicit DeleteSnapshot of its ID. A disk
    /// with any `status` (a byte copy still running into it), or whose
    /// copy is not yet known complete (`copy-of` in its comment), is not
    /// ready.
    pub fn from_volume(disk: &Volume) -> Option<SnapshotInfo> {
        let copying = disk.busy.is_some() || disk.meta.copy_of.is_some();
        if let Some(l) = &disk.meta.snapshot {
            return Some(SnapshotInfo {
                id: disk.id.clone(),
                source: l.source.to_string(),
                size_bytes: l.size_bytes.unwrap_or(disk.size_bytes),
                created: disk.meta.created,
                method: l.method,
                ready: !copying,
            });
        }
        if !disk.meta.is_empty() {
            return None;
        }
        let go = parse_go_snapshot_name(&disk.id)?;
        Some(SnapshotInfo {
            id: disk.id.clone(),
            source: go.source.to_string(),
            size_bytes: disk.size_bytes,
            created: go.created,
            method: CopyMethod::CopyFrom,
            ready: !copying,
        })
    }
}

/// Why a ListSnapshots page cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// The token names no snapshot in the list (CSI: ABORTED).
    #[error("starting_token {0:?} does not name a snapshot in this list; start again without it")]
    UnknownToken(String),
}

/// One ListSnapshots page: the snapshots matching the filters, in ID
/// order, starting after the one `starting_token` names, at most
/// `max_entries` of them (0: all), and the token of the next page (empty
/// when this is the last).
pub fn page(
    mut all: Vec<SnapshotInfo>,
    snapshot_id: &str,
    source_volume_id: &str,
    starting_token: &str,
    max_entries: usize,
) -> Result<(Vec<SnapshotInfo>, String), PageError> {
    all.retain(|s| {
        (snapshot_id.is_empty() || s.id == snapshot_id)
            && (source_volume_id.is_empty() || s.source == source_volume_id)
    });
    all.sort_by(|a, b| a.id.cmp(&b.id));
    all.dedup_by(|a, b| a.id == b.id);
    let start = if starting_token.is_empty() {
        0
    } else {
        all.iter()
            .position(|s| s.id == starting_token)
            .ok_or_else(|| PageError::UnknownToken(starting_token.to_string()))?
    };
    let rest = all.split_off(start);
    let take = if max_entries == 0 {
        rest.len()
    } else {
        max_entries.min(rest.len())
    };
    let next = rest.get(take).map(|s| s.id.clone()).unwrap_or_default();
    Ok((rest.into_iter().take(take).collect(), next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use storage::{Layout, Lineage, VolumeMeta};

    const GO_UUID: &str = "a1b2c3d4-e5f6-7890-abcd-ef1234567890";

    fn disk(slot: &str, meta: VolumeMeta, path: &str) -> Volume {
        Volume {
            id: slot.into(),
            location: Some(path.into()),
            layout: Layout::Flat,
            size_bytes: 5 << 30,
            nqn: None,
            port: None,
            exported: false,
            meta,
            busy: None,
            allowed_hosts: None,
        }
    }

    fn info(id: &str, source: &str) -> SnapshotInfo {
        SnapshotInfo {
            id: id.into(),
            source: source.into(),
            size_bytes: 1,
            created: None,
            method: CopyMethod::Subvolume,
            ready: true,
        }
    }

    #[test]
    fn a_snapshot_id_depends_only_on_the_name_as_in_the_go_driver() {
        // Go: "snap-" + uuid.NewSHA1(DNS namespace, name).
        let id = snapshot_id("snapshot-0f6c1d2e");
        assert_eq!(id, snapshot_id("snapshot-0f6c1d2e"));
        assert_ne!(id, snapshot_id("snapshot-0f6c1d2f"));
        let uuid = id.as_str().strip_prefix("snap-").unwrap();
        assert!(is_uuid(uuid), "{id}");
        assert_eq!(&uuid[14..15], "5", "a version 5 UUID: {id}");
        // Known answer: the DNS-namespace v5 UUID of "www.example.com".
        assert_eq!(
            snapshot_id("www.example.com").as_str(),
            "snap-2ed6657d-e927-568b-95e1-2665a8aea6a2"
        );
    }

    #[test]
    fn a_go_driver_snapshot_name_gives_its_volume_and_a_unix_time_suffix_its_creation() {
        let timed = parse_go_snapshot_name(&format!("snap-{GO_UUID}-at-1739800000")).unwrap();
        assert_eq!(timed.source.as_str(), format!("pvc-{GO_UUID}"));
        assert_eq!(
            timed.created,
            Some(Timestamp::from_second(1_739_800_000).unwrap())
        );
        let hashed = parse_go_snapshot_name(&format!("snap-{GO_UUID}-at-3a9f8c02d1")).unwrap();
        assert_eq!(hashed.source.as_str(), format!("pvc-{GO_UUID}"));
        assert_eq!(hashed.created, None);
        for other in [
            format!("snap-{GO_UUID}"),
            format!("snap-{GO_UUID}-at-"),
            format!("snap-{GO_UUID}-at-XYZ"),
            format!("snap-{}-at-1", GO_UUID.to_uppercase()),
            "snap-short-at-1".to_string(),
            format!("pvc-{GO_UUID}-at-1"),
        ] {
            assert_eq!(parse_go_snapshot_name(&other), None, "{other}");
        }
    }

    #[test]
    fn a_snapshot_disk_reads_its_lineage_and_a_go_snapshot_its_name() {
        let at: Timestamp = "2026-12-07T11:00:00Z".parse().unwrap();
        let ours = disk(
            "snap-1",
            VolumeMeta {
                created: Some(at),
                snapshot: Some(Lineage {
                    source: VolumeId::new("pvc-9").unwrap(),
                    size_bytes: Some(1 << 30),
                    method: CopyMethod::ByteCopy,
                }),
                ..VolumeMeta::default()
            },
            "/storage-pool/metal-csi/snap-1.img",
        );
        let s = SnapshotInfo::from_volume(&Volume {
            busy: Some("0 / 1 (0%)".into()),
            ..ours.clone()
        })
        .unwrap();
        assert_eq!((s.source.as_str(), s.size_bytes), ("pvc-9", 1 << 30));
        assert_eq!(
            (s.created, s.method, s.ready),
            (Some(at), CopyMethod::ByteCopy, false)
        );

        let go_slot = format!("snap-{GO_UUID}-at-1739800000");
        let go = disk(
            &go_slot,
            VolumeMeta::default(),
            "/storage-pool/metal-csi/x.img",
        );
        let s = SnapshotInfo::from_volume(&go).unwrap();
        assert_eq!(s.source, format!("pvc-{GO_UUID}"));
        assert_eq!(
            (s.size_bytes, s.method, s.ready),
            (5 << 30, CopyMethod::CopyFrom, true)
        );

        // Ours without a (whole) lineage, or by hand: not a snapshot we list.
        let volume_comment = VolumeMeta::created(at, None);
        assert_eq!(
            SnapshotInfo::from_volume(&disk(&go_slot, volume_comment, "/p/x.img")),
            None
        );
        assert_eq!(
            SnapshotInfo::from_volume(&disk("snap-by-hand", VolumeMeta::default(), "/p/x.img")),
            None
        );
    }

    #[test]
    fn the_layout_parameter_reads_only_its_two_words() {
        assert_eq!(
            VolumeLayout::parse("subvolume"),
            Some(VolumeLayout::Subvolume)
        );
        assert_eq!(VolumeLayout::parse("flat"), Some(VolumeLayout::Flat));
        assert_eq!(VolumeLayout::parse("Subvolume"), None);
    }

    #[test]
    fn pages_filter_sort_and_continue_after_the_token() {
        let all = vec![
            info("snap-c", "v1"),
            info("snap-a", "v1"),
            info("snap-b", "v2"),
        ];
        let (p, next) = page(all.clone(), "", "", "", 2).unwrap();
        assert_eq!(
            p.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["snap-a", "snap-b"]
        );
        assert_eq!(next, "snap-c");
        let (p, next) = page(all.clone(), "", "", &next, 2).unwrap();
        assert_eq!(
            p.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            ["snap-c"]
        );
        assert_eq!(next, "");
        let (p, _) = page(all.clone(), "", "v1", "", 0).unwrap();
        assert_eq!(p.len(), 2);
        let (p, _) = page(all.clone(), "snap-b", "", "", 0).unwrap();
        assert_eq!(p, vec![info("snap-b", "v2")]);
        let (p, _) = page(all.clone(), "snap-b", "v1", "", 0).unwrap();
        assert!(p.is_empty());
        assert_eq!(
            page(all, "", "", "snap-zz", 0),
            Err(PageError::UnknownToken("snap-zz".into()))
        );
    }

    proptest! {
        #[test]
        fn the_go_snapshot_name_parser_never_panics(s in any::<String>()) {
            let _ = parse_go_snapshot_name(&s);
            let _ = parse_go_snapshot_name(&format!("snap-{s}"));
            let _ = parse_go_snapshot_name(&format!("snap-{GO_UUID}-at-{s}"));
        }

        #[test]
        fn paging_through_everything_returns_each_snapshot_once(
            ids in proptest::collection::btree_set("[a-z]{1,6}", 0..30),
            size in 1usize..7,
        ) {
            let all: Vec<SnapshotInfo> = ids.iter().map(|i| info(i, "v")).collect();
            let mut seen = Vec::new();
            let mut token = String::new();
            loop {
                let (p, next) = page(all.clone(), "", "", &token, size).unwrap();
                prop_assert!(p.len() <= size);
                seen.extend(p.into_iter().map(|s| s.id));
                if next.is_empty() { break; }
                token = next;
            }
            prop_assert_eq!(seen, ids.into_iter().collect::<Vec<_>>());
        }
    }
}
