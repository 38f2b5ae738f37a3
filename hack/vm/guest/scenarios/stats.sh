# NodeGetVolumeStats: byte counts follow writes, and the volume condition
# tells a healthy volume from one whose target is gone.
# timeout: 150
. /vm/lib.sh
v=pvc-stats
vol_up $v ext4
t=$(tgt $v)
val() { sed -n "s/.*$1=\([0-9]*\).*/\1/p" $WORK/st | head -1; }
run ncsi node-stats $v --volume-path "$t" | tee $WORK/st
total=$(val total) used0=$(val used) avail=$(val available)
[ "${total:-0}" -gt $((400 << 20)) ] || fail "total=$total"
[ $((used0 + avail)) -le "$total" ] || fail "used+available > total"
grep -q 'abnormal=false' $WORK/st || fail "healthy volume reported abnormal"
write_data "$t" 32
run ncsi node-stats $v --volume-path "$t" | tee $WORK/st
[ "$(val used)" -ge $((used0 + (30 << 20))) ] || fail "used did not grow by the 32 MiB written"
# The target goes away for good.
target_port_down 4420
nqn=$(vol_nqn $v); c=$(ctrl_of "$nqn")
wait_for 20 sh -c "[ \"\$(cat /sys/class/nvme/$c/state)\" != live ]" || fail "still live"
run ncsi node-stats $v --volume-path "$t" | tee $WORK/st || true
grep -q 'abnormal=true' $WORK/st || fail "unreachable target not reported abnormal"
target_port_up 4420
wait_for 60 sh -c "[ \"\$(cat /sys/class/nvme/$c/state)\" = live ]" || fail "no reconnect"
run ncsi node-stats $v --volume-path "$t" | tee $WORK/st
grep -q 'abnormal=false' $WORK/st || fail "abnormal after the target came back"
verify_data "$t" || fail "data after the outage"
vol_down $v
