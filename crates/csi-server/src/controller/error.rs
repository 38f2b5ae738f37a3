//! Why a controller RPC failed: one variant per step or condition, carrying
//! what was found, and the one mapping of those failures to gRPC codes
//! ([`ControllerError::code`]). The sidecars retry differently per code, so
//! the code must mean what the CSI spec says; the status message is the
//! whole cause chain, so an operator reading a PVC event sees why, not just
//! that, something failed.

use attachment_manager::{ClusterError, ManagerError, Refusal};
use storage::{ErrorKind, IdPrefix, VolumeId};
use tonic::{Code, Status};

use crate::error::chain;
use crate::params::{ParamError, SizeError};

/// Why a controller RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    // ------------------------------------------------ the request itself
    /// A field of the request is malformed or missing.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// A volume ID without the configured prefix: not this driver's disk.
    #[error("{field}: {volume} does not start with the configured volume ID prefix {:?} (--volume-id-prefix); this driver does not manage it", prefix.as_str())]
    NotManaged {
        field: &'static str,
        volume: VolumeId,
        prefix: IdPrefix,
    },
    /// A StorageClass parameter is malformed or unknown.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// The capacity range cannot be satisfied.
    #[error(transparent)]
    Size(#[from] SizeError),
    /// No requisite topology segment is the one this RDS serves.
    #[error("no requisite topology includes {key}={value}, the only place this RDS serves")]
    TopologyUnreachable { key: String, value: String },
    /// A ListVolumes token this driver did not issue.
    #[error("starting_token {token:?} is not a token this driver issued")]
    ForeignToken { token: String },

    // ------------------------------------------------ the volume on the RDS
    /// The volume does not exist on the RDS.
    #[error("volume {volume} not found")]
    VolumeNotFound { volume: VolumeId },
    /// CreateVolume of a volume that exists unlike the request.
    #[error("volume {volume} exists {differs}")]
    ExistsDifferently { volume: String, differs: Mismatch },
    /// CreateVolume of a new volume before the cluster identity that goes
    /// on its disk is known.
    #[error("the cluster identity (--cluster-id, by default the kube-system namespace UID) is not known yet")]
    ClusterIdUnknown,
    /// An RPC or request the backend cannot serve (its declared
    /// capabilities leave it out of ControllerGetCapabilities).
    #[error("{what} is not offered by this storage backend")]
    NotOffered { what: &'static str },
    /// DeleteVolume of a volume some node still holds.
    #[error("volume {volume} is still published to {}", nodes.join(", "))]
    StillPublished {
        volume: VolumeId,
        nodes: Vec<String>,
    },

    // ------------------------------------------------ snapshots and copies
    /// The source of a snapshot, restore or clone does not exist.
    #[error("{kind} {id} not found")]
    SourceNotFound { kind: &'static str, id: String },
    /// CreateSnapshot of a name whose snapshot exists for another volume.
    #[error("snapshot {snapshot} already exists, of volume {source_volume}, not of {asked}")]
    SnapshotOfOtherVolume {
        snapshot: VolumeId,
        source_volume: String,
        asked: VolumeId,
    },
    /// A disk holds the snapshot's slot but is not a snapshot this driver
    /// can read.
    #[error("disk {id} exists on the RDS but is not a snapshot this driver made or can read (no lineage in its comment, not a Go driver snapshot name)")]
    NotASnapshot { id: VolumeId },
    /// A restore from a snapshot whose data is not complete yet.
    #[error("snapshot {snapshot} is not ready yet")]
    SnapshotNotReady { snapshot: VolumeId },
    /// A restore or clone asked for less than its source holds.
    #[error(
        "{source_id} holds {needed} bytes; a volume made from it cannot have only {requested}"
    )]
    TooSmallForSource {
        source_id: String,
        needed: u64,
        requested: u64,
    },
    /// The subvolume layout on a pool that is not Btrfs.
    #[error("volumeLayout subvolume needs a Btrfs pool; pool {pool} is {fs}")]
    LayoutNeedsBtrfs { pool: String, fs: String },
    /// A byte copy of a volume that is attached: the copy would not be
    /// point in time.
    #[error("volume {volume} is attached to {}; a byte copy needs it detached (use a subvolume or copy-from class, or stop what uses it)", nodes.join(", "))]
    SourceAttached {
        volume: VolumeId,
        nodes: Vec<String>,
    },
    /// ControllerPublish of a volume a byte copy is reading.
    #[error(
        "volume {volume} is being copied into {into}; it can be attached when the copy is done"
    )]
    SourceBeingCopied { volume: VolumeId, into: String },
    /// A volume made by a byte copy that is still running.
    #[error("volume {volume} is still being copied from {from}: {progress}")]
    CopyRunning {
        volume: VolumeId,
        from: String,
        progress: String,
    },
    /// A copy method this source, target or pool cannot do.
    #[error("copy method {method} cannot be used here: {reason}")]
    MethodUnavailable {
        method: storage::CopyMethod,
        reason: String,
    },

    // ------------------------------------------------ the node it goes to
    /// ControllerPublish to a node the cluster does not have.
    #[error("node {node:?} not found")]
    NodeNotFound { node: String },
    /// ControllerPublish to a fenced node.
    #[error("node {node:?} carries the node.kubernetes.io/out-of-service taint")]
    NodeOutOfService { node: String },
    /// The node's NVMe host NQN is also reported by other nodes.
    #[error("node {node:?} and node(s) {} report the same NVMe host NQN {nqn:?} (Node annotation {}): the target could not tell them apart; give each node its own /etc/nvme/hostnqn",
        others.iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", "),
        attachment_manager::host_nqn::HOST_NQN_ANNOTATION)]
    SharedHostNqn {
        node: String,
        others: Vec<String>,
        nqn: String,
    },
    /// The node's status could not be read from the cluster.
    #[error("check node {node:?}")]
    NodeCheck {
        node: String,
        #[source]
        source: ClusterError,
    },
    /// Fencing admits a node by its NVMe host NQN, and this node reports
    /// none (its node plugin has not recorded it on the Node yet) or one
    /// that is no valid NQN.
    #[error("node {node:?} reports no usable NVMe host NQN (Node annotation {}): {reason}; fencing admits hosts by it", attachment_manager::host_nqn::HOST_NQN_ANNOTATION)]
    HostNqnUnusable { node: String, reason: String },
    /// The host NQNs of the nodes could not be read from the cluster.
    #[error("check the host NQN of node {node:?}")]
    HostNqnCheck {
        node: String,
        #[source]
        source: ClusterError,
    },
    /// The VM using the volume's PVC could not be looked up.
    #[error("find the VM using PVC {namespace}/{name}")]
    VmLookup {
        namespace: String,
        name: String,
        /// Boxed: the largest cause, kept off every other error's size.
        #[source]
        source: Box<ClusterError>,
    },

    // ------------------------------------------------ the attachment rules
    /// The attachment manager is busy with the volume, not rebuilt yet, or
    /// could not persist its decision.
    #[error(transparent)]
    Attachments(#[from] ManagerError),
    /// The volume is held by this node with an incompatible capability.
    #[error("volume {volume} is already published to node {node} with an incompatible capability")]
    PublishedIncompatibly { volume: VolumeId, node: String },
    /// The attachment rules refused the node.
    #[error("volume {volume}: {refusal}")]
    Refused { volume: VolumeId, refusal: Refusal },

    // ------------------------------------------------ the RDS
    /// A call to the backend failed; `step` says which.
    #[error("{step}")]
    Backend {
        step: Step,
        #[source]
        source: storage::Error,
    },
}

/// How an existing volume differs from a CreateVolume request for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Mismatch {
    #[error("with {size} bytes, incompatible with the requested range {required}..{limit}")]
    Size {
        size: u64,
        required: i64,
        limit: i64,
    },
    #[error("at {at}, not at the requested {wanted}")]
    Path { at: String, wanted: String },
    #[error("with a different NVMe/TCP export")]
    Export,
}

/// What the controller asked the backend when it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Step {
    #[error("look up volume {0}")]
    Lookup(VolumeId),
    #[error("create volume {0}")]
    Create(VolumeId),
    #[error("delete volume {0}")]
    Delete(VolumeId),
    #[error("expand volume {volume} to {bytes} bytes")]
    Expand { volume: VolumeId, bytes: u64 },
    #[error("list volumes")]
    List,
    #[error("read capacity of pool {0}")]
    Capacity(String),
    #[error("read what pool {0} can do")]
    PoolInfo(String),
    #[error("look up {0}")]
    LookupSource(VolumeId),
    #[error("copy {from} to {to} by {method}")]
    Copy {
        from: String,
        to: VolumeId,
        method: storage::CopyMethod,
    },
    #[error("delete snapshot {0}")]
    DeleteSnapshot(VolumeId),
    #[error("record that the copy into {0} is complete")]
    MarkCopied(VolumeId),
    #[error("list snapshots")]
    ListSnapshots,
    #[error("admit only the hosts of its nodes to volume {0}")]
    AllowHosts(VolumeId),
    #[error("cut the open sessions to volume {0}")]
    CutSessions(VolumeId),
}

impl Step {
    /// Wraps a backend error with this step.
    pub fn failed(self) -> impl FnOnce(storage::Error) -> ControllerError {
        move |source| ControllerError::Backend { step: self, source }
    }
}

impl ControllerError {
    /// Refuses an empty required field.
    pub fn require(field: &'static str, value: &str) -> Result<(), Self> {
        if value.is_empty() {
            Err(Self::invalid(field, "must not be empty"))
        } else {
            Ok(())
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        ControllerError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The one mapping to gRPC codes for the controller service.
    pub fn code(&self) -> Code {
        use ControllerError as C;
        match self {
            C::Invalid { .. } | C::NotManaged { .. } | C::Param(_) => Code::InvalidArgument,
            C::Size(_) => Code::OutOfRange,
            C::TopologyUnreachable { .. } => Code::ResourceExhausted,
            C::ForeignToken { .. } => Code::Aborted,
            C::VolumeNotFound { .. } | C::NodeNotFound { .. } | C::SourceNotFound { .. } => {
                Code::NotFound
            }
            C::ExistsDifferently { .. }
            | C::PublishedIncompatibly { .. }
            | C::SnapshotOfOtherVolume { .. } => Code::AlreadyExists,
            C::TooSmallForSource { .. } => Code::OutOfRange,
            C::LayoutNeedsBtrfs { .. } | C::MethodUnavailable { .. } => Code::InvalidArgument,
            C::NotASnapshot { .. } | C::SourceAttached { .. } | C::SourceBeingCopied { .. } => {
                Code::FailedPrecondition
            }
            C::SnapshotNotReady { .. } | C::CopyRunning { .. } => Code::Unavailable,
            C::StillPublished { .. }
            | C::NodeOutOfService { .. }
            | C::SharedHostNqn { .. }
            | C::Refused { .. } => Code::FailedPrecondition,
            C::NotOffered { .. } => Code::Unimplemented,
            C::ClusterIdUnknown
            | C::NodeCheck { .. }
            | C::HostNqnCheck { .. }
            | C::HostNqnUnusable { .. }
            | C::VmLookup { .. } => Code::Unavailable,
            C::Attachments(e) => match e {
                ManagerError::Busy(_) => Code::Aborted,
                ManagerError::NotReady | ManagerError::Cluster { .. } => Code::Unavailable,
            },
            C::Backend { source, .. } => backend_code(source),
        }
    }
}

fn backend_code(e: &storage::Error) -> Code {
    match e.kind() {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::NoSpace => Code::ResourceExhausted,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InUse => Code::FailedPrecondition,
        ErrorKind::InvalidInput => Code::InvalidArgument,
        // Unreachable, refusing our credentials or presenting another host
        // key all mean "the backend cannot be used right now".
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Timeout => Code::DeadlineExceeded,
        // The backend refusing a command we validated is a driver bug or an
        // unsupported server version, not the caller's fault.
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<ControllerError> for Status {
    fn from(e: ControllerError) -> Status {
        Status::new(e.code(), chain(&e))
    }
}

pub type ControllerResult<T> = Result<T, ControllerError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rds_errors_map_to_the_codes_the_sidecars_expect() {
        use routeros::Error as E;
        let cases = [
            (E::NotFound("x".into()), Code::NotFound),
            (E::NoSpace("x".into()), Code::ResourceExhausted),
            (E::Unreachable("x".into()), Code::Unavailable),
            (E::AuthFailed { user: "csi".into() }, Code::Unavailable),
            (
                E::HostKeyMismatch {
                    expected: "a".into(),
                    actual: "b".into(),
                },
                Code::Unavailable,
            ),
            (E::Timeout(Duration::from_secs(1)), Code::DeadlineExceeded),
            (E::Failed("x".into()), Code::Internal),
            (E::InUse("x".into()), Code::FailedPrecondition),
        ];
        for (e, code) in cases {
            let status: Status =
                Step::Create(VolumeId::new("pvc-1").unwrap()).failed()(e.into()).into();
            assert_eq!(status.code(), code);
        }
    }

    #[test]
    fn refusals_map_to_the_codes_csi_sanity_and_the_sidecars_expect() {
        use ControllerError as C;
        let cluster = || ClusterError::Injected("the API server is away".into());
        let node = || "node-a".to_string();
        let slot = || VolumeId::new("pvc-1").unwrap();
        let cases = [
            (
                C::invalid("name", "must not be empty"),
                Code::InvalidArgument,
            ),
            (
                C::NotManaged {
                    field: "volume_id",
                    volume: VolumeId::new("other-1").unwrap(),
                    prefix: IdPrefix::new("pvc-").unwrap(),
                },
                Code::InvalidArgument,
            ),
            (C::Size(SizeError::Negative), Code::OutOfRange),
            (
                C::TopologyUnreachable {
                    key: "k".into(),
                    value: "v".into(),
                },
                Code::ResourceExhausted,
            ),
            (C::ForeignToken { token: "x".into() }, Code::Aborted),
            (
                C::Attachments(ManagerError::Busy("pvc-1".into())),
                Code::Aborted,
            ),
            (C::VolumeNotFound { volume: slot() }, Code::NotFound),
            (C::NodeNotFound { node: node() }, Code::NotFound),
            (
                C::ExistsDifferently {
                    volume: "pvc-1".into(),
                    differs: Mismatch::Export,
                },
                Code::AlreadyExists,
            ),
            (
                C::PublishedIncompatibly {
                    volume: slot(),
                    node: node(),
                },
                Code::AlreadyExists,
            ),
            (
                C::StillPublished {
                    volume: slot(),
                    nodes: vec![node()],
                },
                Code::FailedPrecondition,
            ),
            (
                C::NodeOutOfService { node: node() },
                Code::FailedPrecondition,
            ),
            (
                C::Refused {
                    volume: slot(),
                    refusal: Refusal::IncompatibleOnSameNode,
                },
                Code::FailedPrecondition,
            ),
            (
                C::SourceNotFound {
                    kind: "snapshot",
                    id: "snap-1".into(),
                },
                Code::NotFound,
            ),
            (
                C::SnapshotOfOtherVolume {
                    snapshot: VolumeId::new("snap-1").unwrap(),
                    source_volume: "pvc-2".into(),
                    asked: slot(),
                },
                Code::AlreadyExists,
            ),
            (
                C::TooSmallForSource {
                    source_id: "snap-1".into(),
                    needed: 2,
                    requested: 1,
                },
                Code::OutOfRange,
            ),
            (
                C::LayoutNeedsBtrfs {
                    pool: "storage-pool".into(),
                    fs: "xfs".into(),
                },
                Code::InvalidArgument,
            ),
            (
                C::NotASnapshot {
                    id: VolumeId::new("snap-1").unwrap(),
                },
                Code::FailedPrecondition,
            ),
            (
                C::SnapshotNotReady {
                    snapshot: VolumeId::new("snap-1").unwrap(),
                },
                Code::Unavailable,
            ),
            (C::ClusterIdUnknown, Code::Unavailable),
            (C::Attachments(ManagerError::NotReady), Code::Unavailable),
            (
                C::NodeCheck {
                    node: node(),
                    source: cluster(),
                },
                Code::Unavailable,
            ),
        ];
        for (e, code) in cases {
            assert_eq!(e.code(), code, "{e}");
        }
    }

    #[test]
    fn status_messages_carry_the_whole_cause_chain() {
        let status: Status = Step::Create(VolumeId::new("pvc-1").unwrap()).failed()(
            routeros::Error::NoSpace("failure: not enough space".into()).into(),
        )
        .into();
        assert_eq!(
            status.message(),
            "create volume pvc-1: not enough space on the RDS: failure: not enough space"
        );
        let status: Status = ControllerError::NodeCheck {
            node: "node-a".into(),
            source: ClusterError::Injected("the API server is away".into()),
        }
        .into();
        assert_eq!(
            status.message(),
            "check node \"node-a\": the API server is away"
        );
    }
}
