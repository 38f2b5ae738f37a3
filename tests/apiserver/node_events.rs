//! The node service (over the recording fake host, so no root or NVMe
//! is needed) wired to the API server exactly as `rds-csi node` wires
//! it: its failures must show up as Events on the right PVC.

use std::collections::HashMap;
use std::sync::Arc;

use attachment_manager::kube_store::KubeEvents;
use csi_server::metrics::RpcMetrics;
use csi_server::node::format_record::{FormatRecord, KubeFormatRecord, Recorded, ANNOTATION};
use csi_server::node::{events, NodeConfig, NodeEvents, NodeService};
use csi_server::proto::node_server::Node as _;
use nix::errno::Errno;
use nvme::fake::{FakeHost, SysOp};

use kube::api::{DeleteParams, ListParams};
use kube::ResourceExt;

use crate::world::*;

const PREFIX: &str = "nqn.2000-02.com.mikrotik:";

fn stage_req(volume: &str, ns: &str, claim: &str) -> proto::NodeStageVolumeRequest {
    proto::NodeStageVolumeRequest {
        volume_id: volume.into(),
        staging_target_path: format!("/var/lib/kubelet/plugins/x/{volume}/globalmount"),
        volume_capability: Some(cap(false)),
        volume_context: HashMap::from([
            ("nvmeAddress".to_string(), "10.0.0.1".to_string()),
            ("nqn".to_string(), format!("{PREFIX}{volume}")),
            (
                "csi.storage.k8s.io/pvc/namespace".to_string(),
                ns.to_string(),
            ),
            ("csi.storage.k8s.io/pvc/name".to_string(), claim.to_string()),
        ]),
        ..Default::default()
    }
}

async fn create_pvc(client: &Client, ns: &str, claim: &str) -> String {
    let pvc = json!({
        "metadata": {"name": claim, "namespace": ns},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}
    });
    let api = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns);
    create(&api, pvc).await.uid().unwrap()
}

/// Events in `ns` about the PVC `claim`.
async fn events_on(client: &Client, ns: &str, claim: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(claim))
        .collect()
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn node_format_refusals_and_mount_failures_are_events_on_the_pvc() {
    let w = World::new("node-events", &[]).await;
    let ns = w.ns();
    let node = w.node("a");
    let refused_uid = create_pvc(&w.client, &ns, "refused").await;
    let unmountable_uid = create_pvc(&w.client, &ns, "unmountable").await;
    // A PVC of the same name in another namespace must stay untouched.
    let other_ns = format!("{ns}-other");
    testkit::kube::create_namespace(&w.client, &other_ns).await;
    create_pvc(&w.client, &other_ns, "refused").await;

    let f = FakeHost::new();
    let svc = node_service_without_record(&w, &f, &node);

    // An xfs volume staged as ext4: the node refuses to format it.
    let refused = format!("pvc-{}-refused", w.name);
    f.add_volume(&format!("{PREFIX}{refused}"), 1 << 30);
    f.update_volume(&format!("{PREFIX}{refused}"), |v| v.fs = Some("xfs".into()));
    let err = svc
        .node_stage_volume(tonic::Request::new(stage_req(&refused, &ns, "refused")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());

    // An empty volume whose mount fails.
    let unmountable = format!("pvc-{}-unmountable", w.name);
    f.add_volume(&format!("{PREFIX}{unmountable}"), 1 << 30);
    f.fail(SysOp::Mount, Errno::EIO);
    svc.node_stage_volume(tonic::Request::new(stage_req(
        &unmountable,
        &ns,
        "unmountable",
    )))
    .await
    .unwrap_err();
    assert!(
        !f.mounts()
            .iter()
            .any(|m| m.mount_point.starts_with("/var/lib/kubelet")),
        "{:?}",
        f.mounts()
    );

    for (claim, uid, reason, volume) in [
        ("refused", &refused_uid, "FormatRefused", &refused),
        ("unmountable", &unmountable_uid, "MountFailed", &unmountable),
    ] {
        let ev = eventually(
            &format!("{reason} on {claim}"),
            Duration::from_secs(10),
            || async { events_on(&w.client, &ns, claim).await.into_iter().next() },
        )
        .await;
        let all = events_on(&w.client, &ns, claim).await;
        assert_eq!(all.len(), 1, "one event on {claim}: {all:?}");
        assert_eq!(ev.reason.as_deref(), Some(reason));
        assert_eq!(ev.type_.as_deref(), Some("Warning"));
        assert_eq!(ev.action.as_deref(), Some("MountVolume"));
        assert_eq!(ev.reporting_controller.as_deref(), Some("rds-csi-node"));
        assert_eq!(ev.reporting_instance.as_deref(), Some(node.as_str()));
        assert_eq!(ev.metadata.namespace.as_deref(), Some(ns.as_str()));
        let r = ev.regarding.unwrap();
        assert_eq!(r.kind.as_deref(), Some("PersistentVolumeClaim"));
        assert_eq!(r.api_version.as_deref(), Some("v1"));
        assert_eq!(r.namespace.as_deref(), Some(ns.as_str()));
        assert_eq!(r.name.as_deref(), Some(claim));
        assert_eq!(
            r.uid.as_deref(),
            Some(uid.as_str()),
            "found by kubectl describe"
        );
        let note = ev.note.unwrap_or_default();
        assert!(note.contains(volume.as_str()), "{note}");
        assert!(note.contains(&node), "{note}");
    }
    // Nothing in the other namespace, nothing on any other object.
    assert!(events_on(&w.client, &other_ns, "refused").await.is_empty());
    let all = Api::<Event>::namespaced(w.client.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(all.items.len(), 2, "{:?}", all.items);
    Api::<Namespace>::all(w.client.clone())
        .delete(&other_ns, &DeleteParams::default())
        .await
        .ok();
    w.cleanup().await;
}

/// The node service over the fake host as `rds-csi node` wires it in a
/// cluster: events on PVCs and the format record on PVs.
fn node_service(w: &World, f: &FakeHost, node: &str) -> NodeService<FakeHost, FakeHost> {
    node_service_without_record(w, f, node).with_format_record(Arc::new(KubeFormatRecord::new(
        w.client.clone(),
        w.driver(),
    )))
}

/// The node service with events on PVCs but no format record.
fn node_service_without_record(
    w: &World,
    f: &FakeHost,
    node: &str,
) -> NodeService<FakeHost, FakeHost> {
    let config = nvme::Config::new(
        nvme::NqnPrefix::new(PREFIX).unwrap(),
        nvme::HostIdentity {
            nqn: "nqn.2014-08.org.nvmexpress:uuid:1b4e28ba-2fa1-11d2-883f-0016d3cca427".into(),
            id: None,
        },
    );
    let sink = KubeEvents::new(w.client.clone(), events::REPORTER, Some(node.to_string()))
        .with_action(events::ACTION);
    NodeService::with_events(
        NodeConfig {
            node_id: node.to_string(),
            max_volumes: 0,
            topology: vec![("rds.csi.srvlab.io/rds".into(), "default".into())],
            state_dir: "/var/lib/kubelet/plugins/rds/volumes".into(),
            staging_root: "/var/lib/kubelet".into(),
            max_ctrl_loss_tmo: None,
        },
        nvme::DataPath::new(f.clone(), f.clone(), config),
        RpcMetrics::unregistered(),
        NodeEvents::spawn(
            Arc::new(sink),
            events::QUEUE_CAPACITY,
            events::DELIVERY_TIMEOUT,
        ),
    )
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn the_node_annotates_the_pv_after_mkfs_and_refuses_the_annotated_volume_when_it_reads_empty()
{
    let w = World::new("format-record", &[]).await;
    let ns = w.ns();
    let node = w.node("a");
    create_pvc(&w.client, &ns, "disk").await;
    let id = format!("pvc-{}-disk", w.name);
    w.pv_for(&id).await;
    let nqn = format!("{PREFIX}{id}");
    let f = FakeHost::new();
    f.add_volume(&nqn, 1 << 30);
    let svc = node_service(&w, &f, &node);

    svc.node_stage_volume(tonic::Request::new(stage_req(&id, &ns, "disk")))
        .await
        .unwrap();
    assert_eq!(f.ran(nvme::fake::Program::Mkfs), 1);
    assert_eq!(
        w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
        Some("ext4"),
        "recorded on the PV before NodeStageVolume returned"
    );
    let staging = stage_req(&id, &ns, "disk").staging_target_path;
    svc.node_unstage_volume(tonic::Request::new(proto::NodeUnstageVolumeRequest {
        volume_id: id.clone(),
        staging_target_path: staging.clone(),
    }))
    .await
    .unwrap();

    // The node forgot the volume at unstage (as a new node never knew
    // it); the target now serves zeros.
    f.update_volume(&nqn, |v| v.fs = None);
    let err = svc
        .node_stage_volume(tonic::Request::new(stage_req(&id, &ns, "disk")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{}", err.message());
    assert_eq!(f.ran(nvme::fake::Program::Mkfs), 1, "never formatted twice");
    assert!(f.mounts_at(std::path::Path::new(&staging)).is_empty());
    assert_eq!(f.volume(&nqn).unwrap().fs, None, "nothing written");
    let ev = eventually("FormatRefused on disk", Duration::from_secs(10), || async {
        events_on(&w.client, &ns, "disk").await.into_iter().next()
    })
    .await;
    assert_eq!(ev.reason.as_deref(), Some("FormatRefused"));
    let note = ev.note.unwrap_or_default();
    assert!(note.contains(&id), "{note}");
    assert!(note.contains(ANNOTATION), "{note}");
    assert_eq!(
        w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
        Some("ext4"),
        "the record is kept"
    );
    w.cleanup().await;
}

#[tokio::test]
#[ignore = "tier 3: needs a kube-apiserver (RDS_CSI_TEST_KUBECONFIG); hack/test.sh runs it"]
async fn the_pv_annotation_is_read_only_from_this_driver_s_pv_and_written_only_to_the_pv_that_was_read(
) {
    let w = World::new("format-record-pv", &[]).await;
    let record = KubeFormatRecord::new(w.client.clone(), w.driver());
    // No PV: no record is kept, the probe alone decides.
    let id = format!("pvc-{}-x", w.name);
    assert!(matches!(
        record.read(&id, &id).await.unwrap(),
        Recorded::NotKept(_)
    ));
    // A PV of that name for another volume handle is not this volume's.
    w.create_pv(&id, &w.driver(), "another-volume", "Delete")
        .await;
    assert!(matches!(
        record.read(&id, &id).await.unwrap(),
        Recorded::NotKept(_)
    ));
    w.delete_pv(&id).await;

    // This volume's PV, deleted and made again between the read and
    // the write: the write must not land on the new object.
    w.pv_for(&id).await;
    let Recorded::Kept { at, formatted } = record.read(&id, &id).await.unwrap() else {
        panic!("the PV is this volume's")
    };
    assert_eq!(formatted, None);
    assert!(at.uid.is_some());
    w.delete_pv(&id).await;
    w.pv_for(&id).await;
    let e = record
        .write(&id, &at, nvme::FsType::Ext4)
        .await
        .unwrap_err();
    assert!(e.0.contains(&id), "{e}");
    assert_eq!(w.annotations(&id).await.get(ANNOTATION), None);
    // Read again, the write lands.
    let Recorded::Kept { at, .. } = record.read(&id, &id).await.unwrap() else {
        panic!()
    };
    record.write(&id, &at, nvme::FsType::Xfs).await.unwrap();
    assert_eq!(
        w.annotations(&id).await.get(ANNOTATION).map(String::as_str),
        Some("xfs")
    );
    w.delete_pv(&id).await;
    w.cleanup().await;
}
