# csi-sanity, the whole suite (Identity, Controller, Node) against the
# controller and the node plugin of this guest, on real NVMe/TCP. The
# summary counts the snapshot specs (CreateSnapshot, DeleteSnapshot,
# ListSnapshots, CreateVolume from a snapshot or a volume) on their own:
# none passing fails the scenario, as it would mean the capabilities are no
# longer advertised and csi-sanity skipped them. SANITY_CONTROLLER: another
# controller's socket (the nvmet-backend scenario runs this file with it).
# timeout: 600
. /vm/lib.sh
command -v csi-sanity >/dev/null || { echo "csi-sanity not shared into the guest"; exit 77; }
mkdir -p $WORK/sanity
# csi-sanity names its volumes sanity-*: the node plugin owns only
# subsystems with its volume-ID prefix (pvc- by default), so it runs with
# sanity- for this suite and goes back to the default afterwards.
NODE_ARGS="--volume-id-prefix sanity-" restart_node
set +e
csi-sanity \
    --csi.endpoint "$VM/node.sock" \
    --csi.controllerendpoint "${SANITY_CONTROLLER:-$VM/controller.sock}" \
    --csi.stagingdir $WORK/sanity/staging \
    --csi.mountdir $WORK/sanity/mount \
    --csi.testvolumesize 1073741824 \
    --csi.testvolumeexpandsize 2147483648 \
    --ginkgo.no-color --ginkgo.v \
    ${SANITY_ARGS:-} >$WORK/sanity.out 2>&1
rc=$?
restart_node
grep -E '^(\[FAIL\]|  \[FAIL\]|Ran |SUCCESS|FAIL!)|Passed|Failed' $WORK/sanity.out | tail -n 40
# With --ginkgo.v every spec that ran is a separator line, its name, and
# later its result line.
snaps=$(awk '
    /^-+$/ { getline name; next }
    name ~ /Snapshot|source snapshot|source volume/ && name !~ /GroupController/ {
        if ($0 ~ /^• \[[0-9.]+ seconds\]/) { p++; name = "" }
        else if ($0 ~ /^• \[(FAILED|PANICKED|TIMEDOUT|INTERRUPTED)\]/) { f++; name = "" }
        else if ($0 ~ /^S \[SKIPPED\]/) { s++; name = "" }
    }
    END { printf "%d passed, %d failed, %d skipped", p, f, s }' $WORK/sanity.out)
echo "snapshot and clone specs: $snaps"
echo "$(grep -m 1 '^Ran ' $WORK/sanity.out); snapshot and clone specs: $snaps" >"$NOTE"
[ $rc = 0 ] || { echo "---- csi-sanity output"; cat $WORK/sanity.out; exit 1; }
case $snaps in 0\ passed*) echo "no snapshot spec passed: are the snapshot capabilities advertised?"; exit 1 ;; esac
