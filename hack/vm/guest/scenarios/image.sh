# The node plugin from the image hack/image.sh built: its binary and its
# Debian tools in a chroot of the image's root filesystem (lib.sh,
# image_node_start), so a tool missing from the image or broken in it fails
# here. An ext4 volume is staged (nvme connect, blkid, mkfs.ext4), published,
# written, unstaged (nvme disconnect), staged again (e2fsck), read back and
# grown (nvme ns-rescan, resize2fs); an xfs one is staged (mkfs.xfs) and
# grown (xfs_growfs). Runs only when run.sh is given RDS_CSI_IMAGE_ROOTFS.
# timeout: 300
. /vm/lib.sh
[ -x $IMG/usr/local/bin/rds-csi ] || { echo "no image root filesystem (run.sh: RDS_CSI_IMAGE_ROOTFS)"; exit 77; }
trap image_node_stop EXIT
image_node_start || fail "the node plugin from the image did not start: $(tail -n 5 $VM/node.log)"
pid=$(cat $VM/node.pid)
[ "$(readlink /proc/$pid/root)" = $IMG ] || fail "the node plugin's root is $(readlink /proc/$pid/root)"
[ "$(readlink /proc/$pid/exe)" = $IMG/usr/local/bin/rds-csi ] || fail "the node plugin runs $(readlink /proc/$pid/exe)"
log "node plugin: $(chroot $IMG /usr/local/bin/rds-csi --version) from $IMG"

# grow_to_2g VOL TARGET: ControllerExpandVolume and NodeExpandVolume to 2 GiB;
# df shows it
grow_to_2g() {
    local k0 k1
    k0=$(df -k "$2" | awk 'NR==2{print $2}')
    run csi expand $1 --size 2G
    run ncsi node-expand $1 --volume-path "$2" --size 2G
    k1=$(df -k "$2" | awk 'NR==2{print $2}')
    [ "$k1" -gt $((k0 + 800 * 1024)) ] || fail "$1 did not grow: $k0 -> $k1 KiB"
}

v=pvc-image-ext4
vol_up $v ext4
t=$(tgt $v)
[ "$(fstype_at "$t")" = ext4 ] || fail "target path is not ext4"
write_data "$t" 4
vol_down $v
not_connected "$(vol_nqn $v)" || fail "still connected after NodeUnstage"
stage $v --fs-type ext4
publish $v "$t" --fs-type ext4
verify_data "$t" || fail "checksums after restage"
grow_to_2g $v "$t"
vol_down $v

v=pvc-image-xfs
vol_up $v xfs
t=$(tgt $v)
[ "$(fstype_at "$t")" = xfs ] || fail "target path is not xfs"
grow_to_2g $v "$t"
vol_down $v
echo "$(chroot $IMG /usr/local/bin/rds-csi --version) from the image" >$NOTE
