# The simulator's real NVMe/TCP export, end to end, with only the
# controller and nvme-cli: CreateVolume makes a kernel target export of the
# backing file; connect, mkfs, mount, write, read back, disconnect,
# DeleteVolume tears the export down.
# timeout: 120
. /vm/lib.sh
v=pvc-smoke
vol_create $v 1G
nqn=$(vol_nqn $v)
[ "$(ctx_get "$(ctx_of $v)" nvmePort)" = 4420 ] || fail "nvmePort in the volume context"
[ -d "$CFS/subsystems/$nqn" ] || fail "no nvmet subsystem $nqn"
backing=$(cat "$CFS/subsystems/$nqn/namespaces/1/device_path")
[ "$backing" = "$DATA/pool/metal-csi/$v.img" ] || fail "device_path is $backing"
nvme_connect "$nqn" || fail "connect"
dev=/dev/$(dev_of "$nqn")
[ "$(cat /sys/block/${dev#/dev/}/size)" = $((1024 * 2048)) ] || fail "size of $dev"
run mkfs.ext4 -q -F "$dev"
mkdir -p $WORK/smoke && run mount "$dev" $WORK/smoke
write_data $WORK/smoke 8
run umount $WORK/smoke
used0=$(du -k "$backing" | cut -f1)
[ "$used0" -ge 8192 ] || fail "backing file holds ${used0} KiB: the data did not reach the target"
run mount "$dev" $WORK/smoke
verify_data $WORK/smoke || fail "checksums after remount"
run umount $WORK/smoke
nvme_disconnect "$nqn" || fail "disconnect"
run csi delete $v
rm -f "$(ctx_of $v)"
[ ! -e "$CFS/subsystems/$nqn" ] || fail "subsystem left after DeleteVolume"
[ -z "$(port_dirs_for 4420)" ] || fail "port 4420 left with no subsystem"
