//! CSI errors and their one mapping to gRPC status codes.
//!
//! The sidecars retry differently per code, so the code must mean what the
//! CSI spec says; the message carries the whole cause chain so an operator
//! reading a PVC event sees why, not just that, something failed.

use tonic::{Code, Status};

use crate::params::{ParamError, SizeError};

#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Size(#[from] SizeError),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("an operation on {0} is already in progress")]
    Aborted(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{op}")]
    Backend {
        op: String,
        #[source]
        source: routeros::Error,
    },
    #[error("{0}")]
    Internal(String),
}

impl CsiError {
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CsiError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    pub fn backend(op: impl Into<String>, source: routeros::Error) -> Self {
        CsiError::Backend {
            op: op.into(),
            source,
        }
    }

    pub fn code(&self) -> Code {
        match self {
            CsiError::InvalidArgument { .. } | CsiError::Param(_) => Code::InvalidArgument,
            CsiError::Size(_) => Code::OutOfRange,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::ResourceExhausted(_) => Code::ResourceExhausted,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::Internal(_) => Code::Internal,
            CsiError::Backend { source, .. } => backend_code(source),
        }
    }
}

fn backend_code(e: &routeros::Error) -> Code {
    use routeros::Error as E;
    match e {
        E::NotFound(_) => Code::NotFound,
        E::NoSpace(_) => Code::ResourceExhausted,
        E::AlreadyExists(_) => Code::AlreadyExists,
        E::InUse(_) => Code::FailedPrecondition,
        E::Validation(_) => Code::InvalidArgument,
        // The RDS being unreachable, refusing our key or presenting another
        // host key all mean "the backend cannot be used right now".
        E::Unreachable(_) | E::AuthFailed { .. } | E::HostKeyMismatch { .. } => Code::Unavailable,
        E::Timeout(_) => Code::DeadlineExceeded,
        // RouterOS refusing a command we validated is a driver bug or an
        // unsupported RouterOS version, not the caller's fault.
        E::Invalid(_) | E::Failed(_) | E::Protocol(_) | E::Key(_) => Code::Internal,
    }
}

/// The message with every cause appended ("a: b: c"): the one
/// implementation, kept in the data-path crate both services build on.
pub use nvme::chain;

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Status {
        Status::new(e.code(), chain(&e))
    }
}

pub type CsiResult<T> = Result<T, CsiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn backend_errors_map_to_the_codes_the_sidecars_expect() {
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
            let status: Status = CsiError::backend("create volume pvc-1", e).into();
            assert_eq!(status.code(), code);
        }
    }

    #[test]
    fn status_messages_carry_the_whole_cause_chain() {
        let status: Status = CsiError::backend(
            "create volume pvc-1",
            routeros::Error::NoSpace("failure: not enough space".into()),
        )
        .into();
        assert_eq!(
            status.message(),
            "create volume pvc-1: not enough space on the RDS: failure: not enough space"
        );
    }
}
