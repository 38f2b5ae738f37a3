# Controllers renumber after a reconnect (nvme0 comes back as nvme2): the
# node plugin resolves NQN to device every time and follows.
# timeout: 180
. /vm/lib.sh
v=pvc-renumber
vol_create $v 1G
nqn=$(vol_nqn $v)
stage $v --fs-type ext4
t=$(tgt $v)
publish $v "$t" --fs-type ext4
write_data "$t" 8
c0=$(ctrl_of "$nqn")
run ncsi node-stats $v --volume-path "$t" | tee $WORK/stats0
grep -q 'abnormal=false' $WORK/stats0 || fail "healthy volume reported abnormal"

# Two filler volumes so the freed controller number is taken.
vol_create pvc-filler-a 1G; vol_create pvc-filler-b 1G
nvme_connect "$(vol_nqn pvc-filler-a)"
nvme_disconnect "$nqn" || fail "disconnect by hand"
nvme_connect "$(vol_nqn pvc-filler-b)"
run ncsi node-stats $v --volume-path "$t" | tee $WORK/stats1 || true
grep -q 'abnormal=true' $WORK/stats1 || fail "a disconnected volume is not reported abnormal"
# The node plugin may have reconnected already (NodeGetVolumeStats recovers
# a volume whose device vanished); if not, reconnect as a person would.
connected "$nqn" || nvme_connect "$nqn" || fail "reconnect by hand"
wait_for 30 has_dev "$nqn" || fail "no device after the reconnect"
c1=$(ctrl_of "$nqn")
log "controller was $c0, now $c1 (device $(dev_of "$nqn"))"
[ "$c0" != "$c1" ] || fail "the controller did not renumber"

# The driver follows the new name: unpublish/unstage/stage/publish work and
# the data is there.
unpublish $v "$t"
unstage $v
stage $v --fs-type ext4
publish $v "$t" --fs-type ext4
verify_data "$t" || fail "data after renumbering"
run ncsi node-stats $v --volume-path "$t" | tee $WORK/stats2
grep -q 'abnormal=false' $WORK/stats2 || fail "abnormal after restage"
unpublish $v "$t"
unstage $v
