#!/bin/sh
# Benchmark: NodeStage+NodePublish of a fresh 1 GiB ext4 volume through the
# node plugin vs the bare sequence a person would type (nvme connect, wait
# for the device, mkfs.ext4, mount, bind mount), and NodeUnpublish+
# NodeUnstage vs umount + nvme disconnect; p50 over BENCH_RUNS runs, each on
# a new volume (CreateVolume and DeleteVolume are not timed).
#
# Also reported, from the same runs:
# - where the driver's time goes: the node plugin logs each RPC's steps
#   (target `node_steps` at debug level; nvme::steps) and its own total;
#   the driver column is the two RPCs as one client process saw them on one
#   gRPC connection (`rds-csi csi node-mount` / `node-unmount`), as kubelet
#   calls them; starting that process is reported beside it, and a no-op
#   call (NodeGetInfo) times the client process alone;
# - the manual sequence step by step;
# - device detection: the time from the kernel creating the block device
#   (the ctime devtmpfs gives the /dev node as the device is added) to the
#   driver seeing it, from the driver's log; and the same for the manual
#   sequence's 0.2 s shell poll, with GNU date reading the node's time.
#
# Timestamps come from busybox sh's $EPOCHREALTIME, which costs no process
# (the old now_ms started /usr/bin/date inside every timed interval).
. /vm/lib.sh
N=${BENCH_RUNS:-10}
R=$WORK/bench
rm -rf $R && mkdir -p $R
: >$R/d.up; : >$R/d.down; : >$R/d.up_process; : >$R/d.down_process; : >$R/m.up; : >$R/m.down; : >$R/noop
: >$R/noop9p; : >$R/m.steps; : >$R/d.steps; : >$R/d.rpc; : >$R/d.detect; : >$R/m.detect

[ -n "$EPOCHREALTIME" ] || { echo "BENCH error: this shell has no \$EPOCHREALTIME"; exit 1; }
# The driver's binary from RAM, like the tools of the manual sequence (the
# initramfs), not from the 9p share: $VM/shadow comes first on PATH.
mkdir -p $VM/shadow && cp /share/bin/rds-csi $VM/shadow/rds-csi
# The node plugin again, from there, now logging its per-step timings.
export RDS_CSI_LOG=info,node_steps=debug
# (its stdout must not be guest.sh's pipe to tee, or tee waits for the
# node plugin to exit and the guest never powers off)
restart_node >/dev/null || { echo "BENCH error: the node plugin did not restart"; exit 1; }
unset RDS_CSI_LOG

manual_once() {
    local v=$1 i=$2 nqn s t dev created a b c d e f g h x0 x1
    nqn=$(vol_nqn "$v") s=$WORK/m/staging/$v t=$WORK/m/pod/$v
    mkdir -p "$s" "$t"
    stamp a
    nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$nqn" >/dev/null || return 1
    stamp b
    wait_for 30 has_dev "$nqn" || return 1
    dev=/dev/$(dev_of "$nqn")
    stamp c
    # not timed: when the kernel made the node (before mkfs writes to it)
    created=$(/usr/bin/date -r "$dev" +%s%N)
    stamp x1
    x0=$c
    # the driver's options (see HostCommand::Mkfs), so mkfs does the same
    # work in both columns; -q -F as a person would type it
    mkfs.ext4 -q -F -m 0 -E nodiscard,lazy_itable_init=1 "$dev" || return 1
    stamp d
    mount "$dev" "$s" || return 1
    stamp e
    mount --bind "$s" "$t" || return 1
    stamp f
    umount "$t" && umount "$s" || return 1
    stamp g
    nvme disconnect -n "$nqn" >/dev/null || return 1
    wait_for 20 not_connected "$nqn" || return 1
    stamp h
    local skip=$((x1 - x0))
    echo $(ms $a $((f - skip))) >>$R/m.up
    echo $(ms $f $h) >>$R/m.down
    echo "$i connect $(ms $a $b)" >>$R/m.steps
    echo "$i device_wait $(ms $b $c)" >>$R/m.steps
    echo "$i mkfs $(ms $x1 $d)" >>$R/m.steps
    echo "$i mount $(ms $d $e)" >>$R/m.steps
    echo "$i bind_mount $(ms $e $f)" >>$R/m.steps
    echo "$i umount_x2 $(ms $f $g)" >>$R/m.steps
    echo "$i disconnect+wait $(ms $g $h)" >>$R/m.steps
    echo $((c / 1000 - created / 1000000)) >>$R/m.detect
}

driver_once() {
    local v=$1 i=$2 s t ctx a c d e lines up down
    s=$(stg "$v") t=$(tgt "$v") ctx=$(ctx_of "$v")
    mkdir -p "$s" "$(dirname "$t")"
    lines=$(wc -l <$VM/node.log)
    # One client process per direction, the RPCs on one connection as
    # kubelet makes them; it prints the two RPCs' time as it saw them.
    stamp a
    up=$(ncsi node-mount "$v" --staging-path "$s" --target-path "$t" --context-file "$ctx" --fs-type ext4 2>&1) || { echo "$up"; return 1; }
    stamp c
    [ "$(fstype_at "$t")" = ext4 ] || return 1
    stamp d
    down=$(ncsi node-unmount "$v" --staging-path "$s" --target-path "$t" 2>&1) || { echo "$down"; return 1; }
    stamp e
    # "mounted V at T in N ms (NodeStageVolume A ms, NodePublishVolume B ms)"
    echo "$up" | awk '{for (k = 1; k <= NF; k++) if ($k == "in") {print $(k + 1); exit}}' >>$R/d.up
    echo "$down" | awk '{for (k = 1; k <= NF; k++) if ($k == "in") {print $(k + 1); exit}}' >>$R/d.down
    echo $(ms $a $c) >>$R/d.up_process
    echo $(ms $d $e) >>$R/d.down_process
    for out in "$up" "$down"; do
        echo "$out" | awk -v run="$i" '{for (k = 1; k <= NF; k++) if ($k ~ /^\(?Node[A-Za-z]+Volume$/) {r = $k; sub(/^\(/, "", r); print run, r, $(k + 1)}}' >>$R/d.rpc
    done
    # the node plugin's own account of this run
    tail -n +$((lines + 1)) $VM/node.log | awk -v run="$i" -v vol="$v" '
        / node_steps: timing / && index($0, " volume=" vol " ") {
            rpc = ""; total = ""
            for (k = 1; k <= NF; k++) {
                if ($k ~ /^rpc=/) rpc = substr($k, 5)
                if ($k ~ /^total_ms=/) total = substr($k, 10)
            }
            print run, rpc, "total", total >>"'$R'/d.steps"
            s = substr($0, index($0, " steps=") + 7)
            n = split(s, parts, " ")
            for (k = 1; k <= n; k++) {
                split(parts[k], kv, "=")
                print run, rpc, kv[1], kv[2] >>"'$R'/d.steps"
            }
        }
        / node_steps: device detected / {
            for (k = 1; k <= NF; k++) {
                if ($k ~ /^detect_us=/) us = substr($k, 11)
                if ($k ~ /^polls=/) polls = substr($k, 7)
            }
            print us, polls >>"'$R'/d.detect"
        }' 2>/dev/null
}

ok=1
i=1
while [ $i -le "$N" ]; do
    vol_create pvc-bench-m$i 1G >/dev/null 2>&1 || { echo "BENCH error: CreateVolume failed"; exit 1; }
    manual_once pvc-bench-m$i $i || echo "BENCH error: manual run $i failed"
    csi delete pvc-bench-m$i >/dev/null
    vol_create pvc-bench-d$i 1G >/dev/null 2>&1
    driver_once pvc-bench-d$i $i || { ok=0; echo "BENCH error: driver run $i failed"; tail -5 $VM/node.log; }
    csi delete pvc-bench-d$i >/dev/null 2>&1
    # the client alone: a no-op RPC through the same `rds-csi csi` process,
    # from RAM (as timed above) and from the 9p share (as it used to be)
    stamp a; ncsi node-info >/dev/null 2>&1; stamp b
    echo $(ms $a $b) >>$R/noop
    stamp a; /share/bin/rds-csi csi --endpoint "$NODE_EP" node-info >/dev/null 2>&1; stamp b
    echo $(ms $a $b) >>$R/noop9p
    i=$((i + 1))
done

row() { echo "BENCH $(printf '%-38s %14s %14s %16s %16s' "$@")"; }
echo "BENCH"
row operation 'driver p50 ms' 'manual p50 ms' 'driver min-max' 'manual min-max'
row 'stage+publish, 1 GiB ext4' "$(p50 <$R/d.up)" "$(p50 <$R/m.up)" "$(minmax <$R/d.up)" "$(minmax <$R/m.up)"
row 'unpublish+unstage' "$(p50 <$R/d.down)" "$(p50 <$R/m.down)" "$(minmax <$R/d.down)" "$(minmax <$R/m.down)"
row '  with the client process start' "$(p50 <$R/d.up_process)" '' "$(minmax <$R/d.up_process)" ''
row '  (unpublish+unstage, same)' "$(p50 <$R/d.down_process)" '' "$(minmax <$R/d.down_process)" ''
echo "BENCH driver: the two RPCs as one client saw them over one gRPC connection, as kubelet calls them (rds-csi csi node-mount / node-unmount); the indented rows add starting that client process, which kubelet does not do"
echo "BENCH runs: driver $(wc -l <$R/d.up), manual $(wc -l <$R/m.up) (manual: nvme connect, wait for the device in sysfs, mkfs.ext4 with the driver's options, mount, bind mount / umount x2, nvme disconnect)"

echo "BENCH"
echo "BENCH where the time goes, p50 ms over the runs (min-max)"
echo "BENCH manual sequence:"
for st in connect device_wait mkfs mount bind_mount umount_x2 disconnect+wait; do
    echo "BENCH $(printf '  %-24s %8s %14s' "$st" "$(awk -v s=$st '$2 == s {print $3}' $R/m.steps | p50)" "($(awk -v s=$st '$2 == s {print $3}' $R/m.steps | minmax))")"
done
for rpc in NodeStageVolume NodePublishVolume NodeUnpublishVolume NodeUnstageVolume; do
    seen=$(awk -v r=$rpc '$2 == r && $3 == "total" {print $4}' $R/d.steps | p50)
    [ "$seen" = n/a ] && { echo "BENCH driver $rpc: no step log (a node plugin without nvme::steps)"; continue; }
    cli=$(awk -v r=$rpc '$2 == r {print $3}' $R/d.rpc | p50)
    echo "BENCH driver $rpc: inside the node plugin $seen ms${cli:+, as the client saw it (gRPC included) ${cli%n/a} ms}:"
    awk -v r=$rpc '$2 == r && $3 != "total" && !seen[$3]++ {print $3}' $R/d.steps | while read -r st; do
        echo "BENCH $(printf '  %-24s %8s %14s' "$st" "$(awk -v r=$rpc -v s=$st '$2 == r && $3 == s {print $4}' $R/d.steps | p50)" "($(awk -v r=$rpc -v s=$st '$2 == r && $3 == s {print $4}' $R/d.steps | minmax))")"
    done
done
echo "BENCH a no-op call (rds-csi csi node-info: client process + gRPC): p50 $(p50 <$R/noop) ms ($(minmax <$R/noop)); the binary run from the 9p share instead: p50 $(p50 <$R/noop9p) ms ($(minmax <$R/noop9p))"
echo "BENCH"
echo "BENCH device detection, from the kernel adding the device (/dev node ctime) to it being seen:"
if [ -s $R/d.detect ]; then
    echo "BENCH   driver: p50 $(awk '{printf "%.1f\n", $1 / 1000}' $R/d.detect | p50) ms ($(awk '{printf "%.1f\n", $1 / 1000}' $R/d.detect | minmax)); found on the first sysfs look in $(awk '$2 == 1' $R/d.detect | wc -l) of $(wc -l <$R/d.detect) runs"
else
    echo "BENCH   driver: not logged (a node plugin without the detection log)"
fi
echo "BENCH   manual (0.2 s shell poll): p50 $(p50 <$R/m.detect) ms ($(minmax <$R/m.detect))"
[ $ok = 1 ] || echo "BENCH note: some driver runs failed"
