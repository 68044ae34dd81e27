#!/usr/bin/env bash
# Side-by-side comparison of libmicrovm with QEMU -M microvm, QEMU -M q35
# (SeaBIOS: the "traditional VM"), a runc container and a plain process,
# all on the same guest kernel, Debian image and commands.
#
#   bench/compare.sh [--quick] [--out DIR]
#
# Builds and installs what it needs (as root; Debian 12), then:
#  1. host facts (bench/compare/facts.sh)
#  2. native rows, tiny guests (bench/compare/tiny.sh): create -> first
#     output (bench-boot; bench-density against the raw-KVM floor and
#     QEMU), create/start/exit/destroy rate, start with many VMs alive, host
#     memory per idle VM, next to a plain process
#  3. Linux-guest rows (bench/compare/linux.sh -> run.py): cold start (first
#     output, agent/command ready, a command's exit), warm start (restore,
#     reset, fork; QEMU's migration-file restore; runc create+start),
#     memory per idle instance and how many 128 MiB guests fit in a memory
#     budget, start rate with 1 and 2 starters, a compute kernel, fio, iperf3
#     and ping. Natively on a host whose KVM has VT-x/AMD-V; otherwise all of
#     it inside the emulated machine (QEMU TCG + nested SVM), side by side in
#     one run, and labelled emulator numbers.
#  4. the report (bench/compare/report.py): DIR/<date>-<host>.md with the
#     table, how each number was measured and the host facts, and PNG plots
#     of the distributions next to it; the raw samples as .json.
# DIR is bench/results for a full run, build/compare-results for --quick.
#
# --quick (for CI; scripts/test.sh runs it) runs every case on every system
# once, with the smallest counts: no warm-up runs, 0.25 s per fio pattern,
# 1 s of iperf3; the Linux-guest phases all in one emulated machine, the
# last cold start of each VM saved as the template its warm starts
# restore, and the VMs' start rate (1 starter, 1 start) taken from their
# cold and restore starts instead of booting again. It proves the suite works and
# asserts no timings: it fails only when a case could not run (each step
# has a time limit, and the runner a 300 s deadline). Runs took 140 s on
# the 2-core development machine with the guest builds cached (a VM start
# that stalls under the emulator and is retried adds up to 60 s).
# A full run on that machine takes ~35 minutes.
# The run counts of both are set below.
set -euo pipefail
cd "$(dirname "$0")/.."
command="bench/compare.sh${*:+ $*}"
quick=0
out=
while (($#)); do
	case $1 in
	--quick) quick=1 ;;
	--out) out=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "usage: bench/compare.sh [--quick] [--out DIR]" >&2; exit 2 ;;
	esac
	shift
done
[ "$(id -u)" -eq 0 ] || { echo "compare: needs root (KVM, runc, TAP, cgroups, mounts)" >&2; exit 1; }
t0=$(date +%s)
step() { echo "compare: [$(($(date +%s) - t0))s] $*" >&2; }

if ((quick)); then
	out=${out:-build/compare-results}
	# tiny: bench-boot/bench-density runs, bench-density cycles and
	# alive counts, idle instances for memory; Linux: see run.py
	tiny_runs=10 tiny_cycles=10 tiny_live=10 tiny_mem=5
	counts='"runs": 1, "warmup": 0, "warm_runs": 1, "mem_n": 1, "budget_mib": 256,
		"fit_cap": 1, "rate_starters": [1], "rate_starts": 1, "cpu_reps": 1, "cpu_mib": 4,
		"data_mib": 16, "fio_seconds": 0.25, "fio_ramp": 0, "net_seconds": 1, "pings": 10,
		"one_machine": 1, "templates_from_cold": 1, "rate_from_one": 1, "fio_serial": 1,
		"ready_timeout": 60, "cmd_timeout": 30, "deadline_s": 300'
else
	out=${out:-bench/results}
	tiny_runs=500 tiny_cycles=2000 tiny_live=100,1000,8000 tiny_mem=200
	counts='"runs": 10, "warmup": 1, "warm_runs": 10, "mem_n": 4, "budget_mib": 384,
		"fit_cap": 24, "rate_starters": [1, 2], "rate_starts": 3, "cpu_reps": 5, "cpu_mib": 32,
		"data_mib": 256, "fio_seconds": 5, "fio_ramp": 1, "net_seconds": 5, "pings": 200,
		"one_machine": 0, "templates_from_cold": 0, "rate_from_one": 0, "fio_serial": 1,
		"ready_timeout": 120, "cmd_timeout": 120, "deadline_s": 0'
fi

step "preparing: packages, build, guest kernels, Debian image with fio/iperf3/ping"
eval "$(bench/compare/prepare.sh | grep -E '^(KERNEL|KERNEL_PCI|IMAGE)=')"
# bench-density and bench-boot are built by setup.sh with the rest.
work=build/compare
rm -rf "$work" && mkdir -p "$work" "$out"

step "host facts"
bench/compare/facts.sh >"$work/facts.json"

step "native rows: tiny guests and processes"
bench/compare/tiny.sh "$tiny_runs" "$tiny_cycles" "$tiny_live" "$tiny_mem" "$work/tiny.json"

step "Linux-guest rows (all systems side by side)"
cat >"$work/settings.json" <<EOF
{"quick": $quick, "kernel": "$KERNEL", "kernel_pci": "$KERNEL_PCI", "image": "$IMAGE",
 $counts}
EOF
bench/compare/linux.sh "$work/settings.json" "$work/linux.json"

step "report"
name=$(date +%Y-%m-%d)-$(hostname -s)
((quick)) && name+=-quick
/usr/bin/python3 bench/compare/report.py --facts "$work/facts.json" --tiny "$work/tiny.json" \
	--linux "$work/linux.json" --out "$out/$name.md" --command "$command"
step "done: $out/$name.md"
# A failed case is in the report; the run fails too (CI runs --quick).
/usr/bin/python3 -c 'import json, sys; e = json.load(open(sys.argv[1]))["errors"]; sys.exit(1 if e else 0)' "$work/linux.json" ||
	{ echo "compare: some cases failed (see the report's Failures)" >&2; exit 1; }
