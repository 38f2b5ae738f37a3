# A filesystem volume, run as fs-ext4 and fs-xfs (the filesystem is $1):
# create, stage, publish, write, unpublish, unstage, restage, publish, and
# the same checksums read back; then stage and publish in one call
# (`node-mount`) and back.
# timeout: 200
. /vm/lib.sh
fs=${1:?which filesystem: ext4 or xfs}
v=pvc-fs-$fs
vol_up $v $fs
t=$(tgt $v)
[ "$(fstype_at "$(stg $v)")" = $fs ] || fail "staging path is not $fs: $(fstype_at "$(stg $v)")"
[ "$(fstype_at "$t")" = $fs ] || fail "target path is not $fs"
write_data "$t" 16
vol_down $v
[ "$(mounts_at "$(stg $v)")" = 0 ] || fail "staging path still mounted"
not_connected "$(vol_nqn $v)" || fail "still connected after NodeUnstage"
stage $v --fs-type $fs
t2=$(tgt $v t2)
publish $v "$t2" --fs-type $fs
verify_data "$t2" "$t" || fail "checksums after restage"
unpublish $v "$t2"
unstage $v
# Once more as kubelet calls it: stage then publish on one connection
# (`rds-csi csi node-mount`, what the benchmark times), and back.
t3=$(tgt $v t3)
mkdir -p "$(stg $v)" "$(dirname "$t3")"
out=$(ncsi node-mount $v --staging-path "$(stg $v)" --target-path "$t3" --context-file "$(ctx_of $v)" --fs-type $fs) || fail "node-mount: $out"
case $out in "mounted $v at $t3 in "*" ms (NodeStageVolume "*) ;; *) fail "node-mount said: $out" ;; esac
verify_data "$t3" "$t" || fail "checksums after node-mount"
out=$(ncsi node-unmount $v --staging-path "$(stg $v)" --target-path "$t3") || fail "node-unmount: $out"
[ "$(mounts_at "$(stg $v)")" = 0 ] || fail "staging path still mounted after node-unmount"
not_connected "$(vol_nqn $v)" || fail "still connected after node-unmount"
