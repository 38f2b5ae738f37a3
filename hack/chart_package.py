"""The release side of the chart, for hack/chart-check.py: versions follow
the crate, the default image is the one hack/image.sh builds, and `helm
package` (Helm's own library) makes an archive that renders as the chart
directory does."""

import os
import re
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SH = os.path.join(ROOT, "hack", "image.sh")


def crate_version():
    text = open(os.path.join(ROOT, "Cargo.toml")).read()
    section = text.split("[workspace.package]", 1)[1].split("\n[", 1)[0]
    return re.search(r'^version\s*=\s*"([^"]+)"', section, re.M).group(1)


def image_sh(var):
    """A plain VAR=value assignment of hack/image.sh."""
    m = re.search(rf"^{var}=([\w.-]+)$", open(IMAGE_SH).read(), re.M)
    return m.group(1) if m else None


def package(helm, chart, dest):
    """`helm package` of the chart into dest; the archive's path."""
    return helm.package(chart, destination=dest)


def check_release(helm, chart, render_dir, render_archive, values, find, container):
    """Chart version and appVersion are the crate version; both rds-csi
    containers default to the image hack/image.sh writes (NAME:version); the
    controller runs as the image's user and the node plugin as root; the
    packaged chart renders exactly as the directory."""
    problems = []
    version = crate_version()
    with helm.Chart.load(chart) as c:
        meta = c.metadata
    for key in ("version", "appVersion"):
        if meta.get(key) != version:
            problems.append(f"Chart.yaml {key} {meta.get(key)!r} is not the crate version {version}")

    docs = render_dir(values)
    name, uid = image_sh("NAME"), image_sh("UID_GID")
    want = f"{name}:{version}"
    ctrl = find(docs, "StatefulSet")[0]["spec"]["template"]["spec"]
    node = find(docs, "DaemonSet")[0]["spec"]["template"]["spec"]
    for what, spec in (("controller", ctrl), ("node", node)):
        image = container(spec, "rds-csi")["image"]
        if image != want:
            problems.append(f"the {what} image is {image}, not {want} (what hack/image.sh writes)")
    sc = ctrl.get("securityContext", {})
    if not (sc.get("runAsNonRoot") and str(sc.get("runAsUser")) == uid and str(sc.get("runAsGroup")) == uid):
        problems.append(f"the controller pod does not run as the image's user {uid}:{uid}: {sc}")
    nsc = container(node, "rds-csi").get("securityContext", {})
    if nsc.get("runAsUser") != 0:
        problems.append("the node plugin does not set runAsUser: 0 (the image's own user is not root)")

    with tempfile.TemporaryDirectory() as tmp:
        archive = package(helm, chart, tmp)
        base = os.path.basename(archive)
        if base != f"rds-csi-{version}.tgz":
            problems.append(f"helm package wrote {base}")
        with tarfile.open(archive) as t:
            names = t.getnames()
        for f in ("rds-csi/Chart.yaml", "rds-csi/values.schema.json", "rds-csi/files/rds-csi.rules.yml"):
            if f not in names:
                problems.append(f"{f} is not in the archive")
        if render_archive(archive, values) != docs:
            problems.append("the packaged chart renders differently from the chart directory")
        print(f"  helm package: {base}, {len(names)} files; default image {want}")
    for p in problems:
        print(f"  {p}: FAILED")
    return check_readme_image(open(os.path.join(ROOT, "README.md")).read()) and not problems


def check_readme_image(readme_text):
    """The README names the image the chart renders by default, and no
    other version of it."""
    version, name = crate_version(), image_sh("NAME")
    named = set(re.findall(rf"\b{re.escape(name)}:(\d+\.\d+\.\d+\S*?)\b", readme_text))
    if named != {version}:
        print(f"  the README names the image versions {sorted(named)}, not just {version}: FAILED")
        return False
    return True
