#!/usr/bin/env bash
# Runs the Kubernetes CSI conformance suite (csi-sanity) against
# `rds-csi controller` + `rds-csi node`, with the controller talking to the
# RouterOS simulator over real SSH.
#
#   hack/sanity.sh [extra csi-sanity flags]
#
# csi-sanity is found through $CSI_SANITY or PATH. The binary under test is
# $RDS_CSI_BIN, or target/debug/rds-csi built on the spot.
# Node specs are skipped (SANITY_SKIP, default "Node Service"): they need
# NVMe/TCP in the kernel, which the QEMU guest tier (hack/vm) has and a build
# machine may not; the skip is printed. Exit codes: 0 pass, 1 fail,
# 3 csi-sanity not found.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

sanity=${CSI_SANITY:-$(command -v csi-sanity || true)}
if [ -z "$sanity" ] || [ ! -x "$sanity" ]; then
  echo "SKIP csi-sanity: not found (set CSI_SANITY or put csi-sanity on PATH)"
  exit 3
fi
bin=${RDS_CSI_BIN:-}
if [ -z "$bin" ]; then
  (cd "$root" && cargo build --quiet --bin rds-csi)
  bin="$root/target/debug/rds-csi"
fi
skip=${SANITY_SKIP-Node Service}

work=$(mktemp -d /tmp/rds-csi-sanity.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" sim --listen 127.0.0.1:0 --state-dir "$work/sim" --data "$work/data" --pool-size 64G \
  >"$work/sim.out" 2>"$work/sim.log" &
pids+=($!)
for _ in $(seq 100); do
  grep -q '^host key fingerprint' "$work/sim.out" 2>/dev/null && break
  sleep 0.1
done
addr=$(sed -n 's/^RouterOS simulator listening on //p' "$work/sim.out")
fp=$(sed -n 's/^host key fingerprint: //p' "$work/sim.out")
[ -n "$addr" ] && [ -n "$fp" ] || { echo "simulator did not start:"; cat "$work/sim.log"; exit 1; }

"$bin" controller --endpoint "unix://$work/controller.sock" --rds-address "$addr" \
  --rds-key-file "$work/sim/client_ed25519" --rds-host-key "$fp" \
  --metrics-address off --volume-id-prefix "" --node sanity-node --standalone \
  --health-interval 1s --max-volume-size 1T 2>"$work/controller.log" &
pids+=($!)
echo "nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)" >"$work/hostnqn"
"$bin" node --endpoint "unix://$work/node.sock" --node-id sanity-node \
  --metrics-address off --host-nqn-file "$work/hostnqn" --host-id-file "$work/hostid" \
  --state-dir "$work/node-state" --staging-root "$work" --orphan-cleanup off \
  2>"$work/node.log" &
pids+=($!)
for _ in $(seq 100); do
  [ -S "$work/controller.sock" ] && [ -S "$work/node.sock" ] && break
  sleep 0.1
done

echo "csi-sanity: controller + node against the RouterOS simulator at $addr over SSH"
[ -n "$skip" ] && echo "csi-sanity: SKIPPING specs matching '$skip' (they need NVMe/TCP: the QEMU guest tier runs them)"
set +e
"$sanity" \
  --csi.endpoint "$work/node.sock" \
  --csi.controllerendpoint "$work/controller.sock" \
  --csi.stagingdir "$work/staging" \
  --csi.mountdir "$work/mount" \
  --csi.testvolumesize 1073741824 \
  --csi.testvolumeexpandsize 2147483648 \
  ${skip:+--ginkgo.skip "$skip"} \
  "$@" 2>&1 | tee "$work/sanity.out"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "---- controller log (tail) ----"; tail -n 40 "$work/controller.log"
fi
exit "$rc"
