//! The node's stage, publish and unstage decisions as pure functions: what
//! the volume's record says and what the host shows (the mount table as
//! read now, `lstat` of a path) in, a decision out. No I/O, no async, no
//! clock: the RPCs in the sibling modules gather the facts, ask here, and
//! carry the decision out. Each refusal is the [`NodeError`] the RPC
//! returns. The format decision itself (may this device be formatted?) is
//! [`nvme::format::decide`], one layer down.
//!
//! Tested by table in `decide/tests.rs`: each case is the facts and the
//! decision they must give.

use std::path::Path;

use nvme::mount::MountState;
use nvme::mountinfo::Mount;
use nvme::{DevId, FileKind, FileStat, FsType};

use super::NodeError;

// ---------------------------------------------------------------- stage

/// The volume's record from an earlier stage on this node.
#[derive(Debug, Clone, Copy)]
pub struct Previous<'a> {
    pub staging_path: &'a Path,
    pub block: bool,
    pub nqn: &'a str,
    /// Its staging path holds one of the volume's current devices.
    pub mounted: bool,
}

/// What a stage request asks for.
#[derive(Debug, Clone, Copy)]
pub struct Staging<'a> {
    pub volume: &'a str,
    pub staging_path: &'a Path,
    pub block: bool,
    pub nqn: &'a str,
}

/// What the new record keeps from the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keep {
    /// Whether the volume was formatted here or mounted with a filesystem
    /// (only for the same NQN: another NQN is another disk).
    pub format_history: bool,
    /// The publish targets (only at the same staging path).
    pub targets: bool,
}

/// A stage over an earlier one: refused while the volume is mounted at
/// another staging path, or at this one as the other kind.
pub fn restage(prev: &Previous, req: &Staging) -> Result<Keep, NodeError> {
    let same_path = prev.staging_path == req.staging_path;
    if !same_path && prev.mounted {
        return Err(NodeError::StagedElsewhere {
            volume: req.volume.to_string(),
            at: prev.staging_path.to_path_buf(),
        });
    }
    if same_path && prev.block != req.block && prev.mounted {
        return Err(NodeError::StagedAsOtherKind {
            volume: req.volume.to_string(),
            at: req.staging_path.to_path_buf(),
            block: prev.block,
        });
    }
    Ok(Keep {
        format_history: prev.nqn == req.nqn,
        targets: same_path,
    })
}

/// What to do at the staging path of a filesystem volume once connected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagingMount {
    /// Mounted already with the wanted filesystem: nothing to do.
    Done,
    /// Take off this mount of a vanished device first (refused if the
    /// device still exists); the volume had a filesystem.
    DropStale(Mount),
    /// Nothing mounted: mount.
    Mount,
}

/// The staging path as the mount table shows it now.
pub fn staging_mount(
    volume: &str,
    staging: &Path,
    fs: FsType,
    state: MountState,
) -> Result<StagingMount, NodeError> {
    match state {
        MountState::Current(m) if m.fs_type == fs.as_str() => Ok(StagingMount::Done),
        MountState::Current(m) => Err(NodeError::StagedWithOtherFs {
            volume: volume.to_string(),
            at: staging.to_path_buf(),
            found: m.fs_type,
            wanted: fs,
        }),
        MountState::Other(m) => Ok(StagingMount::DropStale(m)),
        MountState::NotMounted => Ok(StagingMount::Mount),
    }
}

/// Where the filesystem that gets mounted comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filesystem {
    /// The device is mounted elsewhere on this node (an older staging
    /// path): the kernel shares the superblock, so it is neither probed
    /// nor checked.
    Shared,
    /// Probe the device and format it only if definitively empty.
    /// `read_record`: whether the durable format record is read first; not
    /// when the volume is known to have been formatted (mkfs is ruled out
    /// anyway), so an API outage never holds up a recovery.
    Prepare { read_record: bool },
}

/// `elsewhere`: a mount of the device at another path on this node.
/// `formatted_before`: the volume context says formatted, or the volume
/// was mounted with a filesystem here before.
pub fn filesystem(
    device: &Path,
    fs: FsType,
    elsewhere: Option<&Mount>,
    formatted_before: bool,
) -> Result<Filesystem, NodeError> {
    match elsewhere {
        Some(m) if m.fs_type != fs.as_str() => Err(NodeError::MountedAsOtherFs {
            device: device.to_path_buf(),
            at: m.mount_point.clone(),
            found: m.fs_type.clone(),
            wanted: fs,
        }),
        Some(_) => Ok(Filesystem::Shared),
        None => Ok(Filesystem::Prepare {
            read_record: !formatted_before,
        }),
    }
}

// ---------------------------------------------------------------- publish

/// A publish must use the kind the volume was staged as, and a
/// single-writer volume is published at one target only.
/// `published_elsewhere`: another target that still holds the volume.
pub fn may_publish(
    volume: &str,
    staged_block: bool,
    requested_block: bool,
    single_writer: bool,
    published_elsewhere: Option<&Path>,
) -> Result<(), NodeError> {
    if staged_block != requested_block {
        return Err(NodeError::PublishedAsOtherKind {
            volume: volume.to_string(),
            staged_block,
        });
    }
    match published_elsewhere {
        Some(at) if single_writer => Err(NodeError::SingleWriterPublished {
            volume: volume.to_string(),
            at: at.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// The staging mount a filesystem publish binds from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagedFrom {
    Current(Mount),
    /// The staging mount is of a vanished device: recover first.
    Stale(Mount),
}

pub fn staged_from(
    volume: &str,
    staging: &Path,
    state: MountState,
) -> Result<StagedFrom, NodeError> {
    match state {
        MountState::Current(m) => Ok(StagedFrom::Current(m)),
        MountState::Other(m) => Ok(StagedFrom::Stale(m)),
        MountState::NotMounted => Err(NodeError::NotStaged {
            volume: volume.to_string(),
            at: Some(staging.to_path_buf()),
        }),
    }
}

/// What to do at a filesystem publish target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// Bound already with the same read-only setting.
    Done,
    /// Take off this mount of a vanished device, then bind.
    DropStaleThenBind(Mount),
    Bind,
}

/// `state`: the target against the staged mount's device.
pub fn bind_target(
    volume: &str,
    target: &Path,
    readonly: bool,
    state: MountState,
) -> Result<BindTarget, NodeError> {
    match state {
        MountState::Current(m) if m.read_only() == readonly => Ok(BindTarget::Done),
        MountState::Current(_) => Err(NodeError::PublishedWithOtherReadOnly {
            volume: volume.to_string(),
            at: target.to_path_buf(),
            readonly: !readonly,
        }),
        MountState::Other(m) => Ok(BindTarget::DropStaleThenBind(m)),
        MountState::NotMounted => Ok(BindTarget::Bind),
    }
}

/// What must go before a device node is made at a block publish target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clear {
    Nothing,
    /// A device node of another device number (the volume's device before
    /// a renumbering): unlink it.
    OtherDeviceNode {
        old: Option<DevId>,
    },
    /// An empty file (kubelet may create one): unlink it.
    EmptyFile,
    /// A directory: rmdir, never recursive.
    Directory,
}

/// What to do at a raw block publish target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeTarget {
    /// A device node of this device with the same read-only setting.
    Done,
    /// A bind mount of the device made by an older driver: left alone.
    OlderBindMount,
    /// Clear the path, then make the device node.
    Create(Clear),
}

/// `existing`: `lstat` of the target; `mounted`: it is a mount point;
/// `dev`: the volume's device now.
pub fn device_node_target(
    volume: &str,
    target: &Path,
    readonly: bool,
    dev: DevId,
    existing: Option<&FileStat>,
    mounted: bool,
) -> Result<NodeTarget, NodeError> {
    let Some(st) = existing else {
        return Ok(NodeTarget::Create(Clear::Nothing));
    };
    match st.kind {
        FileKind::BlockDevice if st.rdev == Some(dev) => {
            if mounted {
                return Ok(NodeTarget::OlderBindMount);
            }
            if (st.mode & 0o222 == 0) != readonly {
                return Err(NodeError::PublishedWithOtherReadOnly {
                    volume: volume.to_string(),
                    at: target.to_path_buf(),
                    readonly: !readonly,
                });
            }
            Ok(NodeTarget::Done)
        }
        _ if mounted => Err(NodeError::TargetIsAnotherMount {
            target: target.to_path_buf(),
        }),
        FileKind::BlockDevice => Ok(NodeTarget::Create(Clear::OtherDeviceNode { old: st.rdev })),
        FileKind::File if st.size == 0 => Ok(NodeTarget::Create(Clear::EmptyFile)),
        FileKind::Dir => Ok(NodeTarget::Create(Clear::Directory)),
        kind => Err(NodeError::TargetOccupied {
            target: target.to_path_buf(),
            kind,
        }),
    }
}

// ---------------------------------------------------------------- unpublish

/// How an unpublished target is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// rmdir: a directory that is not empty stays.
    Rmdir,
    Unlink,
}

/// What to remove at a target after its mounts were taken off:
/// `mounted`: still a mount point on a fresh table; `existing`: `lstat`.
pub fn unpublished_removal(
    target: &Path,
    mounted: bool,
    existing: Option<&FileStat>,
) -> Result<Option<Removal>, NodeError> {
    if mounted {
        return Err(NodeError::StillAMountPoint {
            target: target.to_path_buf(),
        });
    }
    let Some(st) = existing else { return Ok(None) };
    match st.kind {
        FileKind::Dir => Ok(Some(Removal::Rmdir)),
        FileKind::BlockDevice | FileKind::Symlink => Ok(Some(Removal::Unlink)),
        FileKind::File if st.size == 0 => Ok(Some(Removal::Unlink)),
        kind => Err(NodeError::TargetHasContent {
            target: target.to_path_buf(),
            kind,
        }),
    }
}

// ---------------------------------------------------------------- unstage

/// What unstage does at the staging path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unmount {
    /// Unmount every mount stacked there.
    Staging,
    /// Take off this mount of a vanished device (refused if it still
    /// exists).
    Stale(Mount),
    Nothing,
}

/// `published_at`: a publish target (other than the staging path) that
/// still holds the volume; `mounted_elsewhere`: a device of the volume and
/// where it is mounted outside the staging path; `staging`: the staging
/// path against the volume's devices.
pub fn unstage(
    volume: &str,
    published_at: Option<&Path>,
    mounted_elsewhere: Option<(&Path, &Path)>,
    staging: MountState,
) -> Result<Unmount, NodeError> {
    if let Some(at) = published_at {
        return Err(NodeError::StillPublished {
            volume: volume.to_string(),
            at: at.to_path_buf(),
        });
    }
    if let Some((device, at)) = mounted_elsewhere {
        return Err(NodeError::StillMounted {
            volume: volume.to_string(),
            device: device.to_path_buf(),
            at: at.to_path_buf(),
        });
    }
    Ok(match staging {
        MountState::Current(_) => Unmount::Staging,
        MountState::Other(m) => Unmount::Stale(m),
        MountState::NotMounted => Unmount::Nothing,
    })
}

/// Whether a connected volume may be disconnected: `in_use` says what
/// still uses its device.
pub fn may_disconnect(volume: &str, in_use: Option<String>) -> Result<(), NodeError> {
    match in_use {
        Some(why) => Err(NodeError::DeviceInUse {
            volume: volume.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// Whether a publish target still holds the volume: a mount point, or a
/// device node of one of its devices.
pub fn still_published(existing: Option<&FileStat>, mounted: bool, devs: &[DevId]) -> bool {
    existing.is_some_and(|st| {
        mounted || (st.kind == FileKind::BlockDevice && st.rdev.is_some_and(|d| devs.contains(&d)))
    })
}

#[cfg(test)]
mod tests;
