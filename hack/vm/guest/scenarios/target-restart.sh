# A target restart (the port removed and re-added) while a filesystem is
# mounted: the host reconnects by itself and I/O resumes. Plain nvme-cli,
# then the same through the node plugin when it has the data path.
# timeout: 150
. /vm/lib.sh
v=pvc-restart
vol_create $v 1G
nqn=$(vol_nqn $v)
if ncsi node-stage --help >/dev/null 2>&1; then
    stage $v --fs-type ext4
    t=$(tgt $v)
    publish $v "$t" --fs-type ext4
    m=$t
else
    log "node-stage not available yet: connecting with nvme-cli"
    nvme_connect "$nqn" || fail connect
    run mkfs.ext4 -q -F "/dev/$(dev_of "$nqn")"
    m=$WORK/restart && mkdir -p $m && run mount "/dev/$(dev_of "$nqn")" $m
fi
write_data "$m" 8
c=$(ctrl_of "$nqn")
target_port_down 4420 || fail "port down"
wait_for 20 sh -c "[ \"\$(cat /sys/class/nvme/$c/state)\" != live ]" || fail "controller still live"
log "state while the port is down: $(ctrl_state "$c")"
sleep 3
target_port_up 4420 || fail "port up"
wait_for 60 sh -c "[ \"\$(cat /sys/class/nvme/$c/state)\" = live ]" || fail "no reconnect: $(ctrl_state "$c")"
verify_data "$m" || fail "checksums after the restart"
echo after-restart >"$m/after.txt" && sync || fail "write after the restart"
