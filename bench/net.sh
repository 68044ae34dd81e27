#!/usr/bin/env bash
# Networking throughput and latency, user mode and TAP: the same guest (the
# project's kernel and Debian image) as a libmicrovm VM (microvm-sandbox)
# and as a QEMU/KVM VM (-M microvm, virtio-net-device), on the same passt
# (QEMU: -netdev stream to passt's socket) and on one TAP (QEMU: -netdev tap,
# vhost off). The guest measures TCP download/upload of MIB MiB and ROUNDS
# 1-byte request/response round trips against servers in a network
# namespace made for the run (on its loopback for passt, which maps the
# gateway address there; on the TAP's host address); nothing leaves the
# machine. The last rows are ratios ours/QEMU (bench/net.py).
#
#   bench/net.sh [MIB [ROUNDS]]     (default 64 and 2000; needs root)
#
# On a host without VT-x/AMD-V the runs happen inside the emulated machine
# (tests/harness/run-nested.sh): the table is labelled emulator numbers.
# MICROVM_BENCH_NET_ONLY=microvm, qemu, passt or tap measures those rows only.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-64}
rounds=${2:-2000}
eval "$(./scripts/guest-artifacts.sh | grep -E '^(KERNEL)=')"
image=$(guest/rootfs/build-debian.sh --agent build/guest/agent/microvm-agent | tail -n1)
export MICROVM_LIBRARY=$PWD/build/libmicrovm.so.0

measure() {
	local ns=microvm-bench-net-$$
	ip netns add "$ns"
	trap 'ip netns del '"$ns" EXIT
	ip netns exec "$ns" sh -e -c 'ip link set lo up
		ip link add v0 type veth peer name v1
		ip addr add 10.0.2.15/24 dev v0
		ip link set v0 up; ip link set v1 up
		ip route add default via 10.0.2.2 dev v0'
	if [ "${MICROVM_NESTED:-0}" = 1 ]; then
		echo "inside the emulated machine (QEMU TCG + nested SVM): emulator numbers"
	else
		echo "native KVM"
	fi
	PYTHONDONTWRITEBYTECODE=1 ip netns exec "$ns" python3 bench/net.py \
		"$PWD/build/examples/microvm-sandbox" "$1" "$2" "$3" "$4"
}
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	measure "$KERNEL" "$image" "$mib" "$rounds"
else
	./tests/harness/run-nested.sh bash -c "$(declare -f measure); measure $KERNEL $image $mib $rounds"
fi
