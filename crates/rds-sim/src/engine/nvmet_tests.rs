//! Real exports through a plain directory standing in for nvmet's configfs.

use super::*;
use crate::nvmet::NvmetConfig;
use std::fs;
use std::path::{Path, PathBuf};

struct Fixture {
    _dir: tempfile::TempDir,
    data: PathBuf,
    cfs: PathBuf,
    engine: Engine,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let cfs = dir.path().join("nvmet");
    fs::create_dir_all(cfs.join("subsystems")).unwrap();
    fs::create_dir_all(cfs.join("ports")).unwrap();
    let nvmet = Nvmet::open(&NvmetConfig {
        addr: "127.0.0.1".parse().unwrap(),
        configfs: cfs.clone(),
    })
    .unwrap();
    let engine = Engine::new(
        Store::Dir(data.clone()),
        PoolConfig::sized(100 << 30),
        Some(nvmet),
    )
    .unwrap();
    Fixture {
        _dir: dir,
        data,
        cfs,
        engine,
    }
}

fn run(e: &Engine, line: &str) -> Reply {
    e.execute(line, &Faults::default())
}

const ADD: &str = "/disk add type=file file-path=/storage-pool/m/pvc-1.img file-size=1G slot=pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.x:pvc-1";

fn attr(path: &Path) -> String {
    fs::read_to_string(path).unwrap().trim().to_string()
}

fn entries(path: &Path) -> usize {
    fs::read_dir(path).unwrap().count()
}

#[test]
fn add_set_and_remove_drive_the_kernel_target() {
    let f = fixture();
    assert_eq!(run(&f.engine, ADD).stdout, "");
    let sub = f.cfs.join("subsystems/nqn.x:pvc-1");
    let backing = f.data.join("m/pvc-1.img");
    assert_eq!(
        attr(&sub.join("namespaces/1/device_path")),
        backing.to_str().unwrap()
    );
    assert_eq!(attr(&sub.join("namespaces/1/enable")), "1");
    assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());

    // Growing the file tells the target.
    assert_eq!(
        run(&f.engine, "/disk set [find slot=pvc-1] file-size=2G").stdout,
        ""
    );
    assert_eq!(fs::metadata(&backing).unwrap().len(), 2 << 30);
    assert_eq!(attr(&sub.join("namespaces/1/revalidate_size")), "1");

    // A disk without export makes no subsystem.
    let r = run(
        &f.engine,
        "/disk add type=file file-path=/storage-pool/m/plain.img file-size=1G slot=plain",
    );
    assert_eq!(r.stdout, "");
    assert_eq!(entries(&f.cfs.join("subsystems")), 1);

    // Export off and on again, then on another port.
    assert_eq!(
        run(&f.engine, "/disk set pvc-1 nvme-tcp-export=no").stdout,
        ""
    );
    assert_eq!(entries(&f.cfs.join("subsystems")), 0);
    assert_eq!(entries(&f.cfs.join("ports")), 0);
    assert_eq!(
        run(
            &f.engine,
            "/disk set pvc-1 nvme-tcp-export=yes nvme-tcp-server-port=4421"
        )
        .stdout,
        ""
    );
    assert_eq!(attr(&f.cfs.join("ports/1/addr_trsvcid")), "4421");

    assert_eq!(
        run(&f.engine, "/disk remove [find slot~\"pvc\"]").stdout,
        ""
    );
    assert_eq!(entries(&f.cfs.join("subsystems")), 0);
    assert_eq!(entries(&f.cfs.join("ports")), 0);
    assert!(backing.exists(), "removing a disk keeps its file");
}

#[test]
fn configfs_failures_answer_failure_and_change_nothing() {
    let f = fixture();
    // Ports cannot be created: every export fails at its last step.
    fs::remove_dir(f.cfs.join("ports")).unwrap();
    fs::write(f.cfs.join("ports"), "").unwrap();
    let r = run(&f.engine, ADD);
    assert!(
        r.stdout
            .starts_with("failure: could not export over nvme-tcp"),
        "{r:?}"
    );
    assert!(f.engine.lock().disks.is_empty());
    assert!(f.engine.lock().files.is_empty());
    assert!(!f.data.join("m/pvc-1.img").exists());
    assert_eq!(entries(&f.cfs.join("subsystems")), 0);

    // With ports back, the add works; then make removal fail.
    fs::remove_file(f.cfs.join("ports")).unwrap();
    fs::create_dir(f.cfs.join("ports")).unwrap();
    assert_eq!(run(&f.engine, ADD).stdout, "");
    // Something else still uses the namespace group: rmdir fails.
    fs::create_dir(f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1/busy")).unwrap();
    let r = run(&f.engine, "/disk remove pvc-1");
    assert!(
        r.stdout
            .starts_with("failure: could not remove nvme-tcp export"),
        "{r:?}"
    );
    assert_eq!(f.engine.lock().disks.len(), 1);
    assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());
    assert_eq!(
        attr(&f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1/enable")),
        "1"
    );

    // Resize: the target refuses the new size, so the file shrinks back.
    let ns = f.cfs.join("subsystems/nqn.x:pvc-1/namespaces/1");
    fs::remove_file(ns.join("revalidate_size")).unwrap();
    fs::create_dir(ns.join("revalidate_size")).unwrap();
    let r = run(&f.engine, "/disk set pvc-1 file-size=3G");
    assert!(r.stdout.starts_with("failure: could not resize"), "{r:?}");
    assert_eq!(f.engine.lock().disks[0].size, 1 << 30);
    assert_eq!(
        fs::metadata(f.data.join("m/pvc-1.img")).unwrap().len(),
        1 << 30
    );
}

#[test]
fn a_second_disk_with_the_same_nqn_is_refused() {
    let f = fixture();
    assert_eq!(run(&f.engine, ADD).stdout, "");
    let r = run(
        &f.engine,
        "/disk add type=file file-path=/storage-pool/m/pvc-2.img file-size=1G slot=pvc-2 nvme-tcp-export=yes nvme-tcp-server-nqn=nqn.x:pvc-1",
    );
    assert!(r.stdout.starts_with("failure: "), "{r:?}");
    assert_eq!(f.engine.lock().disks.len(), 1);
    assert!(!f.data.join("m/pvc-2.img").exists());
}

#[test]
fn port_down_and_up_keep_the_disks() {
    let f = fixture();
    assert_eq!(run(&f.engine, ADD).stdout, "");
    assert_eq!(f.engine.nvmet_port_down(4420).unwrap(), 1);
    assert_eq!(entries(&f.cfs.join("ports")), 0);
    f.engine.nvmet_port_up(4420).unwrap();
    assert!(f.cfs.join("ports/1/subsystems/nqn.x:pvc-1").exists());
    f.engine.unexport_all();
    assert_eq!(entries(&f.cfs.join("subsystems")), 0);
    assert_eq!(entries(&f.cfs.join("ports")), 0);
}

#[test]
fn the_allow_list_reaches_the_kernel_target_without_dropping_sessions() {
    let f = fixture();
    fs::create_dir_all(f.cfs.join("hosts")).unwrap();
    let (a, b) = ("nqn.h:a", "nqn.h:b");
    let add = format!("{ADD} nvme-tcp-server-allow-host-name={a}");
    assert_eq!(run(&f.engine, &add).stdout, "");
    let sub = f.cfs.join("subsystems/nqn.x:pvc-1");
    let allowed = |sub: &Path| {
        let mut v: Vec<String> = fs::read_dir(sub.join("allowed_hosts"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    assert_eq!(attr(&sub.join("attr_allow_any_host")), "0");
    assert_eq!(allowed(&sub), [a]);

    // A new list: the port link (and so every session) stays.
    let port_link = f.cfs.join("ports/1/subsystems/nqn.x:pvc-1");
    let linked = fs::symlink_metadata(&port_link)
        .unwrap()
        .modified()
        .unwrap();
    let set = format!("/disk set pvc-1 nvme-tcp-server-allow-host-name=\"{b},{a}\"");
    assert_eq!(run(&f.engine, &set).stdout, "");
    assert_eq!(allowed(&sub), [a, b]);
    assert_eq!(
        fs::symlink_metadata(&port_link)
            .unwrap()
            .modified()
            .unwrap(),
        linked
    );

    // The cut: off removes the export (the port unlink drops sessions), on
    // brings it back with the same list.
    assert_eq!(
        run(&f.engine, "/disk set pvc-1 nvme-tcp-export=no").stdout,
        ""
    );
    assert!(!sub.exists());
    assert_eq!(
        run(&f.engine, "/disk set pvc-1 nvme-tcp-export=yes").stdout,
        ""
    );
    assert_eq!(allowed(&sub), [a, b]);
    assert!(port_link.exists());

    // Empty again: any host.
    let set = "/disk set pvc-1 nvme-tcp-server-allow-host-name=\"\"";
    assert_eq!(run(&f.engine, set).stdout, "");
    assert_eq!(attr(&sub.join("attr_allow_any_host")), "1");
    assert!(allowed(&sub).is_empty());
}
