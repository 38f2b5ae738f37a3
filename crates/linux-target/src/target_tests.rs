//! The rules of [`LinuxTarget`] against a recording fake shell.

use std::sync::Arc;

use crate::error::{Error, Result, E};
use crate::names::{Nqn, PoolName, PortSpec, VgName, VolumeName};
use crate::shell::{fail, ok, FakeShell, Output};
use crate::target::{LinuxTarget, TargetConfig};

fn target(shell: &FakeShell) -> LinuxTarget {
    let port = PortSpec::new(1, "10.0.0.5".parse().unwrap(), 4420).unwrap();
    let config = TargetConfig::new(
        VgName::new("vg0").unwrap(),
        PoolName::new("thin").unwrap(),
        port,
    );
    LinuxTarget::new(Arc::new(shell.clone()), config)
}

fn vol(s: &str) -> VolumeName {
    VolumeName::new(s).unwrap()
}

fn host(s: &str) -> Nqn {
    Nqn::new(&format!("nqn.2014-08.org.nvmexpress:uuid:{s}")).unwrap()
}

/// An `lvs` report of thin volumes in pool `thin`: (name, size, tags, attr).
pub(crate) fn lvs(rows: &[(&str, u64, &str, &str)]) -> String {
    let rows: Vec<_> = rows
        .iter()
        .map(|(name, size, tags, attr)| {
            serde_json::json!({"lv_name": name, "lv_size": size.to_string(), "origin": "",
                "lv_tags": tags, "pool_lv": "thin", "lv_attr": attr})
        })
        .collect();
    serde_json::json!({"report": [{"lv": rows}]}).to_string()
}

pub(crate) const ACTIVE: &str = "Vwi-a-tz--";
const EXISTS: &str = "  Logical Volume \"x\" already exists in volume group \"vg0\"";
pub(crate) const MISSING: &str = "  Failed to find logical volume \"vg0/x\"";

/// A shell that answers by command name.
pub(crate) fn answering(f: impl Fn(&str) -> Output + Send + Sync + 'static) -> FakeShell {
    FakeShell::new(move |name, _| -> Result<Output> { Ok(f(name)) })
}

#[tokio::test]
async fn invalid_input_is_refused_before_any_command() {
    let shell = FakeShell::ok();
    let t = target(&shell);
    let v = vol("pvc-1");
    assert_eq!(
        t.create_volume(&v, 0).await.unwrap_err().kind(),
        "validation"
    );
    assert_eq!(
        t.expand_volume(&v, u64::MAX).await.unwrap_err().kind(),
        "validation"
    );
    assert!(shell.calls().is_empty(), "{:?}", shell.calls());
}

#[tokio::test]
async fn a_new_volume_is_a_tagged_thin_volume_of_the_pool_with_the_size_lvm_reports() {
    let shell = answering(|_| ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])));
    let v = target(&shell)
        .create_volume(&vol("pvc-1"), 1_000_000_000)
        .await
        .unwrap();
    assert_eq!(v.size_bytes, 1 << 30);
    assert!(v.in_pool && v.meta.is_some() && v.active);
    let calls = shell.calls();
    assert_eq!(calls.len(), 1, "one round trip");
    let script = &calls[0].1;
    assert!(
        script.contains("lvcreate --yes -V 1000000000B -T vg0/thin -n pvc-1 --addtag rds-csi --addtag 'rds-csi.created="),
        "{script}"
    );
    assert!(
        script.contains(">&2\nlvs "),
        "the act's chatter is kept off the report: {script}"
    );
}

/// A 128-character ID, as csi-sanity's longest volume name: too long for
/// device-mapper in any volume group.
fn long_id() -> VolumeName {
    vol(&format!("sanity-{}", "x".repeat(121)))
}

#[tokio::test]
async fn a_volume_too_long_for_lvm_is_made_under_a_derived_name_with_its_id_tagged() {
    let id = long_id();
    let t = target(&FakeShell::ok());
    let lv = t.lv(&id);
    assert!(lv.is_derived(), "{lv}");
    let tags = format!("rds-csi,rds-csi.id={id}");
    let report = lvs(&[(lv.as_str(), 1 << 30, &tags, ACTIVE)]);
    let shell = answering(move |_| ok(&report));
    let t = target(&shell);
    let v = t.create_volume(&id, 1 << 30).await.unwrap();
    assert_eq!(v.name, id, "read back by its ID");
    assert_eq!(v.lv, lv);
    let script = &shell.calls()[0].1;
    assert!(
        script.contains(&format!("-n {lv} --addtag rds-csi")),
        "{script}"
    );
    assert!(
        script.contains(&format!("--addtag 'rds-csi.id={id}'")),
        "{script}"
    );
    assert!(script.contains(&format!("lvs --reportformat json --units b --nosuffix -o lv_name,lv_size,origin,lv_tags,pool_lv,lv_attr vg0/{lv}")), "{script}");
    assert_eq!(t.device(&id), format!("/dev/vg0/{lv}"));
    assert_eq!(
        t.nqn(&id).as_str(),
        format!("nqn.2000-02.com.mikrotik:{id}"),
        "the NQN keeps the whole ID"
    );
    // Found by its ID, listed under it.
    assert_eq!(t.get_volume(&id).await.unwrap(), Some(v.clone()));
    assert_eq!(t.list_volumes().await.unwrap(), vec![v]);
    // A volume whose ID fits has no ID tag.
    let shell = answering(|_| ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])));
    target(&shell)
        .create_volume(&vol("pvc-1"), 1 << 30)
        .await
        .unwrap();
    assert!(!shell.calls()[0].1.contains("rds-csi.id="));
}

#[tokio::test]
async fn a_derived_name_without_the_right_id_tag_is_not_the_volume() {
    let id = long_id();
    let lv = target(&FakeShell::ok()).lv(&id);
    for tags in [
        "rds-csi".to_string(),
        "rds-csi,rds-csi.id=sanity-other".to_string(),
        format!("rds-csi,rds-csi.id={id},rds-csi.id=pvc-2"),
    ] {
        let report = lvs(&[(lv.as_str(), 1 << 30, &tags, ACTIVE)]);
        let shell = answering(move |name| match name {
            "lvcreate_thin" => fail(5, EXISTS),
            _ => ok(&report),
        });
        let t = target(&shell);
        assert_eq!(t.get_volume(&id).await.unwrap(), None, "{tags}");
        assert!(t.list_volumes().await.unwrap().is_empty(), "{tags}");
        let e = t.create_volume(&id, 1 << 30).await.unwrap_err();
        assert_eq!(e.kind(), "already_exists", "{tags}: {e}");
    }
    // An ID tag copied onto a volume of another name names nothing.
    let tags = format!("rds-csi,rds-csi.id={id}");
    let report = lvs(&[("pvc-1", 1 << 30, &tags, ACTIVE)]);
    let shell = answering(move |_| ok(&report));
    assert!(target(&shell).list_volumes().await.unwrap().is_empty());
}

#[tokio::test]
async fn snapshots_clones_growth_records_and_removal_find_a_derived_name() {
    let id = long_id();
    let snap = vol(&format!("snapshot-{}", "y".repeat(100)));
    let t = target(&FakeShell::ok());
    let (lv, snap_lv) = (t.lv(&id), t.lv(&snap));
    assert!(snap_lv.as_str().starts_with("vsnapshot-yyy"), "{snap_lv}");
    let snap_tags = format!("rds-csi,rds-csi.id={snap},rds-csi.snapshot-of={id}");
    let vol_tags = format!("rds-csi,rds-csi.clone-of={snap},rds-csi.id={id}");
    let report = lvs(&[
        (lv.as_str(), 1 << 30, &vol_tags, "Vwi---tz-k"),
        (snap_lv.as_str(), 1 << 30, &snap_tags, "Vri---tz-k"),
    ]);
    let shell = answering(move |_| ok(&report));
    let t = target(&shell);
    let s = t.create_snapshot(&snap, &id).await.unwrap();
    assert_eq!(s.name, snap);
    assert!(s.is_snapshot());
    let c = t.clone_volume(&id, &snap, 2 << 30).await.unwrap();
    assert_eq!(c.name, id);
    t.expand_volume(&id, 4 << 30).await.unwrap();
    t.set_marks(&id, true, None).await.unwrap();
    let records = crate::meta::Meta::created("2026-12-07T11:00:00Z".parse().unwrap(), None);
    t.set_records(&id, &records).await.unwrap();
    t.delete_volume(&id).await.unwrap();
    let scripts: Vec<String> = shell.calls().into_iter().map(|(_, s)| s).collect();
    let all = scripts.join("\n----\n");
    for want in [
        format!("lvcreate --yes -s vg0/{lv} -n {snap_lv} --addtag rds-csi"),
        format!("--addtag 'rds-csi.snapshot-of={id}' --addtag 'rds-csi.id={snap}'"),
        format!("lvcreate --yes -s vg0/{snap_lv} -n {lv} --setactivationskip n -ay"),
        format!("--addtag 'rds-csi.clone-of={snap}' --addtag 'rds-csi.id={id}'"),
        format!("lvchange --setactivationskip n vg0/{lv} && lvchange -ay vg0/{lv}"),
        format!("lvextend -L 2147483648B vg0/{lv}"),
        format!("lvextend -L 4294967296B vg0/{lv}"),
        format!("lvchange --addtag rds-csi.retain vg0/{lv}"),
        format!("lvchange --addtag 'rds-csi.created=2026-12-07T11:00:00Z' vg0/{lv}"),
        format!("lvremove --yes vg0/{lv}"),
        format!("nqn.2000-02.com.mikrotik:{id}"),
    ] {
        assert!(all.contains(&want), "{want} not in:\n{all}");
    }
    // The ID tag is not a record: replacing the records keeps it.
    assert!(!all.contains("--deltag 'rds-csi.id="), "{all}");
}

#[tokio::test]
async fn creating_an_existing_volume_is_success_only_when_it_is_the_same_volume() {
    for (tags, size, want_ok) in [
        ("rds-csi", 1u64 << 30, true),
        ("rds-csi", 1 << 20, false),
        ("", 1 << 30, false),
        ("rds-csi,rds-csi.snapshot-of=pvc-0", 1 << 30, false),
    ] {
        let report = lvs(&[("pvc-1", size, tags, ACTIVE)]);
        let shell = answering(move |name| match name {
            "lvcreate_thin" => fail(5, EXISTS),
            _ => ok(&report),
        });
        let r = target(&shell).create_volume(&vol("pvc-1"), 1 << 30).await;
        assert_eq!(r.is_ok(), want_ok, "{tags} {size}: {r:?}");
        if let Err(e) = r {
            assert_eq!(e.kind(), "already_exists", "{e}");
        }
        assert_eq!(shell.names(), ["lvcreate_thin", "lvs_get"]);
    }
}

#[tokio::test]
async fn an_absent_volume_is_none_but_a_missing_volume_group_is_an_error() {
    let shell = answering(|_| fail(5, MISSING));
    assert_eq!(
        target(&shell).get_volume(&vol("pvc-1")).await.unwrap(),
        None
    );
    let shell = answering(|_| {
        fail(
            5,
            "  Volume group \"vg0\" not found\n  Cannot process volume group vg0",
        )
    });
    let e = target(&shell).get_volume(&vol("pvc-1")).await.unwrap_err();
    assert_eq!(e.kind(), "failed");
    let shell = FakeShell::new(|_, _| Err(Error(E::Unreachable("down".into()))));
    assert!(target(&shell)
        .get_volume(&vol("pvc-1"))
        .await
        .unwrap_err()
        .is_transient());
}

#[tokio::test]
async fn the_list_holds_only_the_driver_s_volumes_in_the_pool() {
    let mut report: serde_json::Value = serde_json::from_str(&lvs(&[
        ("pvc-1", 1, "rds-csi", ACTIVE),
        ("handmade", 1, "", ACTIVE),
        ("thin", 1 << 30, "", "twi-aotz--"),
    ]))
    .unwrap();
    report["report"][0]["lv"][2]["pool_lv"] = "".into();
    let shell = answering(move |_| ok(&report.to_string()));
    let list = target(&shell).list_volumes().await.unwrap();
    assert_eq!(
        list.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["pvc-1"]
    );
}

#[tokio::test]
async fn expanding_never_shrinks_and_grows_in_one_step() {
    let shell = answering(|_| ok(&lvs(&[("pvc-1", 2 << 30, "rds-csi", ACTIVE)])));
    assert_eq!(
        target(&shell)
            .expand_volume(&vol("pvc-1"), 1 << 30)
            .await
            .unwrap(),
        2 << 30
    );
    assert_eq!(shell.names(), ["lvs_get"]);
    let shell = answering(|name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-1", 1 << 30, "rds-csi", ACTIVE)])),
        _ => ok(&lvs(&[("pvc-1", 3 << 30, "rds-csi", ACTIVE)])),
    });
    assert_eq!(
        target(&shell)
            .expand_volume(&vol("pvc-1"), 3 << 30)
            .await
            .unwrap(),
        3 << 30
    );
    assert!(shell.calls()[1]
        .1
        .contains("lvextend -L 3221225472B vg0/pvc-1 >&2"));
}

#[tokio::test]
async fn a_retried_snapshot_is_the_same_snapshot_and_another_source_is_a_conflict() {
    for (source, want_ok) in [("pvc-1", true), ("pvc-2", false)] {
        let tags = format!("rds-csi,rds-csi.snapshot-of={source}");
        let shell = answering(move |name| match name {
            "lvcreate_snapshot" => fail(5, EXISTS),
            _ => ok(&lvs(&[("snap-1", 1 << 30, &tags, "Vwi---tz-k")])),
        });
        let r = target(&shell)
            .create_snapshot(&vol("snap-1"), &vol("pvc-1"))
            .await;
        assert_eq!(r.is_ok(), want_ok, "{r:?}");
    }
}

#[tokio::test]
async fn a_clone_cut_off_before_activation_is_activated_and_grown_on_retry() {
    let shell = answering(|name| match name {
        "lvcreate_clone" => fail(5, EXISTS),
        "lvs_get" => ok(&lvs(&[(
            "pvc-2",
            1 << 30,
            "rds-csi,rds-csi.clone-of=snap-1",
            "Vwi---tz-k",
        )])),
        _ => ok(&lvs(&[(
            "pvc-2",
            2 << 30,
            "rds-csi,rds-csi.clone-of=snap-1",
            ACTIVE,
        )])),
    });
    let v = target(&shell)
        .clone_volume(&vol("pvc-2"), &vol("snap-1"), 2 << 30)
        .await
        .unwrap();
    assert!(v.active && v.size_bytes == 2 << 30);
    let calls = shell.calls();
    assert_eq!(
        shell.names(),
        ["lvcreate_clone", "lvs_get", "lvchange_clone"]
    );
    let finish = &calls[2].1;
    assert!(
        finish.contains("lvchange --setactivationskip n vg0/pvc-2 && lvchange -ay vg0/pvc-2 >&2"),
        "{finish}"
    );
    assert!(
        finish.contains("lvextend -L 2147483648B vg0/pvc-2 >&2"),
        "{finish}"
    );
}

#[tokio::test]
async fn a_new_clone_is_made_active_from_its_source() {
    let shell = answering(|_| {
        ok(&lvs(&[(
            "pvc-2",
            1 << 30,
            "rds-csi,rds-csi.clone-of=snap-1",
            ACTIVE,
        )]))
    });
    let v = target(&shell)
        .clone_volume(&vol("pvc-2"), &vol("snap-1"), 1 << 30)
        .await
        .unwrap();
    assert_eq!(v.meta.unwrap().clone_of, Some(vol("snap-1")));
    assert_eq!(shell.names(), ["lvcreate_clone"]);
    assert!(shell.calls()[0]
        .1
        .contains("lvcreate --yes -s vg0/snap-1 -n pvc-2 --setactivationskip n -ay"));
}

#[tokio::test]
async fn deleting_unexports_first_and_never_removes_what_the_driver_did_not_make() {
    let shell = answering(|name| match name {
        "lvs_get" => ok(&lvs(&[("pvc-1", 1, "rds-csi", ACTIVE)])),
        _ => ok(""),
    });
    target(&shell).delete_volume(&vol("pvc-1")).await.unwrap();
    let script = &shell.calls()[1].1;
    let unlink = script.find("rmdir \"$S\"").unwrap();
    let remove = script.find("lvremove --yes vg0/pvc-1").unwrap();
    assert!(unlink < remove, "{script}");

    let shell = answering(|_| ok(&lvs(&[("pvc-1", 1, "", ACTIVE)])));
    let e = target(&shell)
        .delete_volume(&vol("pvc-1"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), "failed");
    assert_eq!(shell.names(), ["lvs_get"]);

    let shell = answering(|_| fail(5, MISSING));
    target(&shell).delete_volume(&vol("pvc-1")).await.unwrap();
    assert_eq!(shell.names(), ["lvs_get"]);
}

const EXPORTED: &str = "port 1 trtype=tcp adrfam=ipv4 traddr=10.0.0.5 trsvcid=4420
subsystem nqn.2000-02.com.mikrotik:pvc-1
allow_any_host 0
host nqn.2014-08.org.nvmexpress:uuid:a
namespace 1 enable=1 device=/dev/vg0/pvc-1
link 1
end
";

#[tokio::test]
async fn an_export_is_locked_down_before_it_is_reachable_and_checked_after() {
    let shell = answering(|_| ok(EXPORTED));
    let e = target(&shell)
        .export(&vol("pvc-1"), &[host("a")])
        .await
        .unwrap();
    assert_eq!(e.allowed_hosts, ["nqn.2014-08.org.nvmexpress:uuid:a"]);
    assert!(!e.any_host && e.on_port);
    let calls = shell.calls();
    assert_eq!(calls.len(), 1, "one round trip");
    let s = &calls[0].1;
    let pos = |needle: &str| {
        s.find(needle)
            .unwrap_or_else(|| panic!("{needle} not in {s}"))
    };
    let lock = pos("echo 0 > \"$S/attr_allow_any_host\"");
    let admit = pos("ln -s \"$R/hosts/\"nqn.2014-08.org.nvmexpress:uuid:a");
    let enable = pos("echo 1 > \"$N/enable\"");
    let link = pos("ln -s \"$S\" \"$P/subsystems/\"");
    assert!(lock < admit && admit < enable && enable < link, "{s}");
    assert!(s.contains("echo /dev/vg0/pvc-1 > \"$N/device_path\""));
    assert!(s.contains("lvchange -ay -K vg0/pvc-1"));
}

#[tokio::test]
async fn an_export_that_configfs_does_not_show_as_asked_fails() {
    for bad in [
        EXPORTED.replace("allow_any_host 0", "allow_any_host 1"),
        EXPORTED.replace("link 1\n", ""),
        EXPORTED.replace("enable=1", "enable=0"),
        EXPORTED.replace("host nqn.2014-08.org.nvmexpress:uuid:a\n", ""),
    ] {
        let shell = answering(move |_| ok(&bad));
        let e = target(&shell)
            .export(&vol("pvc-1"), &[host("a")])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "failed", "{e}");
    }
}

#[tokio::test]
async fn a_fence_removes_the_host_before_it_cuts_and_links_back() {
    let shell = answering(|_| ok(EXPORTED));
    let e = target(&shell)
        .revoke(&vol("pvc-1"), &[host("b")], true)
        .await
        .unwrap()
        .unwrap();
    assert!(e.on_port);
    let s = &shell.calls()[0].1;
    let drop_host = s
        .find("rm \"$S/allowed_hosts/\"nqn.2014-08.org.nvmexpress:uuid:b")
        .unwrap();
    let unlink = s.find("rm \"$p/subsystems/\"").unwrap();
    let relink = s.find("ln -s \"$S\" \"$R/ports/1/subsystems/\"").unwrap();
    assert!(drop_host < unlink && unlink < relink, "{s}");
    assert_eq!(shell.names(), ["nvmet_fence"]);

    let shell = answering(|_| ok(EXPORTED));
    target(&shell)
        .revoke(&vol("pvc-1"), &[host("b")], false)
        .await
        .unwrap();
    assert!(
        !shell.calls()[0].1.contains("ln -s"),
        "no cut without asking"
    );
}

#[tokio::test]
async fn a_volume_that_is_not_exported_has_no_export() {
    let shell = answering(|_| ok("port 1 trtype=tcp adrfam=ipv4 traddr=10.0.0.5 trsvcid=4420\n"));
    let t = target(&shell);
    assert_eq!(t.export_state(&vol("pvc-1")).await.unwrap(), None);
    assert_eq!(
        t.allow_host(&vol("pvc-1"), &host("a"))
            .await
            .unwrap_err()
            .kind(),
        "not_found"
    );
}

#[tokio::test]
async fn a_host_without_nvmet_is_a_failure_never_not_found() {
    let shell = answering(|_| {
        fail(70, "no nvmet configfs at /sys/kernel/config/nvmet (is the nvmet module loaded and configfs mounted?)")
    });
    let t = target(&shell);
    assert_eq!(
        t.unexport(&vol("pvc-1")).await.unwrap_err().kind(),
        "failed"
    );
    assert_eq!(
        t.export_state(&vol("pvc-1")).await.unwrap_err().kind(),
        "failed"
    );
}

#[tokio::test]
async fn capacity_comes_from_the_pool() {
    let json = r#"{"report":[{"lv":[{"lv_name":"thin","lv_size":"1073741824","data_percent":"50.00","metadata_percent":"3.00"}]}]}"#;
    let shell = answering(move |_| ok(json));
    let c = target(&shell).capacity().await.unwrap();
    assert_eq!((c.size_bytes, c.free_bytes), (1 << 30, 1 << 29));
    assert!(shell.calls()[0]
        .1
        .contains("-o lv_name,lv_size,data_percent,metadata_percent vg0/thin"));
}

#[tokio::test]
async fn marking_a_volume_touches_only_the_sweep_s_tags() {
    let tags = "rds-csi,rds-csi.cluster=c1,rds-csi.orphaned-since=2026-12-01T00:00:00Z";
    let shell = answering(move |_| ok(&lvs(&[("pvc-1", 1, tags, ACTIVE)])));
    target(&shell)
        .set_marks(&vol("pvc-1"), true, None)
        .await
        .unwrap();
    let s = &shell.calls()[1].1;
    assert!(
        s.contains("lvchange --deltag 'rds-csi.orphaned-since=2026-12-01T00:00:00Z' --addtag rds-csi.retain vg0/pvc-1"),
        "{s}"
    );
    assert!(!s.contains("cluster"));
}
