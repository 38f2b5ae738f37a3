# Orphan cleanup at node plugin start touches only subsystems whose NQN has
# the driver's prefix: a connected, non-matching subsystem (say a diskless
# node's root disk) stays connected; an orphan of ours is disconnected.
# timeout: 150
. /vm/lib.sh
# A foreign subsystem, made by hand on its own port.
other=nqn.2014-08.org.example:root-disk
truncate -s 64M $DATA/other.img
mkdir $CFS/subsystems/$other
echo 1 >$CFS/subsystems/$other/attr_allow_any_host
mkdir $CFS/subsystems/$other/namespaces/1
echo -n $DATA/other.img >$CFS/subsystems/$other/namespaces/1/device_path
echo 1 >$CFS/subsystems/$other/namespaces/1/buffered_io
echo 1 >$CFS/subsystems/$other/namespaces/1/enable
mkdir $CFS/ports/77
echo ipv4 >$CFS/ports/77/addr_adrfam; echo tcp >$CFS/ports/77/addr_trtype
echo 127.0.0.1 >$CFS/ports/77/addr_traddr; echo 4477 >$CFS/ports/77/addr_trsvcid
ln -s $CFS/subsystems/$other $CFS/ports/77/subsystems/$other
nvme_connect $other 4477 || fail "connect the foreign subsystem"
# An orphan of ours: connected, but nothing staged.
v=pvc-orphan
vol_create $v 1G
nvme_connect "$(vol_nqn $v)" || fail "connect the orphan"
# One in use must stay too.
u=pvc-inuse
vol_create $u 1G
stage $u --fs-type ext4
restart_node
wait_for 60 not_connected "$(vol_nqn $v)" || fail "the orphan $v is still connected"
connected $other || fail "the foreign subsystem $other was disconnected"
connected "$(vol_nqn $u)" || fail "the staged volume $u was disconnected"
unstage $u
nvme_disconnect $other
