#!/usr/bin/env bash
# Installs the Debian packages Clipper needs, only those that are missing.
# apt pitfalls on these machines (see HOST-FACTS): no recommends, a private
# archive directory, and waiting for the dpkg lock.
set -euo pipefail

# Go is not a Debian 12 package in a version new enough (bookworm has 1.19):
# say so plainly rather than fail later with "go: command not found".
export PATH=/usr/local/go/bin:$PATH
if ! command -v go >/dev/null 2>&1; then
  echo "deps: Go 1.26 or newer is needed (at /usr/local/go, from the Go project's release archive); it is not installed" >&2
  exit 1
fi
gov=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
if [ "$(printf '%s\n1.26\n' "${gov%%[!0-9.]*}" | sort -V | head -1)" != "1.26" ]; then
  echo "deps: Go 1.26 or newer is needed; this is Go $gov" >&2
  exit 1
fi

pkgs=(
  qemu-system-x86 qemu-utils
  nftables iptables iproute2
  awscli
  busybox-static cpio xz-utils zstd kmod
  syslinux syslinux-common mtools dosfstools
  genisoimage
  iputils-tracepath iputils-ping iperf3
  openssl ca-certificates
)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps: missing packages ${missing[*]}; run as root or install them" >&2
  exit 1
fi
D=${TMPDIR:-/tmp}/clipper-apt-archives
mkdir -p "$D/partial"
apt_opts=(-o "Dir::Cache::Archives=$D" -o DPkg::Lock::Timeout=600)
echo "deps: installing ${missing[*]}"
apt-get "${apt_opts[@]}" update -qq
DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}"
