#!/bin/sh
# PID 1 of an icmpwatch test guest (busybox sh inside the initramfs that test/vm/kernels.sh builds).
# Kernel command line parameters it reads:
#   vmjob=PATH    shell script to run as root (a path on the host, no spaces)
#   vmrepo=PATH   host directory shared read-write at the same path (9p tag "repo"); the job's cwd
#   vmout=PATH    optional: the job's stdout+stderr go to this file instead of the serial console
#   vmnonce=ID    optional: echoed in the markers so the host can tell runs apart
# The host's / is shared read-only (tag "hostroot"), the guest kernel's extracted package tree
# read-only (tag "kmods", mounted at /run/icmpwatch-vm/modroot). The job runs chrooted into the host
# root with fresh proc, sys, devtmpfs, devpts, tmpfs (/tmp /run /root /dev/shm), bpffs, tracefs,
# debugfs and cgroup2. Afterwards:  ICMPWATCH-VM-EXIT <nonce> <exit code>  on the console, poweroff.
# No `set -e`: this is PID 1, and PID 1 exiting panics the kernel; every step checks and calls fail.
# shellcheck disable=SC2013,SC2016
export PATH=/bin:/sbin
R=/newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1

arg() {
  for w in $(cat /proc/cmdline); do
    case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
  done
}
job=$(arg vmjob)
repo=$(arg vmrepo)
out=$(arg vmout)
nonce=$(arg vmnonce)
[ -n "$nonce" ] || nonce=-

finish() {
  sync
  echo "ICMPWATCH-VM-EXIT $nonce $1"
  poweroff -f
  sleep 60
}
fail() {
  echo "ICMPWATCH-VM-ERROR $nonce $*"
  finish 255
}

while read -r m; do
  insmod "/mods/$m" || fail "insmod $m"
done </mods/order

p9=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o "$p9,ro,cache=loose" hostroot "$R" || fail "mount hostroot"
mount -t proc proc "$R/proc" || fail "mount proc"
mount -t sysfs sysfs "$R/sys" || fail "mount sys"
mount -t devtmpfs devtmpfs "$R/dev" || fail "mount dev"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts "$R/dev/pts" || fail "mount devpts"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
for d in /tmp:1777 /run:755 /root:700; do
  mount -t tmpfs -o "mode=${d#*:}" tmpfs "$R${d%:*}" || fail "mount tmpfs ${d%:*}"
done
mount -t bpf bpffs "$R/sys/fs/bpf" || fail "mount bpffs"
mount -t tracefs tracefs "$R/sys/kernel/tracing" || fail "mount tracefs"
mount -t debugfs debugfs "$R/sys/kernel/debug" || fail "mount debugfs"
mount -t cgroup2 cgroup2 "$R/sys/fs/cgroup" || fail "mount cgroup2"
mkdir -p "$R/run/icmpwatch-vm/modroot" "$R/run/netns" "$R/run/lock"
mount -t 9p -o "$p9,ro,cache=loose" kmods "$R/run/icmpwatch-vm/modroot" || fail "mount kmods"
# The guest kernel's config and System.map at /boot (bpftool feature probe, libbpf __kconfig).
if [ -d "$R/boot" ] && mount -t tmpfs -o mode=755 tmpfs "$R/boot"; then
  for f in "$R"/run/icmpwatch-vm/modroot/boot/*; do
    [ -e "$f" ] && ln -s "/run/icmpwatch-vm/modroot/boot/${f##*/}" "$R/boot/${f##*/}"
  done
fi
if [ -n "$repo" ]; then
  # What jobs only read (the repo's node, modules, built code) comes from the host root's view,
  # which caches (cache=loose): through the uncached repo share every node start re-reads hundreds
  # of modules over 9p (importing the agent took 34 s instead of 5 s). Read-only in the guest.
  readonly_dirs=
  for d in node_modules dist build bin; do
    if [ -d "$R$repo/$d" ]; then
      mkdir -p "/readonly/$d" && mount -o bind "$R$repo/$d" "/readonly/$d" || fail "bind $repo/$d"
      readonly_dirs="$readonly_dirs $d"
    fi
  done
  mkdir -p "$R$repo" 2>/dev/null # only matters under the fresh /tmp, /run or /root
  mount -t 9p -o "$p9,cache=mmap" repo "$R$repo" || fail "mount repo at $repo"
  for d in $readonly_dirs; do
    mount -o bind "/readonly/$d" "$R$repo/$d" || fail "bind $repo/$d"
  done
fi

hostname icmpwatch-vm
ip link set lo up || fail "lo up"

krel=$(uname -r)
echo "ICMPWATCH-VM-KREL $nonce $krel"
[ -n "$job" ] || fail "no vmjob= on the kernel command line"

cwd=${repo:-/}
path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
[ -n "$repo" ] && path=$repo/node_modules/.bin:$path
set -- env -i HOME=/root PATH="$path" TERM=dumb LANG=C.UTF-8 ICMPWATCH_VM=1 \
  ICMPWATCH_VM_KREL="$krel" ICMPWATCH_VM_MODROOT=/run/icmpwatch-vm/modroot \
  /bin/sh -c 'cd "$1" && exec /bin/sh "$2"' icmpwatch-job "$cwd" "$job"
if [ -n "$out" ]; then
  chroot "$R" "$@" >"$R$out" 2>&1 </dev/null
else
  chroot "$R" "$@" </dev/null
fi
finish $?
