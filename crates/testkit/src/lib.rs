//! Fixtures shared by rds-csi's test tiers: a dev-dependency only, never
//! part of a shipped binary.
//!
//! What it holds is what the tiers would otherwise each write again:
//! - [`csi`]: volume capabilities and CreateVolume requests as the CO
//!   sends them;
//! - [`grpc`]: a gRPC channel over a unix socket, as the CO talks to a CSI
//!   plugin;
//! - [`sim`]: a fresh SSH client key (written to a file when a process
//!   needs it) and the RouterOS simulator that accepts it;
//! - [`kube`]: the tier-3 API server (`RDS_CSI_TEST_KUBECONFIG`), unique
//!   names, namespaces and Nodes;
//! - [`kubevirt`]: KubeVirt's CRDs as the tests stand them in
//!   (`kubevirt-crds.json`, the one definition `hack/local-cluster.py`
//!   applies too) and its objects: VMIs, migrations, virt-launcher labels;
//! - [`wait`]: polling with a deadline, and free ports;
//! - [`metrics`]: HTTP scrapes and reading a metric's value;
//! - [`sshd`]: an OpenSSH server on loopback for the Linux target's tests.
//!
//! Boundary: of the driver's own crates it uses only csi-server's generated
//! CSI types (csi-server's integration tests use the kit, and link the same
//! library); scenario-specific requests stay with the tests that use them.

pub mod csi;
pub mod grpc;
pub mod kube;
pub mod kubevirt;
pub mod metrics;
pub mod sim;
pub mod sshd;
pub mod wait;

pub use wait::{eventually, free_port, wait_for};
