#!/usr/bin/env bash
# Real end-to-end tests in a QEMU guest: Debian's kernel with the NVMe/TCP
# host and target drivers, the simulator exporting volumes for real through
# the kernel target on the guest's loopback, the controller and the node
# plugin, driven over CSI by `rds-csi csi ...`.
#
#   hack/vm/run.sh                 every scenario (see hack/vm/guest/scenarios/)
#   hack/vm/run.sh smoke block     just these scenarios
#   hack/vm/run.sh bench           the node data path benchmark (a table)
#   hack/vm/run.sh bench-clone     time to a usable clone: the driver's vs a
#                                  host-assisted copy (CLONE_MIB, CLONE_RUNS)
#   hack/vm/run.sh bench-nvmet     the nvmet backend's controller RPCs and a
#                                  fence's stall on a staying host, beside
#                                  the simulated RDS's (BENCH_RUNS, FENCE_RUNS)
#
# Prints `PASS name` / `FAIL name` / `SKIP name` per scenario and a closing
# "N passed, N failed" line; exits 0 only if no scenario failed, 3 if QEMU or
# the guest kernel cannot be installed (hack/test.sh: SKIP, or FAIL in CI).
#
# It installs what it needs from Debian (apt-get update once, only when
# something is missing), builds `rds-csi` (release), and caches the kernel
# and the initramfs under $RDS_CSI_VM_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/rds-csi-vm), keyed by their inputs.
# csi-sanity, when found on PATH or in CSI_SANITY, is shared into the guest
# for the `sanity` scenario.
#
# Knobs (environment): ACCEL=auto|tcg|kvm (auto: KVM only if a probe boot
# works, remembered per host kernel), MEM=1024 (MiB; 6144 for bench-clone),
# SMP=1 (faster under TCG), QEMU_TIMEOUT=2400 (s), OUT=dir (logs:
# console.log, results.log), RDS_CSI_BIN (skip the build), NODE_ARGS (extra
# `rds-csi node` flags), SANITY_ARGS (extra csi-sanity flags), BENCH_RUNS=10,
# CLONE_MIB=1024 and CLONE_RUNS=3 (bench-clone: the volume's size in MiB,
# the runs of each way), FENCE_RUNS=3 (bench-nvmet: cuts per backend),
# VM_SHARE_EXTRA (more files for the guest's
# /share/bin), LINUX_TARGET_TESTS (linux-target's real_host test
# executable for the `linux-target` scenario; default: built), KEEP=1
# (keep the initrd and the share in $OUT), NO_APT=1,
# RDS_CSI_IMAGE_ROOTFS (the image's root filesystem, unpacked by
# hack/image-check.sh: shared read-only into the guest, where the `image`
# scenario runs the node plugin from it; added to the default scenarios).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
here=$root/hack/vm
CACHE=${RDS_CSI_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rds-csi-vm}
OUT=${OUT:-$(mktemp -d /tmp/rds-csi-vm.XXXXXX)}
ACCEL=${ACCEL:-auto}
SMP=${SMP:-1}
QEMU_TIMEOUT=${QEMU_TIMEOUT:-2400}
GUEST_TIMEOUT=${GUEST_TIMEOUT:-$((QEMU_TIMEOUT - 20))}
ALL_SCENARIOS="smoke target-resize target-restart fs-ext4 fs-xfs block idempotency no-format format-record renumber expand-ext4 expand-xfs stats orphans snapshot-subvolume snapshot-flat fence-rds linux-target sanity nvmet-backend-sanity two-backends"
# Kernel modules the guest loads (their dependencies come along).
MODULES="configfs loop crc32c_generic crc32c-intel ext4 xfs nvme-core nvme-fabrics nvme-tcp nvmet nvmet-tcp virtio_pci 9pnet_virtio 9p
dm-mod dm-thin-pool dm-snapshot"
# Host programs copied into the guest with their shared libraries; busybox
# provides the rest.
TOOLS="nvme mke2fs e2fsck resize2fs tune2fs dumpe2fs mkfs.xfs xfs_growfs xfs_repair xfs_db xfs_io
blkid mount umount findmnt lsblk blockdev losetup wipefs mountpoint fsck fsck.ext4 date dd truncate
lvm pdata_tools sshd ssh-keygen ssh"
BUILD_VERSION=3 # bump to rebuild every cached initramfs

mode=test
scenarios=()
for a in "$@"; do
  case $a in
    bench | bench-clone | bench-nvmet) mode=$a ;;
    all) read -ra scenarios <<<"$ALL_SCENARIOS" ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) scenarios+=("$a") ;;
  esac
done
IMAGE_ROOTFS=${RDS_CSI_IMAGE_ROOTFS:-}
if [ -n "$IMAGE_ROOTFS" ]; then
  [ -x "$IMAGE_ROOTFS/usr/local/bin/rds-csi" ] ||
    { echo "FAIL vm-harness: RDS_CSI_IMAGE_ROOTFS=$IMAGE_ROOTFS has no usr/local/bin/rds-csi"; exit 1; }
  IMAGE_ROOTFS=$(cd "$IMAGE_ROOTFS" && pwd)
fi
if [ ${#scenarios[@]} -eq 0 ]; then
  read -ra scenarios <<<"$ALL_SCENARIOS"
  [ -n "$IMAGE_ROOTFS" ] && scenarios+=(image)
fi
# the clone benchmark keeps a volume and a full copy of it in guest memory
if [ "$mode" = bench-clone ]; then MEM=${MEM:-6144}; else MEM=${MEM:-1024}; fi

mkdir -p "$CACHE" "$OUT"
log() { printf '[vm %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
die() { echo "FAIL vm-harness: $*"; echo "0 passed, 1 failed"; exit 1; }
T0=$SECONDS

# ------------------------------------------------------------ 1. packages
apt_updated=0
apt_install() {
  [ "${NO_APT:-0}" = 1 ] && { echo "missing: $*; NO_APT=1" >&2; return 1; }
  [ "$(id -u)" = 0 ] || { echo "missing: $*; run as root to install them" >&2; return 1; }
  if [ $apt_updated = 0 ]; then timeout 300 apt-get update -qq || return 1; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
ensure_packages() {
  local need=() had_qemu_img=0
  command -v qemu-img >/dev/null && had_qemu_img=1
  command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
  dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
  command -v nvme >/dev/null || need+=(nvme-cli)
  command -v mke2fs >/dev/null && command -v resize2fs >/dev/null || need+=(e2fsprogs)
  command -v mkfs.xfs >/dev/null || need+=(xfsprogs)
  command -v findmnt >/dev/null && command -v blkid >/dev/null || need+=(util-linux mount)
  command -v cpio >/dev/null || need+=(cpio)
  command -v modprobe >/dev/null || need+=(kmod)
  command -v xz >/dev/null || need+=(xz-utils)
  command -v zstd >/dev/null || need+=(zstd)
  # the Linux target in the guest: LVM thin pools, sshd for its SSH client
  command -v lvm >/dev/null || need+=(lvm2)
  command -v pdata_tools >/dev/null || need+=(thin-provisioning-tools)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
  [ ${#need[@]} = 0 ] && return 0
  log "apt-get install ${need[*]}"
  apt_install "${need[@]}" || return 1
  # Debian's qemu-system-x86 replaces a newer, backported qemu-utils that
  # is not in the apt sources: put Debian's qemu-utils back.
  if [ $had_qemu_img = 1 ] && ! command -v qemu-img >/dev/null; then
    log "qemu-img went away with the qemu-system-x86 install; installing qemu-utils"
    apt_install qemu-utils || return 1
  fi
}
if ! ensure_packages; then
  echo "SKIP vm: could not install the Debian packages (qemu-system-x86 ...)"
  exit 3
fi

# ---------------------------------------------------------- 2. the kernel
kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$kpkg" ] && [ "${NO_APT:-0}" != 1 ] && [ $apt_updated = 0 ]; then
  timeout 300 apt-get update -qq && apt_updated=1
  kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
fi
[ -n "$kpkg" ] || { echo "SKIP vm: cannot resolve the kernel package behind linux-image-amd64"; exit 3; }
kver=${kpkg#linux-image-}
kpkgver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/{print $2}')
KDIR=$CACHE/kernel-$kver-$kpkgver

build_kernel() {
  # .done holds the module list it was unpacked for
  [ -f "$KDIR/.done" ] && [ "$(cat "$KDIR/.done")" = "$MODULES" ] && return 0
  local tmp deb rel line
  mkdir -p "$CACHE/debs"
  deb=$(ls "$CACHE/debs/${kpkg}_${kpkgver//:/%3a}_"*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ]; then
    log "downloading $kpkg $kpkgver"
    (cd "$CACHE/debs" && timeout 600 apt-get download -q -o APT::Sandbox::User=root "$kpkg=$kpkgver") >/dev/null || return 1
    deb=$(ls "$CACHE/debs/${kpkg}_"*.deb 2>/dev/null | head -1)
    [ -n "$deb" ] || return 1
  fi
  tmp=$(mktemp -d "$CACHE/kx.XXXXXX")
  dpkg -x "$deb" "$tmp" || return 1
  rm -rf "$KDIR"
  mkdir -p "$KDIR/modules"
  cp "$tmp/boot/vmlinuz-$kver" "$KDIR/vmlinuz"
  depmod -b "$tmp" "$kver" || return 1
  : >"$KDIR/modules.order"
  for m in $MODULES; do modprobe -d "$tmp" -S "$kver" --show-depends "$m" || return 1; done |
    awk '$1 == "insmod" {print $2}' | awk '!seen[$0]++' | while read -r line; do
      rel=${line#"$tmp/lib/modules/$kver/"}
      mkdir -p "$KDIR/modules/$(dirname "$rel")"
      case $line in
        *.ko.xz) rel=${rel%.xz}; xz -dc "$line" >"$KDIR/modules/$rel" ;;
        *.ko.zst) rel=${rel%.zst}; zstd -qdc "$line" >"$KDIR/modules/$rel" ;;
        *) cp "$line" "$KDIR/modules/$rel" ;;
      esac
      echo "$rel" >>"$KDIR/modules.order"
    done || return 1
  rm -rf "$tmp"
  [ -s "$KDIR/modules.order" ] && echo "$MODULES" >"$KDIR/.done"
  # Only the current kernel stays cached.
  for d in "$CACHE"/kernel-*; do [ "$d" = "$KDIR" ] || rm -rf "$d"; done
  for f in "$CACHE"/debs/*.deb; do [ "$f" = "$deb" ] || rm -f "$f"; done
}
if ! build_kernel; then
  # Stale package lists can name a version the mirror has dropped: refresh
  # them once and resolve the kernel again.
  if [ $apt_updated = 0 ] && [ "${NO_APT:-0}" != 1 ] && timeout 300 apt-get update -qq; then
    apt_updated=1
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
    kver=${kpkg#linux-image-}
    kpkgver=$(apt-cache policy "$kpkg" 2>/dev/null | awk '/Candidate:/{print $2}')
    KDIR=$CACHE/kernel-$kver-$kpkgver
    rm -f "$CACHE"/debs/*.deb
  fi
  build_kernel || { echo "SKIP vm: could not download or unpack the kernel $kpkg"; exit 3; }
fi

# ------------------------------------------------- 3. the base initramfs
# Guest paths are merged-/usr: /bin, /sbin, /lib and /lib64 link into /usr.
guest_path() {
  case $1 in
    /bin/* | /sbin/* | /lib/* | /lib64/*) echo "/usr$1" ;;
    *) echo "$1" ;;
  esac
}
# copy_with_libs ROOT PROGRAM...
copy_with_libs() {
  local r=$1 f lib dst
  shift
  for f in "$@"; do
    dst=$(guest_path "$f")
    mkdir -p "$r$(dirname "$dst")"
    rm -f "$r$dst"
    cp -L "$f" "$r$dst"
    ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
      dst=$(guest_path "$lib")
      [ -e "$r$dst" ] && continue
      mkdir -p "$r$(dirname "$dst")"
      cp -L "$lib" "$r$dst"
    done
  done
}
tool_paths=()
for t in $TOOLS; do
  p=$(PATH=/usr/sbin:/usr/bin:/sbin:/bin command -v "$t") || die "host tool $t not found"
  tool_paths+=("$(readlink -f "$p")|$t")
done
key=$({
  echo "$BUILD_VERSION $kpkg $kpkgver $MODULES"
  printf '%s\n' "${tool_paths[@]}"
  dpkg-query -W busybox-static nvme-cli e2fsprogs xfsprogs util-linux mount coreutils libc6 \
    lvm2 thin-provisioning-tools openssh-server openssh-client 2>/dev/null
} | sha256sum | cut -c1-16)
BASE=$CACHE/base-$key.cpio.gz

# ------ the Linux target's tools (lvm2, thin-provisioning-tools, sshd)
# lvm and pdata_tools are one program each, called by many names; LVM runs
# without udev, dmeventd or metadata backups; sshd drops privileges to the
# user sshd and keeps its privilege-separation directory in /run/sshd.
linux_target_files() {
  local r=$1 n
  for n in $(find /usr/sbin -maxdepth 1 -type l -lname lvm -printf '%f\n'); do ln -sf lvm "$r/usr/sbin/$n"; done
  for n in $(find /usr/sbin -maxdepth 1 -type l -lname pdata_tools -printf '%f\n'); do
    ln -sf pdata_tools "$r/usr/sbin/$n"
  done
  mkdir -p "$r/etc/lvm" "$r/etc/ssh"
  cat >"$r/etc/lvm/lvm.conf" <<'EOF'
devices {
    obtain_device_list_from_udev = 0
    external_device_info_source = "none"
    use_devicesfile = 0
}
activation {
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}
backup {
    backup = 0
    archive = 0
}
EOF
  echo "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin" >>"$r/etc/passwd"
  echo "nogroup:x:65534:" >>"$r/etc/group"
}

build_base() {
  [ -f "$BASE" ] && return 0
  log "building the base initramfs ($BASE)"
  local r t p name
  r=$(mktemp -d "$CACHE/root.XXXXXX")
  mkdir -p "$r"/usr/{bin,sbin,lib,lib64} "$r"/{proc,sys,dev,tmp,run,var,mnt,root,etc/nvme,vm}
  for d in bin sbin lib lib64; do ln -s "usr/$d" "$r/$d"; done
  cp /bin/busybox "$r/usr/bin/busybox"
  for a in $("$r/usr/bin/busybox" --list); do [ "$a" = busybox ] || ln -s busybox "$r/usr/bin/$a"; done
  for t in "${tool_paths[@]}"; do
    p=${t%|*} name=${t#*|}
    rm -f "$r/usr/bin/$name" "$r/usr/sbin/$name"
    copy_with_libs "$r" "$p"
    # the program under the name it is called by (mkfs.ext4 -> mke2fs ...)
    [ "$(basename "$p")" = "$name" ] || ln -sf "$(basename "$p")" "$r$(dirname "$(guest_path "$p")")/$name"
  done
  ln -sf mke2fs "$r/usr/sbin/mkfs.ext4"
  cp /etc/mke2fs.conf "$r/etc/"
  ln -s /proc/self/mounts "$r/etc/mtab"
  echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"
  echo "root:x:0:" >"$r/etc/group"
  linux_target_files "$r"
  local hostnqn
  hostnqn="nqn.2014-08.org.nvmexpress:uuid:$(cat /proc/sys/kernel/random/uuid)"
  echo "$hostnqn" >"$r/etc/nvme/hostnqn"
  echo "${hostnqn##*:}" >"$r/etc/nvme/hostid"
  mkdir -p "$r/usr/lib/modules/$kver"
  cp -a "$KDIR/modules/." "$r/usr/lib/modules/$kver/"
  cp "$KDIR/modules.order" "$r/vm/modules.order"
  (cd "$r" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1 >"$BASE.tmp" || return 1
  mv "$BASE.tmp" "$BASE"
  rm -rf "$r"
  for f in "$CACHE"/base-*.cpio.gz; do [ "$f" = "$BASE" ] || rm -f "$f"; done
}
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "cache lock busy"
build_base || die "could not build the initramfs"
flock -u 9

# --------------------------------------- 4. binaries, share and overlay
bin=${RDS_CSI_BIN:-}
if [ -z "$bin" ]; then
  log "cargo build --release --bin rds-csi"
  (cd "$root" && cargo build --release --quiet --bin rds-csi) || die "cargo build --release failed"
  bin=$root/target/release/rds-csi
fi
share=$OUT/share
rm -rf "$share" && mkdir -p "$share/bin"
cp "$bin" "$share/bin/rds-csi"
sanity=${CSI_SANITY:-$(command -v csi-sanity || true)}
[ -n "$sanity" ] && [ -x "$sanity" ] && cp "$sanity" "$share/bin/csi-sanity"
# VM_SHARE_EXTRA: more host files for the guest's /share/bin (first on PATH
# after the shadows), e.g. a wrapper around rds-csi while debugging
for f in ${VM_SHARE_EXTRA:-}; do cp "$f" "$share/bin/"; done
# ------ the `linux-target` scenario: linux-target's real_host tests, built
# here (debug) unless LINUX_TARGET_TESTS names the executable, shared as
# linux-target-real_host
if [[ " ${scenarios[*]} " == *" linux-target "* ]]; then
  lt_tests=${LINUX_TARGET_TESTS:-}
  if [ -z "$lt_tests" ]; then
    log "cargo test -p linux-target --test real_host --no-run"
    lt_tests=$(cd "$root" && cargo test -p linux-target --test real_host --no-run \
      --message-format=json 2>/dev/null | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
  fi
  for f in $lt_tests; do
    n=$(basename "$f")
    cp "$f" "$share/bin/linux-target-${n%-*}"
  done
fi

ov=$(mktemp -d "$OUT/overlay.XXXXXX")
mkdir -p "$ov/vm" "$ov/usr/lib"
cp "$here/guest/init" "$ov/init"
cp "$here/guest/guest.sh" "$here/guest/lib.sh" "$here/guest/bench.sh" "$here/guest/bench-clone.sh" \
  "$here/guest/bench-nvmet.sh" "$ov/vm/"
cp -r "$here/guest/scenarios" "$ov/vm/"
# shared libraries of the shared binaries (glibc mostly is in the base)
for f in "$share"/bin/*; do
  ldd "$f" 2>/dev/null | awk '/=> \//{print $3} /^\t\/[^ ]+ \(/{print $1}' | while read -r lib; do
    dst=$(guest_path "$lib")
    mkdir -p "$ov$(dirname "$dst")"
    cp -L "$lib" "$ov$dst"
  done
done
cat >"$ov/vm/env" <<EOF
KVER=$kver
MODE=$mode
SCENARIOS="${scenarios[*]}"
GUEST_TIMEOUT=$GUEST_TIMEOUT
IMAGE_ROOTFS=$([ -n "$IMAGE_ROOTFS" ] && echo 1 || echo 0)
NODE_ARGS="${NODE_ARGS:-}"
SANITY_ARGS="${SANITY_ARGS:-}"
BENCH_RUNS=${BENCH_RUNS:-10}
CLONE_MIB=${CLONE_MIB:-1024}
CLONE_RUNS=${CLONE_RUNS:-3}
FENCE_RUNS=${FENCE_RUNS:-3}
export NODE_ARGS SANITY_ARGS BENCH_RUNS CLONE_MIB CLONE_RUNS FENCE_RUNS
EOF
# Base first, then the overlay: the kernel unpacks concatenated archives in
# order. (The overlay names only /usr paths: an entry named like one of the
# base's /lib-style symlinks would replace the link.)
{
  cat "$BASE"
  (cd "$ov" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet) | gzip -1
} >"$OUT/initrd.img" || die "could not build the overlay"
rm -rf "$ov"

# ------------------------------------------------------------ 5. QEMU
QPID=
TPID=
cleanup() {
  [ -n "$QPID" ] && kill "$QPID" 2>/dev/null
  [ -n "$TPID" ] && kill "$TPID" 2>/dev/null
  # keep the logs, not the copies of the binaries (KEEP=1 keeps all)
  [ "${KEEP:-0}" = 1 ] || rm -rf "$share" "$OUT/initrd.img"
}
trap cleanup EXIT

# run_qemu ACCEL BOOT_TIMEOUT: 0 done, 2 no boot within BOOT_TIMEOUT s
run_qemu() {
  local accel=$1 boot_to=$2 cpu=max t0=$SECONDS
  [ "$accel" = kvm ] && cpu=host
  rm -f "$OUT/console.log" "$OUT/results.log"
  : >"$OUT/results.log"
  local cmd=(qemu-system-x86_64 -machine pc -accel "$accel" -cpu "$cpu" -smp "$SMP" -m "$MEM"
    -nodefaults -no-user-config -nographic -no-reboot -monitor none
    -serial "file:$OUT/console.log" -serial "file:$OUT/results.log"
    -kernel "$KDIR/vmlinuz" -initrd "$OUT/initrd.img"
    -append "console=ttyS0 panic=-1 quiet loglevel=4 rdinit=/init"
    -virtfs "local,path=$share,mount_tag=share,security_model=none,readonly=on,id=share")
  [ -n "$IMAGE_ROOTFS" ] &&
    cmd+=(-virtfs "local,path=$IMAGE_ROOTFS,mount_tag=image,security_model=none,readonly=on,id=image")
  echo "${cmd[*]}" >"$OUT/qemu-cmd.txt"
  timeout -k 5 "$QEMU_TIMEOUT" "${cmd[@]}" </dev/null >"$OUT/qemu.stderr" 2>&1 &
  QPID=$!
  if [ "$boot_to" -gt 0 ]; then
    while kill -0 "$QPID" 2>/dev/null && ! grep -q BOOTED "$OUT/results.log"; do
      if [ $((SECONDS - t0)) -ge "$boot_to" ]; then
        kill "$QPID" 2>/dev/null; wait "$QPID" 2>/dev/null; QPID=
        return 2
      fi
      sleep 0.5
    done
  fi
  # Results as they come.
  tail -n +1 -f --pid="$QPID" "$OUT/results.log" 2>/dev/null | tr -d '\r' | grep --line-buffered -v '^BOOTED' &
  TPID=$!
  wait "$QPID"
  local rc=$?
  QPID=
  sleep 0.5
  kill "$TPID" 2>/dev/null; wait "$TPID" 2>/dev/null; TPID=
  return $rc
}

used=
stamp=$CACHE/kvm-unusable-$(uname -r)
if [ "$ACCEL" = kvm ] || { [ "$ACCEL" = auto ] && [ ! -f "$stamp" ] && grep -qwE 'vmx|svm' /proc/cpuinfo && [ -w /dev/kvm ]; }; then
  log "trying KVM (the guest must reach /init within 20 s)"
  if run_qemu kvm 20; then used=kvm; else
    echo "KVM did not boot a guest $(date -u +%FT%TZ)" >"$stamp"
    [ "$ACCEL" = kvm ] && die "ACCEL=kvm: the guest did not boot"
    log "KVM does not boot a guest here; using TCG ($stamp)"
  fi
fi
if [ -z "$used" ]; then
  log "booting $kpkg under TCG ($([ "$mode" = test ] && echo "scenarios: ${scenarios[*]}" || echo "benchmark $mode"))"
  run_qemu tcg 0
  used=tcg
fi

# ---------------------------------------------------------- 6. report
results=$(tr -d '\r' <"$OUT/results.log")
echo
if [ "$mode" != test ]; then
  echo "$results" | sed -n 's/^BENCH \{0,1\}//p'
  grep -q '^BENCH runs' <<<"$results" || die "the benchmark did not finish (see $OUT/console.log)"
  echo "total $((SECONDS - T0)) s ($used); logs in $OUT"
  exit 0
fi
pass=$(grep -c '^PASS ' <<<"$results")
fail=$(grep -c '^FAIL ' <<<"$results")
skip=$(grep -c '^SKIP ' <<<"$results")
grep -q '^DONE' <<<"$results" || { echo "FAIL vm: the guest did not finish (see $OUT/console.log)"; fail=$((fail + 1)); }
if [ "$fail" -gt 0 ]; then
  for s in $(sed -n 's/^FAIL \([^ ]*\).*/\1/p' <<<"$results"); do
    echo "---- $s (guest output, tail)"
    tr -d '\r' <"$OUT/console.log" | grep -a "^\[$s\] " | tail -n 40
  done
  echo "---- console tail"
  tr -d '\r' <"$OUT/console.log" | grep -av '^\[' | tail -n 20
fi
echo "==== VM scenarios ($used, $((SECONDS - T0)) s, logs in $OUT)"
grep -E '^(PASS|FAIL|SKIP) ' <<<"$results"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" = 0 ] && [ "$pass" -gt 0 ]
