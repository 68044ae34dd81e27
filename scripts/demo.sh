#!/usr/bin/env bash
# The main job: set everything up, then run commands in microVMs with the
# sandboxing tool (microvm-sandbox, examples/sandbox/) on the project's
# default guest: the kernel built from Debian's linux-source-6.1 and the
# project's Debian image (both built once and cached in ~/.cache/microvm).
# It runs python3 in a freshly booted VM, saves a booted VM as a template and
# runs a command in a clone restored from it (a warm start).
# Hosts without VT-x/AMD-V cannot run Linux guests on their /dev/kvm: there
# the same commands run inside the emulated SVM machine (tests/harness).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: setting up (packages, build, guest kernel, Debian image; minutes the first time)"
eval "$(./scripts/guest-artifacts.sh | grep -E '^(KERNEL|DEBIAN_IMAGE)=')"
export MICROVM_KERNEL=$KERNEL
demo() {
	local tool=./build/examples/microvm-sandbox
	# The template goes to a writable place on local storage: build/ here;
	# in the emulated machine (which sees the host's files read-only) its
	# own tmpfs /tmp, not the 9p scratch share, where every guest page a
	# clone touches first would be read through the emulator.
	local tpl=$PWD/build/demo-template
	[[ ${MICROVM_NESTED:-} == 1 ]] && tpl=/tmp/demo-template
	set +e
	echo "demo: \$ microvm-sandbox run --image debian -- python3 -c 'import sys; print(sys.version)'"
	$tool run -v --image debian -- python3 -c 'import sys; print(sys.version)' 2> >(grep -E '^microvm-sandbox' >&2)
	echo "demo: exit status $?"
	echo "demo: \$ microvm-sandbox prepare --snapshot $tpl"
	rm -rf "$tpl"
	$tool prepare --snapshot "$tpl" --image debian --cpus 2 --mem 256
	echo "demo: \$ microvm-sandbox run --from $tpl -- sh -c '...; exit 7'"
	$tool run -v --from "$tpl" -- sh -c 'echo "Hello from $(uname -sr) on $(. /etc/os-release; echo $PRETTY_NAME): $(nproc) vCPUs, $(free -m | awk "/Mem:/{print \$2}") MiB"; exit 7' 2> >(grep -E '^microvm-sandbox' >&2)
	echo "demo: exit status $? (the command's own)"
	set -e
}
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	demo
	exit 0
fi
echo "demo: this CPU has no VT-x/AMD-V, so Linux guests run inside an emulated machine"
echo "demo: (tests/harness/run-nested.sh: QEMU TCG with SVM); timings there are emulator numbers"
exec ./tests/harness/run-nested.sh bash -c "$(declare -f demo); demo"
