#!/usr/bin/env python3
"""A whole Kubernetes control plane for rds-csi on loopback, without kubelets.

    hack/local-cluster.sh up DIR     start everything; prints DIR/cluster.env
    hack/local-cluster.sh down DIR   stop everything and remove DIR
    hack/local-cluster.sh stop-controller DIR
                                     stop the controller Pod's processes (the
                                     rds-csi controller and its sidecars), as
                                     deleting the StatefulSet's Pod would
    hack/local-cluster.sh start-controller DIR [--flag=value | --flag ...]
                                     start them again as `up` did, the flags
                                     given replacing or adding to the
                                     controller's (as a changed chart would);
                                     a flag without a value is dropped

What runs (each a process with its log in DIR/<name>.log):
  etcd + kube-apiserver   hack/kube-apiserver.sh (admin kubeconfig: DIR/kubeconfig)
  kube-controller-manager the PV binder, the attach/detach controller (with its
                          Multi-Attach rule), the service-account token
                          controller; node IPAM and node lifecycle are off
                          since no kubelet reports
  rds-csi sim             the RouterOS simulator over SSH, disks as sparse
                          files in DIR/sim-data
  rds-csi controller      and the csi-provisioner, csi-attacher,
  + the CSI sidecars      csi-resizer and (when the chart has it)
                          csi-snapshotter sidecars, each with the arguments
                          the chart's controller StatefulSet gives it
                          (deploy/rds-csi.yaml, rendered from the chart with
                          default values), with leader election on, all under
                          the chart's controller ServiceAccount token: the
                          chart's RBAC is what they get, nothing more.
  snapshot-controller     the cluster's VolumeSnapshot controller, with the
                          VolumeSnapshot CRDs from $RDS_CSI_SNAPSHOT_CRDS
                          (a directory of CRD YAMLs), when the chart has
                          csi-snapshotter: as in a real cluster, these are
                          the cluster's, not the chart's.

Objects: the chart's ServiceAccounts, RBAC, CSIDriver and StorageClasses
(from deploy/rds-csi.yaml); KubeVirt's VirtualMachineInstance,
VirtualMachineInstanceMigration and VirtualMachine CRDs from
crates/testkit/kubevirt-crds.json, the file the Rust tests apply too (open
schemas; KubeVirt itself does not run); Nodes node-a, node-b, node-c with the annotation that hands them to
the attach/detach controller, the topology label, a Ready condition, and
CSINode objects listing the driver, as node-driver-registrar would.

Tools come from PATH or these variables: KUBE_APISERVER, ETCD,
KUBE_CONTROLLER_MANAGER, KUBECTL, CSI_PROVISIONER, CSI_ATTACHER,
CSI_RESIZER, CSI_SNAPSHOTTER, SNAPSHOT_CONTROLLER; the driver from RDS_CSI_BIN (default target/debug/rds-csi,
built if missing). Exit code 3: a tool is missing.

Why Python and not Rust (in the test kit): this script is process
orchestration (start, wait for, stop a dozen programs and write their
kubeconfigs) driven by deploy/rds-csi.yaml, which it reads with PyYAML like
hack/chart-check.py does; people run it by hand to get a cluster without
building the test code first, and hack/test.sh already needs python3-yaml.
What it shares with the Rust tests is data, not code: the KubeVirt CRDs
(crates/testkit/kubevirt-crds.json) and the cluster.json it writes, which
tests/e2e reads.
"""

import base64
import datetime
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DRIVER = "rds.csi.srvlab.io"
TOPOLOGY_KEY = "rds.csi.srvlab.io/rds"
RDS_NAME = "default"
NODES = ["node-a", "node-b", "node-c"]
NAMESPACE = "kube-system"
CONTROLLER_SA = "rds-csi-controller"
# Started after the API server, stopped in reverse order.
PROCESSES = [
    "kube-controller-manager",
    "sim",
    "rds-csi-controller",
    "csi-provisioner",
    "csi-attacher",
    "csi-resizer",
    "snapshot-controller",
    "csi-snapshotter",
]
# Objects of deploy/rds-csi.yaml applied to the cluster: everything but the
# workloads (no kubelet would run them) and their Services.
APPLIED_KINDS = {
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "CSIDriver",
    "StorageClass",
    "VolumeSnapshotClass",
}


class Missing(Exception):
    pass


def log(msg):
    print(f"local-cluster: {msg}", file=sys.stderr, flush=True)


def tool(env, name):
    path = os.environ.get(env) or shutil.which(name)
    if not path:
        raise Missing(f"{name} not found (set {env} or PATH)")
    return path


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Api:
    """Just enough of a Kubernetes client for set-up: JSON over HTTPS."""

    def __init__(self, kubeconfig):
        with open(kubeconfig) as f:
            kc = yaml.safe_load(f)
        self.server = kc["clusters"][0]["cluster"]["server"]
        self.token = kc["users"][0]["user"]["token"]
        self.ctx = ssl.create_default_context(
            cafile=kc["clusters"][0]["cluster"]["certificate-authority"]
        )

    def call(self, method, path, body=None, content_type="application/json"):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.server + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", content_type)
        with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
            return json.loads(resp.read() or b"{}")

    def create(self, path, body):
        try:
            return self.call("POST", path, body)
        except urllib.error.HTTPError as e:
            if e.code != 409:
                raise RuntimeError(f"POST {path}: {e.code} {e.read().decode()[:300]}")
            return None


def kubeconfig_text(server, ca, token, user):
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": ca}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": user}}],
            "current-context": "local",
        }
    )


def start(d, name, argv, env=None):
    """Starts a process in its own session, logging to DIR/name.log."""
    logf = open(os.path.join(d, f"{name}.log"), "ab")
    p = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=open(os.path.join(d, f"{name}.out"), "wb") if name == "sim" else logf,
        stderr=logf,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )
    with open(os.path.join(d, f"{name}.pid"), "w") as f:
        f.write(str(p.pid))
    return p


def wait_for(what, check, timeout, proc=None, logname=None, d=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = ""
    if logname and d:
        try:
            with open(os.path.join(d, f"{logname}.log"), errors="replace") as f:
                tail = "".join(f.readlines()[-20:])
        except OSError:
            pass
    raise RuntimeError(f"{what} did not happen within {timeout}s\n{tail}")


def chart_objects():
    with open(os.path.join(ROOT, "deploy", "rds-csi.yaml")) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    applied = [d for d in docs if d["kind"] in APPLIED_KINDS]
    containers = {c["name"]: c for c in sts["spec"]["template"]["spec"]["containers"]}
    return applied, containers


def container_args(container, sock, overrides):
    """The chart's arguments for a container, socket path and the listed
    flags replaced (a value of None drops the flag)."""
    out = []
    seen = set()
    for a in container.get("args", []):
        a = a.replace("/csi/csi.sock", sock)
        flag = a.split("=", 1)[0]
        if flag in overrides:
            seen.add(flag)
            if overrides[flag] is not None:
                out.append(f"{flag}={overrides[flag]}")
            continue
        out.append(a)
    for flag, value in overrides.items():
        if flag not in seen and value is not None:
            out.append(f"{flag}={value}")
    return out


# KubeVirt's CRDs as the tests stand them in (open schemas; the VMIM's and
# the VM's status are subresources, the VMI's is not): one definition, a v1
# List shared with the Rust tests (testkit::kubevirt).
KUBEVIRT_CRDS_FILE = os.path.join(ROOT, "crates", "testkit", "kubevirt-crds.json")


def kubevirt_crds():
    with open(KUBEVIRT_CRDS_FILE) as f:
        return json.load(f)["items"]


def snapshot_crds():
    """The VolumeSnapshot CRDs: every YAML document in $RDS_CSI_SNAPSHOT_CRDS."""
    d = os.environ.get("RDS_CSI_SNAPSHOT_CRDS")
    if not d or not os.path.isdir(d):
        raise Missing("the VolumeSnapshot CRDs not found (set RDS_CSI_SNAPSHOT_CRDS to their directory)")
    out = []
    for name in sorted(os.listdir(d)):
        if name.endswith((".yaml", ".yml")):
            with open(os.path.join(d, name)) as f:
                out.extend(doc for doc in yaml.safe_load_all(f) if doc and doc.get("kind") == "CustomResourceDefinition")
    if not out:
        raise Missing(f"no CustomResourceDefinition in {d} (RDS_CSI_SNAPSHOT_CRDS)")
    return out


def up(d):
    kube_cm = tool("KUBE_CONTROLLER_MANAGER", "kube-controller-manager")
    kubectl = tool("KUBECTL", "kubectl")
    sidecars = {
        "csi-provisioner": tool("CSI_PROVISIONER", "csi-provisioner"),
        "csi-attacher": tool("CSI_ATTACHER", "csi-attacher"),
        "csi-resizer": tool("CSI_RESIZER", "csi-resizer"),
    }
    applied, containers = chart_objects()
    # Snapshots: the chart's csi-snapshotter, the cluster's controller and CRDs.
    snapshots = "csi-snapshotter" in containers
    if snapshots:
        sidecars["csi-snapshotter"] = tool("CSI_SNAPSHOTTER", "csi-snapshotter")
        snapshot_controller = tool("SNAPSHOT_CONTROLLER", "snapshot-controller")
        crds_snapshot = snapshot_crds()
    else:
        crds_snapshot = []
    tool("KUBE_APISERVER", "kube-apiserver")
    tool("ETCD", "etcd")
    binary = os.environ.get("RDS_CSI_BIN") or os.path.join(ROOT, "target", "debug", "rds-csi")
    if not os.environ.get("RDS_CSI_BIN") and not os.path.exists(binary):
        subprocess.run(["cargo", "build", "--quiet", "--bin", "rds-csi"], cwd=ROOT, check=True)

    t0 = time.monotonic()
    os.makedirs(d, exist_ok=True)
    r = subprocess.run(
        [os.path.join(ROOT, "hack", "kube-apiserver.sh"), "up", d], stdout=subprocess.PIPE, text=True
    )
    if r.returncode != 0:
        raise RuntimeError("kube-apiserver did not start")
    admin = os.path.join(d, "kubeconfig")
    api = Api(admin)
    log(f"kube-apiserver ready at {api.server}")

    start(
        d,
        "kube-controller-manager",
        [
            kube_cm,
            f"--kubeconfig={admin}",
            "--leader-elect=false",
            f"--service-account-private-key-file={d}/sa.key",
            f"--root-ca-file={d}/ca.crt",
            "--use-service-account-credentials=false",
            "--controllers=*,-nodeipam,-nodelifecycle",
            "--port=0",
            "--secure-port=0",
        ],
    )

    crds = kubevirt_crds() + crds_snapshot
    # CRDs first: the VolumeSnapshotClass needs its CRD established.
    with open(os.path.join(d, "crds.yaml"), "w") as f:
        yaml.safe_dump_all(crds, f)
    subprocess.run(
        [kubectl, f"--kubeconfig={admin}", "apply", "--server-side", "-f", os.path.join(d, "crds.yaml")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    for crd in crds:
        subprocess.run(
            [kubectl, f"--kubeconfig={admin}", "wait", "--for=condition=Established",
             f"crd/{crd['metadata']['name']}", "--timeout=30s"],
            check=True, stdout=subprocess.DEVNULL,
        )
    with open(os.path.join(d, "objects.yaml"), "w") as f:
        yaml.safe_dump_all(applied, f)
    subprocess.run(
        [kubectl, f"--kubeconfig={admin}", "apply", "-f", os.path.join(d, "objects.yaml")],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    if snapshots:
        start(d, "snapshot-controller",
              [snapshot_controller, f"--kubeconfig={admin}", "--leader-election=false"])

    for n in NODES:
        api.create(
            "/api/v1/nodes",
            {
                "metadata": {
                    "name": n,
                    "labels": {"kubernetes.io/hostname": n, TOPOLOGY_KEY: RDS_NAME},
                    "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
                }
            },
        )
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        api.call(
            "PATCH",
            f"/api/v1/nodes/{n}/status",
            {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "LocalCluster",
                                        "lastHeartbeatTime": now, "lastTransitionTime": now}]}},
            content_type="application/merge-patch+json",
        )
        api.create(
            "/apis/storage.k8s.io/v1/csinodes",
            {
                "metadata": {"name": n},
                "spec": {"drivers": [{"name": DRIVER, "nodeID": n, "topologyKeys": [TOPOLOGY_KEY]}]},
            },
        )

    # The controller ServiceAccount's token, made by the token controller.
    def sa_token():
        secrets = api.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets")["items"]
        for s in secrets:
            ann = s["metadata"].get("annotations", {})
            if s.get("type") == "kubernetes.io/service-account-token" and \
                    ann.get("kubernetes.io/service-account.name") == CONTROLLER_SA and "token" in s.get("data", {}):
                return base64.b64decode(s["data"]["token"]).decode()
        return None

    token = wait_for("the controller ServiceAccount token", sa_token, 60,
                     logname="kube-controller-manager", d=d)
    sa_kc = os.path.join(d, "controller.kubeconfig")
    with open(sa_kc, "w") as f:
        f.write(kubeconfig_text(api.server, f"{d}/ca.crt", token,
                                f"system:serviceaccount:{NAMESPACE}:{CONTROLLER_SA}"))
    os.chmod(sa_kc, 0o600)

    sim = start(d, "sim", [binary, "sim", "--listen", "127.0.0.1:0", "--state-dir", f"{d}/sim",
                           "--data", f"{d}/sim-data", "--pool-size", "1T"])
    def sim_banner():
        with open(os.path.join(d, "sim.out")) as f:
            text = f.read()
        found = {}
        for line in text.splitlines():
            if line.startswith("RouterOS simulator listening on "):
                found["addr"] = line.split()[-1]
            if line.startswith("host key fingerprint: "):
                found["fp"] = line.split()[-1]
        return found if len(found) == 2 else None

    banner = wait_for("the simulator's start", sim_banner, 20, proc=sim, logname="sim", d=d)
    addr, fp = banner["addr"], banner["fp"]
    log(f"simulator at {addr}")

    sock = os.path.join(d, "csi.sock")
    metrics = free_port()
    ctl_args = container_args(
        containers["rds-csi"],
        sock,
        {
            "--endpoint": f"unix://{sock}",
            "--metrics-address": f"127.0.0.1:{metrics}",
            "--rds-address": addr,
            "--rds-host-key": fp,
            "--rds-key-file": f"{d}/sim/client_ed25519",
            "--kubeconfig": sa_kc,
            "--health-interval": "2s",
        },
    )
    pod = {
        "controller": [binary] + ctl_args,
        "sock": sock,
        "metrics": metrics,
        "sidecars": {
            name: [path] + container_args(containers[name], sock, {"--kubeconfig": sa_kc})
            for name, path in sidecars.items()
        },
    }
    with open(os.path.join(d, POD_FILE), "w") as f:
        json.dump(pod, f, indent=2)
    start_pod(d, pod, api)

    env = {
        "KUBECONFIG": admin,
        "RDS_CSI_E2E_DIR": d,
        "RDS_CSI_E2E_CONTROLLER_KUBECONFIG": sa_kc,
        "RDS_CSI_E2E_SIM_ADDRESS": addr,
        "RDS_CSI_E2E_SIM_HOST_KEY": fp,
        "RDS_CSI_E2E_SIM_KEY_FILE": f"{d}/sim/client_ed25519",
        "RDS_CSI_E2E_METRICS": f"127.0.0.1:{metrics}",
        "RDS_CSI_E2E_NODES": ",".join(NODES),
        "RDS_CSI_E2E_DRIVER": DRIVER,
    }
    with open(os.path.join(d, "cluster.env"), "w") as f:
        for k, v in env.items():
            f.write(f"export {k}={v}\n")
    with open(os.path.join(d, "cluster.json"), "w") as f:
        json.dump(env, f, indent=2)
    log(f"up in {time.monotonic() - t0:.1f}s: nodes {', '.join(NODES)}; "
        f"StorageClasses {', '.join(o['metadata']['name'] for o in applied if o['kind'] == 'StorageClass')}")
    print(os.path.join(d, "cluster.env"))


# The controller Pod's processes as `up` started them, for a restart.
POD_FILE = "controller-pod.json"
CONTROLLER_ENV = {"POD_NAME": "rds-csi-controller-0", "POD_NAMESPACE": NAMESPACE, "RDS_CSI_LOG": "info"}


def start_pod(d, pod, api, overrides=None):
    """The controller, once ready, then its sidecars, each ready once it
    holds its leader-election lease."""
    sock, metrics = pod["sock"], pod["metrics"]
    argv = pod["controller"]
    if overrides:
        argv = argv[:1] + container_args({"args": argv[1:]}, sock, overrides)
    ctl = start(d, "rds-csi-controller", argv, env=CONTROLLER_ENV)

    def ready():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/readyz", timeout=2) as r:
                return r.status == 200 and os.path.exists(sock)
        except OSError:
            return False

    wait_for("rds-csi controller readiness", ready, 60, proc=ctl, logname="rds-csi-controller", d=d)
    log("rds-csi controller ready")
    started = time.time()
    for name, argv in pod["sidecars"].items():
        start(d, name, argv)

    def leases():
        items = api.call("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases")["items"]
        held = [i for i in items if i.get("spec", {}).get("holderIdentity")
                and renewed_after(i["spec"].get("renewTime"), started)]
        return len(held) >= len(pod["sidecars"])

    wait_for("the sidecars' leader-election leases", leases, 60)


def renewed_after(stamp, t):
    """Whether an RFC 3339 lease renewTime lies after the Unix time t
    (less a second: the API server keeps microseconds, the clock more)."""
    if not stamp:
        return False
    try:
        when = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return False
    return when >= t - 1


def stop(d, names, together=False):
    """SIGTERM to each process group, SIGKILL after 5 s; one after the
    other, or all at once with `together`."""
    pending = []
    for name in names:
        pidfile = os.path.join(d, f"{name}.pid")
        if not os.path.exists(pidfile):
            continue
        with open(pidfile) as f:
            pid = int(f.read().strip())
        os.remove(pidfile)
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        pending.append(pid)
        if not together:
            reap(pending)
            pending = []
    reap(pending)


def reap(pids):
    deadline = time.monotonic() + 5
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# The controller Pod's processes, stopped sidecars first.
POD_PROCESSES = ["csi-snapshotter", "csi-resizer", "csi-attacher", "csi-provisioner", "rds-csi-controller"]


def stop_controller(d):
    stop(d, POD_PROCESSES, together=True)
    with open(os.path.join(d, POD_FILE)) as f:
        sock = json.load(f)["sock"]
    if os.path.exists(sock):
        os.remove(sock)


def start_controller(d, flags):
    if os.path.exists(os.path.join(d, "rds-csi-controller.pid")):
        raise RuntimeError("the controller runs already (stop-controller first)")
    with open(os.path.join(d, POD_FILE)) as f:
        pod = json.load(f)
    overrides = {}
    for flag in flags:
        name, eq, value = flag.partition("=")
        if not name.startswith("--"):
            raise RuntimeError(f"{flag!r}: give controller flags as --flag=value, or --flag to drop one")
        # --flag alone drops the flag: the controller runs as `up` started it.
        overrides[name] = value if eq else None
    start_pod(d, pod, Api(os.path.join(d, "kubeconfig")), overrides)


def down(d):
    stop(d, reversed(PROCESSES))
    subprocess.run([os.path.join(ROOT, "hack", "kube-apiserver.sh"), "down", d], check=False)


def main():
    commands = ("up", "down", "stop-controller", "start-controller")
    if len(sys.argv) < 3 or sys.argv[1] not in commands or \
            (len(sys.argv) > 3 and sys.argv[1] != "start-controller"):
        print(f"usage: {sys.argv[0]} up|down|stop-controller DIR\n"
              f"       {sys.argv[0]} start-controller DIR [--flag=value ...]", file=sys.stderr)
        return 2
    cmd, d = sys.argv[1], os.path.abspath(sys.argv[2])
    if cmd == "down":
        down(d)
        return 0
    if cmd == "stop-controller":
        stop_controller(d)
        return 0
    if cmd == "start-controller":
        try:
            start_controller(d, sys.argv[3:])
        except Exception as e:  # noqa: BLE001 - reported, the cluster stays as it is
            log(f"start-controller failed: {e}")
            return 1
        return 0
    try:
        up(d)
    except Missing as e:
        log(str(e))
        return 3
    except Exception as e:  # noqa: BLE001 - any failure tears the cluster down
        log(f"failed: {e}")
        down(d)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
