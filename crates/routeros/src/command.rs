//! Typed RouterOS commands.
//!
//! Every value that reaches a command line goes through a validating newtype
//! first, so no user-controlled string (a volume name, a StorageClass
//! parameter) can smuggle RouterOS syntax such as `]`, `;`, `"` or `$` into a
//! command. Validation is deliberately narrower than what RouterOS accepts:
//! anything outside the allowed alphabet is refused, not escaped.

use crate::access::{encode_allowed_hosts, HostNqn, ALLOW_HOST_PROPERTY};
use crate::error::ValidationError;

pub use crate::comment::{ClusterId, CopyMethod, DiskComment, Lineage};
use storage::names::is_name_char;
pub use storage::names::{MAX_ID_LEN as MAX_SLOT_LEN, MAX_NQN_LEN};
/// The volume ID is the disk's slot; the ID prefix lists the driver's
/// disks (`slot~"^prefix"`). Both are validated in the `storage` crate.
pub use storage::{IdPrefix as SlotPrefix, Nqn, VolumeId as Slot};

const MAX_PATH_LEN: usize = 512;

// The text exactly as it goes on a command line.
storage::text!(RosPath);

/// An absolute RouterOS file path such as `/storage-pool/metal-csi`,
/// normalized (no `.`/`..`, no empty components, no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RosPath(String);

impl RosPath {
    pub fn new(s: &str) -> Result<Self, ValidationError> {
        let err = |r: &str| Err(ValidationError::new("path", s, r));
        if !s.starts_with('/') {
            return err("must be absolute (start with '/')");
        }
        if s.len() > MAX_PATH_LEN {
            return err("too long");
        }
        let mut parts = Vec::new();
        for part in s.split('/') {
            match part {
                "" => continue,
                "." | ".." => return err("'.' and '..' are not allowed"),
                p if !p.chars().all(is_name_char) => {
                    return err("only letters, digits, '-', '_', '.' and '/' are allowed")
                }
                p => parts.push(p),
            }
        }
        if parts.is_empty() {
            return err("must name a directory below '/'");
        }
        Ok(RosPath(format!("/{}", parts.join("/"))))
    }

    /// Requires this path to lie at or below `base`.
    pub fn under(self, base: &RosPath) -> Result<Self, ValidationError> {
        let inside = self.0 == base.0
            || self
                .0
                .strip_prefix(&base.0)
                .is_some_and(|rest| rest.starts_with('/'));
        if inside {
            Ok(self)
        } else {
            Err(ValidationError::new(
                "path",
                &self.0,
                format!("must be under {}", base.0),
            ))
        }
    }

    pub fn join(&self, file: &str) -> Result<Self, ValidationError> {
        RosPath::new(&format!("{}/{}", self.0, file))
    }

    /// The directory holding this path (itself when it is the top).
    pub fn parent(&self) -> RosPath {
        match self.0.rsplit_once('/') {
            Some((dir, _)) if !dir.is_empty() => RosPath(dir.to_string()),
            _ => self.clone(),
        }
    }

    /// The name `/file` uses for this path: no leading slash.
    pub fn file_name(&self) -> &str {
        &self.0[1..]
    }

    /// The first component: the pool's mount point.
    pub fn mount_point(&self) -> &str {
        self.file_name().split('/').next().unwrap_or_default()
    }
}

/// `line` with ` comment="..."` appended unless the comment is empty.
fn with_comment(mut line: String, comment: &DiskComment) -> String {
    if !comment.is_empty() {
        line.push_str(&format!(" comment=\"{comment}\""));
    }
    line
}

/// One RouterOS command. `render` produces the exact command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Create a file-backed disk exported over NVMe/TCP.
    DiskAdd {
        slot: Slot,
        file: RosPath,
        size_bytes: u64,
        port: u16,
        nqn: Nqn,
        /// Written as the disk's comment unless empty.
        comment: DiskComment,
    },
    /// A new disk holding a copy of another's data (`copy-from=`, as the Go
    /// driver snapshots); exported with that size, port and NQN when
    /// `export` is set.
    DiskCopyFrom {
        source: Slot,
        slot: Slot,
        file: RosPath,
        export: Option<(u64, u16, Nqn)>,
        comment: DiskComment,
    },
    /// A new disk that is not exported (the target of a byte copy).
    DiskAddUnexported {
        slot: Slot,
        file: RosPath,
        size_bytes: u64,
        comment: DiskComment,
    },
    /// A disk over an image file that already exists (inside a subvolume
    /// snapshot), keeping its data; exported on `export`'s port and NQN.
    DiskAdopt {
        slot: Slot,
        file: RosPath,
        export: Option<(u16, Nqn)>,
        comment: DiskComment,
    },
    /// `/disk copy`: starts a background byte copy of `source` into the
    /// existing disk `target`.
    DiskByteCopy {
        source: Slot,
        target: Slot,
    },
    /// A Btrfs subvolume `name` of file system `fs`; a snapshot of `parent`
    /// when given.
    SubvolumeAdd {
        fs: Slot,
        name: Slot,
        parent: Option<Slot>,
        read_only: bool,
    },
    SubvolumeGet {
        name: Slot,
    },
    SubvolumeRemove {
        name: Slot,
    },
    DiskGet {
        slot: Slot,
    },
    DiskList {
        prefix: SlotPrefix,
    },
    DiskResize {
        slot: Slot,
        size_bytes: u64,
    },
    DiskRemove {
        slot: Slot,
    },
    /// Replaces the disk's comment (the orphan sweep's records).
    DiskSetComment {
        slot: Slot,
        comment: DiskComment,
    },
    /// Sets the disk's host allow-list (`nvme-tcp-server-allow-host-name`)
    /// to exactly these hosts (`None`: any host; empty: no host).
    DiskSetAllowedHosts {
        slot: Slot,
        hosts: Option<Vec<HostNqn>>,
    },
    /// Turns the disk's NVMe/TCP export on or off, keeping its port, NQN
    /// and allow-list.
    DiskSetExport {
        slot: Slot,
        export: bool,
    },
    FileList {
        under: RosPath,
    },
    FileRemove {
        file: RosPath,
    },
    /// Files whose name contains `name` (a regex match in RouterOS, so the
    /// dots of a slot match any character: a superset, filtered by the
    /// caller).
    FileFind {
        name: Slot,
    },
    PoolCapacity {
        mount_point: Slot,
    },
    MonitorTraffic {
        slot: Slot,
    },
}

impl Command {
    pub fn render(&self) -> String {
        match self {
            Command::DiskAdd {
                slot,
                file,
                size_bytes,
                port,
                nqn,
                comment,
            } => {
                let s = format!(
                    "/disk add type=file file-path={file} file-size={size_bytes} slot={slot} \
                     nvme-tcp-export=yes nvme-tcp-server-port={port} nvme-tcp-server-nqn={nqn}"
                );
                with_comment(s, comment)
            }
            Command::DiskCopyFrom {
                source,
                slot,
                file,
                export,
                comment,
            } => {
                let mut s =
                    format!("/disk add type=file copy-from=[find slot={source}] file-path={file} slot={slot}");
                if let Some((size, port, nqn)) = export {
                    s.push_str(&format!(
                        " file-size={size} nvme-tcp-export=yes nvme-tcp-server-port={port} nvme-tcp-server-nqn={nqn}"
                    ));
                }
                with_comment(s, comment)
            }
            Command::DiskAddUnexported {
                slot,
                file,
                size_bytes,
                comment,
            } => with_comment(
                format!("/disk add type=file file-path={file} file-size={size_bytes} slot={slot}"),
                comment,
            ),
            Command::DiskAdopt {
                slot,
                file,
                export,
                comment,
            } => {
                let mut s = format!("/disk add type=file file-path={file} slot={slot}");
                if let Some((port, nqn)) = export {
                    s.push_str(&format!(
                        " nvme-tcp-export=yes nvme-tcp-server-port={port} nvme-tcp-server-nqn={nqn}"
                    ));
                }
                with_comment(s, comment)
            }
            Command::DiskByteCopy { source, target } => {
                format!("/disk copy src=[find slot=\"{source}\"] dst=[find slot=\"{target}\"]")
            }
            Command::SubvolumeAdd {
                fs,
                name,
                parent,
                read_only,
            } => {
                let mut s = format!("/disk/btrfs/subvolume/add fs={fs} name={name}");
                if let Some(parent) = parent {
                    s.push_str(&format!(" parent={parent}"));
                }
                s.push_str(if *read_only {
                    " read-only=yes"
                } else {
                    " read-only=no"
                });
                s
            }
            Command::SubvolumeGet { name } => {
                format!("/disk/btrfs/subvolume/print detail where name=\"{name}\"")
            }
            Command::SubvolumeRemove { name } => {
                format!("/disk/btrfs/subvolume/remove [find where name=\"{name}\"]")
            }
            Command::DiskGet { slot } => format!("/disk print detail where slot=\"{slot}\""),
            Command::DiskList { prefix } => {
                format!("/disk print detail where slot~\"^{}\"", prefix.as_str())
            }
            Command::DiskResize { slot, size_bytes } => {
                format!("/disk set [find slot=\"{slot}\"] file-size={size_bytes}")
            }
            Command::DiskRemove { slot } => format!("/disk remove [find slot=\"{slot}\"]"),
            Command::DiskSetComment { slot, comment } => {
                format!("/disk set [find slot=\"{slot}\"] comment=\"{comment}\"")
            }
            Command::DiskSetAllowedHosts { slot, hosts } => format!(
                "/disk set [find slot=\"{slot}\"] {ALLOW_HOST_PROPERTY}=\"{}\"",
                encode_allowed_hosts(hosts.as_deref())
            ),
            Command::DiskSetExport { slot, export } => format!(
                "/disk set [find slot=\"{slot}\"] nvme-tcp-export={}",
                if *export { "yes" } else { "no" }
            ),
            Command::FileList { under } => {
                format!("/file print detail where name~\"^{}/\"", under.file_name())
            }
            Command::FileRemove { file } => {
                format!("/file remove [find name=\"{}\"]", file.file_name())
            }
            Command::FileFind { name } => format!("/file print detail where name~\"{name}\""),
            Command::PoolCapacity { mount_point } => {
                format!("/disk print detail where mount-point=\"{mount_point}\"")
            }
            Command::MonitorTraffic { slot } => format!("/disk monitor-traffic {slot} once"),
        }
    }

    /// A stable label for metrics and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::DiskAdd { .. } => "disk_add",
            Command::DiskCopyFrom { .. } => "disk_copy_from",
            Command::DiskAddUnexported { .. } => "disk_add_unexported",
            Command::DiskAdopt { .. } => "disk_adopt",
            Command::DiskByteCopy { .. } => "disk_byte_copy",
            Command::SubvolumeAdd { .. } => "subvolume_add",
            Command::SubvolumeGet { .. } => "subvolume_get",
            Command::SubvolumeRemove { .. } => "subvolume_remove",
            Command::DiskGet { .. } => "disk_get",
            Command::DiskList { .. } => "disk_list",
            Command::DiskResize { .. } => "disk_resize",
            Command::DiskRemove { .. } => "disk_remove",
            Command::DiskSetComment { .. } => "disk_set_comment",
            Command::DiskSetAllowedHosts { .. } => "disk_set_allowed_hosts",
            Command::DiskSetExport { .. } => "disk_set_export",
            Command::FileList { .. } => "file_list",
            Command::FileRemove { .. } => "file_remove",
            Command::FileFind { .. } => "file_find",
            Command::PoolCapacity { .. } => "pool_capacity",
            Command::MonitorTraffic { .. } => "monitor_traffic",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_path_knows_its_directory() {
        let p = RosPath::new("/storage-pool/metal-csi/pvc-1.img").unwrap();
        assert_eq!(p.parent().as_str(), "/storage-pool/metal-csi");
        assert_eq!(p.parent().parent().as_str(), "/storage-pool");
        assert_eq!(p.parent().parent().parent().as_str(), "/storage-pool");
    }

    #[test]
    fn provisioner_style_names_are_valid_slots() {
        assert!(Slot::new("pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").is_ok());
        assert!(Slot::new("snapshot-1.2_x").is_ok());
    }

    #[test]
    fn injection_attempts_in_slots_are_refused() {
        for bad in [
            "",
            "pvc-1 ] ; /system reboot",
            "pvc\"",
            "a;b",
            "a b",
            "a]b",
            "a[b",
            "$x",
            "a\nb",
            "-leading-dash",
            ".hidden",
            "ä",
            &"x".repeat(129),
        ] {
            assert!(Slot::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn paths_are_normalized_and_kept_under_their_base() {
        let base = RosPath::new("/storage-pool").unwrap();
        let p = RosPath::new("/storage-pool//metal-csi/").unwrap();
        assert_eq!(p.as_str(), "/storage-pool/metal-csi");
        assert_eq!(p.file_name(), "storage-pool/metal-csi");
        assert_eq!(p.mount_point(), "storage-pool");
        assert!(p.clone().under(&base).is_ok());
        assert!(RosPath::new("/storage-pool-2/x")
            .unwrap()
            .under(&base)
            .is_err());
        assert!(RosPath::new("/other").unwrap().under(&base).is_err());
        for bad in [
            "relative/path",
            "/a/../b",
            "/a/./b",
            "/",
            "/a b",
            "/a\"b",
            "/a]b",
            "/a;b",
        ] {
            assert!(RosPath::new(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn nqns_are_checked() {
        let slot = Slot::new("pvc-1").unwrap();
        let nqn = Nqn::for_volume("nqn.2000-02.com.mikrotik:", &slot).unwrap();
        assert_eq!(nqn.as_str(), "nqn.2000-02.com.mikrotik:pvc-1");
        assert!(Nqn::new("iqn.x").is_err());
        assert!(Nqn::new("nqn.x y").is_err());
        assert!(Nqn::new(&format!("nqn.{}", "a".repeat(230))).is_err());
    }

    #[test]
    fn disk_add_renders_the_documented_command() {
        let slot = Slot::new("pvc-1").unwrap();
        let cmd = Command::DiskAdd {
            file: RosPath::new("/storage-pool/metal-csi/pvc-1.img").unwrap(),
            size_bytes: 1_610_612_736,
            port: 4420,
            nqn: Nqn::for_volume("nqn.2000-02.com.mikrotik:", &slot).unwrap(),
            slot,
            comment: DiskComment::default(),
        };
        assert_eq!(
            cmd.render(),
            "/disk add type=file file-path=/storage-pool/metal-csi/pvc-1.img file-size=1610612736 \
             slot=pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4420 \
             nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:pvc-1"
        );
    }

    #[test]
    fn disk_add_records_the_comment_and_set_replaces_it() {
        let slot = Slot::new("pvc-1").unwrap();
        let at: jiff::Timestamp = "2026-11-22T07:10:05.123456Z".parse().unwrap();
        let cluster = ClusterId::new("0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
        let comment = DiskComment::created(at, Some(cluster));
        let cmd = Command::DiskAdd {
            file: RosPath::new("/storage-pool/metal-csi/pvc-1.img").unwrap(),
            size_bytes: 1 << 30,
            port: 4420,
            nqn: Nqn::for_volume("nqn.2000-02.com.mikrotik:", &slot).unwrap(),
            slot: slot.clone(),
            comment: comment.clone(),
        };
        assert!(cmd.render().ends_with(
            " comment=\"rds-csi created=2026-11-22T07:10:05Z cluster=0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3\""
        ));
        let marked = DiskComment {
            retain: true,
            orphaned_since: Some(at),
            ..comment
        };
        assert_eq!(
            Command::DiskSetComment {
                slot,
                comment: marked
            }
            .render(),
            "/disk set [find slot=\"pvc-1\"] comment=\"rds-csi created=2026-11-22T07:10:05Z \
             cluster=0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3 retain=yes orphaned-since=2026-11-22T07:10:05Z\""
        );
    }

    #[test]
    fn lookups_and_removals_render_find_expressions() {
        let slot = Slot::new("pvc-1").unwrap();
        assert_eq!(
            Command::DiskGet { slot: slot.clone() }.render(),
            "/disk print detail where slot=\"pvc-1\""
        );
        assert_eq!(
            Command::DiskRemove { slot: slot.clone() }.render(),
            "/disk remove [find slot=\"pvc-1\"]"
        );
        assert_eq!(
            Command::FileRemove {
                file: RosPath::new("/storage-pool/metal-csi/pvc-1.img").unwrap()
            }
            .render(),
            "/file remove [find name=\"storage-pool/metal-csi/pvc-1.img\"]"
        );
        assert_eq!(
            Command::DiskList {
                prefix: SlotPrefix::new("pvc-").unwrap()
            }
            .render(),
            "/disk print detail where slot~\"^pvc-\""
        );
        assert!(SlotPrefix::new("pvc.").is_err());
    }

    proptest! {
        #[test]
        fn no_accepted_slot_contains_routeros_syntax(s in any::<String>()) {
            if let Ok(slot) = Slot::new(&s) {
                let syntax = ['"', '[', ']', ';', '$', ' ', '\\', '\n', '{', '}', '='];
                let clean = !slot.as_str().contains(syntax);
                prop_assert!(clean);
            }
        }

        #[test]
        fn no_accepted_path_escapes_its_base(s in "(/[a-z.]{0,4}){0,5}") {
            let base = RosPath::new("/storage-pool").unwrap();
            if let Ok(p) = RosPath::new(&s).and_then(|p| p.under(&base)) {
                prop_assert!(p.as_str().starts_with("/storage-pool"));
                prop_assert!(!p.as_str().contains("/../"));
                prop_assert!(!p.as_str().ends_with("/.."));
            }
        }
    }
}
