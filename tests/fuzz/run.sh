#!/usr/bin/env bash
# Build the libFuzzer targets (clang, ASan + UBSan, -DMICROVM_FUZZ=ON) into
# build-fuzz/ and run each for SECONDS (default 20) from its committed seed
# corpus (tests/fuzz/corpus/<target>/, read-only: new inputs go to a scratch
# copy), one job and one worker each. Exits 1 if any target crashed, leaked
# or timed out; the reproducer is left in build-fuzz/fuzz-out/<target>/.
# One process per target, in turn (no -jobs/-workers: the machine is small).
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#   tests/fuzz/run.sh --seeds      rewrite the seed corpora (needs /dev/kvm)
set -euo pipefail
cd "$(dirname "$0")/../.."

BUILD=${FUZZ_BUILD_DIR:-build-fuzz}
TARGETS_ALL=(virtq blk vsock net elf bzimage state agent_proto)

configure() {
	CC=clang cmake -S . -B "$BUILD" -DMICROVM_FUZZ=ON -DMICROVM_BUILD_TESTS=OFF \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
}

if [ "${1:-}" = "--seeds" ]; then
	configure
	cmake --build "$BUILD" -j2 --target fuzz_make_seeds tiny_payloads >/dev/null
	"$BUILD/tests/fuzz/fuzz_make_seeds" tests/fuzz/corpus "$BUILD/guest/tiny/hello.elf"
	exit 0
fi

SECONDS_EACH=${1:-20}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=("${TARGETS_ALL[@]}")

configure
cmake --build "$BUILD" -j2 --target "${TARGETS[@]/#/fuzz_}" >/dev/null

fail=0
printf '%-12s %10s %12s %s\n' target exec/s executions result
for t in "${TARGETS[@]}"; do
	out="$BUILD/fuzz-out/$t"
	rm -rf "$out"
	mkdir -p "$out/corpus"
	cp tests/fuzz/corpus/"$t"/* "$out/corpus/" 2>/dev/null || true
	set +e
	ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		"$BUILD/tests/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" \
		-rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$out/" \
		"$out/corpus" >"$out/log" 2>&1
	rc=$?
	set -e
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/log" | tail -1)
	secs=$(sed -n 's/^stat::total_run_time: *//p' "$out/log" | tail -1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$out/log" | tail -1)
	if [ "$rc" -eq 0 ]; then
		res=ok
	else
		res="FAILED (rc $rc): $(ls "$out" | grep -E '^(crash|leak|timeout|oom)-' | head -1) see $out/log"
		fail=1
	fi
	printf '%-12s %10s %12s %s\n' "$t" "${rate:-?}" "${runs:-?}" "$res"
	: "$secs"
done
exit "$fail"
