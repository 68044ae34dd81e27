#!/usr/bin/env bash
# ThreadSanitizer run: build ./build-tsan with -fsanitize=thread and run the
# tiny-guest KVM tests that exercise threads (vCPU threads, event loops,
# teardown threads, calls from several threads) plus the unit tests.
#   scripts/tsan.sh                 the default set
#   scripts/tsan.sh test_stress     only the given KVM test(s)
# Any report fails the run (halt_on_error). TSan needs the address space
# layout it expects: if it dies with "unexpected memory mapping", run it
# under `setarch -R` (the script does so when setarch is there).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-tsan}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMICROVM_TSAN=ON >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)" >/dev/null
tests=("$@")
# test_vm is left out: its fd-count case counts while an earlier VM's teardown
# thread may still hold fds, which under TSan's slowdown it often does.
[ ${#tests[@]} -gt 0 ] || tests=(test_stress test_hostile test_snapshot test_reset test_local_access test_embedder_loop)
run=()
command -v setarch >/dev/null && run=(setarch "$(uname -m)" -R)
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:report_signal_unsafe=0}
status=0
for t in "${tests[@]}"; do
	echo "== tsan $t"
	"${run[@]}" "$BUILD_DIR/tests/kvm/$t" || status=1
done
echo "== tsan unit tests"
ctest --test-dir "$BUILD_DIR" -L unit -E "symbols_check|layers|function_length" --output-on-failure || status=1
[ "$status" -eq 0 ] && echo "tsan: no report" || echo "tsan: FAILED (see above)"
exit "$status"
