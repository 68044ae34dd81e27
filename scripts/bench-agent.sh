#!/usr/bin/env bash
# Build what bench-agent needs (guest kernel, agent initramfs; cached) and
# run it: directly on a host with VT-x/AMD-V, else inside the emulated SVM
# machine (then the numbers are emulator numbers).
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts=$(./scripts/guest-artifacts.sh)
eval "$(grep -E '^(KERNEL|INITRD)=' <<<"$artifacts")"
cmd=("$PWD/build/bench/bench-agent" --kernel "$KERNEL" --initrd "$INITRD" "$@")
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	exec "${cmd[@]}"
fi
exec ./tests/harness/run-nested.sh "${cmd[@]}"
