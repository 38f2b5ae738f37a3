//! What the RDS offers for copying a disk: Btrfs subvolumes and their
//! snapshots, `/disk add copy-from=`, a disk over an image file that is
//! already there, and the background `/disk copy` with its progress. Which
//! of these a volume's snapshot uses, and what each guarantees, is the CSI
//! layer's choice (`docs/snapshots.md`); this module only runs them and
//! reads back what RouterOS prints.

use crate::command::{Command, CopyMethod, Nqn, RosPath, Slot};
use crate::comment::DiskComment;
use crate::error::{Error, Result};
use crate::rds::Rds;
#[cfg(test)]
use crate::record::parse_records;
use crate::record::Record;

/// The pool's file system as its `/disk` record prints it (`fs=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolFilesystem {
    Btrfs,
    Xfs,
    /// Printed, but not one the driver knows how to snapshot on.
    Other(String),
    /// The pool record has no `fs=` (an older RouterOS).
    Unknown,
}

impl PoolFilesystem {
    fn from_record(r: &Record) -> PoolFilesystem {
        match r.get("fs") {
            None | Some("") | Some("-") => PoolFilesystem::Unknown,
            Some(fs) if fs.eq_ignore_ascii_case("btrfs") => PoolFilesystem::Btrfs,
            Some(fs) if fs.eq_ignore_ascii_case("xfs") => PoolFilesystem::Xfs,
            Some(other) => PoolFilesystem::Other(other.to_string()),
        }
    }

    /// The copy methods a pool with this file system can do, best first.
    /// `copy-from` and the byte copy work on any file system; whether
    /// `copy-from` shares blocks is unverified (see `docs/routeros.md`).
    pub fn methods(&self) -> Vec<CopyMethod> {
        let mut m = Vec::new();
        if *self == PoolFilesystem::Btrfs {
            m.push(CopyMethod::Subvolume);
        }
        m.extend([CopyMethod::CopyFrom, CopyMethod::ByteCopy]);
        m
    }
}

/// A Btrfs subvolume as `/disk/btrfs/subvolume print` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subvolume {
    pub name: String,
    pub read_only: bool,
    /// The subvolume it is a snapshot of, when RouterOS prints one.
    pub parent: Option<String>,
}

impl Subvolume {
    fn from_record(r: &Record) -> Option<Subvolume> {
        Some(Subvolume {
            name: r.get("name")?.to_string(),
            read_only: r.get_bool("read-only").unwrap_or(false),
            parent: r
                .get("parent")
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        })
    }
}

/// Progress of a `/disk copy` into a disk, from its `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyProgress {
    pub copied: u64,
    pub total: u64,
}

impl CopyProgress {
    /// Reads `<copied> / <total> (<percent>%)`, digits possibly grouped with
    /// spaces. `None` for anything else. Never panics.
    pub fn parse(status: &str) -> Option<CopyProgress> {
        let (counts, _percent) = status.split_once('(').unwrap_or((status, ""));
        let (copied, total) = counts.split_once('/')?;
        let number = |s: &str| -> Option<u64> {
            let digits: String = s.chars().filter(|c| !c.is_whitespace()).collect();
            if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            digits.parse().ok()
        };
        let (copied, total) = (number(copied)?, number(total)?);
        (copied <= total).then_some(CopyProgress { copied, total })
    }

    /// Whole percent done, rounded down; 100 for an empty copy.
    pub fn percent(&self) -> u64 {
        if self.total == 0 {
            return 100;
        }
        u64::try_from(u128::from(self.copied) * 100 / u128::from(self.total)).unwrap_or(100)
    }
}

/// Where a byte copy into a disk stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyState {
    /// No such disk.
    Absent,
    /// A copy is running into it.
    Copying(CopyProgress),
    /// The disk shows no copy: finished, or never started.
    Idle,
}

impl Rds {
    /// The file system of the pool mounted at `mount_point`.
    pub async fn pool_filesystem(&self, mount_point: &Slot) -> Result<PoolFilesystem> {
        Ok(PoolFilesystem::from_record(
            &self.pool_record(mount_point).await?,
        ))
    }

    /// A subvolume `name` on Btrfs file system `fs`: empty, or a snapshot
    /// of `parent`.
    pub async fn create_subvolume(
        &self,
        fs: &Slot,
        name: &Slot,
        parent: Option<&Slot>,
        read_only: bool,
    ) -> Result<()> {
        self.act(Command::SubvolumeAdd {
            fs: fs.clone(),
            name: name.clone(),
            parent: parent.cloned(),
            read_only,
        })
        .await
    }

    /// `Ok(None)` only when RouterOS answered and listed no such subvolume.
    pub async fn get_subvolume(&self, name: &Slot) -> Result<Option<Subvolume>> {
        Ok(self
            .records(Command::SubvolumeGet { name: name.clone() })
            .await?
            .iter()
            .filter_map(Subvolume::from_record)
            .find(|s| s.name == name.as_str()))
    }

    /// Removes a subvolume and everything in it; an absent one counts as
    /// removed.
    pub async fn remove_subvolume(&self, name: &Slot) -> Result<()> {
        self.remove(Command::SubvolumeRemove { name: name.clone() })
            .await
    }

    /// A new disk `slot` at `file` holding a copy of `source`'s data
    /// (`copy-from=`), exported with `(size, port, nqn)` when given.
    pub async fn copy_from(
        &self,
        source: &Slot,
        slot: &Slot,
        file: &RosPath,
        export: Option<(u64, u16, Nqn)>,
        comment: &DiskComment,
    ) -> Result<()> {
        self.act(Command::DiskCopyFrom {
            source: source.clone(),
            slot: slot.clone(),
            file: file.clone(),
            export,
            comment: comment.clone(),
        })
        .await
    }

    /// A disk over the image file `file` that already exists, keeping its
    /// data; exported on `(port, nqn)` when given.
    pub async fn adopt_file(
        &self,
        slot: &Slot,
        file: &RosPath,
        export: Option<(u16, Nqn)>,
        comment: &DiskComment,
    ) -> Result<()> {
        self.act(Command::DiskAdopt {
            slot: slot.clone(),
            file: file.clone(),
            export,
            comment: comment.clone(),
        })
        .await
    }

    /// A new disk that is not exported (the target of a byte copy).
    pub async fn add_unexported_disk(
        &self,
        slot: &Slot,
        file: &RosPath,
        size_bytes: u64,
        comment: &DiskComment,
    ) -> Result<()> {
        self.act(Command::DiskAddUnexported {
            slot: slot.clone(),
            file: file.clone(),
            size_bytes,
            comment: comment.clone(),
        })
        .await
    }

    /// Starts a background byte copy of `source` into the existing disk
    /// `target`; follow it with [`Rds::copy_state`].
    pub async fn start_byte_copy(&self, source: &Slot, target: &Slot) -> Result<()> {
        self.act(Command::DiskByteCopy {
            source: source.clone(),
            target: target.clone(),
        })
        .await
    }

    /// Where a byte copy into `slot` stands.
    pub async fn copy_state(&self, slot: &Slot) -> Result<CopyState> {
        let Some(disk) = self.get_disk(slot).await? else {
            return Ok(CopyState::Absent);
        };
        Ok(match (&disk.status, disk.copy_progress()) {
            (None, _) => CopyState::Idle,
            (Some(_), Some(p)) => CopyState::Copying(p),
            (Some(status), None) => {
                return Err(Error::Protocol(format!(
                    "disk {slot} has a status this driver cannot read: {status:?}"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn copy_progress_reads_grouped_and_plain_digits() {
        assert_eq!(
            CopyProgress::parse("1 048 576 / 10 737 418 240 (0%)"),
            Some(CopyProgress {
                copied: 1 << 20,
                total: 10 << 30
            })
        );
        assert_eq!(
            CopyProgress::parse("512/1024 (50%)").map(|p| p.percent()),
            Some(50)
        );
        assert_eq!(CopyProgress::parse("0 / 0").map(|p| p.percent()), Some(100));
        for bad in [
            "",
            "copying",
            "5 / x (1%)",
            "10 / 5 (200%)",
            "/ 5",
            "-1 / 5",
        ] {
            assert_eq!(CopyProgress::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_pool_file_system_says_which_methods_it_can_do() {
        let rec = |fs: &str| Record::from_pairs([("fs", fs)]);
        assert_eq!(
            PoolFilesystem::from_record(&rec("btrfs")).methods(),
            vec![
                CopyMethod::Subvolume,
                CopyMethod::CopyFrom,
                CopyMethod::ByteCopy
            ]
        );
        assert_eq!(
            PoolFilesystem::from_record(&rec("xfs")).methods(),
            vec![CopyMethod::CopyFrom, CopyMethod::ByteCopy]
        );
        assert_eq!(
            PoolFilesystem::from_record(&rec("-")),
            PoolFilesystem::Unknown
        );
        assert_eq!(
            PoolFilesystem::from_record(&rec("ext4")),
            PoolFilesystem::Other("ext4".into())
        );
    }

    #[test]
    fn a_subvolume_record_reads_its_name_read_only_flag_and_parent() {
        let out = "Flags: R - read-only \r\n 0 R fs=\"storage-pool\" name=\"snap-1\" parent=\"pvc-1\" read-only=yes \r\n";
        let subs: Vec<Subvolume> = parse_records(out)
            .iter()
            .filter_map(Subvolume::from_record)
            .collect();
        assert_eq!(
            subs,
            vec![Subvolume {
                name: "snap-1".into(),
                read_only: true,
                parent: Some("pvc-1".into())
            }]
        );
    }

    proptest! {
        #[test]
        fn the_copy_status_parser_never_panics(s in any::<String>()) {
            if let Some(p) = CopyProgress::parse(&s) {
                prop_assert!(p.copied <= p.total);
                prop_assert!(p.percent() <= 100);
            }
        }

        #[test]
        fn a_printed_copy_status_reads_back(copied in any::<u64>(), extra in any::<u64>()) {
            let total = copied.saturating_add(extra);
            let group = crate::record::group_digits;
            let text = format!("{} / {} (7%)", group(copied), group(total));
            prop_assert_eq!(CopyProgress::parse(&text), Some(CopyProgress { copied, total }));
        }
    }
}
