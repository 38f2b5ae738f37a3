//! NVMe host NQNs of the nodes, as each node plugin records them on its
//! own Node object.
//!
//! The target tells initiators apart by their host NQN. Two machines with
//! the same one (a cloned disk image with a baked `/etc/nvme/hostnqn`) look
//! like one host to it: their sessions mix, and a disconnect or fence of
//! one reaches the other. The node plugin refuses to start on the values
//! known to be shared by many machines, but only a cluster-wide view can
//! see two nodes that happen to share any other value; the controller
//! refuses to publish to such a node.

use kube::api::{Api, Patch, PatchParams};
use kube::Client;

use crate::cluster::ClusterError;

/// The Node annotation holding that node's NVMe host NQN.
pub const HOST_NQN_ANNOTATION: &str = "rds.csi.srvlab.io/host-nqn";

/// A host NQN that more than one node reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedHostNqn {
    pub nqn: String,
    /// The other nodes reporting it, sorted.
    pub others: Vec<String>,
}

/// Which other nodes report the same host NQN as `node`, from
/// `(node name, host NQN annotation)` pairs. `None` when `node` reports
/// none (a node plugin that could not record it) or no other node shares
/// it. Surrounding whitespace does not make two values differ.
pub fn nodes_sharing_host_nqn<'a>(
    node: &str,
    nodes: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
) -> Option<SharedHostNqn> {
    let all: Vec<(&str, &str)> = nodes
        .into_iter()
        .filter_map(|(name, nqn)| Some((name, nqn?.trim())))
        .filter(|(_, nqn)| !nqn.is_empty())
        .collect();
    let mine = all.iter().find(|(name, _)| *name == node)?.1;
    let mut others: Vec<String> = all
        .iter()
        .filter(|(name, nqn)| *name != node && *nqn == mine)
        .map(|(name, _)| name.to_string())
        .collect();
    if others.is_empty() {
        return None;
    }
    others.sort();
    others.dedup();
    Some(SharedHostNqn {
        nqn: mine.to_string(),
        others,
    })
}

/// Records `nqn` as `node`'s host NQN on its Node object (a merge patch of
/// one annotation; needs `patch` on nodes).
pub async fn record_host_nqn(client: Client, node: &str, nqn: &str) -> Result<(), ClusterError> {
    let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client);
    let patch = serde_json::json!({
        "metadata": {"annotations": {HOST_NQN_ANNOTATION: nqn}}
    });
    api.patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(drop)
        .map_err(|e| ClusterError::kube(format!("annotate Node {node} with its host NQN"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "nqn.2014-08.org.nvmexpress:uuid:aaaaaaaa-0000-4000-8000-000000000001";
    const B: &str = "nqn.2014-08.org.nvmexpress:uuid:bbbbbbbb-0000-4000-8000-000000000002";

    #[test]
    fn two_nodes_with_one_host_nqn_are_named() {
        let nodes = [
            ("w1", Some(A)),
            ("w2", Some(B)),
            ("w3", Some(A)),
            ("w4", None),
        ];
        let shared = nodes_sharing_host_nqn("w1", nodes).unwrap();
        assert_eq!(shared.nqn, A);
        assert_eq!(shared.others, vec!["w3".to_string()]);
        let shared = nodes_sharing_host_nqn("w3", nodes).unwrap();
        assert_eq!(shared.others, vec!["w1".to_string()]);
    }

    #[test]
    fn distinct_or_unreported_host_nqns_share_nothing() {
        let nodes = [("w1", Some(A)), ("w2", Some(B)), ("w3", None)];
        assert_eq!(nodes_sharing_host_nqn("w1", nodes), None);
        assert_eq!(nodes_sharing_host_nqn("w3", nodes), None, "unreported");
        assert_eq!(nodes_sharing_host_nqn("w9", nodes), None, "unknown node");
        // Empty annotations are no host NQN at all, not a shared one.
        let blank = [("w1", Some(" ")), ("w2", Some(""))];
        assert_eq!(nodes_sharing_host_nqn("w1", blank), None);
    }

    #[test]
    fn whitespace_does_not_hide_a_shared_host_nqn() {
        let padded = format!("{A}\n");
        let nodes = [("w1", Some(A)), ("w2", Some(padded.as_str()))];
        let shared = nodes_sharing_host_nqn("w1", nodes).unwrap();
        assert_eq!(shared.others, vec!["w2".to_string()]);
    }

    #[test]
    fn every_other_node_sharing_it_is_listed_once_and_sorted() {
        let nodes = [
            ("w1", Some(A)),
            ("w9", Some(A)),
            ("w2", Some(A)),
            ("w2", Some(A)),
        ];
        let shared = nodes_sharing_host_nqn("w1", nodes).unwrap();
        assert_eq!(shared.others, vec!["w2".to_string(), "w9".to_string()]);
    }
}
