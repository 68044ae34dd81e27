#!/usr/bin/env bash
# Set up and build the project's default guest: the kernel (Debian's
# linux-source-6.1 + guest/kernel/microvm.config, cached in ~/.cache/microvm)
# and an initramfs whose /init is the guest agent. Prints two lines:
#   KERNEL=<path of the bzImage>
#   INITRD=<path of the initramfs>
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
kdir=$(./guest/kernel/build.sh guest | tail -n1)
initrd=$PWD/build/guest/initramfs-agent.cpio.gz
./guest/initramfs/build.sh "$initrd" --agent build/guest/agent/microvm-agent >/dev/null
echo "KERNEL=$kdir/bzImage"
echo "INITRD=$initrd"
