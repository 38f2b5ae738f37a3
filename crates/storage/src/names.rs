//! The names every backend shares: volume (and snapshot) IDs, ID
//! prefixes and NVMe Qualified Names, each a validating newtype.
//!
//! Validation is deliberately narrower than any backend accepts: the
//! alphabet is one that means nothing inside a RouterOS command line or a
//! shell word, so a value that passed here can go on either without
//! escaping. Anything outside it is refused, never escaped.

/// Longest volume ID accepted. Kubernetes PV names are at most 253
/// characters but provisioner-made names are `pvc-<uuid>` (40).
pub const MAX_ID_LEN: usize = 128;
/// NVMe limits an NQN to 223 bytes.
pub const MAX_NQN_LEN: usize = 223;

/// Letters, digits, `-`, `_` and `.`.
pub fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'
}

/// An input that would not be safe or valid to send to a backend. Raised
/// before any command leaves the process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {value:?} is invalid: {reason}")]
pub struct ValidationError {
    pub what: &'static str,
    pub value: String,
    pub reason: String,
}

impl ValidationError {
    pub fn new(what: &'static str, value: &str, reason: impl Into<String>) -> Self {
        // Cap the echoed value so a hostile megabyte string does not end up
        // in logs and gRPC messages.
        let mut shown: String = value.chars().take(80).collect();
        if shown.len() < value.len() {
            shown.push('…');
        }
        ValidationError {
            what,
            value: shown,
            reason: reason.into(),
        }
    }
}

/// `as_str` and `Display` of validated text newtypes (a tuple struct over
/// a `String`): the text exactly as validated. Exported for the backend
/// crates' own names.
#[macro_export]
macro_rules! text {
    ($($name:ident),+) => {$(
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )+};
}
crate::text!(VolumeId, IdPrefix, Nqn);

/// A volume's or snapshot's ID: also its name on the backend (the RDS
/// disk slot, the LVM volume name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(String);

impl VolumeId {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let err = |r: &str| Err(ValidationError::new("volume id", s, r));
        if s.is_empty() {
            return err("must not be empty");
        }
        if s.len() > MAX_ID_LEN {
            return err(&format!("longer than {MAX_ID_LEN} characters"));
        }
        if !s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) {
            return err("must start with a letter or digit");
        }
        if !s.chars().all(is_name_char) {
            return err("only letters, digits, '-', '_' and '.' are allowed");
        }
        Ok(VolumeId(s.to_string()))
    }
}

/// The start of the IDs of the volumes a driver manages (listing, the
/// orphan sweep). Dots are refused because a backend may match it as a
/// regular expression (RouterOS's `~`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPrefix(String);

impl IdPrefix {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        if s.len() > MAX_ID_LEN {
            return Err(ValidationError::new("volume id prefix", s, "too long"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ValidationError::new(
                "volume id prefix",
                s,
                "only letters, digits, '-' and '_' are allowed",
            ));
        }
        Ok(IdPrefix(s.to_string()))
    }

    pub fn matches(&self, id: &str) -> bool {
        id.starts_with(&self.0)
    }
}

/// An NVMe Qualified Name: a volume's subsystem or a host's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nqn(String);

impl Nqn {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let err = |r: &str| Err(ValidationError::new("nqn", s, r));
        if !s.starts_with("nqn.") {
            return err("must start with 'nqn.'");
        }
        if s.len() > MAX_NQN_LEN {
            return err("longer than 223 bytes");
        }
        if !s.chars().all(|c| is_name_char(c) || c == ':') {
            return err("only letters, digits, '-', '_', '.' and ':' are allowed");
        }
        Ok(Nqn(s.to_string()))
    }

    /// The NQN for a volume under a prefix such as
    /// `nqn.2000-02.com.mikrotik:` (the existing driver's convention).
    pub fn for_volume(prefix: &str, id: &VolumeId) -> Result<Self, ValidationError> {
        Nqn::new(&format!("{prefix}{id}"))
    }
}
