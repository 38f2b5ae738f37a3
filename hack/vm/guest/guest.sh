#!/bin/sh
# Guest side of the VM harness: starts the simulator (real NVMe/TCP exports
# through the kernel target), the controller and the node plugin, then runs
# each scenario on its own and reports `PASS name` / `FAIL name` on the
# results port. Usage: guest.sh MODE SCENARIO...   (MODE: test | bench | bench-clone | bench-nvmet)
. /vm/lib.sh
mode=$1; shift

r() { echo "$*"; echo "$*" >/dev/ttyS1; }

mkdir -p $VM $WORK $DATA
mount -t tmpfs -o size=75% tmpfs $DATA || r "FAIL setup: tmpfs for the pool"
# The clone benchmark's pool: an XFS with reflink on a loop device over a
# sparse file in the tmpfs, so the simulator's subvolume snapshots clone
# extents (copy-on-write, as Btrfs on an RDS) instead of copying the data.
if [ "$mode" = bench-clone ]; then
    mkdir -p $DATA/pool
    truncate -s 64G $DATA/pool.xfs && mkfs.xfs -q -m reflink=1 $DATA/pool.xfs &&
        /usr/bin/mount -o loop $DATA/pool.xfs $DATA/pool || r "FAIL setup: XFS pool with reflink"
fi

if ! start_sim || ! start_controller || ! start_node; then
    r "FAIL setup: the simulator, controller or node plugin did not start"
    for f in sim controller node; do echo "---- $f.log"; tail -n 30 $VM/$f.log; done
    exit 1
fi
r "INFO stack up: $(rds-csi --version 2>&1)"

# Leftovers of a failed scenario must not leak into the next one: unmount
# what it mounted under $WORK, disconnect its volumes, delete them and every
# snapshot.
cleanup_scenario() {
    awk '{print $5}' /proc/self/mountinfo | grep "^$WORK/" | sort -r | while read -r m; do
        umount -l "$m" 2>/dev/null
    done
    for x in /sys/class/nvme/nvme*; do
        [ -f "$x/subsysnqn" ] || continue
        nvme disconnect -d "${x##*/}" >/dev/null 2>&1
    done
    for c in $WORK/ctx/*; do
        [ -f "$c" ] || continue
        csi delete "${c##*/}" >/dev/null 2>&1
        rm -f "$c"
    done
    csi list-snapshots 2>/dev/null | awk '{print $1}' | while read -r id; do
        csi delete-snapshot "$id" >/dev/null 2>&1
    done
    for s in $CFS/subsystems/*; do # subsystems made by hand in a scenario
        [ -d "$s" ] || continue
        case ${s##*/} in "$NQN_PREFIX"*) continue ;; esac
        for p in $CFS/ports/*; do rm -f "$p/subsystems/${s##*/}"; done
        echo 0 >"$s/namespaces/1/enable" 2>/dev/null
        rmdir "$s/namespaces/1" "$s" 2>/dev/null
    done
    for p in $CFS/ports/*; do [ -d "$p" ] && [ -z "$(ls "$p/subsystems")" ] && rmdir "$p"; done
    rm -rf $VM/shadow $WORK/staging $WORK/pods
    [ -f $VM/node.image ] && image_node_stop
    alive node || start_node
}

case $mode in
bench | bench-clone | bench-nvmet)
    sh /vm/$mode.sh 2>&1 | tee /dev/ttyS1
    exit 0
    ;;
esac

for s in "$@"; do
    # NAME-ARG without a NAME-ARG.sh runs NAME.sh ARG: fs-xfs is fs.sh xfs.
    f=/vm/scenarios/$s.sh arg=
    if [ ! -f "$f" ] && [ "${s%-*}" != "$s" ] && [ -f "/vm/scenarios/${s%-*}.sh" ]; then
        f=/vm/scenarios/${s%-*}.sh arg=${s##*-}
    fi
    [ -f "$f" ] || { r "FAIL $s (no such scenario)"; continue; }
    to=$(sed -n 's/^# timeout: *//p' "$f" | head -1)
    t0=$(now_ms)
    rm -f "$NOTE"
    echo "==== scenario $s"
    # shellcheck disable=SC2086 # no argument at all when arg is empty
    timeout -s KILL "${to:-180}" sh -e "$f" $arg >/tmp/scenario.out 2>&1
    rc=$?
    t1=$(now_ms)
    sed "s/^/[$s] /" /tmp/scenario.out
    if [ $rc = 0 ]; then
        r "PASS $s ($((t1 - t0)) ms$([ -s "$NOTE" ] && echo "; $(head -n 1 "$NOTE")"))"
    elif [ $rc = 77 ]; then
        r "SKIP $s ($(tail -n 1 /tmp/scenario.out))"
    else
        [ $rc = 137 ] && rc="$rc, killed after ${to:-180} s"
        r "FAIL $s (exit $rc, $((t1 - t0)) ms): $(grep -v '^+ ' /tmp/scenario.out | tail -n 1 | cut -c1-160)"
        for l in node controller; do
            echo "[$s] ---- $l.log (tail)"
            tail -n 15 $VM/$l.log | sed "s/^/[$s] /"
        done
    fi
    cleanup_scenario >/dev/null 2>&1
done
