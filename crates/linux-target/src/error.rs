//! Errors of the Linux target and the classification of a shell command's
//! result.
//!
//! An [`Error`] is a [`routeros::Error`] (the same kinds, the same
//! [`Error::kind`] labels, so the CSI layer maps both backends' errors to
//! the same gRPC codes through one table) that speaks of the target host
//! rather than the RDS when shown. Unlike RouterOS, a Linux command's exit
//! status is reliable: zero is success whatever it printed (LVM warns on
//! stderr on success), non-zero is failure and its stderr says which kind.

use std::fmt;

pub use routeros::Error as E;
pub use routeros::ValidationError;

use routeros::error::truncate;

use crate::shell::Output;

/// An error of the Linux target: its kind is the wrapped RouterOS error's.
#[derive(Debug)]
pub struct Error(pub E);

impl Error {
    /// Whether retrying later may succeed without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        self.0.is_transient()
    }

    /// A short stable label for metrics; the same as `routeros::Error`'s.
    pub fn kind(&self) -> &'static str {
        self.0.kind()
    }

    /// The error as the RDS backend's, for code that maps those.
    pub fn into_routeros(self) -> E {
        self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            E::NotFound(s) => write!(f, "not found on the target host: {s}"),
            E::NoSpace(s) => write!(f, "not enough space on the target host: {s}"),
            E::Invalid(s) => write!(f, "the target host rejected the command as invalid: {s}"),
            E::AlreadyExists(s) => write!(f, "already exists on the target host: {s}"),
            E::InUse(s) => write!(f, "in use on the target host: {s}"),
            E::Failed(s) => write!(f, "command on the target host failed: {s}"),
            E::AuthFailed { user } => {
                write!(f, "SSH authentication to the target host was refused for user {user:?}")
            }
            E::HostKeyMismatch { expected, actual } => write!(
                f,
                "target host key mismatch: expected {expected}, the server presented {actual}; refusing to connect"
            ),
            E::Unreachable(s) => write!(f, "target host unreachable: {s}"),
            E::Timeout(d) => {
                write!(f, "command on the target host timed out after {d:?}; its outcome is unknown")
            }
            E::Validation(v) => v.fmt(f),
            E::Protocol(s) => write!(f, "unexpected output from the target host: {s}"),
            E::Key(s) => write!(f, "cannot load the SSH key: {s}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<E> for Error {
    fn from(e: E) -> Self {
        Error(e)
    }
}

impl From<ValidationError> for Error {
    fn from(v: ValidationError) -> Self {
        Error(E::Validation(v))
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
            return Err(Error(E::Failed(format!(
                "ended without an exit status (killed by a signal?): {}",
                truncate(out.stderr.trim())
            ))))
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
        return Err(Error(E::Failed(text)));
    }
    let lower = text.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lower.contains(w));
    Err(Error(
        if has(&[
            "insufficient free space",
            "no space left",
            "not enough space",
            "insufficient suitable",
        ]) {
            E::NoSpace(text)
        } else if has(&["target(s) not detected", "execvp failed"]) {
            // A kernel module or a tool missing on the host.
            E::Failed(text)
        } else if has(&["volume group \"", "cannot process volume group"]) && has(&["not found"]) {
            // The volume group itself missing is the host's set-up, not an
            // absent volume: never "already deleted".
            E::Failed(text)
        } else if has(&["already exists", "file exists"]) {
            E::AlreadyExists(text)
        } else if has(&[
            "failed to find",
            "not found",
            "no such file or directory",
            "does not exist",
        ]) {
            E::NotFound(text)
        } else if has(&["in use", "device or resource busy"]) {
            E::InUse(text)
        } else if has(&["invalid", "error during parsing", "run `"]) {
            E::Invalid(text)
        } else {
            E::Failed(text)
        },
    ))
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
        let e: Error = E::Timeout(std::time::Duration::from_secs(1)).into();
        assert!(e.is_transient());
        assert_eq!(e.kind(), "timeout");
        let e: Error = E::Unreachable("x".into()).into();
        assert_eq!(e.kind(), "unreachable");
    }

    proptest! {
        #[test]
        fn classification_never_panics(stderr in any::<String>(), code in any::<Option<u32>>()) {
            let _ = classify(&Output { stdout: String::new(), stderr, exit_status: code });
        }
    }
}
