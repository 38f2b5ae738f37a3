# Fencing at the RDS (--rds-fencing) with real kernel connections: the
# simulator mirrors a disk's nvme-tcp-server-allow-host-name into the kernel
# target's allowed_hosts, and a cut (export off and on) drops every session.
# A controller of its own with --rds-fencing and two node plugins, A and B,
# each with its own host NQN and host ID (--host-nqn-file, --host-id-file).
#
# 1. RWO raw block: publish to A, A stages and writes; ControllerUnpublish
#    of A without A unstaging (a forced detach): A's session is cut, its
#    reconnects are refused by the target, its I/O fails, and a new connect
#    as A is refused by the target; publish to B: B stages and reads A's
#    bytes.
# 2. RWX raw block (multi-node): the export admits A and B, both do I/O;
#    A leaves (disconnects, then ControllerUnpublish): the export admits B
#    alone, B's session was never cut (still live, no new controller on the
#    target, I/O works) and a connect as A is refused.
#
# Both identities share one kernel. The node plugins (and nvme-cli) treat a
# subsystem as connected whatever the host NQN of its controller, so in
# part 2 A's session is made by hand through the kernel's fabrics device
# (A's host NQN and ID, the options the node plugin passes) and ended with
# `nvme disconnect -d` of A's own controller: node A's NodeUnstageVolume
# would disconnect every controller of the subsystem, B's too, which two
# machines would not share. I/O on the shared device may take either path,
# so each host's own reads and writes go through its controller's queues
# (`nvme io-passthru` on its controller device).
# timeout: 150
. /vm/lib.sh
F=$VM/fence
FEP=unix://$F/controller.sock
rm -rf $F && mkdir -p $F
pids=
finish() {
    rc=$?
    for p in $pids; do kill "$p" 2>/dev/null; done
    [ $rc = 0 ] && return
    for l in fence-controller fence-node-a fence-node-b; do
        echo "---- $l.log (tail)"
        tail -n 12 $VM/$l.log
    done
    echo "---- kernel log (tail)"
    dmesg | tail -n 25
}
trap finish EXIT
DD=/usr/bin/dd # GNU dd (iflag=direct), not the shell's applet
# The target's refusals and new controllers are counted in the kernel log:
# start from an empty one, so nothing this scenario counts rolls out of it.
dmesg -c >/dev/null

host_identities $F
HA=$(cat $F/hostnqn-a) HB=$(cat $F/hostnqn-b) IDA=$(cat $F/hostid-a)
log "host A: $HA; host B: $HB"

fp=$(sed -n 's/^host key fingerprint: //p' $VM/sim.out)
rds-csi controller --endpoint "$FEP" --rds-address 127.0.0.1:2222 \
    --rds-key-file $VM/sim/client_ed25519 --rds-host-key "$fp" \
    --metrics-address off --health-interval 2s --volume-id-prefix "" --standalone \
    --rds-fencing true --allow-unverified-migration --node "vm-a=$HA" --node "vm-b=$HB" \
    2>>$VM/fence-controller.log &
pids="$pids $!"
for n in a b; do
    mkdir -p $F/$n
    # ctrl-loss-tmo 5 s: a fenced session gives up (and its I/O fails) soon
    rds-csi node --endpoint "unix://$F/node-$n.sock" --node-id vm-$n --metrics-address off \
        --staging-root $F/$n --host-nqn-file $F/hostnqn-$n --host-id-file $F/hostid-$n \
        --orphan-cleanup off --events off --format-record off --max-ctrl-loss-tmo 5 \
        2>>$VM/fence-node-$n.log &
    pids="$pids $!"
done
wait_for 30 test -S $F/controller.sock || fail "fencing controller did not start"
wait_for 30 test -S $F/node-a.sock || fail "node A did not start"
wait_for 30 test -S $F/node-b.sock || fail "node B did not start"

fcsi() { run rds-csi csi --endpoint "$FEP" "$@"; }
ncsi_on() { local n=$1; shift; run rds-csi csi --endpoint "unix://$F/node-$n.sock" "$@"; }
# allowed NQN: what the kernel target admits, "any" or the sorted host NQNs
allowed() {
    local s=$CFS/subsystems/$1
    [ "$(cat $s/attr_allow_any_host)" = 1 ] && { echo any; return; }
    ls $s/allowed_hosts | sort | tr '\n' ' ' | sed 's/ $//'
}
# node_up NODE VOL MULTI: NodeStageVolume + NodePublishVolume of a raw block volume
node_up() {
    ncsi_on "$1" node-stage "$2" --staging-path $F/$1/stg-$2 --block $3 --context-file $F/ctx-$2 &&
        ncsi_on "$1" node-publish "$2" --staging-path $F/$1/stg-$2 --target-path $F/$1/pub-$2 \
            --block $3 --context-file $F/ctx-$2
}
sum() { $DD if="$1" bs=1M count=4 iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1; }
# connect_as_a NQN PORT: a connection as host A (fabrics_connect)
connect_as_a() {
    local opts="transport=tcp,traddr=127.0.0.1,trsvcid=$2,nqn=$1,hostnqn=$HA,hostid=$IDA,ctrl_loss_tmo=5,reconnect_delay=1" out
    log "+ connect as host A: $opts"
    out=$(fabrics_connect "$opts") && log "connected: $out"
}
refused_log() { dmesg | grep -c "connect by host $HA for subsystem $1 not allowed" || :; }
# sessions_made NQN HOSTNQN: controllers the target made for that host
sessions_made() { dmesg | grep -c "for subsystem $1 for NQN $2\." || :; }
# session_read|session_write CTRL LBA FILE: 8 KiB of namespace 1 on CTRL's own queues
session_read() {
    nvme io-passthru "/dev/$1" --opcode=2 --namespace-id=1 --read --data-len=8192 \
        --cdw10="$2" --cdw12=$((8192 / lbs - 1)) --input-file="$3" >/dev/null && [ -s "$3" ]
}
session_write() {
    nvme io-passthru "/dev/$1" --opcode=1 --namespace-id=1 --write --data-len=8192 \
        --cdw10="$2" --cdw12=$((8192 / lbs - 1)) --input-file="$3" >/dev/null
}
refused_since() { [ "$(refused_log "$1")" -gt "$2" ]; }
not_live() { [ "$(ctrl_state "$1")" != live ]; }

# ---- 1. forced detach of A, then B
v=pvc-fence-rwo
fcsi create $v --size 64M --block --context-out $F/ctx-$v
nqn=$(ctx_get $F/ctx-$v nqn)
port=$(ctx_get $F/ctx-$v nvmePort)
[ "$(allowed "$nqn")" != any ] || fail "a new volume is open to any host"
fcsi publish $v --node vm-a --block
[ "$(allowed "$nqn")" = "$HA" ] || fail "after publish to A the target admits: $(allowed "$nqn")"
node_up a $v
ca=$(ctrl_as "$nqn" "$HA") || fail "no controller of $nqn as host A"
dd if=/dev/urandom of=$F/pattern bs=1M count=4 2>/dev/null
run $DD if=$F/pattern of=$F/a/pub-$v bs=1M oflag=direct conv=fsync 2>&1
want=$(sha256sum <$F/pattern | cut -d' ' -f1)
[ "$(sum $F/a/pub-$v)" = "$want" ] || fail "A reads back other bytes"
before=$(refused_log "$nqn")
t0=$(now_ms)
fcsi unpublish $v --node vm-a # A does not unstage: a forced detach
[ "$(allowed "$nqn")" != any ] && [ "$(allowed "$nqn")" != "$HA" ] ||
    fail "after the forced detach the target admits: $(allowed "$nqn")"
wait_for 10 not_live "$ca" ||
    fail "A's session was not cut ($ca $(ctrl_state "$ca"))"
log "A's controller $ca: $(ctrl_state "$ca") $(($(now_ms) - t0)) ms after the unpublish"
# A's open device: I/O fails once the kernel gives up reconnecting
if timeout 40 $DD if=$F/a/pub-$v of=/dev/null bs=4k count=1 iflag=direct; then
    fail "A still reads the volume after the forced detach"
fi
[ $(($(now_ms) - t0)) -lt 39000 ] || fail "A's read hung instead of failing"
log "A's read failed $(($(now_ms) - t0)) ms after the unpublish"
wait_for 10 refused_since "$nqn" "$before" ||
    fail "the target never refused A's reconnect"
wait_for 20 not_connected "$nqn" || fail "A's controller is still there: $(ctrl_state "$ca")"
before=$(refused_log "$nqn")
if connect_as_a "$nqn" "$port"; then fail "a connect as A succeeded after the forced detach"; fi
[ "$(refused_log "$nqn")" -gt "$before" ] || fail "A's connect failed, but not as refused by the target"
fcsi publish $v --node vm-b --block
[ "$(allowed "$nqn")" = "$HB" ] || fail "after publish to B the target admits: $(allowed "$nqn")"
node_up b $v
ctrl_as "$nqn" "$HB" >/dev/null || fail "B is not connected as host B"
[ "$(sum $F/b/pub-$v)" = "$want" ] || fail "B does not read A's bytes"
ncsi_on b node-unpublish $v --target-path $F/b/pub-$v
ncsi_on b node-unstage $v --staging-path $F/b/stg-$v
fcsi unpublish $v --node vm-b
# node A's record of the volume it never unstaged: its unstage still works
ncsi_on a node-unpublish $v --target-path $F/a/pub-$v
ncsi_on a node-unstage $v --staging-path $F/a/stg-$v
fcsi delete $v

# ---- 2. RWX: both admitted, the leaver removed without a cut
w=pvc-fence-rwx
fcsi create $w --size 64M --block --multi-node --context-out $F/ctx-$w
nqn=$(ctx_get $F/ctx-$w nqn)
port=$(ctx_get $F/ctx-$w nvmePort)
fcsi publish $w --node vm-b --block --multi-node
fcsi publish $w --node vm-a --block --multi-node
both=$(printf '%s\n%s\n' "$HA" "$HB" | sort | tr '\n' ' ' | sed 's/ $//')
[ "$(allowed "$nqn")" = "$both" ] || fail "the RWX window admits: $(allowed "$nqn")"
node_up b $w --multi-node
cb=$(ctrl_as "$nqn" "$HB") || fail "B is not connected as host B"
connect_as_a "$nqn" "$port" || fail "A was refused during the RWX window"
wait_for 15 live_as "$nqn" "$HA" ||
    fail "A's controller did not come up"
ca=$(ctrl_as "$nqn" "$HA")
log "A's controller: $ca, B's: $cb"
# B writes through its published device; each host then reads and writes
# on its own session (the controller's own queues: one host's I/O cannot
# take the other's path)
lbs=$(cat /sys/block/$(dev_of "$nqn")/queue/logical_block_size)
dd if=/dev/urandom of=$F/pattern2 bs=1M count=4 2>/dev/null
run $DD if=$F/pattern2 of=$F/b/pub-$w bs=1M oflag=direct conv=fsync 2>&1
head -c 8192 $F/pattern2 >$F/head2
session_read "$ca" 0 $F/a-read || fail "A's read on its own session"
cmp $F/a-read $F/head2 || fail "A reads other bytes than B wrote"
dd if=/dev/urandom of=$F/a-wrote bs=8192 count=1 2>/dev/null
session_write "$ca" $((8 * 1048576 / lbs)) $F/a-wrote || fail "A's write on its own session"
session_read "$cb" $((8 * 1048576 / lbs)) $F/b-read || fail "B's read on its own session"
cmp $F/b-read $F/a-wrote || fail "B reads other bytes than A wrote"
made_b=$(sessions_made "$nqn" "$HB")
[ "$made_b" -ge 1 ] || fail "no target controller for B in the kernel log (did its wording change?)"
run nvme disconnect -d "$ca" >&2 || fail "A's disconnect"
fcsi unpublish $w --node vm-a
[ "$(allowed "$nqn")" = "$HB" ] || fail "after A left the target admits: $(allowed "$nqn")"
# a cut would show as B's controller reconnecting (5 s apart) and as a new
# controller on the target
sleep 2
[ "$(ctrl_state "$cb")" = live ] || fail "B's controller is $(ctrl_state "$cb") after A left"
[ "$(sessions_made "$nqn" "$HB")" = "$made_b" ] || fail "B's session was cut: the target made it a new controller"
dd if=/dev/urandom of=$F/pattern3 bs=1M count=4 2>/dev/null
run $DD if=$F/pattern3 of=$F/b/pub-$w bs=1M oflag=direct conv=fsync 2>&1
[ "$(sum $F/b/pub-$w)" = "$(sha256sum <$F/pattern3 | cut -d' ' -f1)" ] || fail "B's I/O after A left"
before=$(refused_log "$nqn")
if connect_as_a "$nqn" "$port"; then fail "a connect as A succeeded after A left the RWX window"; fi
[ "$(refused_log "$nqn")" -gt "$before" ] || fail "A's connect failed, but not as refused by the target"
ncsi_on b node-unpublish $w --target-path $F/b/pub-$w
ncsi_on b node-unstage $w --staging-path $F/b/stg-$w
fcsi unpublish $w --node vm-b
fcsi delete $w
echo "forced detach: A's I/O failed, reconnects refused, B read A's bytes; RWX: B never cut" >"$NOTE"
