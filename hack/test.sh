#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every tier
# and prints PASS/FAIL per step and a closing "N passed, N failed" line.
#
#   hack/test.sh
#
# Tools no package registry carries (csi-sanity, kube-apiserver, ...) are
# found through PATH or environment variables (CSI_SANITY). Without them a
# tier is skipped with its reason printed; under CI (CI=true) a missing tool
# fails the run instead, so no tier can silently disappear there.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

passed=0
failed=0
skipped=0
results=()

step() { # step NAME COMMAND...
  local name=$1
  shift
  echo
  echo "==> $name"
  local start=$SECONDS
  if "$@"; then
    passed=$((passed + 1))
    results+=("PASS  $name ($((SECONDS - start))s)")
  else
    failed=$((failed + 1))
    results+=("FAIL  $name ($((SECONDS - start))s)")
  fi
}

skip() { # skip NAME REASON
  if [ "${CI:-}" = "true" ]; then
    failed=$((failed + 1))
    results+=("FAIL  $1 (required in CI: $2)")
  else
    skipped=$((skipped + 1))
    results+=("SKIP  $1 ($2)")
  fi
  echo
  echo "==> $1: SKIPPED: $2"
}

install_packages() {
  # Debian packages the tiers need. apt-get update runs once, and only
  # when something is missing.
  local need=()
  command -v xz >/dev/null || need+=(xz-utils)
  command -v git >/dev/null || need+=(git)
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v openssl >/dev/null || need+=(openssl)
  command -v curl >/dev/null || need+=(curl)
  python3 -c 'import yaml' 2>/dev/null || need+=(python3-yaml)
  command -v promtool >/dev/null || need+=(prometheus)
  # linux-target's tests over a real OpenSSH server
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -eq 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
    else
      echo "missing packages (${need[*]}); run as root or install them" >&2
      return 1
    fi
  fi
  rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy
  command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest
}

real_kernel_reason() {
  # Why the node service's real-kernel test cannot run on this host, or
  # nothing: it needs root, loop devices and e2fsprogs.
  [ "$(id -u)" -eq 0 ] || { echo "not root"; return; }
  [ -e /dev/loop-control ] || { echo "no /dev/loop-control"; return; }
  local t
  for t in losetup mkfs.ext4 blkid e2fsck resize2fs; do
    command -v "$t" >/dev/null || { echo "$t not installed"; return; }
  done
}

unit_and_simulator_tests() {
  # Tier 1 (unit, property tests, fakes) and tier 2 (client and controller
  # against the RouterOS simulator over real SSH) live in the cargo tests.
  # Tests plain `cargo test` ignores for want of a tool this script provides
  # (promtool) or of root (node_on_a_real_kernel) run here too; the
  # real-kernel one only where the host can run it. The API-server and
  # end-to-end tiers run in their own steps below, and linux-target's tests
  # on real LVM thin volumes and the kernel NVMe target in the QEMU guest
  # (tier 4: this host has no device-mapper or nvmet).
  local filter='not (binary(apiserver) | binary(e2e) | (package(linux-target) & binary(real_host)))'
  [ -z "$real_kernel_skip" ] || filter="$filter & not binary(node_on_a_real_kernel)"
  cargo nextest run --workspace --run-ignored all --no-fail-fast --status-level pass \
    --final-status-level fail -E "$filter"
}

api_server_tests() {
  # Tier 3: the controller binary against a real kube-apiserver + etcd.
  local dir rc
  dir=$(mktemp -d /tmp/rds-csi-apiserver.XXXXXX)
  if ! hack/kube-apiserver.sh up "$dir" >/dev/null; then
    hack/kube-apiserver.sh down "$dir"
    return 1
  fi
  RDS_CSI_TEST_KUBECONFIG="$dir/kubeconfig" cargo nextest run --workspace --run-ignored all \
    --no-fail-fast --status-level pass --final-status-level fail -E 'binary(apiserver)'
  rc=$?
  hack/kube-apiserver.sh down "$dir"
  return $rc
}

demo() {
  cargo run --quiet --bin rds-csi -- demo
}

step "install test dependencies" install_packages
step "format (cargo fmt --check)" cargo fmt --all --check
step "lint (cargo clippy -D warnings)" cargo clippy --workspace --all-targets --quiet -- -D warnings
step "build" cargo build --workspace --all-targets --quiet
real_kernel_skip=$(real_kernel_reason)
step "tiers 1-2: unit, property and simulator tests" unit_and_simulator_tests
if [ -n "$real_kernel_skip" ]; then
  skip "tier 1: node service on a real kernel (node_on_a_real_kernel)" "$real_kernel_skip"
fi
step "demo: a volume's whole life over CSI on the simulator" demo

sanity=${CSI_SANITY:-$(command -v csi-sanity || true)}
if [ -n "$sanity" ] && [ -x "$sanity" ]; then
  step "tier 2: csi-sanity (Identity + Controller) over SSH" env CSI_SANITY="$sanity" RDS_CSI_BIN="$root/target/debug/rds-csi" hack/sanity.sh
else
  skip "tier 2: csi-sanity" "csi-sanity not found on PATH or in CSI_SANITY"
fi

apiserver=${KUBE_APISERVER:-$(command -v kube-apiserver || true)}
if [ -n "$apiserver" ] && command -v etcd >/dev/null; then
  step "tier 3: attachment safety against a real kube-apiserver" api_server_tests
else
  skip "tier 3: real kube-apiserver" "kube-apiserver not found on PATH or in KUBE_APISERVER (etcd: apt-get install etcd-server)"
fi

# Helm chart (charts/rds-csi) with Helm 4's library (pip: helm-python-sdk):
# lint, schema, render, alert rules and deploy/rds-csi.yaml in sync, and a
# server-side dry run of every object against a real kube-apiserver; the
# rendered args are also parsed by the binary built above.
if [ -n "$apiserver" ] && command -v etcd >/dev/null && command -v "${KUBECTL:-kubectl}" >/dev/null; then
  step "chart: render, schema, server-side dry run, deploy/ in sync" env RDS_CSI_BIN="$root/target/debug/rds-csi" python3 hack/chart-check.py
else
  step "chart: render, schema, deploy/ in sync" env RDS_CSI_BIN="$root/target/debug/rds-csi" python3 hack/chart-check.py --no-server
  skip "chart: server-side dry run" "kube-apiserver, etcd or kubectl not found (PATH, KUBE_APISERVER, KUBECTL)"
fi

# The image, from Debian packages without a registry (hack/image.sh: the
# release binary, mmdebstrap, umoci, skopeo; installed from Debian when
# missing), and its checks (hack/image-check.sh: labels, the Dockerfile's
# layout, user, host tools, version, the controller as the chart's UID).
# Its unpacked root filesystem goes to tier 4's `image` scenario. Output in
# $RDS_CSI_IMAGE_OUT (default target/image). The release build is most of
# the step's time (about 8 minutes cold on 2 shared cores);
# RDS_CSI_IMAGE_BIN=target/debug/rds-csi puts the debug binary in the image
# instead, for a quicker run (not what a release ships).
image_out=${RDS_CSI_IMAGE_OUT:-$root/target/image}
image_rootfs=
image_build_and_check() {
  RDS_CSI_BIN=${RDS_CSI_IMAGE_BIN:-} hack/image.sh "$image_out" && hack/image-check.sh "$image_out"
}
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  rm -rf "$image_out/bundle" # never a stale root filesystem for tier 4
  step "image: built from Debian packages (hack/image.sh) and checked (hack/image-check.sh)" image_build_and_check
  [ -x "$image_out/bundle/rootfs/usr/local/bin/rds-csi" ] && image_rootfs=$image_out/bundle/rootfs
else
  skip "image: built from Debian packages and checked" "needs root and apt-get (mmdebstrap's root mode)"
fi

# Tier 4: real NVMe/TCP in a QEMU guest (hack/vm/run.sh). It installs QEMU
# and the guest's kernel from Debian; exit 3 means it could not. It runs the
# debug binary the build step made (a cold release build would add
# minutes), and the node plugin from the image's root filesystem in the
# `image` scenario when the image step made one. VM_SCENARIOS picks
# scenarios (default: all).
echo
echo "==> tier 4: QEMU guest (real NVMe/TCP, node plugin, csi-sanity)"
vm_start=$SECONDS
# shellcheck disable=SC2086 # a list of scenario names
CSI_SANITY="$sanity" RDS_CSI_BIN="$root/target/debug/rds-csi" RDS_CSI_IMAGE_ROOTFS="$image_rootfs" \
  hack/vm/run.sh ${VM_SCENARIOS:-}
vm_rc=$?
if [ "$vm_rc" -eq 3 ]; then
  skip "tier 4: QEMU guest" "QEMU or the guest kernel could not be installed"
elif [ "$vm_rc" -eq 0 ]; then
  passed=$((passed + 1))
  results+=("PASS  tier 4: QEMU guest ($((SECONDS - vm_start))s)")
else
  failed=$((failed + 1))
  results+=("FAIL  tier 4: QEMU guest ($((SECONDS - vm_start))s)")
fi

end_to_end_tests() {
  # Tier 5: the local control plane (hack/local-cluster.sh) with the
  # attach/detach controller, the PV binder, snapshot-controller and the CSI
  # sidecars driving the controller; scenarios one at a time, so the
  # boot-storm figure is the cluster's alone. hack/local-cluster.sh reads
  # the VolumeSnapshot CRDs from $RDS_CSI_SNAPSHOT_CRDS (exported: .ci/run
  # sets it).
  local dir rc
  dir=$(mktemp -d /tmp/rds-csi-e2e.XXXXXX)
  if ! RDS_CSI_BIN="$root/target/debug/rds-csi" hack/local-cluster.sh up "$dir" >/dev/null; then
    hack/local-cluster.sh down "$dir"
    return 1
  fi
  RDS_CSI_E2E_DIR="$dir" cargo nextest run --workspace --run-ignored all --no-fail-fast \
    --test-threads 1 --status-level pass --final-status-level fail --success-output final \
    -E 'binary(e2e)'
  rc=$?
  hack/local-cluster.sh down "$dir"
  return $rc
}

missing=()
for t in kube-apiserver:KUBE_APISERVER kube-controller-manager:KUBE_CONTROLLER_MANAGER kubectl:KUBECTL \
  csi-provisioner:CSI_PROVISIONER csi-attacher:CSI_ATTACHER csi-resizer:CSI_RESIZER etcd:ETCD \
  csi-snapshotter:CSI_SNAPSHOTTER snapshot-controller:SNAPSHOT_CONTROLLER; do
  var=${t#*:}
  [ -n "${!var:-}" ] || command -v "${t%%:*}" >/dev/null || missing+=("${t%%:*} (PATH or $var)")
done
if [ -z "${RDS_CSI_SNAPSHOT_CRDS:-}" ] || [ ! -d "$RDS_CSI_SNAPSHOT_CRDS" ]; then
  missing+=("the VolumeSnapshot CRDs (a directory in RDS_CSI_SNAPSHOT_CRDS)")
fi
if [ ${#missing[@]} -eq 0 ]; then
  step "tier 5: PVCs, pods, KubeVirt objects and VolumeSnapshots through kube-controller-manager, snapshot-controller and the CSI sidecars" end_to_end_tests
else
  list=$(printf '%s; ' "${missing[@]}")
  skip "tier 5: local control plane end to end" "missing: ${list%; }"
fi
echo
echo "==== results ===="
printf '%s\n' "${results[@]}"
echo "summary: ${passed} passed, ${failed} failed, ${skipped} skipped"
[ "$failed" -eq 0 ]
