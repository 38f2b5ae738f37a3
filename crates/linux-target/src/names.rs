//! Validated names and values: every one is checked here before it can
//! reach a command line, so nothing a caller passes (a volume ID, a
//! StorageClass parameter, a Node annotation) can carry shell syntax or
//! name something outside the driver's own volumes.
//!
//! Each alphabet is deliberately narrower than what LVM or the kernel
//! accepts: anything else is refused, not escaped.

use std::fmt;
use std::net::IpAddr;

use routeros::ValidationError;

/// Longest volume (or snapshot) name: its LVM tags (`rds-csi.snapshot-of=`
/// and the name) and its device-mapper name (`<vg>-<lv>`, dashes doubled,
/// at most 127 bytes) must fit. Provisioner-made names are 40 characters.
pub const MAX_VOLUME_NAME_LEN: usize = 100;
/// Longest volume group or thin pool name accepted.
pub const MAX_LVM_NAME_LEN: usize = 40;
/// NVMe limits an NQN to 223 bytes.
pub const MAX_NQN_LEN: usize = 223;
/// Longest device-mapper name (the kernel's limit less the final NUL).
const MAX_DM_NAME_LEN: usize = 127;
/// Largest size accepted: LVM's own limit is 8 EiB; anything near it is a
/// mistake.
pub const MAX_SIZE_BYTES: u64 = 1 << 60;

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// Parts of a name LVM keeps for its own hidden volumes.
const LVM_RESERVED: &[&str] = &[
    "_cdata", "_cmeta", "_corig", "_cpool", "_cvol", "_iorig", "_mimage", "_mlog", "_pmspare",
    "_rimage", "_rmeta", "_tdata", "_tmeta", "_vdata", "_vorigin", "_wcorig",
];

/// Checks a name against the common alphabet and LVM's reserved words.
fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    let err = |r: &str| Err(ValidationError::new(what, s, r));
    if s.is_empty() {
        return err("must not be empty");
    }
    if s.len() > max {
        return err(&format!("longer than {max} characters"));
    }
    if !s.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return err("must start with a letter or digit");
    }
    if !s.chars().all(is_name_char) {
        return err("only letters, digits, '-', '_' and '.' are allowed");
    }
    if s.starts_with("snapshot") || s.starts_with("pvmove") {
        return err("LVM reserves names starting with 'snapshot' or 'pvmove'");
    }
    if let Some(word) = LVM_RESERVED.iter().find(|w| s.contains(*w)) {
        return err(&format!("LVM reserves names containing {word:?}"));
    }
    Ok(())
}

macro_rules! text_newtype {
    ($($name:ident),+) => {$(
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}

text_newtype!(VolumeName, VgName, PoolName, Nqn, NqnPrefix);

/// A volume or snapshot: its logical volume's name, which is the driver's
/// volume (or snapshot) ID, e.g. `pvc-<uuid>` or `snap-<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        check_name("volume id", s, MAX_VOLUME_NAME_LEN)?;
        Ok(VolumeName(s.to_string()))
    }
}

/// An LVM volume group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VgName(String);

impl VgName {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        check_name("volume group", s, MAX_LVM_NAME_LEN)?;
        Ok(VgName(s.to_string()))
    }
}

/// A thin pool (a logical volume of the volume group).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolName(String);

impl PoolName {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        check_name("thin pool", s, MAX_LVM_NAME_LEN)?;
        Ok(PoolName(s.to_string()))
    }
}

/// The length of the device-mapper name LVM gives `vg/lv`: `vg-lv`, with
/// every dash inside either name doubled.
pub(crate) fn dm_name_len(vg: &VgName, lv: &VolumeName) -> usize {
    let escaped = |s: &str| s.len() + s.matches('-').count();
    escaped(vg.as_str()) + 1 + escaped(lv.as_str())
}

/// Refuses a volume whose device-mapper name would be too long for the
/// kernel in this volume group.
pub(crate) fn check_fits(vg: &VgName, lv: &VolumeName) -> Result<(), ValidationError> {
    if dm_name_len(vg, lv) > MAX_DM_NAME_LEN {
        return Err(ValidationError::new(
            "volume id",
            lv.as_str(),
            format!("too long for a logical volume in volume group {vg:?}"),
        ));
    }
    Ok(())
}

/// Checks the `nqn.yyyy-mm.` start the NVMe specification requires.
fn has_dated_prefix(s: &str) -> bool {
    let b = s.as_bytes();
    s.len() > 12
        && s.starts_with("nqn.")
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'.'
}

/// An NVMe Qualified Name: a volume's subsystem or a node's host NQN.
/// `nqn.yyyy-mm.<reverse domain>:<anything>` as the NVMe specification
/// forms it (`nqn.2014-08.org.nvmexpress:uuid:<uuid>` included), at most
/// 223 bytes, of letters, digits, `-`, `_`, `.` and `:` only: it becomes a
/// configfs directory name and a shell word.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let err = |r: &str| Err(ValidationError::new("nqn", s, r));
        if s.len() > MAX_NQN_LEN {
            return err("longer than 223 bytes");
        }
        if !has_dated_prefix(s) {
            return err("must start with 'nqn.' and a date, 'nqn.yyyy-mm.'");
        }
        if !s.chars().all(|c| is_name_char(c) || c == ':') {
            return err("only letters, digits, '-', '_', '.' and ':' are allowed");
        }
        if !s.contains(':') {
            return err("must have a ':' after the naming authority");
        }
        Ok(Nqn(s.to_string()))
    }
}

/// What a volume's NQN starts with; the volume's name follows. The RDS
/// driver's is `nqn.2000-02.com.mikrotik:`, kept for the Linux target so a
/// volume's NQN does not depend on where it lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NqnPrefix(String);

/// The NQN prefix of volumes on an RDS, and the default here.
pub const DEFAULT_NQN_PREFIX: &str = "nqn.2000-02.com.mikrotik:";

impl NqnPrefix {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        // Valid with the longest volume name after it, and ends at a ':'
        // or '.' so volume names cannot run into the authority.
        Nqn::new(&format!("{s}x")).map_err(|e| ValidationError::new("nqn prefix", s, e.reason))?;
        if s.len() + MAX_VOLUME_NAME_LEN > MAX_NQN_LEN {
            return Err(ValidationError::new(
                "nqn prefix",
                s,
                "too long for a volume name after it",
            ));
        }
        if !s.ends_with(':') {
            return Err(ValidationError::new("nqn prefix", s, "must end with ':'"));
        }
        Ok(NqnPrefix(s.to_string()))
    }

    /// The NQN of a volume.
    pub fn nqn(&self, volume: &VolumeName) -> Nqn {
        // Both parts are validated and their lengths bounded together.
        Nqn(format!("{}{}", self.0, volume))
    }

    /// The volume an NQN under this prefix names, if it is one.
    pub fn volume(&self, nqn: &str) -> Option<VolumeName> {
        VolumeName::new(nqn.strip_prefix(&self.0)?).ok()
    }
}

impl Default for NqnPrefix {
    fn default() -> Self {
        NqnPrefix(DEFAULT_NQN_PREFIX.to_string())
    }
}

/// The nvmet port volumes are exported on: its configfs ID and TCP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// The port's directory under `ports/` (any number; 1 by convention).
    pub id: u16,
    /// `addr_traddr`; its family gives `addr_adrfam`.
    pub addr: IpAddr,
    /// `addr_trsvcid`: the TCP port, 4420 by convention.
    pub service: u16,
}

impl PortSpec {
    pub fn new(id: u16, addr: IpAddr, service: u16) -> Result<Self, ValidationError> {
        if service == 0 {
            return Err(ValidationError::new(
                "nvme tcp port",
                "0",
                "must be 1..=65535",
            ));
        }
        if addr.is_unspecified() || addr.is_multicast() {
            return Err(ValidationError::new(
                "nvme tcp address",
                &addr.to_string(),
                "must be a unicast address the target listens on",
            ));
        }
        Ok(PortSpec { id, addr, service })
    }

    pub fn adrfam(&self) -> &'static str {
        if self.addr.is_ipv4() {
            "ipv4"
        } else {
            "ipv6"
        }
    }
}

/// Checks a volume size in bytes.
pub fn check_size(bytes: u64) -> Result<u64, ValidationError> {
    if bytes == 0 {
        return Err(ValidationError::new("size", "0", "must be at least 1 byte"));
    }
    if bytes > MAX_SIZE_BYTES {
        return Err(ValidationError::new(
            "size",
            &bytes.to_string(),
            "larger than 1 EiB",
        ));
    }
    Ok(bytes)
}

/// An absolute path made of name characters only: the configfs root.
pub(crate) fn check_path(what: &'static str, s: &str) -> Result<(), ValidationError> {
    let err = |r: &str| Err(ValidationError::new(what, s, r));
    if !s.starts_with('/') || s.len() > 256 {
        return err("must be an absolute path of at most 256 bytes");
    }
    for part in s.split('/').skip(1) {
        if part.is_empty() || part == "." || part == ".." || !part.chars().all(is_name_char) {
            return err("components of letters, digits, '-', '_' and '.' only; no '..'");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn provisioner_volume_and_snapshot_ids_are_volume_names() {
        for ok in [
            "pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            "snap-1",
            "a",
            "v.1_x",
        ] {
            assert!(VolumeName::new(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn shell_syntax_and_lvm_reserved_names_are_refused() {
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a;b",
            "a'b",
            "a$b",
            "a/b",
            "a\nb",
            "snapshot1",
            "pvmove0",
            "x_tmeta",
            "x_rimage_0",
            "ä",
            &"x".repeat(101),
        ] {
            assert!(VolumeName::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(VgName::new("vg0").is_ok());
        assert!(PoolName::new("thin_tdata").is_err());
    }

    #[test]
    fn a_name_too_long_for_device_mapper_is_refused_in_its_volume_group() {
        let vg = VgName::new("data-vg").unwrap();
        let fits = VolumeName::new(&"a".repeat(100)).unwrap();
        assert!(check_fits(&vg, &fits).is_ok());
        // 99 dashes-and-letters: every dash doubles in the dm name.
        let dashes = VolumeName::new(&format!("a{}", "-".repeat(98))).unwrap();
        assert!(check_fits(&vg, &dashes).is_err());
    }

    #[test]
    fn nqns_follow_the_nvme_form() {
        for ok in [
            "nqn.2000-02.com.mikrotik:pvc-1",
            "nqn.2014-08.org.nvmexpress:uuid:0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
            "nqn.2024-01.io.example:node-a",
        ] {
            assert!(Nqn::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "iqn.2000-02.com.x:y",
            "nqn.x",
            "nqn.20000-02.com.x:y",
            "nqn.2000-02.com.x",
            "nqn.2000-02.com.x:a b",
            "nqn.2000-02.com.x:a/b",
            "nqn.2000-02.com.x:a'b",
            &format!("nqn.2000-02.com.x:{}", "a".repeat(210)),
        ] {
            assert!(Nqn::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn a_volume_nqn_is_the_prefix_and_the_name_and_reads_back() {
        let prefix = NqnPrefix::default();
        let v = VolumeName::new("pvc-1").unwrap();
        let nqn = prefix.nqn(&v);
        assert_eq!(nqn.as_str(), "nqn.2000-02.com.mikrotik:pvc-1");
        assert_eq!(prefix.volume(nqn.as_str()), Some(v));
        assert_eq!(prefix.volume("nqn.2000-02.com.other:pvc-1"), None);
        assert!(NqnPrefix::new("nqn.2000-02.com.mikrotik").is_err());
        assert!(NqnPrefix::new("nqn.2000-02.com.example:csi:").is_ok());
    }

    #[test]
    fn sizes_and_ports_are_checked() {
        assert!(check_size(0).is_err());
        assert!(check_size(MAX_SIZE_BYTES + 1).is_err());
        assert_eq!(check_size(1 << 30).unwrap(), 1 << 30);
        let addr: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(PortSpec::new(1, addr, 0).is_err());
        assert!(PortSpec::new(1, "0.0.0.0".parse().unwrap(), 4420).is_err());
        assert_eq!(
            PortSpec::new(1, "fd00::1".parse().unwrap(), 4420)
                .unwrap()
                .adrfam(),
            "ipv6"
        );
        assert!(check_path("configfs", "/sys/kernel/config/nvmet").is_ok());
        for bad in ["sys", "/a/../b", "/a//b", "/a b", "/a/"] {
            assert!(check_path("configfs", bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn no_accepted_name_or_nqn_holds_shell_syntax(s in any::<String>()) {
            let clean = |t: &str| t.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c));
            if let Ok(v) = VolumeName::new(&s) { prop_assert!(clean(v.as_str())); }
            if let Ok(n) = Nqn::new(&s) { prop_assert!(clean(n.as_str())); }
            if let Ok(p) = NqnPrefix::new(&s) { prop_assert!(clean(p.as_str())); }
        }
    }
}
