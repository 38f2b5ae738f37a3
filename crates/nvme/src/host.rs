//! Names: NQNs, the configured NQN prefix, and this host's NVMe identity.
//!
//! Lesson 18: images that bake `/etc/nvme/hostnqn` give every node the same
//! identity, and the target then mixes their sessions. The node refuses to
//! start on a missing host NQN or on one of the values known to be shared.

use std::path::{Path, PathBuf};

/// Longest NQN the NVMe specification allows.
pub const MAX_NQN_LEN: usize = 223;

/// Checks an NQN the driver is about to put on a command line: `nqn.` then
/// letters, digits, `-`, `_`, `.` and `:` only.
pub fn validate_nqn(s: &str) -> Result<(), String> {
    if !s.starts_with("nqn.") {
        return Err(format!("{:?} does not start with \"nqn.\"", trunc(s)));
    }
    if s.len() > MAX_NQN_LEN {
        return Err(format!("longer than {MAX_NQN_LEN} bytes"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
    {
        return Err(format!(
            "{:?} has characters other than letters, digits, '-', '_', '.' and ':'",
            trunc(s)
        ));
    }
    Ok(())
}

fn trunc(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The NQN prefix that marks this driver's subsystems, together with the
/// volume-ID prefix: a subsystem is the driver's only when its NQN is the
/// NQN prefix followed by a volume ID with the volume-ID prefix. Every
/// connect and disconnect checks it, so a subsystem of another driver, of
/// another installation with another volume-ID prefix, or a diskless node's
/// NVMe-oF root disk is never touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NqnPrefix {
    nqn: String,
    volume: String,
    /// The volume-ID prefixes of the other backends of the same driver
    /// (`lab2-pvc-`), whose subsystems are the driver's too.
    also: Vec<String>,
}

impl NqnPrefix {
    /// A prefix must name a naming authority and a separator
    /// (`nqn.2000-02.com.mikrotik:`): anything shorter, such as `nqn.`,
    /// would claim other vendors' subsystems.
    pub fn new(s: &str) -> Result<Self, String> {
        validate_nqn(s).map_err(|e| format!("NQN prefix {e}"))?;
        let Some((authority, _)) = s.split_once(':') else {
            return Err(format!(
                "NQN prefix {s:?} must include the naming authority and ':' (e.g. nqn.2000-02.com.mikrotik:)"
            ));
        };
        // nqn.yyyy-mm.reverse.domain
        let rest = &authority[4..];
        let date_ok = rest.len() > 8
            && rest.as_bytes()[..4].iter().all(u8::is_ascii_digit)
            && rest.as_bytes()[4] == b'-'
            && rest.as_bytes()[5..7].iter().all(u8::is_ascii_digit)
            && rest.as_bytes()[7] == b'.';
        if !date_ok {
            return Err(format!(
                "NQN prefix {s:?} must start with nqn.yyyy-mm.<reverse domain>:"
            ));
        }
        Ok(NqnPrefix {
            nqn: s.to_string(),
            volume: String::new(),
            also: Vec::new(),
        })
    }

    /// Also requires the volume ID (the part after the NQN prefix) to start
    /// with `volume_prefix` (the driver's `--volume-id-prefix`).
    pub fn with_volume_prefix(mut self, volume_prefix: &str) -> Result<Self, String> {
        if volume_prefix.is_empty() {
            return Err("the volume-ID prefix must not be empty".into());
        }
        validate_nqn(&format!("{}{volume_prefix}", self.nqn))
            .map_err(|e| format!("volume-ID prefix {volume_prefix:?}: NQN {e}"))?;
        self.volume = volume_prefix.to_string();
        Ok(self)
    }

    /// Also owns the volumes whose ID starts with `volume_prefix`: another
    /// backend's of the same driver.
    pub fn also_owning(mut self, volume_prefix: &str) -> Result<Self, String> {
        let other = self.clone().with_volume_prefix(volume_prefix)?;
        self.also.push(other.volume);
        Ok(self)
    }

    /// The NQN prefix alone; a volume's NQN is this and the volume ID.
    pub fn as_str(&self) -> &str {
        &self.nqn
    }

    /// What an owned NQN starts with: the NQN prefix and a volume-ID
    /// prefix (several joined by " or ").
    pub fn owned_prefix(&self) -> String {
        std::iter::once(&self.volume)
            .chain(&self.also)
            .map(|v| format!("{}{v}", self.nqn))
            .collect::<Vec<_>>()
            .join(" or ")
    }

    /// Whether this driver owns the subsystem `nqn`.
    pub fn owns(&self, nqn: &str) -> bool {
        let Some(id) = nqn.strip_prefix(self.nqn.as_str()) else {
            return false;
        };
        std::iter::once(&self.volume).chain(&self.also).any(|v| {
            id.strip_prefix(v.as_str())
                .is_some_and(|rest| !rest.is_empty())
        })
    }

    /// The NQN the controller gives a volume: the prefix and the volume ID.
    pub fn volume_nqn(&self, volume_id: &str) -> String {
        format!("{}{volume_id}", self.nqn)
    }
}

/// Host NQN values that are known to be shared by many machines. The UUIDs
/// are the all-zero one and SMBIOS product UUIDs that cheap boards ship
/// identically (nvme-cli's `gen-hostnqn` derives the host NQN from it).
const SHARED_UUIDS: &[&str] = &[
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "03000200-0400-0500-0006-000700080009",
    "00020003-0004-0005-0006-000700080009",
    "12345678-1234-5678-90ab-cddeefaabbcc",
];

/// The well-known discovery NQN is not a host identity.
const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// This host's NVMe identity, passed to every `nvme connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostIdentity {
    pub nqn: String,
    /// The host ID; nvme-cli picks one when absent.
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum HostIdError {
    #[error("host NQN file {}: {source}; every node needs its own host NQN (write one with `nvme gen-hostnqn > {}`, or set --host-nqn-file)", path.display(), path.display())]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("host NQN in {}: {reason}", path.display())]
    BadNqn { path: PathBuf, reason: String },
    #[error("host ID in {}: {reason}", path.display())]
    BadId { path: PathBuf, reason: String },
}

/// Whether `s` is a UUID in its canonical 8-4-4-4-12 hex form.
fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// A UUID that is a well-known shared value or a single repeated digit.
fn is_shared_uuid(u: &str) -> bool {
    let lower = u.to_ascii_lowercase();
    if SHARED_UUIDS.contains(&lower.as_str()) {
        return true;
    }
    let mut digits = lower.chars().filter(|c| *c != '-');
    let first = digits.next();
    digits.all(|c| Some(c) == first)
}

/// Checks the text of a host NQN file; returns the NQN.
pub fn check_host_nqn(text: &str) -> Result<String, String> {
    let nqn = text.trim();
    if nqn.is_empty() {
        return Err("the file is empty".into());
    }
    if nqn.lines().count() > 1 {
        return Err("the file holds more than one line".into());
    }
    if !nqn.starts_with("nqn.") || nqn.len() > MAX_NQN_LEN {
        return Err(format!(
            "{:?} is not an NQN (nqn.… up to {MAX_NQN_LEN} bytes)",
            trunc(nqn)
        ));
    }
    if !nqn.chars().all(|c| c.is_ascii_graphic()) {
        return Err(format!("{:?} has spaces or control characters", trunc(nqn)));
    }
    if nqn == DISCOVERY_NQN {
        return Err("the discovery NQN is not a host identity".into());
    }
    if let Some(uuid) = nqn.rsplit(':').next().filter(|u| is_uuid(u)) {
        if is_shared_uuid(uuid) {
            return Err(format!(
                "{nqn} is a placeholder shared by many machines (duplicate host NQNs make the target mix sessions; see docs/safety.md#duplicate-host-nqns); generate a unique one per node"
            ));
        }
    }
    Ok(nqn.to_string())
}

/// Checks the text of a host ID file; returns the ID.
pub fn check_host_id(text: &str) -> Result<String, String> {
    let id = text.trim();
    if !is_uuid(id) {
        return Err(format!("{:?} is not a UUID", trunc(id)));
    }
    if is_shared_uuid(id) {
        return Err(format!("{id} is a placeholder shared by many machines"));
    }
    Ok(id.to_string())
}

impl HostIdentity {
    /// Reads and checks the host NQN (required) and host ID (optional: a
    /// missing file means nvme-cli chooses).
    pub fn load(nqn_file: &Path, id_file: &Path) -> Result<Self, HostIdError> {
        let text = std::fs::read_to_string(nqn_file).map_err(|source| HostIdError::Missing {
            path: nqn_file.to_path_buf(),
            source,
        })?;
        let nqn = check_host_nqn(&text).map_err(|reason| HostIdError::BadNqn {
            path: nqn_file.to_path_buf(),
            reason,
        })?;
        let id = match std::fs::read_to_string(id_file) {
            // An empty file is as good as none: nvme-cli then picks.
            Ok(text) if text.trim().is_empty() => None,
            Ok(text) => Some(check_host_id(&text).map_err(|reason| HostIdError::BadId {
                path: id_file.to_path_buf(),
                reason,
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(HostIdError::BadId {
                    path: id_file.to_path_buf(),
                    reason: e.to_string(),
                })
            }
        };
        Ok(HostIdentity { nqn, id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const GOOD: &str = "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    #[test]
    fn a_generated_host_nqn_is_accepted() {
        assert_eq!(check_host_nqn(&format!("{GOOD}\n")).unwrap(), GOOD);
        assert_eq!(
            check_host_nqn("nqn.2024-01.io.example:node-7").unwrap(),
            "nqn.2024-01.io.example:node-7"
        );
    }

    #[test]
    fn placeholder_and_shared_host_nqns_are_refused() {
        for bad in [
            "",
            "\n",
            "nqn.2014-08.org.nvmexpress:uuid:00000000-0000-0000-0000-000000000000",
            "nqn.2014-08.org.nvmexpress:uuid:03000200-0400-0500-0006-000700080009",
            "nqn.2014-08.org.nvmexpress:uuid:FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "nqn.2014-08.org.nvmexpress:uuid:11111111-1111-1111-1111-111111111111",
            "nqn.2014-08.org.nvmexpress.discovery",
            "hostnqn",
            "nqn.a b",
            "nqn.a\nnqn.b",
        ] {
            assert!(check_host_nqn(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_missing_host_nqn_file_stops_the_node_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let err = HostIdentity::load(&dir.path().join("hostnqn"), &dir.path().join("hostid"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("nvme gen-hostnqn"), "{err}");
        assert!(err.contains("hostnqn"), "{err}");
    }

    #[test]
    fn the_host_id_is_optional_but_checked_when_present() {
        let dir = tempfile::tempdir().unwrap();
        let nqn = dir.path().join("hostnqn");
        let id = dir.path().join("hostid");
        std::fs::write(&nqn, GOOD).unwrap();
        assert_eq!(HostIdentity::load(&nqn, &id).unwrap().id, None);
        std::fs::write(&id, "1b4e28ba-2fa1-11d2-883f-0016d3cca427\n").unwrap();
        assert_eq!(
            HostIdentity::load(&nqn, &id).unwrap().id.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        std::fs::write(&id, "\n").unwrap();
        assert_eq!(HostIdentity::load(&nqn, &id).unwrap().id, None);
        std::fs::write(&id, "00000000-0000-0000-0000-000000000000").unwrap();
        assert!(HostIdentity::load(&nqn, &id).is_err());
        std::fs::write(&id, "not-a-uuid").unwrap();
        assert!(HostIdentity::load(&nqn, &id).is_err());
    }

    #[test]
    fn the_prefix_owns_only_longer_names_that_start_with_it() {
        let p = NqnPrefix::new("nqn.2000-02.com.mikrotik:").unwrap();
        assert!(p.owns("nqn.2000-02.com.mikrotik:pvc-1"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik:"));
        assert!(!p.owns("nqn.2014-08.org.nvmexpress:uuid:1"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik"));
        assert_eq!(p.volume_nqn("pvc-1"), "nqn.2000-02.com.mikrotik:pvc-1");
    }

    #[test]
    fn other_backends_volumes_are_owned_too_and_nothing_else() {
        let p = NqnPrefix::new("nqn.2000-02.com.mikrotik:")
            .unwrap()
            .with_volume_prefix("pvc-")
            .unwrap()
            .also_owning("lab2-pvc-")
            .unwrap();
        assert!(p.owns("nqn.2000-02.com.mikrotik:pvc-1"));
        assert!(p.owns("nqn.2000-02.com.mikrotik:lab2-pvc-1"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik:lab3-pvc-1"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik:lab2-pvc-"));
        assert_eq!(
            p.owned_prefix(),
            "nqn.2000-02.com.mikrotik:pvc- or nqn.2000-02.com.mikrotik:lab2-pvc-"
        );
        assert!(p.also_owning("").is_err());
    }

    #[test]
    fn only_names_with_the_volume_id_prefix_are_owned() {
        let p = NqnPrefix::new("nqn.2000-02.com.mikrotik:")
            .unwrap()
            .with_volume_prefix("pvc-")
            .unwrap();
        assert!(p.owns("nqn.2000-02.com.mikrotik:pvc-1"));
        // Another installation on the same RDS, or a disk made by hand.
        assert!(!p.owns("nqn.2000-02.com.mikrotik:other-1"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik:pvc-"));
        assert!(!p.owns("nqn.2000-02.com.mikrotik:"));
        // A diskless node's root disk.
        assert!(!p.owns("nqn.2014-08.org.nvmexpress:uuid:1"));
        assert_eq!(p.owned_prefix(), "nqn.2000-02.com.mikrotik:pvc-");
        assert_eq!(p.volume_nqn("pvc-1"), "nqn.2000-02.com.mikrotik:pvc-1");
        let base = NqnPrefix::new("nqn.2000-02.com.mikrotik:").unwrap();
        assert!(base.clone().with_volume_prefix("").is_err());
        assert!(base.with_volume_prefix("pvc /").is_err());
    }

    #[test]
    fn prefixes_that_would_claim_other_vendors_are_refused() {
        for bad in [
            "",
            "nqn.",
            "nqn.2000-02.com.mikrotik",
            "nqn.x:",
            "iqn.2000-02.com:",
            "nqn.2000-02.com.mikrotik: ",
        ] {
            assert!(NqnPrefix::new(bad).is_err(), "{bad:?}");
        }
        assert!(NqnPrefix::new("nqn.2000-02.com.mikrotik:csi-").is_ok());
    }

    proptest! {
        #[test]
        fn host_nqn_checks_never_panic(s in any::<String>()) {
            let _ = check_host_nqn(&s);
            let _ = check_host_id(&s);
            let _ = NqnPrefix::new(&s);
            let _ = validate_nqn(&s);
        }
    }
}
