//! Errors of the data path, with a coarse [`ErrorKind`] the CSI layer maps
//! to gRPC codes (this crate knows nothing about gRPC).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::exec::ExecError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A subsystem outside the configured NQN and volume-ID prefixes
    /// belongs to someone else (a diskless node's root disk, another
    /// driver or installation).
    #[error("NQN {nqn:?} does not start with {prefix:?} (the configured NQN prefix and volume-ID prefix): this driver does not own it")]
    ForeignNqn { nqn: String, prefix: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{command}")]
    Exec {
        command: String,
        #[source]
        source: ExecError,
    },
    #[error("{command} failed with {status}: {diagnostic}")]
    Failed {
        command: String,
        status: String,
        diagnostic: String,
        kind: ErrorKind,
    },
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no usable block device for {nqn} within {waited:?}: {detail}")]
    NoDevice {
        nqn: String,
        waited: Duration,
        detail: String,
    },
    /// A safety refusal. `retry` tells a condition that may clear by itself
    /// (a device not readable yet) from one that needs a person (a foreign
    /// filesystem, a volume that is still mounted).
    #[error("refusing to {action}: {reason}")]
    Refused {
        action: String,
        reason: String,
        retry: bool,
    },
}

/// How the CSI layer should report an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    Unavailable,
    DeadlineExceeded,
    Internal,
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::ForeignNqn { .. } => ErrorKind::FailedPrecondition,
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::Exec {
                source: ExecError::Timeout { .. },
                ..
            } => ErrorKind::DeadlineExceeded,
            Error::Exec {
                source: ExecError::Spawn { .. },
                ..
            } => ErrorKind::Internal,
            Error::Failed { kind, .. } => *kind,
            Error::Io { source, .. } if source.kind() == io::ErrorKind::TimedOut => {
                ErrorKind::DeadlineExceeded
            }
            Error::Io { .. } => ErrorKind::Internal,
            Error::NoDevice { .. } => ErrorKind::Unavailable,
            Error::Refused { retry: true, .. } => ErrorKind::Unavailable,
            Error::Refused { retry: false, .. } => ErrorKind::FailedPrecondition,
        }
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn refused(action: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused {
            action: action.into(),
            reason: reason.into(),
            retry: false,
        }
    }

    pub fn refused_for_now(action: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Refused {
            action: action.into(),
            reason: reason.into(),
            retry: true,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
