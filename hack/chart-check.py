#!/usr/bin/env python3
"""Checks the Helm chart in charts/rds-csi with Helm 4's own library.

    hack/chart-check.py              # every check; prints PASS/FAIL per check
    hack/chart-check.py --no-server  # without the server-side dry run
    hack/chart-check.py --write      # regenerate deploy/rds-csi.yaml

Checks:
  load+lint     the chart loads and lints (strict) with real Helm
  schema        values.schema.json accepts good values and rejects bad ones
  render        default and all-options renders parse; key invariants hold
  snapshots     snapshots.enabled turns csi-snapshotter, its RBAC and the
                VolumeSnapshotClass on and off; the class is this driver's
                and the default; the controller ServiceAccount may do what
                the sidecar does; CDI StorageProfiles clone with csi-clone
                when snapshots are on, copy when off, overrides win
  backends      charts/rds-csi/examples/two-backends.yaml (and it plus an
                RDS backend with every option) passes the schema; the
                ConfigMap's backends.json holds exactly the expected
                entries, whose key files are where the controller mounts
                the backends' Secrets; the node plugin gets the file but no
                Secret; both get --backends-file and a checksum that
                changes with the file; backend classes carry `backend` and
                allow only nodes with the backend's topology label;
                duplicate names are refused; without backends nothing of
                this is rendered
  flags         the controller and node args use exactly the flags that
                src/cli.rs defines (every flag settable, no unknown flag)
  binary        with $RDS_CSI_BIN set, the rendered controller and node
                args parse with that binary, and so does the rendered
                backends.json: the node reads it and probes every
                backend's portal, the controller loads every backend's key
                from the path the file names and starts serving them all;
                a file with a misspelt key is refused by both
  alerts        the chart's copy of the alert rules equals
                docs/alerts/rds-csi.rules.yml, and so does the rendered
                PrometheusRule
  dry-run       every rendered object (all options on; two backends) is accepted by
                `kubectl apply --dry-run=server` against a real
                kube-apiserver (hack/kube-apiserver.sh). ServiceMonitor,
                PrometheusRule and StorageProfile are checked after
                applying stand-in CRDs with open schemas, so for them only
                apiVersion/kind/metadata are really validated. Same for the
                VirtualMachine in deploy/examples. The VolumeSnapshotClass
                is checked against the real VolumeSnapshot CRDs, applied
                first, from the directory $RDS_CSI_SNAPSHOT_CRDS
                (external-snapshotter's client/config/crd); without it,
                against an open stand-in (the check says so). The API server runs
                (hack/kube-apiserver.sh, which allows privileged pods as real
                clusters do).
  deploy        deploy/rds-csi.yaml is exactly what the chart renders
  package       Chart.yaml version and appVersion are the crate version;
                the default image is NAME:version of hack/image.sh; the
                controller runs as the image's user, the node plugin as
                root; `helm package` makes rds-csi-VERSION.tgz, which
                renders exactly as the chart directory
  readme        the README's install section works as written: its values
                file passes the schema and reaches the flags, and the
                Secret, StorageClasses and PVC it names are the chart's

Needs helm-python-sdk (installed with pip when missing) and PyYAML; the
dry run needs kube-apiserver and etcd (see hack/kube-apiserver.sh) and
kubectl (PATH or $KUBECTL).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback

# hack/chart_rbac.py and chart_flags.py, beside this script (no __pycache__
# left in hack/).
sys.dont_write_bytecode = True
from chart_flags import cli_flags
from chart_package import check_release
from chart_rbac import LEASE_NEEDS, PROVISIONER_SNAPSHOT_NEEDS, SNAPSHOTTER_NEEDS, granted, missing_grants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "rds-csi")
DEPLOY = os.path.join(ROOT, "deploy", "rds-csi.yaml")
RULES_DOC = os.path.join(ROOT, "docs", "alerts", "rds-csi.rules.yml")
README = os.path.join(ROOT, "README.md")
RULES_CHART = os.path.join(CHART, "files", "rds-csi.rules.yml")

RELEASE = "rds-csi"
NAMESPACE = "kube-system"
# The minimal values deploy/rds-csi.yaml is rendered with (placeholders the
# user replaces; see the header of that file).
DEPLOY_VALUES = {
    "rds": {
        "address": "rds.example.lan",
        "hostKeyFingerprint": "SHA256:REPLACE0WITH0THE0RDS0HOST0KEY0FINGERPRINT00",
    }
}
REGENERATE = "hack/chart-check.py --write"
# Values for two backends: an RDS (the default) and a Linux host (nvmet).
TWO_BACKENDS = os.path.join(CHART, "examples", "two-backends.yaml")
BACKENDS_DIR = "/etc/rds-csi/backends"


def ensure_modules():
    try:
        import helm_python  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "helm-python-sdk"])
    try:
        import yaml  # noqa: F401
    except ImportError:
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "pyyaml"])


def merged(*layers):
    out = {}
    for layer in layers:
        out = deep_merge(out, layer)
    return out


def deep_merge(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


ALL_OPTIONS = merged(
    DEPLOY_VALUES,
    {
        "rds": {"sshKey": {"create": True, "privateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"}},
        "controller": {
            "capacity": {"enabled": True},
            "nvmeAddress": "10.10.10.5",
            "volumePathRoot": "/storage-pool",
            "nodes": ["node-a", "node-b"],
            "allowUnverifiedMigration": True,
            "clusterId": "0f6c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3",
        },
        "node": {"maxCtrlLossTmo": 600, "stateDir": "/var/lib/rds-csi"},
        "cdi": {"storageProfiles": True},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "storageClasses": {
            "ext4": {"isDefault": True, "mountOptions": ["noatime"],
                     "parameters": {"volumeLayout": "flat", "copyMethod": "copy"}},
            "blockRwx": {"parameters": {"volumeLayout": "subvolume"}, "cloneStrategy": "snapshot"},
        },
        "snapshots": {"volumeSnapshotClass": {"deletionPolicy": "Retain"}},
        "sidecars": {"snapshotter": {"extraArgs": ["--worker-threads=4"]}},
    },
)
# The nvmet backend: a Linux host's thin pool and kernel NVMe target.
NVMET = merged(ALL_OPTIONS, {"controller": {"backend": "nvmet", "nvmet": {
    "volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "10.10.10.7", "sudo": True}}})
SNAPSHOTS_OFF = merged(DEPLOY_VALUES, {"snapshots": {"enabled": False}, "cdi": {"storageProfiles": True}})
# A second RDS with every option a backend has; beside the example's nvmet
# host it covers every key of the backends file.
LAB3 = {
    "name": "lab3", "backend": "rds", "address": "[fd00::6]:2222", "user": "admin",
    "insecureSkipHostKeyCheck": True, "sshKey": {"secretName": "rds-csi-ssh-key-lab3", "secretKey": "key"},
    "maxSessions": 4, "nvmeAddress": "10.10.10.6", "nvmePort": 4421, "volumePath": "/pool2/csi",
    "volumePathRoot": "/pool2", "rdsFencing": True,
    "storageClasses": [
        {"name": "rds-csi-lab3-block-rwx", "volumeBindingMode": "Immediate", "allowVolumeExpansion": False,
         "reclaimPolicy": "Retain", "parameters": {"migrationTimeoutSeconds": "600"}, "cloneStrategy": "copy",
         "claimPropertySets": [{"accessModes": ["ReadWriteMany"], "volumeMode": "Block"}]},
        {"name": "rds-csi-lab3-off", "enabled": False},
    ],
}
# What backends.json must hold for the example plus LAB3, key for key: what
# a value leaves out stays out (the flag default applies), and every key
# file is under BACKENDS_DIR/<name>/.
WANT_BACKENDS_JSON = {"backends": [
    {"name": "linux1", "backend": "nvmet", "rds-address": "10.0.0.7", "rds-user": "csi",
     "rds-host-key": "SHA256:REPLACE0WITH0LINUX10HOST0KEY0FINGERPRINT000",
     "rds-key-file": f"{BACKENDS_DIR}/linux1/id_ed25519",
     "nvmet-volume-group": "vg0", "nvmet-thin-pool": "thin", "nvmet-listen-address": "10.10.10.7",
     "nvmet-port": 4420, "nvmet-sudo": True},
    {"name": "lab3", "backend": "rds", "rds-address": "[fd00::6]:2222", "rds-user": "admin",
     "rds-insecure-skip-host-key-check": True, "rds-key-file": f"{BACKENDS_DIR}/lab3/key",
     "rds-max-sessions": 4, "nvme-address": "10.10.10.6", "nvme-port": 4421, "volume-path": "/pool2/csi",
     "volume-path-root": "/pool2", "rds-fencing": True},
]}


def two_backends():
    """charts/rds-csi/examples/two-backends.yaml as values."""
    import yaml

    with open(TWO_BACKENDS) as f:
        return yaml.safe_load(f)


def three_backends():
    """The example plus LAB3."""
    values = two_backends()
    return merged(values, {"backends": values["backends"] + [LAB3]})

# A backend the schema accepts; BAD_VALUES spoils it one key at a time
# (None: the key left out).
BACKEND_OK = {"name": "lab2", "address": "10.0.0.6", "hostKeyFingerprint": DEPLOY_VALUES["rds"]["hostKeyFingerprint"],
              "sshKey": {"secretName": "rds-csi-ssh-key-lab2"}}
# Each must be refused by values.schema.json.
BAD_VALUES = [
    ("no rds.address", {"rds": {"address": ""}}),
    ("no host key and checking on", {"rds": {"hostKeyFingerprint": ""}}),
    ("malformed host key", {"rds": {"hostKeyFingerprint": "SHA256:short"}}),
    ("host key together with insecure skip", {"rds": {"insecureSkipHostKeyCheck": True}}),
    ("log format xml", {"logFormat": "xml"}),
    ("nvmePort 0", {"controller": {"nvmePort": 0}}),
    ("nvmePort 70000", {"controller": {"nvmePort": 70000}}),
    ("nvmePort as string", {"controller": {"nvmePort": "4420"}}),
    ("duration without unit", {"rds": {"commandTimeout": "30"}}),
    ("duration as number", {"controller": {"healthInterval": 10}}),
    ("orphanCleanup unknown", {"node": {"orphanCleanup": "kill"}}),
    ("cluster id with a quote", {"controller": {"clusterId": "a\"b"}}),
    ("cluster id with a space", {"controller": {"clusterId": "lab cluster"}}),
    ("maxCtrlLossTmo above 86400", {"node": {"maxCtrlLossTmo": 100000}}),
    ("node events unknown", {"node": {"events": "sometimes"}}),
    ("node formatRecord unknown", {"node": {"formatRecord": "maybe"}}),
    ("node kubeconfig relative", {"node": {"kubeconfig": "kubeconfig"}}),
    ("metrics address without port", {"controller": {"metricsAddress": "0.0.0.0"}}),
    ("endpoint over tcp", {"node": {"endpoint": "tcp://0.0.0.0:10000"}}),
    ("unknown StorageClass parameter (typo)", {"storageClasses": {"ext4": {"parameters": {"nvmeport": "4420"}}}}),
    ("StorageClass parameter not a string", {"storageClasses": {"blockRwx": {"parameters": {"migrationTimeoutSeconds": 300}}}}),
    ("fstype btrfs", {"storageClasses": {"ext4": {"parameters": {"csi.storage.k8s.io/fstype": "btrfs"}}}}),
    ("nqn prefix without nqn.", {"nqnPrefix": "iqn.2000-02.com.mikrotik:"}),
    ("max volume size with unknown unit", {"controller": {"maxVolumeSize": "16X"}}),
    ("unknown top-level key", {"controler": {}}),
    ("ssh key create without a key", {"rds": {"sshKey": {"create": True}}}),
    ("snapshots.enabled as a string", {"snapshots": {"enabled": "yes"}}),
    ("VolumeSnapshotClass deletionPolicy lowercase", {"snapshots": {"volumeSnapshotClass": {"deletionPolicy": "delete"}}}),
    ("VolumeSnapshotClass name with capitals", {"snapshots": {"volumeSnapshotClass": {"name": "RDS"}}}),
    ("VolumeSnapshotClass unknown key (parameters)", {"snapshots": {"volumeSnapshotClass": {"parameters": {}}}}),
    ("snapshotter image without a tag", {"sidecars": {"snapshotter": {"image": {"tag": ""}}}}),
    ("volumeLayout unknown", {"storageClasses": {"block": {"parameters": {"volumeLayout": "btrfs"}}}}),
    ("copyMethod unknown", {"storageClasses": {"block": {"parameters": {"copyMethod": "reflink"}}}}),
    ("copyMethod with the subvolume layout",
     {"storageClasses": {"block": {"parameters": {"volumeLayout": "subvolume", "copyMethod": "copy"}}}}),
    ("class cloneStrategy unknown", {"storageClasses": {"ext4": {"cloneStrategy": "clone"}}}),
    ("cdi cloneStrategy unknown", {"cdi": {"cloneStrategy": "host-assisted"}}),
    ("backend unknown", {"controller": {"backend": "lvm"}}),
    ("nvmet without its thin pool",
     {"controller": {"backend": "nvmet", "nvmet": {"volumeGroup": "vg0", "listenAddress": "10.0.0.7"}}}),
    ("nvmet settings with the rds backend", {"controller": {"nvmet": {"volumeGroup": "vg0"}}}),
    ("rds fencing with the nvmet backend",
     {"controller": {"backend": "nvmet", "rdsFencing": True,
                     "nvmet": {"volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "10.0.0.7"}}}),
    ("node backendProbeTimeout without unit", {"node": {"backendProbeTimeout": "3"}}),
    ("StorageClass backend with capitals", {"storageClasses": {"ext4": {"parameters": {"backend": "Lab2"}}}}),
    *[(f"backends: {label}", {"backends": [{k: v for k, v in {**BACKEND_OK, **over}.items() if v is not None}]})
      for label, over in [
        ("name with capitals", {"name": "Lab2"}),
        ("name of 33 characters", {"name": "a" * 33}),
        ("name ending in a dash", {"name": "lab2-"}),
        ("name with a dot", {"name": "lab.2"}),
        ("no name", {"name": None}),
        ("no address", {"address": None}),
        ("empty address", {"address": ""}),
        ("no sshKey", {"sshKey": None}),
        ("sshKey without secretName", {"sshKey": {"secretKey": "id_ed25519"}}),
        ("sshKey create (the Secret is never the chart's)", {"sshKey": {"secretName": "k", "create": True}}),
        ("no host key and checking on", {"hostKeyFingerprint": None}),
        ("malformed host key", {"hostKeyFingerprint": "SHA256:short"}),
        ("host key together with insecure skip", {"insecureSkipHostKeyCheck": True}),
        ("kind unknown", {"backend": "lvm"}),
        ("unknown key (typo)", {"adress": "10.0.0.6"}),
        ("nvmePort 0", {"nvmePort": 0}),
        ("maxSessions as a string", {"maxSessions": "8"}),
        ("volumePath relative", {"volumePath": "pool/csi"}),
        ("nvmet without its settings", {"backend": "nvmet"}),
        ("nvmet without its thin pool", {"backend": "nvmet", "nvmet": {"volumeGroup": "vg0", "listenAddress": "10.0.0.7"}}),
        ("nvmet listenAddress a host name", {"backend": "nvmet", "nvmet": {
            "volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "linux1.lan"}}),
        ("nvmet settings with the rds backend", {"nvmet": {"volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "10.0.0.7"}}),
        ("rds fencing with nvmet", {"backend": "nvmet", "rdsFencing": True, "nvmet": {
            "volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "10.0.0.7"}}),
        ("StorageClass without a name", {"storageClasses": [{"parameters": {}}]}),
        ("StorageClass naming its backend itself", {"storageClasses": [{"name": "x", "parameters": {"backend": "lab2"}}]}),
        ("StorageClass parameter unknown", {"storageClasses": [{"name": "x", "parameters": {"nvmeport": "4420"}}]}),
    ]],
    ("backends not a list", {"backends": {"lab2": {}}}),
]
GOOD_VALUES = [
    ("deploy values", {}),
    ("all options", ALL_OPTIONS),
    ("lab: insecure, no fingerprint", {"rds": {"hostKeyFingerprint": "", "insecureSkipHostKeyCheck": True}}),
    ("IPv6 address, json logs", {"rds": {"address": "[fd00::5]:22"}, "logFormat": "json"}),
    ("metrics off", {"controller": {"metricsAddress": "off"}, "node": {"metricsAddress": "off"}}),
    ("node events off as an unquoted YAML off", {"node": {"events": False}}),
    ("snapshots off", {"snapshots": {"enabled": False}}),
    ("subvolume layout", {"storageClasses": {"block": {"parameters": {"volumeLayout": "subvolume"}}}}),
    ("flat layout with copy-from", {"storageClasses": {"block": {"parameters": {"volumeLayout": "flat", "copyMethod": "copy-from"}}}}),
    ("copyMethod without volumeLayout (flat is the default)", {"storageClasses": {"block": {"parameters": {"copyMethod": "copy"}}}}),
    ("not the default VolumeSnapshotClass", {"snapshots": {"volumeSnapshotClass": {"isDefault": False}}}),
    ("CDI clone strategies", {"cdi": {"cloneStrategy": "copy"}, "storageClasses": {"ext4": {"cloneStrategy": "csi-clone"}}}),
    ("nvmet backend", {"controller": {"backend": "nvmet", "nvmet": {
        "volumeGroup": "vg0", "thinPool": "thin", "listenAddress": "fd00::7", "port": 4421}}}),
    ("one backend, required keys only", {"backends": [BACKEND_OK]}),
    ("a backend, insecure", {"backends": [merged(BACKEND_OK, {"hostKeyFingerprint": "", "insecureSkipHostKeyCheck": True})]}),
    ("a class of the default backend naming a backend", {"storageClasses": {"ext4": {"parameters": {"backend": "lab2"}}}}),
    ("node backendProbeTimeout 500ms", {"node": {"backendProbeTimeout": "500ms"}}),
]

# Helm's install order (pkg/release/util/kind_sorter.go), enough for this chart.
KIND_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService",
]


def render(helm, values, chart_path=CHART):
    """All rendered documents as (source, text) in Helm's install order."""
    import yaml

    with helm.Chart.load(chart_path) as chart:
        out = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs = []
    for source in sorted(out):
        if source.endswith("NOTES.txt"):
            continue
        for part in out[source].split("\n---"):
            text = part.strip("\n")
            if text.startswith("---"):
                text = text[3:].lstrip("\n")
            obj = yaml.safe_load(text) if text.strip() else None
            if not obj:
                continue
            docs.append((source, text, obj))
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    docs.sort(key=lambda d: (order.get(d[2]["kind"], len(KIND_ORDER)), d[2]["kind"], d[2]["metadata"]["name"]))
    return docs


def manifest(docs):
    return "".join(f"---\n# Source: {src}\n{text}\n" for src, text, _ in docs)


def deploy_text(helm):
    with helm.Chart.load(CHART) as chart:
        app = chart.metadata.get("appVersion")
    header = textwrap.dedent(
        f"""\
        # rds-csi {app}: the Helm chart charts/rds-csi rendered with its default
        # values, release "{RELEASE}", namespace "{NAMESPACE}", and only the two
        # required values set to placeholders:
        #
        #   rds.address:            {DEPLOY_VALUES['rds']['address']}
        #   rds.hostKeyFingerprint: {DEPLOY_VALUES['rds']['hostKeyFingerprint']}
        #
        # Before applying, replace both in the controller's --rds-address and
        # --rds-host-key arguments (ssh-keyscan -t ed25519 RDS | ssh-keygen -lf -),
        # and create the SSH key Secret:
        #
        #   kubectl -n {NAMESPACE} create secret generic rds-csi-ssh-key \\
        #     --from-file=id_ed25519=/path/to/private-key
        #
        # The VolumeSnapshotClass needs the cluster's VolumeSnapshot CRDs and
        # snapshot-controller (not included; see the README's install section).
        #
        # Generated; do not edit. Regenerate with: {REGENERATE}
        """
    )
    return header + manifest(render(helm, DEPLOY_VALUES))


# ---------------------------------------------------------------- checks


def check_lint(helm):
    report = helm.lint(CHART, DEPLOY_VALUES, strict=True, namespace=NAMESPACE)
    bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
    for m in report.get("messages", []):
        print(f"  lint [{m.get('severity')}] {m.get('path')}: {m.get('error')}")
    for e in report.get("errors", []) or []:
        print(f"  lint error: {e}")
    # Without the required values, lint must report the schema failure.
    bare = helm.lint(CHART, None, strict=True, namespace=NAMESPACE)
    bare_bad = [m for m in bare.get("messages", []) if m.get("severity", 0) >= 3]
    if not bare_bad:
        print("  lint without rds.address/hostKeyFingerprint reported no error")
        return False
    return not bad and not report.get("errors")


def check_schema(helm):
    ok = True
    with helm.Chart.load(CHART) as chart:
        examples = [("examples/two-backends.yaml", two_backends()),
                    ("the example and an RDS backend with every option", three_backends())]
        for name, over in GOOD_VALUES + examples:
            try:
                chart.validate_schema(merged(DEPLOY_VALUES, over))
                print(f"  accepted (good): {name}")
            except helm.HelmError as e:
                ok = False
                print(f"  REFUSED a good value set: {name}: {e}")
        for name, over in BAD_VALUES:
            try:
                chart.validate_schema(merged(DEPLOY_VALUES, over))
                ok = False
                print(f"  ACCEPTED a bad value set: {name}")
            except helm.HelmValuesError as e:
                first = str(e).strip().splitlines()[-1].strip()
                print(f"  refused (bad): {name}: {first}")
    return ok


def find(docs, kind, name_suffix=""):
    return [o for _, _, o in docs if o["kind"] == kind and o["metadata"]["name"].endswith(name_suffix)]


def container(pod_spec, name):
    return next(c for c in pod_spec["containers"] if c["name"] == name)


class Expect:
    """expect(condition, what) collects what failed; report() prints it."""

    def __init__(self):
        self.problems = []

    def __call__(self, cond, what):
        if not cond:
            self.problems.append(what)

    def report(self):
        for p in self.problems:
            print(f"  {p}: FAILED")
        return not self.problems


def check_render(helm):
    expect = Expect()
    default = render(helm, DEPLOY_VALUES)
    full = render(helm, ALL_OPTIONS)
    for _, label, over in [(0, "metrics off", {"controller": {"metricsAddress": "off"}}),
                           (0, "insecure", {"rds": {"hostKeyFingerprint": "", "insecureSkipHostKeyCheck": True}})]:
        render(helm, merged(DEPLOY_VALUES, over))

    import re

    with helm.Chart.load(CHART) as chart:
        app = chart.metadata.get("appVersion")
    cargo = re.search(r'^version\s*=\s*"([^"]+)"', open(os.path.join(ROOT, "Cargo.toml")).read(), re.M)
    expect(cargo and app == cargo.group(1), f"Chart.yaml appVersion {app} equals the Cargo.toml version")

    drv = find(default, "CSIDriver")[0]["spec"]
    expect(drv["attachRequired"] is True, "CSIDriver attachRequired")
    expect(drv["podInfoOnMount"] is True, "CSIDriver podInfoOnMount")
    expect(drv["storageCapacity"] is False, "CSIDriver storageCapacity false by default")
    expect(drv["volumeLifecycleModes"] == ["Persistent"], "CSIDriver volumeLifecycleModes")
    expect(find(full, "CSIDriver")[0]["spec"]["storageCapacity"] is True, "storageCapacity with capacity on")

    sts = find(default, "StatefulSet")[0]
    expect(sts["spec"]["replicas"] == 1, "controller replicas 1")
    pod = sts["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["containers"]]
    expect(names == ["rds-csi", "csi-provisioner", "csi-attacher", "csi-resizer", "csi-snapshotter"],
           f"controller containers {names}")
    drv_c = container(pod, "rds-csi")
    expect(drv_c["args"][0] == "controller", "controller subcommand")
    expect(drv_c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "controller liveness /healthz")
    expect(drv_c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz", "controller readiness /readyz")
    expect("--extra-create-metadata" in container(pod, "csi-provisioner")["args"], "provisioner --extra-create-metadata")
    full_prov = container(find(full, "StatefulSet")[0]["spec"]["template"]["spec"], "csi-provisioner")["args"]
    expect("--enable-capacity" in full_prov, "provisioner --enable-capacity with capacity on")

    ds = find(default, "DaemonSet")[0]["spec"]["template"]["spec"]
    node = container(ds, "rds-csi")
    expect(node["args"][0] == "node", "node subcommand")
    expect(node["securityContext"].get("privileged") is True, "node privileged")
    expect(ds.get("hostNetwork") is True, "node hostNetwork")
    mounts = {m["mountPath"]: m for m in node["volumeMounts"]}
    expect(mounts.get("/var/lib/kubelet", {}).get("mountPropagation") == "Bidirectional", "kubelet dir Bidirectional")
    for p in ["/dev", "/sys", "/etc/nvme", "/lib/modules"]:
        expect(p in mounts, f"node mounts {p}")
    expect(mounts.get("/lib/modules", {}).get("readOnly") is True, "/lib/modules read-only")
    expect(node.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz", "node liveness /healthz")
    expect([c["name"] for c in ds["containers"]] == ["rds-csi", "node-driver-registrar"], "node containers")

    scs = {o["metadata"]["name"]: o for o in find(default, "StorageClass")}
    expect(set(scs) == {"rds-csi-ext4", "rds-csi-block", "rds-csi-block-rwx"}, f"StorageClasses {sorted(scs)}")
    expect(scs.get("rds-csi-ext4", {}).get("parameters", {}).get("csi.storage.k8s.io/fstype") == "ext4", "ext4 class fstype")
    profiles = {o["metadata"]["name"]: o["spec"]["claimPropertySets"] for o in find(full, "StorageProfile")}
    expect(profiles.get("rds-csi-block-rwx") == [{"accessModes": ["ReadWriteMany"], "volumeMode": "Block"}], "RWX StorageProfile")
    expect(profiles.get("rds-csi-ext4") == [{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}], "ext4 StorageProfile")
    for kind in ["StorageProfile", "ServiceMonitor", "PrometheusRule", "Secret"]:
        expect(not find(default, kind), f"{kind} off by default")
        expect(find(full, kind), f"{kind} rendered when enabled")

    # Least privilege: no wildcards, no secrets access anywhere.
    for _, _, o in full:
        if o["kind"] in ("ClusterRole", "Role"):
            for r in o["rules"]:
                expect("*" not in r["verbs"] and "*" not in r["resources"], f"wildcard in {o['metadata']['name']}")
                expect("secrets" not in r["resources"], f"secrets access in {o['metadata']['name']}")
    node_rules = find(default, "ClusterRole", "-node")[0]["rules"]
    expect(any("events" in r["resources"] and "create" in r["verbs"] for r in node_rules), "node may create events")
    expect(any("persistentvolumeclaims" in r["resources"] and "get" in r["verbs"] for r in node_rules),
           "node may read PVCs (event UIDs)")
    expect("--events=auto" in node["args"], "node records events by default (--events=auto)")
    expect(any("persistentvolumes" in r["resources"] and {"get", "patch"} <= set(r["verbs"]) for r in node_rules),
           "node may read and annotate PVs (the format record)")
    expect("--format-record=auto" in node["args"], "node keeps the format record by default (--format-record=auto)")
    off = container(find(render(helm, merged(DEPLOY_VALUES, {"node": {"events": False}})), "DaemonSet")[0]
                    ["spec"]["template"]["spec"], "rds-csi")["args"]
    expect("--events=off" in off, "an unquoted YAML off renders --events=off")
    ctrl_rules = find(default, "ClusterRole", "-controller")[0]["rules"]
    expect(any("persistentvolumes" in r["resources"] and "patch" in r["verbs"] for r in ctrl_rules), "controller patches PVs")
    expect(any("virtualmachineinstances" in r["resources"] for r in ctrl_rules), "controller reads VMIs")

    print(f"  default render: {len(default)} objects; all options: {len(full)} objects")
    return expect.report()


def check_snapshots(helm):
    """The snapshots switch: csi-snapshotter beside the other sidecars, its
    RBAC, the VolumeSnapshotClass, and the CDI clone strategy."""
    expect = Expect()
    default = render(helm, DEPLOY_VALUES)
    full = render(helm, ALL_OPTIONS)
    off = render(helm, SNAPSHOTS_OFF)
    profiles_on = render(helm, merged(DEPLOY_VALUES, {"cdi": {"storageProfiles": True}}))

    def controller_pod(docs):
        return find(docs, "StatefulSet")[0]["spec"]["template"]["spec"]

    # The sidecar: present with the switch, on the driver's socket, leader
    # election as the provisioner has it.
    for label, docs in (("default", default), ("all options", full)):
        pod = controller_pod(docs)
        names = [c["name"] for c in pod["containers"]]
        expect("csi-snapshotter" in names, f"{label}: csi-snapshotter in the controller pod")
        if "csi-snapshotter" not in names:
            continue
        snap = container(pod, "csi-snapshotter")
        prov = container(pod, "csi-provisioner")
        def flags(c, prefix):
            return [a for a in c["args"] if a.startswith(prefix)]

        for prefix in ("--csi-address=", "--leader-election"):
            expect(flags(snap, prefix) == flags(prov, prefix),
                   f"{label}: csi-snapshotter {flags(snap, prefix)} as the provisioner {flags(prov, prefix)}")
        expect({"name": "socket-dir", "mountPath": "/csi"} in snap["volumeMounts"], f"{label}: csi-snapshotter mounts the socket")
        expect(snap["image"].startswith("registry.k8s.io/sig-storage/csi-snapshotter:v8."), f"{label}: csi-snapshotter v8 image")
    expect("--worker-threads=4" in container(controller_pod(full), "csi-snapshotter")["args"], "snapshotter extraArgs reach it")
    no_le = controller_pod(render(helm, merged(DEPLOY_VALUES, {"controller": {"leaderElection": False}})))
    expect("--leader-election=false" in container(no_le, "csi-snapshotter")["args"], "snapshotter follows leaderElection off")
    expect("csi-snapshotter" not in [c["name"] for c in controller_pod(off)["containers"]], "no csi-snapshotter when snapshots are off")

    # The VolumeSnapshotClass: this driver's, default, Delete unless told.
    driver = find(default, "CSIDriver")[0]["metadata"]["name"]
    provisioners = {o["provisioner"] for o in find(default, "StorageClass")}
    vscs = find(default, "VolumeSnapshotClass")
    expect(len(vscs) == 1, f"one VolumeSnapshotClass by default, not {len(vscs)}")
    if vscs:
        vsc = vscs[0]
        expect(vsc["apiVersion"] == "snapshot.storage.k8s.io/v1", "VolumeSnapshotClass is snapshot.storage.k8s.io/v1")
        expect(vsc["driver"] == driver and provisioners == {driver},
               f"VolumeSnapshotClass driver {vsc['driver']} = CSIDriver {driver} = StorageClass provisioner {provisioners}")
        expect(vsc["deletionPolicy"] == "Delete", "VolumeSnapshotClass deletionPolicy Delete by default")
        expect(vsc["metadata"].get("annotations", {}).get("snapshot.storage.kubernetes.io/is-default-class") == "true",
               "VolumeSnapshotClass is the default class")
        expect("parameters" not in vsc, "VolumeSnapshotClass has no parameters")
    expect(find(full, "VolumeSnapshotClass")[0]["deletionPolicy"] == "Retain", "deletionPolicy Retain when set")
    other = find(render(helm, merged(DEPLOY_VALUES, {"snapshots": {"volumeSnapshotClass": {"isDefault": False}}})),
                 "VolumeSnapshotClass")[0]
    expect("snapshot.storage.kubernetes.io/is-default-class" not in other["metadata"].get("annotations", {}),
           "no default-class annotation with isDefault false")
    expect(not find(off, "VolumeSnapshotClass"), "no VolumeSnapshotClass when snapshots are off")

    # RBAC: what the sidecar does, for the pod's ServiceAccount.
    for label, docs, le in (("default", default, True), ("all options", full, True),
                            ("no leader election", render(helm, merged(DEPLOY_VALUES, {"controller": {"leaderElection": False}})), False)):
        sa = controller_pod(docs)["serviceAccountName"]
        cluster, local = granted(docs, sa, NAMESPACE)
        gaps = missing_grants(cluster, SNAPSHOTTER_NEEDS + PROVISIONER_SNAPSHOT_NEEDS)
        if le:
            gaps += missing_grants(local, LEASE_NEEDS)
        expect(not gaps, f"{label}: the controller ServiceAccount lacks {gaps}")
    cluster, _ = granted(off, controller_pod(off)["serviceAccountName"], NAMESPACE)
    writes = [r for r in cluster if "snapshot.storage.k8s.io" in r.get("apiGroups", [])
              and set(r["verbs"]) - {"get", "list", "watch"}]
    expect(not writes, f"snapshots off: no writes to snapshot objects granted ({writes})")
    expect(not find(off, "ClusterRole", "-snapshotter") and not find(off, "ClusterRoleBinding", "-snapshotter"),
           "snapshots off: no snapshotter ClusterRole or binding")
    expect(not missing_grants(cluster, PROVISIONER_SNAPSHOT_NEEDS), "snapshots off: the provisioner still reads snapshots")

    # CDI: csi-clone with snapshots on, copy with them off, overrides win.
    def strategies(docs):
        return {o["metadata"]["name"]: o["spec"]["cloneStrategy"] for o in find(docs, "StorageProfile")}
    want = {"rds-csi-ext4": "csi-clone", "rds-csi-block": "csi-clone", "rds-csi-block-rwx": "csi-clone"}
    expect(strategies(profiles_on) == want, f"StorageProfiles csi-clone with snapshots on: {strategies(profiles_on)}")
    expect(set(strategies(off).values()) == {"copy"}, f"StorageProfiles copy with snapshots off: {strategies(off)}")
    expect(strategies(full).get("rds-csi-block-rwx") == "snapshot", "a class's cloneStrategy wins")
    mixed = strategies(render(helm, merged(DEPLOY_VALUES, {"cdi": {"storageProfiles": True, "cloneStrategy": "copy"},
                                                           "storageClasses": {"ext4": {"cloneStrategy": "csi-clone"}}})))
    expect(mixed == {"rds-csi-ext4": "csi-clone", "rds-csi-block": "copy", "rds-csi-block-rwx": "copy"},
           f"cdi.cloneStrategy for every class, a class's own value first: {mixed}")

    # StorageClass parameters pass through.
    params = {o["metadata"]["name"]: o.get("parameters", {}) for o in find(full, "StorageClass")}
    expect(params["rds-csi-block-rwx"].get("volumeLayout") == "subvolume", "volumeLayout reaches the StorageClass")
    expect(params["rds-csi-ext4"].get("copyMethod") == "copy", "copyMethod reaches the StorageClass")

    print(f"  sidecar, VolumeSnapshotClass and snapshotter RBAC follow snapshots.enabled; "
          f"driver {driver}; StorageProfiles {strategies(profiles_on)}")
    return expect.report()


def pod_spec(docs, kind):
    return find(docs, kind)[0]["spec"]["template"]["spec"]


def pod_annotations(docs, kind):
    return find(docs, kind)[0]["spec"]["template"]["metadata"].get("annotations", {})


def flag_values(args, flag):
    return [a.split("=", 1)[1] for a in args if a.startswith(f"--{flag}=")]


def check_backends(helm):
    """backends[]: the ConfigMap with --backends-file, where each pod finds
    it and the keys it names, the flags, the roll-out checksum and the
    backends' StorageClasses."""
    expect = Expect()
    default = render(helm, DEPLOY_VALUES)
    two = render(helm, two_backends())
    three = render(helm, three_backends())

    # Without backends: none of it.
    for kind in ("StatefulSet", "DaemonSet"):
        pod = pod_spec(default, kind)
        args = container(pod, "rds-csi")["args"]
        expect(not [a for a in args if a.startswith(("--backends-file", "--backend-probe-timeout"))],
               f"default render: {kind} has no backend flags")
        expect("backends" not in {v["name"] for v in pod["volumes"]}, f"default render: {kind} has no backends volume")
        expect("checksum/backends" not in pod_annotations(default, kind), f"default render: {kind} has no checksum/backends")
    expect(not find(default, "ConfigMap"), "default render: no ConfigMap")

    # The file: exactly the expected entries, in order.
    def backends_json(docs):
        cms = find(docs, "ConfigMap", "-backends")
        expect(len(cms) == 1 and cms[0]["metadata"]["name"] == f"{RELEASE}-backends",
               f"one ConfigMap {RELEASE}-backends, not {[c['metadata']['name'] for c in cms]}")
        return json.loads(cms[0]["data"]["backends.json"]) if cms else {}

    have = backends_json(three)
    expect(have == WANT_BACKENDS_JSON, f"backends.json of the example plus lab3 is\n{json.dumps(have, indent=1)}")
    want_two = {"backends": WANT_BACKENDS_JSON["backends"][:1]}
    expect(backends_json(two) == want_two, "backends.json of the example holds linux1 alone")

    for label, docs, values in (("example", two, two_backends()), ("example + lab3", three, three_backends())):
        entries = backends_json(docs).get("backends", [])
        ctrl, node = pod_spec(docs, "StatefulSet"), pod_spec(docs, "DaemonSet")
        ctrl_c, node_c = container(ctrl, "rds-csi"), container(node, "rds-csi")
        # Both read the same file, at a path their mount provides.
        for kind, pod, c in (("controller", ctrl, ctrl_c), ("node", node, node_c)):
            files = flag_values(c["args"], "backends-file")
            mount = next((m for m in c["volumeMounts"] if m["name"] == "backends"), {})
            expect(files == [f"{BACKENDS_DIR}/backends.json"], f"{label}: {kind} --backends-file {files}")
            expect(mount.get("mountPath") == BACKENDS_DIR and mount.get("readOnly") is True,
                   f"{label}: {kind} mounts the backends volume read-only at {BACKENDS_DIR}: {mount}")
        expect(flag_values(node_c["args"], "backend-probe-timeout") == ["3s"], f"{label}: node --backend-probe-timeout=3s")
        expect(not flag_values(ctrl_c["args"], "backend-probe-timeout"), f"{label}: the controller has no --backend-probe-timeout")
        # The controller's volume: the ConfigMap's backends.json and each
        # backend's Secret at exactly the key file the entry names.
        vol = next(v for v in ctrl["volumes"] if v["name"] == "backends")
        sources = vol.get("projected", {}).get("sources", [])
        cm = [s["configMap"] for s in sources if "configMap" in s]
        expect(cm == [{"name": f"{RELEASE}-backends", "items": [{"key": "backends.json", "path": "backends.json"}]}],
               f"{label}: the controller's backends volume holds backends.json: {cm}")
        mounted = {f"{BACKENDS_DIR}/{i['path']}": (s["secret"]["name"], i["key"])
                   for s in sources if "secret" in s for i in s["secret"]["items"]}
        want = {e["rds-key-file"]: (b["sshKey"]["secretName"], b["sshKey"].get("secretKey", "id_ed25519"))
                for e, b in zip(entries, values["backends"])}
        expect(mounted == want, f"{label}: Secrets in the controller {mounted}, the file's key files {want}")
        expect(all(e["rds-key-file"].startswith(f"{BACKENDS_DIR}/{e['name']}/") for e in entries),
               f"{label}: key files under {BACKENDS_DIR}/<name>/")
        expect(vol.get("projected", {}).get("defaultMode") == 0o440, f"{label}: backends volume mode 0440")
        # The node plugin: the ConfigMap alone; no Secret in its pod at all.
        node_vol = next(v for v in node["volumes"] if v["name"] == "backends")
        expect(node_vol == {"name": "backends", "configMap": {"name": f"{RELEASE}-backends"}},
               f"{label}: the node's backends volume is the ConfigMap alone: {node_vol}")
        secrets = [v["name"] for v in node["volumes"] if "secret" in v or "projected" in v]
        expect(not secrets and "secret" not in json.dumps(node["volumes"]), f"{label}: no Secret in the node pod: {secrets}")
        # Both pods roll when the file changes.
        sums = {k: pod_annotations(docs, k).get("checksum/backends") for k in ("StatefulSet", "DaemonSet")}
        expect(len(set(sums.values())) == 1 and None not in sums.values(), f"{label}: checksum/backends on both pods {sums}")
    changed = two_backends()
    changed["backends"][0]["nvmet"]["port"] = 4421
    sums = {pod_annotations(d, k).get("checksum/backends") for d in (two, render(helm, changed))
            for k in ("StatefulSet", "DaemonSet")}
    expect(len(sums) == 2, f"checksum/backends changes with the file: {sums}")
    # The SSH key Secret of the default backend stays where it was.
    expect(flag_values(container(pod_spec(three, "StatefulSet"), "rds-csi")["args"], "rds-key-file")
           == ["/etc/rds-csi/ssh/id_ed25519"], "the default backend's key file is unchanged")

    # StorageClasses: the backends' carry backend: <name>, the default
    # backend's carry none; unset fields take the defaults of values.yaml's.
    scs = {o["metadata"]["name"]: o for o in find(three, "StorageClass")}
    backend_of = {n: o.get("parameters", {}).get("backend") for n, o in scs.items()}
    expect(backend_of == {"rds-csi-ext4": None, "rds-csi-block": None, "rds-csi-block-rwx": None,
                          "rds-csi-linux1-ext4": "linux1", "rds-csi-linux1-block": "linux1",
                          "rds-csi-lab3-block-rwx": "lab3"}, f"StorageClasses and their backend: {backend_of}")
    # Only nodes that report the backend reachable get its volumes.
    reach = {n: o.get("allowedTopologies") for n, o in scs.items()}
    expect(all(reach[n] == [{"matchLabelExpressions": [
               {"key": f"rds.csi.srvlab.io/backend-{b}", "values": ["true"]}]}]
               for n, b in backend_of.items() if b)
           and all(reach[n] is None for n, b in backend_of.items() if not b),
           f"backend classes allow only nodes that reach their backend: {reach}")
    ext4 = scs.get("rds-csi-linux1-ext4", {})
    expect(ext4.get("parameters") == {"backend": "linux1", "csi.storage.k8s.io/fstype": "ext4"}
           and ext4.get("reclaimPolicy") == "Delete" and ext4.get("volumeBindingMode") == "WaitForFirstConsumer"
           and ext4.get("allowVolumeExpansion") is True and ext4.get("provisioner") == "rds.csi.srvlab.io",
           f"a backend class with the defaults: {ext4}")
    rwx = scs.get("rds-csi-lab3-block-rwx", {})
    expect((rwx.get("reclaimPolicy"), rwx.get("volumeBindingMode"), rwx.get("allowVolumeExpansion"))
           == ("Retain", "Immediate", False), f"a backend class's own settings win: {rwx}")
    profiles = {o["metadata"]["name"]: o["spec"] for o in
                find(render(helm, merged(three_backends(), {"cdi": {"storageProfiles": True}})), "StorageProfile")}
    expect(profiles.get("rds-csi-lab3-block-rwx") == {"cloneStrategy": "copy", "claimPropertySets": [
        {"accessModes": ["ReadWriteMany"], "volumeMode": "Block"}]}, f"a backend class's StorageProfile: {profiles}")
    expect(set(profiles) == set(scs), f"one StorageProfile per StorageClass: {sorted(profiles)}")

    # What the schema cannot see, the render refuses.
    lab2 = merged(BACKEND_OK, {})
    for label, over, why in [
        ("two backends named lab2", {"backends": [lab2, lab2]}, "named twice"),
        ("a backend named as rdsName", {"rdsName": "lab2", "backends": [lab2]}, "rdsName"),
        ("a backend class named as a default class", {"backends": [merged(lab2, {"storageClasses": [{"name": "rds-csi-ext4"}]})]},
         "defined twice"),
    ]:
        try:
            render(helm, merged(DEPLOY_VALUES, over))
            expect(False, f"rendered {label}")
        except helm.HelmError as e:
            expect(why in str(e), f"{label}: refused, but not for {why!r}: {e}")
            print(f"  refused: {label}: {str(e).strip().splitlines()[-1].strip()}")

    print(f"  backends.json entries {[e['name'] for e in have.get('backends', [])]}; "
          f"controller mounts {len(WANT_BACKENDS_JSON['backends'])} backend Secrets, node none; "
          f"StorageClasses {sorted(scs)}")
    return expect.report()


def check_alerts(helm):
    import yaml

    ok = True
    doc = open(RULES_DOC).read()
    if open(RULES_CHART).read() != doc:
        ok = False
        print(f"  {os.path.relpath(RULES_CHART, ROOT)} differs from {os.path.relpath(RULES_DOC, ROOT)}; fix with:")
        print(f"    cp {os.path.relpath(RULES_DOC, ROOT)} {os.path.relpath(RULES_CHART, ROOT)}")
    rule = find(render(helm, ALL_OPTIONS), "PrometheusRule")[0]
    if rule["spec"] != yaml.safe_load(doc):
        ok = False
        print("  the rendered PrometheusRule spec differs from the docs rules")
    else:
        print(f"  PrometheusRule carries {sum(len(g['rules']) for g in rule['spec']['groups'])} rules, same as the docs")
    return ok


OPEN_CRDS = [
    ("monitoring.coreos.com", "servicemonitors", "ServiceMonitor", "Namespaced"),
    ("monitoring.coreos.com", "prometheusrules", "PrometheusRule", "Namespaced"),
    ("cdi.kubevirt.io", "storageprofiles", "StorageProfile", "Cluster"),
    # For deploy/examples/kubevirt-vm.yaml.
    ("kubevirt.io", "virtualmachines", "VirtualMachine", "Namespaced"),
]
# Only without the real VolumeSnapshot CRDs ($RDS_CSI_SNAPSHOT_CRDS).
SNAPSHOT_STAND_IN = ("snapshot.storage.k8s.io", "volumesnapshotclasses", "VolumeSnapshotClass", "Cluster")
SNAPSHOT_CRDS_ENV = "RDS_CSI_SNAPSHOT_CRDS"


def snapshot_crd_files():
    """The real VolumeSnapshot CRDs: the YAML files in $RDS_CSI_SNAPSHOT_CRDS
    (external-snapshotter's client/config/crd), or None when it is unset."""
    d = os.environ.get(SNAPSHOT_CRDS_ENV)
    if not d:
        return None
    files = sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".yaml", ".yml")))
    if not any(open(f).read().count("name: volumesnapshotclasses.snapshot.storage.k8s.io") for f in files):
        raise RuntimeError(f"${SNAPSHOT_CRDS_ENV}={d} holds no volumesnapshotclasses.snapshot.storage.k8s.io CRD")
    return files


def open_crds(crds):
    docs = []
    for group, plural, kind, scope in crds:
        version = "v1beta1" if group == "cdi.kubevirt.io" else "v1"
        # The API server protects *.k8s.io groups: a CRD there needs this
        # annotation, and a value starting "unapproved" is allowed.
        approved = {"api-approved.kubernetes.io": "unapproved, test stand-in"} if group.endswith(".k8s.io") else {}
        docs.append(textwrap.dedent(f"""\
            apiVersion: apiextensions.k8s.io/v1
            kind: CustomResourceDefinition
            metadata:
              name: {plural}.{group}
              annotations: {json.dumps(approved)}
            spec:
              group: {group}
              scope: {scope}
              names: {{plural: {plural}, singular: {kind.lower()}, kind: {kind}, listKind: {kind}List}}
              versions:
                - name: {version}
                  served: true
                  storage: true
                  schema:
                    openAPIV3Schema:
                      type: object
                      x-kubernetes-preserve-unknown-fields: true
            """))
    return "---\n".join(docs)


def check_dry_run(helm):
    kubectl = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not kubectl:
        print("  kubectl not found (PATH or $KUBECTL)")
        return False
    try:
        snapshot_crds = snapshot_crd_files()
    except (OSError, RuntimeError) as e:
        print(f"  {e}")
        return False
    d = tempfile.mkdtemp(prefix="rds-csi-chart.")
    script = os.path.join(ROOT, "hack", "kube-apiserver.sh")
    try:
        # hack/kube-apiserver.sh runs the API server with
        # --allow-privileged=true, as real clusters do (the node plugin is
        # privileged).
        up = subprocess.run([script, "up", os.path.join(d, "server")], capture_output=True, text=True)
        if up.returncode != 0:
            print(f"  kube-apiserver.sh up failed ({up.returncode}): {up.stderr.strip()}")
            return False
        env = dict(os.environ, KUBECONFIG=os.path.join(d, "server", "kubeconfig"))

        def kc(*args, stdin=None):
            return subprocess.run([kubectl, *args], input=stdin, capture_output=True, text=True, env=env)

        stand_ins = OPEN_CRDS + ([] if snapshot_crds else [SNAPSHOT_STAND_IN])
        r = kc("apply", "-f", "-", stdin=open_crds(stand_ins))
        if r.returncode != 0:
            print(f"  stand-in CRDs refused: {r.stderr.strip()}")
            return False
        waits = [f"crd/{p}.{g}" for g, p, _, _ in stand_ins]
        if snapshot_crds:
            # Applied before anything that uses them, as on a cluster that
            # has snapshots.
            r = kc("apply", *[a for f in snapshot_crds for a in ("-f", f)])
            if r.returncode != 0:
                print(f"  the VolumeSnapshot CRDs of ${SNAPSHOT_CRDS_ENV} were refused: {r.stderr.strip()}")
                return False
            waits += [l.split()[0] for l in r.stdout.splitlines() if l.startswith("customresourcedefinition")]
            print(f"  VolumeSnapshotClass checked against the real CRDs in ${SNAPSHOT_CRDS_ENV} "
                  f"({len(snapshot_crds)} files)")
        else:
            print(f"  ${SNAPSHOT_CRDS_ENV} not set: VolumeSnapshotClass checked against an open stand-in CRD "
                  "(only apiVersion/kind/metadata validated)")
        r = kc("wait", "--for=condition=Established", "--timeout=60s", *waits)
        if r.returncode != 0:
            print(f"  CRDs not established: {r.stderr.strip()}")
            return False
        ok = True
        if snapshot_crds:
            # The real schema is in force: a deletion policy it does not know
            # is refused.
            bad = manifest([d for d in render(helm, DEPLOY_VALUES) if d[2]["kind"] == "VolumeSnapshotClass"])
            r = kc("apply", "--dry-run=server", "-f", "-", stdin=bad.replace("deletionPolicy: Delete", "deletionPolicy: Keep"))
            if r.returncode == 0:
                ok = False
                print("  the VolumeSnapshot CRDs accepted deletionPolicy Keep: their schema is not in force")
            else:
                print("  the real VolumeSnapshotClass schema refuses deletionPolicy Keep")
        for label, values in [("default values", DEPLOY_VALUES), ("all options", ALL_OPTIONS),
                              ("snapshots off", SNAPSHOTS_OFF), ("examples/two-backends.yaml", two_backends()),
                              ("two backends and lab3, CDI on", merged(three_backends(), {"cdi": {"storageProfiles": True}}))]:
            docs = render(helm, values)
            r = kc("apply", "--dry-run=server", "-f", "-", stdin=manifest(docs))
            accepted = [l for l in r.stdout.splitlines() if l.strip()]
            if r.returncode != 0 or len(accepted) != len(docs):
                ok = False
                print(f"  {label}: refused (rc {r.returncode}, {len(accepted)}/{len(docs)} accepted):")
                print(textwrap.indent(r.stderr.strip(), "    "))
            else:
                print(f"  {label}: {len(docs)} objects accepted by the server")
        # deploy/ too, byte for byte what users apply.
        r = kc("apply", "--dry-run=server", "-f", DEPLOY)
        ok = said_yes(r, "deploy/rds-csi.yaml refused", "deploy/rds-csi.yaml accepted by the server") and ok
        examples = os.path.join(ROOT, "deploy", "examples")
        for f in sorted(os.listdir(examples)):
            path = os.path.join(examples, f)
            r = kc("apply", "--dry-run=server", "-f", path)
            mode = "server"
            if "kubevirt.io/" in open(path).read():
                mode = "server; VirtualMachine against an open stand-in CRD"
            ok = said_yes(r, f"deploy/examples/{f} refused ({mode})", f"deploy/examples/{f} accepted ({mode})") and ok
        return ok
    finally:
        subprocess.run([script, "down", os.path.join(d, "server")], capture_output=True)
        shutil.rmtree(d, ignore_errors=True)


def check_flags(helm):
    """Every flag the chart passes exists in src/cli.rs, and every flag of
    `controller` and `node` there can be set from values."""
    cli = cli_flags()
    want = {
        "controller": cli.get("LogArgs", set()) | cli.get("CommonArgs", set()) | cli.get("ControllerArgs", set()),
        "node": cli.get("LogArgs", set()) | cli.get("CommonArgs", set()) | cli.get("NodeArgs", set()),
    }
    lab = merged(ALL_OPTIONS, {"rds": {"hostKeyFingerprint": "", "insecureSkipHostKeyCheck": True},
                               "controller": {"standalone": True, "kubeconfig": "/etc/kubeconfig"},
                               "node": {"kubeconfig": "/etc/kubeconfig"}})
    have = {"controller": set(), "node": set()}
    for values in (ALL_OPTIONS, lab, NVMET, three_backends()):
        docs = render(helm, values)
        for kind, sub in (("StatefulSet", "controller"), ("DaemonSet", "node")):
            args = container(find(docs, kind)[0]["spec"]["template"]["spec"], "rds-csi")["args"]
            if args[0] != sub:
                print(f"  {kind} runs {args[0]!r}, not {sub!r}")
                return False
            have[sub] |= {a[2:].split("=", 1)[0] for a in args[1:]}
    ok = True
    for sub in ("controller", "node"):
        unknown = sorted(have[sub] - want[sub])
        unset = sorted(want[sub] - have[sub])
        if unknown:
            ok = False
            print(f"  {sub}: the chart passes flags src/cli.rs does not define: {unknown}")
        if unset:
            ok = False
            print(f"  {sub}: flags in src/cli.rs that no value sets: {unset}")
        if not unknown and not unset:
            print(f"  {sub}: all {len(want[sub])} flags of src/cli.rs map to values, no others")
    return ok


def check_package(helm):
    return check_release(helm, CHART, lambda v: render(helm, v), lambda a, v: render(helm, v, a),
                         DEPLOY_VALUES, find, container)


def check_binary(helm):
    """The rendered args parse with the real binary ($RDS_CSI_BIN): clap
    reads every argument, value parsers included, before `--help` exits."""
    binary = os.environ["RDS_CSI_BIN"]
    if not os.access(binary, os.X_OK):
        print(f"  {binary} is not an executable (build it first: cargo build)")
        return False
    docs = render(helm, ALL_OPTIONS)
    ok = True
    for kind in ("StatefulSet", "DaemonSet"):
        spec = find(docs, kind)[0]["spec"]["template"]["spec"]
        args = [a.replace("$(NODE_ID)", "node-a") for a in container(spec, "rds-csi")["args"]]
        r = subprocess.run([binary, *args, "--help"], capture_output=True, text=True)
        refused = f"{kind}: `rds-csi {args[0]} ...` refused its args"
        ok = said_yes(r, refused, f"{kind}: `rds-csi {args[0]}` accepts all {len(args) - 1} rendered args") and ok
    return check_binary_backends(helm, binary) and ok


def with_flags(args, **flags):
    """args with --flag=value for each flag (underscores as dashes):
    replaced where given, appended where not (clap refuses a flag twice)."""
    out = list(args)
    for name, value in flags.items():
        flag = "--" + name.replace("_", "-")
        at = [i for i, a in enumerate(out) if a == flag or a.startswith(flag + "=")]
        arg = flag if value is True else f"{flag}={value}"
        if at:
            out[at[0]] = arg
        else:
            out.append(arg)
    return out


def check_binary_backends(helm, binary):
    """The binary reads the rendered backends.json (the example plus lab3,
    so every key of the file), run as the pods run it, up to where the file
    has been used:
      node: reads the file, probes each backend's NVMe/TCP portal (it logs
        each backend reachable or unreachable), then stops at the host NQN
        file, which is left missing here;
      controller (--standalone, keys rewritten to temporary keys): builds
        every backend from the file, loads each key, logs "backend
        configured" for each and starts serving; stopped with SIGTERM.
    Controls: the file as rendered makes the controller fail on the first
    backend's key at the path the chart mounts it, so that is the path the
    binary reads; a misspelt key in the file makes both refuse it."""
    import re

    if not shutil.which("ssh-keygen"):
        print("  ssh-keygen not found: needed for the backends' test keys")
        return False
    expect = Expect()
    docs = render(helm, three_backends())
    rendered = find(docs, "ConfigMap", "-backends")[0]["data"]["backends.json"]
    d = tempfile.mkdtemp(prefix="rds-csi-backends.")
    try:
        def write(name, text):
            path = os.path.join(d, name)
            with open(path, "w") as f:
                f.write(text)
            return path

        def key(name):
            path = os.path.join(d, f"key-{name}")
            if os.path.exists(path):
                return path
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "chart-check", "-f", path],
                           check=True, capture_output=True)
            return path

        data = json.loads(rendered)
        names = [e["name"] for e in data["backends"]]
        for e in data["backends"]:
            e["rds-key-file"] = key(e["name"])
        good = write("backends.json", json.dumps(data))
        data["backends"][0]["rds-adress"] = data["backends"][0]["rds-address"]
        misspelt = write("misspelt.json", json.dumps(data))
        as_rendered = write("as-rendered.json", rendered)

        def node(file):
            args = [a.replace("$(NODE_ID)", "node-a") for a in container(pod_spec(docs, "DaemonSet"), "rds-csi")["args"]]
            args = with_flags(args, backends_file=file, backend_probe_timeout="300ms", metrics_address="off",
                              host_nqn_file=os.path.join(d, "missing-hostnqn"),
                              host_id_file=os.path.join(d, "missing-hostid"),
                              staging_root=d, state_dir=os.path.join(d, "state"))
            return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60)

        def plain(text):
            """The log without its colours (the plain format has them
            even when stderr is not a terminal)."""
            return re.sub(r"\x1b\[[0-9;]*m", "", text)

        r = node(good)
        probed = {n: [l for l in plain(r.stderr).splitlines() if "reachable" in l and re.search(rf"\bbackend={n}\b", l)]
                  for n in names}
        expect(r.returncode != 0 and "missing-hostnqn" in r.stderr and "--backends-file" not in r.stderr,
               f"node: reads the file and stops at the missing host NQN file (rc {r.returncode}): {r.stderr.strip()[-600:]}")
        expect(all(probed.values()), f"node: logs each backend reachable or unreachable: {probed}")
        if all(probed.values()):
            print(f"  node: read backends.json, probed {', '.join(names)}, stopped at the missing host NQN file")
        r = node(misspelt)
        expect(r.returncode != 0 and "--backends-file" in r.stderr and "rds-adress" in r.stderr,
               f"node: refuses a misspelt key (rc {r.returncode}): {r.stderr.strip()[-400:]}")

        def controller(file, wait_for_start):
            args = container(pod_spec(docs, "StatefulSet"), "rds-csi")["args"]
            args = with_flags(args, backends_file=file, rds_key_file=key("default"), metrics_address="off",
                              endpoint=f"unix://{d}/csi.sock", standalone=True)
            log_path = os.path.join(d, "controller.log")
            with open(log_path, "w") as log:
                p = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=log, text=True)
            try:
                for _ in range(300):
                    if p.poll() is not None or (wait_for_start and "controller started" in open(log_path).read()):
                        break
                    time.sleep(0.1)
            finally:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                        p.wait()
            return p.returncode, open(log_path).read()

        rc, log = controller(good, True)
        configured = {n: [l for l in plain(log).splitlines() if "backend configured" in l and re.search(rf"\bbackend={n}\b", l)]
                      for n in ["default", *names]}
        expect("controller started" in log, f"controller: starts with the file (rc {rc}): {log.strip()[-800:]}")
        expect(all(configured.values()), f"controller: configures every backend: {configured}")
        if "controller started" in log and all(configured.values()):
            print(f"  controller: started with backends default, {', '.join(names)} from backends.json (keys rewritten)")
        rc, log = controller(as_rendered, False)
        want = f"{BACKENDS_DIR}/{names[0]}/"
        expect(rc != 0 and f"backend {names[0]}" in log and want in log,
               f"controller: with the file as rendered, fails on {want} (rc {rc}): {log.strip()[-400:]}")
        rc, log = controller(misspelt, False)
        expect(rc != 0 and "--backends-file" in log and "rds-adress" in log,
               f"controller: refuses a misspelt key (rc {rc}): {log.strip()[-400:]}")
        # Its error lists the keys the binary knows: the chart sets each.
        known = set(re.findall(r"`([a-z-]+)`", plain(log).partition("expected one of")[2]))
        chart = {k for e in WANT_BACKENDS_JSON["backends"] for k in e}
        expect(known and known == chart, f"the binary's file keys {sorted(known)}, the chart's {sorted(chart)}")
        if not expect.problems:
            print(f"  controls: the rendered key path {want}... is the one read; a misspelt key is refused by both; "
                  f"the chart sets all {len(known)} keys the binary knows")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    return expect.report()


def said_yes(r, refused, accepted):
    """Prints what a command said of one item, its stderr after `refused`;
    True when it exited 0."""
    if r.returncode != 0:
        print(f"  {refused}: {r.stderr.strip()}")
        return False
    print(f"  {accepted}")
    return True


def check_deploy(helm):
    want = deploy_text(helm)
    try:
        have = open(DEPLOY).read()
    except FileNotFoundError:
        have = ""
    if have == want:
        return True
    diff = difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                "deploy/rds-csi.yaml (committed)", "deploy/rds-csi.yaml (chart renders)")
    sys.stdout.writelines(list(diff)[:200])
    print(f"\n  deploy/rds-csi.yaml is out of date; regenerate with: {REGENERATE}")
    return False


def readme_blocks(lang):
    """The fenced code blocks of the README's install section."""
    with open(README) as f:
        text = f.read()
    section = text.split("## Installing on a cluster", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for part in section.split("```" + lang + "\n")[1:]:
        blocks.append(textwrap.dedent(part.split("```", 1)[0]))
    return blocks


def check_readme(helm):
    """Follows the README's install section as a new user would."""
    import re

    import yaml

    problems = []
    yamls = [yaml.safe_load(b) for b in readme_blocks("yaml")]
    values = next((y for y in yamls if isinstance(y, dict) and "rds" in y), None)
    pvc = next((y for y in yamls if isinstance(y, dict) and y.get("kind") == "PersistentVolumeClaim"), None)
    if values is None or pvc is None:
        print("  the install section lost its values file or its PVC")
        return False
    # The user pastes their fingerprint where the README has "SHA256:...".
    if values["rds"].get("hostKeyFingerprint") == "SHA256:...":
        values["rds"]["hostKeyFingerprint"] = DEPLOY_VALUES["rds"]["hostKeyFingerprint"]
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    docs = render(helm, values)
    args = container(find(docs, "StatefulSet")[0]["spec"]["template"]["spec"], "rds-csi")["args"]
    wanted = {
        "--rds-address": values["rds"]["address"],
        "--rds-host-key": values["rds"]["hostKeyFingerprint"],
        "--nvme-address": values["controller"]["nvmeAddress"],
        "--volume-path": values["controller"]["volumePath"],
    }
    for flag, value in wanted.items():
        if f"{flag}={value}" not in [a.replace('"', "") for a in args]:
            problems.append(f"the values file's {value} did not reach {flag}")
    shell = "\n".join(readme_blocks("sh"))
    # Step 1's Secret is the one the controller mounts.
    vols = find(docs, "StatefulSet")[0]["spec"]["template"]["spec"]["volumes"]
    secret = next(v["secret"] for v in vols if "secret" in v)
    if f"secret generic {secret['secretName']}" not in shell or f"--from-file={secret['items'][0]['key']}=" not in shell:
        problems.append(f"step 1 does not create Secret {secret['secretName']} with key {secret['items'][0]['key']}")
    # The StorageClasses named, and the PVC's, exist with the modes said.
    classes = {o["metadata"]["name"] for o in find(docs, "StorageClass")}
    with open(README) as f:
        text = f.read()
    named = {w.strip("`:,.") for w in text.split() if w.strip("`:,.").startswith("rds-csi-")}
    for sc in sorted(named & {"rds-csi-ext4", "rds-csi-block", "rds-csi-block-rwx"} | {pvc["spec"]["storageClassName"]}):
        if sc not in classes:
            problems.append(f"StorageClass {sc} is named in the README but the chart has no such class")
    # The VolumeSnapshotClass it names is the chart's, and the check for the
    # cluster's snapshot CRDs names the three the chart and the sidecar use.
    vsc = {o["metadata"]["name"] for o in find(docs, "VolumeSnapshotClass")}
    for name in sorted(n for n in named if "snap" in n):
        if name not in vsc:
            problems.append(f"VolumeSnapshotClass {name} is named in the README but the chart's is {sorted(vsc)}")
    crds = set(re.findall(r"\b([a-z]+\.snapshot\.storage\.k8s\.io)\b", shell))
    want_crds = {f"{p}.snapshot.storage.k8s.io" for p in ("volumesnapshots", "volumesnapshotcontents", "volumesnapshotclasses")}
    if crds != want_crds:
        problems.append(f"the snapshot CRD check names {sorted(crds)}, not {sorted(want_crds)}")
    files = snapshot_crd_files()
    if files:
        real = set(re.findall(r"^  name: (\S+)$", "".join(open(f).read() for f in files), re.M))
        if want_crds - real:
            problems.append(f"${SNAPSHOT_CRDS_ENV} has no CRD {sorted(want_crds - real)}")
    for key in re.findall(r"--set (snapshots\.\w+)=", text):
        if key.split(".")[1] not in yaml.safe_load(open(os.path.join(CHART, "values.yaml")))["snapshots"]:
            problems.append(f"the README sets {key}, which values.yaml does not have")
    print(f"  values file -> {', '.join(f'{k}={v}' for k, v in wanted.items())}")
    print(f"  Secret {secret['secretName']}/{secret['items'][0]['key']}; StorageClasses {sorted(classes)}; "
          f"VolumeSnapshotClass {sorted(vsc)}; CRDs checked: {len(crds)}")
    for p in problems:
        print(f"  {p}")
    return not problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write", action="store_true", help="regenerate deploy/rds-csi.yaml and exit")
    ap.add_argument("--no-server", action="store_true", help="skip the server-side dry run")
    args = ap.parse_args()

    ensure_modules()
    import helm_python as helm

    if args.write:
        text = deploy_text(helm)
        os.makedirs(os.path.dirname(DEPLOY), exist_ok=True)
        with open(DEPLOY, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(DEPLOY, ROOT)}")
        return 0

    print(f"Helm SDK {helm.helm_sdk_version()} (libhelm_c {helm.helm_c_version()})")
    checks = [
        ("chart loads and lints (strict)", check_lint),
        ("schema accepts good values and rejects bad ones", check_schema),
        ("renders; invariants hold", check_render),
        ("snapshots: sidecar, VolumeSnapshotClass, RBAC and CDI clone strategy", check_snapshots),
        ("backends: ConfigMap, key mounts (controller only), flags, checksum, StorageClasses", check_backends),
        ("values map one to one onto the flags in src/cli.rs", check_flags),
        ("alert rules identical to docs/alerts/rds-csi.rules.yml", check_alerts),
        ("deploy/rds-csi.yaml is what the chart renders", check_deploy),
        ("README install section matches the chart", check_readme),
        ("versions follow the crate; default image is hack/image.sh's; helm package", check_package),
    ]
    if os.environ.get("RDS_CSI_BIN"):
        checks.append(("rendered args parse with $RDS_CSI_BIN", check_binary))
    else:
        print("(set RDS_CSI_BIN to also check the rendered args with the built binary)")
    if not args.no_server:
        checks.append(("server-side dry run against kube-apiserver", check_dry_run))
    results = []
    for name, fn in checks:
        print(f"-- {name}")
        try:
            ok = fn(helm)
        except Exception:  # a crash is a failure of that check, not of the run
            traceback.print_exc()
            ok = False
        results.append((name, ok))
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    print()
    for name, ok in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(ok for _, ok in results) else 1


if __name__ == "__main__":
    sys.exit(main())
