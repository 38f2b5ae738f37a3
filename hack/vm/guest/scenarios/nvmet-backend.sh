# The nvmet backend for real: a controller with --backend nvmet manages the
# guest itself as its Linux storage host, over SSH (the guest's sshd, its
# host key pinned) with an LVM thin pool on a loop device and the kernel
# NVMe target on 127.0.0.1:4421 (the simulator keeps 4420). The usual node
# plugin, whose host NQN the controller admits on publish:
# create, publish, stage (ext4) and write; a snapshot; new data; a volume
# restored from the snapshot reads the first data, a clone of the volume
# the second; everything deleted leaves only the thin pool.
# nvmet-backend-sanity (this file with `sanity`) then runs csi-sanity's
# whole suite against this controller (its 128-character volume name
# lives under a derived LVM name, see docs/configuration.md).
# timeout: 900
. /vm/lib.sh
N=$VM/nvmet
VG=$NVMET_VG
CTRL_EP=unix://$N/controller.sock # every csi helper talks to this controller
rm -rf $N && mkdir -p $N
pid=
finish() {
    rc=$?
    [ -z "$pid" ] || kill "$pid" 2>/dev/null
    nvmet_host_down
    [ $rc = 0 ] || { echo "---- nvmet-controller.log (tail)"; tail -n 20 $VM/nvmet-controller.log; }
}
trap finish EXIT

nvmet_host_up || fail "sshd, the volume group and thin pool"
start_nvmet_controller "$CTRL_EP" $VM/nvmet-controller.log --metrics-address off --health-interval 2s \
    --node "$NODE_ID=$(cat /etc/nvme/hostnqn)" || fail "the nvmet controller did not start"
pid=$NVMET_PID
wait_for 30 sh -c "rds-csi csi --endpoint $CTRL_EP info 2>/dev/null | grep -q 'ready: true'" ||
    log "Probe: $(rds-csi csi --endpoint "$CTRL_EP" info 2>&1 | tail -n 3)"
run csi capacity

# up VOL [create flags]: CreateVolume, ControllerPublish, stage and publish ext4
up() {
    local v=$1; shift
    vol_create "$v" 1G --fs-type ext4 "$@" || fail "create $v"
    run csi publish "$v" --node $NODE_ID || fail "ControllerPublish $v"
    stage "$v" --fs-type ext4 || fail "stage $v"
    publish "$v" "$(tgt "$v")" --fs-type ext4 || fail "publish $v"
}
down() { vol_down "$1" && run csi unpublish "$1" --node $NODE_ID && run csi delete "$1"; }

v=pvc-nv-src r=pvc-nv-restore c=pvc-nv-clone
up $v
nqn=$(vol_nqn $v)
[ "$(cat $CFS/subsystems/$nqn/attr_allow_any_host)" = 0 ] || fail "$v is open to any host"
[ "$(ls $CFS/subsystems/$nqn/allowed_hosts)" = "$(cat /etc/nvme/hostnqn)" ] ||
    fail "$v admits $(ls $CFS/subsystems/$nqn/allowed_hosts), not this node"
write_data "$(tgt $v)" 8
cp "$WORK/sums.$(tgt $v | tr / _)" $N/sums.first
out=$(csi create-snapshot pvc-nv-snap --source $v) || fail "CreateSnapshot: $out"
echo "$out"
snap=$(echo "$out" | awk '$1 == "created" && $2 == "snapshot" {print $3}')
[ -n "$snap" ] || fail "no snapshot ID in: $out"
write_data "$(tgt $v)" 8
up $r --from-snapshot "$snap"
cp $N/sums.first "$WORK/sums.$(tgt $r | tr / _)"
verify_data "$(tgt $r)" || fail "the restored volume does not hold the snapshot's data"
up $c --from-volume $v
verify_data "$(tgt $c)" "$(tgt $v)" || fail "the clone does not hold its source's data"
verify_data "$(tgt $v)" || fail "the source lost its data"
run lvs --noheadings -o lv_name,pool_lv,lv_attr $VG
down $r && down $c && down $v || fail "teardown"
run csi delete-snapshot "$snap" || fail "DeleteSnapshot"
left=$(lvs --noheadings -o lv_name $VG | tr -d ' ' | grep -v '^thin$' || :)
[ -z "$left" ] || fail "logical volumes left behind: $left"
for s in $CFS/subsystems/*; do
    case ${s##*/} in *pvc-nv-*) fail "export left behind: ${s##*/}" ;; esac
done

note="create, snapshot, restore, clone read back; nothing left"
if [ "${1:-}" = sanity ]; then
    command -v csi-sanity >/dev/null || { echo "csi-sanity not shared into the guest"; exit 77; }
    SANITY_CONTROLLER=$N/controller.sock \
        sh -e /vm/scenarios/sanity.sh || fail "csi-sanity against the nvmet backend"
    note="$note; csi-sanity: $(cat "$NOTE")"
fi
echo "$note" >"$NOTE"
