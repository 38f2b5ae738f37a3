//! What a node RPC is asked to do: the volume ID, paths, the capability,
//! and the NVMe/TCP target from the volume and publish contexts. Pure
//! validation, every failure INVALID_ARGUMENT.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use nvme::host::validate_nqn;
use nvme::mount::{parse_mount_flags, MountOptions};
use nvme::{FsType, NqnPrefix, Target};

use super::state::VolumeRecord;
use super::NodeError;
use crate::controller::validate_capabilities;
use crate::params::{self, ctx};
use crate::proto;
use crate::proto::volume_capability::{access_mode::Mode, AccessType};

/// A volume ID the node accepts: the controller's rule (it doubles as the
/// name of the node's record file).
pub fn volume_id(id: &str) -> Result<String, NodeError> {
    if id.is_empty() {
        return Err(NodeError::invalid("volume_id", "must not be empty"));
    }
    storage::VolumeId::new(id)
        .map(|s| s.to_string())
        .map_err(|e| NodeError::invalid("volume_id", e.to_string()))
}

/// An absolute, normalized path: no `.`/`..` components, no NUL.
pub fn abs_path(field: &'static str, p: &str) -> Result<PathBuf, NodeError> {
    use std::path::Component;
    if p.is_empty() {
        return Err(NodeError::invalid(field, "must not be empty"));
    }
    if p.len() > 4096 || p.contains('\0') {
        return Err(NodeError::invalid(field, "is not a usable path"));
    }
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(NodeError::invalid(field, format!("{p:?} is not absolute")));
    }
    if p.split('/').any(|c| c == "." || c == "..")
        || path
            .components()
            .any(|c| matches!(c, Component::CurDir | Component::ParentDir))
    {
        return Err(NodeError::invalid(
            field,
            format!("{p:?} has . or .. components"),
        ));
    }
    if path.parent().is_none() {
        return Err(NodeError::invalid(field, "must not be /"));
    }
    Ok(path.components().collect())
}

/// An optional path: empty is none, anything else must be an
/// [`abs_path`].
pub fn optional_abs_path(field: &'static str, p: &str) -> Result<Option<PathBuf>, NodeError> {
    match p {
        "" => Ok(None),
        p => abs_path(field, p).map(Some),
    }
}

/// The `volume_path` of NodeGetVolumeStats and NodeExpandVolume: required,
/// and a path that cannot be where the volume is staged or published (not
/// absolute) is NOT_FOUND, as csi-sanity expects.
pub fn volume_path(p: &str) -> Result<PathBuf, NodeError> {
    if p.is_empty() {
        return Err(NodeError::invalid("volume_path", "must not be empty"));
    }
    abs_path("volume_path", p).map_err(|_| NodeError::UnusableVolumePath {
        given: p.chars().take(256).collect(),
    })
}

/// What a volume capability asks of the node.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    pub block: bool,
    pub fs: Option<FsType>,
    pub mount: MountOptions,
    pub mount_flags: Vec<String>,
    /// SINGLE_NODE_SINGLE_WRITER: at most one publish on this node.
    pub single_writer: bool,
}

pub fn capability(cap: Option<&proto::VolumeCapability>) -> Result<Cap, NodeError> {
    let cap = cap.ok_or_else(|| NodeError::invalid("volume_capability", "must be given"))?;
    let caps = validate_capabilities(std::slice::from_ref(cap)).map_err(|e| match e {
        crate::controller::ControllerError::Invalid { field, reason } => {
            NodeError::invalid(field, reason)
        }
        other => NodeError::invalid("volume_capability", other.to_string()),
    })?;
    let (mount_flags, group) = match &cap.access_type {
        Some(AccessType::Mount(m)) => (m.mount_flags.clone(), m.volume_mount_group.as_str()),
        _ => (Vec::new(), ""),
    };
    if !group.is_empty() {
        return Err(NodeError::invalid(
            "volume_capability",
            "volume_mount_group is not supported (VOLUME_MOUNT_GROUP is not a capability of this node)",
        ));
    }
    let mount = parse_mount_flags(&mount_flags)
        .map_err(|e| NodeError::invalid("volume_capability.mount.mount_flags", e))?;
    let mode = cap
        .access_mode
        .as_ref()
        .and_then(|m| Mode::try_from(m.mode).ok());
    Ok(Cap {
        block: caps.block,
        fs: caps.fs_type,
        mount,
        mount_flags,
        single_writer: mode == Some(Mode::SingleNodeSingleWriter),
    })
}

/// The volume context key that marks a volume as formatted before
/// (`"true"`): the node then never formats it, whatever blkid says. Set it
/// in a statically provisioned PV's `volumeAttributes`.
pub const FORMATTED: &str = "formatted";

/// The NVMe/TCP side of a volume, from its contexts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeTarget {
    pub target: Target,
    pub fs: Option<FsType>,
    pub formatted: bool,
}

impl VolumeTarget {
    /// The filesystem a volume with capability `cap` gets: the
    /// capability's, else the context's, else ext4; none for raw block.
    pub fn fs_for(&self, cap: &Cap) -> Option<FsType> {
        (!cap.block).then(|| cap.fs.or(self.fs).unwrap_or(FsType::Ext4))
    }

    /// A fresh record of the volume staged at `staging`: no publish
    /// targets, no format history, no PVC yet.
    pub fn record(&self, volume_id: &str, staging: &Path, cap: &Cap) -> VolumeRecord {
        VolumeRecord {
            volume_id: volume_id.to_string(),
            nqn: self.target.nqn.clone(),
            address: self.target.address.clone(),
            port: self.target.port,
            ctrl_loss_tmo: self.target.ctrl_loss_tmo,
            reconnect_delay: self.target.reconnect_delay,
            keep_alive_tmo: self.target.keep_alive_tmo,
            staging_path: staging.to_path_buf(),
            block: cap.block,
            fs_type: self.fs_for(cap).map(|f| f.as_str().to_string()),
            mount_flags: cap.mount_flags.clone(),
            formatted_here: false,
            filesystem_seen: false,
            targets: BTreeMap::new(),
            pvc: None,
        }
    }
}

fn int(key: &'static str, v: &str, min: i64, max: i64) -> Result<i64, NodeError> {
    let n: i64 = v
        .trim()
        .parse()
        .map_err(|_| NodeError::invalid(key, format!("{v:?} is not an integer")))?;
    if n < min || n > max {
        return Err(NodeError::invalid(
            key,
            format!("{n} is outside {min}..={max}"),
        ));
    }
    Ok(n)
}

/// Reads the target from the publish context (ControllerPublish's answer,
/// which reflects the export as the RDS reports it) and then the volume
/// context. The NQN defaults to the prefix and the volume ID, as the
/// controller names it, and must lie under the prefix: a subsystem the
/// node could never disconnect is never connected.
pub fn volume_target(
    volume_id: &str,
    volume_ctx: &HashMap<String, String>,
    publish_ctx: &HashMap<String, String>,
    prefix: &NqnPrefix,
    max_ctrl_loss_tmo: Option<i32>,
) -> Result<VolumeTarget, NodeError> {
    let get = |k: &str| {
        publish_ctx
            .get(k)
            .or_else(|| volume_ctx.get(k))
            .map(String::as_str)
    };
    let address = get(ctx::NVME_ADDRESS)
        .ok_or_else(|| NodeError::invalid("volume_context", "nvmeAddress is missing"))?;
    let address = params::parse_address(ctx::NVME_ADDRESS, address)
        .map_err(|e| NodeError::invalid("volume_context", e.to_string()))?;
    let port = match get(ctx::NVME_PORT) {
        Some(p) => int(ctx::NVME_PORT, p, 1, 65_535)? as u16,
        None => params::DEFAULT_NVME_PORT,
    };
    let nqn = match get(ctx::NQN) {
        Some(n) => n.to_string(),
        None => prefix.volume_nqn(volume_id),
    };
    validate_nqn(&nqn).map_err(|e| NodeError::invalid("volume_context", format!("nqn {e}")))?;
    if !prefix.owns(&nqn) {
        return Err(NodeError::invalid(
            "volume_context",
            format!(
                "nqn {nqn:?} does not start with {:?} (--nqn-prefix and --volume-id-prefix): the node would never be allowed to disconnect it",
                prefix.owned_prefix()
            ),
        ));
    }
    let mut ctrl_loss_tmo = match volume_ctx.get(ctx::CTRL_LOSS_TMO) {
        Some(v) => int(ctx::CTRL_LOSS_TMO, v, -1, 86_400)? as i32,
        None => params::DEFAULT_CTRL_LOSS_TMO,
    };
    if let Some(max) = max_ctrl_loss_tmo {
        if ctrl_loss_tmo < 0 || ctrl_loss_tmo > max {
            ctrl_loss_tmo = max;
        }
    }
    let reconnect_delay = match volume_ctx.get(ctx::RECONNECT_DELAY) {
        Some(v) => int(ctx::RECONNECT_DELAY, v, 1, 3600)? as u32,
        None => params::DEFAULT_RECONNECT_DELAY,
    };
    let keep_alive_tmo = match volume_ctx.get(ctx::KEEP_ALIVE_TMO) {
        Some(v) => int(ctx::KEEP_ALIVE_TMO, v, 1, 3600)? as u32,
        None => params::DEFAULT_KEEP_ALIVE_TMO,
    };
    let fs = match volume_ctx.get(ctx::FS_TYPE).map(String::as_str) {
        None | Some("") => None,
        Some(f) => Some(FsType::parse(f).ok_or_else(|| {
            NodeError::invalid(ctx::FS_TYPE, format!("{f:?} is not ext4 or xfs"))
        })?),
    };
    let formatted = match volume_ctx.get(FORMATTED).map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(v) => {
            return Err(NodeError::invalid(
                FORMATTED,
                format!("{v:?} is neither true nor false"),
            ))
        }
    };
    Ok(VolumeTarget {
        target: Target {
            address,
            port,
            nqn,
            ctrl_loss_tmo,
            reconnect_delay,
            keep_alive_tmo,
        },
        fs,
        formatted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn prefix() -> NqnPrefix {
        NqnPrefix::new("nqn.2000-02.com.mikrotik:").unwrap()
    }

    use crate::params::tests::map;

    #[test]
    fn the_publish_context_wins_over_the_volume_context() {
        let v = volume_target(
            "pvc-1",
            &map(&[
                ("nvmeAddress", "10.0.0.1"),
                ("nvmePort", "4420"),
                ("ctrlLossTmo", "-1"),
                ("fsType", "xfs"),
            ]),
            &map(&[
                ("nvmeAddress", "10.0.0.2"),
                ("nvmePort", "4421"),
                ("nqn", "nqn.2000-02.com.mikrotik:pvc-1"),
            ]),
            &prefix(),
            None,
        )
        .unwrap();
        assert_eq!(v.target.address, "10.0.0.2");
        assert_eq!(v.target.port, 4421);
        assert_eq!(v.target.ctrl_loss_tmo, -1);
        assert_eq!(v.fs, Some(FsType::Xfs));
        assert!(!v.formatted);
    }

    #[test]
    fn the_nqn_defaults_to_the_controllers_naming() {
        let v = volume_target(
            "pvc-9",
            &map(&[("nvmeAddress", "rds.lan")]),
            &HashMap::new(),
            &prefix(),
            None,
        )
        .unwrap();
        assert_eq!(v.target.nqn, "nqn.2000-02.com.mikrotik:pvc-9");
        assert_eq!(v.target.port, 4420);
        assert_eq!(v.target.ctrl_loss_tmo, 600);
    }

    #[test]
    fn a_long_controller_loss_timeout_is_clamped_when_configured() {
        for (given, want) in [("-1", 120), ("600", 120), ("30", 30)] {
            let v = volume_target(
                "pvc-1",
                &map(&[("nvmeAddress", "10.0.0.1"), ("ctrlLossTmo", given)]),
                &HashMap::new(),
                &prefix(),
                Some(120),
            )
            .unwrap();
            assert_eq!(v.target.ctrl_loss_tmo, want);
        }
    }

    #[test]
    fn the_formatted_key_is_read_strictly() {
        let t = |v: &str| {
            volume_target(
                "pvc-1",
                &map(&[("nvmeAddress", "10.0.0.1"), ("formatted", v)]),
                &HashMap::new(),
                &prefix(),
                None,
            )
        };
        assert!(t("true").unwrap().formatted);
        assert!(!t("false").unwrap().formatted);
        assert!(t("yes").is_err());
    }

    #[test]
    fn bad_contexts_are_invalid_arguments() {
        let cases: &[&[(&str, &str)]] = &[
            &[],
            &[("nvmeAddress", "10.0.0.1; reboot")],
            &[("nvmeAddress", "10.0.0.1"), ("nvmePort", "0")],
            &[
                ("nvmeAddress", "10.0.0.1"),
                ("nqn", "nqn.2014-08.org.example:other"),
            ],
            &[
                ("nvmeAddress", "10.0.0.1"),
                ("nqn", "nqn.2000-02.com.mikrotik:a b"),
            ],
            &[("nvmeAddress", "10.0.0.1"), ("ctrlLossTmo", "-2")],
            &[("nvmeAddress", "10.0.0.1"), ("reconnectDelay", "0")],
            &[("nvmeAddress", "10.0.0.1"), ("keepAliveTmo", "x")],
            &[("nvmeAddress", "10.0.0.1"), ("fsType", "btrfs")],
        ];
        for c in cases {
            let e = volume_target("pvc-1", &map(c), &HashMap::new(), &prefix(), None);
            assert!(matches!(e, Err(NodeError::Invalid { .. })), "{c:?}: {e:?}");
        }
    }

    #[test]
    fn paths_must_be_absolute_and_normal() {
        assert_eq!(
            abs_path("p", "/var/lib/kubelet/x/").unwrap(),
            PathBuf::from("/var/lib/kubelet/x")
        );
        for bad in ["", "relative", "/a/../b", "/a/./b", "/", "/a\0b"] {
            assert!(abs_path("p", bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn context_parsing_never_panics(k in "[a-zA-Z]{0,12}", v in any::<String>(), p in any::<String>()) {
            let ctx = map(&[("nvmeAddress", "10.0.0.1"), (k.as_str(), v.as_str())]);
            let _ = volume_target("pvc-1", &ctx, &HashMap::new(), &prefix(), Some(60));
            let _ = abs_path("p", &p);
            let _ = volume_id(&p);
        }
    }
}
