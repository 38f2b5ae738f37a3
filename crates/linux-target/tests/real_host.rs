//! The target on this machine's real lvm2 and kernel NVMe target, through
//! a local shell (no SSH): a volume group on a loop device with a thin
//! pool, volumes, snapshots and clones that read back the right bytes, and
//! exports in the real configfs, a fence seen from two connected hosts,
//! the name limits of LVM and device-mapper, and volumes whose IDs are
//! too long for them (derived names). Needs root, lvm2 (and thin_check), loop devices, the modules
//! dm-thin-pool, dm-snapshot (lvcreate asks for it even for thin
//! snapshots), nvmet, nvmet-tcp and nvme-tcp, configfs mounted, and
//! nvme-cli; run it where those are (a QEMU guest) with `--ignored
//! --test-threads=1`. On Debian 12's 6.1 kernel under TCG the four tests pass
//! in about two minutes.

use std::process::Command;
use std::sync::Arc;

use linux_target::names::LvName;
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

/// The IDs of the target's volumes, sorted.
async fn listed(t: &LinuxTarget) -> Vec<String> {
    let mut ids: Vec<String> = t
        .list_volumes()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name.to_string())
        .collect();
    ids.sort();
    ids
}

/// Writes `byte` over the first MiB of a block device.
fn write(dev: &str, byte: u8) {
    sh(&format!(
        "dd if=/dev/zero bs=1M count=1 status=none | tr '\\000' '\\{byte:03o}' | \
         dd of={dev} bs=1M conv=fsync status=none"
    ));
}

/// The distinct bytes of a block device's first MiB, in hex.
fn first_mib(dev: &str) -> String {
    sh(&format!(
        "dd if={dev} bs=1M count=1 status=none | od -An -v -tx1 | tr -s ' ' '\\n' | sort -u | tr -d '\\n'"
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
    write(&t.device(&v), 0xaa);
    let snap = t.create_snapshot(&vol("snap-1"), &v).await.unwrap();
    assert!(snap.is_snapshot() && !snap.active);
    assert_eq!(
        t.create_snapshot(&vol("snap-1"), &v).await.unwrap().name,
        snap.name
    );
    write(&t.device(&v), 0x55);
    let clone = t
        .clone_volume(&vol("pvc-2"), &vol("snap-1"), 64 << 20)
        .await
        .unwrap();
    assert!(clone.active && clone.size_bytes >= 64 << 20);
    assert_eq!(first_mib(&t.device(&vol("pvc-2"))), "aa");
    assert_eq!(first_mib(&t.device(&v)), "55");
    assert_eq!(t.expand_volume(&v, 32 << 20).await.unwrap(), 32 << 20);
    assert_eq!(listed(&t).await, ["pvc-1", "pvc-2", "snap-1"]);

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

/// Runs `script` with `sh`: whether it succeeded, and its stderr.
fn try_sh(script: &str) -> (bool, String) {
    let out = Command::new("sh").args(["-c", script]).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What LVM and device-mapper take as a thin volume's name against what
/// the mapping of IDs to logical volume names (`LvName::of`) keeps as it
/// is: the longest ID of letters it keeps is made and one letter more is
/// refused (LVM counts `<vg>/<lv>`); the longest with many dashes it keeps
/// is made (the next lengths are tried and reported: the mapping counts
/// the dashes doubled, as device-mapper's name has them, which may be
/// stricter than LVM); `+` (a derived name's) is taken; the names LVM
/// reserves are refused.
#[tokio::test]
#[ignore = "needs root, lvm2 with dm-thin and loop devices"]
async fn lvm_and_device_mapper_take_exactly_the_names_the_mapping_keeps() {
    let _pool = Pool::new();
    let vg = VgName::new(VG).unwrap();
    let kept = |id: &str| !LvName::of(&vg, &vol(id)).is_derived();
    let create = |lv: &str| {
        try_sh(&format!(
            "lvcreate -q --yes -V 4M -T {VG}/thin -n {lv} && lvs {VG}/{lv} >/dev/null"
        ))
    };
    let remove = |lv: &str| sh(&format!("lvremove -q --yes {VG}/{lv}"));
    let doubled = |s: &str| s.len() + s.matches('-').count();
    // The longest name `make` gives that the mapping keeps, made; then the
    // next `tries` lengths, each reported; returns whether the first of
    // them was refused.
    let boundary = |make: &dyn Fn(usize) -> String, tries: usize| {
        let n = (0..=128)
            .rev()
            .find(|&n| make(n).len() <= 128 && kept(&make(n)))
            .unwrap();
        let longest = make(n);
        let (ok, err) = create(&longest);
        assert!(ok, "{longest} ({} bytes) was refused: {err}", longest.len());
        let dm = format!("/dev/mapper/{VG}-{}", longest.replace('-', "--"));
        assert!(std::path::Path::new(&dm).exists(), "{dm}");
        remove(&longest);
        println!(
            "limits: in {VG}, {} bytes ({} with dashes doubled) made",
            longest.len(),
            doubled(&longest)
        );
        let mut first_refused = false;
        for k in 1..=tries {
            let over = make(n + k);
            let (ok, err) = create(&over);
            if ok {
                remove(&over);
            }
            first_refused |= k == 1 && !ok;
            println!(
                "limits: in {VG}, {} bytes ({} with dashes doubled) {}",
                over.len(),
                doubled(&over),
                if ok {
                    "made".to_string()
                } else {
                    format!("refused: {}", err.trim())
                }
            );
        }
        first_refused
    };
    assert!(
        boundary(&|n| "a".repeat(n), 1),
        "one letter more than the mapping keeps was taken"
    );
    boundary(&|n| format!("{}{}", "a-".repeat(30), "a".repeat(n)), 3);
    // The characters of a derived name, and what LVM reserves.
    let derived = "pvc-x.y+0123456789abcdef";
    let (ok, err) = create(derived);
    assert!(ok, "'+' in a name: {err}");
    remove(derived);
    for reserved in ["snapshot1", "pvmove0", "x_tmeta", "x_rimage_0"] {
        assert!(!kept(reserved));
        let (ok, err) = create(reserved);
        assert!(!ok, "{reserved} was taken");
        println!("limits: {reserved} refused: {}", err.trim());
    }
}

/// Volumes of IDs too long for LVM (128 characters, as csi-sanity's
/// longest name) live under derived names, keep their ID in a tag, and
/// are found, snapshotted, cloned, exported under the whole ID's NQN (a
/// host connects to it), grown and removed by the ID.
#[tokio::test]
#[ignore = "needs root, lvm2 with dm-thin, the nvmet and nvme-tcp modules and nvme-cli"]
async fn volumes_with_ids_too_long_for_lvm_work_under_derived_names() {
    let _pool = Pool::new();
    let t = target();
    let v = vol(&format!("sanity-{}", "v".repeat(121)));
    let s = vol(&format!("snapshot-{}", "s".repeat(119)));
    let c = vol(&format!("sanity-{}", "c".repeat(121)));
    let made = t.create_volume(&v, 8 << 20).await.unwrap();
    assert!(made.lv.is_derived() && made.active, "{made:?}");
    assert_eq!(t.create_volume(&v, 8 << 20).await.unwrap(), made);
    let dev = t.device(&v);
    assert!(std::path::Path::new(&dev).exists(), "{dev}");
    let tags = sh(&format!("lvs --noheadings -o lv_tags {VG}/{}", made.lv));
    assert!(tags.contains(&format!("rds-csi.id={v}")), "{tags}");
    write(&dev, 0xaa);
    let snap = t.create_snapshot(&s, &v).await.unwrap();
    assert!(snap.is_snapshot() && snap.lv.as_str().starts_with("vsnapshot-"));
    assert_eq!(t.create_snapshot(&s, &v).await.unwrap().name, s);
    let clone = t.clone_volume(&c, &s, 16 << 20).await.unwrap();
    assert!(clone.active && clone.size_bytes >= 16 << 20);
    assert_eq!(first_mib(&t.device(&c)), "aa");
    assert_eq!(t.expand_volume(&v, 32 << 20).await.unwrap(), 32 << 20);
    t.set_marks(&v, true, None).await.unwrap();
    assert_eq!(
        listed(&t).await,
        [c.to_string(), v.to_string(), s.to_string()]
    );

    // Exported as the whole ID's NQN (153 bytes), and a host connects.
    let a =
        Nqn::new("nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-0000-0000-000000000000").unwrap();
    t.export(&v, std::slice::from_ref(&a)).await.unwrap();
    let nqn = t.nqn(&v).to_string();
    println!("long ids: an NQN of {} bytes", nqn.len());
    sh(&format!(
        "nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {nqn} --hostnqn {a} \
         --hostid aaaaaaaa-0000-0000-0000-000000000000"
    ));
    wait_for("the host connects", &nqn, |s| {
        s.len() == 1 && s[0].1 == "live"
    });
    sh(&format!("nvme disconnect -n {nqn}"));
    for id in [&c, &v, &s] {
        t.delete_volume(id).await.unwrap();
        t.delete_volume(id).await.unwrap();
        assert_eq!(t.get_volume(id).await.unwrap(), None);
    }
    assert_eq!(t.export_state(&v).await.unwrap(), None);
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
