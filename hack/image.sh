#!/usr/bin/env bash
# Builds the rds-csi container image from Debian packages, without pulling
# a base image from any registry:
#
#   hack/image.sh [OUT]          # OUT defaults to dist/
#
# 1. the release binary: `cargo build --release --locked --bin rds-csi`,
#    with the commit stamped in through RDS_CSI_GIT_COMMIT (build.rs);
# 2. a Debian bookworm root filesystem made by mmdebstrap from the Essential
#    packages plus the tools the node plugin runs (PACKAGES below, the same
#    list as the Dockerfile's), with no /etc/nvme/hostnqn or hostid, a user
#    for UID/GID 65532 (the chart runs the controller as that UID), and the
#    exact package versions in /usr/share/rds-csi/packages.txt;
# 3. an OCI image written with umoci (two layers: Debian, then
#    /usr/local/bin/rds-csi; entrypoint `rds-csi`, user 65532:65532, the OCI
#    labels and the Debian package versions as labels);
# 4. `skopeo copy` of it into a docker-archive `docker load`, `podman load`,
#    `ctr images import` and `kind load image-archive` accept, named
#    rds-csi:VERSION: the image the chart renders by default.
#
# Writes OUT/rds-csi-VERSION.tar (the archive), OUT/oci (the OCI layout),
# OUT/image.env (name, version, commit, archive path for the checks and
# hack/release.sh), OUT/packages.txt and OUT/mmdebstrap.log (its output).
# hack/image-check.sh tests the archive.
#
# Environment: RDS_CSI_BIN (use this binary instead of building the release
# one; its --version must name the commit), RDS_CSI_GIT_COMMIT (default: git
# rev-parse --short=12 HEAD), DEBIAN_MIRROR (default http://deb.debian.org),
# SOURCE_DATE_EPOCH (default: the commit's time; every timestamp in the image
# is clamped to it). Needs root (mmdebstrap's root mode) and mmdebstrap,
# umoci, skopeo: installed with apt-get when missing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${1:-dist}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

# The Debian packages beside the Essential set; the Dockerfile installs the
# same list (hack/image-check.sh compares them).
PACKAGES="ca-certificates nvme-cli e2fsprogs xfsprogs util-linux mount kmod"
SUITE=bookworm
UID_GID=65532
NAME=rds-csi
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org}

log() { printf '[image %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v umoci >/dev/null || need+=(umoci)
command -v skopeo >/dev/null || need+=(skopeo)
if [ ${#need[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "missing ${need[*]}; run as root or install them" >&2; exit 1; }
  log "apt-get install ${need[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ "$(id -u)" -eq 0 ] || { echo "hack/image.sh runs mmdebstrap as root (chroot mode)" >&2; exit 1; }

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
license=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license = "\(.*\)"/\1/p' Cargo.toml)
source_url=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository = "\(.*\)"/\1/p' Cargo.toml)
commit=${RDS_CSI_GIT_COMMIT:-$(git rev-parse --short=12 HEAD)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
[ -n "$version" ] && [ -n "$commit" ] || { echo "cannot read the version or the commit" >&2; exit 1; }

# ------------------------------------------------------------ 1. binary
bin=${RDS_CSI_BIN:-}
if [ -z "$bin" ]; then
  log "cargo build --release --locked --bin rds-csi (commit $commit)"
  RDS_CSI_GIT_COMMIT=$commit cargo build --release --locked --quiet --bin rds-csi
  bin=$root/target/release/rds-csi
fi
"$bin" --version | grep -qx "rds-csi $version+$commit" ||
  { echo "$bin --version says '$("$bin" --version)', not rds-csi $version+$commit" >&2; exit 1; }

work=$(mktemp -d /tmp/rds-csi-image.XXXXXX)
trap 'rm -rf "$work"' EXIT

# ---------------------------------------------------- 2. root filesystem
# Slim like debian:*-slim: no manuals, docs or translations, but every
# package's copyright file stays. The merged-usr hook sets up merged /usr
# with usr-is-merged, as debian:bookworm has it (left alone, apt picks
# usrmerge, which pulls in perl).
log "mmdebstrap $SUITE: $PACKAGES"
customize=(
  # nvme-cli's postinst writes a host NQN and host ID: every node running
  # this image would share them. The node plugin reads the host's own.
  'rm -f "$1/etc/nvme/hostnqn" "$1/etc/nvme/hostid"'
  # mmdebstrap copies the build host's resolv.conf and hostname in; the
  # container runtime mounts its own over these paths.
  ': >"$1/etc/resolv.conf"; : >"$1/etc/hostname"'
  "echo '$NAME:x:$UID_GID:$UID_GID:$NAME:/nonexistent:/usr/sbin/nologin' >>\"\$1/etc/passwd\""
  "echo '$NAME:x:$UID_GID:' >>\"\$1/etc/group\""
  'mkdir -p "$1/usr/share/rds-csi"'
  # The exact versions, for rebuilding the same root filesystem later.
  "dpkg-query --admindir=\"\$1/var/lib/dpkg\" -W -f='\${Package}\t\${Version}\t\${Architecture}\n' | LC_ALL=C sort >\"\$1/usr/share/rds-csi/packages.txt\""
)
hooks=()
for h in "${customize[@]}"; do hooks+=(--customize-hook="$h"); done
mmdebstrap --quiet --variant=essential --mode=root --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include="${PACKAGES// /,}" \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  "${hooks[@]}" \
  "$SUITE" "$work/debian.tar" \
  "deb $MIRROR/debian $SUITE main" \
  "deb $MIRROR/debian $SUITE-updates main" \
  "deb $MIRROR/debian-security $SUITE-security main" >"$OUT/mmdebstrap.log" 2>&1 ||
  { tail -n 40 "$OUT/mmdebstrap.log"; echo "mmdebstrap failed (log: $OUT/mmdebstrap.log)" >&2; exit 1; }
tar -xOf "$work/debian.tar" ./usr/share/rds-csi/packages.txt >"$OUT/packages.txt"

# The binary's own layer, with the clamped time and root ownership.
mkdir -p "$work/app/usr/local/bin"
install -m 0755 "$bin" "$work/app/usr/local/bin/rds-csi"
tar -C "$work/app" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$SOURCE_DATE_EPOCH" \
  --no-recursion -cf "$work/app.tar" ./usr/local/bin/rds-csi

# -------------------------------------------------------- 3. OCI image
log "umoci: OCI layout in $OUT/oci"
layout=$OUT/oci
rm -rf "$layout"
umoci init --layout "$layout"
umoci new --image "$layout:$version"
umoci raw add-layer --image "$layout:$version" --history.created "$created" \
  --history.created_by "mmdebstrap --variant=essential $SUITE --include=${PACKAGES// /,}" "$work/debian.tar"
umoci raw add-layer --image "$layout:$version" --history.created "$created" \
  --history.created_by "cargo build --release --locked --bin rds-csi ($commit)" "$work/app.tar"
# The package versions as labels too (name=version, comma separated), so a
# registry shows what the image was made from without pulling it.
pkgs=$(awk -F'\t' '{printf "%s%s=%s", (NR > 1 ? "," : ""), $1, $2}' "$OUT/packages.txt")
umoci config --no-history --image "$layout:$version" --created "$created" --os linux --architecture amd64 \
  --config.user "$UID_GID:$UID_GID" --config.entrypoint rds-csi --config.cmd --help \
  --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.label "org.opencontainers.image.title=$NAME" \
  --config.label "org.opencontainers.image.description=CSI driver for NVMe/TCP volumes on a MikroTik ROSE Data Server" \
  --config.label "org.opencontainers.image.version=$version" \
  --config.label "org.opencontainers.image.revision=$commit" \
  --config.label "org.opencontainers.image.source=$source_url" \
  --config.label "org.opencontainers.image.licenses=$license" \
  --config.label "org.opencontainers.image.created=$created" \
  --config.label "org.opencontainers.image.base.name=debian:$SUITE (mmdebstrap --variant=essential)" \
  --config.label "io.srvlab.rds-csi.debian.suite=$SUITE" \
  --config.label "io.srvlab.rds-csi.debian.mirror=$MIRROR" \
  --config.label "io.srvlab.rds-csi.debian.include=$PACKAGES" \
  --config.label "io.srvlab.rds-csi.debian.packages=$pkgs"
umoci gc --layout "$layout"

# ------------------------------------------------------------ 4. archive
archive=$OUT/$NAME-$version.tar
rm -f "$archive"
skopeo copy --quiet "oci:$layout:$version" "docker-archive:$archive:$NAME:$version"
cat >"$OUT/image.env" <<EOF
IMAGE_NAME=$NAME
IMAGE_VERSION=$version
IMAGE_COMMIT=$commit
IMAGE_REF=$NAME:$version
IMAGE_ARCHIVE=$archive
IMAGE_LAYOUT=$layout
IMAGE_CREATED=$created
EOF
log "wrote $archive ($(du -h "$archive" | cut -f1), $(wc -l <"$OUT/packages.txt") Debian packages): docker load -i $archive"
