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
use sha2::{Digest, Sha256};

/// Longest volume (or snapshot) ID: the driver's own limit. An ID that
/// cannot be a logical volume's name as it is (too long for LVM or
/// device-mapper in its volume group, or a name LVM reserves) gets a
/// derived one ([`LvName::of`]).
pub const MAX_VOLUME_NAME_LEN: usize = storage::names::MAX_ID_LEN;
/// Longest volume group or thin pool name accepted.
pub const MAX_LVM_NAME_LEN: usize = 40;
/// NVMe limits an NQN to 223 bytes.
pub const MAX_NQN_LEN: usize = 223;
/// Most bytes of a volume group's and a logical volume's names together,
/// each with its dashes doubled as in their device-mapper name: lvm2
/// 2.03.16 refuses a thin volume when `<vg>/<lv>` and 2 more reach its
/// NAME_LEN of 128 ("LV name \"vg/lv\" length 128 is not supported" for
/// 10 and 115 letters; checked in the guest tier). Counting the dashes
/// doubled is the stricter reading, and keeps device-mapper's own 127
/// bytes for `<vg>-<lv>` too.
pub const MAX_VG_LV_LEN: usize = 124;
/// Longest device-mapper name (the kernel's DM_NAME_LEN, 128, less the
/// final NUL; checked in the guest tier).
pub const MAX_DM_NAME_LEN: usize = 127;
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

/// Checks a name against the common alphabet.
fn check_chars(what: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
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
    Ok(())
}

/// Checks a name against the common alphabet and LVM's reserved words.
fn check_name(what: &'static str, s: &str, max: usize) -> Result<(), ValidationError> {
    check_chars(what, s, max)?;
    let err = |r: &str| Err(ValidationError::new(what, s, r));
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

text_newtype!(VolumeName, LvName, VgName, PoolName, Nqn, NqnPrefix);

/// A volume or snapshot ID, e.g. `pvc-<uuid>` or `snap-<uuid>`: what the
/// driver names it by, its NQN's last part and its records' values. Any
/// ID the driver takes ([`storage::VolumeId`]'s alphabet, at most 128
/// characters); its logical volume is [`LvName::of`] it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeName(String);

impl VolumeName {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        check_chars("volume id", s, MAX_VOLUME_NAME_LEN)?;
        Ok(VolumeName(s.to_string()))
    }
}

/// The name of a volume's logical volume: its ID where LVM takes that
/// name in the volume group (the two names together at most 125
/// characters, `<vg>-<id>` with every dash doubled within device-mapper's
/// 127 bytes, and no name LVM reserves), otherwise a
/// derived one, `<head>+<hash>`: at most the first 48 characters of the ID
/// (each `_` made `.`, so no reserved word can appear; a head LVM would
/// still refuse, `snapshot...` or `pvmove...`, gets a `v` before it), a
/// `+` and the first 16 hex digits of the SHA-256 of the whole ID. IDs
/// never hold a `+`, so a derived name is never another volume's ID; the
/// full ID is kept on the volume as its `rds-csi.id=` tag. The mapping
/// depends on the ID and the volume group's name only: it must never
/// change, or volumes already made would no longer be found.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LvName(String);

/// Characters of the ID a derived name keeps at most.
const HEAD_LEN: usize = 48;
/// Hex digits of the hash in a derived name.
const HASH_LEN: usize = 16;

impl LvName {
    /// The logical volume of volume `id` in volume group `vg`.
    pub fn of(vg: &VgName, id: &VolumeName) -> LvName {
        let verbatim = check_name("volume id", id.as_str(), MAX_VOLUME_NAME_LEN).is_ok()
            && fits(vg.as_str(), id.as_str());
        if verbatim {
            return LvName(id.0.clone());
        }
        let digest = Sha256::digest(id.as_str().as_bytes());
        let hash: String = digest
            .iter()
            .flat_map(|b| [b >> 4, b & 0xf])
            .take(HASH_LEN)
            .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
            .collect();
        let mut head: String = id
            .as_str()
            .chars()
            .map(|c| if c == '_' { '.' } else { c })
            .collect();
        if head.starts_with("snapshot") || head.starts_with("pvmove") {
            head.insert(0, 'v');
        }
        // Room for the head: LVM's limit less the volume group and
        // `+<hash>`; a volume group name is at most 40 characters, so at
        // least 28 bytes are left even when all but one are dashes.
        let room = MAX_VG_LV_LEN - escaped_len(vg.as_str()) - 1 - HASH_LEN;
        let mut used = 0;
        let head: String = head
            .chars()
            .take(HEAD_LEN)
            .take_while(|&c| {
                used += if c == '-' { 2 } else { 1 };
                used <= room
            })
            .collect();
        LvName(format!("{head}+{hash}"))
    }

    /// A derived name: the ID is not the name, and is only in the tag.
    pub fn is_derived(&self) -> bool {
        self.0.contains('+')
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

/// Whether LVM takes `lv` as a name in `vg` (and device-mapper their
/// `<vg>-<lv>`).
fn fits(vg: &str, lv: &str) -> bool {
    escaped_len(vg) + escaped_len(lv) <= MAX_VG_LV_LEN && dm_name_len(vg, lv) <= MAX_DM_NAME_LEN
}

/// `s` with every dash doubled, as device-mapper names escape them.
fn escaped_len(s: &str) -> usize {
    s.len() + s.matches('-').count()
}

/// The length of the device-mapper name LVM gives `vg/lv`: `vg-lv`, with
/// every dash inside either name doubled.
pub(crate) fn dm_name_len(vg: &str, lv: &str) -> usize {
    escaped_len(vg) + 1 + escaped_len(lv)
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
    fn shell_syntax_and_overlong_ids_are_refused() {
        for bad in [
            "",
            "-x",
            ".x",
            "a b",
            "a;b",
            "a'b",
            "a$b",
            "a/b",
            "a+b",
            "a\nb",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(VolumeName::new(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(VolumeName::new(&"x".repeat(128)).is_ok());
        assert!(VgName::new("vg0").is_ok());
        assert!(PoolName::new("thin_tdata").is_err());
        assert!(VgName::new("snapshots").is_err());
    }

    fn lv(vg: &str, id: &str) -> LvName {
        LvName::of(&VgName::new(vg).unwrap(), &VolumeName::new(id).unwrap())
    }

    #[test]
    fn an_id_lvm_takes_is_its_own_logical_volume_name() {
        for id in ["pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3", "snap-1", "a"] {
            let n = lv("vg0", id);
            assert_eq!(n.as_str(), id);
            assert!(!n.is_derived());
        }
        // The longest LVM takes: `vg0` and 121 characters are 124.
        assert!(!lv("vg0", &"a".repeat(121)).is_derived());
        assert!(lv("vg0", &"a".repeat(122)).is_derived());
        // Dashes count twice: 60 of them and a letter are 121 bytes.
        assert!(!lv("vg0", &format!("a{}", "-".repeat(60))).is_derived());
        assert!(lv("vg0", &format!("a{}", "-".repeat(61))).is_derived());
        // So do the volume group's: `data--vg` and 116 bytes are 124.
        assert!(!lv("data-vg", &"a".repeat(116)).is_derived());
        assert!(lv("data-vg", &"a".repeat(117)).is_derived());
    }

    #[test]
    fn a_long_or_reserved_id_gets_a_short_stable_derived_name() {
        let id = format!("sanity-{}", "x".repeat(121));
        let n = lv("vg0", &id);
        assert!(n.is_derived());
        assert_eq!(n, lv("vg0", &id), "the same every time");
        // Its head, `+`, and the start of the ID's SHA-256.
        assert_eq!(n.as_str().len(), 48 + 1 + 16);
        assert!(n.as_str().starts_with("sanity-xxx"), "{n}");
        assert_ne!(n, lv("vg0", &format!("sanity-{}y", "x".repeat(120))));
        assert_eq!(
            lv("vg0", "snapshot1").as_str(),
            "vsnapshot1+cd3b9ab2de079088",
            "a fixed mapping: volumes already made must be found again"
        );
        assert!(lv("vg0", "pvmove0").as_str().starts_with("vpvmove0+"));
        assert!(lv("vg0", "x_tmeta").as_str().starts_with("x.tmeta+"));
        // The head shrinks to what the volume group leaves.
        let vg = format!("v{}", "-".repeat(39));
        assert!(!lv(&vg, "a").is_derived());
        let n = lv(&vg, &format!("a{}", "-".repeat(127)));
        assert!(n.is_derived());
        assert!(fits(&vg, n.as_str()), "{n}");
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

        /// Every ID has a logical volume name LVM takes in every volume
        /// group: its own, or a derived one no ID can be.
        #[test]
        fn every_id_maps_to_a_name_lvm_and_device_mapper_take(
            vg in "[a-z][a-z0-9_.-]{0,39}".prop_filter("a volume group", |s| VgName::new(s).is_ok()),
            id in "[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}",
        ) {
            let vg = VgName::new(&vg).unwrap();
            let id = VolumeName::new(&id).unwrap();
            let n = LvName::of(&vg, &id);
            prop_assert!(check_name("lv", n.as_str().replace('+', ".").as_str(), MAX_VOLUME_NAME_LEN).is_ok(), "{}", n);
            prop_assert!(fits(vg.as_str(), n.as_str()), "{}", n);
            prop_assert!(n.is_derived() != (n.as_str() == id.as_str()));
            prop_assert!(VolumeName::new(n.as_str()).is_ok() != n.is_derived());
        }
    }
}
