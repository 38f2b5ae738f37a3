//! Tier 3: the controller binary against a real kube-apiserver + etcd.
//!
//! Objects are created the way Kubernetes and KubeVirt create them: Nodes,
//! PVs bound to PVCs, VolumeAttachments whose status the attacher sets after
//! a successful ControllerPublish, virt-launcher pods, and VMI objects of
//! KubeVirt's CRDs (the stand-ins of `testkit::kubevirt`, open schemas). The
//! RouterOS side is the simulator over real SSH.
//!
//! - `world`: one test's fixture (driver name, nodes, namespace, simulator,
//!   controller process) and what the attacher and provisioner would do;
//! - `attachments`: handoffs, fencing, publish races, host NQNs;
//! - `migration`: KubeVirt live migrations and forged evidence;
//! - `reconcile`: the rebuild after a restart and the periodic reconciler;
//! - `orphans`: orphan volumes and clusters sharing one RDS;
//! - `node_events`: the node service's Events and format record on the
//!   cluster (its service over the fake host).
//!
//! Every test needs `RDS_CSI_TEST_KUBECONFIG` and is ignored by plain
//! `cargo test`; hack/test.sh starts an API server with
//! hack/kube-apiserver.sh, sets it and runs them (CONTRIBUTING.md says how
//! to run them alone).

mod attachments;
mod migration;
mod node_events;
mod orphans;
mod reconcile;
mod world;
