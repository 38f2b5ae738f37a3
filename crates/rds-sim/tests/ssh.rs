//! End-to-end tests over real SSH: a russh client with a key made at test
//! time talks to a simulator on an ephemeral port.

use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rds_sim::{SimConfig, SimHandle, Stats, Storage};
use russh::client;
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::ChannelMsg;

const SLOT: &str = "pvc-0f6c2a1e-9b7d-4c3e-8f21-6a5b4c3d2e1f";

struct TestClient {
    expected_fingerprint: String,
}

impl client::Handler for TestClient {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                rds_sim::format_fingerprint(key) == self.expected_fingerprint
            }
            PublicKeyOrCertificate::Certificate(_) => false,
        })
    }
}

type Conn = client::Handle<TestClient>;

fn new_key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
}

struct Fixture {
    sim: SimHandle,
    key: Arc<PrivateKey>,
}

async fn fixture(configure: impl FnOnce(&mut SimConfig)) -> Fixture {
    let key = new_key();
    let mut config = SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        ..SimConfig::default()
    };
    configure(&mut config);
    let sim = rds_sim::start(config).await.unwrap();
    Fixture {
        sim,
        key: Arc::new(key),
    }
}

async fn try_connect(sim: &SimHandle, user: &str, key: Arc<PrivateKey>) -> Result<Conn, String> {
    let config = Arc::new(client::Config {
        inactivity_timeout: None,
        nodelay: true,
        ..Default::default()
    });
    let handler = TestClient {
        expected_fingerprint: sim.host_key_fingerprint(),
    };
    let mut conn = client::connect(config, sim.addr(), handler)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let auth = conn
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, None))
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if auth.success() {
        Ok(conn)
    } else {
        Err("authentication rejected".into())
    }
}

impl Fixture {
    async fn connect(&self) -> Conn {
        try_connect(&self.sim, "csi", self.key.clone())
            .await
            .unwrap()
    }
}

#[derive(Debug, Default)]
struct Output {
    stdout: String,
    stderr: String,
    status: Option<u32>,
}

async fn exec(conn: &Conn, command: &str) -> Result<Output, russh::Error> {
    let mut channel = conn.channel_open_session().await?;
    channel.exec(true, command).await?;
    let mut out = Output::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::Data { data } => out.stdout.push_str(&String::from_utf8_lossy(&data)),
            ChannelMsg::ExtendedData { data, ext: 1 } => {
                out.stderr.push_str(&String::from_utf8_lossy(&data))
            }
            ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    Ok(out)
}

async fn run(conn: &Conn, command: &str) -> Output {
    exec(conn, command).await.unwrap()
}

/// The connection is gone: a command on it fails, or ends without an exit
/// status, within seconds.
async fn assert_cut(conn: &Conn, why: &str) {
    let out = tokio::time::timeout(Duration::from_secs(5), exec(conn, "/disk print detail"))
        .await
        .expect(why);
    assert!(out.is_err() || out.unwrap().status.is_none());
}

/// A new connection is accepted and answered.
async fn assert_a_new_connection_is_served(f: &Fixture) {
    let conn = f.connect().await;
    assert_eq!(
        run(&conn, "/disk print detail where slot=x").await.status,
        Some(0)
    );
}

fn add_command(slot: &str, size: &str) -> String {
    format!(
        "/disk add type=file file-path=/storage-pool/metal-csi/{slot}.img file-size={size} slot={slot} nvme-tcp-export=yes nvme-tcp-server-port=4420 nvme-tcp-server-nqn=nqn.2000-02.com.mikrotik:{slot}"
    )
}

/// Joins `print detail` continuation lines back into one line per record,
/// gluing a cut value back together where a line ends mid-token.
fn unwrap_records(text: &str) -> Vec<String> {
    let mut records = Vec::new();
    let mut current = String::new();
    let mut last_len = 0;
    for line in text.split("\r\n") {
        if line.is_empty() {
            if !current.is_empty() {
                records.push(std::mem::take(&mut current));
            }
            continue;
        }
        if line.starts_with("Flags:") {
            continue;
        }
        if line.starts_with("    ") && !current.is_empty() {
            if last_len < 80 {
                current.push(' ');
            }
            current.push_str(line.trim_start());
        } else {
            current = line.to_string();
        }
        last_len = line.len();
    }
    records
}

#[tokio::test]
async fn disk_add_then_print_shows_grouped_size_and_a_wrapped_file_path() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    let added = run(&conn, &add_command(SLOT, "50G")).await;
    assert_eq!((added.stdout.as_str(), added.status), ("", Some(0)));

    let out = run(&conn, &format!("/disk print detail where slot=\"{SLOT}\"")).await;
    assert_eq!(out.status, Some(0));
    assert!(out
        .stdout
        .starts_with("Flags: X - disabled, R - running \r\n 0  type=file slot=\""));
    assert!(out.stdout.contains("size=53 687 091 200"), "{}", out.stdout);
    assert!(out.stdout.contains("file-size=50.0GiB"), "{}", out.stdout);
    assert!(out
        .stdout
        .lines()
        .all(|l| l.trim_end_matches('\r').len() <= 80));
    let path = format!("/storage-pool/metal-csi/{SLOT}.img");
    assert!(
        !out.stdout.contains(&format!("file-path={path}")),
        "the long file-path should be cut across lines:\n{}",
        out.stdout
    );
    let records = unwrap_records(&out.stdout);
    assert_eq!(records.len(), 1);
    assert!(
        records[0].contains(&format!("file-path={path} ")),
        "{}",
        records[0]
    );
    assert!(records[0].contains(&format!("model=\"{path}\"")));
    assert!(records[0].contains(&format!(
        "nvme-tcp-server-nqn=\"nqn.2000-02.com.mikrotik:{SLOT}\""
    )));
    assert!(records[0].contains("nvme-tcp-export=yes nvme-tcp-server-port=4420"));
}

#[tokio::test]
async fn add_print_set_remove_and_file_remove_round_trip() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    for slot in ["pvc-a", "pvc-b"] {
        assert_eq!(run(&conn, &add_command(slot, "1G")).await.stdout, "");
    }
    let listed = run(&conn, "/disk print detail where slot~\"^pvc-\"").await;
    assert_eq!(unwrap_records(&listed.stdout).len(), 2);

    let set = run(&conn, "/disk set [find slot=pvc-a] file-size=1536M").await;
    assert_eq!((set.stdout.as_str(), set.status), ("", Some(0)));
    let one = run(&conn, "/disk print detail where slot=pvc-a").await;
    assert!(one.stdout.contains("size=1 610 612 736"), "{}", one.stdout);
    assert!(one.stdout.contains("file-size=1.5GiB"));

    let missing = run(&conn, "/disk set [find slot=nope] file-size=2G").await;
    assert_eq!((missing.stdout.as_str(), missing.status), ("", Some(0)));

    assert_eq!(
        run(&conn, "/disk remove [find slot=pvc-a]").await.stdout,
        ""
    );
    assert_eq!(
        run(&conn, "/disk print detail where slot=pvc-a")
            .await
            .stdout,
        ""
    );
    assert_eq!(
        run(&conn, "/disk remove [find slot=pvc-a]").await.stdout,
        ""
    );

    let files = run(
        &conn,
        "/file print detail where name~\"storage-pool/metal-csi/\"",
    )
    .await;
    let records = unwrap_records(&files.stdout);
    assert_eq!(records.len(), 2, "{}", files.stdout);
    assert!(records[0].contains(
        "name=storage-pool/metal-csi/pvc-a.img type=.img file size=1.5GiB last-modified="
    ));

    let rm = "/file remove [find name=\"storage-pool/metal-csi/pvc-a.img\"]";
    assert_eq!(run(&conn, rm).await.stdout, "");
    assert_eq!(run(&conn, rm).await.stdout, "");
    let busy = run(
        &conn,
        "/file remove [find name=\"storage-pool/metal-csi/pvc-b.img\"]",
    )
    .await;
    assert_eq!(busy.stdout, "failure: file is in use\r\n");

    let disks = f.sim.disks();
    assert_eq!(disks.len(), 1);
    assert_eq!(disks[0].slot, "pvc-b");
    assert_eq!(disks[0].file_path, "/storage-pool/metal-csi/pvc-b.img");
    assert_eq!(
        disks[0].nqn.as_deref(),
        Some("nqn.2000-02.com.mikrotik:pvc-b")
    );
    assert_eq!(
        (disks[0].port, disks[0].export, disks[0].size),
        (Some(4420), true, 1 << 30)
    );
    assert_eq!(
        f.sim.files(),
        vec![("storage-pool/metal-csi/pvc-b.img".to_string(), 1 << 30)]
    );
}

#[tokio::test]
async fn dir_mode_creates_and_deletes_a_sparse_backing_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let f = fixture(|c| c.storage = Storage::Dir(root.clone())).await;
    let conn = f.connect().await;
    assert_eq!(run(&conn, &add_command("pvc-d", "10G")).await.stdout, "");

    let path = dir.path().join("metal-csi").join("pvc-d.img");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 10 << 30);
    assert!(meta.blocks() * 512 < 1 << 20, "file should be sparse");

    assert_eq!(
        run(&conn, "/disk set [find slot=pvc-d] file-size=12G")
            .await
            .stdout,
        ""
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 12 << 30);

    let snap = run(
        &conn,
        "/disk add type=file copy-from=[find slot=pvc-d] file-path=/storage-pool/metal-csi/snap-1.img slot=snap-1",
    )
    .await;
    assert_eq!(snap.stdout, "");
    let snap_path = dir.path().join("metal-csi").join("snap-1.img");
    assert_eq!(std::fs::metadata(&snap_path).unwrap().len(), 12 << 30);

    assert_eq!(
        run(&conn, "/disk remove [find slot=pvc-d]").await.stdout,
        ""
    );
    assert!(path.exists(), "removing the disk keeps its file");
    let rm = run(
        &conn,
        "/file remove [find name=\"storage-pool/metal-csi/pvc-d.img\"]",
    )
    .await;
    assert_eq!(rm.stdout, "");
    assert!(!path.exists());
    assert!(snap_path.exists());
}

#[tokio::test]
async fn dir_mode_picks_up_files_left_from_a_previous_run() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("metal-csi")).unwrap();
    std::fs::File::create(dir.path().join("metal-csi").join("old.img"))
        .unwrap()
        .set_len(4096)
        .unwrap();
    let root = dir.path().to_path_buf();
    let f = fixture(|c| c.storage = Storage::Dir(root)).await;
    assert_eq!(
        f.sim.files(),
        vec![("storage-pool/metal-csi/old.img".to_string(), 4096)]
    );
}

#[tokio::test]
async fn pool_capacity_query_reports_size_free_and_use() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim
        .add_file("storage-pool/metal-csi/orphan.img", 1_985_531_985_920);
    let out = run(
        &conn,
        "/disk print detail where mount-point=\"storage-pool\"",
    )
    .await;
    let records = unwrap_records(&out.stdout);
    assert_eq!(records.len(), 1, "{}", out.stdout);
    assert!(
        records[0].contains("size=7 949 127 950 336 free=5 963 595 964 416 use=25%"),
        "{}",
        records[0]
    );

    f.sim.set_pool_size(2 << 40);
    let out = run(
        &conn,
        "/disk print detail where mount-point=\"storage-pool\"",
    )
    .await;
    assert!(
        out.stdout.contains("size=2 199 023 255 552"),
        "{}",
        out.stdout
    );

    let orphans = run(&conn, "/file print detail where name~\"orphan\"").await;
    assert!(orphans
        .stdout
        .contains("name=storage-pool/metal-csi/orphan.img"));
}

#[tokio::test]
async fn parse_errors_go_to_stderr_with_status_one() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    let out = run(&conn, "/disk frobnicate").await;
    assert_eq!(
        out.stderr,
        "bad command name frobnicate (line 1 column 7)\r\n"
    );
    assert_eq!((out.stdout.as_str(), out.status), ("", Some(1)));

    let out = run(
        &conn,
        "/disk add type=file file-path=/storage-pool/x.img slot=x",
    )
    .await;
    assert_eq!(
        out.stdout,
        "failure: invalid parameter: file-size is required\r\n"
    );
    assert_eq!(out.status, Some(0));
}

#[tokio::test]
async fn latency_delays_every_reply() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().set_latency(Duration::from_millis(300));
    let started = Instant::now();
    run(&conn, "/disk print detail").await;
    assert!(started.elapsed() >= Duration::from_millis(300));

    // Channels of one connection do not queue behind each other: five
    // in a row would take 1.5 s.
    let started = Instant::now();
    let outs = futures_join(&conn, 5, "/disk print detail where slot=none").await;
    assert!(outs.iter().all(|o| o.status == Some(0)));
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "{:?}",
        started.elapsed()
    );

    f.sim.faults().clear();
    let started = Instant::now();
    run(&conn, "/disk print detail").await;
    assert!(started.elapsed() < Duration::from_millis(300));
}

async fn futures_join(conn: &Conn, n: usize, command: &str) -> Vec<Output> {
    let runs = (0..n).map(|_| exec(conn, command));
    futures::future::join_all(runs)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn fail_next_answers_failure_without_acting() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().fail_next(2, "device busy");
    for _ in 0..2 {
        let out = run(&conn, &add_command("pvc-f", "1G")).await;
        assert_eq!(out.stdout, "failure: device busy\r\n");
        assert_eq!(out.status, Some(0));
    }
    assert!(f.sim.disks().is_empty());
    assert_eq!(run(&conn, &add_command("pvc-f", "1G")).await.stdout, "");
    assert_eq!(f.sim.disks().len(), 1);
}

#[tokio::test]
async fn no_space_next_fails_only_disk_add() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().no_space_next(1);
    assert_eq!(
        run(&conn, "/disk print detail where slot=x").await.stdout,
        ""
    );
    let out = run(&conn, &add_command("pvc-n", "1G")).await;
    assert_eq!(out.stdout, "failure: not enough space\r\n");
    assert!(f.sim.disks().is_empty());
    assert_eq!(run(&conn, &add_command("pvc-n", "1G")).await.stdout, "");
}

#[tokio::test]
async fn real_lack_of_space_fails_disk_add() {
    let f = fixture(|c| c.pool_size = 10 << 30).await;
    let conn = f.connect().await;
    assert_eq!(run(&conn, &add_command("a", "6G")).await.stdout, "");
    let out = run(&conn, &add_command("b", "6G")).await;
    assert_eq!(out.stdout, "failure: not enough space\r\n");
    let out = run(&conn, "/disk set [find slot=a] file-size=11G").await;
    assert_eq!(out.stdout, "failure: not enough space\r\n");
}

#[tokio::test]
async fn drop_next_closes_the_connection_without_a_reply() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().drop_next(1);
    let out = tokio::time::timeout(Duration::from_secs(5), exec(&conn, "/disk print detail"))
        .await
        .expect("a dropped connection must end the command");
    if let Ok(out) = out {
        assert_eq!((out.stdout.as_str(), out.status), ("", None));
    }
    assert_cut(&conn, "the dead connection must fail fast").await;
    assert_a_new_connection_is_served(&f).await;
}

#[tokio::test]
async fn cut_after_exit_sends_the_status_then_no_eof_or_close() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().cut_after_exit_next(1);
    let mut channel = conn.channel_open_session().await.unwrap();
    channel.exec(true, add_command("a", "1G")).await.unwrap();
    let mut seen = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = channel.wait().await {
            seen.push(match msg {
                ChannelMsg::ExitStatus { exit_status } => format!("exit {exit_status}"),
                ChannelMsg::Eof => "eof".into(),
                ChannelMsg::Close => "close".into(),
                _ => continue,
            });
        }
    })
    .await;
    assert!(ended.is_ok(), "the cut must end the channel");
    assert_eq!(seen, ["exit 0"]);
    // The command acted all the same.
    assert_eq!(f.sim.disks().len(), 1);
}

#[tokio::test]
async fn ignore_disk_remove_answers_success_and_keeps_the_disk() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    run(&conn, &add_command("a", "1G")).await;
    f.sim.faults().ignore_disk_remove_next(1);
    let out = run(&conn, "/disk remove [find slot=a]").await;
    assert_eq!((out.stdout.as_str(), out.status), ("", Some(0)));
    assert_eq!(f.sim.disks().len(), 1);
    run(&conn, "/disk remove [find slot=a]").await;
    assert!(f.sim.disks().is_empty());
}

#[tokio::test]
async fn hang_next_never_answers_but_the_next_command_does() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().hang_next(1);
    let hung = tokio::time::timeout(
        Duration::from_millis(300),
        exec(&conn, "/disk print detail"),
    )
    .await;
    assert!(hung.is_err(), "a hung command must not answer");
    let out = run(&conn, "/disk print detail where slot=x").await;
    assert_eq!(out.status, Some(0));
}

#[tokio::test]
async fn refuse_connections_closes_new_and_existing_connections() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    f.sim.faults().refuse_connections(true);
    assert_cut(&conn, "a cut connection must fail fast").await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        try_connect(&f.sim, "csi", f.key.clone()),
    )
    .await
    .expect("a refused connection must fail fast");
    assert!(refused.is_err());

    f.sim.faults().refuse_connections(false);
    assert_a_new_connection_is_served(&f).await;
}

#[tokio::test]
async fn wrong_key_is_rejected_and_counted() {
    let f = fixture(|_| {}).await;
    let wrong = try_connect(&f.sim, "csi", Arc::new(new_key())).await;
    assert_eq!(wrong.err().as_deref(), Some("authentication rejected"));
    assert_eq!(
        f.sim.stats(),
        Stats {
            connections: 0,
            commands: 0,
            auth_failures: 1
        }
    );
}

#[tokio::test]
async fn wrong_user_is_rejected_when_a_user_is_configured() {
    let f = fixture(|c| c.user = Some("csi".into())).await;
    let wrong = try_connect(&f.sim, "admin", f.key.clone()).await;
    assert!(wrong.is_err());
    assert!(try_connect(&f.sim, "csi", f.key.clone()).await.is_ok());
    assert_eq!(f.sim.stats().auth_failures, 1);
}

#[tokio::test]
async fn stats_count_sessions_and_commands_and_reset() {
    let f = fixture(|_| {}).await;
    let a = f.connect().await;
    let b = f.connect().await;
    run(&a, "/disk print detail").await;
    run(&b, "/disk print detail").await;
    f.sim.faults().fail_next(1, "x");
    run(&b, "/disk print detail").await;
    assert_eq!(
        f.sim.stats(),
        Stats {
            connections: 2,
            commands: 3,
            auth_failures: 0
        }
    );
    f.sim.reset_stats();
    assert_eq!(f.sim.stats(), Stats::default());
}

#[tokio::test]
async fn host_key_fingerprint_matches_the_configured_key() {
    let host = new_key();
    let expected = {
        let out = host
            .public_key()
            .fingerprint(russh::keys::HashAlg::Sha256)
            .to_string();
        assert!(out.starts_with("SHA256:") && !out.ends_with('='));
        out
    };
    let f = fixture(|c| c.host_key = Some(host.clone())).await;
    assert_eq!(f.sim.host_key_fingerprint(), expected);
    assert_eq!(f.sim.host_public_key(), host.public_key().clone());
    // The test client refuses any other host key, so connecting proves it.
    f.connect().await;
}

#[tokio::test]
async fn shutdown_stops_listening_and_cuts_connections() {
    let f = fixture(|_| {}).await;
    let conn = f.connect().await;
    let addr = f.sim.addr();
    f.sim.clone().shutdown().await;
    assert_cut(&conn, "a cut connection must fail fast").await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn handles_and_faults_can_be_shared_across_tasks() {
    fn shareable<T: Send + Sync + Clone + 'static>() {}
    fn sync<T: Send + Sync>() {}
    shareable::<SimHandle>();
    sync::<rds_sim::Faults>();
}

#[tokio::test]
async fn real_exports_follow_the_disks_and_go_away_with_the_simulator() {
    // A plain directory stands in for the kernel target's configfs.
    let dir = tempfile::tempdir().unwrap();
    let cfs = dir.path().join("nvmet");
    std::fs::create_dir_all(cfs.join("subsystems")).unwrap();
    std::fs::create_dir_all(cfs.join("ports")).unwrap();
    let data = dir.path().join("data");
    let nvmet = rds_sim::NvmetConfig {
        addr: "127.0.0.1".parse().unwrap(),
        configfs: cfs.clone(),
    };
    let f = fixture(|c| {
        c.storage = Storage::Dir(data.clone());
        c.nvmet = Some(nvmet);
    })
    .await;
    let conn = f.connect().await;
    assert_eq!(run(&conn, &add_command("pvc-n", "1G")).await.stdout, "");
    let sub = cfs.join("subsystems/nqn.2000-02.com.mikrotik:pvc-n");
    let device = std::fs::read_to_string(sub.join("namespaces/1/device_path")).unwrap();
    assert_eq!(
        std::path::Path::new(&device),
        data.canonicalize().unwrap().join("metal-csi/pvc-n.img")
    );
    let link = cfs.join("ports/1/subsystems/nqn.2000-02.com.mikrotik:pvc-n");
    assert!(link.exists());

    // A target restart, as the fault knobs make it.
    assert_eq!(f.sim.nvmet_port_down(4420).unwrap(), 1);
    assert!(!link.exists());
    f.sim.nvmet_port_up(4420).unwrap();
    assert!(link.exists());

    // Without real exports the simulator cannot be started on memory storage.
    let err = rds_sim::start(SimConfig {
        nvmet: Some(rds_sim::NvmetConfig::new("127.0.0.1".parse().unwrap())),
        ..SimConfig::default()
    })
    .await
    .unwrap_err();
    assert!(err.to_string().contains("directory storage"), "{err}");

    drop(conn);
    f.sim.shutdown().await;
    assert_eq!(
        std::fs::read_dir(cfs.join("subsystems")).unwrap().count(),
        0
    );
    assert_eq!(std::fs::read_dir(cfs.join("ports")).unwrap().count(), 0);
}
