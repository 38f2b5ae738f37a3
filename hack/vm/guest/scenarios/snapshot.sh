# Snapshots, restores and clones through the node plugin, run as
# snapshot-subvolume and snapshot-flat (the volume layout is $1; `snapshot`
# alone runs both): an ext4 volume is staged and published, a known pattern
# written; CreateSnapshot while it is published; the pattern overwritten;
# the snapshot restored into a new volume, staged, and the first pattern read
# back; a clone of the live volume holds the second pattern, and writes to
# the clone do not reach its source. Deleted in an order that leaves
# snapshots and clones behind their sources (a snapshot before its restore,
# a volume before its clone and its other snapshot); nothing is left after.
# timeout: 300
. /vm/lib.sh
layouts=${1:-subvolume flat}

# snap_create NAME VOL: CreateSnapshot; prints the snapshot ID
snap_create() {
    local out
    out=$(csi create-snapshot "$1" --source "$2") || { echo "$out" >&2; return 1; }
    echo "$out" >&2
    echo "$out" | awk '$1 == "created" && $2 == "snapshot" {print $3}'
}
# a line of `list-snapshots` ($1) has field KEY ($2) = VALUE ($3)
snap_field() { echo "$1" | tr ' ' '\n' | grep -qx "$2=$3"; }
# sums_copy DIR NAME: keep write_data's checksums of DIR as $WORK/sums.NAME
sums_copy() { cp "$WORK/sums.$(echo "$1" | tr / _)" "$WORK/sums.$2"; }
# the backing file of volume $1's export
backing_of() { cat "$CFS/subsystems/$(vol_nqn "$1")/namespaces/1/device_path"; }
# check_layout LAYOUT VOL: VOL's image is where LAYOUT puts it
check_layout() {
    local want=$DATA/pool/metal-csi/$2.img
    [ "$1" = subvolume ] && want=$DATA/pool/$2/volume.img
    [ "$(backing_of "$2")" = "$want" ] || fail "$2 is backed by $(backing_of "$2"), not $want"
}

one_layout() {
    local L=$1 v r c id id2 t rt ct line
    v=pvc-snapsrc-$L r=pvc-snaprestore-$L c=pvc-snapclone-$L
    log "==== layout $L"
    vol_create $v 1G --fs-type ext4 --param volumeLayout=$L || fail "create $v"
    check_layout $L $v
    stage $v --fs-type ext4
    t=$(tgt $v)
    publish $v "$t" --fs-type ext4
    write_data "$t" 8
    sums_copy "$t" first-$L

    # The snapshot, of the live volume.
    id=$(snap_create nightly-$L $v) || fail "CreateSnapshot of $v"
    [ -n "$id" ] || fail "no snapshot ID printed"
    line=$(run csi list-snapshots --source $v) || fail "ListSnapshots"
    echo "$line" >&2
    [ "$(echo "$line" | wc -l)" = 1 ] || fail "ListSnapshots of $v: $line"
    snap_field "$line" source $v || fail "snapshot source: $line"
    snap_field "$line" ready true || fail "snapshot not ready: $line"
    snap_field "$line" size 1073741824 || fail "snapshot size: $line"
    # A retry is the same snapshot.
    [ "$(snap_create nightly-$L $v)" = "$id" ] || fail "a retried CreateSnapshot gave another ID"

    # Overwritten after the snapshot: the volume now holds the second pattern.
    write_data "$t" 8
    sums_copy "$t" second-$L
    if verify_data "$t" first-$L 2>/dev/null; then fail "the overwrite did not change the data"; fi

    # Restore: the first pattern.
    vol_create $r 1G --fs-type ext4 --param volumeLayout=$L --from-snapshot "$id" || fail "restore $r from $id"
    check_layout $L $r
    stage $r --fs-type ext4
    rt=$(tgt $r)
    publish $r "$rt" --fs-type ext4
    verify_data "$rt" first-$L || fail "the restored volume does not hold the snapshot's data"

    # Clone of the live (published) source: the second pattern.
    vol_create $c 1G --fs-type ext4 --param volumeLayout=$L --from-volume $v || fail "clone $c of $v"
    stage $c --fs-type ext4
    ct=$(tgt $c)
    publish $c "$ct" --fs-type ext4
    verify_data "$ct" second-$L || fail "the clone does not hold its source's data"
    # The clone is a volume of its own.
    write_data "$ct" 4
    verify_data "$t" second-$L || fail "a write to the clone changed its source"
    verify_data "$rt" first-$L || fail "a write to the clone changed the restored volume"

    # A second snapshot, which outlives its volume.
    id2=$(snap_create weekly-$L $v) || fail "second CreateSnapshot"
    [ "$id2" != "$id" ] || fail "two snapshot names gave one ID"
    vol_down $r && vol_down $c && vol_down $v || fail "unpublish and unstage"

    run csi delete-snapshot "$id" || fail "DeleteSnapshot with its restore still there"
    run csi delete $v || fail "DeleteVolume with a clone and a snapshot still there"
    rm -f "$(ctx_of $v)"
    line=$(csi list-snapshots)
    [ "$(echo "$line" | awk -v id="$id2" '$1 == id' | wc -l)" = 1 ] || fail "the snapshot of a deleted volume is not listed: $line"
    # ...and still restores: the second pattern.
    vol_create $v-again 1G --fs-type ext4 --param volumeLayout=$L --from-snapshot "$id2" || fail "restore of a deleted volume's snapshot"
    stage $v-again --fs-type ext4
    publish $v-again "$(tgt $v-again)" --fs-type ext4
    verify_data "$(tgt $v-again)" second-$L || fail "the second snapshot's data"
    vol_down $v-again
    run csi delete-snapshot "$id2"
    for x in $c $r $v-again; do
        run csi delete $x || fail "delete $x"
        rm -f "$(ctx_of $x)"
    done

    # Nothing is left: no snapshot, no volume, no export, no file.
    [ -z "$(csi list-snapshots)" ] || fail "snapshots left: $(csi list-snapshots)"
    csi list | grep -q "^pvc-snap" && fail "volumes left: $(csi list)"
    ls $CFS/subsystems | grep -q "pvc-snap" && fail "exports left: $(ls $CFS/subsystems)"
    left=$(find $DATA/pool \( -name "*pvc-snap*" -o -name "*$id*" -o -name "*$id2*" \) | head -5)
    [ -z "$left" ] || fail "files left in the pool: $left"
    log "layout $L: restore, clone and cleanup all good"
}

for L in $layouts; do one_layout $L; done
