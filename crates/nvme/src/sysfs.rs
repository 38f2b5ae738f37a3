//! Pure parsers for what sysfs says about NVMe: device names, `dev`,
//! `size`, controller `state` and `address`.
//!
//! Naming, as the kernel does it:
//! - `nvmeX`: controller X (`/sys/class/nvme/nvmeX`, char device `/dev/nvmeX`);
//! - `nvme-subsysS`: subsystem S (`/sys/class/nvme-subsystem/nvme-subsysS`);
//! - with native multipath, `nvmeSnN` is the usable head block device of
//!   namespace N under subsystem S, and `nvmeScCnN` is the hidden per-path
//!   device of controller C (it has no `/dev` node; it maps to `nvmeSnN`);
//! - without multipath, `nvmeCnN` hangs off controller C and is the block
//!   device itself.

use std::collections::BTreeMap;

use crate::sys::DevId;

/// A name in the NVMe sysfs tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeName {
    /// `nvmeX`.
    Controller(u32),
    /// `nvme-subsysS`.
    Subsystem(u32),
    /// `nvmeAnN`: a block device (A is the subsystem instance with
    /// multipath, the controller instance without).
    Namespace { instance: u32, ns: u32 },
    /// `nvmeScCnN`: a hidden multipath path device.
    PathNamespace { subsys: u32, ctrl: u32, ns: u32 },
}

impl NvmeName {
    /// The block device a name stands for, if any: a path device maps to its
    /// head, `nvmeScCnN` -> `nvmeSnN`.
    pub fn block_device(self) -> Option<String> {
        match self {
            NvmeName::Namespace { instance, ns } => Some(format!("nvme{instance}n{ns}")),
            NvmeName::PathNamespace { subsys, ns, .. } => Some(format!("nvme{subsys}n{ns}")),
            NvmeName::Controller(_) | NvmeName::Subsystem(_) => None,
        }
    }
}

/// A decimal number without sign, leading `+` or surrounding space.
fn num(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Splits a leading run of ASCII digits off `s`.
fn digits(s: &str) -> (&str, &str) {
    let end = s
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(s.len());
    s.split_at(end)
}

pub fn parse_name(s: &str) -> Option<NvmeName> {
    if let Some(rest) = s.strip_prefix("nvme-subsys") {
        return num(rest).map(NvmeName::Subsystem);
    }
    let rest = s.strip_prefix("nvme")?;
    let (first, rest) = digits(rest);
    let first = num(first)?;
    if rest.is_empty() {
        return Some(NvmeName::Controller(first));
    }
    if let Some(rest) = rest.strip_prefix('c') {
        let (ctrl, rest) = digits(rest);
        let ctrl = num(ctrl)?;
        let ns = num(rest.strip_prefix('n')?)?;
        return Some(NvmeName::PathNamespace {
            subsys: first,
            ctrl,
            ns,
        });
    }
    let ns = num(rest.strip_prefix('n')?)?;
    Some(NvmeName::Namespace {
        instance: first,
        ns,
    })
}

/// A sysfs `dev` file: `259:3`.
pub fn parse_dev(s: &str) -> Option<DevId> {
    let (major, minor) = s.trim().split_once(':')?;
    Some(DevId::new(num(major)?, num(minor)?))
}

/// A sysfs `size` file: 512-byte sectors, whatever the logical block size.
pub fn parse_size_bytes(s: &str) -> Option<u64> {
    let t = s.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse::<u64>().ok()?.checked_mul(512)
}

/// Controller `state`: `live`, `connecting`, `resetting`, `deleting`, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlState {
    Live,
    Connecting,
    Resetting,
    Deleting,
    Other(String),
}

pub fn parse_state(s: &str) -> CtrlState {
    match s.trim() {
        "live" => CtrlState::Live,
        "connecting" => CtrlState::Connecting,
        "resetting" => CtrlState::Resetting,
        t if t.starts_with("deleting") => CtrlState::Deleting,
        t => CtrlState::Other(t.chars().take(32).collect()),
    }
}

impl std::fmt::Display for CtrlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtrlState::Live => f.write_str("live"),
            CtrlState::Connecting => f.write_str("connecting"),
            CtrlState::Resetting => f.write_str("resetting"),
            CtrlState::Deleting => f.write_str("deleting"),
            CtrlState::Other(s) => f.write_str(s),
        }
    }
}

/// Controller `address`: `traddr=10.0.0.5,trsvcid=4420,src_addr=10.0.0.9`.
pub fn parse_address(s: &str) -> BTreeMap<String, String> {
    s.trim()
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn kernel_names_parse() {
        assert_eq!(parse_name("nvme3"), Some(NvmeName::Controller(3)));
        assert_eq!(parse_name("nvme-subsys12"), Some(NvmeName::Subsystem(12)));
        assert_eq!(
            parse_name("nvme1n1"),
            Some(NvmeName::Namespace { instance: 1, ns: 1 })
        );
        assert_eq!(
            parse_name("nvme0c5n2"),
            Some(NvmeName::PathNamespace {
                subsys: 0,
                ctrl: 5,
                ns: 2
            })
        );
        for junk in [
            "",
            "nvme",
            "nvmex",
            "nvme1n",
            "nvme1c2",
            "nvme1c2n",
            "nvme-subsys",
            "nvme1n1p1",
            "nvme+1",
            "nvme1n-1",
            "nvme-fabrics",
            "nvme99999999999n1",
            "sda",
        ] {
            assert_eq!(parse_name(junk), None, "{junk}");
        }
    }

    #[test]
    fn a_path_device_maps_to_its_head() {
        assert_eq!(
            parse_name("nvme0c5n2").unwrap().block_device().as_deref(),
            Some("nvme0n2")
        );
        assert_eq!(
            parse_name("nvme4n1").unwrap().block_device().as_deref(),
            Some("nvme4n1")
        );
        assert_eq!(parse_name("nvme4").unwrap().block_device(), None);
    }

    #[test]
    fn captured_attribute_files_parse() {
        assert_eq!(parse_dev("259:3\n"), Some(DevId::new(259, 3)));
        assert_eq!(parse_dev("259:"), None);
        assert_eq!(parse_dev("-1:3"), None);
        assert_eq!(parse_size_bytes("524288\n"), Some(256 << 20));
        assert_eq!(parse_size_bytes("0\n"), Some(0));
        assert_eq!(parse_size_bytes("18446744073709551615"), None);
        assert_eq!(parse_state("live\n"), CtrlState::Live);
        assert_eq!(parse_state("connecting\n"), CtrlState::Connecting);
        assert_eq!(parse_state("deleting (no IO)\n"), CtrlState::Deleting);
        assert_eq!(parse_state("new\n"), CtrlState::Other("new".into()));
        let a = parse_address("traddr=127.0.0.1,trsvcid=4420,src_addr=127.0.0.1\n");
        assert_eq!(a["traddr"], "127.0.0.1");
        assert_eq!(a["trsvcid"], "4420");
        assert_eq!(a["src_addr"], "127.0.0.1");
        assert!(parse_address("").is_empty());
    }

    proptest! {
        #[test]
        fn sysfs_parsers_never_panic(s in any::<String>()) {
            let _ = parse_name(&s);
            let _ = parse_dev(&s);
            let _ = parse_size_bytes(&s);
            let _ = parse_state(&s);
            let _ = parse_address(&s);
        }

        #[test]
        fn names_round_trip(a in 0u32..100_000, b in 0u32..100_000, n in 1u32..1000) {
            prop_assert_eq!(parse_name(&format!("nvme{a}")), Some(NvmeName::Controller(a)));
            prop_assert_eq!(parse_name(&format!("nvme{a}n{n}")), Some(NvmeName::Namespace { instance: a, ns: n }));
            prop_assert_eq!(
                parse_name(&format!("nvme{a}c{b}n{n}")),
                Some(NvmeName::PathNamespace { subsys: a, ctrl: b, ns: n })
            );
        }

        #[test]
        fn name_like_strings_never_panic(s in "nvme(-subsys)?[0-9c n]{0,12}") {
            let _ = parse_name(&s).and_then(NvmeName::block_device);
        }
    }
}
