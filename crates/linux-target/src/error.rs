//! Errors of the Linux target and the classification of a shell command's
//! result.
//!
//! The variants and their [`Error::kind`] labels are those of
//! [`routeros::Error`], so the CSI layer maps both backends' errors to the
//! same gRPC codes. Unlike RouterOS, a Linux command's exit status is
//! reliable: zero is success whatever it printed (LVM warns on stderr on
//! success), non-zero is failure and its stderr says which kind.

use std::time::Duration;

pub use routeros::ValidationError;

use crate::shell::Output;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not found on the target host: {0}")]
    NotFound(String),
    #[error("not enough space on the target host: {0}")]
    NoSpace(String),
    #[error("the target host rejected the command as invalid: {0}")]
    Invalid(String),
    #[error("already exists on the target host: {0}")]
    AlreadyExists(String),
    #[error("in use on the target host: {0}")]
    InUse(String),
    #[error("command on the target host failed: {0}")]
    Failed(String),
    #[error("SSH authentication to the target host was refused for user {user:?}")]
    AuthFailed { user: String },
    #[error("target host key mismatch: expected {expected}, the server presented {actual}; refusing to connect")]
    HostKeyMismatch { expected: String, actual: String },
    #[error("target host unreachable: {0}")]
    Unreachable(String),
    #[error("command on the target host timed out after {0:?}; its outcome is unknown")]
    Timeout(Duration),
    #[error(transparent)]
    Validation(#[from] ValidationError),
    #[error("unexpected output from the target host: {0}")]
    Protocol(String),
    #[error("cannot load the SSH key: {0}")]
    Key(String),
}

impl Error {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Unreachable(_) | Error::Timeout(_))
    }

    /// A short stable label for metrics; the same as `routeros::Error`'s.
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

impl From<routeros::Error> for Error {
    /// The SSH transport's errors, kind for kind.
    fn from(e: routeros::Error) -> Self {
        use routeros::Error as R;
        match e {
            R::NotFound(s) => Error::NotFound(s),
            R::NoSpace(s) => Error::NoSpace(s),
            R::Invalid(s) => Error::Invalid(s),
            R::AlreadyExists(s) => Error::AlreadyExists(s),
            R::InUse(s) => Error::InUse(s),
            R::Failed(s) => Error::Failed(s),
            R::AuthFailed { user } => Error::AuthFailed { user },
            R::HostKeyMismatch { expected, actual } => Error::HostKeyMismatch { expected, actual },
            R::Unreachable(s) => Error::Unreachable(s),
            R::Timeout(d) => Error::Timeout(d),
            R::Validation(v) => Error::Validation(v),
            R::Protocol(s) => Error::Protocol(s),
            R::Key(s) => Error::Key(s),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The exit status the driver's own scripts use for "the host is not set
/// up for this" (no nvmet configfs, a port bound elsewhere, a namespace on
/// another device): never read as "not found", which a caller could take
/// for "already deleted".
pub const EXIT_NOT_READY: u32 = 70;

/// Turns a command's result into an error if it failed.
pub fn classify(out: &Output) -> Result<()> {
    let code = match out.exit_status {
        Some(0) => return Ok(()),
        Some(code) => code,
        None => {
            return Err(Error::Failed(format!(
                "ended without an exit status (killed by a signal?): {}",
                truncate(out.stderr.trim())
            )))
        }
    };
    // LVM's warnings (and the device-mapper chatter of hosts without it)
    // are not the reason a command failed.
    let reason: Vec<&str> = out
        .stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("WARNING:"))
        .collect();
    let text = if reason.is_empty() {
        format!("exit status {code}")
    } else {
        truncate(&reason.join("; "))
    };
    // A script's own "not ready", and the shell's "command not found"
    // (127) or "not executable" (126): a host without lvm2 must never read
    // as a host without the volume.
    if matches!(code, EXIT_NOT_READY | 126 | 127) {
        return Err(Error::Failed(text));
    }
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    Err(
        if has(&[
            "insufficient free space",
            "no space left",
            "not enough space",
            "insufficient suitable",
        ]) {
            Error::NoSpace(text)
        } else if has(&["target(s) not detected", "execvp failed"]) {
            // A kernel module or a tool missing on the host.
            Error::Failed(text)
        } else if has(&["volume group \"", "cannot process volume group"]) && has(&["not found"]) {
            // The volume group itself missing is the host's set-up, not an
            // absent volume: never "already deleted".
            Error::Failed(text)
        } else if has(&["already exists", "file exists"]) {
            Error::AlreadyExists(text)
        } else if has(&[
            "failed to find",
            "not found",
            "no such file or directory",
            "does not exist",
        ]) {
            Error::NotFound(text)
        } else if has(&["in use", "device or resource busy"]) {
            Error::InUse(text)
        } else if has(&["invalid", "error during parsing", "run `"]) {
            Error::Invalid(text)
        } else {
            Error::Failed(text)
        },
    )
}

fn truncate(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_string();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failed(code: u32, stderr: &str) -> Error {
        classify(&Output {
            stdout: String::new(),
            stderr: stderr.into(),
            exit_status: Some(code),
        })
        .unwrap_err()
    }

    /// Texts as lvm2 2.03.16 and coreutils print them on this kind of host.
    #[test]
    fn every_known_lvm_and_configfs_error_text_is_classified() {
        let cases: &[(&str, &str)] = &[
            ("  Logical Volume \"pvc-1\" already exists in volume group \"vg\"", "already_exists"),
            ("mkdir: cannot create directory 'x': File exists", "already_exists"),
            ("  Failed to find logical volume \"vg/nope\"", "not_found"),
            ("rm: cannot remove 'x': No such file or directory", "not_found"),
            ("  Volume group \"vg\" has insufficient free space (230 extents): 25600 required.", "no_space"),
            ("sh: 1: echo: echo: I/O error\nNo space left on device", "no_space"),
            ("  Logical volume vg/pvc-1 in use.", "in_use"),
            ("rmdir: failed to remove 'x': Device or resource busy", "in_use"),
            ("  Logical volume name \"bad name\" is invalid.\n  Run `lvcreate --help' for more information.", "invalid"),
            ("  Invalid argument for --addtag: a,b\n  Error during parsing of command line.", "invalid"),
            ("  Volume group \"nosuchvg\" not found\n  Cannot process volume group nosuchvg", "failed"),
            ("sudo: a password is required", "failed"),
            (
                "  /sbin/modprobe: execvp failed: No such file or directory\n  /sbin/modprobe failed: 2\n  \
                 snapshot: Required device-mapper target(s) not detected in your kernel.",
                "failed",
            ),
            ("", "failed"),
        ];
        for (text, kind) in cases {
            assert_eq!(failed(5, text).kind(), *kind, "{text}");
        }
    }

    #[test]
    fn success_is_the_exit_status_whatever_stderr_says() {
        let ok = Output {
            stdout: "{}".into(),
            stderr: "  /dev/mapper/control: open failed: No such device\n  WARNING: x".into(),
            exit_status: Some(0),
        };
        assert!(classify(&ok).is_ok());
        let no_status = Output {
            exit_status: None,
            ..ok
        };
        assert_eq!(classify(&no_status).unwrap_err().kind(), "failed");
    }

    #[test]
    fn the_scripts_not_ready_status_is_never_not_found() {
        let e = failed(
            EXIT_NOT_READY,
            "no nvmet configfs at /sys/kernel/config/nvmet: No such file or directory",
        );
        assert_eq!(e.kind(), "failed");
    }

    #[test]
    fn a_missing_tool_is_a_failure_never_not_found() {
        assert_eq!(failed(127, "sh: 1: lvs: not found").kind(), "failed");
        assert_eq!(
            failed(126, "sh: 1: /sbin/lvs: Permission denied").kind(),
            "failed"
        );
    }

    #[test]
    fn warnings_are_left_out_of_the_reason() {
        let e = failed(5, "  WARNING: Sum of all thin volume sizes exceeds\n  Failed to find logical volume \"vg/x\"");
        assert_eq!(
            e.to_string(),
            "not found on the target host: Failed to find logical volume \"vg/x\""
        );
    }

    #[test]
    fn transport_errors_keep_their_kind() {
        let e: Error = routeros::Error::Timeout(Duration::from_secs(1)).into();
        assert!(e.is_transient());
        assert_eq!(e.kind(), "timeout");
        let e: Error = routeros::Error::Unreachable("x".into()).into();
        assert_eq!(e.kind(), "unreachable");
    }

    proptest! {
        #[test]
        fn classification_never_panics(stderr in any::<String>(), code in any::<Option<u32>>()) {
            let _ = classify(&Output { stdout: String::new(), stderr, exit_status: code });
        }
    }
}
