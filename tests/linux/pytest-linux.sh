#!/usr/bin/env bash
# The Python bindings' Linux-guest tests (bindings/python/tests_linux) with
# Debian's python3 and pytest, against MICROVM_LIBRARY (tests/linux/run.sh
# sets it and the guest paths). Runs as one unit: directly, or as the
# command of tests/harness/run-nested.sh, whose root file system is
# read-only (hence no bytecode or pytest cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 -m pytest "$root/bindings/python/tests_linux" -q -p no:cacheprovider -rfEs
