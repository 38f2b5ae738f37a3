//! StorageClass parameters, volume context keys and size rules.
//!
//! Parameter names and defaults follow the existing Go driver for the same
//! hardware, so StorageClasses written for it keep working. Every value is
//! parsed and range-checked here, before anything talks to the RDS; an
//! unknown key (usually a typo such as `nvmeport`) is an error rather than
//! silently ignored.

use std::collections::HashMap;

use routeros::{CopyMethod, RosPath};

use crate::snapshot::VolumeLayout;

pub const GIB: u64 = 1 << 30;
pub const MIB: u64 = 1 << 20;
/// Smallest volume created: RouterOS and filesystems handle tiny disks badly.
pub const MIN_VOLUME_BYTES: u64 = GIB;

pub const P_NVME_ADDRESS: &str = "nvmeAddress";
pub const P_NVME_PORT: &str = "nvmePort";
pub const P_VOLUME_PATH: &str = "volumePath";
pub const P_CTRL_LOSS_TMO: &str = "ctrlLossTmo";
pub const P_RECONNECT_DELAY: &str = "reconnectDelay";
pub const P_KEEP_ALIVE_TMO: &str = "keepAliveTmo";
pub const P_MIGRATION_TIMEOUT: &str = "migrationTimeoutSeconds";
/// `flat` (default) or `subvolume`: see `docs/snapshots.md`.
pub const P_VOLUME_LAYOUT: &str = "volumeLayout";
/// How restores and clones into this class (StorageClass) or snapshots
/// (VolumeSnapshotClass) copy data on the flat layout: `copy-from` or `copy`.
pub const P_COPY_METHOD: &str = "copyMethod";
pub const P_FSTYPE: &str = "csi.storage.k8s.io/fstype";
pub const P_PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
pub const P_PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
pub const P_PV_NAME: &str = "csi.storage.k8s.io/pv/name";
/// Keys under this prefix are reserved by Kubernetes; the external
/// provisioner may add more of them over time, so they are accepted and
/// only the known ones are interpreted.
const RESERVED_PREFIX: &str = "csi.storage.k8s.io/";

/// Volume context keys read by the node plugin.
pub mod ctx {
    pub const NVME_ADDRESS: &str = "nvmeAddress";
    pub const NVME_PORT: &str = "nvmePort";
    pub const NQN: &str = "nqn";
    pub const VOLUME_PATH: &str = "volumePath";
    pub const FS_TYPE: &str = "fsType";
    pub const CTRL_LOSS_TMO: &str = "ctrlLossTmo";
    pub const RECONNECT_DELAY: &str = "reconnectDelay";
    pub const KEEP_ALIVE_TMO: &str = "keepAliveTmo";
    pub const MIGRATION_TIMEOUT: &str = "migrationTimeoutSeconds";
    pub const PVC_NAME: &str = super::P_PVC_NAME;
    pub const PVC_NAMESPACE: &str = super::P_PVC_NAMESPACE;
}

/// The `(namespace, name)` of the PVC a volume belongs to, from the keys
/// CreateVolume copied into its context: without them per-VM locking and
/// events never engage (docs/safety.md#losing-the-pvc). Both are needed: a name alone could
/// point into the wrong namespace.
pub fn pvc_of(context: &HashMap<String, String>) -> Option<(String, String)> {
    match (context.get(ctx::PVC_NAMESPACE), context.get(ctx::PVC_NAME)) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
            Some((ns.clone(), name.clone()))
        }
        _ => None,
    }
}

pub const DEFAULT_NVME_PORT: u16 = 4420;
pub const DEFAULT_CTRL_LOSS_TMO: i32 = 600;
pub const DEFAULT_RECONNECT_DELAY: u32 = 5;
pub const DEFAULT_KEEP_ALIVE_TMO: u32 = 5;
pub const DEFAULT_MIGRATION_TIMEOUT: u32 = 300;
pub const MIGRATION_TIMEOUT_RANGE: (u32, u32) = (30, 3600);

/// A parameter problem: which parameter and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("parameter {name:?}: {reason}")]
pub struct ParamError {
    pub name: String,
    pub reason: String,
}

fn perr(name: &str, reason: impl Into<String>) -> ParamError {
    ParamError {
        name: name.chars().take(64).collect(),
        reason: reason.into(),
    }
}

/// The filesystem types a volume may have: the data path's own type, so
/// the controller and the node can never disagree on the list.
pub use nvme::FsType;

/// Defaults that StorageClass parameters override.
#[derive(Debug, Clone)]
pub struct ParamDefaults {
    pub nvme_address: String,
    pub nvme_port: u16,
    pub volume_path: RosPath,
    /// Every `volumePath` must lie below this directory.
    pub volume_path_root: RosPath,
}

/// Parsed and validated StorageClass parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeParams {
    pub nvme_address: String,
    pub nvme_port: u16,
    pub volume_path: RosPath,
    pub ctrl_loss_tmo: i32,
    pub reconnect_delay: u32,
    pub keep_alive_tmo: u32,
    pub migration_timeout: u32,
    pub fs_type: Option<FsType>,
    pub pvc_name: Option<String>,
    pub pvc_namespace: Option<String>,
    pub layout: VolumeLayout,
    /// What a restore or clone into this class copies with, when the
    /// class says (`copyMethod`); else the best the source allows.
    pub copy_method: Option<CopyMethod>,
}

/// The `copyMethod` parameter: `copy-from` or `copy`; `subvolume` is the
/// subvolume layout's own method and only valid with it.
pub fn parse_copy_method(value: &str) -> Result<CopyMethod, ParamError> {
    CopyMethod::parse(value).ok_or_else(|| {
        perr(
            P_COPY_METHOD,
            format!("{value:?} is not a copy method; use copy-from, copy or subvolume"),
        )
    })
}

impl VolumeParams {
    pub fn parse(
        params: &HashMap<String, String>,
        defaults: &ParamDefaults,
    ) -> Result<Self, ParamError> {
        let mut p = VolumeParams {
            nvme_address: defaults.nvme_address.clone(),
            nvme_port: defaults.nvme_port,
            volume_path: defaults.volume_path.clone(),
            ctrl_loss_tmo: DEFAULT_CTRL_LOSS_TMO,
            reconnect_delay: DEFAULT_RECONNECT_DELAY,
            keep_alive_tmo: DEFAULT_KEEP_ALIVE_TMO,
            migration_timeout: DEFAULT_MIGRATION_TIMEOUT,
            fs_type: None,
            pvc_name: None,
            pvc_namespace: None,
            layout: VolumeLayout::Flat,
            copy_method: None,
        };
        // Sorted so the first error reported does not depend on hash order.
        let mut keys: Vec<&String> = params.keys().collect();
        keys.sort();
        for key in keys {
            let value = params[key].as_str();
            match key.as_str() {
                P_NVME_ADDRESS => p.nvme_address = parse_address(key, value)?,
                P_NVME_PORT => p.nvme_port = parse_port(key, value)?,
                P_VOLUME_PATH => {
                    p.volume_path = RosPath::new(value)
                        .and_then(|v| v.under(&defaults.volume_path_root))
                        .map_err(|e| perr(key, e.reason))?
                }
                P_CTRL_LOSS_TMO => p.ctrl_loss_tmo = parse_int(key, value, -1, 86_400)? as i32,
                P_RECONNECT_DELAY => p.reconnect_delay = parse_int(key, value, 1, 3600)? as u32,
                P_KEEP_ALIVE_TMO => p.keep_alive_tmo = parse_int(key, value, 1, 3600)? as u32,
                P_MIGRATION_TIMEOUT => {
                    // Clamped rather than refused, as the Go driver does, so
                    // existing classes with out-of-range values still work.
                    let v = parse_int(key, value, i64::MIN, i64::MAX)?;
                    let (lo, hi) = MIGRATION_TIMEOUT_RANGE;
                    p.migration_timeout = v.clamp(lo as i64, hi as i64) as u32;
                }
                P_FSTYPE => {
                    if !value.is_empty() {
                        p.fs_type = Some(FsType::parse(value).ok_or_else(|| {
                            perr(
                                key,
                                format!("unsupported filesystem {value:?}; use ext4 or xfs"),
                            )
                        })?)
                    }
                }
                P_VOLUME_LAYOUT => {
                    p.layout = VolumeLayout::parse(value).ok_or_else(|| {
                        perr(
                            key,
                            format!("{value:?} is not a layout; use flat or subvolume"),
                        )
                    })?
                }
                P_COPY_METHOD => p.copy_method = Some(parse_copy_method(value)?),
                P_PVC_NAME => p.pvc_name = Some(parse_k8s_name(key, value)?),
                P_PVC_NAMESPACE => p.pvc_namespace = Some(parse_k8s_name(key, value)?),
                k if k.starts_with(RESERVED_PREFIX) => {}
                k => {
                    return Err(perr(
                        k,
                        "unknown parameter; known: backend, nvmeAddress, nvmePort, volumePath, \
                         ctrlLossTmo, reconnectDelay, keepAliveTmo, migrationTimeoutSeconds, \
                         volumeLayout, copyMethod, csi.storage.k8s.io/fstype",
                    ))
                }
            }
        }
        // The subvolume layout copies by subvolume snapshots; the other
        // methods are for flat volumes, and `subvolume` needs the layout.
        match (p.layout, p.copy_method) {
            (VolumeLayout::Subvolume, Some(m)) if m != CopyMethod::Subvolume => {
                return Err(perr(
                    P_COPY_METHOD,
                    format!("{m} is for the flat layout; volumeLayout subvolume copies by subvolume snapshots"),
                ))
            }
            (VolumeLayout::Flat, Some(CopyMethod::Subvolume)) => {
                return Err(perr(
                    P_COPY_METHOD,
                    "subvolume needs volumeLayout: subvolume",
                ))
            }
            _ => {}
        }
        Ok(p)
    }

    /// The volume context handed to the node: the NVMe target and connect
    /// tuning, plus the PVC identity needed for per-VM locking and events.
    pub fn volume_context(&self, nqn: &str) -> HashMap<String, String> {
        let mut c = HashMap::new();
        c.insert(ctx::NVME_ADDRESS.into(), self.nvme_address.clone());
        c.insert(ctx::NVME_PORT.into(), self.nvme_port.to_string());
        c.insert(ctx::NQN.into(), nqn.to_string());
        c.insert(ctx::VOLUME_PATH.into(), self.volume_path.to_string());
        c.insert(ctx::CTRL_LOSS_TMO.into(), self.ctrl_loss_tmo.to_string());
        c.insert(
            ctx::RECONNECT_DELAY.into(),
            self.reconnect_delay.to_string(),
        );
        c.insert(ctx::KEEP_ALIVE_TMO.into(), self.keep_alive_tmo.to_string());
        c.insert(
            ctx::MIGRATION_TIMEOUT.into(),
            self.migration_timeout.to_string(),
        );
        if let Some(fs) = self.fs_type {
            c.insert(ctx::FS_TYPE.into(), fs.as_str().into());
        }
        if let Some(n) = &self.pvc_name {
            c.insert(ctx::PVC_NAME.into(), n.clone());
        }
        if let Some(n) = &self.pvc_namespace {
            c.insert(ctx::PVC_NAMESPACE.into(), n.clone());
        }
        c
    }
}

fn parse_int(name: &str, value: &str, min: i64, max: i64) -> Result<i64, ParamError> {
    let v: i64 = value
        .trim()
        .parse()
        .map_err(|_| perr(name, format!("{value:?} is not an integer")))?;
    if v < min || v > max {
        return Err(perr(name, format!("{v} is outside {min}..={max}")));
    }
    Ok(v)
}

fn parse_port(name: &str, value: &str) -> Result<u16, ParamError> {
    Ok(parse_int(name, value, 1, 65_535)? as u16)
}

/// An IPv4/IPv6 address or a DNS name. The value ends up on nvme-cli's
/// command line on every node, so the alphabet is kept tight.
pub fn parse_address(name: &str, value: &str) -> Result<String, ParamError> {
    if value.is_empty() || value.len() > 253 {
        return Err(perr(name, "must be a host name or IP address"));
    }
    if value.parse::<std::net::IpAddr>().is_ok() {
        return Ok(value.to_string());
    }
    let ok = value.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    });
    accept(name, value, ok, "neither an IP address nor a DNS name")
}

/// A Kubernetes object name (DNS-1123 subdomain).
fn parse_k8s_name(name: &str, value: &str) -> Result<String, ParamError> {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && value
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    accept(name, value, ok, "not a Kubernetes object name")
}

/// `value` if it passed its check (`ok`), else the refusal saying what it
/// `is`.
fn accept(name: &str, value: &str, ok: bool, is: &str) -> Result<String, ParamError> {
    if ok {
        Ok(value.to_string())
    } else {
        Err(perr(name, format!("{:?} is {is}", trunc(value))))
    }
}

fn trunc(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Why a capacity range cannot be satisfied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("required_bytes and limit_bytes must not be negative")]
    Negative,
    #[error("limit_bytes {limit} is below required_bytes {required}")]
    LimitBelowRequired { required: u64, limit: u64 },
    #[error("limit_bytes {limit} is below the smallest volume, {min} bytes")]
    LimitBelowMinimum { limit: u64, min: u64 },
    #[error("{size} bytes exceeds the largest allowed volume, {max} bytes")]
    AboveMaximum { size: u64, max: u64 },
    #[error("no multiple of 1 MiB lies between required_bytes {required} and limit_bytes {limit}")]
    NoAlignedSize { required: u64, limit: u64 },
}

/// The size to allocate for a capacity range: at least the request, at
/// least 1 GiB, a whole number of MiB, never above the limit or the
/// configured maximum. Rounding is always up: a 1.5 GiB request must never
/// become 1 GiB (docs/safety.md#sizes-rounded-down).
pub fn allocation_size(required: i64, limit: i64, max: u64) -> Result<u64, SizeError> {
    if required < 0 || limit < 0 {
        return Err(SizeError::Negative);
    }
    let (required, limit) = (required as u64, limit as u64);
    if limit != 0 && limit < required {
        return Err(SizeError::LimitBelowRequired { required, limit });
    }
    if limit != 0 && limit < MIN_VOLUME_BYTES {
        return Err(SizeError::LimitBelowMinimum {
            limit,
            min: MIN_VOLUME_BYTES,
        });
    }
    // Sizes travel back to the CO as int64.
    let max = max.min(i64::MAX as u64);
    let wanted = required.max(MIN_VOLUME_BYTES);
    let size = wanted
        .checked_next_multiple_of(MIB)
        .ok_or(SizeError::AboveMaximum { size: wanted, max })?;
    if size > max {
        return Err(SizeError::AboveMaximum { size, max });
    }
    if limit != 0 && size > limit {
        return Err(SizeError::NoAlignedSize { required, limit });
    }
    Ok(size)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn defaults() -> ParamDefaults {
        ParamDefaults {
            nvme_address: "10.0.0.1".into(),
            nvme_port: 4420,
            volume_path: RosPath::new("/storage-pool/metal-csi").unwrap(),
            volume_path_root: RosPath::new("/storage-pool").unwrap(),
        }
    }

    /// A string map from pairs, for contexts and parameters in tests.
    pub(crate) fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_parameters_give_the_documented_defaults() {
        let p = VolumeParams::parse(&HashMap::new(), &defaults()).unwrap();
        assert_eq!(p.nvme_address, "10.0.0.1");
        assert_eq!(p.nvme_port, 4420);
        assert_eq!(p.volume_path.as_str(), "/storage-pool/metal-csi");
        assert_eq!(p.migration_timeout, 300);
        assert_eq!(p.fs_type, None);
    }

    #[test]
    fn every_go_driver_parameter_is_understood() {
        let p = VolumeParams::parse(
            &map(&[
                ("nvmeAddress", "rds.example.com"),
                ("nvmePort", "4421"),
                ("volumePath", "/storage-pool/kubevirt"),
                ("ctrlLossTmo", "-1"),
                ("reconnectDelay", "2"),
                ("keepAliveTmo", "7"),
                ("migrationTimeoutSeconds", "600"),
                ("csi.storage.k8s.io/fstype", "xfs"),
                ("csi.storage.k8s.io/pvc/name", "vm-disk"),
                ("csi.storage.k8s.io/pvc/namespace", "vms"),
                ("csi.storage.k8s.io/pv/name", "pvc-1"),
            ]),
            &defaults(),
        )
        .unwrap();
        assert_eq!(p.nvme_address, "rds.example.com");
        assert_eq!(p.nvme_port, 4421);
        assert_eq!(p.volume_path.as_str(), "/storage-pool/kubevirt");
        assert_eq!(p.ctrl_loss_tmo, -1);
        assert_eq!(p.reconnect_delay, 2);
        assert_eq!(p.keep_alive_tmo, 7);
        assert_eq!(p.migration_timeout, 600);
        assert_eq!(p.fs_type, Some(FsType::Xfs));
        let c = p.volume_context("nqn.x:pvc-1");
        assert_eq!(c["csi.storage.k8s.io/pvc/name"], "vm-disk");
        assert_eq!(c["csi.storage.k8s.io/pvc/namespace"], "vms");
        assert_eq!(c["nqn"], "nqn.x:pvc-1");
        assert_eq!(c["nvmeAddress"], "rds.example.com");
        assert_eq!(c["nvmePort"], "4421");
        assert_eq!(c["fsType"], "xfs");
    }

    #[test]
    fn migration_timeout_is_clamped_like_the_go_driver() {
        let lo = VolumeParams::parse(&map(&[("migrationTimeoutSeconds", "5")]), &defaults());
        assert_eq!(lo.unwrap().migration_timeout, 30);
        let hi = VolumeParams::parse(&map(&[("migrationTimeoutSeconds", "99999")]), &defaults());
        assert_eq!(hi.unwrap().migration_timeout, 3600);
    }

    #[test]
    fn bad_parameters_are_refused_naming_the_parameter() {
        let cases: &[(&str, &str)] = &[
            ("nvmeport", "4420"),
            ("nvmePort", "0"),
            ("nvmePort", "65536"),
            ("nvmePort", "abc"),
            ("nvmeAddress", ""),
            ("nvmeAddress", "10.0.0.1; reboot"),
            ("nvmeAddress", "-a.example"),
            ("volumePath", "relative"),
            ("volumePath", "/etc"),
            ("volumePath", "/storage-pool/../etc"),
            ("volumePath", "/storage-pool/a\"b"),
            ("ctrlLossTmo", "-2"),
            ("reconnectDelay", "0"),
            ("keepAliveTmo", "x"),
            ("migrationTimeoutSeconds", "ten"),
            ("csi.storage.k8s.io/fstype", "btrfs"),
            ("csi.storage.k8s.io/pvc/name", "Bad Name"),
        ];
        for (k, v) in cases {
            let err = VolumeParams::parse(&map(&[(k, v)]), &defaults()).unwrap_err();
            assert_eq!(err.name, *k, "{k}={v}");
        }
    }

    #[test]
    fn unknown_reserved_kubernetes_keys_are_tolerated() {
        assert!(
            VolumeParams::parse(&map(&[("csi.storage.k8s.io/future", "x")]), &defaults()).is_ok()
        );
    }

    #[test]
    fn a_one_and_a_half_gib_request_never_yields_less() {
        let req = 3 * GIB as i64 / 2;
        assert_eq!(allocation_size(req, 0, 16 << 40).unwrap(), 3 * GIB / 2);
    }

    #[test]
    fn sizes_round_up_to_a_mib_and_at_least_a_gib() {
        let max = 16 << 40;
        assert_eq!(allocation_size(0, 0, max).unwrap(), GIB);
        assert_eq!(allocation_size(1, 0, max).unwrap(), GIB);
        assert_eq!(allocation_size(GIB as i64 + 1, 0, max).unwrap(), GIB + MIB);
        assert_eq!(allocation_size(0, 2 * GIB as i64, max).unwrap(), GIB);
    }

    #[test]
    fn impossible_ranges_are_refused() {
        let max = 10 * GIB;
        assert_eq!(allocation_size(-1, 0, max), Err(SizeError::Negative));
        assert!(matches!(
            allocation_size(2 * GIB as i64, GIB as i64, max),
            Err(SizeError::LimitBelowRequired { .. })
        ));
        assert!(matches!(
            allocation_size(0, MIB as i64, max),
            Err(SizeError::LimitBelowMinimum { .. })
        ));
        assert!(matches!(
            allocation_size(11 * GIB as i64, 0, max),
            Err(SizeError::AboveMaximum { .. })
        ));
        assert!(matches!(
            allocation_size(GIB as i64 + 1, GIB as i64 + 2, max),
            Err(SizeError::NoAlignedSize { .. })
        ));
        assert!(matches!(
            allocation_size(i64::MAX, 0, u64::MAX),
            Err(SizeError::AboveMaximum { .. })
        ));
    }

    proptest! {
        #[test]
        fn allocation_is_never_below_the_request_nor_above_the_limit(
            req in 0i64..(1 << 45), limit in 0i64..(1 << 45)
        ) {
            let max = 1u64 << 44;
            if let Ok(size) = allocation_size(req, limit, max) {
                prop_assert!(size >= req as u64);
                prop_assert!(size >= MIN_VOLUME_BYTES);
                prop_assert!(size % MIB == 0);
                prop_assert!(size <= max);
                if limit > 0 { prop_assert!(size <= limit as u64); }
            }
        }

        #[test]
        fn parameter_parsing_never_panics(k in any::<String>(), v in any::<String>()) {
            let mut m = HashMap::new();
            m.insert(k, v);
            let _ = VolumeParams::parse(&m, &defaults());
        }
    }
}
