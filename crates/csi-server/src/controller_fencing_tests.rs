//! Fencing at the target through the controller: who the export admits
//! after each publish and unpublish, and when open sessions are cut.

use super::*;

fn host(node: &str) -> String {
    format!("nqn.2014-08.org.example:{node}")
}

impl Ctl {
    /// ControllerPublish of a single-node filesystem volume.
    async fn rwo(&self, vol: &str, node: &str) -> Result<HashMap<String, String>, Status> {
        self.publish(vol, node, mount(Mode::SingleNodeWriter)).await
    }

    fn admitted(&self, vol: &str) -> Option<Vec<String>> {
        self.backend.disks.lock().unwrap()[vol]
            .allowed_hosts
            .clone()
    }

    fn cuts(&self, vol: &str) -> usize {
        let cut = format!("cut {vol}");
        self.backend.calls().iter().filter(|c| **c == cut).count()
    }
}

#[tokio::test]
async fn a_new_volume_admits_no_host_until_it_is_published() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![]));
    // A retried create finds it fenced already and writes nothing.
    let before = ctl.backend.calls().len();
    ctl.create("pvc-a", GIB).await.unwrap();
    assert_eq!(ctl.backend.calls().len(), before + 1, "one lookup only");
}

#[tokio::test]
async fn publish_admits_the_node_before_answering_and_unpublish_fences_it_out() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-a")]));
    assert_eq!(ctl.cuts("pvc-a"), 0, "nobody lost access");
    // A repeat publish changes nothing on the backend.
    let before = ctl.backend.calls().len();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.backend.calls().len(), before + 1, "one lookup only");

    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![]));
    // No holder left: a force-detached node still writing is cut.
    assert_eq!(ctl.cuts("pvc-a"), 1);
    ctl.rwo("pvc-a", "node-b").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-b")]));
}

#[tokio::test]
async fn a_holder_released_without_an_unpublish_is_cut_when_the_next_node_is_admitted() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    // node-a gets the out-of-service taint (a machine said to be off, that
    // may not be): the manager releases it when node-b asks, without an
    // unpublish; the list still names node-a's host.
    ctl.nodes.set("node-a", NodeStatus::OutOfService);
    ctl.rwo("pvc-a", "node-b").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-b")]));
    assert_eq!(ctl.cuts("pvc-a"), 1, "node-a's open session is cut");
}

#[tokio::test]
async fn a_migration_admits_both_hosts_and_its_end_fences_the_leaver_without_a_cut() {
    let ctl = Ctl::fencing().await;
    ctl.created("pvc-a", block(Mode::MultiNodeMultiWriter))
        .await;
    ctl.publish("pvc-a", "node-a", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    ctl.publish("pvc-a", "node-b", block(Mode::MultiNodeMultiWriter))
        .await
        .unwrap();
    assert_eq!(
        ctl.admitted("pvc-a"),
        Some(vec![host("node-a"), host("node-b")])
    );
    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-b")]));
    assert_eq!(ctl.cuts("pvc-a"), 0, "the staying VM keeps its session");
}

#[tokio::test]
async fn a_leaver_that_is_out_of_service_is_cut_even_with_a_node_staying() {
    let ctl = Ctl::fencing().await;
    ctl.created("pvc-a", block(Mode::MultiNodeMultiWriter))
        .await;
    for node in ["node-a", "node-b"] {
        ctl.publish("pvc-a", node, block(Mode::MultiNodeMultiWriter))
            .await
            .unwrap();
    }
    ctl.nodes.set("node-a", NodeStatus::OutOfService);
    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-b")]));
    assert_eq!(ctl.cuts("pvc-a"), 1);
}

#[tokio::test]
async fn a_node_without_a_host_nqn_is_never_published_to_while_fencing() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.nodes.set_host_nqn("node-c", "not an nqn");
    let err = ctl.rwo("pvc-a", "node-c").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("host NQN"), "{err:?}");
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![]), "nobody admitted");
}

#[tokio::test]
async fn a_failed_fence_fails_the_publish_and_the_retry_completes_it() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    // The lookup succeeds; setting the list does not.
    *ctl.backend.fail_call.lock().unwrap() = Some(("allow", "unreachable"));
    let err = ctl.rwo("pvc-a", "node-a").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![]));
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-a")]));
}

#[tokio::test]
async fn without_fencing_the_backend_is_never_asked_about_hosts() {
    let ctl = Ctl::new().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    ctl.unpublish("pvc-a", "node-a").await.unwrap();
    let calls = ctl.backend.calls();
    assert!(
        !calls
            .iter()
            .any(|c| c.starts_with("allow") || c.starts_with("cut")),
        "{calls:?}"
    );
    assert_eq!(ctl.admitted("pvc-a"), None);
}

#[tokio::test]
async fn a_repeated_create_of_a_published_volume_keeps_its_holder_admitted() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    ctl.create("pvc-a", GIB).await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-a")]));
}

#[tokio::test]
async fn a_volume_made_before_fencing_was_on_is_narrowed_to_its_holders_at_create() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    // As if made without fencing: any host may connect.
    ctl.backend
        .disks
        .lock()
        .unwrap()
        .get_mut("pvc-a")
        .unwrap()
        .allowed_hosts = None;
    ctl.create("pvc-a", GIB).await.unwrap();
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-a")]));
}

#[tokio::test]
async fn a_cut_that_failed_is_made_by_the_retry_even_though_the_list_is_already_right() {
    let ctl = Ctl::fencing().await;
    ctl.create("pvc-a", GIB).await.unwrap();
    ctl.rwo("pvc-a", "node-a").await.unwrap();
    ctl.nodes.set("node-a", NodeStatus::OutOfService);
    // The list moves to node-b; the cut of node-a's session fails.
    *ctl.backend.fail_call.lock().unwrap() = Some(("cut", "unreachable"));
    let err = ctl.rwo("pvc-a", "node-b").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert_eq!(ctl.admitted("pvc-a"), Some(vec![host("node-b")]));
    assert_eq!(ctl.cuts("pvc-a"), 1, "tried once");
    // The attacher's retry: node-b already holds it and the list is right,
    // but the cut is still owed.
    ctl.rwo("pvc-a", "node-b").await.unwrap();
    assert_eq!(ctl.cuts("pvc-a"), 2);
    // Once made, it is not made again.
    ctl.rwo("pvc-a", "node-b").await.unwrap();
    assert_eq!(ctl.cuts("pvc-a"), 2);
}
