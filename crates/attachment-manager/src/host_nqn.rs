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

    /// The other nodes sharing the host NQN of `node`, when it has one
    /// that is shared.
    fn shared_with<'a>(node: &str, nodes: &[(&'a str, Option<&'a str>)]) -> Option<Vec<String>> {
        let shared = nodes_sharing_host_nqn(node, nodes.iter().copied())?;
        assert_eq!(shared.nqn, A, "only A is ever shared in these cases");
        Some(shared.others)
    }

    #[test]
    fn nodes_sharing_a_host_nqn_are_named_and_no_others() {
        let padded = format!("{A}\n");
        let padded = padded.as_str();
        let (a, b) = (Some(A), Some(B));
        let w1_w3 = [("w1", a), ("w2", b), ("w3", a), ("w4", None)];
        let distinct = [("w1", a), ("w2", b), ("w3", None)];
        // (case, nodes and their host NQN, the node asking, other nodes sharing it)
        let cases: [(&str, &[_], &str, Option<&[&str]>); 8] = [
            (
                "two_nodes_with_one_host_nqn_are_named",
                &w1_w3,
                "w1",
                Some(&["w3"]),
            ),
            (
                "two_nodes_with_one_host_nqn_are_named",
                &w1_w3,
                "w3",
                Some(&["w1"]),
            ),
            (
                "distinct_or_unreported_host_nqns_share_nothing",
                &distinct,
                "w1",
                None,
            ),
            (
                "distinct_or_unreported_host_nqns_share_nothing: unreported",
                &distinct,
                "w3",
                None,
            ),
            (
                "distinct_or_unreported_host_nqns_share_nothing: unknown node",
                &distinct,
                "w9",
                None,
            ),
            // Empty annotations are no host NQN at all, not a shared one.
            (
                "distinct_or_unreported_host_nqns_share_nothing: blank",
                &[("w1", Some(" ")), ("w2", Some(""))],
                "w1",
                None,
            ),
            (
                "whitespace_does_not_hide_a_shared_host_nqn",
                &[("w1", a), ("w2", Some(padded))],
                "w1",
                Some(&["w2"]),
            ),
            (
                "every_other_node_sharing_it_is_listed_once_and_sorted",
                &[("w1", a), ("w9", a), ("w2", a), ("w2", a)],
                "w1",
                Some(&["w2", "w9"]),
            ),
        ];
        for (case, nodes, node, want) in cases {
            let want = want.map(|w| w.iter().map(|n| n.to_string()).collect());
            assert_eq!(shared_with(node, nodes), want, "{case}");
        }
    }
}
