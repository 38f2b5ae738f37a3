//! Disk operations on the RDS, built from typed commands and parsed records.
//!
//! "Absent" is only ever concluded from a successful command that printed
//! no matching record; any transport error stays an error, so a caller can
//! never mistake "unreachable" for "not there" and create a duplicate.

use crate::access::{HostAccess, ALLOW_HOST_PROPERTY};
use crate::client::Client;
use crate::command::{Command, Nqn, RosPath, Slot, SlotPrefix};
use crate::comment::DiskComment;
use crate::error::{Error, Result};
use crate::record::{parse_records, Record};
use crate::snapshots::CopyProgress;

/// A file-backed disk as RouterOS reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub slot: String,
    pub file_path: Option<String>,
    /// Exact size in bytes (`size=`), falling back to the rounded
    /// `file-size=` when `size=` is absent.
    pub size_bytes: u64,
    pub nqn: Option<String>,
    pub port: Option<u16>,
    pub exported: bool,
    /// The driver's records from the disk's comment (creation time,
    /// cluster, orphan marks, a snapshot's lineage); empty for a disk made
    /// by hand or by another driver.
    pub comment: DiskComment,
    /// `status` as printed: real disks have none, a disk a `/disk copy`
    /// is running into has its progress (see [`Disk::copy_progress`]).
    /// Any status at all means the disk is not settled.
    pub status: Option<String>,
    /// Who may connect (`nvme-tcp-server-allow-host-name`); `None` when the
    /// record does not show the property (a disk that is not exported).
    pub allowed_hosts: Option<HostAccess>,
}

/// The first characters of every snapshot's slot, this driver's and the Go
/// driver's; no volume ID starts with them.
pub const SNAPSHOT_SLOT_PREFIX: &str = "snap-";

/// The image file name inside a disk's own subvolume.
pub const SUBVOLUME_IMAGE: &str = "volume.img";

impl Disk {
    /// A snapshot (this driver's, with its lineage, or the Go driver's, by
    /// its name), never a volume: nothing that sweeps volumes may touch it.
    pub fn is_snapshot(&self) -> bool {
        self.comment.snapshot.is_some() || self.slot.starts_with(SNAPSHOT_SLOT_PREFIX)
    }

    /// Whether the image lives in a Btrfs subvolume of the disk's own name,
    /// `/<pool>/<slot>/volume.img` (the subvolume layout): removing the
    /// disk's image means removing that subvolume.
    pub fn in_own_subvolume(&self) -> bool {
        let Some(path) = self.file_path.as_deref() else {
            return false;
        };
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        matches!(parts.as_slice(), [_pool, dir, image] if *dir == self.slot && *image == SUBVOLUME_IMAGE)
    }

    /// Progress of a `/disk copy` into this disk, when its status reads as
    /// one.
    pub fn copy_progress(&self) -> Option<CopyProgress> {
        self.status.as_deref().and_then(CopyProgress::parse)
    }
}

impl Disk {
    fn from_record(r: &Record) -> Option<Disk> {
        let slot = r.get("slot")?.to_string();
        Some(Disk {
            file_path: r.get("file-path").map(str::to_string),
            size_bytes: r
                .get_bytes("size")
                .or_else(|| r.get_bytes("file-size"))
                .unwrap_or(0),
            nqn: r
                .get("nvme-tcp-server-nqn")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            port: r.get("nvme-tcp-server-port").and_then(|p| p.parse().ok()),
            exported: r.get_bool("nvme-tcp-export").unwrap_or(false),
            comment: r
                .comment
                .as_deref()
                .and_then(DiskComment::parse)
                .unwrap_or_default(),
            status: r
                .get("status")
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            allowed_hosts: r.get(ALLOW_HOST_PROPERTY).map(HostAccess::parse),
            slot,
        })
    }
}

/// Pool capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    pub size_bytes: u64,
    pub free_bytes: u64,
}

/// A file on the RDS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// Path without the leading slash, as `/file` prints it.
    pub name: String,
    pub size_bytes: Option<u64>,
    pub last_modified: Option<String>,
    /// `type=` as printed (`directory`, `.img file`, ...).
    pub kind: Option<String>,
}

/// Specification of a new exported disk.
#[derive(Debug, Clone)]
pub struct NewDisk {
    pub slot: Slot,
    pub file: RosPath,
    pub size_bytes: u64,
    pub port: u16,
    pub nqn: Nqn,
    /// Written as the disk's comment in the same `/disk add`.
    pub comment: DiskComment,
}

impl NewDisk {
    /// The disk as RouterOS will list it once this spec is created.
    pub fn as_created(&self) -> Disk {
        Disk {
            slot: self.slot.to_string(),
            file_path: Some(self.file.to_string()),
            size_bytes: self.size_bytes,
            nqn: Some(self.nqn.to_string()),
            port: Some(self.port),
            exported: true,
            comment: self.comment.clone(),
            status: None,
            allowed_hosts: Some(HostAccess::Any),
        }
    }
}

#[derive(Clone)]
pub struct Rds {
    client: Client,
}

impl Rds {
    pub fn new(client: Client) -> Self {
        Rds { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Runs a command that prints nothing worth reading.
    pub(crate) async fn act(&self, command: Command) -> Result<()> {
        self.client.run(&command).await.map(drop)
    }

    /// Runs a `print` and parses its records.
    pub(crate) async fn records(&self, command: Command) -> Result<Vec<Record>> {
        let out = self.client.run(&command).await?;
        Ok(parse_records(&out.stdout))
    }

    /// The `/disk` record of the pool mounted at `mount_point`.
    pub(crate) async fn pool_record(&self, mount_point: &Slot) -> Result<Record> {
        self.records(Command::PoolCapacity {
            mount_point: mount_point.clone(),
        })
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::NotFound(format!("no pool mounted at {:?}", mount_point.as_str())))
    }

    /// Looks one disk up; `Ok(None)` only when the RDS answered and listed
    /// no disk with exactly this slot.
    pub async fn get_disk(&self, slot: &Slot) -> Result<Option<Disk>> {
        Ok(self
            .records(Command::DiskGet { slot: slot.clone() })
            .await?
            .iter()
            .filter_map(Disk::from_record)
            .find(|d| d.slot == slot.as_str()))
    }

    /// File-backed disks whose slot starts with `prefix`.
    pub async fn list_disks(&self, prefix: &SlotPrefix) -> Result<Vec<Disk>> {
        let mut disks: Vec<Disk> = self
            .records(Command::DiskList {
                prefix: prefix.clone(),
            })
            .await?
            .iter()
            .filter(|r| r.get("type").is_none_or(|t| t == "file"))
            .filter_map(Disk::from_record)
            .filter(|d| prefix.matches(&d.slot))
            .collect();
        disks.sort_by(|a, b| a.slot.cmp(&b.slot));
        disks.dedup_by(|a, b| a.slot == b.slot);
        Ok(disks)
    }

    pub async fn create_disk(&self, spec: &NewDisk) -> Result<()> {
        self.act(Command::DiskAdd {
            slot: spec.slot.clone(),
            file: spec.file.clone(),
            size_bytes: spec.size_bytes,
            port: spec.port,
            nqn: spec.nqn.clone(),
            comment: spec.comment.clone(),
        })
        .await
    }

    pub async fn resize_disk(&self, slot: &Slot, size_bytes: u64) -> Result<()> {
        self.act(Command::DiskResize {
            slot: slot.clone(),
            size_bytes,
        })
        .await
    }

    /// Replaces the disk's comment. An absent disk is an error
    /// ([`Error::NotFound`]): there is nothing to record on.
    pub async fn set_disk_comment(&self, slot: &Slot, comment: &DiskComment) -> Result<()> {
        self.act(Command::DiskSetComment {
            slot: slot.clone(),
            comment: comment.clone(),
        })
        .await
    }

    /// Removes the disk entry; removing an absent disk succeeds.
    pub async fn remove_disk(&self, slot: &Slot) -> Result<()> {
        self.remove(Command::DiskRemove { slot: slot.clone() })
            .await
    }

    /// Runs a removal: what is already gone counts as removed.
    pub(crate) async fn remove(&self, command: Command) -> Result<()> {
        match self.client.run(&command).await {
            Ok(_) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the disk entry, then confirms with a fresh lookup that it is
    /// gone. Only after this may its backing file go: a remove that answered
    /// success but did not take, or whose answer was lost, must never leave
    /// a disk entry pointing at a deleted file.
    pub async fn remove_disk_confirmed(&self, slot: &Slot) -> Result<()> {
        self.remove_disk(slot).await?;
        match self.get_disk(slot).await? {
            None => Ok(()),
            Some(_) => Err(Error::Failed(format!(
                "disk {slot} is still listed after /disk remove answered success; its file is kept"
            ))),
        }
    }

    /// Removes a backing file; removing an absent file succeeds.
    pub async fn remove_file(&self, file: &RosPath) -> Result<()> {
        self.remove(Command::FileRemove { file: file.clone() })
            .await
    }

    pub async fn list_files(&self, under: &RosPath) -> Result<Vec<FileEntry>> {
        Ok(file_entries(
            self.records(Command::FileList {
                under: under.clone(),
            })
            .await?,
        ))
    }

    /// Files whose name contains `fragment` (superset; filter exactly).
    pub async fn find_files(&self, fragment: &str) -> Result<Vec<FileEntry>> {
        let name = Slot::new(fragment)?;
        Ok(file_entries(
            self.records(Command::FileFind { name }).await?,
        ))
    }

    /// Size and free space of the pool mounted at `mount_point`.
    pub async fn capacity(&self, mount_point: &Slot) -> Result<Capacity> {
        let r = self.pool_record(mount_point).await?;
        match (r.get_bytes("size"), r.get_bytes("free")) {
            (Some(size_bytes), Some(free_bytes)) => Ok(Capacity {
                size_bytes,
                free_bytes,
            }),
            _ => Err(Error::Protocol(format!(
                "pool record without size= and free=: {r}"
            ))),
        }
    }
}

fn file_entries(records: Vec<Record>) -> Vec<FileEntry> {
    records
        .iter()
        .filter_map(|r| {
            Some(FileEntry {
                name: r.get("name")?.to_string(),
                size_bytes: r.get_bytes("size"),
                last_modified: r.get("last-modified").map(str::to_string),
                kind: r.get("type").map(str::to_string),
            })
        })
        .collect()
}
