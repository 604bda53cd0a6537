#!/usr/bin/env bash
# Builds the test guest into OUTDIR:
#   vmlinux     the Debian kernel, uncompressed (TCG spends ~3 s unpacking a
#               bzImage; an ELF vmlinux boots directly, through PVH)
#   initrd.img  a busybox initramfs (cpio newc, gzip) whose init is
#               scripts/guest/init; the virtio, evdev and ACPI button modules
#               come from the same kernel package
#   disk.qcow2  the same guest as a whole-disk image that firmware boots: a
#               FAT volume with SYSLINUX in its boot sector, the compressed
#               kernel and the initramfs (no partition table: SeaBIOS runs
#               the volume's boot sector like a USB stick's)
# The kernel comes from `apt-get download` of the package linux-image-amd64
# depends on; nothing is installed. A stamp (hash of this script, the guest
# files and busybox) makes a second run a no-op.
#
# Usage: scripts/build-guest.sh OUTDIR
set -euo pipefail

die() { echo "build-guest: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUTDIR"
out=$1
here=$(cd "$(dirname "$0")" && pwd)
guest=$here/guest
busybox=/bin/busybox

# Modules init loads before CLIPPER-GUEST-READY (network: microvm's
# virtio-mmio and q35's virtio-pci) and after it (disks, the power button).
early_modules=(virtio_ring virtio virtio_mmio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci
  failover net_failover virtio_net)
late_modules=(virtio_blk evdev button)

mkdir -p "$out"
out=$(cd "$out" && pwd)
exec 9>"$out/.lock"
flock 9

stamp=$( (cat "$0"; for f in "$guest"/*; do echo "$f"; cat "$f"; done; cat "$busybox") | sha256sum | cut -d' ' -f1)
if [ -s "$out/vmlinux" ] && [ -s "$out/initrd.img" ] && [ -s "$out/disk.qcow2" ] && [ "$(cat "$out/.stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi
for p in busybox-static syslinux mtools dosfstools qemu-utils; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
    die "$p is not installed (make deps installs it)"
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# --- the kernel package ---------------------------------------------------
pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
[ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64 (run apt-get update)"
cache=$out/.cache
mkdir -p "$cache"
deb=$(ls "$cache/${pkg}"_*.deb 2>/dev/null | head -n 1 || true)
if [ -z "$deb" ]; then
  echo "build-guest: downloading $pkg"
  rm -f "$cache"/*.deb
  (cd "$cache" && apt-get -q -o APT::Sandbox::User=root download "$pkg" >/dev/null)
  deb=$(ls "$cache/${pkg}"_*.deb | head -n 1)
fi
# Only the kernel and the few modules the guest loads: the package holds 400 MB.
mkdir -p "$work/pkg"
patterns=('./boot/vmlinuz-*')
for m in "${early_modules[@]}" "${late_modules[@]}"; do patterns+=("./lib/modules/*/$m.ko*"); done
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$work/pkg" --wildcards "${patterns[@]}"

# --- vmlinux out of the bzImage --------------------------------------------
# x86 boot protocol: the setup header says where the compressed kernel is.
# setup_sects (0x1f1) sectors of real-mode setup follow the boot sector; the
# payload sits payload_offset (0x248) bytes after them, payload_length
# (0x24c) bytes long, and ends with the 4-byte uncompressed size.
extract_vmlinux() {
  local bz=$1 dst=$2 sects poff plen start magic
  [ "$(dd if="$bz" bs=1 skip=$((0x202)) count=4 status=none)" = HdrS ] || die "$bz: no boot protocol header"
  sects=$(od -An -tu1 -j $((0x1f1)) -N 1 "$bz" | tr -d ' ')
  [ "$sects" -eq 0 ] && sects=4
  read -r poff plen < <(od -An -tu4 -j $((0x248)) -N 8 "$bz")
  start=$(((sects + 1) * 512 + poff))
  magic=$(od -An -tx1 -j "$start" -N 6 "$bz" | tr -d ' \n')
  payload() { dd if="$bz" bs=1M iflag=skip_bytes,count_bytes skip="$start" count="$1" status=none; }
  case $magic in
    fd377a585a00) payload "$plen" | xz -dc --single-stream >"$dst" ;;
    28b52ffd*) payload $((plen - 4)) | zstd -dcq >"$dst" ;;
    1f8b*) payload "$plen" | gzip -dc >"$dst" 2>/dev/null || [ -s "$dst" ] ;;
    *) die "$bz: unknown kernel compression (magic $magic)" ;;
  esac
  [ "$(od -An -tx1 -N 4 "$dst" | tr -d ' \n')" = 7f454c46 ] || die "$bz: the payload is not an ELF vmlinux"
}
vmlinuz=$(ls "$work"/pkg/boot/vmlinuz-*)
kver=${vmlinuz##*/vmlinuz-}
extract_vmlinux "$vmlinuz" "$work/vmlinux"

# --- the initramfs ----------------------------------------------------------
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc/acpi/PWRF,lib/modules,proc,sys,dev,run,tmp,www,root}
cp "$busybox" "$root/bin/busybox"
# busybox --list-full names every applet with its directory.
for a in $("$busybox" --list-full); do
  [ "$a" = bin/busybox ] || [ -e "$root/$a" ] || ln -s /bin/busybox "$root/$a"
done
install -m 0755 "$guest/init" "$root/init"
install -m 0755 "$guest/clipper-net" "$guest/clipper-banner" "$root/sbin/"
install -m 0755 "$guest/udhcpc.script" "$root/etc/udhcpc.script"
install -m 0755 "$guest/acpi-power" "$root/etc/acpi/PWRF/00000080"
install -D -m 0755 "$guest/who.cgi" "$root/www/cgi-bin/who"

# Modules go in flat, in dependency order (modinfo's depends field).
declare -A modpath=() loaded=()
while IFS= read -r f; do
  n=${f##*/}
  n=${n%%.ko*}
  modpath[${n//-/_}]=$f
done < <(find "$work/pkg/lib/modules" -name '*.ko*')
order=()
add_module() {
  local m=$1 f d
  [ -n "${loaded[$m]:-}" ] && return
  loaded[$m]=1
  f=${modpath[$m]:-}
  [ -n "$f" ] || return 0 # built in, or not in this kernel
  for d in $(modinfo -F depends "$f" | tr , ' '); do add_module "$d"; done
  case $f in
    *.ko.xz) xz -dc "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko.zst) zstd -dcq "$f" >"$root/lib/modules/$m.ko" ;;
    *.ko) cp "$f" "$root/lib/modules/$m.ko" ;;
  esac
  order+=("$m")
}
for m in "${early_modules[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/etc/modules.early"
order=()
for m in "${late_modules[@]}"; do add_module "$m"; done
printf '%s\n' "${order[@]}" >"$root/etc/modules.late"
echo "$kver" >"$root/etc/clipper-kernel"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 -n >"$work/initrd.img"

# --- the whole-disk image -------------------------------------------------
# mtools writes into the FAT image and syslinux installs itself through
# mtools, so nothing is mounted.
printf '%s\n' 'DEFAULT guest' 'PROMPT 0' 'TIMEOUT 0' 'LABEL guest' '  KERNEL vmlinuz' '  INITRD initrd.img' \
  '  APPEND console=ttyS0 quiet panic=-1' >"$work/syslinux.cfg"
fat_kib=$((($(stat -c %s "$vmlinuz") + $(stat -c %s "$work/initrd.img")) / 1024 + 4096))
mkfs.fat -n CLIPPER -C "$work/disk.raw" "$fat_kib" >/dev/null
mcopy -i "$work/disk.raw" "$vmlinuz" ::vmlinuz
mcopy -i "$work/disk.raw" "$work/initrd.img" ::initrd.img
mcopy -i "$work/disk.raw" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$work/disk.raw"
qemu-img convert -O qcow2 "$work/disk.raw" "$work/disk.qcow2"

mv "$work/vmlinux" "$out/vmlinux"
mv "$work/disk.qcow2" "$out/disk.qcow2"
mv "$work/initrd.img" "$out/initrd.img"
echo "$kver" >"$out/kernel.version"
echo "$stamp" >"$out/.stamp"
echo "build-guest: $out/vmlinux ($kver), $out/initrd.img and $out/disk.qcow2"
