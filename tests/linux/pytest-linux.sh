#!/usr/bin/env bash
# Linux-guest tests written with Debian's python3 and pytest:
#   pytest-linux.sh [python]  the Python bindings' (bindings/python/tests_linux)
#                             against MICROVM_LIBRARY
#   pytest-linux.sh sandbox   the sandbox tool's (tests/linux/sandbox)
#   pytest-linux.sh net       user-mode networking through the tool (tests/linux/net; root)
# (tests/linux/run.sh sets the library, tool and guest paths). Runs as one unit: directly, or as the
# command of tests/harness/run-nested.sh, whose root file system is
# read-only (hence no bytecode or pytest cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
export PYTHONDONTWRITEBYTECODE=1
case ${1:-python} in
python) dir=$root/bindings/python/tests_linux ;;
sandbox) dir=$here/sandbox ;;
net) dir=$here/net extra=-rA ;; # -rA: the log of the passing tests too
*) echo "pytest-linux.sh: unknown suite $1" >&2; exit 2 ;;
esac
exec /usr/bin/python3 -m pytest "$dir" -q -p no:cacheprovider -rfEs ${extra:-}
