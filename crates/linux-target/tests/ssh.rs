//! The target over real SSH: an OpenSSH server started on a loopback port
//! with a throwaway host key, the routeros crate's client with that key
//! pinned, and the scripts run by the login user's shell on the configfs
//! stand-in (see `common`).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::StandIn;
use linux_target::{Nqn, Privilege, SshShell, VolumeName};
use routeros::{Client, ClientConfig, ClientMetrics, HostKeyPolicy};
use russh::keys::{Algorithm, PrivateKey};
use testkit::sshd::{user, Sshd};

/// sshd admitting `key`, with `env` set in every session.
fn sshd(dir: &Path, key: &PrivateKey, env: &[(String, String)]) -> Sshd {
    testkit::sshd::start(dir, &key.public_key().to_openssh().unwrap(), env)
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
