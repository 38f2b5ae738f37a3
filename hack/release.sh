#!/usr/bin/env bash
# Writes a release into OUT (default dist/, gitignored):
#
#   hack/release.sh [OUT]
#
#   rds-csi-VERSION.tar        the image (docker-archive, named rds-csi:VERSION:
#                              `docker load -i`, `ctr images import`,
#                              `kind load image-archive`, or `skopeo copy` to a
#                              registry), built by hack/image.sh from the
#                              release binary and Debian packages, and tested
#                              by hack/image-check.sh
#   rds-csi-VERSION.tgz        the Helm chart (`helm package`, through Helm's
#                              own library), whose default image is the above
#   rds-csi-VERSION.yaml       the chart rendered with its defaults
#                              (deploy/rds-csi.yaml, checked in sync by
#                              hack/chart-check.py)
#   rds-csi-VERSION.cdx.json   a CycloneDX SBOM of the Rust dependencies of
#                              the binary (cargo-cyclonedx, installed with
#                              `cargo install --locked` when missing)
#   packages.txt               the image's Debian packages and versions
#   SHA256SUMS                 sha256sum of each of the above
#
# Stops at the first failure: a release with a failed check is no release.
# Refuses a work tree with uncommitted changes (ALLOW_DIRTY=1 for a trial).
# Takes a few minutes (a release build, the Debian root filesystem); the
# test command (hack/test.sh) runs the image build and checks, not this.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=$(realpath -m "${1:-dist}")
mkdir -p "$OUT"
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
# The commit goes into the binary and the labels: it must be what is built.
if [ -n "$(git status --porcelain --untracked-files=no)" ] && [ "${ALLOW_DIRTY:-0}" != 1 ]; then
  echo "the work tree has uncommitted changes: commit them (or ALLOW_DIRTY=1 for a trial run)" >&2
  exit 1
fi
log() { printf '[release %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

files=("rds-csi-$version.tar" "rds-csi-$version.tgz" "rds-csi-$version.yaml" "rds-csi-$version.cdx.json" packages.txt)
for f in "${files[@]}" SHA256SUMS; do rm -f "${OUT:?}/$f"; done

log "the chart: checks"
python3 hack/chart-check.py --no-server >"$OUT/chart-check.log" 2>&1 ||
  { tail -n 30 "$OUT/chart-check.log"; echo "hack/chart-check.py failed (log: $OUT/chart-check.log)" >&2; exit 1; }

log "the image: hack/image.sh, hack/image-check.sh"
hack/image.sh "$OUT"
hack/image-check.sh "$OUT"
rm -rf "$OUT/bundle" "$OUT/oci" "$OUT/image.env" "$OUT/mmdebstrap.log"

log "the chart: helm package, rendered manifests"
python3 - "$OUT" <<'EOF'
import os
import sys

import helm_python as helm

out = sys.argv[1]
archive = helm.package("charts/rds-csi", destination=out)
print(f"  {os.path.basename(archive)}")
EOF
cp deploy/rds-csi.yaml "$OUT/rds-csi-$version.yaml"

log "SBOM: cargo cyclonedx"
if ! cargo cyclonedx --version >/dev/null 2>&1; then
  log "cargo install --locked cargo-cyclonedx"
  cargo install --locked --quiet cargo-cyclonedx
fi
# The binary's dependencies: the root package only (its path dependencies,
# the workspace crates, are components of it), the Linux target, no dev
# dependencies.
# cargo-cyclonedx writes one SBOM beside each workspace member's
# Cargo.toml: the root one is the binary's (its path dependencies, the
# workspace crates, are components in it; dev dependencies are not).
# Build paths in its references become relative to the checkout.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)} \
  cargo cyclonedx --quiet --format json --spec-version 1.5 --target x86_64-unknown-linux-gnu \
  --override-filename "rds-csi-$version.cdx"
sed "s|file://$PWD|file://.|g" "rds-csi-$version.cdx.json" >"$OUT/sbom.tmp"
find . -name "rds-csi-$version.cdx.json" -not -path "./target/*" -delete
mv "$OUT/sbom.tmp" "$OUT/rds-csi-$version.cdx.json"

(cd "$OUT" && sha256sum "${files[@]}" >SHA256SUMS)
log "wrote $OUT:"
(cd "$OUT" && ls -l "${files[@]}" SHA256SUMS) >&2
