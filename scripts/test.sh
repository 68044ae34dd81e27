#!/usr/bin/env bash
# Set everything up and run the whole test suite:
#   1. release build: unit tests, tiny-guest KVM tests, install check (ctest),
#      then the Python bindings' tests (pytest: scripts/test-python.sh)
#      and the comparison benchmark's smoke run (bench/compare.sh --quick:
#      every case on every system once, ~2.5 min; asserts no timings)
#   2. ASan+UBSan build: the same unit and KVM tests; a TSan build
#      (scripts/tsan.sh): the thread-heavy KVM tests and the unit tests
#   3. the libFuzzer targets, 5 s each (tests/fuzz/run.sh)
#   4. valgrind (memcheck) over the unit tests and the KVM lifecycle tests
# With CI=true a missing /dev/kvm fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -c /dev/kvm ] || ! [ -r /dev/kvm ] || ! [ -w /dev/kvm ]; then
	if [ -n "${CI:-}" ]; then
		echo "test: FATAL: /dev/kvm is missing or not accessible; the KVM tests cannot run" >&2
		exit 1
	fi
	echo "test: WARNING: /dev/kvm is missing or not accessible; KVM tests will be skipped" >&2
fi

./scripts/setup.sh
jobs=$(nproc)

count() { ctest --test-dir "$1" -N "${@:2}" | awk '/Total Tests:/ {print $3}'; }
passed=0

echo "== tests (release build)"
ctest --test-dir build --output-on-failure -j"$jobs"
passed=$((passed + $(count build)))

echo "== Python bindings (pytest)"
py_out=$(./scripts/test-python.sh)
sed '$d' <<<"$py_out"
passed=$((passed + $(tail -n 1 <<<"$py_out" | awk '{print $1}')))

echo "== the comparison, quick (bench/compare.sh --quick: every case on every system once; no timings asserted)"
bench/compare.sh --quick
passed=$((passed + 1))

echo "== tests (ASan + UBSan build)"
BUILD_DIR=build-asan CMAKE_ARGS="-DMICROVM_SANITIZE=ON" ./scripts/setup.sh >/dev/null
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	ctest --test-dir build-asan --output-on-failure -j"$jobs" -LE "install|linux"
passed=$((passed + $(count build-asan -LE "install|linux")))

echo "== tests (ThreadSanitizer build: the thread-heavy KVM tests and the unit tests)"
./scripts/tsan.sh
passed=$((passed + 7))

echo "== fuzz targets (libFuzzer, 5 s each: they build and run clean; long runs: tests/fuzz/run.sh 600)"
tests/fuzz/run.sh 5
passed=$((passed + 8))

echo "== valgrind"
vg=(valgrind -q --error-exitcode=99 --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect)
for t in build/tests/unit/test_*; do
	[ -x "$t" ] || continue
	echo "valgrind $t"
	"${vg[@]}" "$t" >/dev/null
	passed=$((passed + 1))
done
for t in test_vm test_snapshot test_image_cache; do
	echo "valgrind build/tests/kvm/$t"
	MICROVM_FUZZ_ITERS=60 "${vg[@]}" "build/tests/kvm/$t" >/dev/null
	passed=$((passed + 1))
done
echo "test: all passed (ctest release, pytest, compare --quick, ASan/UBSan, TSan, fuzz, valgrind)"
echo "$passed passed, 0 failed"
