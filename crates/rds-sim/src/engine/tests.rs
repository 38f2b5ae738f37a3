//! What each command does to the simulated state, through [`Engine::execute`].

use super::*;

fn engine() -> Engine {
    Engine::new(Store::Memory, PoolConfig::sized(100 << 30), None).unwrap()
}

fn run(e: &Engine, line: &str) -> Reply {
    e.execute(line, &Faults::default())
}

fn add(e: &Engine, slot: &str, size: &str) -> Reply {
    run(
        e,
        &format!(
            "/disk add type=file file-path=/storage-pool/metal-csi/{slot}.img file-size={size} slot={slot} nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{slot}"
        ),
    )
}

#[test]
fn comments_are_kept_printed_and_changed_by_set() {
    let e = engine();
    let r = run(
        &e,
        "/disk add type=file file-path=/storage-pool/metal-csi/c.img file-size=1G slot=c comment=\"rds-csi created=2026-11-22T07:10:05Z\"",
    );
    assert_eq!(r, Reply::ok(String::new()));
    let out = run(&e, "/disk print detail where slot=\"c\"").stdout;
    assert!(
        out.contains(" 0  ;;; rds-csi created=2026-11-22T07:10:05Z\r\n    type=file"),
        "{out}"
    );
    assert_eq!(
        run(&e, "/disk set [find slot=\"c\"] comment=\"by hand\"").stdout,
        ""
    );
    let out = run(&e, "/disk print detail where slot=\"c\"").stdout;
    assert!(out.contains(";;; by hand\r\n"), "{out}");
    assert!(!out.contains("rds-csi"), "{out}");
}

#[test]
fn sizes_parse_bytes_and_binary_units() {
    assert_eq!(parse_size("1073741824"), Some(1 << 30));
    assert_eq!(parse_size("10G"), Some(10 << 30));
    assert_eq!(parse_size("1536M"), Some(1536 << 20));
    assert_eq!(parse_size("2GiB"), Some(2 << 30));
    assert_eq!(parse_size("1t"), Some(1 << 40));
    assert_eq!(parse_size("4KB"), Some(4096));
    for bad in [
        "",
        "G",
        "1.5G",
        "10X",
        "-1",
        "99999999999999999999",
        "16777216T",
    ] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
}

#[test]
fn every_printed_disk_property_can_be_filtered_on() {
    let e = engine();
    assert_eq!(add(&e, "pvc-1", "1G").stdout, "");
    let state = e.lock();
    for (_, rec) in disk_records(&state) {
        for (k, _) in &rec.fields {
            assert!(DISK_KEYS.contains(k), "{k}");
        }
    }
    for (_, rec) in file_records(&state) {
        for (k, _) in &rec.fields {
            assert!(FILE_KEYS.contains(k), "{k}");
        }
    }
}

#[test]
fn duplicates_and_missing_arguments_fail_without_acting() {
    let e = engine();
    assert_eq!(add(&e, "a", "1G").stdout, "");
    assert_eq!(
        add(&e, "a", "1G").stdout,
        "failure: slot already exists\r\n"
    );
    let r = run(
        &e,
        "/disk add type=file file-path=/storage-pool/metal-csi/a.img file-size=1G slot=b",
    );
    assert_eq!(r.stdout, "failure: file already exists\r\n");
    let r = run(
        &e,
        "/disk add type=file file-path=/storage-pool/x.img slot=c",
    );
    assert!(r.stdout.starts_with("failure: invalid parameter"));
    let r = run(
        &e,
        "/disk add type=file file-path=/storage-pool/x.img file-size=1G bogus=1",
    );
    assert!(r.stdout.starts_with("failure: invalid parameter"));
    let r = run(&e, "/disk add type=file file-path=/etc/passwd file-size=1G");
    assert!(r.stdout.starts_with("failure: invalid parameter"));
    let r = run(
        &e,
        "/disk add type=file file-path=/storage-pool/y.img file-size=lots",
    );
    assert_eq!(r.stderr, "invalid value for argument file-size\r\n");
    assert_eq!(r.status, 1);
    assert_eq!(e.lock().disks.len(), 1);
}

#[test]
fn pool_capacity_reflects_backing_files() {
    let e = engine();
    add(&e, "a", "25G");
    let r = run(&e, "/disk print detail where mount-point=\"storage-pool\"");
    assert!(r.stdout.contains("size=107 374 182 400"), "{}", r.stdout);
    assert!(r.stdout.contains("free=80 530 636 800"), "{}", r.stdout);
    assert!(r.stdout.contains("use=25%"), "{}", r.stdout);
    assert_eq!(add(&e, "b", "76G").stdout, "failure: not enough space\r\n");
}

#[test]
fn snapshots_copy_size_and_clones_may_grow() {
    let e = engine();
    add(&e, "src", "2G");
    let r = run(
        &e,
        "/disk add type=file copy-from=[find slot=src] file-path=/storage-pool/snap/s1.img slot=s1",
    );
    assert_eq!(r.stdout, "");
    let r = run(
        &e,
        "/disk add type=file copy-from=[find slot=src] file-path=/storage-pool/c.img slot=c1 file-size=3G nvme-tcp-export=yes",
    );
    assert_eq!(r.stdout, "");
    let r = run(
        &e,
        "/disk add type=file copy-from=[find slot=gone] file-path=/storage-pool/d.img slot=d",
    );
    assert_eq!(r.stdout, "failure: no such item\r\n");
    let state = e.lock();
    let s1 = state.disks.iter().find(|d| d.slot == "s1").unwrap();
    assert_eq!((s1.size, s1.export, s1.port), (2 << 30, false, None));
    let c1 = state.disks.iter().find(|d| d.slot == "c1").unwrap();
    assert_eq!((c1.size, c1.export, c1.port), (3 << 30, true, Some(4420)));
}

#[test]
fn set_grows_refuses_to_shrink_and_ignores_empty_finds() {
    let e = engine();
    add(&e, "a", "1G");
    assert_eq!(run(&e, "/disk set [find slot=a] file-size=2G").stdout, "");
    assert_eq!(e.lock().disks[0].size, 2 << 30);
    assert_eq!(e.lock().files["storage-pool/metal-csi/a.img"].size, 2 << 30);
    assert_eq!(
        run(&e, "/disk set [find slot=a] file-size=1G").stdout,
        "failure: can not shrink file\r\n"
    );
    assert_eq!(
        run(&e, "/disk set [find slot=zzz] file-size=1G"),
        Reply::ok(String::new())
    );
    assert_eq!(
        run(&e, "/disk set zzz file-size=1G").stdout,
        "failure: no such item\r\n"
    );
}

#[test]
fn files_in_use_and_non_empty_directories_are_kept() {
    let e = engine();
    add(&e, "a", "1G");
    let rm = "/file remove [find name=\"storage-pool/metal-csi/a.img\"]";
    assert_eq!(run(&e, rm).stdout, "failure: file is in use\r\n");
    assert_eq!(
        run(&e, "/file remove [find name=\"storage-pool/metal-csi\"]").stdout,
        "failure: directory is not empty\r\n"
    );
    assert_eq!(run(&e, "/disk remove [find slot=a]").stdout, "");
    assert_eq!(run(&e, rm).stdout, "");
    assert!(e.lock().files.is_empty());
    assert_eq!(run(&e, rm), Reply::ok(String::new()));
    assert_eq!(run(&e, "/file remove storage-pool/metal-csi").stdout, "");
    assert!(e.lock().dirs.is_empty());
    assert_eq!(
        run(&e, "/file remove storage-pool").stdout,
        "failure: can not remove mount point\r\n"
    );
}

#[test]
fn where_on_an_unknown_property_is_a_syntax_error() {
    let e = engine();
    let r = run(&e, "/disk print detail where slott=a");
    assert_eq!(r.stderr, "expected end of command (line 1 column 26)\r\n");
    assert_eq!(r.status, 1);
}

#[test]
fn regex_and_prefix_filters_select_disks() {
    let e = engine();
    add(&e, "pvc-1", "1G");
    add(&e, "pvc-2", "1G");
    add(&e, "other", "1G");
    let count = |q: &str| run(&e, &format!("/disk print count-only where {q}")).stdout;
    assert_eq!(count("slot~\"^pvc-\""), "2\r\n");
    assert_eq!(count("slot~\"vc\""), "2\r\n");
    assert_eq!(count("slot~\"^(pvc|oth)\""), "3\r\n");
    assert_eq!(count("slot=pvc-1"), "1\r\n");
    assert_eq!(count("type=file slot!=other"), "2\r\n");
    assert_eq!(
        run(&e, "/disk print where slot~\"(\"").stdout,
        "failure: invalid regular expression\r\n"
    );
}

#[test]
fn monitor_traffic_once_prints_rates() {
    let e = engine();
    add(&e, "a", "1G");
    let r = run(&e, "/disk monitor-traffic a once");
    assert!(r.stdout.contains("slot: a\r\n"), "{}", r.stdout);
    assert!(r.stdout.contains("read-rate: 0bps"));
    assert_eq!(
        run(&e, "/disk monitor-traffic nope once").stdout,
        "failure: no such item\r\n"
    );
}

#[test]
fn the_host_allow_list_is_kept_printed_and_survives_an_export_toggle() {
    let e = engine();
    assert_eq!(add(&e, "pvc-1", "1G").stdout, "");
    let a = "nqn.2014-08.org.nvmexpress:uuid:a";
    let b = "nqn.2014-08.org.nvmexpress:uuid:b";
    // The print wraps long values; joined back, as a reader does.
    let shown = |e: &Engine| {
        run(e, "/disk print detail where slot=\"pvc-1\"")
            .stdout
            .replace("\r\n    ", "")
    };
    assert!(shown(&e).contains("nvme-tcp-server-allow-host-name=\"\""));
    let set =
        format!("/disk set [find slot=\"pvc-1\"] nvme-tcp-server-allow-host-name=\"{a},{b}\"");
    assert_eq!(run(&e, &set).stdout, "");
    let out = shown(&e);
    assert!(
        out.contains(&format!("nvme-tcp-server-allow-host-name=\"{a},{b}\"")),
        "{out}"
    );

    // Off and on again: the list stays, and the cut is counted.
    assert_eq!(run(&e, "/disk set pvc-1 nvme-tcp-export=no").stdout, "");
    assert!(
        !shown(&e).contains("allow-host-name"),
        "hidden while not exported"
    );
    assert_eq!(run(&e, "/disk set pvc-1 nvme-tcp-export=yes").stdout, "");
    let disk = e.lock().disks[0].clone();
    assert_eq!((disk.export, disk.export_cuts), (true, 1));
    assert_eq!(disk.allow_host, format!("{a},{b}"));
    // Turning on what is on already cuts nothing.
    assert_eq!(run(&e, "/disk set pvc-1 nvme-tcp-export=yes").stdout, "");
    assert_eq!(e.lock().disks[0].export_cuts, 1);
}

#[test]
fn an_allow_list_that_is_not_host_nqns_is_refused_and_changes_nothing() {
    let e = engine();
    assert_eq!(add(&e, "pvc-1", "1G").stdout, "");
    for bad in [
        "\"nqn.x a\"",
        "\"nqn.x,,nqn.y\"",
        "\"nqn.x,\"",
        "iqn.2000-01.x",
        "\"nqn.x;y\"",
    ] {
        let r = run(
            &e,
            &format!("/disk set pvc-1 nvme-tcp-server-allow-host-name={bad}"),
        );
        assert_eq!(
            r.stderr, "invalid value for argument nvme-tcp-server-allow-host-name\r\n",
            "{bad}: {r:?}"
        );
        assert_eq!(e.lock().disks[0].allow_host, "", "{bad}");
    }
    // Emptying the list is how any host is allowed again.
    assert_eq!(
        run(&e, "/disk set pvc-1 nvme-tcp-server-allow-host-name=\"\"").stdout,
        ""
    );
}
