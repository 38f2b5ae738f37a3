# ControllerExpandVolume grows the backing file and the simulator tells the
# kernel target: a connected host sees the new size without reconnecting.
# timeout: 90
. /vm/lib.sh
v=pvc-resize
vol_create $v 1G
nqn=$(vol_nqn $v)
nvme_connect "$nqn" || fail connect
b=$(dev_of "$nqn")
[ "$(cat /sys/block/$b/size)" = $((1024 * 2048)) ] || fail "initial size"
run csi expand $v --size 2G
wait_for 20 sh -c "[ \$(cat /sys/block/$b/size) = $((2048 * 2048)) ]" \
    || fail "host still sees $(cat /sys/block/$b/size) sectors"
nvme_disconnect "$nqn"
