#!/usr/bin/env bash
# Serving function calls in a Linux guest through the guest agent, four ways
# in one process: cold boot, restore, reset and fork per call
# (bench/serve-linux.c, build/bench/bench-serve-linux), on the project's
# default guest (its kernel + the initramfs whose /init is the agent).
#
#   bench/serve-linux.sh [--calls N] [--cold-calls N] [other bench-serve-linux options]
#
# Builds what it needs first (scripts/setup.sh, then the guest kernel and the
# agent initramfs; the kernel is cached). Defaults: 10 cold boots and 50 calls
# in each other mode. On a host without VT-x/AMD-V the bench runs inside the
# emulated machine (tests/harness/run-nested.sh; a cold boot there takes
# seconds, the whole run a few minutes on a quiet machine) and its table says
# so: emulator numbers, meaningful only as ratios. Progress (one line per
# call) goes to stderr, the table to stdout. The host facts are taken here,
# outside the emulated machine, and printed with the table.
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf 'serve-linux: %s\n' "$*" >&2; }

log "building the library and the bench (scripts/setup.sh)"
./scripts/setup.sh >&2
log "the guest kernel (cached after the first build)"
kdir=$(./guest/kernel/build.sh guest | tail -n1)
initrd=$PWD/build/guest/initramfs-agent.cpio.gz
./guest/initramfs/build.sh "$initrd" --agent "$PWD/build/guest/agent/microvm-agent" >/dev/null
cmd=("$PWD/build/bench/bench-serve-linux" --kernel "$kdir/bzImage" --initrd "$initrd" "$@")

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
facts="$cpu, $(nproc) CPUs, Linux $(uname -r)"
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	facts+=", hardware virtualization, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start"
	export MICROVM_BENCH_HOST=$facts
	"${cmd[@]}"
	exit 0
fi
qemu=$(qemu-system-x86_64 --version 2>/dev/null | sed -n '1s/.*version \([^ ]*\).*/ \1/p' || true)
facts+=", no VT-x/AMD-V (its /dev/kvm cannot run Linux guests), load average"
facts+=" $(cut -d' ' -f1-3 /proc/loadavg) at the start; emulated machine: QEMU$qemu TCG"
export MICROVM_BENCH_HOST="$facts, -cpu EPYC,+svm, 2 vCPUs, 4 GiB (tests/harness/run-nested.sh)"
log "running inside the emulated machine (tests/harness/run-nested.sh)"
rc=0
./tests/harness/run-nested.sh "${cmd[@]}" || rc=$?
if [ "$rc" -eq 125 ]; then
	# The emulated machine itself failed (not the bench): one more try.
	log "the emulated machine failed (exit 125); trying once more"
	rc=0
	./tests/harness/run-nested.sh "${cmd[@]}" || rc=$?
fi
echo "host load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
exit "$rc"
