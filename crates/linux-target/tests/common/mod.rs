//! A plain directory standing in for the nvmet configfs tree, for running
//! the real scripts through a real `sh` without the kernel target.
//!
//! configfs makes a group's attribute files and default sub-groups on
//! `mkdir` and drops them on `rmdir`; `mkdir` and `rmdir` wrappers first on
//! `PATH` do that here. A new subsystem starts with `attr_allow_any_host`
//! set to 1, the worst case, so a test sees the driver turn it off. What
//! the stand-in cannot show (the kernel refusing writes, tearing down
//! connections) is for the guest tier.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use linux_target::{LinuxTarget, LocalShell, PoolName, PortSpec, Shell, TargetConfig, VgName};

const MKDIR: &str = r#"#!/bin/sh
/bin/mkdir "$@" || exit $?
for d in "$@"; do
  case "$d" in
    -*) ;;
    "$STANDIN_ROOT"/subsystems/*/namespaces/*) : >"$d/enable"; : >"$d/device_path" ;;
    "$STANDIN_ROOT"/subsystems/*)
      /bin/mkdir "$d/namespaces" "$d/allowed_hosts"; echo 1 >"$d/attr_allow_any_host" ;;
    "$STANDIN_ROOT"/ports/*)
      /bin/mkdir "$d/subsystems" "$d/referrals" "$d/ana_groups"
      for a in addr_trtype addr_adrfam addr_traddr addr_trsvcid; do : >"$d/$a"; done ;;
  esac
done
"#;

const RMDIR: &str = r#"#!/bin/sh
for d in "$@"; do
  case "$d" in
    "$STANDIN_ROOT"/subsystems/*/namespaces/*) rm -f "$d/enable" "$d/device_path" ;;
    "$STANDIN_ROOT"/subsystems/*)
      /bin/rmdir "$d/namespaces" "$d/allowed_hosts" || exit 1; rm -f "$d/attr_allow_any_host" ;;
  esac
  /bin/rmdir "$d" || exit 1
done
"#;

pub struct StandIn {
    pub dir: tempfile::TempDir,
}

impl StandIn {
    pub fn new() -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("nvmet");
        for d in ["subsystems", "ports", "hosts"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let bin = dir.path().join("bin");
        fs::create_dir(&bin).unwrap();
        for (name, text) in [("mkdir", MKDIR), ("rmdir", RMDIR)] {
            let p = bin.join(name);
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        }
        fs::create_dir(dir.path().join("dev")).unwrap();
        StandIn { dir }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("nvmet")
    }

    pub fn dev(&self) -> PathBuf {
        self.dir.path().join("dev")
    }

    /// The local shell with the wrappers first on `PATH`.
    pub fn shell(&self) -> LocalShell {
        let path = format!(
            "{}:{}",
            self.dir.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        LocalShell {
            env: vec![
                ("PATH".into(), path),
                ("STANDIN_ROOT".into(), self.root().display().to_string()),
            ],
            ..LocalShell::default()
        }
    }

    /// A target on the stand-in, exporting on 127.0.0.1:4420 (port 1).
    pub fn target(&self, shell: Arc<dyn Shell>) -> LinuxTarget {
        let port = PortSpec::new(1, "127.0.0.1".parse().unwrap(), 4420).unwrap();
        let config = TargetConfig::new(
            VgName::new("vg0").unwrap(),
            PoolName::new("thin").unwrap(),
            port,
        )
        .with_configfs(&self.root().display().to_string())
        .unwrap()
        .with_dev_root(&self.dev().display().to_string())
        .unwrap();
        LinuxTarget::new(shell, config)
    }

    /// Makes `<dev>/vg0/<lv>` a block device, as LVM's would be for an
    /// active volume: a link to a block device node of this machine (the
    /// scripts only check it is one and write its path to configfs).
    pub fn block_device(&self, lv: &str) -> PathBuf {
        use std::os::unix::fs::FileTypeExt;
        let real = [
            "/dev/loop0",
            "/dev/vda",
            "/dev/sda",
            "/dev/nvme0n1",
            "/dev/xvda",
        ]
        .into_iter()
        .find(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
        .expect(
            "the configfs stand-in tests need a block device node in /dev (loop0, vda, sda ...)",
        );
        let dir = self.dev().join("vg0");
        fs::create_dir_all(&dir).unwrap();
        let node = dir.join(lv);
        std::os::unix::fs::symlink(real, &node).unwrap();
        node
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root().join(rel))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    pub fn link(&self, rel: &str) -> Option<PathBuf> {
        fs::read_link(self.root().join(rel)).ok()
    }

    pub fn exists(&self, rel: &str) -> bool {
        Path::new(&self.root().join(rel)).symlink_metadata().is_ok()
    }
}
