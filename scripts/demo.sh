#!/usr/bin/env bash
# The main job: set everything up, then boot the project's default Linux
# guest (guest kernel built from Debian's linux-source-6.1, cached; busybox
# initramfs) in a microVM through examples/hello and show its console.
# Hosts without VT-x/AMD-V cannot run Linux guests on their /dev/kvm: there
# the same command runs inside the emulated SVM machine (tests/harness).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
kdir=$(./guest/kernel/build.sh guest | tail -n1)
initrd=$PWD/build/guest/initramfs.cpio.gz
./guest/initramfs/build.sh "$initrd" >/dev/null
cmd=(./build/examples/microvm-hello --kernel "$kdir/bzImage" --initrd "$initrd" --cpus 2 --mem 256
     --cmdline "console=ttyS0 reboot=k panic=-1 pci=off MICROVM_SHELL=0")
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	echo "demo: booting the default Linux guest in a microVM"
	exec "${cmd[@]}"
fi
echo "demo: this CPU has no VT-x/AMD-V, so Linux guests run inside an emulated machine"
echo "demo: (tests/harness/run-nested.sh: QEMU TCG with SVM); booting the default Linux guest there"
exec ./tests/harness/run-nested.sh "${cmd[@]}"
