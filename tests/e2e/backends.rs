//! Two backends behind one controller: the chart's RDS and a second RDS
//! (`lab2`, a second simulator) named in `--backends-file`. Each class
//! provisions, attaches and deletes on its own backend; with lab2 down,
//! lab2's claims fail UNAVAILABLE while the default backend goes on.

use k8s_openapi::api::storage::v1::{CSINode, StorageClass};
use kube::api::DeleteParams;

use crate::cluster::*;

const LAB2: &str = "lab2";

/// A second RDS the cluster's controller key may log in to, at `listen`
/// with `host_key` (so a restart is the same server to the controller).
async fn second_rds(
    s: &Scenario,
    listen: std::net::SocketAddr,
    host_key: &russh::keys::PrivateKey,
) -> rds_sim::SimHandle {
    let key = routeros::load_key(s.cluster.get("RDS_CSI_E2E_SIM_KEY_FILE").as_ref()).unwrap();
    rds_sim::start(rds_sim::SimConfig {
        listen,
        authorized_keys: vec![key.public_key().clone()],
        host_key: Some(host_key.clone()),
        pool_size: 64 * GIB,
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The class a user adds for lab2, as the chart renders a backend's
/// class: `backend: lab2`, only on nodes that reach lab2.
async fn lab2_class(s: &Scenario) -> String {
    let name = format!("{}-{LAB2}", s.ns);
    let class = json!({
        "metadata": {"name": name},
        "provisioner": s.cluster.get("RDS_CSI_E2E_DRIVER"),
        "parameters": {"backend": LAB2},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [
            {"key": format!("rds.csi.srvlab.io/backend-{LAB2}"), "values": ["true"]}
        ]}]
    });
    create(&Api::<StorageClass>::all(s.client.clone()), class).await;
    name
}

async fn handle(s: &Scenario, pv: &str) -> String {
    let pv = s.pv(pv).await.unwrap();
    pv.spec.unwrap().csi.unwrap().volume_handle
}

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn two_backends_each_serve_their_classes_and_one_down_leaves_the_other_working() {
    let s = Scenario::new("e2e-backends").await;
    let host_key =
        russh::keys::PrivateKey::random(&mut rand::rng(), russh::keys::Algorithm::Ed25519).unwrap();
    let lab2 = second_rds(&s, "127.0.0.1:0".parse().unwrap(), &host_key).await;
    let lab2_addr = lab2.addr();
    let dir = std::path::PathBuf::from(s.cluster.get("RDS_CSI_E2E_DIR"));
    let file = dir.join("backends.json");
    let entries = json!({"backends": [{
        "name": LAB2,
        "rds-address": lab2_addr.to_string(),
        "rds-key-file": s.cluster.get("RDS_CSI_E2E_SIM_KEY_FILE"),
        "rds-host-key": lab2.host_key_fingerprint(),
    }]});
    std::fs::write(&file, entries.to_string()).unwrap();
    // The node that reaches lab2, as its node plugin reports it.
    let near = format!("{}-near", s.ns);
    s.extra_node_reaching(&near, &[LAB2]).await;
    s.cluster.stop_controller().await;
    s.cluster
        .start_controller(&[&format!("--backends-file={}", file.display())])
        .await;
    let class = lab2_class(&s).await;

    // Each class provisions and attaches on its own backend.
    let on_lab2 = s
        .attached_claim("on-lab2", &class, Mode::Block, "user-lab2", &near)
        .await;
    let lab2_id = handle(&s, &on_lab2).await;
    assert_eq!(
        lab2_id,
        format!("{LAB2}-{on_lab2}"),
        "the ID names the backend"
    );
    assert!(
        lab2.disks().iter().any(|d| d.slot == lab2_id),
        "disk on lab2"
    );
    assert!(
        s.disk(&lab2_id).await.is_none(),
        "nothing on the default RDS"
    );
    let affinity = serde_json::to_value(s.pv(&on_lab2).await.unwrap().spec.unwrap().node_affinity)
        .unwrap()
        .to_string();
    assert!(
        affinity.contains("rds.csi.srvlab.io/backend-lab2"),
        "{affinity}"
    );
    let on_default = s
        .attached_claim("on-default", BLOCK, Mode::Block, "user-default", &near)
        .await;
    assert_eq!(
        handle(&s, &on_default).await,
        on_default,
        "Go-compatible ID"
    );
    assert!(s.disk(&on_default).await.is_some());
    assert!(!lab2.disks().iter().any(|d| d.slot == on_default));
    let scrape = s.scrape().await;
    assert_eq!(
        metric(&scrape, "rds_csi_backend_up{backend=\"lab2\"}"),
        1.0,
        "{scrape}"
    );

    // lab2 goes down: its new claims fail UNAVAILABLE and stay pending...
    lab2.shutdown().await;
    eventually("lab2 reported down", WAIT, || async {
        let scrape = s.scrape().await;
        (scrape.contains("rds_csi_backend_up{backend=\"lab2\"} 0")).then_some(())
    })
    .await;
    s.claim("lab2-down", &class, Mode::Block, false).await;
    s.select_node("lab2-down", &near).await;
    s.wait_event("lab2-down", "ProvisioningFailed").await;
    let scrape = s.scrape().await;
    assert!(
        metric(
            &scrape,
            "rds_csi_rpc_total{code=\"Unavailable\",method=\"CreateVolume\",backend=\"lab2\"}"
        ) >= 1.0,
        "{scrape}"
    );
    // ...while the default backend provisions, attaches, detaches and
    // deletes as before, and the controller stays ready.
    let more = s
        .attached_claim("more", BLOCK, Mode::Block, "user-more", "node-b")
        .await;
    assert!(s.disk(&more).await.is_some());
    s.delete_pod("user-more").await;
    s.wait_detached(&more, "node-b").await;
    s.delete_claim("more").await;
    s.wait_reclaimed(&more).await;
    assert_eq!(
        metric(&s.scrape().await, "rds_csi_backend_up{backend=\"default\"}"),
        1.0
    );

    // lab2 comes back (same address and host key, its disks lost with
    // its memory): the pending claim provisions, and deleting lab2's
    // claims deletes on lab2.
    let lab2 = second_rds(&s, lab2_addr, &host_key).await;
    let pending = s.bound("lab2-down").await;
    assert!(lab2
        .disks()
        .iter()
        .any(|d| d.slot == format!("{LAB2}-{pending}")));
    s.delete_claim("lab2-down").await;
    eventually("lab2's disk deleted", WAIT, || async {
        (!lab2
            .disks()
            .iter()
            .any(|d| d.slot == format!("{LAB2}-{pending}")))
        .then_some(())
    })
    .await;

    // Back to the cluster's one backend.
    s.delete_pod("user-lab2").await;
    s.delete_pod("user-default").await;
    s.wait_detached(&on_lab2, &near).await;
    s.wait_detached(&on_default, &near).await;
    s.delete_claim("on-lab2").await;
    s.delete_claim("on-default").await;
    s.wait_reclaimed(&on_default).await;
    eventually("lab2's PV reclaimed", WAIT, || async {
        s.pv(&on_lab2).await.is_none().then_some(())
    })
    .await;
    s.cluster.stop_controller().await;
    s.cluster.start_controller(&["--backends-file"]).await;
    Api::<StorageClass>::all(s.client.clone())
        .delete(&class, &DeleteParams::default())
        .await
        .unwrap();
    // Its CSINode too (kubelet's would go with the Node): a CSINode left
    // with the lab2 key would give the provisioner, which takes an
    // immediate-binding claim's topology keys from any one CSINode, keys
    // no node has.
    Api::<Node>::all(s.client.clone())
        .delete(&near, &DeleteParams::default())
        .await
        .unwrap();
    Api::<CSINode>::all(s.client.clone())
        .delete(&near, &DeleteParams::default())
        .await
        .unwrap();
    lab2.shutdown().await;
    s.cleanup().await;
}
