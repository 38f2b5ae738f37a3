//! The host allow-list and session cut of the RouterOS client against the
//! simulator over real SSH, which enforces the semantics the driver assumes
//! of `nvme-tcp-server-allow-host-name` (see `docs/routeros.md`).

use std::collections::BTreeSet;
use std::time::Duration;

use rds_sim::{DiskInfo, SimConfig, SimHandle};
use routeros::{
    Client, ClientConfig, Command, DiskComment, Error, HostAccess, HostKeyPolicy, HostNqn, NewDisk,
    Nqn, Rds, RosPath, Slot, NO_HOST_NQN,
};
use russh::keys::{Algorithm, PrivateKey};

/// Host NQNs long enough that two of them wrap the printed line.
const A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
const B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

struct Rig {
    sim: SimHandle,
    rds: Rds,
    vol: Slot,
}

/// A simulator holding one exported volume `pvc-fenced`.
async fn rig() -> Rig {
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap();
    let sim = rds_sim::start(SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let pin = HostKeyPolicy::Pinned(sim.host_key_fingerprint());
    let mut cfg = ClientConfig::new(sim.addr().to_string(), "csi", pin);
    cfg.command_timeout = Duration::from_secs(3);
    let rds = Rds::new(Client::new(cfg, key, None));
    let vol = Slot::new("pvc-fenced").unwrap();
    rds.create_disk(&NewDisk {
        slot: vol.clone(),
        file: RosPath::new("/storage-pool/metal-csi/pvc-fenced.img").unwrap(),
        size_bytes: 1 << 20,
        port: 4420,
        nqn: Nqn::for_volume("nqn.2000-02.com.mikrotik:", &vol).unwrap(),
        comment: DiskComment::default(),
    })
    .await
    .unwrap();
    Rig { sim, rds, vol }
}

impl Rig {
    /// The volume as the simulator holds it.
    fn disk(&self) -> DiskInfo {
        let slot = self.vol.as_str();
        self.sim
            .disks()
            .into_iter()
            .find(|d| d.slot == slot)
            .unwrap()
    }

    /// Commands the simulator received since the last call.
    fn commands(&self) -> u64 {
        let n = self.sim.stats().commands;
        self.sim.reset_stats();
        n
    }
}

fn host(s: &str) -> HostNqn {
    HostNqn::new(s).unwrap()
}

fn only(hosts: &[&str]) -> HostAccess {
    HostAccess::Only(hosts.iter().map(|h| h.to_string()).collect::<BTreeSet<_>>())
}

#[tokio::test]
async fn an_allow_list_set_over_ssh_reads_back_whole_and_no_host_is_not_any_host() {
    let r = rig().await;
    assert_eq!(r.rds.allowed_hosts(&r.vol).await.unwrap(), HostAccess::Any);

    r.rds
        .set_allowed_hosts(&r.vol, &[host(B), host(A)])
        .await
        .unwrap();
    assert_eq!(r.disk().allow_host, format!("{A},{B}"));
    assert_eq!(r.rds.allowed_hosts(&r.vol).await.unwrap(), only(&[A, B]));
    let got = r.rds.get_disk(&r.vol).await.unwrap().unwrap();
    assert_eq!(got.allowed_hosts, Some(only(&[A, B])));

    // The same list again: one lookup, no write.
    r.commands();
    r.rds
        .set_allowed_hosts(&r.vol, &[host(A), host(B)])
        .await
        .unwrap();
    assert_eq!(r.commands(), 1);

    // No host at all is a list holding only the placeholder, never empty.
    r.rds.set_allowed_hosts(&r.vol, &[]).await.unwrap();
    assert_eq!(r.disk().allow_host, NO_HOST_NQN);
    assert_eq!(r.rds.allowed_hosts(&r.vol).await.unwrap(), only(&[]));

    r.rds.allow_any_host(&r.vol).await.unwrap();
    assert_eq!(r.disk().allow_host, "");
    assert_eq!(r.rds.allowed_hosts(&r.vol).await.unwrap(), HostAccess::Any);
}

#[tokio::test]
async fn allow_and_disallow_are_idempotent_and_never_leave_the_disk_open_to_any_host() {
    let r = rig().await;
    let (a, b) = (host(A), host(B));
    // The first allow narrows "any host" to that host.
    assert_eq!(r.rds.allow_host(&r.vol, &a).await.unwrap(), only(&[A]));
    r.commands();
    assert_eq!(r.rds.allow_host(&r.vol, &a).await.unwrap(), only(&[A]));
    assert_eq!(r.commands(), 1, "already allowed: a lookup only");
    assert_eq!(r.rds.allow_host(&r.vol, &b).await.unwrap(), only(&[A, B]));

    assert_eq!(r.rds.disallow_host(&r.vol, &a).await.unwrap(), only(&[B]));
    r.commands();
    assert_eq!(r.rds.disallow_host(&r.vol, &a).await.unwrap(), only(&[B]));
    assert_eq!(r.commands(), 1, "not on the list: a lookup only");
    // The last host gone: no host may connect, not any host.
    assert_eq!(r.rds.disallow_host(&r.vol, &b).await.unwrap(), only(&[]));
    assert_eq!(r.disk().allow_host, NO_HOST_NQN);
    assert_eq!(r.rds.allow_host(&r.vol, &b).await.unwrap(), only(&[B]));
    assert_eq!(r.disk().allow_host, B);

    // Removing a host from a disk open to any host closes it to all.
    r.rds.allow_any_host(&r.vol).await.unwrap();
    assert_eq!(r.rds.disallow_host(&r.vol, &a).await.unwrap(), only(&[]));
}

#[tokio::test]
async fn a_session_cut_toggles_the_export_once_and_a_retry_only_finishes_it() {
    let r = rig().await;
    r.rds.set_allowed_hosts(&r.vol, &[host(A)]).await.unwrap();
    r.rds.cut_sessions(&r.vol).await.unwrap();
    let d = r.disk();
    assert_eq!(
        (d.export, d.export_cuts, d.allow_host.as_str()),
        (true, 1, A)
    );

    // A cut that stopped after turning the export off (its second command
    // lost): the allow-list cannot be read meanwhile, and running the cut
    // again turns the export back on without another cut.
    r.rds
        .client()
        .run(&Command::DiskSetExport {
            slot: r.vol.clone(),
            export: false,
        })
        .await
        .unwrap();
    let err = r.rds.allow_host(&r.vol, &host(B)).await.unwrap_err();
    assert!(err.to_string().contains("not exported"), "{err}");
    r.rds.cut_sessions(&r.vol).await.unwrap();
    let d = r.disk();
    assert_eq!(
        (d.export, d.export_cuts, d.allow_host.as_str()),
        (true, 2, A)
    );
    assert_eq!(r.rds.allowed_hosts(&r.vol).await.unwrap(), only(&[A]));
}

#[tokio::test]
async fn a_missing_disk_is_not_found_for_every_access_operation() {
    let r = rig().await;
    let gone = Slot::new("pvc-gone").unwrap();
    let a = host(A);
    let results = [
        r.rds.allowed_hosts(&gone).await.map(drop),
        r.rds
            .set_allowed_hosts(&gone, std::slice::from_ref(&a))
            .await,
        r.rds.allow_host(&gone, &a).await.map(drop),
        r.rds.disallow_host(&gone, &a).await.map(drop),
        r.rds.cut_sessions(&gone).await,
    ];
    for result in results {
        assert!(matches!(result, Err(Error::NotFound(_))), "{result:?}");
    }
    assert_eq!(r.disk().export_cuts, 0);
}

#[tokio::test]
async fn bad_host_nqns_are_refused_before_any_command() {
    let r = rig().await;
    r.commands();
    for bad in [
        format!("{A},{B}"),
        format!("{A}\" comment=\"x"),
        "nqn.2014-08.org.nvmexpress.discovery".to_string(),
        NO_HOST_NQN.to_string(),
        "host-a".to_string(),
    ] {
        assert!(HostNqn::new(&bad).is_err(), "{bad:?}");
    }
    assert_eq!(r.commands(), 0);
}
