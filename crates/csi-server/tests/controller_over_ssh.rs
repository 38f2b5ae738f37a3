//! The controller service over a real unix socket, with the real RouterOS
//! client talking to the simulator over real SSH.

mod ssh_env;

use csi_server::proto;
use rds_sim::{SimHandle, Storage};
use routeros::RosPath;
use ssh_env::*;
use tonic::Code;

#[tokio::test]
async fn a_volume_lives_and_dies_on_the_rds_with_a_sparse_backing_file() {
    let e = Env::on_disk().await;
    let v = e.create("pvc-life", 3 * GIB / 2).await.unwrap();
    assert_eq!(v.capacity_bytes, 3 * GIB / 2);
    let file = e.backing_file("pvc-life");
    assert_eq!(std::fs::metadata(&file).unwrap().len(), 3 << 29);
    e.client
        .clone()
        .controller_expand_volume(proto::ControllerExpandVolumeRequest {
            volume_id: "pvc-life".into(),
            capacity_range: at_least(2 * GIB),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(e.sim.disks()[0].size, 2 << 30);
    e.delete("pvc-life").await.unwrap();
    assert!(!file.exists(), "backing file removed");
    assert!(e.sim.disks().is_empty());
}

#[tokio::test]
async fn create_uses_at_most_two_commands_and_delete_at_most_four() {
    let e = Env::warm().await;
    let create = e.commands_of(e.create("pvc-count", GIB)).await;
    assert!(create <= 2, "create used {create} commands");
    // Look up, remove, look again (the file goes only once the disk is
    // seen gone), remove the file.
    let delete = e.commands_of(e.delete("pvc-count")).await;
    assert!(delete <= 4, "delete used {delete} commands");
    assert_eq!(
        e.sim.stats().connections,
        0,
        "no new SSH connection per call"
    );
}

#[tokio::test]
async fn a_disk_remove_that_does_not_take_keeps_the_backing_file() {
    let e = Env::on_disk().await;
    e.create("pvc-stays", GIB).await.unwrap();
    let file = e.backing_file("pvc-stays");
    e.sim.faults().ignore_disk_remove_next(1);
    let err = e.delete("pvc-stays").await.unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(err.message().contains("still listed"), "{err:?}");
    assert!(file.exists(), "the file of a listed disk must stay");
    assert_eq!(e.sim.disks().len(), 1);
    // The retry removes both.
    e.delete("pvc-stays").await.unwrap();
    assert!(!file.exists());
    assert!(e.sim.disks().is_empty());
}

#[tokio::test]
async fn a_lost_remove_answer_keeps_the_file_until_the_disk_is_seen_gone() {
    use csi_server::backend::Backend;
    let e = Env::on_disk().await;
    e.create("pvc-lost", GIB).await.unwrap();
    let file = e.backing_file("pvc-lost");
    let backend =
        csi_server::backend::RdsBackend::new(e.rds.clone(), RosPath::new("/storage-pool").unwrap());
    let slot = routeros::Slot::new("pvc-lost").unwrap();
    let known = backend.get_volume(&slot).await.unwrap().unwrap();
    // The remove acts, but its answer never completes.
    e.sim.faults().cut_after_exit_next(1);
    let err = backend.delete_volume(&slot, Some(&known)).await;
    assert!(err.unwrap_err().is_transient());
    assert!(e.sim.disks().is_empty(), "the remove did act");
    assert!(file.exists(), "no file removal on an unconfirmed remove");
    // DeleteVolume's retry looks afresh, sees no disk, and removes the file.
    while_unavailable(|| e.delete("pvc-lost")).await;
    assert!(!file.exists());
}

#[tokio::test]
async fn an_unreachable_rds_is_unavailable_and_never_yields_a_duplicate() {
    let e = env(Storage::Memory).await;
    e.sim.faults().refuse_connections(true);
    let err = e.create("pvc-dup", GIB).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(e.sim.disks().is_empty());
    e.sim.faults().refuse_connections(false);
    let created = while_unavailable(|| e.create("pvc-dup", GIB)).await;
    assert!(created.is_some(), "recovered");
    // Retries after recovery keep returning the one volume.
    e.create("pvc-dup", GIB).await.unwrap();
    assert_eq!(e.sim.disks().len(), 1);
}

/// A create while the simulator has `fault` set up for its next command:
/// the code it fails with and the disks there are then; a retry after it
/// makes exactly one disk.
async fn create_under_fault(name: &str, fault: impl FnOnce(&SimHandle)) -> (Code, usize) {
    let e = Env::warm().await;
    fault(&e.sim);
    let code = e.create(name, GIB).await.unwrap_err().code();
    let disks = e.sim.disks().len();
    while_unavailable(|| e.create(name, GIB)).await;
    assert_eq!(e.sim.disks().len(), 1);
    (code, disks)
}

#[tokio::test]
async fn a_connection_dropped_mid_create_is_retried_into_exactly_one_disk() {
    let (code, _) = create_under_fault("pvc-drop", |sim| sim.faults().drop_next(1)).await;
    assert_eq!(code, Code::Unavailable);
}

#[tokio::test]
async fn a_hung_rds_gives_a_deadline_not_a_hang() {
    let (code, disks) = create_under_fault("pvc-hang", |sim| sim.faults().hang_next(1)).await;
    assert_eq!(code, Code::DeadlineExceeded);
    assert_eq!(disks, 0, "the lookup hung, so nothing was created");
}

#[tokio::test]
async fn injection_attempts_never_reach_the_rds() {
    let e = env(Storage::Memory).await;
    e.sim.reset_stats();
    let names = [
        "pvc-a] ; /system reboot",
        "pvc-a\" b",
        "pvc-$(reboot)",
        "pvc-a\n/disk remove 0",
        "pvc-a;x",
        "pvc-[find]",
    ];
    for name in names {
        let get = proto::ControllerGetVolumeRequest {
            volume_id: name.into(),
        };
        let outcomes = [
            e.create(name, GIB).await.map(drop),
            e.delete(name).await,
            e.client.clone().controller_get_volume(get).await.map(drop),
        ];
        for outcome in outcomes {
            assert_eq!(
                outcome.unwrap_err().code(),
                Code::InvalidArgument,
                "{name:?}"
            );
        }
    }
    let params: &[(&str, &str)] = &[
        ("volumePath", "/storage-pool/x\" ; /system reboot"),
        ("volumePath", "/storage-pool/x] [/disk remove 0"),
        ("nvmeAddress", "10.0.0.1 ; /system reboot"),
        ("nvmePort", "4420 x"),
        ("ctrlLossTmo", "1;2"),
        ("csi.storage.k8s.io/pvc/name", "x\" y"),
    ];
    for (k, v) in params {
        let err = e.create_with("pvc-ok", GIB, &[(k, v)]).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{k}={v}");
        assert!(
            err.message().contains(k),
            "message names the parameter: {}",
            err.message()
        );
    }
    assert_eq!(e.sim.stats().commands, 0, "no command was sent");
    assert_eq!(e.sim.stats().connections, 0);
}

#[tokio::test]
async fn a_full_pool_is_resource_exhausted() {
    let e = env(Storage::Memory).await;
    let err = e.create("pvc-big", 60 * GIB).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(e.sim.disks().is_empty());
}
