//! A Node deleted while its volume is attached: the machine may still run,
//! so the volume stays until Kubernetes detaches it.

use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::DeleteParams;

use crate::cluster::*;

#[tokio::test]
#[ignore = "tier 5: needs the local control plane (RDS_CSI_E2E_DIR); hack/test.sh runs it"]
async fn a_node_deleted_while_attached_keeps_its_volume_until_kubernetes_detaches_it() {
    let s = Scenario::new("e2e-nodedel").await;
    let node = format!("{}-gone", s.ns);
    s.extra_node(&node).await;
    let pv = s
        .attached_claim("data", BLOCK, Mode::Block, "user", &node)
        .await;
    // The Node object goes; the machine may still be running.
    Api::<Node>::all(s.client.clone())
        .delete(&node, &DeleteParams::default())
        .await
        .unwrap();
    s.wait_event("data", "AttachedToDeletedNode").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(s.is_attached(&pv, &node).await, "still attached");
    assert_eq!(s.holder(&pv).await.as_deref(), Some(node.as_str()));
    // Kubernetes detaches it: its VolumeAttachment is deleted, the
    // attacher calls ControllerUnpublish, and only then is it released.
    let va = s.attachment(&pv, &node).await.unwrap();
    Api::<VolumeAttachment>::all(s.client.clone())
        .delete(&va.metadata.name.unwrap(), &DeleteParams::default())
        .await
        .unwrap();
    s.wait_detached(&pv, &node).await;
    assert_eq!(s.holder(&pv).await, None);
    s.delete_pod("user").await;
    s.cleanup().await;
}
