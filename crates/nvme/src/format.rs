//! Format safety: the one decision that can destroy a volume
//! (docs/safety.md#formatting-over-data).
//!
//! Right after an NVMe reconnect a device can fail reads or read as empty,
//! and `blkid` then fails; a driver that formats on "no filesystem found"
//! wipes the volume. Here formatting needs every one of:
//! - the first 4 KiB of the device were just read, and are all zero;
//! - `blkid -p` exited 2 (nothing found) with no output, on that device;
//! - the device was the same one (major:minor, behind a live controller)
//!   before the read and after the probe, the last look at sysfs before
//!   mkfs;
//! - the volume context does not say the volume was formatted before;
//! - no durable record kept outside the node (the PV annotation) says the
//!   volume was formatted.
//!
//! Anything else (an error, a timeout, an unexpected exit code, a signature
//! of another kind) refuses. [`decide`] is pure, so every branch is tested.

use std::collections::BTreeMap;

use crate::exec::{FsType, Output};

/// Bytes read from the start of the device before probing.
pub const HEAD_BYTES: usize = 4096;

/// What `blkid -p` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// Exit code 2: no signature at all.
    Empty,
    /// A filesystem (`TYPE=`, `USAGE=filesystem`).
    Filesystem(String),
    /// Anything else: a partition table, LVM, LUKS, swap, RAID member.
    Other(String),
}

/// Parses `blkid -o export` output: `KEY=value` lines.
pub fn parse_export(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Reads a finished `blkid -p -o export` run. `Err` says why the answer is
/// not definitive.
pub fn interpret_blkid(out: &Output) -> Result<Probe, String> {
    match out.code {
        Some(0) => {
            let kv = parse_export(&out.stdout);
            match (kv.get("TYPE"), kv.get("PTTYPE")) {
                (Some(t), _) if kv.get("USAGE").is_none_or(|u| u == "filesystem") => {
                    Ok(Probe::Filesystem(t.clone()))
                }
                (Some(t), _) => Ok(Probe::Other(format!(
                    "{t} ({})",
                    kv.get("USAGE").map(String::as_str).unwrap_or("?")
                ))),
                (None, Some(pt)) => Ok(Probe::Other(format!("a {pt} partition table"))),
                (None, None) => Err(format!(
                    "blkid exited 0 but reported no TYPE or PTTYPE: {:?}",
                    out.stdout.chars().take(200).collect::<String>()
                )),
            }
        }
        Some(2) if out.stdout.trim().is_empty() => Ok(Probe::Empty),
        Some(2) => Err("blkid exited 2 (nothing found) yet printed something".into()),
        Some(8) => Err("blkid found ambivalent signatures (exit code 8)".into()),
        _ => Err(format!(
            "blkid failed with {}: {}",
            out.status(),
            out.diagnostic()
        )),
    }
}

/// The outcome of reading the head of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Head {
    Zero,
    NonZero,
    Unreadable(String),
}

impl Head {
    pub fn of(bytes: &[u8]) -> Head {
        if bytes.len() < HEAD_BYTES {
            Head::Unreadable(format!("read only {} bytes", bytes.len()))
        } else if bytes.iter().all(|b| *b == 0) {
            Head::Zero
        } else {
            Head::NonZero
        }
    }
}

/// Everything the format decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    pub head: Head,
    pub blkid: Result<Probe, String>,
    /// Same device, behind live controllers, before the read and after the
    /// probe.
    pub device_stable: bool,
    /// The volume context says the volume was formatted before.
    pub formatted_before: bool,
    /// A durable record kept outside the node says the volume was
    /// formatted: what says so, for the message.
    pub recorded: Option<String>,
}

/// What is known about a volume's past from outside its device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// The volume context says formatted, or the volume was mounted with a
    /// filesystem on this node before.
    pub formatted_before: bool,
    /// A durable record says the volume was formatted: what says so (for
    /// example "the PV annotation rds.csi.srvlab.io/formatted=ext4").
    pub recorded: Option<String>,
}

impl From<bool> for History {
    fn from(formatted_before: bool) -> Self {
        History {
            formatted_before,
            recorded: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Make a filesystem: the device is definitively empty.
    Format,
    /// Mount what is there.
    UseExisting,
    /// Touch nothing. `retry`: the condition may clear by itself.
    Refuse { reason: String, retry: bool },
}

pub fn decide(f: &Facts, wanted: FsType) -> Decision {
    let refuse = |reason: String, retry| Decision::Refuse { reason, retry };
    if let Head::Unreadable(e) = &f.head {
        return refuse(format!("the device could not be read: {e}"), true);
    }
    let probe = match &f.blkid {
        Ok(p) => p,
        Err(e) => return refuse(format!("no definitive probe result: {e}"), true),
    };
    if !f.device_stable {
        return refuse(
            "the device changed or its controller was not live while it was probed".into(),
            true,
        );
    }
    match probe {
        Probe::Filesystem(t) if t == wanted.as_str() => Decision::UseExisting,
        Probe::Filesystem(t) => refuse(
            format!(
                "the device holds a {t} filesystem, not {wanted}; a filesystem is never replaced"
            ),
            false,
        ),
        Probe::Other(what) => refuse(format!("the device holds {what}"), false),
        // A person must look: the volume's filesystem is gone or unreadable
        // (a reconnect that came back empty, a target serving another
        // file), and formatting would make that final.
        Probe::Empty if f.recorded.is_some() => refuse(
            format!(
                "{} says this volume was formatted, yet no filesystem signature is visible; \
                 it is never formatted twice: its data is unreadable or gone",
                f.recorded.as_deref().unwrap_or_default()
            ),
            false,
        ),
        Probe::Empty if f.formatted_before => refuse(
            "the volume context says this volume was formatted before, yet no filesystem \
             signature is visible (a device can read as empty right after a reconnect); \
             it is never formatted twice"
                .into(),
            true,
        ),
        Probe::Empty if f.head == Head::NonZero => refuse(
            "blkid found no signature but the first 4 KiB are not zero: the device holds data"
                .into(),
            false,
        ),
        Probe::Empty => Decision::Format,
    }
}

/// What `e2fsck -p` said, by its documented exit codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FsckOutcome {
    Clean,
    Repaired,
    /// Errors left that need a person.
    Uncorrected(String),
    /// e2fsck itself failed (8 and up, or a signal).
    Failed(String),
}

pub fn interpret_e2fsck(out: &Output) -> FsckOutcome {
    match out.code {
        Some(0) => FsckOutcome::Clean,
        // 1: errors corrected; 2: corrected, reboot advised (root fs only).
        Some(1) | Some(2) | Some(3) => FsckOutcome::Repaired,
        Some(4..=7) => FsckOutcome::Uncorrected(out.diagnostic()),
        _ => FsckOutcome::Failed(format!("{}: {}", out.status(), out.diagnostic())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn out(code: Option<i32>, stdout: &str) -> Output {
        Output {
            code,
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    fn facts(head: Head, blkid: Result<Probe, String>) -> Facts {
        Facts {
            head,
            blkid,
            device_stable: true,
            formatted_before: false,
            recorded: None,
        }
    }

    #[test]
    fn captured_blkid_outputs_are_understood() {
        let ext4 = include_str!("../tests/fixtures/blkid-ext4.txt");
        assert_eq!(
            interpret_blkid(&out(Some(0), ext4)),
            Ok(Probe::Filesystem("ext4".into()))
        );
        let xfs = include_str!("../tests/fixtures/blkid-xfs.txt");
        assert_eq!(
            interpret_blkid(&out(Some(0), xfs)),
            Ok(Probe::Filesystem("xfs".into()))
        );
        let dos = include_str!("../tests/fixtures/blkid-dos.txt");
        assert!(matches!(
            interpret_blkid(&out(Some(0), dos)),
            Ok(Probe::Other(s)) if s.contains("dos")
        ));
        let lvm =
            "DEVNAME=/dev/nvme0n1\nUUID=abc\nVERSION=LVM2 001\nTYPE=LVM2_member\nUSAGE=raid\n";
        assert!(matches!(
            interpret_blkid(&out(Some(0), lvm)),
            Ok(Probe::Other(s)) if s.contains("LVM2_member")
        ));
        assert_eq!(interpret_blkid(&out(Some(2), "")), Ok(Probe::Empty));
    }

    #[test]
    fn blkid_answers_other_than_found_or_nothing_are_not_definitive() {
        for o in [
            out(Some(1), ""),
            out(Some(4), ""),
            out(Some(8), ""),
            out(None, ""),
            out(Some(0), ""),
            out(Some(0), "garbage"),
            out(Some(2), "TYPE=ext4\n"),
        ] {
            assert!(interpret_blkid(&o).is_err(), "{o:?}");
        }
    }

    #[test]
    fn only_a_zero_head_and_exit_code_2_lead_to_format() {
        assert_eq!(
            decide(&facts(Head::Zero, Ok(Probe::Empty)), FsType::Ext4),
            Decision::Format
        );
    }

    #[test]
    fn blkid_error_never_leads_to_mkfs() {
        let d = decide(&facts(Head::Zero, Err("timeout".into())), FsType::Ext4);
        assert!(matches!(d, Decision::Refuse { retry: true, .. }), "{d:?}");
    }

    #[test]
    fn an_unreadable_device_is_never_formatted() {
        let d = decide(
            &facts(Head::Unreadable("EIO".into()), Ok(Probe::Empty)),
            FsType::Ext4,
        );
        assert!(matches!(d, Decision::Refuse { retry: true, .. }), "{d:?}");
    }

    #[test]
    fn a_device_with_data_but_no_signature_is_never_formatted() {
        let d = decide(&facts(Head::NonZero, Ok(Probe::Empty)), FsType::Xfs);
        assert!(matches!(d, Decision::Refuse { retry: false, .. }), "{d:?}");
    }

    #[test]
    fn a_volume_formatted_before_is_never_formatted_again() {
        let mut f = facts(Head::Zero, Ok(Probe::Empty));
        f.formatted_before = true;
        let d = decide(&f, FsType::Ext4);
        assert!(matches!(d, Decision::Refuse { .. }), "{d:?}");
    }

    #[test]
    fn a_volume_a_durable_record_calls_formatted_is_refused_for_a_person_when_it_reads_empty() {
        let mut f = facts(Head::Zero, Ok(Probe::Empty));
        f.recorded = Some("the PV annotation x=ext4".into());
        let d = decide(&f, FsType::Ext4);
        let Decision::Refuse { reason, retry } = d else {
            panic!("{d:?}")
        };
        assert!(!retry, "needs a person: FAILED_PRECONDITION");
        assert!(reason.contains("the PV annotation x=ext4"), "{reason}");
        // What the record says never stands in for a probe that found the
        // filesystem.
        let mut f = facts(Head::NonZero, Ok(Probe::Filesystem("ext4".into())));
        f.recorded = Some("r".into());
        assert_eq!(decide(&f, FsType::Ext4), Decision::UseExisting);
    }

    #[test]
    fn a_device_that_changed_during_the_probe_is_never_formatted() {
        let mut f = facts(Head::Zero, Ok(Probe::Empty));
        f.device_stable = false;
        assert!(matches!(
            decide(&f, FsType::Ext4),
            Decision::Refuse { retry: true, .. }
        ));
    }

    #[test]
    fn another_filesystem_is_never_replaced() {
        let d = decide(
            &facts(Head::NonZero, Ok(Probe::Filesystem("xfs".into()))),
            FsType::Ext4,
        );
        assert!(matches!(d, Decision::Refuse { retry: false, .. }), "{d:?}");
        assert_eq!(
            decide(
                &facts(Head::NonZero, Ok(Probe::Filesystem("ext4".into()))),
                FsType::Ext4
            ),
            Decision::UseExisting
        );
    }

    #[test]
    fn e2fsck_exit_codes_are_read_as_documented() {
        assert_eq!(interpret_e2fsck(&Output::exit(0)), FsckOutcome::Clean);
        assert_eq!(interpret_e2fsck(&Output::exit(1)), FsckOutcome::Repaired);
        assert!(matches!(
            interpret_e2fsck(&Output::exit(4)),
            FsckOutcome::Uncorrected(_)
        ));
        assert!(matches!(
            interpret_e2fsck(&Output::exit(8)),
            FsckOutcome::Failed(_)
        ));
        assert!(matches!(
            interpret_e2fsck(&Output {
                code: None,
                ..Default::default()
            }),
            FsckOutcome::Failed(_)
        ));
    }

    fn any_probe() -> impl Strategy<Value = Result<Probe, String>> {
        prop_oneof![
            Just(Ok(Probe::Empty)),
            "[a-z0-9]{0,6}".prop_map(|t| Ok(Probe::Filesystem(t))),
            "[a-z ]{0,6}".prop_map(|t| Ok(Probe::Other(t))),
            ".{0,10}".prop_map(Err),
        ]
    }

    fn any_head() -> impl Strategy<Value = Head> {
        prop_oneof![
            Just(Head::Zero),
            Just(Head::NonZero),
            ".{0,10}".prop_map(Head::Unreadable)
        ]
    }

    proptest! {
        #[test]
        fn format_is_decided_only_on_a_definitive_empty_answer(
            head in any_head(), blkid in any_probe(), stable: bool, before: bool, xfs: bool,
            recorded in proptest::option::of(".{0,10}")
        ) {
            let f = Facts { head: head.clone(), blkid: blkid.clone(), device_stable: stable, formatted_before: before, recorded: recorded.clone() };
            let wanted = if xfs { FsType::Xfs } else { FsType::Ext4 };
            if decide(&f, wanted) == Decision::Format {
                prop_assert_eq!(head, Head::Zero);
                prop_assert_eq!(blkid, Ok(Probe::Empty));
                prop_assert!(stable);
                prop_assert!(!before);
                prop_assert_eq!(recorded, None);
            }
        }

        #[test]
        fn blkid_interpretation_never_panics(code in proptest::option::of(any::<i32>()), stdout in any::<String>(), stderr in any::<String>()) {
            let o = Output { code, stdout, stderr };
            let r = interpret_blkid(&o);
            if r == Ok(Probe::Empty) {
                prop_assert_eq!(code, Some(2));
            }
            let _ = interpret_e2fsck(&o);
            let _ = parse_export(&o.stdout);
        }

        #[test]
        fn head_classification_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let h = Head::of(&bytes);
            if h == Head::Zero {
                prop_assert!(bytes.len() >= HEAD_BYTES);
            }
        }
    }
}
