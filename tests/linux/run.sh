#!/usr/bin/env bash
# Linux-guest test tier: build the guest artifacts (cached), then run
# test_linux directly when this host's CPU has VT-x/AMD-V, or inside the
# emulated SVM machine of tests/harness/run-nested.sh when it has not.
# Never skips: any missing piece is a failure.
#
#   tests/linux/run.sh BUILD_DIR
#   MICROVM_LINUX_ONLY="test_a test_b" tests/linux/run.sh BUILD_DIR   (those cases only;
#   "python" names the Python bindings' Linux tests)
set -euo pipefail
build=$(cd "$1" && pwd)
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/microvm

kdir=$("$root/guest/kernel/build.sh" guest | tail -n1)
export MICROVM_TEST_VMLINUX=$kdir/vmlinux
export MICROVM_TEST_BZIMAGE=$kdir/bzImage

# The test initramfs lives in the build tree: the emulated machine sees the
# host's files, but not the host's /tmp.
export MICROVM_TEST_INITRD=$build/tests/linux/test-initrd.cpio.gz
"$root/guest/initramfs/build.sh" "$MICROVM_TEST_INITRD" --init "$here/init-test.sh" >/dev/null

# The default guest userland: the agent as /init (guest/agent).
export MICROVM_TEST_AGENT_INITRD=$build/tests/linux/agent-initrd.cpio.gz
"$root/guest/initramfs/build.sh" "$MICROVM_TEST_AGENT_INITRD" --agent "$build/guest/agent/microvm-agent" >/dev/null

export MICROVM_TEST_ROOTFS=$build/tests/linux/rootfs.ext4
"$here/mkrootfs.sh" "$MICROVM_TEST_ROOTFS"

# A disk root with the agent as /.microvm/agent (the overlay-root tests).
export MICROVM_TEST_AGENT_ROOTFS=$build/tests/linux/agent-rootfs.ext4
"$here/mkagentroot.sh" "$MICROVM_TEST_AGENT_ROOTFS" "$build/guest/agent/microvm-agent" 2>/dev/null

export MICROVM_TEST_DISTRO_KERNEL
MICROVM_TEST_DISTRO_KERNEL=$("$here/distro-kernel.sh" "$cache/distro")

# The Python bindings' Linux tests use the same guest and this build's library.
export MICROVM_LIBRARY=$build/libmicrovm.so.0

# The sandbox tool's tests (tests/linux/sandbox): the project's Debian image
# and an OCI image converted from a layout built offline, made here on the
# host (inside the emulated machine the cache is read-only; the tool finds
# them there as cache hits).
export MICROVM_SANDBOX=$build/examples/microvm-sandbox
export MICROVM_KERNEL=$kdir/bzImage
agent=$build/guest/agent/microvm-agent
MICROVM_TEST_DEBIAN_IMAGE=$("$root/guest/rootfs/build-debian.sh" --agent "$agent" | tail -n1)
export MICROVM_TEST_DEBIAN_IMAGE
export MICROVM_TEST_OCI=$build/tests/linux/oci-layout
# Made once per build tree: each new layout has a new digest, and so a new
# converted image in the cache.
[ -f "$MICROVM_TEST_OCI/index.json" ] || "$here/mkoci.sh" "$MICROVM_TEST_OCI" >/dev/null
"$root/guest/rootfs/build-oci.sh" "$MICROVM_TEST_OCI" --agent "$agent" >/dev/null

programs=$(cd "$here" && ls test_linux*.c | sed 's/\.c$//')
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	echo "linux tests: this CPU has hardware virtualization: running directly"
	rc=0
	for p in $programs; do "$build/tests/linux/$p" || rc=1; done
	"$here/pytest-linux.sh" || rc=1
	"$here/pytest-linux.sh" sandbox || rc=1
	"$here/pytest-linux.sh" net || rc=1
	exit $rc
fi
echo "linux tests: no vmx/svm on this CPU: running inside the emulated machine"
# One emulated machine per test case, so that a failure of the emulator
# itself (the harness exits 125, e.g. an oops in the L1 kernel under QEMU's
# nested SVM; or exit 124, a guest stuck for minutes or whose kernel
# reports a vCPU stalled for over a minute while every vCPU thread is in
# KVM_RUN: exit_if_guest_stalled() in linux_test.h) costs one case a retry
# instead of the run. A failing assertion is never retried.
start=$(date +%s)
failed=0 passed=0 retries=0
for p in $programs; do
# A program whose cases share one VM (marked RUN-AS-ONE-UNIT) runs whole.
if grep -q RUN-AS-ONE-UNIT "$here/$p.c"; then
	cases=ALL
else
	cases=$(grep -o 'cmocka_unit_test(test_[a-z0-9_]*)' "$here/$p.c" |
		sed 's/cmocka_unit_test(\(.*\))/\1/')
fi
for c in $cases; do
	# MICROVM_LINUX_ONLY="case ..." runs only those (a developer's shortcut).
	if [ -n "${MICROVM_LINUX_ONLY:-}" ] && [[ " $MICROVM_LINUX_ONLY " != *" $c "* ]]; then
		continue
	fi
	for attempt in 1 2 3; do
		rc=0
		filter=$c
		[ "$c" != ALL ] || filter=
		MICROVM_TEST_FILTER=$filter "$root/tests/harness/run-nested.sh" "$build/tests/linux/$p" || rc=$?
		# 125: the emulated machine failed; 124: the guest got stuck (seen
		# only under the emulator's nested SVM). Anything else is final.
		[ "$rc" -eq 125 ] || [ "$rc" -eq 124 ] || break
		echo "linux tests: $c: emulator trouble (exit $rc), attempt $attempt of 3" >&2
		retries=$((retries + 1))
	done
	if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "linux tests: $c FAILED (exit $rc)"; fi
done
done
# The Python bindings' Linux tests: one machine for all of them.
# The Python bindings' tests and the sandbox tool's, each as one unit.
# "net" (tests/linux/net): user-mode networking through the tool.
for unit in python sandbox net; do
	if [ -n "${MICROVM_LINUX_ONLY:-}" ] && [[ " $MICROVM_LINUX_ONLY " != *" $unit "* ]]; then
		continue
	fi
	for attempt in 1 2 3; do
		rc=0
		"$root/tests/harness/run-nested.sh" "$here/pytest-linux.sh" "$unit" || rc=$?
		[ "$rc" -eq 125 ] || [ "$rc" -eq 124 ] || break
		echo "linux tests: $unit: emulator trouble (exit $rc), attempt $attempt of 3" >&2
		retries=$((retries + 1))
	done
	if [ "$rc" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "linux tests: $unit FAILED (exit $rc)"; fi
done
echo "linux tests: harness wall time $(( $(date +%s) - start )) s, $retries emulator retries"
echo "linux: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
