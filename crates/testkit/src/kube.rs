//! The tier-3 API server and the cluster objects every scenario needs.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::api::{Api, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;

/// Names the kubeconfig of the API server the tier-3 tests use
/// (`hack/kube-apiserver.sh up DIR` writes `DIR/kubeconfig`).
pub const KUBECONFIG_VAR: &str = "RDS_CSI_TEST_KUBECONFIG";

/// The annotation that hands a Node's volumes to the attach/detach
/// controller, as kubelet sets it by default.
pub const CONTROLLER_MANAGED: &str = "volumes.kubernetes.io/controller-managed-attach-detach";

/// The tier-3 kubeconfig from [`KUBECONFIG_VAR`]; panics saying how to
/// get one.
pub fn test_kubeconfig() -> PathBuf {
    match std::env::var_os(KUBECONFIG_VAR) {
        Some(p) => PathBuf::from(p),
        None => panic!(
            "tier-3 test: needs a kube-apiserver. Run hack/test.sh, or `hack/kube-apiserver.sh up DIR` and set {KUBECONFIG_VAR}=DIR/kubeconfig (see CONTRIBUTING.md)"
        ),
    }
}

/// A client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).expect("a readable kubeconfig");
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(cfg).expect("a client")
}

/// A client of the tier-3 API server.
pub async fn test_client() -> Client {
    client(&test_kubeconfig()).await
}

/// `name` with a random suffix, so reruns against one API server never
/// collide.
pub fn unique(name: &str) -> String {
    let suffix: u32 = rand::random::<u32>() % 0xfffff;
    format!("{name}-{suffix:05x}")
}

/// Creates the object `manifest` (JSON as a manifest or a component
/// writes it) through `api`; panics naming it and the API server's answer
/// when it is not valid or refused. Returns the object as created.
pub async fn create<K>(api: &Api<K>, manifest: serde_json::Value) -> K
where
    K: Clone + std::fmt::Debug + Serialize + DeserializeOwned,
{
    let kind = std::any::type_name::<K>()
        .rsplit("::")
        .next()
        .unwrap_or("object");
    let what = format!("{kind} {}", manifest["metadata"]["name"]);
    let obj: K = serde_json::from_value(manifest)
        .unwrap_or_else(|e| panic!("{what} is not a valid object: {e}"));
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {what}: {e}"))
}

fn conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Creates the namespace `name`; one that already exists is fine.
pub async fn create_namespace(client: &Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => {}
        Err(e) if conflict(&e) => {}
        Err(e) => panic!("create namespace {name}: {e}"),
    }
}

/// Creates a Node as kubelet registers it, handed to the attach/detach
/// controller, with `labels` (a JSON object).
pub async fn create_node(client: &Client, name: &str, labels: serde_json::Value) {
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels, "annotations": {CONTROLLER_MANAGED: "true"}}
    }))
    .unwrap();
    Api::<Node>::all(client.clone())
        .create(&PostParams::default(), &node)
        .await
        .unwrap_or_else(|e| panic!("create node {name}: {e}"));
}
