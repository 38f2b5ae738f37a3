#!/usr/bin/env bash
# Tests the image hack/image.sh built, from its archive:
#
#   hack/image-check.sh [OUT]        # OUT defaults to dist/ (reads OUT/image.env)
#
# The docker-archive is read back with skopeo and unpacked with umoci into
# OUT/bundle (its rootfs stays there: hack/test.sh hands it to the QEMU
# guest tier, whose `image` scenario runs the node plugin from it). Then,
# one PASS/FAIL line each:
#   labels      the OCI labels name the crate version, the commit, the
#               source, the licence and the creation time; the Debian
#               package versions label equals the image's packages.txt
#   dockerfile  what the Dockerfile's final stage sets (packages, binary
#               path, user, entrypoint, cmd) equals this image's
#   user        the image's user is the UID/GID the chart runs the
#               controller as, and /etc/passwd names it
#   host-id     no /etc/nvme/hostnqn or hostid in the image
#   version     `rds-csi --version` in the image names the version and commit
#   host-tools  every program the node plugin runs (the names in
#               crates/nvme/src/exec.rs) is on the image's PATH and prints
#               its version; mkfs.ext4, e2fsck, resize2fs, blkid and
#               mkfs.xfs work on a scratch file
#   controller  the image's binary runs as `rds-csi controller` under the
#               chart's UID against the simulator over SSH and answers
#               Probe, GetPluginInfo and a CreateVolume/DeleteVolume
# Programs run in a chroot of the rootfs (in a private mount namespace with
# its own /proc and /dev), as root or as the image's user. Exits 1 if a check
# failed. Needs root, skopeo, umoci, python3.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
OUT=${1:-dist}
OUT=$(cd "$OUT" && pwd) || exit 1
[ -f "$OUT/image.env" ] || { echo "FAIL image: no $OUT/image.env (run hack/image.sh $OUT)"; exit 1; }
# shellcheck source=/dev/null
. "$OUT/image.env"
commit=${RDS_CSI_GIT_COMMIT:-$(git rev-parse --short=12 HEAD)}
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)

passed=0 failed=0
result() { # result NAME OK|reason
  if [ "$2" = OK ]; then
    echo "PASS image: $1"
    passed=$((passed + 1))
  else
    echo "FAIL image: $1: ${2//$'\n'/ }"
    failed=$((failed + 1))
  fi
}

work=$(mktemp -d /tmp/rds-csi-image-check.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- unpack
bundle=$OUT/bundle
rm -rf "$bundle"
if ! skopeo copy --quiet "docker-archive:$IMAGE_ARCHIVE" "oci:$work/oci:check" ||
  ! umoci unpack --image "$work/oci:check" "$bundle" >/dev/null; then
  echo "FAIL image: unpack $IMAGE_ARCHIVE"
  exit 1
fi
r=$bundle/rootfs
skopeo inspect --config "docker-archive:$IMAGE_ARCHIVE" >"$work/config.json" || { echo "FAIL image: config"; exit 1; }
cfg() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1]))["config"]; v=eval(sys.argv[2]); print(json.dumps(v) if not isinstance(v, str) else v)' "$work/config.json" "$1"; }
label() { cfg "(c.get('Labels') or {}).get('$1', '')"; }

# run_in [--user U:G] CMD...: CMD in a chroot of the rootfs, with /proc and
# /dev of its own mount namespace
run_in() {
  local spec=()
  if [ "$1" = --user ]; then spec=(--userspec="$2" --groups="${2#*:}"); shift 2; fi
  unshare --mount --fork -- sh -c '
    r=$1; shift
    mount --make-rprivate / && mount -t proc proc "$r/proc" && mount --rbind /dev "$r/dev" || exit 125
    exec chroot "$@"' sh "$r" "${spec[@]}" "$r" /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# ---------------------------------------------------------------- labels
labels_check() {
  local want k v
  for want in "version=$version" "revision=$commit" "licenses=$(sed -n '/^\[workspace.package\]/,/^\[/s/^license = "\(.*\)"/\1/p' Cargo.toml)" \
    "source=$(sed -n '/^\[workspace.package\]/,/^\[/s/^repository = "\(.*\)"/\1/p' Cargo.toml)"; do
    k=${want%%=*} v=${want#*=}
    [ "$(label "org.opencontainers.image.$k")" = "$v" ] || { echo "org.opencontainers.image.$k is '$(label "org.opencontainers.image.$k")', not '$v'"; return; }
  done
  [[ $(label org.opencontainers.image.created) =~ ^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z$ ]] || { echo "org.opencontainers.image.created is not an RFC 3339 UTC time"; return; }
  [ -s "$r/usr/share/rds-csi/packages.txt" ] || { echo "no /usr/share/rds-csi/packages.txt"; return; }
  v=$(awk -F'\t' '{printf "%s%s=%s", (NR > 1 ? "," : ""), $1, $2}' "$r/usr/share/rds-csi/packages.txt")
  [ "$(label io.srvlab.rds-csi.debian.packages)" = "$v" ] || { echo "the Debian packages label differs from /usr/share/rds-csi/packages.txt"; return; }
  echo OK
}
result "labels (version, revision $commit, source, licence, created, Debian package versions)" "$(labels_check)"

# ------------------------------------------------------------ dockerfile
dockerfile_check() {
  local facts p
  facts=$(python3 hack/dockerfile_facts.py Dockerfile) || { echo "cannot read the Dockerfile"; return; }
  fact() { python3 -c 'import json,sys; v=json.loads(sys.argv[1])[sys.argv[2]]; print(json.dumps(v) if not isinstance(v, str) else v)' "$facts" "$1"; }
  [ "$(fact packages | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin))))')" = \
    "$(label io.srvlab.rds-csi.debian.include | tr ' ' '\n' | LC_ALL=C sort | xargs)" ] ||
    { echo "the Dockerfile installs $(fact packages), hack/image.sh $(label io.srvlab.rds-csi.debian.include)"; return; }
  for p in $(label io.srvlab.rds-csi.debian.include); do
    grep -q "^$p	" "$r/usr/share/rds-csi/packages.txt" || { echo "$p is not installed in the image"; return; }
  done
  [ -x "$r$(fact binary)" ] || { echo "no executable $(fact binary) (the Dockerfile's COPY destination)"; return; }
  [ "$(fact entrypoint)" = "$(cfg "c.get('Entrypoint')")" ] || { echo "entrypoint $(cfg "c.get('Entrypoint')") vs the Dockerfile's $(fact entrypoint)"; return; }
  [ "$(fact cmd)" = "$(cfg "c.get('Cmd')")" ] || { echo "cmd $(cfg "c.get('Cmd')") vs the Dockerfile's $(fact cmd)"; return; }
  [ "$(fact user)" = "$(cfg "c.get('User')")" ] || { echo "user $(cfg "c.get('User')") vs the Dockerfile's $(fact user)"; return; }
  echo OK
}
result "same packages, binary path, user, entrypoint and cmd as the Dockerfile" "$(dockerfile_check)"

# ------------------------------------------------------------------ user
chart=charts/rds-csi/templates/controller.yaml
chart_uid=$(sed -n 's/^ *runAsUser: \([0-9]*\)$/\1/p' "$chart" | head -1)
chart_gid=$(sed -n 's/^ *runAsGroup: \([0-9]*\)$/\1/p' "$chart" | head -1)
user_check() {
  [ -n "$chart_uid" ] && [ -n "$chart_gid" ] || { echo "no runAsUser/runAsGroup in $chart"; return; }
  [ "$(cfg "c.get('User')")" = "$chart_uid:$chart_gid" ] || { echo "image user $(cfg "c.get('User')"), the chart's controller $chart_uid:$chart_gid"; return; }
  awk -F: -v u="$chart_uid" -v g="$chart_gid" '$3 == u && $4 == g {f = 1} END {exit !f}' "$r/etc/passwd" ||
    { echo "/etc/passwd has no user $chart_uid:$chart_gid"; return; }
  echo OK
}
result "user is the chart's controller UID/GID ($chart_uid:$chart_gid)" "$(user_check)"

host_id_check() {
  local f
  for f in /etc/nvme/hostnqn /etc/nvme/hostid; do
    [ ! -e "$r$f" ] || { echo "$f is baked into the image"; return; }
  done
  echo OK
}
result "no host NQN or host ID baked in" "$(host_id_check)"

# --------------------------------------------------------------- version
got=$(run_in /usr/local/bin/rds-csi --version 2>&1)
if [ "$got" = "rds-csi $version+$commit" ]; then result "rds-csi --version: $got" OK; else
  result "rds-csi --version" "'$got', want 'rds-csi $version+$commit'"
fi

# ------------------------------------------------------------ host tools
# How each program the node plugin runs shows its version. A program added
# to crates/nvme/src/exec.rs without a line here fails the check.
declare -A VERSION_ARGS=(
  [nvme]=version [blkid]=-V [mkfs.ext4]=-V [mkfs.xfs]=-V [e2fsck]=-V [xfs_growfs]=-V
  [resize2fs]=-P # prints its banner, then refuses: no device
)
host_tools_check() {
  local tools t out
  # the string literals of HostCommand::program()
  tools=$(sed -n '/pub fn program(&self)/,/^    }/p' crates/nvme/src/exec.rs | grep -o '=> "[^"]*"' | cut -d'"' -f2 | sort -u)
  [ -n "$tools" ] || { echo "found no program names in crates/nvme/src/exec.rs"; return; }
  # and the ones the image promises beside them (see the Dockerfile)
  for t in $tools modprobe mount umount; do
    run_in sh -c "command -v $t" >/dev/null || { echo "$t is not on the image's PATH"; return; }
    [ -n "${VERSION_ARGS[$t]+x}" ] || case $t in
      modprobe | mount | umount) VERSION_ARGS[$t]=--version ;;
      *) echo "no version command known for $t: add it to VERSION_ARGS in $0"; return ;;
    esac
    out=$(run_in "$t" ${VERSION_ARGS[$t]} 2>&1)
    case $? in 126 | 127 | 125) echo "$t does not run: $out"; return ;; esac
    grep -qiE '[0-9]+\.[0-9]+|version [0-9]+' <<<"$out" || { echo "$t ${VERSION_ARGS[$t]} printed no version: $out"; return; }
  done
  # They work: a filesystem of each kind on a scratch file.
  mkdir -p "$r/tmp/check"
  truncate -s 64M "$r/tmp/check/ext4.img" && truncate -s 320M "$r/tmp/check/xfs.img"
  run_in mkfs.ext4 -q -F /tmp/check/ext4.img >/dev/null 2>&1 || { echo "mkfs.ext4 failed"; return; }
  run_in e2fsck -p /tmp/check/ext4.img >/dev/null 2>&1 || { echo "e2fsck -p failed"; return; }
  truncate -s 128M "$r/tmp/check/ext4.img"
  run_in resize2fs /tmp/check/ext4.img >/dev/null 2>&1 || { echo "resize2fs failed"; return; }
  run_in blkid -p /tmp/check/ext4.img 2>&1 | grep -q 'TYPE="ext4"' || { echo "blkid -p does not see the ext4"; return; }
  run_in mkfs.xfs -q /tmp/check/xfs.img >/dev/null 2>&1 || { echo "mkfs.xfs failed"; return; }
  run_in blkid -p /tmp/check/xfs.img 2>&1 | grep -q 'TYPE="xfs"' || { echo "blkid -p does not see the xfs"; return; }
  rm -rf "$r/tmp/check"
  echo OK
}
result "host tools present and running ($(sed -n '/pub fn program(&self)/,/^    }/p' crates/nvme/src/exec.rs | grep -o '=> "[^"]*"' | cut -d'"' -f2 | sort -u | xargs), modprobe, mount)" "$(host_tools_check)"

# ------------------------------------------------------------ controller
# The simulator runs on the host (the image's binary, as root), the
# controller in the chroot as the chart's UID; the client calls over the
# socket from outside.
controller_check() {
  local d=/tmp/check-controller addr fp pid uid out
  mkdir -p "$r$d"
  "$r/usr/local/bin/rds-csi" sim --listen 127.0.0.1:0 --state-dir "$work/sim" --data "$work/data" --pool-size 64G \
    >"$work/sim.out" 2>"$work/sim.log" &
  pids+=($!)
  for _ in $(seq 100); do grep -q '^host key fingerprint' "$work/sim.out" 2>/dev/null && break; sleep 0.1; done
  addr=$(sed -n 's/^RouterOS simulator listening on //p' "$work/sim.out")
  fp=$(sed -n 's/^host key fingerprint: //p' "$work/sim.out")
  [ -n "$addr" ] && [ -n "$fp" ] || { echo "the simulator did not start: $(tail -n 3 "$work/sim.log")"; return; }
  install -m 0400 -o "$chart_uid" -g "$chart_gid" "$work/sim/client_ed25519" "$r$d/key"
  chown "$chart_uid:$chart_gid" "$r$d"
  run_in --user "$chart_uid:$chart_gid" rds-csi controller --endpoint "unix://$d/controller.sock" \
    --rds-address "$addr" --rds-key-file "$d/key" --rds-host-key "$fp" --metrics-address off \
    --volume-id-prefix "" --node check-node --standalone >"$work/controller.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$r$d/controller.sock" ] && break; sleep 0.1; done
  [ -S "$r$d/controller.sock" ] || { echo "no socket: $(tail -n 3 "$work/controller.log")"; return; }
  # down from the background job (a subshell, unshare, then the chroot's
  # exec chain) to the rds-csi process
  pid=${pids[-1]}
  for _ in 1 2 3; do
    [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = rds-csi ] && break
    pid=$(pgrep -P "$pid" | head -1)
  done
  uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status" 2>/dev/null)
  [ "$uid" = "$chart_uid" ] || { echo "the controller runs as UID '$uid'"; return; }
  # Probe says ready once the controller's health check reached the RDS.
  for _ in $(seq 50); do
    out=$("$r/usr/local/bin/rds-csi" csi --endpoint "unix://$r$d/controller.sock" info 2>&1) || { echo "info: $out"; return; }
    grep -qx 'ready: true' <<<"$out" && break
    sleep 0.2
  done
  grep -q "$version+$commit" <<<"$out" || { echo "GetPluginInfo names no $version+$commit: $out"; return; }
  grep -qx 'ready: true' <<<"$out" || { echo "Probe never said ready: $out"; return; }
  out=$("$r/usr/local/bin/rds-csi" csi --endpoint "unix://$r$d/controller.sock" create pvc-image-check --size 1G 2>&1) ||
    { echo "CreateVolume: $out"; return; }
  out=$("$r/usr/local/bin/rds-csi" csi --endpoint "unix://$r$d/controller.sock" delete pvc-image-check 2>&1) ||
    { echo "DeleteVolume: $out"; return; }
  echo OK
}
# (not in a command substitution: that would wait for the background processes)
controller_check >"$work/controller.result"
result "controller as UID $chart_uid against the simulator: Probe, GetPluginInfo, CreateVolume, DeleteVolume" "$(cat "$work/controller.result")"
rm -rf "$r/tmp/check-controller"

echo "image checks: $passed passed, $failed failed (rootfs kept in $r)"
[ "$failed" -eq 0 ]
