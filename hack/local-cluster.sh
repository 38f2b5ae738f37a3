#!/usr/bin/env bash
# A local Kubernetes control plane running rds-csi end to end on loopback:
# etcd, kube-apiserver, kube-controller-manager, the RouterOS simulator, the
# rds-csi controller and the CSI sidecars (provisioner, attacher, resizer),
# with Nodes node-a, node-b and node-c (no kubelets). See
# hack/local-cluster.py for what runs and where tools come from.
#
#   hack/local-cluster.sh up DIR     # prints DIR/cluster.env; source it
#   . DIR/cluster.env && kubectl get sc,nodes,csinodes
#   hack/local-cluster.sh down DIR
#   hack/local-cluster.sh stop-controller DIR    # the controller Pod's processes
#   hack/local-cluster.sh start-controller DIR [--flag=value ...]
#
# Exit code 3: a tool is missing.
exec python3 "$(dirname "$0")/local-cluster.py" "$@"
