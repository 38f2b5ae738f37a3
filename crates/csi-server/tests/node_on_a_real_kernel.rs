//! The node service on a real kernel: real mkfs, blkid, e2fsck, resize2fs,
//! mount(2), bind mounts, mknod(2), statvfs and O_EXCL, on a loop device.
//!
//! Only NVMe itself is stood in for: a small sysfs tree in a temporary
//! directory names the loop device as the namespace of a connected
//! subsystem, and `nvme disconnect` / `nvme ns-rescan` act on that tree
//! (and on the loop device's size). Everything else is the production
//! code path against the host.
//!
//! Needs root, loop devices and e2fsprogs, so plain `cargo test` ignores
//! it; hack/test.sh runs it with the other tier-1/2 tests when the host has
//! them (and reports it skipped otherwise). Run alone: `cargo nextest run
//! -p csi-server --run-ignored only -E 'binary(node_on_a_real_kernel)'`.
//! The QEMU guest tier covers the real NVMe/TCP path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use csi_server::metrics::RpcMetrics;
use csi_server::node::{NodeConfig, NodeService};
use csi_server::proto::node_server::Node;
use csi_server::proto::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use csi_server::proto::{self};
use nvme::{
    DataPath, Exec, HostCommand, HostIdentity, NqnPrefix, Output, Paths, RealExec, RealSys, Sys,
};
use tonic::{Code, Request};

const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-real";
const ID: &str = "pvc-real";

fn why_not() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
    if !root {
        return Some("not root".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control".into());
    }
    for tool in ["losetup", "mkfs.ext4", "blkid", "e2fsck", "resize2fs"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

/// Bit 24 of the effective capabilities.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 24) != 0)
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The loop device and the directory; undone on drop, even after a failed
/// assertion.
struct Host {
    dir: tempfile::TempDir,
    loopdev: String,
    devnum: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let root = self.dir.path().to_string_lossy().into_owned();
        // Innermost first: bind mounts, then the staging mount.
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "grep -F ' {root}' /proc/self/mountinfo | awk '{{print $5}}' | sort -r | xargs -r -n1 umount -l"
                ),
            ])
            .status();
        let _ = Command::new("losetup").args(["-d", &self.loopdev]).status();
    }
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("disk.img");
        sh(&format!("truncate -s 256M {}", img.display()));
        let mut loopdev = String::new();
        for _ in 0..10 {
            let out = Command::new("losetup")
                .args(["-f", "--show"])
                .arg(&img)
                .output()
                .unwrap();
            if out.status.success() {
                loopdev = String::from_utf8_lossy(&out.stdout).trim().to_string();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(!loopdev.is_empty(), "no free loop device");
        let name = Path::new(&loopdev)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let devnum = sh(&format!("cat /sys/class/block/{name}/dev"));
        let h = Host {
            dir,
            loopdev,
            devnum,
        };
        h.connect();
        h
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// The sysfs a connected, native-multipath subsystem shows, with the
    /// loop device as its namespace head.
    fn connect(&self) {
        let w = |rel: &str, text: &str| {
            let p = self.p(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w("sys/class/nvme/nvme0/subsysnqn", &format!("{NQN}\n"));
        w("sys/class/nvme/nvme0/state", "live\n");
        w("sys/class/nvme/nvme0/transport", "tcp\n");
        w(
            "sys/class/nvme/nvme0/address",
            "traddr=127.0.0.1,trsvcid=4420\n",
        );
        std::fs::create_dir_all(self.p("sys/class/nvme/nvme0/nvme0c0n1")).unwrap();
        w(
            "sys/class/nvme-subsystem/nvme-subsys0/subsysnqn",
            &format!("{NQN}\n"),
        );
        std::fs::create_dir_all(self.p("sys/class/nvme-subsystem/nvme-subsys0/nvme0n1")).unwrap();
        w("sys/class/block/nvme0n1/dev", &format!("{}\n", self.devnum));
        self.sync_size();
        w(
            &format!("sys/dev/block/{}/dev", self.devnum),
            &format!("{}\n", self.devnum),
        );
        std::fs::create_dir_all(self.p("dev")).unwrap();
        let node = self.p("dev/nvme0n1");
        if !node.exists() {
            let (maj, min) = self.devnum.split_once(':').unwrap();
            sh(&format!("mknod {} b {maj} {min}", node.display()));
        }
    }

    fn sync_size(&self) {
        let name = Path::new(&self.loopdev)
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let size = sh(&format!("cat /sys/class/block/{name}/size"));
        std::fs::write(self.p("sys/class/block/nvme0n1/size"), format!("{size}\n")).unwrap();
    }

    fn disconnect(&self) {
        let _ = std::fs::remove_dir_all(self.p("sys/class/nvme/nvme0"));
        let _ = std::fs::remove_dir_all(self.p("sys/class/nvme-subsystem/nvme-subsys0"));
    }
}

/// Real commands, except nvme-cli, which acts on the stand-in sysfs.
struct LoopExec(Arc<Host>);

impl Exec for LoopExec {
    async fn run(
        &self,
        cmd: &HostCommand,
        timeout: Duration,
    ) -> Result<Output, nvme::exec::ExecError> {
        match cmd {
            HostCommand::NvmeConnect(_) => {
                self.0.connect();
                Ok(Output::exit(0))
            }
            HostCommand::NvmeDisconnect { .. } => {
                self.0.disconnect();
                Ok(Output::exit(0))
            }
            HostCommand::NvmeNsRescan { .. } => {
                sh(&format!("losetup -c {}", self.0.loopdev));
                self.0.sync_size();
                Ok(Output::exit(0))
            }
            other => RealExec.run(other, timeout).await,
        }
    }
}

fn service(h: &Arc<Host>) -> NodeService<LoopExec, RealSys> {
    let mut config = nvme::Config::new(
        NqnPrefix::new("nqn.2000-02.com.mikrotik:").unwrap(),
        HostIdentity {
            nqn: "nqn.2014-08.org.nvmexpress:uuid:6f1c2b8e-3f5d-4c1a-9a0e-2d7b4c9e1f00".into(),
            id: None,
        },
    );
    config.paths = Paths {
        sysfs: h.p("sys"),
        dev: h.p("dev"),
        mountinfo: "/proc/self/mountinfo".into(),
    };
    config.timeouts.device = Duration::from_secs(2);
    NodeService::new(
        NodeConfig {
            node_id: "n".into(),
            max_volumes: 0,
            topology: vec![("k".into(), "v".into())],
            state_dir: h.p("state"),
            staging_root: h.p("kubelet"),
            max_ctrl_loss_tmo: None,
        },
        DataPath::new(
            LoopExec(h.clone()),
            RealSys::new(Duration::from_secs(30)),
            config,
        ),
        RpcMetrics::unregistered(),
    )
}

fn cap(block: bool) -> proto::VolumeCapability {
    proto::VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                mount_flags: vec!["noatime".into()],
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn ctx() -> HashMap<String, String> {
    HashMap::from([
        ("nvmeAddress".to_string(), "127.0.0.1".to_string()),
        ("nqn".to_string(), NQN.to_string()),
    ])
}

fn mountinfo_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy().into_owned();
    text.lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == Some(p.as_str()))
        .map(str::to_string)
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn stage_req(staging: &Path, block: bool) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: path(staging),
        volume_capability: Some(cap(block)),
        volume_context: ctx(),
        ..Default::default()
    }
}

fn publish_req(
    staging: &Path,
    target: &Path,
    block: bool,
    readonly: bool,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: path(staging),
        target_path: path(target),
        volume_capability: Some(cap(block)),
        readonly,
        volume_context: ctx(),
        ..Default::default()
    }
}

fn unstage_req(staging: &Path) -> proto::NodeUnstageVolumeRequest {
    proto::NodeUnstageVolumeRequest {
        volume_id: ID.into(),
        staging_target_path: path(staging),
    }
}

fn unpublish_req(target: &Path) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest {
        volume_id: ID.into(),
        target_path: path(target),
    }
}

fn stats_req(target: &Path) -> proto::NodeGetVolumeStatsRequest {
    proto::NodeGetVolumeStatsRequest {
        volume_id: ID.into(),
        volume_path: path(target),
        staging_target_path: String::new(),
    }
}

#[tokio::test]
#[ignore = "needs root, loop devices and e2fsprogs; hack/test.sh runs it in tiers 1-2 where it can"]
async fn a_filesystem_and_a_block_volume_live_and_die_on_a_real_kernel() {
    // Asked for explicitly (it is ignored otherwise): a host that cannot
    // run it fails it, saying why, rather than passing it unrun.
    if let Some(why) = why_not() {
        panic!("cannot run on this host: {why}");
    }
    let h = Arc::new(Host::new());
    let svc = service(&h);
    let staging = h.p("kubelet/plugins/x/globalmount");
    let target = h.p("kubelet/pods/p/volumes/pvc/mount");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();

    // Stage: the empty device gets ext4, then is mounted.
    svc.node_stage_volume(Request::new(stage_req(&staging, false)))
        .await
        .unwrap();
    assert_eq!(
        sh(&format!("blkid -p -s TYPE -o value {}", h.loopdev)),
        "ext4"
    );
    let line = mountinfo_line(&staging).expect("staging is mounted");
    assert!(line.contains(&format!(" {} ", h.devnum)), "{line}");
    assert!(line.contains("noatime"), "{line}");
    std::fs::write(staging.join("hello"), "kept across calls").unwrap();
    // A mounted device is claimed: an exclusive open fails.
    assert!(RealSys::new(Duration::from_secs(5))
        .device_claimed(&h.p("dev/nvme0n1"))
        .await
        .unwrap());

    // Stage again: nothing changes, nothing is formatted.
    svc.node_stage_volume(Request::new(stage_req(&staging, false)))
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(staging.join("hello")).unwrap(),
        "kept across calls"
    );

    // Publish read-only: a bind mount the kernel refuses writes through.
    let publish = publish_req(&staging, &target, false, true);
    svc.node_publish_volume(Request::new(publish.clone()))
        .await
        .unwrap();
    svc.node_publish_volume(Request::new(publish))
        .await
        .unwrap();
    let line = mountinfo_line(&target).expect("target is mounted");
    assert!(line.split(' ').nth(5).unwrap().starts_with("ro"), "{line}");
    assert_eq!(
        std::fs::read_to_string(target.join("hello")).unwrap(),
        "kept across calls"
    );
    let err = std::fs::write(target.join("nope"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");

    // Stats through statvfs.
    let stats = svc
        .node_get_volume_stats(Request::new(stats_req(&target)))
        .await
        .unwrap()
        .into_inner();
    let before = stats.usage[0].total;
    assert!(before > 200 << 20, "{stats:?}");
    assert!(stats.usage[1].total > 0);
    assert!(!stats.volume_condition.unwrap().abnormal);

    // Expand: the backing file grows, the rescan sees it, resize2fs grows
    // the mounted filesystem (online resize needs CAP_SYS_RESOURCE, which
    // the node's privileged container has and some sandboxes do not).
    sh(&format!("truncate -s 512M {}", h.p("disk.img").display()));
    let expanded = svc
        .node_expand_volume(Request::new(proto::NodeExpandVolumeRequest {
            volume_id: ID.into(),
            volume_path: path(&staging),
            capacity_range: Some(proto::CapacityRange {
                required_bytes: 512 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        }))
        .await;
    if has_cap_sys_resource() {
        assert_eq!(expanded.unwrap().into_inner().capacity_bytes, 512 << 20);
        let after = svc
            .node_get_volume_stats(Request::new(stats_req(&target)))
            .await
            .unwrap()
            .into_inner()
            .usage[0]
            .total;
        assert!(after > before + (200 << 20), "{before} -> {after}");
    } else {
        let err = expanded.unwrap_err();
        assert!(err.message().contains("resize2fs"), "{}", err.message());
        eprintln!("online resize not checked: no CAP_SYS_RESOURCE here");
    }

    // Unstage while published: refused, nothing unmounted.
    let unstage = unstage_req(&staging);
    let err = svc
        .node_unstage_volume(Request::new(unstage.clone()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(mountinfo_line(&staging).is_some());

    // Unpublish: unmounted, then the empty directory is removed.
    let unpublish = unpublish_req(&target);
    svc.node_unpublish_volume(Request::new(unpublish.clone()))
        .await
        .unwrap();
    assert!(mountinfo_line(&target).is_none());
    assert!(!target.exists());
    svc.node_unpublish_volume(Request::new(unpublish))
        .await
        .unwrap();

    // Unstage: unmounted and "disconnected"; the staging directory stays.
    svc.node_unstage_volume(Request::new(unstage.clone()))
        .await
        .unwrap();
    assert!(mountinfo_line(&staging).is_none());
    assert!(staging.exists());
    assert!(!h.p("sys/class/nvme/nvme0").exists());
    svc.node_unstage_volume(Request::new(unstage))
        .await
        .unwrap();

    // The same device again, as a raw block volume: a device node.
    let bstaging = h.p("kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/pvc");
    let btarget = h.p("kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc/pod");
    std::fs::create_dir_all(&bstaging).unwrap();
    svc.node_stage_volume(Request::new(stage_req(&bstaging, true)))
        .await
        .unwrap();
    svc.node_publish_volume(Request::new(publish_req(&bstaging, &btarget, true, false)))
        .await
        .unwrap();
    let st = sh(&format!("stat -c '%F %t:%T %a' {}", btarget.display()));
    let (maj, min) = h.devnum.split_once(':').unwrap();
    let hex = |n: &str| format!("{:x}", n.parse::<u32>().unwrap());
    assert_eq!(
        st,
        format!("block special file {}:{} 660", hex(maj), hex(min))
    );
    assert!(mountinfo_line(&btarget).is_none(), "never a bind mount");
    // The node reads the volume: the filesystem made above is there.
    assert_eq!(
        sh(&format!("blkid -p -s TYPE -o value {}", btarget.display())),
        "ext4"
    );
    svc.node_unpublish_volume(Request::new(unpublish_req(&btarget)))
        .await
        .unwrap();
    assert!(!btarget.exists());
    svc.node_unstage_volume(Request::new(unstage_req(&bstaging)))
        .await
        .unwrap();

    // Data without a signature is never formatted: real blkid says
    // "nothing found", the head read says otherwise.
    h.connect();
    sh(&format!(
        "dd if=/dev/urandom of={} bs=4096 count=1 conv=notrunc status=none && wipefs -a -q {} || true",
        h.loopdev, h.loopdev
    ));
    sh(&format!(
        "dd if=/dev/urandom of={} bs=512 count=1 conv=notrunc status=none",
        h.loopdev
    ));
    let err = svc
        .node_stage_volume(Request::new(stage_req(&staging, false)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert!(err.message().contains("not zero"), "{}", err.message());
    assert!(mountinfo_line(&staging).is_none());
}
