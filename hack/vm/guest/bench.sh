#!/bin/sh
# Benchmark: NodeStage+NodePublish of a fresh 1 GiB ext4 volume through the
# node plugin vs the bare sequence a person would type (nvme connect, wait
# for the device, mkfs.ext4, mount, bind mount), and NodeUnpublish+
# NodeUnstage vs umount + nvme disconnect; p50 over BENCH_RUNS runs, each on
# a new volume (CreateVolume and DeleteVolume are not timed).
. /vm/lib.sh
N=${BENCH_RUNS:-10}
p50() { sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "n/a"}'; }
minmax() { sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) print lo "-" hi; else print "-"}'; }
: >$WORK/d.up; : >$WORK/d.down; : >$WORK/m.up; : >$WORK/m.down

manual_once() {
    v=$1 nqn=$(vol_nqn "$1") s=$WORK/m/staging/$1 t=$WORK/m/pod/$1
    mkdir -p "$s" "$t"
    t0=$(now_ms)
    nvme connect -t tcp -a 127.0.0.1 -s 4420 -n "$nqn" >/dev/null || return 1
    wait_for 30 has_dev "$nqn" || return 1
    dev=/dev/$(dev_of "$nqn")
    mkfs.ext4 -q -F "$dev" || return 1
    mount "$dev" "$s" && mount --bind "$s" "$t" || return 1
    t1=$(now_ms)
    umount "$t" && umount "$s" || return 1
    nvme disconnect -n "$nqn" >/dev/null || return 1
    wait_for 20 not_connected "$nqn" || return 1
    t2=$(now_ms)
    echo $((t1 - t0)) >>$WORK/m.up; echo $((t2 - t1)) >>$WORK/m.down
}

driver_once() {
    v=$1 t=$(tgt "$1")
    t0=$(now_ms)
    stage "$v" --fs-type ext4 2>/dev/null >&2 || return 1
    publish "$v" "$t" --fs-type ext4 2>/dev/null >&2 || return 1
    t1=$(now_ms)
    [ "$(fstype_at "$t")" = ext4 ] || return 1
    t2=$(now_ms)
    unpublish "$v" "$t" 2>/dev/null >&2 || return 1
    unstage "$v" 2>/dev/null >&2 || return 1
    t3=$(now_ms)
    echo $((t1 - t0)) >>$WORK/d.up; echo $((t3 - t2)) >>$WORK/d.down
}

driver_ok=1
ncsi node-stage --help >/dev/null 2>&1 || { driver_ok=0; echo "BENCH note: the node plugin has no node-stage yet; driver column empty"; }
i=1
while [ $i -le "$N" ]; do
    vol_create pvc-bench-m$i 1G >/dev/null 2>&1 || { echo "BENCH error: CreateVolume failed"; exit 1; }
    manual_once pvc-bench-m$i || echo "BENCH error: manual run $i failed"
    csi delete pvc-bench-m$i >/dev/null
    if [ $driver_ok = 1 ]; then
        vol_create pvc-bench-d$i 1G >/dev/null 2>&1
        driver_once pvc-bench-d$i || { echo "BENCH error: driver run $i failed"; cat $VM/node.log | tail -5; }
        csi delete pvc-bench-d$i >/dev/null 2>&1
    fi
    i=$((i + 1))
done
echo "BENCH"
echo "BENCH $(printf '%-34s %14s %14s %16s %16s' operation 'driver p50 ms' 'manual p50 ms' 'driver min-max' 'manual min-max')"
echo "BENCH $(printf '%-34s %14s %14s %16s %16s' 'stage+publish, 1 GiB ext4' "$(p50 <$WORK/d.up)" "$(p50 <$WORK/m.up)" "$(minmax <$WORK/d.up)" "$(minmax <$WORK/m.up)")"
echo "BENCH $(printf '%-34s %14s %14s %16s %16s' 'unpublish+unstage' "$(p50 <$WORK/d.down)" "$(p50 <$WORK/m.down)" "$(minmax <$WORK/d.down)" "$(minmax <$WORK/m.down)")"
echo "BENCH runs: driver $(wc -l <$WORK/d.up), manual $(wc -l <$WORK/m.up) (manual: nvme connect, wait for the device in sysfs, mkfs.ext4, mount, bind mount / umount x2, nvme disconnect)"
