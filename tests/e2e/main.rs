//! Tier 5: rds-csi under the real Kubernetes control loops.
//!
//! Runs against the local control plane of `hack/local-cluster.sh` (etcd,
//! kube-apiserver, kube-controller-manager with the PV binder and the
//! attach/detach controller, csi-provisioner, csi-attacher, csi-resizer, the
//! rds-csi controller and the RouterOS simulator). Every scenario is driven
//! only through Kubernetes objects, created the way users, kube-scheduler
//! and KubeVirt create them: PVCs, Pods bound to nodes, VMIs, migrations,
//! virt-launcher pods and VolumeSnapshots. Nothing calls the driver
//! directly; the simulator is only read, over SSH, to see the disks (and
//! its image files are written where a pod would write to its disk).
//!
//! There are no kubelets: a pod is never run, and the one thing
//! kube-scheduler would do for a WaitForFirstConsumer claim (the
//! `volume.kubernetes.io/selected-node` annotation) the tests do themselves.
//!
//! - `cluster`: the control plane's handles and one scenario's namespace;
//! - `volumes`: provision, attach, expand, hand off, reclaim;
//! - `migration`: KubeVirt live and storage migrations, forged pods;
//! - `nodes`: a Node deleted while attached;
//! - `boot_storm`: many claims and pods at once;
//! - `snapshots`: VolumeSnapshots, restores and clones, a VM's disks
//!   snapshotted while attached, and deletions in any order;
//! - `backends`: two backends behind one controller, one of them down
//!   for a while (restarts the controller Pod with `--backends-file`);
//! - `switchover`: the Go driver's volumes, attachments and snapshots
//!   taken over by rds-csi without detaching anything (restarts the
//!   controller Pod too).
//!
//! Every test needs `RDS_CSI_E2E_DIR` (the directory `hack/local-cluster.sh
//! up` filled) and is ignored by plain `cargo test`; hack/test.sh brings the
//! control plane up and runs them one at a time (CONTRIBUTING.md says how
//! to run them alone).

mod backends;
mod boot_storm;
mod cluster;
mod migration;
mod nodes;
mod snapshots;
mod switchover;
mod volumes;
