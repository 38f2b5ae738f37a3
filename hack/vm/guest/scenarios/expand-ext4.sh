# Expansion of a mounted volume: ControllerExpandVolume, then
# NodeExpandVolume on the publish path; df shows the new size, data intact.
# timeout: 180
. /vm/lib.sh
fs=${FS:-ext4}
v=pvc-expand-$fs
vol_create $v 1G --fs-type $fs
stage $v --fs-type $fs
t=$(tgt $v)
publish $v "$t" --fs-type $fs
write_data "$t" 8
k0=$(df -k "$t" | awk 'NR==2{print $2}')
run csi expand $v --size 2G
run ncsi node-expand $v --volume-path "$t" --size 2G
k1=$(df -k "$t" | awk 'NR==2{print $2}')
log "df size: ${k0} KiB -> ${k1} KiB"
[ "$k1" -gt $((k0 + 800 * 1024)) ] || fail "filesystem did not grow: $k0 -> $k1 KiB"
verify_data "$t" || fail "data after expansion"
run ncsi node-stats $v --volume-path "$t" | tee $WORK/stats
total=$(sed -n 's/.*total=\([0-9]*\).*/\1/p' $WORK/stats | head -1)
[ "${total:-0}" -gt $((k0 * 1024 + 800 * 1024 * 1024)) ] || fail "stats total $total after expansion"
unpublish $v "$t"
unstage $v
