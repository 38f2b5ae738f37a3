# Expansion of a mounted volume, run as expand-ext4 and expand-xfs (the
# filesystem is $1): ControllerExpandVolume, then NodeExpandVolume on the
# publish path; df shows the new size, data intact.
# timeout: 180
. /vm/lib.sh
fs=${1:?which filesystem: ext4 or xfs}
v=pvc-expand-$fs
vol_up $v $fs
t=$(tgt $v)
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
vol_down $v
