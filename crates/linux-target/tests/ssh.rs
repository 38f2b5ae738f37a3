//! The target over real SSH: an OpenSSH server started on a loopback port
//! with a throwaway host key, the routeros crate's client with that key
//! pinned, and the scripts run by the login user's shell on the configfs
//! stand-in (see `common`).

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::StandIn;
use linux_target::{Nqn, Privilege, SshShell, VolumeName};
use routeros::{Client, ClientConfig, ClientMetrics, HostKeyPolicy};
use russh::keys::{Algorithm, PrivateKey};

const SSHD: &str = "/usr/sbin/sshd";

struct Sshd {
    child: Child,
    addr: String,
    fingerprint: String,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts sshd for the current user on a free loopback port, admitting
/// `key`, with `env` set in every session.
fn sshd(dir: &Path, key: &PrivateKey, env: &[(String, String)]) -> Sshd {
    let host_key = dir.join("host_key");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&host_key)
        .status()
        .unwrap();
    assert!(st.success());
    let fp = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(dir.join("host_key.pub"))
        .output()
        .unwrap();
    let fingerprint = String::from_utf8(fp.stdout)
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .to_string();
    std::fs::write(
        dir.join("authorized_keys"),
        key.public_key().to_openssh().unwrap(),
    )
    .unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let set_env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let config = format!(
        "Port {port}\nListenAddress 127.0.0.1\nHostKey {hk}\nAuthorizedKeysFile {ak}\n\
         PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n\
         PermitRootLogin prohibit-password\nPidFile {pid}\n{set_env}",
        hk = host_key.display(),
        ak = dir.join("authorized_keys").display(),
        pid = dir.join("sshd.pid").display(),
        set_env = if set_env.is_empty() {
            String::new()
        } else {
            format!("SetEnv {}\n", set_env.join(" "))
        },
    );
    std::fs::write(dir.join("sshd_config"), config).unwrap();
    // Privilege separation wants this directory when run as root.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(dir.join("sshd_config"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
        .spawn()
        .expect("start sshd");
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(&addr).is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            panic!("sshd did not listen on {addr}: {log}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Sshd {
        child,
        addr,
        fingerprint,
    }
}

fn user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn host(s: &str) -> Nqn {
    Nqn::new(&format!("nqn.2014-08.org.nvmexpress:uuid:{s}")).unwrap()
}

#[tokio::test]
#[ignore = "needs OpenSSH's sshd at /usr/sbin/sshd and ssh-keygen (apt-get install openssh-server)"]
async fn the_target_is_managed_over_one_pinned_ssh_connection() {
    let s = StandIn::new();
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let server = sshd(s.dir.path(), &key, &s.shell().env);
    let registry = prometheus::Registry::new();
    let metrics = ClientMetrics::register(&registry).unwrap();
    let cfg = ClientConfig::new(
        &server.addr,
        user(),
        HostKeyPolicy::Pinned(server.fingerprint.clone()),
    );
    let shell = SshShell::new(
        Client::new(cfg, key, Some(metrics.clone())),
        Privilege::Root,
    );
    let t = s.target(Arc::new(shell));

    s.block_device("pvc-1");
    let vol = VolumeName::new("pvc-1").unwrap();
    let e = t.export(&vol, &[host("a")]).await.unwrap();
    assert_eq!(e.allowed_hosts, [host("a").to_string()]);
    assert!(!e.any_host && e.on_port);
    let e = t.revoke(&vol, &[host("a")], true).await.unwrap().unwrap();
    assert!(e.allowed_hosts.is_empty() && e.on_port);
    t.unexport(&vol).await.unwrap();
    assert_eq!(t.export_state(&vol).await.unwrap(), None);

    // A failing script's exit status and stderr come back over SSH and
    // are classified: no such volume group here.
    let e = t.get_volume(&vol).await.unwrap_err();
    assert_eq!(e.kind(), "failed", "{e}");

    assert_eq!(
        metrics.connects.with_label_values(&["ok"]).get(),
        1,
        "one connection"
    );
    assert_eq!(
        metrics
            .commands
            .with_label_values(&["nvmet_export", "ok"])
            .get(),
        1
    );
    assert_eq!(
        metrics
            .commands
            .with_label_values(&["lvs_get", "failed"])
            .get(),
        1
    );
}

#[tokio::test]
#[ignore = "needs OpenSSH's sshd at /usr/sbin/sshd and ssh-keygen (apt-get install openssh-server)"]
async fn a_server_presenting_another_host_key_is_refused() {
    let s = StandIn::new();
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let server = sshd(s.dir.path(), &key, &[]);
    let other = "SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let cfg = ClientConfig::new(&server.addr, user(), HostKeyPolicy::Pinned(other.into()));
    let t = s.target(Arc::new(SshShell::new(
        Client::new(cfg, key, None),
        Privilege::Root,
    )));
    let e = t.list_exports().await.unwrap_err();
    assert_eq!(e.kind(), "host_key_mismatch", "{e}");
}
