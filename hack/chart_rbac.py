"""RBAC of the rendered chart, for hack/chart-check.py: which rules a
ServiceAccount gets through the chart's bindings, and whether they allow
what a sidecar does."""

# What csi-snapshotter (external-snapshotter v8) does with the API, read from
# its source: list/watch VolumeSnapshotClasses and VolumeSnapshotContents,
# get and patch contents and update their status, record events; update on
# contents as external-snapshotter's own RBAC grants it; and the
# leader-election Lease in the release namespace.
SNAPSHOTTER_NEEDS = [
    ("snapshot.storage.k8s.io", "volumesnapshotclasses", {"get", "list", "watch"}),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", {"get", "list", "watch", "update", "patch"}),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", {"update", "patch"}),
    ("", "events", {"create", "patch"}),
]
LEASE_NEEDS = [("coordination.k8s.io", "leases", {"get", "create", "update"})]
# external-provisioner reads the source of a PVC restored from a snapshot.
PROVISIONER_SNAPSHOT_NEEDS = [
    ("snapshot.storage.k8s.io", "volumesnapshots", {"get", "list"}),
    ("snapshot.storage.k8s.io", "volumesnapshotcontents", {"get", "list"}),
]


def granted(docs, sa, namespace):
    """The RBAC rules the rendered objects give ServiceAccount namespace/sa:
    (cluster-wide rules, rules in `namespace`)."""
    roles = {(o["kind"], o["metadata"]["name"]): o.get("rules", []) for _, _, o in docs
             if o["kind"] in ("ClusterRole", "Role")}
    cluster, local = [], []
    for _, _, b in docs:
        if b["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and s["name"] == sa and s.get("namespace") == namespace
                   for s in b.get("subjects", [])):
            continue
        rules = roles.get((b["roleRef"]["kind"], b["roleRef"]["name"]), [])
        if b["kind"] == "ClusterRoleBinding":
            cluster += rules
        elif b["metadata"].get("namespace") == namespace:
            local += rules
    return cluster, local


def missing_grants(rules, needs):
    """The (group, resource, verb) of `needs` that no rule allows on every
    object (rules limited by resourceNames do not count)."""
    out = []
    for group, resource, verbs in needs:
        for verb in sorted(verbs):
            if not any(group in r.get("apiGroups", []) and resource in r.get("resources", [])
                       and verb in r.get("verbs", []) and not r.get("resourceNames") for r in rules):
                out.append(f"{group or 'core'}/{resource} {verb}")
    return out
