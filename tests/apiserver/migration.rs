//! KubeVirt live migrations of RWX block disks: admitted only with the
//! evidence KubeVirt itself writes (a running VMIM and its target pod, or
//! the VMI's migration state), never to a third node, with a deadline that
//! survives a controller restart.

use k8s_openapi::api::storage::v1::VolumeAttachment;

use crate::world::*;

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn live_migration_in_kubevirt_s_real_order_is_admitted_and_completes() {
    let (mut w, vol, vmi) = World::with_running_vm("migok", &["a", "b", "c"]).await;
    // KubeVirt's order: the VMIM is scheduling, the target pod exists on b
    // with both UIDs, and the VMI has no migrationState yet.
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher(
        "virt-launcher-vm1-dst",
        "b",
        "vmdisk",
        &vmi,
        Some(("mig1", &job)),
    )
    .await;
    // Admitted at once, or on the attacher's first retry (the driver's
    // caches may be a moment behind).
    if let Err(first) = w.attach(&vol, "b", true).await {
        assert_eq!(first.code(), Code::FailedPrecondition, "{first:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
        w.attach(&vol, "b", true).await.unwrap();
    }
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/migration-source"], w.node("a"));
    assert_eq!(ann["rds.csi.srvlab.io/migration-target"], w.node("b"));
    let started_at: jiff::Timestamp = ann["rds.csi.srvlab.io/migration-started-at"]
        .parse()
        .unwrap();
    let deadline: jiff::Timestamp = ann["rds.csi.srvlab.io/migration-deadline"].parse().unwrap();
    assert_eq!(
        deadline.duration_since(started_at).as_secs(),
        30,
        "migrationTimeoutSeconds from the volume"
    );
    w.wait_event("vmdisk", "MigrationStarted").await;
    // A third node is never admitted, even with a target pod of its own.
    let job2 = w.vmim("mig2", "vm1", "Scheduling").await;
    w.launcher(
        "virt-launcher-vm1-third",
        "c",
        "vmdisk",
        &vmi,
        Some(("mig2", &job2)),
    )
    .await;
    w.refused(&vol, "c", true).await;
    // Success: the source pod goes away.
    w.detach(&vol, "a").await.unwrap();
    w.wait_event("vmdisk", "MigrationCompleted").await;
    let ann = w.annotations(&vol).await;
    assert_eq!(ann["rds.csi.srvlab.io/attached-node"], w.node("b"));
    assert!(!ann.contains_key("rds.csi.srvlab.io/migration-target"));
    let m = w.scrape();
    assert_eq!(
        metric(
            &m,
            "rds_csi_migration_migrations_total{result=\"completed\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "rds_csi_migration_active_migrations"), 0.0);
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_forged_launcher_pod_without_a_migration_is_refused_and_never_attaches() {
    let (mut w, vol, vmi) = World::with_running_vm("forged", &["a", "b"]).await;
    // Anyone who may create pods can copy every label: the VMI's UID and a
    // made-up migration job.
    let fake_job = Some(("mig-fake", "0b8f5a52-0000-4000-8000-000000000000"));
    let why = "no VirtualMachineInstanceMigration names the VM";
    w.launcher_refused("virt-launcher-vm1-fake", "b", &vmi, fake_job, &vol, why)
        .await;
    // Its VolumeAttachment never became attached (the attacher deleted it
    // after the refusal here; nothing marked it attached).
    assert!(Api::<VolumeAttachment>::all(w.client.clone())
        .get_opt(&w.va_name(&vol, &w.node("b")))
        .await
        .unwrap()
        .is_none_or(|va| !va.status.is_some_and(|s| s.attached)));
    // A migration that already ended admits nothing either.
    let job = w.vmim("mig-done", "vm1", "Succeeded").await;
    let done = Some(("mig-done", job.as_str()));
    w.launcher_refused(
        "virt-launcher-vm1-old",
        "b",
        &vmi,
        done,
        &vol,
        "not in progress",
    )
    .await;
    w.assert_held_by(&vol, "a").await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn an_unlabelled_second_pod_on_the_rwx_class_is_refused() {
    let (mut w, vol, vmi) = World::with_running_vm("unlab", &["a", "b"]).await;
    // A plain pod (no KubeVirt labels) mounts the same claim on b.
    w.pod(
        "intruder",
        "b",
        "vmdisk",
        json!({"app": "intruder"}),
        json!({}),
    )
    .await;
    // And a virt-launcher pod without a migration job.
    let why = "not a verified KubeVirt migration target";
    w.launcher_refused("virt-launcher-vm1-copy", "b", &vmi, None, &vol, why)
        .await;
    w.wait_event("vmdisk", "AttachConflict").await;
    w.assert_held_by(&vol, "a").await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn the_vmi_migration_state_admits_the_target_of_a_running_vmim() {
    let mut w = World::started_with_kubevirt("vmistate", &["a", "b"]).await;
    let vol = w.volume("vmdisk", true).await;
    let uid = w.vmi("vm1", "a", "vmdisk").await;
    w.launcher("virt-launcher-vm1-src", "a", "vmdisk", &uid, None)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.attach(&vol, "a", true).await.unwrap();
    w.refused(&vol, "b", true).await;
    // A migration to b is running and the VMI's migrationState names b;
    // no target pod is visible (an older KubeVirt without its labels).
    let job = w.vmim("mig1", "vm1", "Running").await;
    let migrating = json!({
        "metadata": {"labels": {"kubevirt.io/migrationTargetNodeName": w.node("b")}},
        "status": {"migrationState": {"sourceNode": w.node("a"), "targetNode": w.node("b"), "migrationUid": job, "completed": false}}
    });
    w.kubevirt().patch_vmi("vm1", &migrating).await;
    w.attach_within(&vol, "b", true, Duration::from_secs(5))
        .await
        .unwrap();
    w.detach(&vol, "b").await.unwrap();
    w.wait_event("vmdisk", "MigrationFailed").await;
    w.assert_held_by(&vol, "a").await;
    // Once KubeVirt marks the migration failed, b is no longer admitted.
    w.vmim_phase("mig1", "Failed").await;
    let failed = json!({"status": {"migrationState": {"failed": true}}});
    w.kubevirt().patch_vmi("vm1", &failed).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    w.refused(&vol, "b", true).await;
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_failed_migration_detaches_the_target_and_a_stuck_one_times_out_once() {
    let (mut w, vol, vmi) = World::with_running_vm("migfail", &["a", "b"]).await;
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher("dst", "b", "vmdisk", &vmi, Some(("mig1", &job)))
        .await;
    w.attach_within(&vol, "b", true, Duration::from_secs(10))
        .await
        .unwrap();
    // The migration aborts: the target pod is deleted.
    w.detach(&vol, "b").await.unwrap();
    w.wait_event("vmdisk", "MigrationFailed").await;
    w.assert_metric("rds_csi_migration_migrations_total{result=\"failed\"}", 1.0);
    // A second attempt that never finishes passes its 30 s deadline.
    w.attach(&vol, "b", true).await.unwrap();
    eventually("MigrationTimedOut", Duration::from_secs(45), || async {
        w.event_reasons("vmdisk")
            .await
            .contains(&"MigrationTimedOut".to_string())
            .then_some(())
    })
    .await;
    w.assert_metric(
        "rds_csi_migration_migrations_total{result=\"timed_out\"}",
        1.0,
    );
    assert_eq!(
        w.annotations(&vol).await["rds.csi.srvlab.io/migration-timeout-reported"],
        "true"
    );
    // Reported once, and that stays true across a restart.
    w.kill_controller();
    w.start().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The new controller does not report it again.
    w.assert_metric(
        "rds_csi_migration_migrations_total{result=\"timed_out\"}",
        0.0,
    );
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn a_controller_killed_mid_migration_rebuilds_and_keeps_the_deadline() {
    let (mut w, vol, vmi) = World::with_running_vm("restart", &["a", "b", "c"]).await;
    let rwo = w.volume("plain", false).await;
    w.attach(&rwo, "a", false).await.unwrap();
    let job = w.vmim("mig1", "vm1", "Scheduling").await;
    w.launcher("dst", "b", "vmdisk", &vmi, Some(("mig1", &job)))
        .await;
    let started = Instant::now();
    while let Err(s) = w.attach(&vol, "b", true).await {
        assert!(
            matches!(s.code(), Code::FailedPrecondition | Code::Aborted)
                && started.elapsed() < Duration::from_secs(10),
            "{s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = w.annotations(&vol).await;
    w.kill_controller();

    // Publish before the rebuild: a controller that cannot reach the API
    // server refuses (fail closed).
    let dead = w.dir.path().join("dead-kubeconfig");
    let text = std::fs::read_to_string(kubeconfig()).unwrap();
    let port = text
        .split("https://127.0.0.1:")
        .nth(1)
        .unwrap()
        .split(['\n', '/'])
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        &dead,
        text.replace(
            &format!("127.0.0.1:{port}"),
            &format!("127.0.0.1:{}", free_port()),
        ),
    )
    .unwrap();
    w.start_controller(&dead).await;
    let err = w.attach(&rwo, "c", false).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    w.kill_controller();

    w.start().await;
    // The rebuilt state fences both volumes as before.
    let started = Instant::now();
    let err = loop {
        match w.attach(&rwo, "c", false).await {
            Err(s)
                if s.code() == Code::Unavailable && started.elapsed() < Duration::from_secs(10) =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            other => break other.unwrap_err(),
        }
    };
    assert_eq!(
        err.code(),
        Code::FailedPrecondition,
        "the rebuilt holder a is enforced: {err:?}"
    );
    let job2 = w.vmim("mig2", "vm1", "Scheduling").await;
    w.launcher("third", "c", "vmdisk", &vmi, Some(("mig2", &job2)))
        .await;
    // Never a third node.
    w.refused(&vol, "c", true).await;
    let after = w.annotations(&vol).await;
    assert_eq!(
        before["rds.csi.srvlab.io/migration-deadline"],
        after["rds.csi.srvlab.io/migration-deadline"],
        "deadline kept"
    );
    // The migration completes after the restart.
    w.detach(&vol, "a").await.unwrap();
    w.wait_event("vmdisk", "MigrationCompleted").await;
    w.cleanup().await;
}
