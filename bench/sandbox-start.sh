#!/usr/bin/env bash
# Cold vs warm starts of the sandbox tool on the project's Debian image:
# N runs of `microvm-sandbox run --image debian -- true` (boot) and N of
# `microvm-sandbox run --from TEMPLATE -- true` (restore a clone), one table
# of medians and p90 from the tool's --json reports and the wall time of
# each run, with the warm/cold ratio.
#
#   bench/sandbox-start.sh [N]      (default 20)
#
# On a host without VT-x/AMD-V the runs happen inside the emulated machine
# (tests/harness/run-nested.sh) and the table says so: emulator numbers.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
eval "$(./scripts/guest-artifacts.sh | grep -E '^(KERNEL)=')"
export MICROVM_KERNEL=$KERNEL

measure() {
	local n=$1 tool=$PWD/build/examples/microvm-sandbox
	# Local storage (the emulated machine: its own tmpfs, not the 9p share).
	local dir=$PWD/build/bench-sandbox
	[[ ${MICROVM_NESTED:-} == 1 ]] && dir=/tmp/bench-sandbox
	rm -rf "$dir" && mkdir -p "$dir"
	"$tool" prepare --snapshot "$dir/tpl" --image debian --mem 256 2>/dev/null
	for kind in cold warm; do
		for i in $(seq "$n"); do
			local args=(--image debian --mem 256)
			[ "$kind" = warm ] && args=(--from "$dir/tpl")
			local t0 t1
			t0=$(date +%s%N)
			"$tool" run "${args[@]}" --json "$dir/r.json" -- true
			t1=$(date +%s%N)
			python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print(sys.argv[2], j["start_ms"], j["command_ms"], (int(sys.argv[4])-int(sys.argv[3]))/1e6)' \
				"$dir/r.json" "$kind" "$t0" "$t1"
		done
	done >"$dir/samples"
	python3 - "$dir/samples" "${MICROVM_NESTED:-0}" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
def col(kind, i):
    return sorted(float(r[i]) for r in rows if r[0] == kind)
def p90(v):
    return v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]
where = "inside the emulated machine (QEMU TCG + nested SVM): emulator numbers" if sys.argv[2] == "1" else "native KVM"
n = len(col("cold", 1))
print("sandbox start, Debian image, 1 vCPU, 256 MiB, `true`; %d runs each; %s" % (n, where))
print("| metric (ms) | cold: boot median | p90 | warm: restore median | p90 | warm/cold |")
print("|---|---:|---:|---:|---:|---:|")
for name, i in (("VM start -> agent ready", 1), ("command (true)", 2), ("whole tool run (wall)", 3)):
    c, w = col("cold", i), col("warm", i)
    mc, mw = statistics.median(c), statistics.median(w)
    print("| %s | %.1f | %.1f | %.1f | %.1f | %.3f |" % (name, mc, p90(c), mw, p90(w), mw / mc))
PY
}
if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
	measure "$n"
else
	./tests/harness/run-nested.sh bash -c "$(declare -f measure); measure $n"
fi
