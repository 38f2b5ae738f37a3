//! The rules of the nvmet backend against a recording fake shell.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use storage::{
    Backend, ClusterId, CopyMethod, CopySpec, ErrorKind, Export, IdPrefix, Layout, Lineage,
    NewVolume, Nqn as HostNqn, Place, SnapshotSpec, Volume, VolumeId, VolumeMeta,
};

use super::*;
use crate::names::{PoolName, PortSpec, VgName};
use crate::shell::{fail, ok, FakeShell, Output};
use crate::target::TargetConfig;
use crate::target_tests::{answering, lvs, ACTIVE, MISSING};

const NQN: &str = "nqn.2000-02.com.mikrotik:pvc-1";
const SNAPSHOT: &str = "Vri---tz-k";

pub(super) fn backend(shell: &FakeShell) -> NvmetBackend {
    let port = PortSpec::new(4420, "10.0.0.5".parse().unwrap(), 4420).unwrap();
    let config = TargetConfig::new(
        VgName::new("vg0").unwrap(),
        PoolName::new("thin").unwrap(),
        port,
    );
    NvmetBackend::new(LinuxTarget::new(Arc::new(shell.clone()), config))
}

pub(super) fn id(s: &str) -> VolumeId {
    VolumeId::new(s).unwrap()
}

fn host(s: &str) -> HostNqn {
    HostNqn::new(&format!("nqn.2014-08.org.nvmexpress:uuid:{s}")).unwrap()
}

/// What the nvmet read script prints for volume `lv` exported on port
/// 4420 admitting `hosts`.
fn dump(lv: &str, hosts: &[&str]) -> String {
    dump_of(lv, lv, hosts)
}

/// [`dump`] of volume `id` on logical volume `lv`.
fn dump_of(id: &str, lv: &str, hosts: &[&str]) -> String {
    let mut s = format!(
        "port 4420 trtype=tcp adrfam=ipv4 traddr=10.0.0.5 trsvcid=4420\n\
         subsystem nqn.2000-02.com.mikrotik:{id}\nallow_any_host 0\n"
    );
    for h in hosts {
        s.push_str(&format!("host {h}\n"));
    }
    s.push_str(&format!(
        "namespace 1 enable=1 device=/dev/vg0/{lv}\nlink 4420\nend\n"
    ));
    s
}

const NO_EXPORT: &str = "port 4420 trtype=tcp adrfam=ipv4 traddr=10.0.0.5 trsvcid=4420\n";

/// A shell that answers by command name and keeps every script.
fn scripted(f: impl Fn(&str, &str) -> Output + Send + Sync + 'static) -> FakeShell {
    FakeShell::new(move |name, script| -> crate::Result<Output> { Ok(f(name, script)) })
}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub(super) fn new_volume(name: &str) -> NewVolume {
    NewVolume {
        id: id(name),
        size_bytes: 1 << 30,
        export: Export {
            nqn: HostNqn::new(&format!("nqn.2000-02.com.mikrotik:{name}")).unwrap(),
            port: 4420,
        },
        place: Place {
            dir: "/storage-pool/metal-csi".into(),
            layout: Layout::Flat,
        },
        meta: VolumeMeta::created(at("2026-12-07T11:00:00Z"), None),
    }
}

fn volume(name: &str, size: u64) -> Volume {
    Volume {
        id: name.into(),
        size_bytes: size,
        ..Volume::default()
    }
}

fn copy_spec(method: CopyMethod, export: Option<(u64, Export)>) -> CopySpec {
    CopySpec {
        source: volume("pvc-1", 1 << 30),
        target: id("snap-1"),
        method,
        place: Place {
            dir: "/storage-pool".into(),
            layout: Layout::Subvolume,
        },
        export,
        meta: VolumeMeta {
            snapshot: Some(Lineage {
                source: id("pvc-1"),
                size_bytes: Some(1 << 30),
                method,
            }),
            ..VolumeMeta::default()
        },
    }
}

#[tokio::test]
async fn it_declares_snapshots_clones_expansion_and_fencing_and_thin_snapshots_only() {
    let shell = answering(|_| {
        ok(
            r#"{"report":[{"lv":[{"lv_name":"thin","lv_size":"1073741824","data_percent":"25.00","metadata_percent":"1.00"}]}]}"#,
        )
    });
    let b = backend(&shell);
    let caps = b.capabilities();
    assert!(caps.snapshots && caps.clones && caps.expansion && caps.fencing);
    let info = b.pool_info("storage-pool").await.unwrap();
    assert_eq!(info.methods, [CopyMethod::Subvolume]);
    assert!(info.allows(Layout::Subvolume));
    assert_eq!(
        shell.names(),
        ["lvs_pool"],
        "the pool is read to be sure it is there"
    );
    let cap = b.capacity("storage-pool").await.unwrap();
    assert_eq!(cap.size_bytes, 1 << 30);
    assert_eq!(cap.free_bytes, 3 << 28);
}

#[tokio::test]
async fn invalid_input_is_refused_before_any_command() {
    let shell = FakeShell::ok();
    let b = backend(&shell);
    let mut spec = new_volume("pvc-1");
    spec.size_bytes = 0;
    assert_eq!(
        b.create_volume(&spec).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    let mut spec = new_volume("pvc-1");
    spec.export.port = 4421;
    let e = b.create_volume(&spec).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("port 4420 only"), "{e}");
    let mut spec = new_volume("pvc-1");
    spec.export.nqn = HostNqn::new("nqn.2024-01.io.example:pvc-1").unwrap();
    assert_eq!(
        b.create_volume(&spec).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    // A host NQN the kernel target would not take (no date, no ':').
    let e = b
        .set_allowed_hosts(&id("pvc-1"), &[HostNqn::new("nqn.x").unwrap()])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(shell.calls().is_empty(), "{:?}", shell.names());
}

#[tokio::test]
async fn a_new_volume_carries_the_records_and_is_exported_admitting_no_host() {
    let shell = scripted(|name, _| match name {
        "lvcreate_thin" => ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])),
        "nvmet_export" => ok(&dump("pvc-1", &[])),
        _ => fail(1, "unexpected"),
    });
    let b = backend(&shell);
    let mut spec = new_volume("pvc-1");
    spec.meta.cluster = Some(ClusterId::new("c1").unwrap());
    b.create_volume(&spec).await.unwrap();
    let calls = shell.calls();
    assert_eq!(shell.names(), ["lvcreate_thin", "nvmet_export"]);
    assert!(
        calls[0].1.contains("--addtag 'rds-csi.cluster=c1'"),
        "{}",
        calls[0].1
    );
    assert!(
        calls[0]
            .1
            .contains("'rds-csi.created=2026-12-07T11:00:00Z'"),
        "{}",
        calls[0].1
    );
    // Exactly no host: every host link is removed, none is made.
    let export = &calls[1].1;
    assert!(export.contains("*) rm \"$h\" ;;"), "{export}");
    assert!(!export.contains("allowed_hosts/\"nqn"), "{export}");
}

/// csi-sanity's longest volume name, 128 characters: too long for an LVM
/// name, so its logical volume has a derived name; the driver sees only
/// the ID, and the NQN is the whole ID's.
#[tokio::test]
async fn a_128_character_id_is_made_exported_read_back_listed_and_deleted_by_it() {
    let name = format!("sanity-{}", "x".repeat(121));
    let lv = backend(&FakeShell::ok())
        .target()
        .lv(&VolumeName::new(&name).unwrap());
    assert!(lv.is_derived(), "{lv}");
    let tags = format!("rds-csi,rds-csi.id={name}");
    let report = lvs(&[(lv.as_str(), 1 << 30, &tags, ACTIVE)]);
    let export = dump_of(&name, lv.as_str(), &[]);
    let shell = answering(move |n| match n {
        "lvcreate_thin" | "lvs_get" | "lvs_list" => ok(&report),
        _ => ok(&export),
    });
    let b = backend(&shell);
    b.create_volume(&new_volume(&name)).await.unwrap();
    let v = b.get_volume(&id(&name)).await.unwrap().unwrap();
    assert_eq!(v.id, name);
    assert_eq!(v.location, Some(format!("/dev/vg0/{lv}")));
    assert_eq!(v.nqn, Some(format!("nqn.2000-02.com.mikrotik:{name}")));
    assert!(v.exported, "{v:?}");
    let listed = b
        .list_volumes(&IdPrefix::new("sanity-").unwrap())
        .await
        .unwrap();
    assert_eq!(listed, vec![v]);
    b.delete_volume(&id(&name), None).await.unwrap();
    let (_, delete) = shell.calls().pop().unwrap();
    assert!(
        delete.contains(&format!("lvremove --yes vg0/{lv}")),
        "{delete}"
    );
    assert!(
        delete.contains(&format!("nqn.2000-02.com.mikrotik:{name}")),
        "{delete}"
    );
}

#[tokio::test]
async fn an_export_that_admits_a_host_it_should_not_fails() {
    let shell = answering(|name| match name {
        "lvcreate_thin" => ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])),
        _ => ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:x"])),
    });
    let e = backend(&shell)
        .create_volume(&new_volume("pvc-1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal, "{e}");
}

#[tokio::test]
async fn a_volume_reads_back_with_its_export_device_and_records() {
    let tags = "rds-csi,rds-csi.cluster=c1,rds-csi.created=2026-12-07T11:00:00Z,rds-csi.retain";
    let shell = answering(move |name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-1", 1 << 30, tags, ACTIVE)])),
        _ => ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:a"])),
    });
    let v = backend(&shell)
        .get_volume(&id("pvc-1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.location.as_deref(), Some("/dev/vg0/pvc-1"));
    assert_eq!(v.layout, Layout::Subvolume);
    assert_eq!(v.nqn.as_deref(), Some(NQN));
    assert_eq!(v.port, Some(4420));
    assert!(v.exported);
    assert_eq!(
        v.allowed_hosts,
        Some(vec![host("a").to_string()]),
        "the fence list as configfs shows it"
    );
    assert_eq!(v.meta.cluster.unwrap().as_str(), "c1");
    assert!(v.meta.retain);
    assert_eq!(shell.names(), ["lvs_get", "nvmet_read"]);
}

#[tokio::test]
async fn a_volume_whose_export_was_lost_reads_unexported_with_no_host_list() {
    // After a reboot of the host: the volume is there, configfs is empty.
    let shell = answering(|name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])),
        _ => ok(NO_EXPORT),
    });
    let v = backend(&shell)
        .get_volume(&id("pvc-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(!v.exported);
    assert_eq!(
        v.allowed_hosts, None,
        "so the next publish exports it again"
    );
    assert_eq!(v.nqn.as_deref(), Some(NQN), "the NQN is the volume's own");
}

#[tokio::test]
async fn an_absent_volume_is_none_and_a_snapshot_is_read_without_configfs() {
    let shell = answering(|_| fail(5, MISSING));
    assert_eq!(
        backend(&shell).get_volume(&id("pvc-1")).await.unwrap(),
        None
    );
    let tags = "rds-csi,rds-csi.snapshot-of=pvc-1,rds-csi.method=subvolume";
    let shell = answering(move |_| ok(&lvs(&[("snap-1", 1 << 30, tags, SNAPSHOT)])));
    let v = backend(&shell)
        .get_volume(&id("snap-1"))
        .await
        .unwrap()
        .unwrap();
    assert!(v.is_snapshot() && !v.exported && v.nqn.is_none());
    let lineage = v.meta.snapshot.unwrap();
    assert_eq!(lineage.source.as_str(), "pvc-1");
    assert_eq!(lineage.size_bytes, None, "sized by the snapshot itself");
    assert_eq!(shell.names(), ["lvs_get"]);
}

#[tokio::test]
async fn a_logical_volume_the_driver_did_not_make_is_refused_never_exported() {
    for (tags, pool) in [("", "thin"), ("rds-csi", "")] {
        let row = serde_json::json!({"report": [{"lv": [{"lv_name": "pvc-1",
            "lv_size": "1073741824", "origin": "", "lv_tags": tags, "pool_lv": pool,
            "lv_attr": if pool.is_empty() { "-wi-a-----" } else { ACTIVE }}]}]})
        .to_string();
        let shell = answering(move |_| ok(&row));
        let e = backend(&shell).get_volume(&id("pvc-1")).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{tags} {pool}: {e}");
        assert!(
            e.to_string().contains("not a volume this driver made"),
            "{e}"
        );
        assert_eq!(shell.names(), ["lvs_get"], "configfs is not even read");
    }
}

#[tokio::test]
async fn the_fence_list_is_made_exactly_the_hosts_given() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let shell = scripted(move |_, script| {
        s.lock().unwrap().push(script.to_string());
        ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:b"]))
    });
    let b = backend(&shell);
    b.set_allowed_hosts(&id("pvc-1"), &[host("b"), host("b")])
        .await
        .unwrap();
    let script = seen.lock().unwrap()[0].clone();
    let b_host = host("b").to_string();
    assert!(
        script.contains(&format!(
            "case \"${{h##*/}}\" in {b_host}) ;; *) rm \"$h\" ;; esac"
        )),
        "every other host is removed: {script}"
    );
    let removal = script.find("*) rm \"$h\"").unwrap();
    let link = script.find("ln -s \"$S\" \"$P/subsystems/\"").unwrap();
    assert!(removal < link, "removed before the port is linked");
    // An export still admitting another host is a failure, not success.
    let shell = answering(|_| ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:a"])));
    let e = backend(&shell)
        .set_allowed_hosts(&id("pvc-1"), &[])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[tokio::test]
async fn a_cut_relinks_the_port_and_keeps_the_hosts() {
    let shell = answering(|_| ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:a"])));
    backend(&shell).cut_sessions(&id("pvc-1")).await.unwrap();
    let calls = shell.calls();
    assert_eq!(shell.names(), ["nvmet_fence"]);
    let script = &calls[0].1;
    assert!(script.contains("rm \"$p/subsystems/\""), "{script}");
    assert!(
        script.contains("ln -s \"$S\" \"$R/ports/4420/subsystems/\""),
        "{script}"
    );
    assert!(
        !script.contains("allowed_hosts/\"nqn"),
        "no host is removed: {script}"
    );
}

#[tokio::test]
async fn a_snapshot_is_a_thin_snapshot_with_its_lineage_and_no_export() {
    for method in [CopyMethod::Subvolume, CopyMethod::CopyFrom] {
        let shell = scripted(|_, _| ok(&lvs(&[("snap-1", 1 << 30, "rds-csi", SNAPSHOT)])));
        backend(&shell)
            .copy(&copy_spec(method, None))
            .await
            .unwrap();
        let calls = shell.calls();
        assert_eq!(shell.names(), ["lvcreate_snapshot"], "{method}");
        let script = &calls[0].1;
        assert!(
            script.contains("lvcreate --yes -s vg0/pvc-1 -n snap-1"),
            "{script}"
        );
        assert!(script.contains("rds-csi.snapshot-of=pvc-1"), "{script}");
        assert!(
            script.contains(&format!("rds-csi.method={method}")),
            "{script}"
        );
        assert!(script.contains("rds-csi.size=1073741824"), "{script}");
    }
}

#[tokio::test]
async fn a_restore_is_a_writable_clone_grown_to_size_and_exported_to_no_host() {
    let shell = answering(|name| match name {
        "lvcreate_clone" => ok(&lvs(&[("pvc-2", 1 << 30, "rds-csi", ACTIVE)])),
        "lvchange_clone" => ok(&lvs(&[("pvc-2", 2 << 30, "rds-csi", ACTIVE)])),
        _ => ok(&dump("pvc-2", &[])),
    });
    let mut spec = copy_spec(CopyMethod::Subvolume, None);
    spec.target = id("pvc-2");
    spec.meta = VolumeMeta::created(at("2026-12-07T11:00:00Z"), None);
    spec.export = Some((
        2 << 30,
        Export {
            nqn: HostNqn::new("nqn.2000-02.com.mikrotik:pvc-2").unwrap(),
            port: 4420,
        },
    ));
    backend(&shell).copy(&spec).await.unwrap();
    assert_eq!(
        shell.names(),
        ["lvcreate_clone", "lvchange_clone", "nvmet_export"]
    );
    let clone = &shell.calls()[0].1;
    assert!(clone.contains("rds-csi.clone-of=pvc-1"), "{clone}");
    assert!(
        !clone.contains("snapshot-of"),
        "a clone is a volume: {clone}"
    );
}

#[tokio::test]
async fn byte_copies_are_refused_with_a_reason() {
    let shell = FakeShell::ok();
    let b = backend(&shell);
    let e = b
        .copy(&copy_spec(CopyMethod::ByteCopy, None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("no byte copies"), "{e}");
    let e = b.start_copy(&id("pvc-1"), &id("pvc-2")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(shell.calls().is_empty());
}

#[tokio::test]
async fn a_direct_snapshot_of_an_absent_volume_is_false() {
    let spec = SnapshotSpec {
        pool: "storage-pool".into(),
        source: id("pvc-1"),
        target: id("snap-1"),
        meta: VolumeMeta::default(),
    };
    let shell = answering(|_| fail(5, MISSING));
    assert!(!backend(&shell).snapshot_volume(&spec).await.unwrap());
    let shell = answering(|_| ok(&lvs(&[("snap-1", 1 << 30, "rds-csi", SNAPSHOT)])));
    assert!(backend(&shell).snapshot_volume(&spec).await.unwrap());
    assert_eq!(shell.names(), ["lvcreate_snapshot"], "no lookup first");
}

#[tokio::test]
async fn a_retried_snapshot_of_another_volume_is_already_exists() {
    let shell = answering(|name| match name {
        "lvcreate_snapshot" => fail(
            5,
            "  Logical Volume \"snap-1\" already exists in volume group \"vg0\"",
        ),
        _ => ok(&lvs(&[(
            "snap-1",
            1 << 30,
            "rds-csi,rds-csi.snapshot-of=pvc-9",
            SNAPSHOT,
        )])),
    });
    let e = backend(&shell)
        .copy(&copy_spec(CopyMethod::Subvolume, None))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
}

#[tokio::test]
async fn delete_unexports_then_removes_and_gone_is_success() {
    let shell = answering(|name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])),
        _ => ok(""),
    });
    backend(&shell)
        .delete_volume(&id("pvc-1"), None)
        .await
        .unwrap();
    let calls = shell.calls();
    let script = &calls[1].1;
    assert!(
        script.find("rmdir \"$S\"").unwrap() < script.find("lvremove").unwrap(),
        "{script}"
    );
    let shell = answering(|_| fail(5, MISSING));
    backend(&shell)
        .delete_volume(&id("pvc-1"), None)
        .await
        .unwrap();
    assert_eq!(shell.names(), ["lvs_get"]);
}

#[tokio::test]
async fn listing_shows_only_the_driver_s_volumes_under_the_prefix_with_their_exports() {
    let shell = answering(|name| match name {
        "lvs_list" => ok(&lvs(&[
            ("pvc-1", 1 << 30, "rds-csi", ACTIVE),
            ("pvc-hand", 1 << 30, "", ACTIVE),
            ("other-1", 1 << 30, "rds-csi", ACTIVE),
            (
                "snap-1",
                1 << 30,
                "rds-csi,rds-csi.snapshot-of=pvc-1",
                SNAPSHOT,
            ),
        ])),
        _ => ok(&dump("pvc-1", &["nqn.2014-08.org.nvmexpress:uuid:a"])),
    });
    let b = backend(&shell);
    let vols = b
        .list_volumes(&IdPrefix::new("pvc-").unwrap())
        .await
        .unwrap();
    let ids: Vec<&str> = vols.iter().map(|v| v.id.as_str()).collect();
    assert_eq!(ids, ["pvc-1"]);
    assert_eq!(vols[0].allowed_hosts, Some(vec![host("a").to_string()]));
    let snaps = b
        .list_volumes(&IdPrefix::new("snap-").unwrap())
        .await
        .unwrap();
    assert!(snaps[0].is_snapshot() && !snaps[0].exported);
}

#[tokio::test]
async fn set_meta_replaces_the_records_and_keeps_a_clone_s_source() {
    let current = "rds-csi,rds-csi.clone-of=snap-1,rds-csi.created=2026-12-07T11:00:00Z";
    let shell = answering(move |name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-2", 1 << 30, current, ACTIVE)])),
        _ => ok(""),
    });
    let meta = VolumeMeta {
        created: Some(at("2026-12-07T11:00:00Z")),
        retain: true,
        ..VolumeMeta::default()
    };
    backend(&shell).set_meta(&id("pvc-2"), &meta).await.unwrap();
    let calls = shell.calls();
    assert_eq!(shell.names(), ["lvs_get", "lvchange_tags"]);
    assert!(
        calls[1]
            .1
            .contains("lvchange --addtag rds-csi.retain vg0/pvc-2"),
        "{}",
        calls[1].1
    );
}
