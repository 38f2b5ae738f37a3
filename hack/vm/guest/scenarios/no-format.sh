# Never formats over data: a volume with a filesystem is restaged right
# after a reconnect, also while blkid fails or hangs, and keeps its data.
# mkfs is watched through PATH: any mkfs call on a restage is a failure.
# timeout: 240
. /vm/lib.sh
v=pvc-noformat
vol_up $v ext4
t=$(tgt $v)
write_data "$t" 8
vol_down $v
nqn=$(vol_nqn $v)

# Shadows on the node plugin's PATH (see lib.sh): blkid per $VM/blkid-mode,
# every mkfs logged.
mkdir -p $VM/shadow
for m in mkfs.ext4 mkfs.xfs mke2fs mkfs; do
    real=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v $m) || continue
    printf '#!/bin/sh\necho "%s $*" >>%s/mkfs.calls\nexec %s "$@"\n' $m $VM $real >$VM/shadow/$m
    chmod +x $VM/shadow/$m
done
realblkid=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v blkid)
cat >$VM/shadow/blkid <<EOB
#!/bin/sh
case \$(cat $VM/blkid-mode 2>/dev/null) in
fail) echo "blkid: simulated failure" >&2; exit 1 ;;
empty) exit 2 ;;
sleep) sleep 20; exit 1 ;;
esac
exec $realblkid "\$@"
EOB
chmod +x $VM/shadow/blkid
: >$VM/mkfs.calls

# 1. Right after a reconnect: connect by hand (as after a node reboot),
# disconnect, and restage at once.
nvme_connect "$nqn" && nvme_disconnect "$nqn"
stage $v --fs-type ext4 || fail "restage after reconnect"
publish $v "$t" --fs-type ext4
verify_data "$t" || fail "data lost on restage after reconnect"
unpublish $v "$t"; unstage $v

# 2. blkid fails, 3. blkid finds nothing (exit 2), 4. blkid hangs: the stage
# may fail, but must never format.
for mode in fail empty sleep; do
    echo $mode >$VM/blkid-mode
    if stage $v --fs-type ext4; then
        log "stage with blkid=$mode succeeded"
        publish $v "$t" --fs-type ext4 && verify_data "$t" || fail "data after stage with blkid=$mode"
        unpublish $v "$t"
    else
        log "stage with blkid=$mode failed (allowed)"
    fi
    unstage $v || true
    [ ! -s $VM/mkfs.calls ] || fail "mkfs was called with blkid=$mode: $(cat $VM/mkfs.calls)"
done
rm -f $VM/blkid-mode
stage $v --fs-type ext4
publish $v "$t" --fs-type ext4
verify_data "$t" || fail "data lost"
[ ! -s $VM/mkfs.calls ] || fail "mkfs was called: $(cat $VM/mkfs.calls)"
unpublish $v "$t"
unstage $v
