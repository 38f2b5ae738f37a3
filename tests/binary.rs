//! The `rds-csi` binary as operators run it: flags, startup refusals,
//! graceful shutdown, the metrics and health endpoints, and that the SSH key
//! never shows up in its output.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use testkit::free_port;
use testkit::metrics::http_get;

const BIN: &str = env!("CARGO_BIN_EXE_rds-csi");

struct Sim {
    child: Child,
    addr: String,
    fingerprint: String,
    key: PathBuf,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_sim(dir: &Path) -> Sim {
    let mut child = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.join("sim"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 4096];
    while !text.contains("client key:") {
        assert!(Instant::now() < deadline, "simulator did not start: {text}");
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "simulator exited: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Keep draining what the simulator prints for its whole life: with the
    // pipe's reader gone, its next line would fail with EPIPE and end it (a
    // race the tests lost under load); left unread, a full pipe would block it.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    let field = |prefix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .trim()
            .to_string()
    };
    Sim {
        addr: field("RouterOS simulator listening on "),
        fingerprint: field("host key fingerprint: "),
        key: PathBuf::from(field("client key: ")),
        child,
    }
}

/// Waits up to 20 s.
fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    testkit::wait_for(what, Duration::from_secs(20), f)
}

/// Waits until `/readyz` on `port` answers `code` (200 ready, 503 not).
fn wait_readyz(what: &str, port: u16, code: u16) {
    wait_for(what, || {
        http_get(port, "/readyz").filter(|(c, _)| *c == code)
    });
}

/// `rds-csi controller` serving `sock`, against `sim` with its host key
/// pinned.
fn controller_of(sim: &Sim, sock: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.args(["controller", "--endpoint"])
        .arg(format!("unix://{}", sock.display()))
        .args(["--rds-address", &sim.addr, "--rds-key-file"])
        .arg(&sim.key)
        .args(["--rds-host-key", &sim.fingerprint]);
    c
}

/// A standalone controller (debug logs in `dir/controller.log`) serving
/// `dir/csi.sock`, its metrics on `metrics_port`.
fn controller(sim: &Sim, dir: &Path, metrics_port: u16, extra: &[&str]) -> Command {
    let mut c = controller_of(sim, &dir.join("csi.sock"));
    c.args(["--log-level", "debug", "--health-interval", "200ms"])
        .arg("--standalone")
        .args(["--metrics-address", &format!("127.0.0.1:{metrics_port}")])
        .args(extra)
        // To a file, not a pipe: a pipe nobody reads fills up with debug
        // logs and blocks the controller mid-test.
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("controller.log")).unwrap(),
        ));
    c
}

#[test]
fn the_controller_refuses_to_start_without_a_pinned_host_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["controller", "--endpoint"])
        .arg(format!("unix://{}", dir.path().join("csi.sock").display()))
        .args([
            "--rds-address",
            "127.0.0.1:1",
            "--rds-key-file",
            "/nonexistent",
            "--metrics-address",
            "off",
        ])
        .env_remove("RDS_HOST_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rds-host-key is required"), "{err}");
}

#[test]
fn contradictory_host_key_flags_are_refused() {
    let out = Command::new(BIN)
        .args([
            "controller",
            "--rds-address",
            "x",
            "--rds-key-file",
            "/k",
            "--rds-host-key",
            "SHA256:x",
            "--rds-insecure-skip-host-key-check",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
}

#[test]
fn the_controller_serves_metrics_turns_ready_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let port = free_port();
    let mut child = controller(&sim, dir.path(), port, &[]).spawn().unwrap();

    let (code, _) = wait_for("/healthz", || http_get(port, "/healthz"));
    assert_eq!(code, 200);
    wait_readyz("/readyz to turn ready", port, 200);
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    for name in [
        "rds_csi_backend_up 1",
        "rds_csi_ssh_connected 1",
        "rds_csi_ssh_commands_total{command=\"pool_capacity\",outcome=\"ok\"}",
        "rds_csi_ssh_command_duration_seconds_bucket",
        "rds_csi_pool_size_bytes",
        "rds_csi_pool_free_bytes",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
    // The pool is read at start (in the background): the simulator's is
    // Btrfs, so all three copy methods.
    wait_for("the pool's copy methods in /metrics", || {
        http_get(port, "/metrics").filter(|(_, m)| {
            ["subvolume", "copy-from", "copy"].iter().all(|method| {
                m.contains(&format!(
                    "rds_csi_pool_copy_methods{{method=\"{method}\"}} 1"
                ))
            })
        })
    });
    assert!(dir.path().join("csi.sock").exists());

    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_for("exit after SIGTERM", || child.try_wait().unwrap());
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        !dir.path().join("csi.sock").exists(),
        "socket removed on shutdown"
    );

    // The private key never appears in the logs, even at debug level.
    let logs = std::fs::read_to_string(dir.path().join("controller.log")).unwrap();
    let key_text = std::fs::read_to_string(&sim.key).unwrap();
    let body: Vec<&str> = key_text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(!logs.contains("PRIVATE KEY"));
    for line in body {
        assert!(!logs.contains(line), "a line of the private key was logged");
    }
    assert!(logs.contains("controller started"), "{logs}");
}

#[test]
fn readiness_follows_the_backend_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let port = free_port();
    // Short deadlines: on a loaded machine a health query caught mid-way
    // when the RDS goes must fail within the wait below, not after the
    // default 30 s.
    let mut child = controller(
        &sim,
        dir.path(),
        port,
        &["--rds-command-timeout", "2s", "--rds-connect-timeout", "2s"],
    )
    .spawn()
    .unwrap();
    wait_readyz("ready", port, 200);
    // Take the RDS away: readiness drops, the process stays up, scrapes
    // still answer.
    let mut sim = sim;
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    wait_readyz("not ready", port, 503);
    let (code, metrics) = http_get(port, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(metrics.contains("rds_csi_backend_up 0"), "{metrics}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_node_plugin_answers_node_info_over_its_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("node.sock");
    let mut node = node_plugin(dir.path()).spawn().unwrap();
    wait_for("node socket", || sock.exists().then_some(()));
    let csi = |args: &[&str]| {
        Command::new(BIN)
            .args(["csi", "--endpoint"])
            .arg(format!("unix://{}", sock.display()))
            .args(args)
            .output()
            .unwrap()
    };
    let out = csi(&["node-info"]);
    let caps = csi(&["node-caps"]);
    // A refused call exits non-zero with the gRPC code and the message.
    let refused = csi(&[
        "node-stage",
        "pvc-1",
        "--staging-path",
        "relative/path",
        "--context",
        "nvmeAddress=127.0.0.1",
    ]);
    let _ = node.kill();
    let _ = node.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("node id: worker-1"), "{text}");
    assert!(text.contains("rds.csi.srvlab.io/rds"), "{text}");
    let caps = String::from_utf8_lossy(&caps.stdout);
    for c in [
        "STAGE_UNSTAGE_VOLUME",
        "EXPAND_VOLUME",
        "GET_VOLUME_STATS",
        "VOLUME_CONDITION",
        "SINGLE_NODE_MULTI_WRITER",
    ] {
        assert!(caps.contains(c), "{caps}");
    }
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("error: InvalidArgument: staging_target_path"),
        "{err}"
    );
}

/// A node plugin on a socket in `dir`, with its own host NQN and state.
fn node_plugin(dir: &Path) -> Command {
    let hostnqn = dir.join("hostnqn");
    std::fs::write(
        &hostnqn,
        "nqn.2014-08.org.nvmexpress:uuid:6f1c2b8e-3f5d-4c1a-9a0e-2d7b4c9e1f00\n",
    )
    .unwrap();
    let mut c = Command::new(BIN);
    c.args(["node", "--node-id", "worker-1", "--metrics-address", "off"])
        .arg("--endpoint")
        .arg(format!("unix://{}", dir.join("node.sock").display()))
        .arg("--host-nqn-file")
        .arg(&hostnqn)
        .arg("--host-id-file")
        .arg(dir.join("no-hostid"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--staging-root")
        .arg(dir.join("kubelet"))
        .args(["--orphan-cleanup", "report"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[test]
fn the_node_plugin_refuses_to_start_without_its_own_host_nqn() {
    let dir = tempfile::tempdir().unwrap();
    let run = |nqn: Option<&str>| {
        let file = dir.path().join("hostnqn");
        let _ = std::fs::remove_file(&file);
        if let Some(n) = nqn {
            std::fs::write(&file, n).unwrap();
        }
        Command::new(BIN)
            .args(["node", "--node-id", "w", "--metrics-address", "off"])
            .arg("--endpoint")
            .arg(format!("unix://{}", dir.path().join("n.sock").display()))
            .arg("--host-nqn-file")
            .arg(&file)
            .output()
            .unwrap()
    };
    let missing = run(None);
    assert!(!missing.status.success());
    let err = String::from_utf8_lossy(&missing.stderr);
    assert!(err.contains("nvme gen-hostnqn"), "{err}");
    let shared = run(Some(
        "nqn.2014-08.org.nvmexpress:uuid:03000200-0400-0500-0006-000700080009\n",
    ));
    assert!(!shared.status.success());
    let err = String::from_utf8_lossy(&shared.stderr);
    assert!(err.contains("shared by many machines"), "{err}");
    assert!(!dir.path().join("n.sock").exists());
}

#[test]
fn the_simulator_refuses_real_exports_it_cannot_make() {
    let dir = tempfile::tempdir().unwrap();
    let sim = |extra: &[&str]| {
        Command::new(BIN)
            .args(["sim", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path().join("sim"))
            .args(["--nvmet-addr", "127.0.0.1"])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = sim(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--nvmet-addr needs --data"), "{err}");

    // No nvmet tree there: refused at start, not at the first /disk add.
    let data = dir.path().join("data");
    let configfs = dir.path().join("no-nvmet");
    let out = sim(&[
        "--data",
        data.to_str().unwrap(),
        "--nvmet-configfs",
        configfs.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kernel NVMe target") && err.contains("nvmet module"),
        "{err}"
    );
}

#[test]
fn without_standalone_the_controller_requires_kubernetes() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let out = controller_of(&sim, &dir.path().join("c.sock"))
        .args(["--metrics-address", "off"])
        .args(["--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kubeconfig"), "{err}");
}

fn promtool() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("promtool"))
            .find(|c| c.is_file())
    });
    found.expect("promtool not found: apt-get install prometheus (hack/test.sh installs it)")
}

fn promtool_check_metrics(scrape: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs promtool (Debian: prometheus); hack/test.sh installs it and runs this"]
fn scrapes_of_both_services_pass_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let port = free_port();
    let mut ctl = controller(&sim, dir.path(), port, &[]).spawn().unwrap();
    wait_readyz("ready", port, 200);
    // Put a few RPCs through so the per-RPC series exist.
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    for args in [
        vec!["create", "pvc-prom", "--size", "1G"],
        vec!["list"],
        vec!["delete", "pvc-prom"],
    ] {
        let out = Command::new(BIN)
            .args(["csi", "--endpoint", &endpoint])
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let (_, scrape) = http_get(port, "/metrics").unwrap();
    let body = scrape
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    assert!(
        body.contains("rds_csi_rpc_total{code=\"OK\",method=\"CreateVolume\"} 1"),
        "{body}"
    );
    promtool_check_metrics(&body);
    let _ = ctl.kill();
    let _ = ctl.wait();

    let node_port = free_port();
    let sock = dir.path().join("node.sock");
    let mut node = Command::new(BIN)
        .args([
            "node",
            "--node-id",
            "worker-1",
            "--metrics-address",
            &format!("127.0.0.1:{node_port}"),
            "--endpoint",
        ])
        .arg(format!("unix://{}", sock.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (_, scrape) = wait_for("node metrics", || http_get(node_port, "/metrics"));
    let _ = node.kill();
    let _ = node.wait();
    promtool_check_metrics(scrape.split("\r\n\r\n").nth(1).unwrap_or_default());
}

#[test]
#[ignore = "needs promtool (Debian: prometheus); hack/test.sh installs it and runs this"]
fn the_shipped_alert_rules_pass_promtool() {
    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/alerts/rds-csi.rules.yml");
    let out = Command::new(promtool())
        .args(["check", "rules", rules])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

/// One `rds-csi csi` call: success, and stdout or stderr.
fn csi_call(endpoint: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::task::block_in_place(|| {
        Command::new(BIN)
            .args(["csi", "--endpoint", endpoint])
            .args(args)
            .output()
            .unwrap()
    });
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text)
}

/// [`wait_readyz`] from a multi-threaded runtime (the check blocks), for
/// at most `within`.
async fn wait_readyz_async(what: &str, within: Duration, port: u16, code: u16) {
    let deadline = Instant::now() + within;
    while tokio::task::block_in_place(|| http_get(port, "/readyz")).is_none_or(|(c, _)| c != code) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn backend_up(port: u16) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find_map(|l| l.strip_prefix("rds_csi_backend_up "))
        .and_then(|v| v.trim().parse().ok())
}

/// The RDS goes away (connections refused and the open ones cut) and comes
/// back: the controller reports it, fails fast with UNAVAILABLE meanwhile,
/// and recovers by itself.
#[tokio::test(flavor = "multi_thread")]
async fn an_rds_outage_is_reported_fails_fast_and_heals_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let testkit::sim::SimWithKeyFile { sim, key_file, .. } =
        testkit::sim::start_with_key_file(dir.path()).await;
    let port = free_port();
    let handle = Sim {
        // Nothing to kill: the simulator runs in this process.
        child: Command::new("true").spawn().unwrap(),
        addr: sim.addr().to_string(),
        fingerprint: sim.host_key_fingerprint(),
        key: key_file,
    };
    let mut ctl = controller(
        &handle,
        dir.path(),
        port,
        &["--rds-command-timeout", "2s", "--rds-connect-timeout", "1s"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let endpoint = format!("unix://{}", dir.path().join("csi.sock").display());
    wait_readyz_async("ready", Duration::from_secs(20), port, 200).await;
    let (ok, out) = csi_call(&endpoint, &["create", "pvc-before", "--size", "1G"]);
    assert!(ok, "{out}");

    // Outage.
    sim.faults().refuse_connections(true);
    wait_readyz_async("not ready", Duration::from_secs(20), port, 503).await;
    assert_eq!(backend_up(port), Some(0.0));
    let (_, out) = csi_call(&endpoint, &["info"]);
    assert!(out.contains("ready: false"), "{out}");
    let started = Instant::now();
    let (ok, out) = csi_call(&endpoint, &["create", "pvc-during", "--size", "1G"]);
    assert!(!ok && out.contains("Unavailable"), "{out}");
    let (ok, out) = csi_call(&endpoint, &["publish", "pvc-before", "--node", "node-a"]);
    assert!(!ok && out.contains("Unavailable"), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "calls fail fast during an outage, took {:?}",
        started.elapsed()
    );

    // The RDS returns; nobody touches the controller.
    sim.faults().refuse_connections(false);
    wait_readyz_async("ready again", Duration::from_secs(30), port, 200).await;
    assert_eq!(backend_up(port), Some(1.0));
    let (_, out) = csi_call(&endpoint, &["info"]);
    assert!(out.contains("ready: true"), "{out}");
    let (ok, out) = csi_call(&endpoint, &["create", "pvc-during", "--size", "1G"]);
    assert!(ok, "{out}");
    let (ok, out) = csi_call(&endpoint, &["publish", "pvc-before", "--node", "node-a"]);
    assert!(ok, "{out}");
    assert!(sim.disks().iter().any(|d| d.slot == "pvc-during"));
    let _ = ctl.kill();
    let _ = ctl.wait();
    drop(handle);
    sim.shutdown().await;
}

#[test]
fn without_kubernetes_the_node_says_the_format_record_is_off_and_on_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let no_kube = |c: &mut Command| {
        c.env_remove("KUBECONFIG")
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("RDS_CSI_FORMAT_RECORD")
            .env("HOME", dir.path())
            .env("NO_COLOR", "1");
    };
    // auto, nothing found: it starts and says once that the probe alone
    // decides.
    let log = dir.path().join("node.log");
    let mut c = node_plugin(dir.path());
    no_kube(&mut c);
    c.stderr(std::fs::File::create(&log).unwrap());
    let mut node = c.spawn().unwrap();
    let sock = dir.path().join("node.sock");
    wait_for("node socket", || sock.exists().then_some(()));
    let _ = node.kill();
    let _ = node.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("the durable format record is off").count(),
        1,
        "{text}"
    );
    assert!(text.contains("rests on the probe alone"), "{text}");
    // Refused starts: "on" without Kubernetes; a record file with "off"
    // (they contradict each other).
    let record_file = dir.path().join("f.json");
    let record_file = record_file.to_str().unwrap();
    for (args, says) in [
        (
            ["--format-record", "on", "--events", "off"],
            "--format-record",
        ),
        (
            [
                "--format-record",
                "off",
                "--format-record-file",
                record_file,
            ],
            "contradicts",
        ),
    ] {
        let mut c = node_plugin(dir.path());
        no_kube(&mut c);
        let out = c.args(args).stderr(Stdio::piped()).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// The CSI client against `dir/csi.sock`: its stdout, or its stderr as
/// the error.
fn csi(dir: &Path, args: &[&str]) -> Result<String, String> {
    let endpoint = format!("unix://{}", dir.join("csi.sock").display());
    let out = Command::new(BIN)
        .args(["csi", "--endpoint", &endpoint])
        .args(args)
        .output()
        .unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

#[test]
#[ignore = "needs promtool (Debian: prometheus); hack/test.sh installs it and runs this"]
fn a_second_backend_has_its_own_health_metrics_and_outage() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_sim(dir.path());
    let lab2 = start_sim(&dir.path().join("lab2"));
    let file = dir.path().join("backends.json");
    let entry = serde_json::json!({"backends": [{
        "name": "lab2",
        "rds-address": lab2.addr,
        "rds-key-file": lab2.key,
        "rds-host-key": lab2.fingerprint,
    }]});
    std::fs::write(&file, entry.to_string()).unwrap();
    let port = free_port();
    let backends_file = file.to_string_lossy().into_owned();
    let mut ctl = controller(&sim, dir.path(), port, &["--backends-file", &backends_file])
        .spawn()
        .unwrap();
    wait_readyz("ready", port, 200);
    let made = csi(dir.path(), &["create", "pvc-1", "--param", "backend=lab2"]).unwrap();
    assert!(made.contains("created lab2-pvc-1"), "{made}");
    csi(dir.path(), &["create", "pvc-2"]).unwrap();
    let listed = csi(dir.path(), &["list"]).unwrap();
    assert!(
        listed.contains("lab2-pvc-1") && listed.contains("pvc-2"),
        "{listed}"
    );
    let (_, scrape) = http_get(port, "/metrics").unwrap();
    let body = scrape.split("\r\n\r\n").nth(1).unwrap_or_default();
    for want in [
        "rds_csi_backend_up{backend=\"default\"} 1",
        "rds_csi_backend_up{backend=\"lab2\"} 1",
        "rds_csi_rpc_total{code=\"OK\",method=\"CreateVolume\",backend=\"lab2\"} 1",
        "rds_csi_ssh_connected{backend=\"lab2\"} 1",
    ] {
        assert!(body.contains(want), "{want} missing:\n{body}");
    }
    promtool_check_metrics(body);

    // lab2 goes away: the controller stays ready (the default backend
    // answers), says which backend is down, and only lab2's volumes fail.
    let mut lab2 = lab2;
    let _ = lab2.child.kill();
    let _ = lab2.child.wait();
    wait_for("lab2 reported down", || {
        http_get(port, "/metrics")
            .filter(|(_, b)| b.contains("rds_csi_backend_up{backend=\"lab2\"} 0"))
    });
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
    let err = csi(dir.path(), &["delete", "lab2-pvc-1"]).unwrap_err();
    assert!(err.contains("Unavailable"), "{err}");
    let err = csi(dir.path(), &["create", "pvc-3", "--param", "backend=lab2"]).unwrap_err();
    assert!(err.contains("Unavailable"), "{err}");
    csi(dir.path(), &["create", "pvc-4"]).unwrap();
    csi(dir.path(), &["delete", "pvc-4"]).unwrap();
    // Both down: not ready.
    let mut sim = sim;
    let _ = sim.child.kill();
    let _ = sim.child.wait();
    wait_readyz("not ready", port, 503);
    let _ = ctl.kill();
    let _ = ctl.wait();
}
