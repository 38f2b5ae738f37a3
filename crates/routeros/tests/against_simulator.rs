//! The RouterOS client against the simulator over real SSH: parsing of the
//! simulator's real-format output, host-key pinning, authentication, and
//! behaviour under injected faults.

use std::time::{Duration, Instant};

use rds_sim::{SimConfig, SimHandle, Storage};
use routeros::{
    Client, ClientConfig, ClusterId, Command, DiskComment, Error, HostKeyPolicy, NewDisk, Nqn, Rds,
    RosPath, Slot, SlotPrefix,
};
use russh::keys::{Algorithm, PrivateKey};

fn key() -> PrivateKey {
    PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
}

async fn sim_with(key: &PrivateKey, storage: Storage) -> SimHandle {
    rds_sim::start(SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        storage,
        pool_size: 100 << 30,
        ..Default::default()
    })
    .await
    .unwrap()
}

fn client_for(sim: &SimHandle, key: PrivateKey, policy: HostKeyPolicy) -> Rds {
    let mut cfg = ClientConfig::new(sim.addr().to_string(), "csi", policy);
    cfg.command_timeout = Duration::from_millis(1500);
    cfg.connect_timeout = Duration::from_secs(3);
    cfg.backoff_initial = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(200);
    Rds::new(Client::new(cfg, key, None))
}

async fn setup() -> (SimHandle, Rds) {
    let k = key();
    let sim = sim_with(&k, Storage::Memory).await;
    let rds = client_for(&sim, k, HostKeyPolicy::Pinned(sim.host_key_fingerprint()));
    (sim, rds)
}

fn new_disk(slot: &str, size: u64) -> NewDisk {
    let s = Slot::new(slot).unwrap();
    NewDisk {
        file: RosPath::new(&format!("/storage-pool/metal-csi/{slot}.img")).unwrap(),
        size_bytes: size,
        port: 4420,
        nqn: Nqn::for_volume("nqn.2000-02.com.mikrotik:", &s).unwrap(),
        slot: s,
        comment: DiskComment::default(),
    }
}

#[tokio::test]
async fn the_cluster_identity_and_orphan_marks_round_trip_through_the_disk_comment() {
    let (_sim, rds) = setup().await;
    let at: jiff::Timestamp = "2026-11-22T07:10:05Z".parse().unwrap();
    let cluster = ClusterId::new("0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
    let mut spec = new_disk("pvc-commented", 1 << 30);
    spec.comment = DiskComment::created(at, Some(cluster.clone()));
    rds.create_disk(&spec).await.unwrap();
    rds.create_disk(&new_disk("pvc-plain", 1 << 30))
        .await
        .unwrap();
    let slot = Slot::new("pvc-commented").unwrap();
    let read = || async { rds.get_disk(&slot).await.unwrap().unwrap().comment };
    assert_eq!(read().await, spec.comment);
    let listed = rds
        .list_disks(&SlotPrefix::new("pvc-").unwrap())
        .await
        .unwrap();
    let by_slot = |s: &str| listed.iter().find(|d| d.slot == s).unwrap().clone();
    assert_eq!(by_slot("pvc-commented").comment.cluster, Some(cluster));
    assert_eq!(
        by_slot("pvc-plain").comment,
        DiskComment::default(),
        "no comment: no identity, age unknown"
    );

    // The orphan sweep's marks: the longest comment the driver writes.
    let marked = DiskComment {
        retain: true,
        orphaned_since: Some("2026-12-01T00:00:00Z".parse().unwrap()),
        ..spec.comment.clone()
    };
    rds.set_disk_comment(&slot, &marked).await.unwrap();
    assert_eq!(read().await, marked);
    // A resize keeps the comment.
    rds.resize_disk(&slot, 2 << 30).await.unwrap();
    assert_eq!(read().await, marked);
    // Clearing a mark writes the comment back without it.
    let cleared = DiskComment {
        orphaned_since: None,
        ..marked
    };
    rds.set_disk_comment(&slot, &cleared).await.unwrap();
    assert_eq!(read().await, cleared);
    // Only the named disk changed.
    let plain = rds
        .get_disk(&Slot::new("pvc-plain").unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.comment, DiskComment::default());
}

#[tokio::test]
async fn a_disk_round_trips_through_the_simulator_output() {
    let (sim, rds) = setup().await;
    let slot = Slot::new("pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
    assert_eq!(rds.get_disk(&slot).await.unwrap(), None);
    rds.create_disk(&new_disk(slot.as_str(), 3 << 29))
        .await
        .unwrap();
    let d = rds.get_disk(&slot).await.unwrap().expect("disk exists");
    assert_eq!(
        d.size_bytes,
        3 << 29,
        "exact size from the grouped-digit size= field"
    );
    assert_eq!(
        d.file_path.as_deref(),
        Some("/storage-pool/metal-csi/pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3.img")
    );
    assert_eq!(
        d.nqn.as_deref(),
        Some("nqn.2000-02.com.mikrotik:pvc-0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3")
    );
    assert_eq!(d.port, Some(4420));
    assert!(d.exported);

    rds.resize_disk(&slot, 5 << 30).await.unwrap();
    assert_eq!(
        rds.get_disk(&slot).await.unwrap().unwrap().size_bytes,
        5 << 30
    );

    let listed = rds
        .list_disks(&SlotPrefix::new("pvc-").unwrap())
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    let cap = rds
        .capacity(&Slot::new("storage-pool").unwrap())
        .await
        .unwrap();
    assert_eq!(cap.size_bytes, 100 << 30);
    assert_eq!(cap.free_bytes, 95 << 30);

    rds.remove_disk(&slot).await.unwrap();
    rds.remove_file(&RosPath::new(d.file_path.as_deref().unwrap()).unwrap())
        .await
        .unwrap();
    assert_eq!(rds.get_disk(&slot).await.unwrap(), None);
    assert!(sim.disks().is_empty());
    assert!(sim.files().is_empty());
    // Removing again is not an error.
    rds.remove_disk(&slot).await.unwrap();
}

#[tokio::test]
async fn a_prefix_list_does_not_return_other_disks_or_the_pool() {
    let (_sim, rds) = setup().await;
    for s in ["pvc-a", "pvc-b", "other-c"] {
        rds.create_disk(&new_disk(s, 1 << 30)).await.unwrap();
    }
    let slots: Vec<String> = rds
        .list_disks(&SlotPrefix::new("pvc-").unwrap())
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.slot)
        .collect();
    assert_eq!(slots, vec!["pvc-a", "pvc-b"]);
    let all = rds.list_disks(&SlotPrefix::new("").unwrap()).await.unwrap();
    assert_eq!(all.len(), 3, "{all:?}");
}

#[tokio::test]
async fn a_long_path_wrapped_by_routeros_is_read_back_whole() {
    let (_sim, rds) = setup().await;
    let long = format!("pvc-{}", "x".repeat(100));
    rds.create_disk(&new_disk(&long, 1 << 30)).await.unwrap();
    let d = rds
        .get_disk(&Slot::new(&long).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.file_path.unwrap(),
        format!("/storage-pool/metal-csi/{long}.img")
    );
}

#[tokio::test]
async fn a_size_wrapped_between_digit_groups_is_read_back_whole() {
    let (_sim, rds) = setup().await;
    // Slot names of every length up to a line move the size field along the
    // line, so some listings wrap it between two digit groups.
    let size = 1_073_741_825;
    let mut wrapped = 0;
    for len in 1..=40 {
        let slot = format!("pvc-{}", "w".repeat(len));
        rds.create_disk(&new_disk(&slot, size)).await.unwrap();
        let out = rds
            .client()
            .run(&Command::DiskGet {
                slot: Slot::new(&slot).unwrap(),
            })
            .await
            .unwrap();
        if out.stdout.lines().any(|l| {
            l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && !l.starts_with(" 0")
        }) {
            wrapped += 1;
        }
        let d = rds.get_disk(&Slot::new(&slot).unwrap()).await.unwrap();
        assert_eq!(d.map(|d| d.size_bytes), Some(size), "{}", out.stdout);
    }
    assert!(
        wrapped > 0,
        "no listing wrapped the size; the test proves nothing"
    );
    let all = rds
        .list_disks(&SlotPrefix::new("pvc-").unwrap())
        .await
        .unwrap();
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|d| d.size_bytes == size));
}

#[tokio::test]
async fn backing_files_are_sparse_files_in_directory_mode() {
    let k = key();
    let dir = tempfile::tempdir().unwrap();
    let sim = sim_with(&k, Storage::Dir(dir.path().to_path_buf())).await;
    let rds = client_for(&sim, k, HostKeyPolicy::Pinned(sim.host_key_fingerprint()));
    rds.create_disk(&new_disk("pvc-f", 2 << 30)).await.unwrap();
    let files = rds
        .list_files(&RosPath::new("/storage-pool/metal-csi").unwrap())
        .await
        .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].name, "storage-pool/metal-csi/pvc-f.img");
    assert_eq!(files[0].size_bytes, Some(2 << 30));
    let found = rds.find_files("pvc-f").await.unwrap();
    assert_eq!(found.len(), 1);
}

#[tokio::test]
async fn a_host_key_mismatch_refuses_to_connect_and_sends_nothing() {
    let k = key();
    let sim = sim_with(&k, Storage::Memory).await;
    let other = key();
    let wrong = routeros::fingerprint(other.public_key());
    let rds = client_for(&sim, k, HostKeyPolicy::Pinned(wrong.clone()));
    let err = rds
        .get_disk(&Slot::new("pvc-a").unwrap())
        .await
        .unwrap_err();
    match err {
        Error::HostKeyMismatch { expected, actual } => {
            assert_eq!(expected, wrong);
            assert_eq!(actual, sim.host_key_fingerprint());
        }
        other => panic!("expected a host key mismatch, got {other:?}"),
    }
    assert_eq!(sim.stats().commands, 0);
    assert_eq!(sim.stats().connections, 0);
}

#[tokio::test]
async fn the_insecure_opt_out_connects_to_any_host_key() {
    let k = key();
    let sim = sim_with(&k, Storage::Memory).await;
    let rds = client_for(&sim, k, HostKeyPolicy::InsecureAcceptAny);
    assert_eq!(
        rds.get_disk(&Slot::new("pvc-a").unwrap()).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn an_unauthorized_key_is_refused() {
    let k = key();
    let sim = sim_with(&k, Storage::Memory).await;
    let rds = client_for(
        &sim,
        key(),
        HostKeyPolicy::Pinned(sim.host_key_fingerprint()),
    );
    let err = rds
        .get_disk(&Slot::new("pvc-a").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AuthFailed { .. }), "{err:?}");
    assert!(sim.stats().auth_failures >= 1);
    assert_eq!(sim.stats().commands, 0);
}

#[tokio::test]
async fn failures_are_classified_from_the_output() {
    let (sim, rds) = setup().await;
    sim.faults().no_space_next(1);
    let err = rds
        .create_disk(&new_disk("pvc-a", 1 << 30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
    sim.faults().fail_next(1, "something broke");
    let err = rds
        .get_disk(&Slot::new("pvc-a").unwrap())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Failed(_)), "{err:?}");
    rds.create_disk(&new_disk("pvc-a", 1 << 30)).await.unwrap();
    let err = rds
        .create_disk(&new_disk("pvc-a", 1 << 30))
        .await
        .unwrap_err();
    assert!(!err.is_transient(), "a duplicate is not transient: {err:?}");
    // A pool too small for the request is the real "not enough space".
    let err = rds
        .create_disk(&new_disk("pvc-huge", 500 << 30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::NoSpace(_)), "{err:?}");
}

#[tokio::test]
async fn a_hung_command_times_out_and_the_next_one_works() {
    let (sim, rds) = setup().await;
    let slot = Slot::new("pvc-a").unwrap();
    rds.get_disk(&slot).await.unwrap();
    sim.faults().hang_next(1);
    let started = Instant::now();
    let err = rds.get_disk(&slot).await.unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(rds.get_disk(&slot).await.unwrap(), None);
}

#[tokio::test]
async fn a_dropped_connection_is_unreachable_then_replaced() {
    let (sim, rds) = setup().await;
    let slot = Slot::new("pvc-a").unwrap();
    rds.get_disk(&slot).await.unwrap();
    assert_eq!(sim.stats().connections, 1);
    sim.faults().drop_next(1);
    let err = rds.get_disk(&slot).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    // The client reconnects by itself (after a short backoff).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match rds.get_disk(&slot).await {
            Ok(None) => break,
            Ok(Some(_)) => panic!("no disk was created"),
            Err(e) if Instant::now() < deadline && e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    }
    assert_eq!(sim.stats().connections, 2);
}

#[tokio::test]
async fn exit_status_plus_lost_connection_is_unreachable() {
    let (sim, rds) = setup().await;
    let slot = Slot::new("pvc-a").unwrap();
    rds.create_disk(&new_disk("pvc-a", 1 << 30)).await.unwrap();
    // The whole listing and a zero exit status arrive, then the connection
    // is cut before the channel's end: that is not a complete answer.
    sim.faults().cut_after_exit_next(1);
    let err = rds.get_disk(&slot).await.unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    // A command cut that way may well have acted: here the disk was added,
    // and only a fresh look tells.
    sim.faults().cut_after_exit_next(1);
    let err = rds
        .create_disk(&new_disk("pvc-b", 1 << 30))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unreachable(_)), "{err:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        match rds.get_disk(&Slot::new("pvc-b").unwrap()).await {
            Ok(found) => break found,
            Err(e) if Instant::now() < deadline && e.is_transient() => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("did not recover: {e:?}"),
        }
    };
    assert!(found.is_some(), "the cut command did act");
}

#[tokio::test]
async fn an_unreachable_rds_is_an_error_never_absent_and_recovers_by_itself() {
    let (sim, rds) = setup().await;
    let slot = Slot::new("pvc-a").unwrap();
    sim.faults().refuse_connections(true);
    for _ in 0..3 {
        let err = rds.get_disk(&slot).await.unwrap_err();
        assert!(err.is_transient(), "{err:?}");
    }
    sim.faults().refuse_connections(false);
    let deadline = Instant::now() + Duration::from_secs(5);
    while rds.get_disk(&slot).await.is_err() {
        assert!(Instant::now() < deadline, "no recovery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn many_concurrent_commands_share_one_connection() {
    let (sim, rds) = setup().await;
    let mut tasks = Vec::new();
    for i in 0..64 {
        let rds = rds.clone();
        tasks.push(tokio::spawn(async move {
            rds.get_disk(&Slot::new(&format!("pvc-{i}")).unwrap()).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap(), None);
    }
    assert_eq!(sim.stats().connections, 1);
    assert_eq!(sim.stats().commands, 64);
}

#[tokio::test]
async fn exec_returns_a_failed_command_s_output_instead_of_an_error() {
    let (_sim, rds) = setup().await;
    let out = rds.client().exec("probe", "/nonsense").await.unwrap();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("bad command name"), "{out:?}");
    let slot = Slot::new("nope").unwrap();
    let listed = rds
        .client()
        .exec("probe", &Command::DiskGet { slot }.render())
        .await
        .unwrap();
    assert_eq!(listed.exit_status, Some(0), "{listed:?}");
    assert!(listed.stdout.trim().is_empty(), "{listed:?}");
}
