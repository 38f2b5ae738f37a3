# Every Node RPC twice in a row gives the same result and never stacks
# mounts; unpublish and unstage of what is gone succeed.
# timeout: 150
. /vm/lib.sh
v=pvc-idem
vol_create $v 1G
s=$(stg $v) t=$(tgt $v)
twice() { # twice CMD...: both calls succeed and print the same
    a=$("$@" 2>&1) || fail "first $*: $a"
    b=$("$@" 2>&1) || fail "second $*: $b"
    [ "$a" = "$b" ] || fail "$*: '$a' then '$b'"
}
mkdir -p "$s" "$(dirname "$t")"
twice ncsi node-stage $v --staging-path "$s" --fs-type ext4 --context-file "$(ctx_of $v)"
[ "$(mounts_at "$s")" = 1 ] || fail "$(mounts_at "$s") mounts at the staging path"
twice ncsi node-publish $v --staging-path "$s" --target-path "$t" --fs-type ext4 --context-file "$(ctx_of $v)"
[ "$(mounts_at "$t")" = 1 ] || fail "$(mounts_at "$t") mounts at the target path"
write_data "$t" 4
twice ncsi node-stats $v --volume-path "$t"
twice ncsi node-expand $v --volume-path "$t"
twice ncsi node-unpublish $v --target-path "$t"
[ "$(mounts_at "$t")" = 0 ] || fail "target still mounted"
twice ncsi node-unstage $v --staging-path "$s"
[ "$(mounts_at "$s")" = 0 ] || fail "staging still mounted"
not_connected "$(vol_nqn $v)" || fail "still connected"
# The data survived all of it.
stage $v --fs-type ext4
publish $v "$t" --fs-type ext4
verify_data "$t" || fail "checksums"
# A readonly publish is a second, read-only mount.
t2=$(tgt $v ro)
publish $v "$t2" --fs-type ext4 --readonly
if touch "$t2/x" 2>/dev/null; then fail "readonly publish is writable"; fi
unpublish $v "$t2"
unpublish $v "$t"
unstage $v
