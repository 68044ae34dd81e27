#!/usr/bin/env bash
# The main job: set everything up, then run a command in a microVM with the
# sandboxing tool (examples/sandbox.c), on the project's default guest: the
# kernel built from Debian's linux-source-6.1 (cached) and an initramfs whose
# /init is the guest agent. The second run starts from a snapshot of the
# first VM instead of booting.
# Hosts without VT-x/AMD-V cannot run Linux guests on their /dev/kvm: there
# the same commands run inside the emulated SVM machine (tests/harness).
set -euo pipefail
cd "$(dirname "$0")/.."
artifacts=$(./scripts/guest-artifacts.sh)
eval "$(grep -E '^(KERNEL|INITRD)=' <<<"$artifacts")"
sandbox=(./build/examples/microvm-sandbox --stats --kernel "$KERNEL" --initrd "$INITRD"
	 --cpus 2 --mem 256 --snapshot)
script='echo "Hello from $(uname -sr) in a microVM: $(nproc) vCPUs, $(free -m | awk "/Mem:/{print \$2}") MiB";
        echo "the command ran as pid $$ under $(cat /proc/1/comm), exit status 7 follows"; exit 7'
run() {
	echo "demo: \$ microvm-sandbox ... -- $(printf '%q ' "${@: -3}" | cut -c1-70)..."
	set +e
	"$@"
	echo "demo: exit status $?"
	set -e
}
demo() {
	# The snapshot goes to a writable place on local storage: build/ here;
	# in the emulated machine (which sees the host's files read-only) its
	# own tmpfs /tmp, not the 9p scratch share, where every guest page the
	# clone touches first would be read through the emulator.
	local snap=$PWD/build/demo-snapshot
	[[ ${MICROVM_NESTED:-} == 1 ]] && snap=/tmp/demo-snapshot
	rm -rf "$snap"
	run "${sandbox[@]}" "$snap" -- sh -c "$script"
	echo "demo: again, now restored from the snapshot the first run saved:"
	run "${sandbox[@]}" "$snap" -- sh -c 'echo "restored clone says: $(cat /proc/uptime | cut -d" " -f1) s of guest uptime"'
}
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	demo
	exit 0
fi
echo "demo: this CPU has no VT-x/AMD-V, so Linux guests run inside an emulated machine"
echo "demo: (tests/harness/run-nested.sh: QEMU TCG with SVM); timings there are emulator numbers"
export -f run demo
export script
exec ./tests/harness/run-nested.sh bash -c "$(declare -p sandbox); $(declare -f run demo); script=$(printf '%q' "$script"); demo"
