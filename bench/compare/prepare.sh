#!/usr/bin/env bash
# Everything bench/compare.sh needs, built or installed when missing
# (progress on stderr); prints KEY=VALUE lines on stdout:
#   KERNEL      the project's guest kernel (virtio-mmio)
#   KERNEL_PCI  the same configuration plus virtio-pci, for QEMU q35
#   IMAGE       the project's Debian image plus fio, iperf3 and ping (a
#               variant of guest/rootfs/build-debian.sh, cached next to it)
# Packages (Debian): QEMU with SeaBIOS, runc, fio, iperf3, iputils-ping,
# python3-matplotlib; the build tree (scripts/setup.sh). Needs root.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
log() { printf 'compare/prepare: %s\n' "$*" >&2; }

pkgs=(qemu-system-x86 seabios qemu-system-data runc fio iperf3 iputils-ping python3-matplotlib)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2 || {
        apt-get update -q >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
    }
fi

log "building the tree (scripts/setup.sh)"
"$root/scripts/setup.sh" >&2
log "guest kernels (cached after the first build, ~4 min each)"
kernel=$("$root/guest/kernel/build.sh" guest | tail -n1)/bzImage
kernel_pci=$("$root/guest/kernel/build.sh" pci | tail -n1)/bzImage
log "Debian image with fio, iperf3 and ping (cached after the first build)"
image=$("$root/guest/rootfs/build-debian.sh" --agent "$root/build/guest/agent/microvm-agent" \
    --packages fio,iperf3,iputils-ping | tail -n1)
echo "KERNEL=$kernel"
echo "KERNEL_PCI=$kernel_pci"
echo "IMAGE=$image"
