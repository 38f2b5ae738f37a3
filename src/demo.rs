//! `rds-csi demo`: the driver's main job on the embedded simulator. Starts
//! a RouterOS simulator over real SSH and a real controller on a unix
//! socket, then walks one volume through its life over CSI, checking every
//! step, so the demo fails loudly if the driver misbehaves.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use csi_server::proto::{
    self, controller_client::ControllerClient, identity_client::IdentityClient,
};
use tokio_util::sync::CancellationToken;

use crate::cli::{BackendKind, CommonArgs, ControllerArgs, DemoArgs, NamingArgs, NvmetArgs};
use crate::client::{
    at_least, capability, connect, describe_snapshot, describe_volume, expand_request, key_values,
    CapArgs, SourceArgs,
};

const GIB: i64 = 1 << 30;

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let dir = tempdir()?;
    let key_path = dir.join("client_ed25519");
    let key = crate::run::load_or_create_key(&key_path)?;
    let sim = rds_sim::start(rds_sim::SimConfig {
        authorized_keys: vec![key.public_key().clone()],
        pool_size: 100 << 30,
        ..Default::default()
    })
    .await?;
    sim.faults().set_latency(args.latency);
    println!(
        "RouterOS simulator on {} (host key {})",
        sim.addr(),
        sim.host_key_fingerprint()
    );

    let endpoint = format!("unix://{}", dir.join("csi.sock").display());
    let cancel = CancellationToken::new();
    let controller_args = ControllerArgs {
        backend: BackendKind::Rds,
        nvmet: NvmetArgs {
            nvmet_volume_group: None,
            nvmet_thin_pool: None,
            nvmet_listen_address: None,
            nvmet_port: 4420,
            nvmet_sudo: false,
        },
        common: CommonArgs {
            endpoint: endpoint.clone(),
            driver_name: "rds.csi.srvlab.io".into(),
            metrics_address: "off".into(),
            rds_name: "default".into(),
            backends_file: None,
        },
        rds_address: sim.addr().to_string(),
        rds_user: "csi".into(),
        rds_key_file: key_path,
        rds_host_key: Some(sim.host_key_fingerprint()),
        rds_insecure_skip_host_key_check: false,
        rds_max_sessions: 8,
        rds_command_timeout: Duration::from_secs(10),
        rds_connect_timeout: Duration::from_secs(5),
        nvme_address: None,
        nvme_port: 4420,
        volume_path: "/storage-pool/metal-csi".into(),
        volume_path_root: None,
        naming: NamingArgs {
            volume_id_prefix: "pvc-".into(),
            nqn_prefix: "nqn.2000-02.com.mikrotik:".into(),
        },
        max_volume_size: "16T".into(),
        nodes: vec!["node-a".into(), "node-b".into()],
        health_interval: Duration::from_secs(1),
        kubeconfig: None,
        standalone: true,
        attachment_grace_period: Duration::from_secs(30),
        allow_unverified_migration: false,
        rds_fencing: false,
        vmi_grouper: false,
        attachment_reconcile_interval: Duration::from_secs(300),
        not_ready_threshold: Duration::from_secs(300),
        orphan_reconciler: false,
        orphan_reconcile_interval: Duration::from_secs(3600),
        orphan_delete: false,
        orphan_grace_period: Duration::from_secs(3600),
        cluster_id: None,
    };
    let controller = tokio::spawn(crate::run::controller(controller_args, cancel.clone()));
    let result = walk(&endpoint, &sim).await;
    cancel.cancel();
    let stopped = controller.await.context("controller task")?;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    stopped?;
    println!("\nDemo finished: every step behaved as expected.");
    Ok(())
}

async fn walk(endpoint: &str, sim: &rds_sim::SimHandle) -> anyhow::Result<()> {
    let started = Instant::now();
    let channel = loop {
        match connect(endpoint).await {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e),
        }
    };
    let mut identity = IdentityClient::new(channel.clone());
    let mut ctl = ControllerClient::new(channel);

    step(1, "GetPluginInfo and Probe");
    let info = identity
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await?
        .into_inner();
    println!("    driver {} version {}", info.name, info.vendor_version);
    loop {
        let ready = identity
            .probe(proto::ProbeRequest {})
            .await?
            .into_inner()
            .ready
            .unwrap_or(false);
        if ready {
            println!("    ready: the controller reached the RDS over SSH");
            break;
        }
        if started.elapsed() > Duration::from_secs(15) {
            bail!("the controller never became ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    step(
        2,
        "CreateVolume pvc-demo, 1.5 GiB, filesystem ext4, for PVC vms/vm-disk",
    );
    let req = proto::CreateVolumeRequest {
        name: "pvc-demo".into(),
        capacity_range: at_least(3 * GIB / 2),
        volume_capabilities: vec![capability(&CapArgs {
            block: false,
            multi_node: false,
            fs_type: "ext4".into(),
        })],
        parameters: [
            ("csi.storage.k8s.io/pvc/name", "vm-disk"),
            ("csi.storage.k8s.io/pvc/namespace", "vms"),
            ("csi.storage.k8s.io/fstype", "ext4"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        ..Default::default()
    };
    let vol = ctl
        .create_volume(req.clone())
        .await?
        .into_inner()
        .volume
        .unwrap_or_default();
    println!("    {}", describe_volume(&vol));
    ensure!(
        vol.capacity_bytes >= 3 * GIB / 2,
        "volume smaller than requested"
    );
    let disks = sim.disks();
    let disk = disks
        .iter()
        .find(|d| d.slot == "pvc-demo")
        .context("the RDS has no disk pvc-demo")?;
    println!(
        "    on the RDS: slot {} file {} size {} nqn {}",
        disk.slot,
        disk.file_path,
        disk.size,
        disk.nqn.as_deref().unwrap_or("-")
    );

    step(
        3,
        "CreateVolume again with the same name (a retry): same volume, no second disk",
    );
    let again = ctl
        .create_volume(req)
        .await?
        .into_inner()
        .volume
        .unwrap_or_default();
    ensure!(again == vol, "a retried create returned a different volume");
    ensure!(
        sim.disks().len() == 1,
        "a retried create made a second disk"
    );
    println!("    same volume returned; the RDS still has 1 disk");

    step(4, "ListVolumes");
    let list = ctl
        .list_volumes(proto::ListVolumesRequest::default())
        .await?
        .into_inner();
    for e in &list.entries {
        println!(
            "    {}",
            describe_volume(e.volume.as_ref().context("entry without volume")?)
        );
    }
    ensure!(list.entries.len() == 1, "expected one volume");

    snapshot_and_restore(&mut ctl, sim).await?;

    step(8, "ControllerExpandVolume to 3 GiB");
    let r = ctl
        .controller_expand_volume(expand_request("pvc-demo", 3 * GIB))
        .await?
        .into_inner();
    println!(
        "    now {} bytes; node filesystem expansion required: {}",
        r.capacity_bytes, r.node_expansion_required
    );
    ensure!(sim.disks()[0].size == 3 << 30, "the RDS disk did not grow");

    step(9, "GetCapacity");
    let cap = ctl
        .get_capacity(proto::GetCapacityRequest::default())
        .await?
        .into_inner();
    println!("    {} bytes free in the pool", cap.available_capacity);

    step(
        10,
        "ControllerPublishVolume to node-a, then node-b (must be refused: single-node volume)",
    );
    let cap_fs = capability(&CapArgs {
        block: false,
        multi_node: false,
        fs_type: "ext4".into(),
    });
    let publish = |node: &str| proto::ControllerPublishVolumeRequest {
        volume_id: "pvc-demo".into(),
        node_id: node.into(),
        volume_capability: Some(cap_fs.clone()),
        ..Default::default()
    };
    let pc = ctl
        .controller_publish_volume(publish("node-a"))
        .await?
        .into_inner()
        .publish_context;
    println!("    node-a: published ({})", key_values(&pc));
    match ctl.controller_publish_volume(publish("node-b")).await {
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            println!("    node-b: refused, {}", s.message())
        }
        other => bail!("a second node was not refused: {other:?}"),
    }

    step(11, "ControllerUnpublishVolume from node-a");
    ctl.controller_unpublish_volume(proto::ControllerUnpublishVolumeRequest {
        volume_id: "pvc-demo".into(),
        node_id: "node-a".into(),
        ..Default::default()
    })
    .await?;
    println!("    unpublished");

    step(12, "DeleteVolume, twice (the retry must succeed too)");
    for _ in 0..2 {
        ctl.delete_volume(proto::DeleteVolumeRequest {
            volume_id: "pvc-demo".into(),
            ..Default::default()
        })
        .await?;
    }
    ensure!(sim.disks().is_empty(), "the disk is still on the RDS");
    ensure!(
        sim.files().iter().all(|(n, _)| !n.contains("pvc-demo")),
        "the backing file is still on the RDS"
    );
    println!("    disk and backing file removed from the RDS");

    let stats = sim.stats();
    println!(
        "\nThe simulator served {} RouterOS commands over {} SSH connection(s) in {:.0?}.",
        stats.commands,
        stats.connections,
        started.elapsed()
    );
    Ok(())
}

/// Steps 5 to 7: a snapshot of pvc-demo, listed, restored into a new
/// volume, and both deleted again (the snapshot first: any order works).
async fn snapshot_and_restore(
    ctl: &mut ControllerClient<tonic::transport::Channel>,
    sim: &rds_sim::SimHandle,
) -> anyhow::Result<()> {
    step(5, "CreateSnapshot snapshot-nightly of pvc-demo");
    let snap = ctl
        .create_snapshot(proto::CreateSnapshotRequest {
            source_volume_id: "pvc-demo".into(),
            name: "snapshot-nightly".into(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .snapshot
        .unwrap_or_default();
    println!("    {}", describe_snapshot(&snap));
    ensure!(snap.ready_to_use, "the snapshot is not ready to use");
    let disks = sim.disks();
    let disk = disks
        .iter()
        .find(|d| d.slot == snap.snapshot_id)
        .context("the RDS has no disk for the snapshot")?;
    ensure!(!disk.export, "the snapshot is exported");
    println!(
        "    on the RDS: slot {} file {}, not exported\n    lineage in its comment: {}",
        disk.slot, disk.file_path, disk.comment
    );

    step(6, "ListSnapshots of pvc-demo");
    let list = ctl
        .list_snapshots(proto::ListSnapshotsRequest {
            source_volume_id: "pvc-demo".into(),
            ..Default::default()
        })
        .await?
        .into_inner();
    for e in &list.entries {
        let s = e.snapshot.as_ref().context("entry without snapshot")?;
        println!("    {}", describe_snapshot(s));
    }
    ensure!(list.entries.len() == 1, "expected one snapshot");

    step(
        7,
        "CreateVolume pvc-demo-restored from the snapshot, then DeleteSnapshot and DeleteVolume of it",
    );
    let restored = ctl
        .create_volume(proto::CreateVolumeRequest {
            name: "pvc-demo-restored".into(),
            volume_capabilities: vec![capability(&CapArgs {
                block: false,
                multi_node: false,
                fs_type: "ext4".into(),
            })],
            volume_content_source: SourceArgs {
                from_snapshot: Some(snap.snapshot_id.clone()),
                from_volume: None,
            }
            .content_source(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .volume
        .unwrap_or_default();
    println!("    {}", describe_volume(&restored));
    ensure!(
        restored.capacity_bytes == snap.size_bytes,
        "a restore with no size asked for does not have the snapshot's size"
    );
    ctl.delete_snapshot(proto::DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await?;
    ctl.delete_volume(proto::DeleteVolumeRequest {
        volume_id: "pvc-demo-restored".into(),
        ..Default::default()
    })
    .await?;
    let left: Vec<String> = sim.disks().into_iter().map(|d| d.slot).collect();
    ensure!(
        left == ["pvc-demo"],
        "after the deletes the RDS has disks {left:?}"
    );
    ensure!(
        sim.files()
            .iter()
            .all(|(n, _)| !n.contains(&snap.snapshot_id) && !n.contains("pvc-demo-restored")),
        "a file of the snapshot or the restored volume is still on the RDS"
    );
    println!("    snapshot and restored volume deleted; the RDS has pvc-demo only");
    Ok(())
}

fn tempdir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("rds-csi-demo-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
