# xfs: create, stage, publish, write, unpublish, unstage, restage,
# publish, and the same checksums read back.
# timeout: 200
. /vm/lib.sh
fs=xfs
v=pvc-fs-$fs
vol_create $v 1G --fs-type $fs
stage $v --fs-type $fs
t=$(tgt $v)
publish $v "$t" --fs-type $fs
[ "$(fstype_at "$(stg $v)")" = $fs ] || fail "staging path is not $fs: $(fstype_at "$(stg $v)")"
[ "$(fstype_at "$t")" = $fs ] || fail "target path is not $fs"
write_data "$t" 16
unpublish $v "$t"
unstage $v
[ "$(mounts_at "$(stg $v)")" = 0 ] || fail "staging path still mounted"
not_connected "$(vol_nqn $v)" || fail "still connected after NodeUnstage"
stage $v --fs-type $fs
t2=$(tgt $v t2)
publish $v "$t2" --fs-type $fs
verify_data "$t2" "$t" || fail "checksums after restage"
unpublish $v "$t2"
unstage $v
