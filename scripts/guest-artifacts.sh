#!/usr/bin/env bash
# Set up and build the project's default guest: the kernel (Debian's
# linux-source-6.1 + guest/kernel/microvm.config), the Debian root
# filesystem image with the guest agent (guest/rootfs/build-debian.sh), both
# cached in ~/.cache/microvm, and an initramfs whose /init is the guest agent.
# Progress goes to stderr. Prints three lines:
#   KERNEL=<path of the bzImage>
#   DEBIAN_IMAGE=<path of the ext4 image>
#   INITRD=<path of the initramfs>
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >&2   # its progress (packages, the build) on stderr
agent=$PWD/build/guest/agent/microvm-agent
kdir=$(./guest/kernel/build.sh guest | tail -n1)
image=$(./guest/rootfs/build-debian.sh --agent "$agent" | tail -n1)
initrd=$PWD/build/guest/initramfs-agent.cpio.gz
./guest/initramfs/build.sh "$initrd" --agent "$agent" >/dev/null
echo "KERNEL=$kdir/bzImage"
echo "DEBIAN_IMAGE=$image"
echo "INITRD=$initrd"
