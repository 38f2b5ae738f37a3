//! Errors of the RouterOS client and the classification of command output.
//!
//! RouterOS does not report failure reliably through the exit status:
//! failures arrive as text on stdout or stderr. Classification looks at whole
//! lines that start with a known error phrase, so a volume whose name happens
//! to contain "no such item" inside a record never reads as an error.

use std::time::Duration;

pub use storage::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found on the RDS: {0}")]
    NotFound(String),
    #[error("not enough space on the RDS: {0}")]
    NoSpace(String),
    #[error("the RDS rejected the command as invalid: {0}")]
    Invalid(String),
    #[error("already exists on the RDS: {0}")]
    AlreadyExists(String),
    #[error("in use on the RDS: {0}")]
    InUse(String),
    #[error("RDS command failed: {0}")]
    Failed(String),
    #[error("SSH authentication to the RDS was refused for user {user:?}")]
    AuthFailed { user: String },
    #[error("RDS host key mismatch: expected {expected}, the server presented {actual}; refusing to connect")]
    HostKeyMismatch { expected: String, actual: String },
    #[error("RDS unreachable: {0}")]
    Unreachable(String),
    #[error("RDS command timed out after {0:?}; its outcome is unknown")]
    Timeout(Duration),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("unexpected RDS output: {0}")]
    Protocol(String),
    #[error("cannot load the SSH key: {0}")]
    Key(String),
}

/// A RouterOS failure in the categories every backend reports.
impl From<Error> for storage::Error {
    fn from(e: Error) -> storage::Error {
        storage::Error::new(e.storage_kind(), e)
    }
}

impl Error {
    /// The category every backend reports this failure in; one mapping
    /// for every backend reached over this client (the RDS, a Linux host).
    pub fn storage_kind(&self) -> storage::ErrorKind {
        use storage::ErrorKind as K;
        match self {
            Error::NotFound(_) => K::NotFound,
            Error::NoSpace(_) => K::NoSpace,
            Error::AlreadyExists(_) => K::AlreadyExists,
            Error::InUse(_) => K::InUse,
            Error::Validation(_) => K::InvalidInput,
            // The server cannot be used right now (a key that cannot be
            // loaded only ever shows at start).
            Error::Unreachable(_)
            | Error::AuthFailed { .. }
            | Error::HostKeyMismatch { .. }
            | Error::Key(_) => K::Unavailable,
            Error::Timeout(_) => K::Timeout,
            Error::Invalid(_) | Error::Failed(_) | Error::Protocol(_) => K::Internal,
        }
    }

    /// Whether retrying later may succeed without anyone changing anything:
    /// the RDS could not be reached or did not answer in time.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable(_) | Error::Timeout(_))
    }

    /// A short stable label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::NotFound(_) => "not_found",
            Error::NoSpace(_) => "no_space",
            Error::Invalid(_) => "invalid",
            Error::AlreadyExists(_) => "already_exists",
            Error::InUse(_) => "in_use",
            Error::Failed(_) => "failed",
            Error::AuthFailed { .. } => "auth_failed",
            Error::HostKeyMismatch { .. } => "host_key_mismatch",
            Error::Unreachable(_) => "unreachable",
            Error::Timeout(_) => "timeout",
            Error::Validation(_) => "validation",
            Error::Protocol(_) => "protocol",
            Error::Key(_) => "key",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Turns the streams and exit status of one command into an error, if the
/// command failed.
pub fn classify(stdout: &str, stderr: &str, exit_status: Option<u32>) -> Result<()> {
    for line in stdout.lines().chain(stderr.lines()) {
        if let Some(err) = classify_line(line.trim()) {
            return Err(err);
        }
    }
    let stderr = stderr.trim();
    if !stderr.is_empty() {
        return Err(Error::Failed(truncate(stderr)));
    }
    match exit_status {
        Some(0) | None => Ok(()),
        Some(code) => Err(Error::Failed(format!("exit status {code}"))),
    }
}

fn classify_line(line: &str) -> Option<Error> {
    let lower = line.to_ascii_lowercase();
    let text = || truncate(line);
    let detail = lower.strip_prefix("failure:").map(str::trim);
    let body = detail.unwrap_or(&lower);
    let is_error_line = detail.is_some()
        || [
            "no such item",
            "bad command name",
            "syntax error",
            "expected ",
            "invalid ",
            "input does not match",
            "ambiguous value",
            "value of ",
            "not enough space",
            "error:",
        ]
        .iter()
        .any(|p| lower.starts_with(p));
    if !is_error_line {
        return None;
    }
    Some(
        if body.contains("not enough space") || body.contains("no space") {
            Error::NoSpace(text())
        } else if body.contains("no such item") || body.contains("not found") {
            Error::NotFound(text())
        } else if body.contains("already exists") || body.contains("already have") {
            Error::AlreadyExists(text())
        } else if body.contains("in use") {
            Error::InUse(text())
        } else if body.starts_with("bad command name")
            || body.starts_with("syntax error")
            || body.starts_with("expected ")
            || body.contains("invalid")
            || body.starts_with("input does not match")
            || body.starts_with("ambiguous value")
            || body.starts_with("value of ")
        {
            Error::Invalid(text())
        } else {
            Error::Failed(text())
        },
    )
}

/// A command's message cut to a length fit for logs and gRPC statuses.
pub fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        s.to_string()
    } else {
        let mut end = MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_routeros_error_text_is_classified() {
        let cases: &[(&str, &str)] = &[
            ("failure: not enough space", "no_space"),
            ("not enough space", "no_space"),
            ("no such item", "not_found"),
            ("failure: no such item", "not_found"),
            ("invalid parameter", "invalid"),
            ("failure: invalid parameter", "invalid"),
            ("bad command name foo (line 1 column 7)", "invalid"),
            ("syntax error (line 1 column 5)", "invalid"),
            ("expected end of command (line 1 column 10)", "invalid"),
            ("failure: file already exists", "already_exists"),
            ("failure: disk is in use", "in_use"),
            ("failure: something else broke", "failed"),
        ];
        for (text, kind) in cases {
            let on_stdout = classify(text, "", Some(0)).unwrap_err();
            assert_eq!(on_stdout.kind(), *kind, "stdout: {text}");
            let on_stderr = classify("", text, Some(1)).unwrap_err();
            assert_eq!(on_stderr.kind(), *kind, "stderr: {text}");
        }
    }

    #[test]
    fn record_output_mentioning_error_words_is_not_an_error() {
        let out = " 0  slot=\"no-such-item\" comment=\"not enough space\"\n";
        assert!(classify(out, "", Some(0)).is_ok());
    }

    #[test]
    fn unknown_stderr_text_or_a_nonzero_status_is_a_failure() {
        assert_eq!(classify("", "boom", Some(0)).unwrap_err().kind(), "failed");
        assert_eq!(classify("", "", Some(2)).unwrap_err().kind(), "failed");
        assert!(classify("", "", Some(0)).is_ok());
        assert!(classify("", "", None).is_ok());
    }

    #[test]
    fn validation_errors_cap_the_echoed_value() {
        let long = "x".repeat(10_000);
        let e = ValidationError::new("slot", &long, "too long");
        assert!(e.to_string().len() < 200);
    }
}
