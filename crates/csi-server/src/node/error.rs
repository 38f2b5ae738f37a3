//! Why a node RPC failed: one variant per step or condition, carrying what
//! was found, and the one mapping of those failures to gRPC codes
//! ([`NodeError::code`]). The status message is the whole cause chain.

use std::path::{Path, PathBuf};

use nvme::{DevId, ErrorKind, FileKind, FsType};
use tonic::{Code, Status};

use crate::error::chain;

/// "a raw block volume" or "a filesystem volume".
fn kind_name(block: bool) -> &'static str {
    if block {
        "a raw block volume"
    } else {
        "a filesystem volume"
    }
}

/// Why a node RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    // ------------------------------------------------ the request itself
    /// A field of the request is malformed or missing.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A `volume_path` that cannot be where the volume is staged or
    /// published (csi-sanity expects NOT_FOUND, not INVALID_ARGUMENT).
    #[error("volume_path {given:?} is not an absolute path where the volume could be staged or published")]
    UnusableVolumePath { given: String },
    /// Another RPC for the same volume holds its guard.
    #[error("an operation on volume {volume} is already in progress")]
    Busy { volume: String },

    // ------------------------------------------------ stage
    /// The volume is mounted at another staging path on this node.
    #[error("volume {volume} is already staged at {}", at.display())]
    StagedElsewhere { volume: String, at: PathBuf },
    /// The staging path holds the volume as the other kind (block or
    /// filesystem).
    #[error("volume {volume} is staged at {} as {}", at.display(), kind_name(*block))]
    StagedAsOtherKind {
        volume: String,
        at: PathBuf,
        block: bool,
    },
    /// The staging path holds the volume with another filesystem type.
    #[error("volume {volume} is staged at {} with {found}, not {wanted}", at.display())]
    StagedWithOtherFs {
        volume: String,
        at: PathBuf,
        found: String,
        wanted: FsType,
    },
    /// The device is mounted elsewhere on this node with another
    /// filesystem type.
    #[error("{} is mounted at {} as {found}, not {wanted}", device.display(), at.display())]
    MountedAsOtherFs {
        device: PathBuf,
        at: PathBuf,
        found: String,
        wanted: FsType,
    },

    // ------------------------------------------------ publish
    /// Published as the other kind than it was staged as.
    #[error("volume {volume} was staged as {}, and is published as {}", kind_name(*staged_block), kind_name(!*staged_block))]
    PublishedAsOtherKind { volume: String, staged_block: bool },
    /// A single-writer volume already has another publish target.
    #[error("volume {volume} is single-writer and already published at {}", at.display())]
    SingleWriterPublished { volume: String, at: PathBuf },
    /// Publish before stage. `at`: the staging path it is not mounted at.
    #[error("volume {volume} is not staged {}: NodeStageVolume first", match at { Some(p) => format!("at {}", p.display()), None => "on this node".to_string() })]
    NotStaged { volume: String, at: Option<PathBuf> },
    /// The target holds the volume with the other read-only setting.
    #[error("volume {volume} is published at {} with read-only={readonly}", at.display())]
    PublishedWithOtherReadOnly {
        volume: String,
        at: PathBuf,
        /// The setting it has now.
        readonly: bool,
    },
    /// The block target is a mount point of something else.
    #[error("{} is a mount point of something else; refusing to replace it", target.display())]
    TargetIsAnotherMount { target: PathBuf },
    /// The block target exists as something that is never replaced.
    #[error("{} exists as {kind:?}; refusing to replace it", target.display())]
    TargetOccupied { target: PathBuf, kind: FileKind },

    // ------------------------------------------------ unpublish
    /// The target is still a mount point after the unmounts.
    #[error("{} is still a mount point; not removing it", target.display())]
    StillAMountPoint { target: PathBuf },
    /// The target is a file with content (or something else) that
    /// unpublish never removes.
    #[error("{} is {kind:?} with content; refusing to remove it", target.display())]
    TargetHasContent { target: PathBuf, kind: FileKind },
    /// rmdir found the directory not empty.
    #[error("{} is not empty; it is left in place (paths are never deleted recursively)", path.display())]
    DirectoryNotEmpty { path: PathBuf },

    // ------------------------------------------------ unstage
    /// A publish target still holds the volume.
    #[error("volume {volume} is still published at {}; unpublish it first", at.display())]
    StillPublished { volume: String, at: PathBuf },
    /// A device of the volume is mounted outside the staging path.
    #[error("volume {volume} ({}) is still mounted at {}", device.display(), at.display())]
    StillMounted {
        volume: String,
        device: PathBuf,
        at: PathBuf,
    },
    /// Something still uses the device: no disconnect.
    #[error("not disconnecting volume {volume}: {why}")]
    DeviceInUse { volume: String, why: String },

    // ------------------------------------------------ stale mounts, recovery
    /// A mount of a device that is not the volume's and still exists.
    #[error("{} holds {source_name} ({dev}), which is not this volume's device and still exists; refusing to touch it", path.display())]
    ForeignMount {
        path: PathBuf,
        source_name: String,
        dev: DevId,
    },
    /// Recovery without reconnecting found no connection.
    #[error("{nqn} is not connected; NodeStageVolume or NodePublishVolume reconnects it")]
    NotConnected { nqn: String },
    /// Recovery ran, and the staging path still does not hold the device.
    #[error("after recovery {} shows {found}", staging.display())]
    NotRecovered { staging: PathBuf, found: String },

    // ------------------------------------------------ expand, stats
    /// Expand of a volume with no connection on this node.
    #[error("volume {volume} is not staged on this node")]
    NotStagedHere { volume: String },
    /// Expand found a mount of an older device of the volume.
    #[error("{} holds {source_name} ({dev}), not the volume's current device {current}; publish it again before expanding", path.display())]
    StaleMountAtExpand {
        path: PathBuf,
        source_name: String,
        dev: DevId,
        current: DevId,
    },
    /// Expand found neither the volume path nor the staging path mounted.
    #[error("{} is not a mount of volume {volume}", path.display())]
    NotAMountOfVolume { volume: String, path: PathBuf },
    /// Stats of a path that does not exist.
    #[error("volume_path {} does not exist", path.display())]
    NoVolumePath { path: PathBuf },
    /// Stats of a path that is not a mount of the volume.
    #[error("volume_path {} is not a mount of volume {volume}", path.display())]
    VolumePathNotMounted { volume: String, path: PathBuf },

    // ------------------------------------------------ the durable format record
    /// The format record could not be read: nothing was formatted.
    #[error("volume {volume} was left untouched: whether it was formatted before could not be read ({error}); it is never formatted on a guess, kubelet retries")]
    FormatRecordUnread {
        volume: String,
        error: super::format_record::RecordError,
    },
    /// The volume holds a filesystem but the record of it was not written.
    #[error("volume {volume} holds a {fs} filesystem{} but {record} could not be written ({error}); the next attempt finds the filesystem and writes it", if *made_now { " made just now" } else { "" })]
    FormatRecordUnwritten {
        volume: String,
        fs: FsType,
        /// The filesystem was made by this stage.
        made_now: bool,
        /// The record, in words.
        record: String,
        error: super::format_record::RecordError,
    },

    // ------------------------------------------------ the node's own state and host calls
    /// Reading, writing or removing a volume's record failed.
    #[error("{action} the record of volume {volume}{}", dir.as_ref().map(|d| format!(" in {}", d.display())).unwrap_or_default())]
    Record {
        action: &'static str,
        volume: String,
        dir: Option<PathBuf>,
        #[source]
        source: std::io::Error,
    },
    /// A syscall on a path failed (stat, remove, remove directory).
    #[error("{op} {}", path.display())]
    Host {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The RPC's detached task did not finish (it panicked).
    #[error("{rpc} did not finish")]
    Unfinished {
        rpc: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
    /// A step of the data path failed; `op` says which.
    #[error("{op}")]
    DataPath {
        op: String,
        #[source]
        source: nvme::Error,
    },
}

impl NodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The one mapping to gRPC codes for the node service.
    pub fn code(&self) -> Code {
        use NodeError as N;
        match self {
            N::Invalid { .. } => Code::InvalidArgument,
            N::Busy { .. } => Code::Aborted,
            N::UnusableVolumePath { .. }
            | N::NotStagedHere { .. }
            | N::NoVolumePath { .. }
            | N::VolumePathNotMounted { .. } => Code::NotFound,
            N::StagedAsOtherKind { .. }
            | N::StagedWithOtherFs { .. }
            | N::PublishedWithOtherReadOnly { .. } => Code::AlreadyExists,
            N::StagedElsewhere { .. }
            | N::MountedAsOtherFs { .. }
            | N::PublishedAsOtherKind { .. }
            | N::SingleWriterPublished { .. }
            | N::NotStaged { .. }
            | N::TargetIsAnotherMount { .. }
            | N::TargetOccupied { .. }
            | N::StillAMountPoint { .. }
            | N::TargetHasContent { .. }
            | N::DirectoryNotEmpty { .. }
            | N::StillPublished { .. }
            | N::StillMounted { .. }
            | N::DeviceInUse { .. }
            | N::ForeignMount { .. }
            | N::NotConnected { .. }
            | N::StaleMountAtExpand { .. }
            | N::NotAMountOfVolume { .. } => Code::FailedPrecondition,
            N::FormatRecordUnread { .. } | N::FormatRecordUnwritten { .. } => Code::Unavailable,
            N::NotRecovered { .. } | N::Record { .. } | N::Host { .. } | N::Unfinished { .. } => {
                Code::Internal
            }
            N::DataPath { source, .. } => match source.kind() {
                ErrorKind::InvalidArgument => Code::InvalidArgument,
                ErrorKind::NotFound => Code::NotFound,
                ErrorKind::FailedPrecondition => Code::FailedPrecondition,
                ErrorKind::Unavailable => Code::Unavailable,
                ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
                ErrorKind::Internal => Code::Internal,
            },
        }
    }
}

impl From<NodeError> for Status {
    fn from(e: NodeError) -> Status {
        Status::new(e.code(), chain(&e))
    }
}

pub type NodeResult<T> = Result<T, NodeError>;

/// Wraps a data-path error with what the node was doing.
pub(super) fn dp(op: impl Into<String>) -> impl FnOnce(nvme::Error) -> NodeError {
    let op = op.into();
    move |source| NodeError::DataPath { op, source }
}

/// Wraps a failed syscall on `path` with what it was.
pub(super) fn host(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
    let path = path.to_path_buf();
    move |source| NodeError::Host { op, path, source }
}
