# Two backends behind one controller, for real: the simulator's RDS (the
# default backend, exported by the kernel target on 4420) and the guest
# itself as an nvmet Linux host `linux1` (LVM thin pool on a loop device,
# the kernel target on 4421), named in --backends-file. The node plugin,
# restarted with the same file, reports linux1 reachable (its host
# answers on the portal: before its first export the kernel target does
# not listen there yet, and refuses) and treats linux1's subsystems as the
# driver's. A volume on each
# backend: created where the class says (the linux1 one with its name in
# the ID), published (linux1 admits only this node's host NQN), staged,
# written and read back over NVMe/TCP, torn down and deleted on its own
# backend.
# timeout: 300
. /vm/lib.sh
T=$VM/two
VG=$NVMET_VG
CTRL_EP=unix://$T/controller.sock
rm -rf $T && mkdir -p $T
pid=
base_args=${NODE_ARGS:-}
finish() {
    rc=$?
    [ -z "$pid" ] || kill "$pid" 2>/dev/null
    nvmet_host_down
    # the node plugin as the other scenarios expect it
    NODE_ARGS=$base_args
    stop_node
    start_node
    [ $rc = 0 ] || { echo "---- two-controller.log (tail)"; tail -n 20 $VM/two-controller.log; }
}
trap finish EXIT

nvmet_host_up || fail "the nvmet host (sshd, volume group and thin pool)"
cat >$T/backends.json <<EOF
{"backends": [{"name": "linux1", "backend": "nvmet",
  "rds-address": "127.0.0.1:22", "rds-user": "root", "rds-key-file": "$VM/ssh/client_ed25519",
  "rds-host-key": "$(sshd_fingerprint)", "nvmet-volume-group": "$VG", "nvmet-thin-pool": "thin",
  "nvmet-listen-address": "127.0.0.1", "nvmet-port": 4421}]}
EOF
rds-csi controller --endpoint "$CTRL_EP" --rds-address 127.0.0.1:2222 \
    --rds-key-file $VM/sim/client_ed25519 --rds-host-key "$(sed -n 's/^host key fingerprint: //p' $VM/sim.out)" \
    --backends-file $T/backends.json --metrics-address off --health-interval 2s --standalone \
    --node "$NODE_ID=$(cat /etc/nvme/hostnqn)" 2>>$VM/two-controller.log &
pid=$!
wait_for 30 test -S $T/controller.sock || fail "the controller did not start"
stop_node
NODE_ARGS="$base_args --backends-file $T/backends.json"
start_node || fail "node plugin with --backends-file"
info=$(ncsi node-info) || fail "NodeGetInfo: $info"
echo "$info"
echo "$info" | grep -q "rds.csi.srvlab.io/backend-linux1" || fail "the node does not report linux1 reachable"

# up NAME ID [create flags]: CreateVolume NAME (ID: what the controller
# answers), ControllerPublish, stage and publish ext4, write
up() {
    local name=$1 v=$2; shift 2
    vol_create "$name" 1G --fs-type ext4 "$@" || fail "create $name"
    [ "$name" = "$v" ] || cp "$(ctx_of "$name")" "$(ctx_of "$v")"
    run csi get "$v" >/dev/null || fail "$v is not the volume's ID"
    run csi publish "$v" --node $NODE_ID || fail "ControllerPublish $v"
    stage "$v" --fs-type ext4 || fail "stage $v"
    publish "$v" "$(tgt "$v")" --fs-type ext4 || fail "publish $v"
    write_data "$(tgt "$v")" 4
    verify_data "$(tgt "$v")" || fail "$v does not read back what was written"
}
down() { vol_down "$1" && run csi unpublish "$1" --node $NODE_ID && run csi delete "$1"; }

up pvc-tb-rds pvc-tb-rds
up pvc-tb-nv linux1-pvc-tb-nv --param backend=linux1
nqn=$(vol_nqn linux1-pvc-tb-nv)
[ "$nqn" = "nqn.2000-02.com.mikrotik:linux1-pvc-tb-nv" ] || fail "linux1's volume NQN is $nqn"
[ "$(ls $CFS/subsystems/$nqn/allowed_hosts)" = "$(cat /etc/nvme/hostnqn)" ] ||
    fail "linux1's export admits $(ls $CFS/subsystems/$nqn/allowed_hosts), not this node"
lvs --noheadings -o lv_name $VG | grep -q "linux1-pvc-tb-nv" || fail "no LV for linux1's volume"
lvs --noheadings -o lv_name $VG | grep -q "pvc-tb-rds" && fail "the RDS volume landed on linux1"
connected "$nqn" || fail "not connected to linux1's subsystem"
run csi list | grep -q "linux1-pvc-tb-nv" || fail "ListVolumes misses linux1's volume"
down linux1-pvc-tb-nv && down pvc-tb-rds || fail "teardown"
left=$(lvs --noheadings -o lv_name $VG | tr -d ' ' | grep -v '^thin$' || :)
[ -z "$left" ] || fail "logical volumes left on linux1: $left"
echo "a volume on each backend written and read over NVMe/TCP; node reports linux1; nothing left" >"$NOTE"
