//! Why a node RPC failed, and the one mapping of those failures to gRPC codes.

use nvme::ErrorKind;
use tonic::{Code, Status};

use crate::error::{chain, CsiError};

/// Why a node RPC failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error(transparent)]
    Csi(#[from] CsiError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{op}")]
    DataPath {
        op: String,
        #[source]
        source: nvme::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl NodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        NodeError::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub fn code(&self) -> Code {
        match self {
            NodeError::Invalid { .. } => Code::InvalidArgument,
            NodeError::Csi(e) => e.code(),
            NodeError::NotFound(_) => Code::NotFound,
            NodeError::FailedPrecondition(_) => Code::FailedPrecondition,
            NodeError::AlreadyExists(_) => Code::AlreadyExists,
            NodeError::Internal(_) => Code::Internal,
            NodeError::DataPath { source, .. } => match source.kind() {
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
