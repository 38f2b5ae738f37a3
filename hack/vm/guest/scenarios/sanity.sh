# csi-sanity, the whole suite (Identity, Controller, Node) against the
# controller and the node plugin of this guest, on real NVMe/TCP.
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
    --csi.controllerendpoint "$VM/controller.sock" \
    --csi.stagingdir $WORK/sanity/staging \
    --csi.mountdir $WORK/sanity/mount \
    --csi.testvolumesize 1073741824 \
    --csi.testvolumeexpandsize 2147483648 \
    --ginkgo.no-color \
    ${SANITY_ARGS:-} >$WORK/sanity.out 2>&1
rc=$?
restart_node
grep -E '^(\[FAIL\]|  \[FAIL\]|Ran |SUCCESS|FAIL!)|Passed|Failed' $WORK/sanity.out | tail -n 40
[ $rc = 0 ] || { echo "---- csi-sanity output"; cat $WORK/sanity.out; exit 1; }
