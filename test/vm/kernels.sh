#!/usr/bin/env bash
# Prepares Debian guest kernels for the QEMU test harness (test/vm/vm.ts). Idempotent; a cached run
# fetches nothing. Safe to run concurrently (one flock around everything).
#
#   test/vm/kernels.sh [6.1] [6.12]        (default: both)
#
# 1. Installs what the harness needs if missing (Debian packages, --no-install-recommends):
#      qemu-system-x86 busybox-static kmod cpio xz-utils zstd lz4
# 2. Resolves each metapackage's current image through its Depends (never pins an ABI number):
#      6.1  -> linux-image-amd64       -> linux-image-6.1.0-N-amd64
#      6.12 -> linux-image-6.12-amd64  -> linux-image-6.12.X+debNN-amd64
#    `apt-get download`s it (the kernel is NEVER installed on the host) and `dpkg-deb -x`s it into
#      ${ICMPWATCH_CACHE:-$HOME/.cache/icmpwatch}/kernels/<package>_<version>/tree
# 3. Extracts the uncompressed ELF vmlinux from the bzImage payload (PVH boot), runs depmod on the
#    tree (the guest autoloads modules from it), and builds a busybox initramfs (init = guest-init.sh)
#    with the 9p/virtio modules that `modprobe -d TREE -S KVER --show-depends` lists.
#
# Prints one line per kernel on stdout (everything else goes to stderr):
#   ICMPWATCH-KERNEL flavor=6.1 kver=... dir=... vmlinux=... initrd=... tree=...
# Env: ICMPWATCH_CACHE (cache root), ICMPWATCH_VM_OFFLINE=1 (use what is cached, never touch apt).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache_root=${ICMPWATCH_CACHE:-$HOME/.cache/icmpwatch}
kdir=$cache_root/kernels
offline=${ICMPWATCH_VM_OFFLINE:-0}
log() { echo "kernels.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

flavors=("$@")
[ ${#flavors[@]} -gt 0 ] || flavors=(6.1 6.12)
meta_of() {
  case "$1" in
    6.1) echo linux-image-amd64 ;;
    6.12) echo linux-image-6.12-amd64 ;;
    *) die "unknown kernel flavor '$1' (want 6.1 or 6.12)" ;;
  esac
}
for f in "${flavors[@]}"; do meta_of "$f" >/dev/null; done

[ "$(uname -m)" = x86_64 ] || die "x86_64 host required"

# ---- 1. host packages ------------------------------------------------------------------------
pkgs=(qemu-system-x86 busybox-static kmod cpio xz-utils zstd lz4)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
apt_updated=0
apt_update() {
  [ "$apt_updated" = 1 ] && return 0
  log "apt-get update"
  apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || log "apt-get update reported errors (continuing)"
  apt_updated=1
}
if [ ${#missing[@]} -gt 0 ]; then
  [ "$offline" = 1 ] && die "missing packages and ICMPWATCH_VM_OFFLINE=1: ${missing[*]}"
  [ "$(id -u)" = 0 ] || die "missing packages (need root to install): ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  install() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
      --no-install-recommends "${missing[@]}" >&2
  }
  install || { apt_update; install; }
fi
for t in qemu-system-x86_64 modprobe depmod cpio xz zstd lz4 dpkg-deb setpriv flock; do
  command -v "$t" >/dev/null || [ -x "/usr/sbin/$t" ] || [ -x "/sbin/$t" ] || die "missing tool: $t"
done
export PATH=$PATH:/usr/sbin:/sbin
busybox=/bin/busybox
[ -x "$busybox" ] || die "$busybox missing (busybox-static)"
file_is_static() { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'; }
file_is_static "$busybox" || die "$busybox is not static (install busybox-static, not busybox)"

mkdir -p "$kdir"
tmp=
trap 'if [ -n "$tmp" ]; then rm -rf "$tmp"; fi' EXIT
exec 9>"$kdir/.lock"
flock 9

# The initramfs depends on this script and guest-init.sh: rebuild it (cheap) when they change.
initrd_id=$(cat "$here/kernels.sh" "$here/guest-init.sh" | sha256sum | cut -c1-12)

# ---- helpers ---------------------------------------------------------------------------------
field() { sed -n "s/^$2: //p" <<<"$1" | sed -n 1p; }

# apt-cache takes ~0.5 s a call: remember the answer until the apt lists change.
lists_stamp() { stat -c '%n %Y %s' /var/lib/apt/lists/*Packages* 2>/dev/null | sha256sum | cut -c1-16; }
resolve() { # flavor -> "<image-package> <version>" from the apt lists (no network)
  local memo=$kdir/.resolved-$1 stamp r
  stamp=$(lists_stamp)
  if [ -f "$memo" ] && [ "$(head -n1 "$memo")" = "$stamp" ]; then
    sed -n 2p "$memo"
    return 0
  fi
  r=$(resolve_apt "$1") || return 1
  printf '%s\n%s\n' "$stamp" "$r" >"$memo.$$" && mv -f "$memo.$$" "$memo"
  echo "$r"
}
resolve_apt() {
  local meta out dep img ver
  meta=$(meta_of "$1")
  out=$(apt-cache show --no-all-versions "$meta" 2>/dev/null) || return 1
  dep=$(field "$out" Depends)
  img=$(sed -n 's/^\(linux-image-[^ ,|]*\).*/\1/p' <<<"$dep")
  [ -n "$img" ] || return 1
  out=$(apt-cache show --no-all-versions "$img" 2>/dev/null) || return 1
  ver=$(field "$out" Version)
  [ -n "$ver" ] || return 1
  echo "$img $ver"
}

# bzImage -> ELF vmlinux, through the setup header (boot protocol >= 2.08):
# payload = protected-mode code at (setup_sects+1)*512, payload_offset at 0x248, length at 0x24c.
extract_vmlinux() {
  local bz=$1 out=$2 sects off len start magic
  sects=$(od -An -t u1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
  [ "$sects" = 0 ] && sects=4
  off=$(od -An -t u4 -j $((0x248)) -N4 "$bz" | tr -d ' ')
  len=$(od -An -t u4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
  start=$(((sects + 1) * 512 + off))
  magic=$(od -An -t x1 -j "$start" -N 6 "$bz" | tr -d ' \n')
  local dec
  case "$magic" in
    fd377a585a00*) dec="xz -dc --single-stream" ;;
    28b52ffd*) dec="zstd -dcq" ;;
    02214c18*) dec="lz4 -dcq" ;;
    1f8b*) dec="gzip -dc" ;;
    *) die "unknown bzImage payload magic $magic in $bz" ;;
  esac
  log "vmlinux: payload ${dec%% *} at $start ($len bytes)"
  # The payload ends with a 4-byte size the decompressors may complain about: judge the output.
  dd if="$bz" iflag=skip_bytes,count_bytes skip="$start" count="$len" bs=1M status=none |
    $dec >"$out" 2>/dev/null || true
  [ "$(head -c 4 "$out" | od -An -t x1 | tr -d ' \n')" = 7f454c46 ] || die "no ELF vmlinux from $bz"
}

build_initrd() { # dir kver out
  local dir=$1 kver=$2 out=$3 tree=$1/tree root m line mods=()
  root=$(mktemp -d "$dir/.initrd.XXXXXX")
  mkdir -p "$root"/{bin,dev,proc,sys,newroot,mods,sbin}
  cp "$busybox" "$root/bin/busybox"
  for a in $("$busybox" --list); do
    [ "$a" = busybox ] || ln -sf busybox "$root/bin/$a"
  done
  cp "$here/guest-init.sh" "$root/init"
  chmod 755 "$root/init"
  # Kernel module autoload (request_module) runs /sbin/modprobe in the initramfs root: forward it
  # into the host root, with the guest kernel's own module tree.
  printf '#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe -d /run/icmpwatch-vm/modroot "$@"\n' \
    >"$root/sbin/modprobe"
  chmod 755 "$root/sbin/modprobe"
  # 9p over virtio-pci and its dependencies, in load order, decompressed (busybox insmod).
  : >"$root/mods/order"
  for m in virtio_pci 9pnet_virtio 9p; do
    while read -r line; do
      case "$line" in
        insmod\ *)
          local ko base
          read -r _ ko _ <<<"$line"
          base=$(basename "$ko"); base=${base%.xz}; base=${base%.zst}
          grep -qxF "$base" "$root/mods/order" && continue
          case "$ko" in
            *.xz) xz -dc "$ko" >"$root/mods/$base" ;;
            *.zst) zstd -dcq "$ko" >"$root/mods/$base" ;;
            *) cp "$ko" "$root/mods/$base" ;;
          esac
          echo "$base" >>"$root/mods/order"
          mods+=("$base")
          ;;
        builtin\ *) ;;
        *) die "unexpected modprobe output: $line" ;;
      esac
    done < <(modprobe -d "$tree" -S "$kver" --show-depends "$m")
  done
  log "initramfs modules for $kver: ${mods[*]:-(all built in)}"
  (cd "$root" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc -R 0:0 --quiet) >"$out.tmp"
  mv -f "$out.tmp" "$out"
  rm -rf "$root"
}

# ---- 2./3. per kernel ------------------------------------------------------------------------
for flavor in "${flavors[@]}"; do
  pointer=$kdir/current-$flavor
  if [ "$offline" = 1 ]; then
    [ -f "$pointer" ] || die "ICMPWATCH_VM_OFFLINE=1 but no cached $flavor kernel"
    name=$(cat "$pointer")
  else
    r=$(resolve "$flavor") || { apt_update; r=$(resolve "$flavor"); } ||
      die "cannot resolve $(meta_of "$flavor") through apt"
    img=${r% *}; ver=${r#* }
    name=${img}_${ver}
  fi
  dir=$kdir/$name
  if [ ! -f "$dir/ready" ]; then
    [ "$offline" = 1 ] && die "cached $flavor kernel $dir is incomplete"
    t0=$(date +%s%N)
    tmp=$(mktemp -d "$kdir/.$name.XXXXXX")
    chmod 755 "$tmp"
    log "fetching $img=$ver"
    (cd "$tmp" && apt-get -o DPkg::Lock::Timeout=600 download -q "$img=$ver" >&2 2>&1) ||
      { apt_update; (cd "$tmp" && apt-get download -q "$img=$ver" >&2); }
    deb=$(ls "$tmp"/*.deb)
    log "extracting $(basename "$deb") ($(du -h "$deb" | cut -f1))"
    dpkg-deb -x "$deb" "$tmp/tree"
    rm -f "$deb"
    # Debian bookworm ships modules under /lib/modules; newer layouts use /usr/lib/modules.
    moddir=$( (ls -d "$tmp"/tree/lib/modules/* "$tmp"/tree/usr/lib/modules/* 2>/dev/null || true) | head -n1)
    [ -n "$moddir" ] || die "no modules directory in $img"
    kver=$(basename "$moddir")
    if [ "$moddir" != "$tmp/tree/lib/modules/$kver" ]; then
      mkdir -p "$tmp/tree/lib/modules" && ln -s "../../usr/lib/modules/$kver" "$tmp/tree/lib/modules/$kver"
    fi
    echo "$kver" >"$tmp/kver"
    extract_vmlinux "$tmp/tree/boot/vmlinuz-$kver" "$tmp/vmlinux"
    depmod -b "$tmp/tree" "$kver"
    touch "$tmp/ready"
    if [ -e "$dir" ]; then rm -rf "$dir"; fi # an incomplete earlier attempt
    mv "$tmp" "$dir"
    tmp=
    log "$flavor: $name ready in $((($(date +%s%N) - t0) / 1000000)) ms"
  fi
  kver=$(cat "$dir/kver")
  initrd=$dir/initrd-$initrd_id.cpio
  if [ ! -f "$initrd" ]; then
    # Other checkouts sharing this cache may still use older ones: drop only stale ones.
    find "$dir" -maxdepth 1 -name 'initrd-*.cpio' -mmin +1440 -delete
    build_initrd "$dir" "$kver" "$initrd"
  fi
  if [ "$offline" != 1 ] && [ "$(cat "$pointer" 2>/dev/null)" != "$name" ]; then
    echo "$name" >"$pointer.tmp.$$" && mv -f "$pointer.tmp.$$" "$pointer"
  fi
  echo "ICMPWATCH-KERNEL flavor=$flavor kver=$kver dir=$dir vmlinux=$dir/vmlinux initrd=$initrd tree=$dir/tree"
done
