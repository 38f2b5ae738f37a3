//! `rds-csi controller --backend nvmet` as operators run it: the flags of
//! each backend, and a controller managing a Linux host over real SSH (an
//! OpenSSH server on a loopback port, its host key pinned). The host's
//! `lvs` is a stand-in reporting a thin pool; the kernel target itself is
//! the guest tier's (a real nvmet and LVM thin pool).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use testkit::free_port;
use testkit::metrics::http_get;
use testkit::sshd::{keygen, user, Sshd};

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");

/// A controller command with everything but the backend's flags; it never
/// gets as far as connecting.
fn controller(dir: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["controller", "--endpoint"])
        .arg(format!("unix://{}", dir.join("c.sock").display()))
        .args(["--rds-address", "127.0.0.1:1", "--rds-key-file"])
        .arg(dir.join("no-key"))
        .args(["--rds-insecure-skip-host-key-check", "--standalone"])
        .args(extra)
        .output()
        .unwrap()
}

const NVMET: &[&str] = &[
    "--backend",
    "nvmet",
    "--nvmet-volume-group",
    "vg0",
    "--nvmet-thin-pool",
    "thin",
    "--nvmet-listen-address",
    "10.0.0.7",
];

fn with(extra: &[&'static str]) -> Vec<&'static str> {
    [NVMET, extra].concat()
}

#[test]
fn each_backend_refuses_the_other_s_flags_and_nvmet_asks_for_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--nvmet-volume-group", "vg0"],
            "--nvmet-volume-group is for --backend nvmet",
        ),
        (
            vec!["--nvmet-sudo", "true"],
            "--nvmet-sudo is for --backend nvmet",
        ),
        (
            vec!["--backend", "nvmet", "--nvmet-thin-pool", "thin"],
            "--nvmet-volume-group is required with --backend nvmet",
        ),
        (
            NVMET[..6].to_vec(),
            "--nvmet-listen-address is required with --backend nvmet",
        ),
        (
            with(&["--rds-fencing", "true"]),
            "--rds-fencing is for --backend rds",
        ),
        (
            [
                &["--nvmet-volume-group", "snapshot0"],
                &NVMET[..2],
                &NVMET[4..],
            ]
            .concat(),
            "LVM reserves names starting with 'snapshot'",
        ),
        (with(&["--nqn-prefix", "nqn.x:"]), "--nqn-prefix"),
        (with(&["--nvmet-port", "0"]), "--nvmet-port"),
    ];
    for (args, says) in cases {
        let out = controller(dir.path(), &args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// `lvs` as the host's would answer for a 10 GiB thin pool, 10 % used, with
/// no volume in it yet.
const LVS: &str = r#"#!/bin/sh
case "$*" in
  *data_percent*) echo '{"report":[{"lv":[{"lv_name":"thin","lv_size":"10737418240","data_percent":"10.00","metadata_percent":"2.00"}]}]}' ;;
  *) echo '{"report":[{"lv":[]}]}' ;;
esac
"#;

/// sshd for the current user admitting a fresh key (at `dir/client_key`),
/// with the stand-in `lvs` first on the sessions' `PATH`.
fn sshd(dir: &Path) -> (Sshd, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::fs::write(bin.join("lvs"), LVS).unwrap();
    std::fs::set_permissions(bin.join("lvs"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let key = dir.join("client_key");
    keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let server = testkit::sshd::start(dir, &public, &[("PATH".into(), path)]);
    (server, key)
}

fn csi(endpoint: &str, args: &[&str]) -> String {
    let out = Command::new(BIN)
        .args(["csi", "--endpoint", endpoint])
        .args(args)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "csi {args:?}: {all}");
    all
}

/// Startup against a Linux host over real SSH: the pool read through the
/// host's `lvs`, ready, Probe and GetCapacity answered from the pool.
#[test]
#[ignore = "needs OpenSSH's sshd (apt-get install openssh-server); hack/test.sh installs it and runs this"]
fn a_controller_on_the_nvmet_backend_starts_reads_the_pool_over_ssh_and_turns_ready() {
    assert!(
        Path::new(testkit::sshd::SSHD).exists(),
        "needs OpenSSH's sshd at {} (apt-get install openssh-server)",
        testkit::sshd::SSHD
    );
    let dir = tempfile::tempdir().unwrap();
    let (server, key) = sshd(dir.path());
    let port = free_port();
    let sock = dir.path().join("csi.sock");
    let endpoint = format!("unix://{}", sock.display());
    let mut child = Command::new(BIN)
        .args(["controller", "--endpoint", &endpoint])
        .args(["--rds-address", &server.addr, "--rds-user", &user()])
        .arg("--rds-key-file")
        .arg(&key)
        .args(["--rds-host-key", &server.fingerprint])
        .args(NVMET)
        .args([
            "--standalone",
            "--health-interval",
            "200ms",
            "--log-format",
            "json",
        ])
        .args(["--metrics-address", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("controller.log")).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(dir.path().join("controller.log")).unwrap_or_default();
    testkit::wait_for("the controller ready", Duration::from_secs(30), || {
        http_get(port, "/readyz").filter(|(c, _)| *c == 200)
    });
    let info = csi(&endpoint, &["info"]);
    assert!(info.to_lowercase().contains("ready"), "{info}");
    let cap = csi(&endpoint, &["capacity"]);
    assert!(cap.contains("9663676416"), "90 % of 10 GiB free: {cap}");
    let caps = csi(&endpoint, &["capabilities"]);
    assert!(caps.contains("CREATE_DELETE_SNAPSHOT"), "{caps}");
    // The pool is read in the background at start, over its own SSH round
    // trip: wait for its log line before stopping.
    testkit::wait_for("the pool detected", Duration::from_secs(30), || {
        logs().contains(r#""kind":"lvm-thin""#).then_some(())
    });
    sigterm(&child).unwrap();
    let status = child.wait().unwrap();
    let logs = logs();
    assert!(status.success(), "{logs}");
    assert!(logs.contains(r#""kind":"Nvmet""#), "{logs}");
    assert!(logs.contains(r#""kind":"lvm-thin""#), "{logs}");
    assert!(logs.contains("orphan volume sweep off"), "{logs}");
}

/// SIGTERM, as Kubernetes stops the pod.
fn sigterm(child: &Child) -> std::io::Result<()> {
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    assert!(st.success());
    Ok(())
}
