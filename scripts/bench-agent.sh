#!/usr/bin/env bash
# Build what bench-agent needs (guest kernel, agent initramfs; cached) and
# run it: directly on a host with VT-x/AMD-V, else inside the emulated SVM
# machine (then the numbers are emulator numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh >/dev/null
kdir=$(./guest/kernel/build.sh guest | tail -n1)
initrd=$PWD/build/guest/initramfs-agent.cpio.gz
./guest/initramfs/build.sh "$initrd" --agent build/guest/agent/microvm-agent >/dev/null
cmd=("$PWD/build/bench/bench-agent" --kernel "$kdir/bzImage" --initrd "$initrd" "$@")
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	exec "${cmd[@]}"
fi
exec ./tests/harness/run-nested.sh "${cmd[@]}"
