#!/bin/sh
# Benchmark: the nvmet backend's controller RPCs, and what a fence's cut
# costs a host that keeps its place; the RDS (the simulator with
# --rds-fencing, over SSH in this guest) measured the same way beside it.
#
# 1. RPCs: BENCH_RUNS times CreateVolume (1 GiB raw block), ControllerPublish
#    (a new holder: its host admitted), ControllerUnpublish (the last
#    holder: the list emptied and the sessions cut) and DeleteVolume, one at
#    a time. Each RPC's time is the controller's own (the change of its
#    rds_csi_rpc_duration_seconds_sum over the call; metrics are read
#    before and after it, outside it), SSH commands and connections are the
#    change of rds_csi_ssh_commands_total and rds_csi_ssh_connects_total;
#    the time the client process saw (its start included) is beside it.
#    --health-interval 1h: only the start-up health check runs, so no
#    background command is counted.
# 2. Fence stall (FENCE_RUNS times per backend): a multi-node raw block
#    volume held by nodes A and B, both connected (B through its own node
#    plugin, default connect options: StorageClass reconnectDelay 5 s,
#    ctrl-loss-tmo unbounded; A by hand through the fabrics device, as in
#    the fence-rds scenario); on B's published device a loop of 4 KiB
#    O_DIRECT reads and writes stamps each completed pair. The cut: the
#    standalone controller is restarted (it forgets that A holds the
#    volume) and B is published again: the list held A, no holder any more,
#    so the controller cuts every session of the volume (see
#    docs/attachments.md#fencing-at-the-target; the same cut as for a
#    migration leaver out of service). B's stall is the longest gap between
#    two completed pairs. The control: A leaves cleanly (disconnects, then
#    ControllerUnpublish removes it without a cut).
#
# Both identities share one kernel, so B's device may send I/O on A's
# path before the cut; after it only B's path comes back (A is refused),
# as on two machines.
. /vm/lib.sh
N=${BENCH_RUNS:-10}
FR=${FENCE_RUNS:-3}
R=$WORK/bench-nvmet
rm -rf $R && mkdir -p $R
DD=/usr/bin/dd # GNU dd (iflag=direct)
[ -n "$EPOCHREALTIME" ] || { echo "BENCH error: this shell has no \$EPOCHREALTIME"; exit 1; }
command -v wget >/dev/null || { echo "BENCH error: no wget to read the metrics"; exit 1; }

host_identities $R
HA=$(cat $R/hostnqn-a) HB=$(cat $R/hostnqn-b) IDA=$(cat $R/hostid-a)
NODES="--node vm-a=$HA --node vm-b=$HB --allow-unverified-migration"

nvmet_host_up >$R/host.log 2>&1 || { echo "BENCH error: the nvmet host: $(tail -n 3 $R/host.log)"; exit 1; }
ctl_pid=
node_pid=
finish() {
    [ -z "$ctl_pid" ] || kill "$ctl_pid" 2>/dev/null
    [ -z "$node_pid" ] || kill "$node_pid" 2>/dev/null
    nvmet_host_down
}
trap finish EXIT

# start_ctl KIND: the controller of KIND (nvmet or rds) on $R/ctl.sock,
# metrics on 127.0.0.1:9811; waits until Probe says ready
start_ctl() {
    rm -f $R/ctl.sock
    # shellcheck disable=SC2086 # lists of flags
    if [ "$1" = nvmet ]; then
        start_nvmet_controller unix://$R/ctl.sock $VM/bench-ctl-nvmet.log \
            --metrics-address 127.0.0.1:9811 --health-interval 1h $NODES || return 1
        ctl_pid=$NVMET_PID
    else
        rds-csi controller --endpoint unix://$R/ctl.sock --rds-address 127.0.0.1:2222 \
            --rds-key-file $VM/sim/client_ed25519 \
            --rds-host-key "$(sed -n 's/^host key fingerprint: //p' $VM/sim.out)" \
            --metrics-address 127.0.0.1:9811 --health-interval 1h --volume-id-prefix "" \
            --standalone --rds-fencing true $NODES 2>>$VM/bench-ctl-rds.log &
        ctl_pid=$!
        wait_for 30 test -S $R/ctl.sock || return 1
    fi
    wait_for 30 sh -c "rds-csi csi --endpoint unix://$R/ctl.sock info 2>/dev/null | grep -q 'ready: true'"
}
stop_ctl() {
    kill "$ctl_pid" 2>/dev/null
    wait_for 20 sh -c "! kill -0 $ctl_pid 2>/dev/null"
    ctl_pid=
}
c() { rds-csi csi --endpoint unix://$R/ctl.sock "$@"; }
scrape() { wget -q -O - http://127.0.0.1:9811/metrics >"$1"; }
# mval FILE NAME [TEXT]: the sum of metric NAME's samples whose labels hold TEXT
mval() {
    awk -v n="$2" -v l="${3:-}" '
        index($1, n) == 1 && substr($1, length(n) + 1, 1) ~ /^(\{|)$/ && (l == "" || index($1, l)) { s += $2 }
        END { printf "%.6f\n", s }' "$1"
}
# op KIND RPC CMD...: runs one RPC through the client, records (in
# $R/ops.KIND) the controller's time, the client's, SSH commands and
# connections; the first run of each RPC also lists its commands
op() {
    local kind=$1 rpc=$2 a b; shift 2
    scrape $R/m0 || return 1
    stamp a
    "$@" >/dev/null 2>>$R/op.err || { echo "BENCH error: $rpc failed: $(tail -n 1 $R/op.err)"; return 1; }
    stamp b
    scrape $R/m1 || return 1
    awk -v rpc=$rpc -v kind=$kind -v client=$(ms $a $b) \
        -v s0="$(mval $R/m0 rds_csi_rpc_duration_seconds_sum "\"$rpc\"")" \
        -v s1="$(mval $R/m1 rds_csi_rpc_duration_seconds_sum "\"$rpc\"")" \
        -v c0="$(mval $R/m0 rds_csi_ssh_commands_total)" -v c1="$(mval $R/m1 rds_csi_ssh_commands_total)" \
        -v k0="$(mval $R/m0 rds_csi_ssh_connects_total)" -v k1="$(mval $R/m1 rds_csi_ssh_connects_total)" \
        'BEGIN { printf "%s %.1f %s %d %d\n", rpc, (s1 - s0) * 1000, client, c1 - c0, k1 - k0 }' >>$R/ops.$kind
    if [ ! -f $R/cmds.$kind.$rpc ]; then
        # the commands this RPC sent: rds_csi_ssh_commands_total samples that grew
        awk 'FNR == NR { if ($1 ~ /^rds_csi_ssh_commands_total\{/) v[$1] = $2; next }
             $1 ~ /^rds_csi_ssh_commands_total\{/ && $2 > v[$1] {
                 m = $1; sub(/.*command="/, "", m); sub(/".*/, "", m); printf "%s%s", sep, m; sep = " " }
             END { print "" }' $R/m0 $R/m1 >$R/cmds.$kind.$rpc
    fi
}

rpcs() {
    local kind=$1 i=1 v
    start_ctl $kind || { echo "BENCH error: the $kind controller did not start"; return 1; }
    scrape $R/start
    echo "$(mval $R/start rds_csi_ssh_connects_total) $(mval $R/start rds_csi_ssh_commands_total)" >$R/start.$kind
    while [ $i -le "$N" ]; do
        v=pvc-bn-$kind-$i
        op $kind CreateVolume c create $v --size 1G --block &&
            op $kind ControllerPublishVolume c publish $v --node vm-a --block &&
            op $kind ControllerUnpublishVolume c unpublish $v --node vm-a &&
            op $kind DeleteVolume c delete $v || return 1
        i=$((i + 1))
    done
    scrape $R/end
    echo "$(mval $R/end rds_csi_ssh_connects_total)" >$R/end.$kind
    stop_ctl
}

# ---- 2. the fence stall
# connect_as_a NQN PORT: host A's session (fabrics_connect)
connect_as_a() {
    fabrics_connect "transport=tcp,traddr=127.0.0.1,trsvcid=$2,nqn=$1,hostnqn=$HA,hostid=$IDA,ctrl_loss_tmo=5,reconnect_delay=1" >/dev/null
}
nb() { rds-csi csi --endpoint unix://$R/node-b.sock "$@"; }
# io_loop DEV OUT: 4 KiB O_DIRECT read then write until $R/stop, a stamp
# (microseconds) per completed pair
io_loop() {
    local done_at
    while [ ! -f $R/stop ]; do
        $DD if="$1" of=/dev/null bs=4k count=1 skip=256 iflag=direct 2>/dev/null &&
            $DD if=$R/blk of="$1" bs=4k count=1 seek=256 oflag=direct 2>/dev/null &&
            { stamp done_at; echo "$done_at" >>"$2"; }
    done
}
dd if=/dev/urandom of=$R/blk bs=4k count=1 2>/dev/null

# stall KIND HOW RUN: one measurement; HOW is cut or leave
stall() {
    local kind=$1 how=$2 run=$3 v=pvc-bs-$1-$2-$3 nqn port ca loop a b out=$R/io.$1.$2.$3
    c create $v --size 64M --block --multi-node --context-out $R/ctx-$v >/dev/null &&
        c publish $v --node vm-b --block --multi-node >/dev/null &&
        c publish $v --node vm-a --block --multi-node >/dev/null || return 1
    nqn=$(ctx_get $R/ctx-$v nqn) port=$(ctx_get $R/ctx-$v nvmePort)
    mkdir -p $R/b
    nb node-stage $v --staging-path $R/b/stg-$v --block --multi-node --context-file $R/ctx-$v >/dev/null &&
        nb node-publish $v --staging-path $R/b/stg-$v --target-path $R/b/pub-$v --block --multi-node \
            --context-file $R/ctx-$v >/dev/null || return 1
    connect_as_a "$nqn" "$port" || return 1
    wait_for 15 live_as "$nqn" "$HA" || return 1
    ca=$(ctrl_as "$nqn" "$HA")
    rm -f $R/stop
    io_loop $R/b/pub-$v $out &
    loop=$!
    sleep 3
    stamp a
    if [ "$how" = cut ]; then
        stop_ctl
        start_ctl $kind || return 1
        c publish $v --node vm-b --block --multi-node >/dev/null || return 1
    else
        nvme disconnect -d "$ca" >/dev/null 2>&1
        c unpublish $v --node vm-a >/dev/null || return 1
    fi
    stamp b
    wait_for 30 live_as "$nqn" "$HB" || echo "BENCH note: B not live 30 s after the $how"
    sleep 3
    touch $R/stop
    wait $loop
    # gaps between completed pairs, ms, and the RPCs' window
    awk -v a=$a -v b=$b 'NR > 1 { g = ($1 - p) / 1000; print g; if (g > max) { max = g; end = $1 } } { p = $1 }
        END { printf "MAX %.0f %.0f %.0f\n", max, (end - a) / 1000, (b - a) / 1000 > "/dev/stderr" }' $out \
        >$R/gaps.$kind.$how.$run 2>$R/max.$kind.$how.$run
    echo "$kind $how $run $(cat $R/max.$kind.$how.$run) p50gap $(p50 <$R/gaps.$kind.$how.$run) pairs $(wc -l <$out)" >>$R/stalls
    [ -z "$(ctrl_as "$nqn" "$HA")" ] || nvme disconnect -d "$(ctrl_as "$nqn" "$HA")" >/dev/null 2>&1
    nb node-unpublish $v --target-path $R/b/pub-$v >/dev/null
    nb node-unstage $v --staging-path $R/b/stg-$v >/dev/null
    c unpublish $v --node vm-b >/dev/null
    c delete $v >/dev/null
}

fences() {
    local kind=$1 i=1
    start_ctl $kind || { echo "BENCH error: the $kind controller did not start"; return 1; }
    mkdir -p $R/b
    rds-csi node --endpoint unix://$R/node-b.sock --node-id vm-b --metrics-address off \
        --staging-root $R/b --host-nqn-file $R/hostnqn-b --host-id-file $R/hostid-b \
        --orphan-cleanup off --events off --format-record off 2>>$VM/bench-node-b.log &
    node_pid=$!
    wait_for 30 test -S $R/node-b.sock || { echo "BENCH error: node B did not start"; return 1; }
    while [ $i -le "$FR" ]; do
        stall $kind cut $i || echo "BENCH error: $kind cut run $i failed"
        i=$((i + 1))
    done
    stall $kind leave 1 || echo "BENCH error: $kind leave run failed"
    kill $node_pid
    node_pid=
    stop_ctl
}

for kind in nvmet rds; do
    rpcs $kind || { echo "BENCH error: the $kind RPC runs failed"; tail -n 5 $VM/bench-ctl-$kind.log; }
    fences $kind || { echo "BENCH error: the $kind fence runs failed"; tail -n 5 $VM/bench-ctl-$kind.log; }
done

p95() { sort -n | awk '{a[NR] = $1} END {if (NR) { i = int(NR * 0.95); if (i < NR * 0.95) i++; print a[i] } else print "n/a"}'; }
row() { echo "BENCH $(printf '%-6s %-26s %9s %9s %9s %8s %9s %10s' "$@")"; }
echo "BENCH"
echo "BENCH controller RPCs, one at a time, $N of each (1 GiB raw block volumes); ms inside the controller, and as the client process saw it"
row backend rpc 'p50 ms' 'p95 ms' 'client p50' 'cmds' 'SSH conns' 'cmds max'
for kind in nvmet rds; do
    [ -s $R/ops.$kind ] || continue
    for rpc in CreateVolume ControllerPublishVolume ControllerUnpublishVolume DeleteVolume; do
        f() { awk -v r=$rpc -v k="$1" '$1 == r {print $k}' $R/ops.$kind; }
        row $kind $rpc "$(f 2 | p50)" "$(f 2 | p95)" "$(f 3 | p50)" "$(f 4 | p50)" "$(f 5 | awk '{s += $1} END {print s + 0}')" "$(f 4 | sort -n | tail -n 1)"
    done
    echo "BENCH $kind: at start $(cut -d' ' -f1 $R/start.$kind | cut -d. -f1) SSH connection(s) and $(cut -d' ' -f2 $R/start.$kind | cut -d. -f1) command(s); connections after the runs: $(cut -d. -f1 $R/end.$kind)"
    for rpc in CreateVolume ControllerPublishVolume ControllerUnpublishVolume DeleteVolume; do
        echo "BENCH $kind $rpc commands: $(cat $R/cmds.$kind.$rpc 2>/dev/null)"
    done
done
echo "BENCH"
echo "BENCH fence stall on the staying host B (4 KiB O_DIRECT read+write pairs on its published device): longest gap between two completed pairs; ends: ms from the restart (cut) or A's disconnect (leave) to the pair that ended it; rpc: that restart and publish, or the disconnect and unpublish"
echo "BENCH $(printf '%-6s %-6s %4s %10s %10s %10s %12s %7s' backend how run 'stall ms' 'ends ms' 'rpc ms' 'p50 gap ms' pairs)"
while read -r kind how run _ max end rpc _ gap _ pairs; do
    echo "BENCH $(printf '%-6s %-6s %4s %10s %10s %10s %12s %7s' $kind $how $run $max $end $rpc $gap $pairs)"
done <$R/stalls
echo "BENCH runs: $N RPC runs and $FR cuts per backend"
