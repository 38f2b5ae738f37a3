# The durable format record: a volume formatted and staged once keeps its
# record; presented empty afterwards (its first MiB overwritten on the
# target), NodeStageVolume refuses it (FAILED_PRECONDITION) and the data
# path writes nothing: no mkfs, no e2fsck, no mount, the device's head
# unchanged. The guest has no API server, so the node plugin keeps the
# record in a file (--format-record-file, same rules as the PV annotation,
# which tests/apiserver.rs checks against a real API server).
# timeout: 240
. /vm/lib.sh
rec=$VM/format-record.json
orig_args=${NODE_ARGS:-}
rm -f $rec
trap 'NODE_ARGS=$orig_args restart_node >/dev/null 2>&1; rm -f $rec' EXIT
NODE_ARGS="$orig_args --format-record-file $rec" restart_node || fail "node plugin with --format-record-file"

# Shadows on the node plugin's PATH (see lib.sh): every mkfs and e2fsck run
# is logged.
mkdir -p $VM/shadow
for m in mkfs.ext4 mkfs.xfs mke2fs mkfs e2fsck fsck.ext4; do
    real=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v $m) || continue
    printf '#!/bin/sh\necho "%s $*" >>%s/fs.calls\nexec %s "$@"\n' $m $VM $real >$VM/shadow/$m
    chmod +x $VM/shadow/$m
done
: >$VM/fs.calls

# A fresh volume ID: the file keeps its entries after a delete.
v=pvc-fmtrec-$(now_ms)
vol_create $v 1G
stage $v --fs-type ext4
grep -q "\"$v\": \"ext4\"" $rec || fail "no record after the first stage: $(cat $rec 2>&1)"
grep -q "mke2fs\|mkfs.ext4" $VM/fs.calls || fail "the first stage did not format: $(cat $VM/fs.calls)"
t=$(tgt $v)
publish $v "$t" --fs-type ext4
write_data "$t" 4
unpublish $v "$t"
unstage $v
not_connected "$(vol_nqn $v)" || fail "still connected after NodeUnstage"

# The target now serves zeros where the filesystem began: as after a
# reconnect to the wrong backing file, or a volume blanked behind our back.
nqn=$(vol_nqn $v)
file=$(cat "$CFS/subsystems/$nqn/namespaces/1/device_path") || fail "no backing file for $nqn"
run dd if=/dev/zero of="$file" bs=1M count=1 conv=notrunc 2>&1
sync
head_sum() { dd if="$file" bs=1M count=64 2>/dev/null | sha256sum | cut -d' ' -f1; }
h0=$(head_sum)
: >$VM/fs.calls
grep -c "FormatRefused" $VM/node.log >$WORK/refused.before || true

if out=$(stage $v --fs-type ext4 2>&1); then
    fail "NodeStage of the blanked volume succeeded: $out"
fi
log "$out"
case $out in *FailedPrecondition*) ;; *) fail "not FAILED_PRECONDITION: $out" ;; esac
echo "$out" | grep -q "format record" || fail "the refusal does not name the record: $out"
[ ! -s $VM/fs.calls ] || fail "the data path ran: $(cat $VM/fs.calls)"
[ "$(mounts_at "$(stg $v)")" = 0 ] || fail "the staging path was mounted"
[ "$(head_sum)" = "$h0" ] || fail "the device's first 64 MiB changed"
grep -q "\"$v\": \"ext4\"" $rec || fail "the record changed: $(cat $rec)"
wait_for 10 sh -c "[ \$(grep -c FormatRefused $VM/node.log) -gt $(cat $WORK/refused.before) ]" ||
    fail "no FormatRefused event logged"
grep "FormatRefused" $VM/node.log | tail -n 1 | grep -q "$v" || fail "the FormatRefused event does not name $v"
# kubelet retries: refused again, still nothing written.
stage $v --fs-type ext4 >/dev/null 2>&1 && fail "the retry succeeded"
[ ! -s $VM/fs.calls ] || fail "the data path ran on the retry: $(cat $VM/fs.calls)"
[ "$(head_sum)" = "$h0" ] || fail "the device's first 64 MiB changed on the retry"
unstage $v

# What the record prevented: without it, the probe alone decides and this
# volume, which reads as empty, is formatted.
NODE_ARGS="$orig_args" restart_node || fail "node plugin without the record"
stage $v --fs-type ext4 || fail "stage without the record"
grep -q "mke2fs\|mkfs.ext4" $VM/fs.calls || fail "without the record the blanked volume was not formatted: $(cat $VM/fs.calls)"
unstage $v
