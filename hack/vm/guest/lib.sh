# Helpers for the guest side of the VM harness (busybox sh). Sourced by
# guest.sh, every scenario and the benchmark.

VM=/run/vm                      # sockets, sim state, logs
WORK=/var/vm                    # staging and target paths (on the guest's own fs)
DATA=/data                      # the simulator's pool (tmpfs)
CFS=/sys/kernel/config/nvmet
NQN_PREFIX=nqn.2000-02.com.mikrotik:
CTRL_EP=unix://$VM/controller.sock
NODE_EP=unix://$VM/node.sock
NODE_ID=vm-node
NOTE=$VM/scenario.note          # a scenario's one line for its PASS line
export PATH=$VM/shadow:/share/bin:/usr/sbin:/usr/bin:/sbin:/bin
export NO_COLOR=1 # plain logs from the driver

log() { echo "$*" >&2; }
fail() { echo "ASSERTION FAILED: $*" >&2; exit 1; }
# run CMD...: echo the command, run it, show its output
run() { echo "+ $*" >&2; "$@"; }
# (busybox sh runs its own applets first: GNU date by path, for %N)
now_ms() { echo $(($(/usr/bin/date +%s%N) / 1000000)); }

# For the benchmarks: the median and the range of numbers on stdin, one a line
p50() { sort -n | awk '{a[NR] = $1} END {if (NR) print a[int((NR + 1) / 2)]; else print "n/a"}'; }
minmax() { sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR) print lo "-" hi; else print "-"}'; }
# stamp VAR: microseconds since the epoch into VAR, without a process
stamp() { local t=$EPOCHREALTIME; eval "$1=${t%.*}${t#*.}"; }
ms() { echo $((($2 - $1 + 500) / 1000)); } # ms FROM_US TO_US

# wait_for SECONDS CMD...: poll every 0.2 s
wait_for() {
    local n=$(($1 * 5)); shift
    while [ $n -gt 0 ]; do "$@" && return 0; sleep 0.2; n=$((n - 1)); done
    return 1
}

csi() { rds-csi csi --endpoint "$CTRL_EP" "$@"; }
ncsi() { rds-csi csi --endpoint "$NODE_EP" "$@"; }

# ---------------------------------------------------------------- the stack
start_sim() {
    mkdir -p $VM/sim $DATA/pool
    rds-csi sim --listen 127.0.0.1:2222 --state-dir $VM/sim --data $DATA/pool \
        --pool-size 64G --nvmet-addr 127.0.0.1 >$VM/sim.out 2>>$VM/sim.log &
    echo $! >$VM/sim.pid
    wait_for 30 grep -qs "^host key fingerprint" $VM/sim.out || { cat $VM/sim.log; return 1; }
}

start_controller() {
    local fp
    fp=$(sed -n 's/^host key fingerprint: //p' $VM/sim.out)
    rm -f $VM/controller.sock
    rds-csi controller --endpoint "$CTRL_EP" --rds-address 127.0.0.1:2222 \
        --rds-key-file $VM/sim/client_ed25519 --rds-host-key "$fp" \
        --metrics-address off --health-interval 2s --volume-id-prefix "" --node $NODE_ID --standalone 2>>$VM/controller.log &
    echo $! >$VM/controller.pid
    wait_for 30 test -S $VM/controller.sock
}

start_node() {
    local root=
    rm -f $VM/node.sock
    # staging and target paths live under $WORK, not under kubelet's root
    rds-csi node --help 2>/dev/null | grep -q -- --staging-root && root="--staging-root $WORK"
    # shellcheck disable=SC2086 # lists of flags
    rds-csi node --endpoint "$NODE_EP" --node-id $NODE_ID --metrics-address off \
        $root ${NODE_ARGS:-} 2>>$VM/node.log &
    echo $! >$VM/node.pid
    wait_for 30 test -S $VM/node.sock
}

alive() { [ -f "$VM/$1.pid" ] && kill -0 "$(cat "$VM/$1.pid")" 2>/dev/null; }

stop_node() {
    if alive node; then
        kill "$(cat $VM/node.pid)"
        wait_for 20 sh -c "! kill -0 $(cat $VM/node.pid) 2>/dev/null" || kill -9 "$(cat $VM/node.pid)"
    fi
    rm -f $VM/node.pid
}

restart_node() { stop_node; start_node; }

# ------------------------------------------------------------- volumes (CSI)
ctx_of() { echo "$WORK/ctx/$1"; }
ctx_get() { sed -n "s/^$2=//p" "$1" | head -1; }

# vol_create NAME SIZE [create flags...]: CreateVolume; the volume context
# lands in $(ctx_of NAME) as key=value lines
vol_create() {
    local name=$1 size=$2 ctx out; shift 2
    mkdir -p $WORK/ctx
    ctx=$(ctx_of "$name")
    if rds-csi csi create --help 2>/dev/null | grep -q -- --context-out; then
        run csi create "$name" --size "$size" "$@" --context-out "$ctx" || return 1
    else
        out=$(csi create "$name" --size "$size" "$@") || { echo "$out"; return 1; }
        echo "$out" >&2
        echo "$out" | sed -n 's/.* context: //p' | tr ' ' '\n' | grep = >"$ctx"
    fi
    [ -s "$ctx" ] && grep -q '^nqn=' "$ctx"
}

vol_nqn() { ctx_get "$(ctx_of "$1")" nqn; }

stg() { echo "$WORK/staging/$1"; }
tgt() { echo "$WORK/pods/$1/${2:-t}"; }

# stage VOL [flags]: NodeStageVolume with the volume's context
stage() {
    local v=$1; shift
    mkdir -p "$(stg "$v")"
    run ncsi node-stage "$v" --staging-path "$(stg "$v")" --context-file "$(ctx_of "$v")" "$@"
}
# publish VOL TARGET [flags]
publish() {
    local v=$1 t=$2; shift 2
    mkdir -p "$(dirname "$t")"
    run ncsi node-publish "$v" --staging-path "$(stg "$v")" --target-path "$t" --context-file "$(ctx_of "$v")" "$@"
}
unpublish() { run ncsi node-unpublish "$1" --target-path "$2"; }
unstage() { run ncsi node-unstage "$1" --staging-path "$(stg "$1")"; }

# vol_up VOL FS [SIZE]: CreateVolume (SIZE, default 1G), NodeStageVolume and
# NodePublishVolume at $(tgt VOL), all with filesystem FS
vol_up() {
    vol_create "$1" "${3:-1G}" --fs-type "$2" || return 1
    stage "$1" --fs-type "$2" || return 1
    publish "$1" "$(tgt "$1")" --fs-type "$2"
}
# vol_down VOL: NodeUnpublishVolume of $(tgt VOL), then NodeUnstageVolume
vol_down() { unpublish "$1" "$(tgt "$1")" && unstage "$1"; }

# --------------------------------------------------------- sysfs / mounts
# ctrl_of NQN: live controller name (nvmeX) for NQN, none if not connected
ctrl_of() {
    local x
    for x in /sys/class/nvme/nvme*; do
        [ -f "$x/subsysnqn" ] || continue
        [ "$(cat "$x/subsysnqn")" = "$1" ] && { echo "${x##*/}"; return 0; }
    done
    return 1
}
# dev_of NQN: block device name (nvmeXnY) of namespace 1, found via sysfs
dev_of() {
    local s n b c
    for s in /sys/class/nvme-subsystem/nvme-subsys*; do
        [ -f "$s/subsysnqn" ] && [ "$(cat "$s/subsysnqn")" = "$1" ] || continue
        for n in "$s"/nvme*n*; do
            b=${n##*/}
            case $b in nvme*c*n*) continue ;; esac
            [ -e "/sys/block/$b" ] && [ -b "/dev/$b" ] && { echo "$b"; return 0; }
        done
    done
    c=$(ctrl_of "$1") || return 1
    for n in /sys/class/nvme/"$c"/nvme*n*; do
        b=${n##*/}
        [ -e "/sys/block/$b" ] && [ -b "/dev/$b" ] && { echo "$b"; return 0; }
    done
    return 1
}
ctrl_state() { cat "/sys/class/nvme/$1/state" 2>/dev/null; }
# ctrl_as NQN HOSTNQN: the live or reconnecting controller of NQN with that host NQN
ctrl_as() {
    local x
    for x in /sys/class/nvme/nvme*; do
        [ "$(cat "$x/subsysnqn" 2>/dev/null)" = "$1" ] && [ "$(cat "$x/hostnqn" 2>/dev/null)" = "$2" ] &&
            { echo "${x##*/}"; return 0; }
    done
    return 1
}
# host_identities DIR: two NVMe host identities, A and B, for one kernel:
# DIR/hostnqn-a, DIR/hostid-a and the same for b
host_identities() {
    local n u
    for n in a b; do
        u=$(cat /proc/sys/kernel/random/uuid)
        echo "nqn.2014-08.org.nvmexpress:uuid:$u" >$1/hostnqn-$n
        echo "$u" >$1/hostid-$n
    done
}
# live_as NQN HOSTNQN: that controller is live
live_as() { local c; c=$(ctrl_as "$1" "$2") && [ "$(ctrl_state "$c")" = live ]; }
# fabrics_connect OPTIONS: a connection through the kernel's fabrics device
# as nvme-cli makes it (nvme-cli itself refuses a second connection to a
# connected subsystem whatever the host NQN); prints the device's answer
fabrics_connect() { { printf '%s' "$1" >&3 && head -n 1 <&3; } 3<>/dev/nvme-fabrics; }
connected() { ctrl_of "$1" >/dev/null; }
not_connected() { ! ctrl_of "$1" >/dev/null; }
has_dev() { dev_of "$1" >/dev/null; }

# nvme_connect NQN [PORT]: connect by hand, as a person would
nvme_connect() {
    run nvme connect -t tcp -a 127.0.0.1 -s "${2:-4420}" -n "$1" --ctrl-loss-tmo=30 --reconnect-delay=1 >&2 || return 1
    wait_for 30 has_dev "$1"
}
nvme_disconnect() {
    run nvme disconnect -n "$1" >&2 || return 1
    wait_for 20 not_connected "$1"
}

# mount entries whose mount point is exactly PATH
mounts_at() { awk -v p="$1" '$5 == p' /proc/self/mountinfo | wc -l; }
devtmpfs_count() { awk '{for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i + 1) == "devtmpfs") n++; break }} END {print n + 0}' /proc/self/mountinfo; }
fstype_at() { awk -v p="$1" '$5 == p {for (i = 7; i <= NF; i++) if ($i == "-") print $(i + 1)}' /proc/self/mountinfo | tail -1; }

# write_data DIR [MiB]: random files plus their checksums in $DIR.sha256 (outside DIR)
write_data() {
    local d=$1 mb=${2:-8}
    mkdir -p "$d/sub"
    dd if=/dev/urandom of="$d/data.bin" bs=1M count="$mb" 2>/dev/null || return 1
    echo "hello $(/usr/bin/date +%s%N)" >"$d/sub/hello.txt"
    (cd "$d" && sha256sum data.bin sub/hello.txt) >"$WORK/sums.$(echo "$d" | tr / _)" || return 1
    sync
}
# verify_data DIR [CHECKSUM_KEY_DIR]: the files written by write_data are intact
verify_data() {
    local key=${2:-$1}
    echo 3 >/proc/sys/vm/drop_caches
    (cd "$1" && sha256sum -c "$WORK/sums.$(echo "$key" | tr / _)") >&2
}

# configfs helpers for faults done by hand (a target restart)
port_dirs_for() { # port_dirs_for TCPPORT
    local p
    for p in $CFS/ports/*; do
        [ -d "$p" ] || continue
        [ "$(cat "$p/addr_trsvcid")" = "$1" ] && [ "$(cat "$p/addr_trtype")" = tcp ] && echo "$p"
    done
}

# target_port_down TCPPORT: the target "reboots": unlink every subsystem from
# the port and remove it (remembered for target_port_up)
target_port_down() {
    local p l
    : >"$VM/port-$1.saved"
    for p in $(port_dirs_for "$1"); do
        echo "${p##*/} $(cat "$p/addr_adrfam") $(cat "$p/addr_traddr")" >>"$VM/port-$1.saved"
        for l in "$p"/subsystems/*; do
            [ -L "$l" ] || continue
            echo "link ${p##*/} ${l##*/}" >>"$VM/port-$1.saved"
            rm "$l" || return 1
        done
        rmdir "$p" || return 1
    done
    [ -s "$VM/port-$1.saved" ]
}
target_port_up() {
    local a b c
    while read -r a b c; do
        case $a in
        link) ln -s "$CFS/subsystems/$c" "$CFS/ports/$b/subsystems/$c" || return 1 ;;
        *)
            mkdir "$CFS/ports/$a" || return 1
            echo "$b" >"$CFS/ports/$a/addr_adrfam"
            echo tcp >"$CFS/ports/$a/addr_trtype"
            echo "$c" >"$CFS/ports/$a/addr_traddr"
            echo "$1" >"$CFS/ports/$a/addr_trsvcid"
            ;;
        esac
    done <"$VM/port-$1.saved"
}

# ------------------------------------------ the node plugin from the image
# The image's root filesystem (hack/image.sh, unpacked by
# hack/image-check.sh) arrives read-only at $IMG over 9p when run.sh is given
# RDS_CSI_IMAGE_ROOTFS. image_node_start runs the node plugin from it in a
# chroot, with what the chart mounts into its pod: /dev, /sys, /proc, the
# host's /etc/nvme, and the kubelet directory (here $WORK) with
# bidirectional propagation, so its mounts show on the host side. Only the
# image's binary and tools are on its PATH.
IMG=/image
IMG_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
image_node_start() {
    stop_node
    : >$VM/node.image # guest.sh's cleanup puts the usual node plugin back
    /usr/bin/mount -t proc proc $IMG/proc &&
        /usr/bin/mount --rbind /sys $IMG/sys &&
        /usr/bin/mount --rbind /dev $IMG/dev &&
        /usr/bin/mount --bind /etc/nvme $IMG/etc/nvme &&
        /usr/bin/mount -t tmpfs tmpfs $IMG/run && mkdir -p $IMG$VM &&
        /usr/bin/mount --bind $VM $IMG$VM &&
        /usr/bin/mount -t tmpfs tmpfs $IMG/tmp &&
        /usr/bin/mount -t tmpfs tmpfs $IMG/var && mkdir -p $IMG$WORK &&
        { /usr/bin/mountpoint -q $WORK || /usr/bin/mount --bind $WORK $WORK; } &&
        /usr/bin/mount --make-shared $WORK &&
        /usr/bin/mount --bind $WORK $IMG$WORK || return 1
    rm -f $VM/node.sock
    # shellcheck disable=SC2086 # a list of flags
    chroot $IMG /usr/bin/env -i PATH=$IMG_PATH NO_COLOR=1 rds-csi node --endpoint "$NODE_EP" \
        --node-id $NODE_ID --metrics-address off --staging-root $WORK ${NODE_ARGS:-} 2>>$VM/node.log &
    echo $! >$VM/node.pid
    wait_for 60 test -S $VM/node.sock
}
image_node_stop() {
    stop_node
    local m
    for m in $WORK /var /tmp /run /etc/nvme /dev /sys /proc; do
        /usr/bin/umount -l $IMG$m 2>/dev/null
    done
    /usr/bin/mount --make-private $WORK 2>/dev/null
    rm -f $VM/node.image
    start_node
}

# ------------------------------------------------ the Linux target's sshd
# start_sshd: OpenSSH's sshd on 127.0.0.1:22, as an nvmet storage host runs
# it for the driver's SSH client: a host key made now, root admitting the
# key $VM/ssh/client_ed25519 (made now too), the LVM tools on the
# sessions' PATH. sshd_fingerprint prints the host key's SHA256 fingerprint.
start_sshd() {
    local d=$VM/ssh
    alive sshd && return 0
    mkdir -p $d /run/sshd /run/lock/lvm /root/.ssh
    rm -f $d/host_ed25519* $d/client_ed25519*
    ssh-keygen -q -t ed25519 -N "" -C vm-host -f $d/host_ed25519 </dev/null &&
        ssh-keygen -q -t ed25519 -N "" -C rds-csi -f $d/client_ed25519 </dev/null || return 1
    cp $d/client_ed25519.pub /root/.ssh/authorized_keys
    cat >$d/sshd_config <<CONF
ListenAddress 127.0.0.1
Port 22
HostKey $d/host_ed25519
AuthorizedKeysFile /root/.ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $d/sshd.pid
SetEnv PATH=/usr/sbin:/usr/bin:/sbin:/bin
CONF
    /usr/sbin/sshd -D -e -f $d/sshd_config 2>>$VM/sshd.log &
    echo $! >$VM/sshd.pid
    # listening: 127.0.0.1:22 in state LISTEN
    wait_for 10 grep -q '0100007F:0016 00000000:0000 0A' /proc/net/tcp || { cat $VM/sshd.log; return 1; }
}
sshd_fingerprint() { ssh-keygen -lf $VM/ssh/host_ed25519.pub | cut -d' ' -f2; }

# ------------------------------------------------ the nvmet backend's host
# nvmet_host_up: the guest as the nvmet backend's storage host: sshd, and
# volume group $NVMET_VG on a loop device over $DATA/nvmet.img (4 GiB,
# sparse) with a 3 GiB thin pool `thin`. nvmet_host_down undoes it.
NVMET_VG=rdscsivm
nvmet_host_up() {
    start_sshd || { log "sshd did not start"; return 1; }
    truncate -s 4G $DATA/nvmet.img
    NVMET_LOOP=$(/usr/sbin/losetup -f --show $DATA/nvmet.img) || return 1
    run pvcreate -q "$NVMET_LOOP" && run vgcreate -q $NVMET_VG "$NVMET_LOOP" &&
        run lvcreate -q --type thin-pool -L 3G -n thin $NVMET_VG
}
nvmet_host_down() {
    vgremove -q -f $NVMET_VG >/dev/null 2>&1
    [ -z "${NVMET_LOOP:-}" ] || { pvremove -q "$NVMET_LOOP" >/dev/null 2>&1; /usr/sbin/losetup -d "$NVMET_LOOP"; }
    rm -f $DATA/nvmet.img
}
# start_nvmet_controller ENDPOINT LOG [FLAGS...]: `rds-csi controller
# --backend nvmet` managing this guest over SSH (host key pinned), the
# kernel target on 127.0.0.1:4421 (the simulator keeps 4420); its PID in
# $NVMET_PID, waits for its socket
start_nvmet_controller() {
    local ep=$1 logf=$2; shift 2
    rds-csi controller --backend nvmet --endpoint "$ep" \
        --rds-address 127.0.0.1:22 --rds-user root --rds-key-file $VM/ssh/client_ed25519 \
        --rds-host-key "$(sshd_fingerprint)" --nvmet-volume-group $NVMET_VG --nvmet-thin-pool thin \
        --nvmet-listen-address 127.0.0.1 --nvmet-port 4421 \
        --volume-id-prefix "" --standalone "$@" 2>>"$logf" &
    NVMET_PID=$!
    wait_for 30 test -S "${ep#unix://}"
}
