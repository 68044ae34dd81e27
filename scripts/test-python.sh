#!/usr/bin/env bash
# Run the Python bindings' tests (bindings/python/tests) with Debian's
# python3 and pytest (scripts/setup.sh installs python3-pytest) against the
# library in ${BUILD_DIR:-build}. Prints pytest's summary line; the last
# line of output is "N passed" for scripts/test.sh. Any pytest failure
# fails, including exit code 5 (no tests collected). With CI set, a missing
# /dev/kvm fails the guest tests instead of skipping them.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-/usr/bin/python3}
BUILD_DIR=${BUILD_DIR:-build}
lib="$PWD/$BUILD_DIR/libmicrovm.so.0"
if [ ! -e "$lib" ]; then
	echo "test-python: FATAL: $lib is missing: build first (scripts/setup.sh)" >&2
	exit 1
fi
if ! "$PY" -c "import pytest" 2>/dev/null; then
	echo "test-python: FATAL: $PY has no pytest (scripts/setup.sh installs python3-pytest)" >&2
	exit 1
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
MICROVM_LIBRARY="$lib" MICROVM_BUILD_DIR="$PWD/$BUILD_DIR" PYTHONDONTWRITEBYTECODE=1 \
	"$PY" -m pytest bindings/python/tests -q -p no:cacheprovider -rfEs >"$log" 2>&1
rc=$?
set -e
summary=$(grep -E '\b(passed|failed|errors?|skipped|deselected|no tests ran)\b.* in [0-9.]+s' "$log" | tail -n 1 || true)
if [ "$rc" -ne 0 ]; then
	cat "$log" >&2
	why="exit code $rc"
	[ "$rc" -eq 5 ] && why="exit code 5: no tests collected"
	echo "test-python: FATAL: pytest failed ($why)" >&2
	exit 1
fi
grep -E '^SKIPPED' "$log" || true
echo "pytest: ${summary:-?}"
passed=$(sed -nE 's/.*\b([0-9]+) passed.*/\1/p' <<<"$summary")
echo "${passed:-0} passed"
