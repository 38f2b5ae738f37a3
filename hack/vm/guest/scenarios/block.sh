# Raw block: publish makes a device node (not a bind mount of /dev/nvme*,
# and no new devtmpfs mount); raw writes read back the same.
# timeout: 120
. /vm/lib.sh
v=pvc-block
vol_create $v 1G --block
nqn=$(vol_nqn $v)
d0=$(devtmpfs_count)
stage $v --block
t=$(tgt $v)
publish $v "$t" --block
[ -b "$t" ] || fail "$t is not a block special file"
b=$(dev_of "$nqn")
want=$(stat -c %t:%T "/dev/$b")
[ "$(stat -c %t:%T "$t")" = "$want" ] || fail "$t is $(stat -c %t:%T "$t"), device is $want"
[ "$(devtmpfs_count)" = "$d0" ] || fail "devtmpfs mounts went from $d0 to $(devtmpfs_count)"
dd if=/dev/urandom of=$WORK/raw.bin bs=1M count=4 2>/dev/null
run dd if=$WORK/raw.bin of="$t" bs=1M conv=fsync 2>&1
echo 3 >/proc/sys/vm/drop_caches
dd if="$t" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1 >$WORK/raw.got
[ "$(cat $WORK/raw.got)" = "$(sha256sum <$WORK/raw.bin | cut -d' ' -f1)" ] || fail "raw data differs"
t2=$(tgt $v t2)
publish $v "$t2" --block
[ "$(devtmpfs_count)" = "$d0" ] || fail "second publish added a devtmpfs mount"
unpublish $v "$t2"
unpublish $v "$t"
[ ! -e "$t" ] || [ "$(mounts_at "$t")" = 0 ] || fail "$t still mounted"
unstage $v
# Restage: the data is still there.
stage $v --block
publish $v "$t" --block
[ "$(dd if="$t" bs=1M count=4 2>/dev/null | sha256sum | cut -d' ' -f1)" = "$(cat $WORK/raw.got)" ] || fail "raw data lost across restage"
unpublish $v "$t"
unstage $v
[ "$(devtmpfs_count)" = "$d0" ] || fail "devtmpfs mounts left"
