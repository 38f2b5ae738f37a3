//! The target on this machine's real lvm2 and kernel NVMe target, through
//! a local shell (no SSH): a volume group on a loop device with a thin
//! pool, volumes, snapshots and clones that read back the right bytes, and
//! exports in the real configfs, and a fence seen from two connected
//! hosts. Needs root, lvm2 (and thin_check), loop devices, the modules
//! dm-thin-pool, dm-snapshot (lvcreate asks for it even for thin
//! snapshots), nvmet, nvmet-tcp and nvme-tcp, configfs mounted, and
//! nvme-cli; run it where those are (a QEMU guest) with `--ignored
//! --test-threads=1`. On Debian 12's 6.1 kernel under TCG both tests pass
//! in about a minute.

use std::process::Command;
use std::sync::Arc;

use linux_target::{
    LinuxTarget, LocalShell, Nqn, PoolName, PortSpec, TargetConfig, VgName, VolumeName,
};

const VG: &str = "rdscsitest";

fn sh(script: &str) -> String {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// util-linux's losetup by path: a busybox shell runs its own, which has
/// no `--show`, before any on `PATH`.
fn losetup() -> &'static str {
    ["/usr/sbin/losetup", "/sbin/losetup"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("losetup")
}

/// A loop-backed volume group with a 256 MiB thin pool, removed on drop.
struct Pool {
    image: tempfile::NamedTempFile,
    loop_dev: String,
}

impl Pool {
    fn new() -> Pool {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(512 << 20).unwrap();
        let loop_dev = sh(&format!(
            "{} -f --show {}",
            losetup(),
            image.path().display()
        ))
        .trim()
        .to_string();
        sh(&format!(
            "pvcreate -q {loop_dev} && vgcreate -q {VG} {loop_dev} && lvcreate -q -L 256M -T {VG}/thin"
        ));
        Pool { image, loop_dev }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "vgremove -q -f {VG}; pvremove -q {dev}; {losetup} -d {dev}",
                    dev = self.loop_dev,
                    losetup = losetup()
                ),
            ])
            .status();
        let _ = &self.image;
    }
}

fn target() -> LinuxTarget {
    let port = PortSpec::new(9, "127.0.0.1".parse().unwrap(), 4420).unwrap();
    let config = TargetConfig::new(
        VgName::new(VG).unwrap(),
        PoolName::new("thin").unwrap(),
        port,
    );
    LinuxTarget::new(Arc::new(LocalShell::default()), config)
}

fn vol(s: &str) -> VolumeName {
    VolumeName::new(s).unwrap()
}

/// Writes `byte` over the first MiB of a volume.
fn write(v: &VolumeName, byte: u8) {
    sh(&format!(
        "dd if=/dev/zero bs=1M count=1 status=none | tr '\\000' '\\{byte:03o}' | \
         dd of=/dev/{VG}/{v} bs=1M conv=fsync status=none"
    ));
}

fn first_mib(v: &VolumeName) -> String {
    sh(&format!(
        "dd if=/dev/{VG}/{v} bs=1M count=1 status=none | od -An -v -tx1 | tr -s ' ' '\\n' | sort -u | tr -d '\\n'"
    ))
}

#[tokio::test]
#[ignore = "needs root, lvm2 with dm-thin, loop devices and the nvmet configfs"]
async fn volumes_snapshots_clones_and_exports_on_real_lvm_thin_and_nvmet() {
    let _pool = Pool::new();
    let t = target();
    let v = vol("pvc-1");

    // Create, retry, capacity.
    let made = t.create_volume(&v, 10_000_000).await.unwrap();
    assert!(made.size_bytes >= 10_000_000 && made.active && made.in_pool);
    assert_eq!(t.create_volume(&v, 10_000_000).await.unwrap(), made);
    let cap = t.capacity().await.unwrap();
    assert_eq!(cap.size_bytes, 256 << 20);
    assert!(cap.free_bytes <= cap.size_bytes);

    // Data, a snapshot, then different data: a clone of the snapshot has
    // the old bytes, grown to the size asked.
    write(&v, 0xaa);
    let snap = t.create_snapshot(&vol("snap-1"), &v).await.unwrap();
    assert!(snap.is_snapshot() && !snap.active);
    assert_eq!(
        t.create_snapshot(&vol("snap-1"), &v).await.unwrap().name,
        snap.name
    );
    write(&v, 0x55);
    let clone = t
        .clone_volume(&vol("pvc-2"), &vol("snap-1"), 64 << 20)
        .await
        .unwrap();
    assert!(clone.active && clone.size_bytes >= 64 << 20);
    assert_eq!(first_mib(&vol("pvc-2")), "aa");
    assert_eq!(first_mib(&v), "55");
    assert_eq!(t.expand_volume(&v, 32 << 20).await.unwrap(), 32 << 20);
    let names: Vec<String> = t
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    assert_eq!(names, ["pvc-1", "pvc-2", "snap-1"]);

    // Export in the real configfs, admit and remove hosts, cut, unexport.
    let a =
        Nqn::new("nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000000").unwrap();
    let b =
        Nqn::new("nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-0000-0000-000000000000").unwrap();
    let e = t.export(&v, std::slice::from_ref(&a)).await.unwrap();
    assert!(!e.any_host && e.on_port);
    assert_eq!(t.export(&v, std::slice::from_ref(&a)).await.unwrap(), e);
    let e = t.allow_host(&v, &b).await.unwrap();
    assert_eq!(e.allowed_hosts.len(), 2);
    let e = t
        .revoke(&v, std::slice::from_ref(&a), true)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.allowed_hosts, [b.to_string()]);
    assert!(e.on_port);
    // An exported volume is open: it is unexported before it is removed.
    t.delete_volume(&v).await.unwrap();
    assert_eq!(t.export_state(&v).await.unwrap(), None);
    assert_eq!(t.get_volume(&v).await.unwrap(), None);
    t.delete_volume(&v).await.unwrap();
    t.delete_volume(&vol("pvc-2")).await.unwrap();
    t.delete_volume(&vol("snap-1")).await.unwrap();
    assert!(t.list_volumes().await.unwrap().is_empty());
}

/// The state of each NVMe controller connected to `nqn`, by host NQN.
fn controllers(nqn: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/sys/class/nvme")
        .into_iter()
        .flatten()
        .flatten()
    {
        let attr = |name: &str| {
            std::fs::read_to_string(entry.path().join(name))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        if attr("subsysnqn") == nqn {
            out.push((attr("hostnqn"), attr("state")));
        }
    }
    out.sort();
    out
}

fn wait_for(what: &str, nqn: &str, ok: impl Fn(&[(String, String)]) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = controllers(nqn);
        if ok(&now) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

#[tokio::test]
#[ignore = "needs root, lvm2 with dm-thin, the nvmet and nvme-tcp modules and nvme-cli"]
async fn a_fence_cuts_the_removed_host_and_the_allowed_host_reconnects() {
    let _pool = Pool::new();
    let t = target();
    let v = vol("pvc-f");
    t.create_volume(&v, 16 << 20).await.unwrap();
    let a =
        Nqn::new("nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000000").unwrap();
    let b =
        Nqn::new("nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-0000-0000-000000000000").unwrap();
    t.export(&v, &[a.clone(), b.clone()]).await.unwrap();
    let nqn = t.nqn(&v).to_string();
    // Two hosts from one machine: each from its own source address, or
    // nvme-cli takes the second for the first already connected.
    for (h, source) in [(&a, "127.0.0.2"), (&b, "127.0.0.3")] {
        sh(&format!(
            "nvme connect -t tcp -a 127.0.0.1 -s 4420 -w {source} -n {nqn} --hostnqn {h} --hostid {id} \
             --reconnect-delay 1 --ctrl-loss-tmo 20",
            id = h.as_str().rsplit(':').next().unwrap()
        ));
    }
    let live = |s: &[(String, String)]| s.len() == 2 && s.iter().all(|(_, st)| st == "live");
    wait_for("both hosts connect", &nqn, live);

    let started = std::time::Instant::now();
    t.revoke(&v, std::slice::from_ref(&a), true).await.unwrap();
    let b_live = |s: &[(String, String)]| {
        s.iter().any(|(h, st)| *h == b.to_string() && st == "live")
            && s.iter().all(|(h, st)| *h != a.to_string() || st != "live")
    };
    // B is cut too, and back once it has reconnected; A is not let back.
    wait_for("b reconnects, a stays out", &nqn, b_live);
    println!("fence: b live again after {:?}", started.elapsed());
    std::thread::sleep(std::time::Duration::from_secs(5));
    let after = controllers(&nqn);
    assert!(b_live(&after), "five seconds later: {after:?}");
    println!("fence: controllers 5 s later: {after:?}");

    sh(&format!("nvme disconnect -n {nqn}"));
    t.delete_volume(&v).await.unwrap();
}
