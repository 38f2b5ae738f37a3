# The Linux storage host the nvmet backend manages, for real in the guest:
# - the guest's sshd (start_sshd) takes a login with the client key and
#   the pinned host key, and its sessions find the LVM tools;
# - crates/linux-target/tests/real_host.rs, its ignored tests: LVM thin
#   volumes, snapshots and clones that read back the right bytes, exports
#   in the kernel target's configfs, a fence seen from two connected
#   hosts, the name limits of LVM and device-mapper, and volumes with IDs
#   too long for them (a volume group on a loop device, made and removed
#   by the tests).
# The test executable is built on the host and shared in by run.sh. (The
# tests of ssh.rs run on the host: their configfs stand-in wraps mkdir and
# rmdir on PATH, which the guest's busybox shell would not call.)
# timeout: 300
. /vm/lib.sh
command -v linux-target-real_host >/dev/null || { echo "linux-target-real_host not shared into the guest"; exit 77; }
start_sshd || fail "sshd did not start"
d=$VM/ssh
echo "127.0.0.1 $(cut -d' ' -f1,2 $d/host_ed25519.pub)" >$d/known_hosts
out=$(ssh -i $d/client_ed25519 -o UserKnownHostsFile=$d/known_hosts -o StrictHostKeyChecking=yes \
    -o BatchMode=yes -o ConnectTimeout=20 root@127.0.0.1 'id -u; command -v lvcreate') ||
    fail "ssh login to the guest's sshd: $(tail -n 5 $VM/sshd.log)"
[ "$out" = "0
/usr/sbin/lvcreate" ] || fail "the SSH session is not root with the LVM tools on PATH: $out"
log "sshd on 127.0.0.1:22, host key $(sshd_fingerprint)"
# (the tests make their temporary files under TMPDIR, a tmpfs)
run linux-target-real_host --ignored --test-threads=1 >$WORK/real_host.out 2>&1 || { cat $WORK/real_host.out; exit 1; }
cat $WORK/real_host.out
vgs --noheadings -o vg_name 2>/dev/null | grep -q rdscsitest && fail "the tests left their volume group behind"
echo "$(grep -m 1 '^test result' $WORK/real_host.out | cut -d';' -f1-2); sshd takes root logins by key" >"$NOTE"
