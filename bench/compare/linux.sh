#!/usr/bin/env bash
# The Linux-guest rows of bench/compare.sh: runs bench/compare/run.py (every
# system side by side, one run) as root in a network namespace of its own
# (unshare --net; not `ip netns exec`, which remounts /sys and so hides the
# cgroup file systems).
# On a host whose KVM has VT-x/AMD-V that happens here; otherwise inside the
# emulated machine (tests/harness/run-nested.sh: QEMU TCG with nested SVM),
# and the numbers are emulator numbers.
#
#   bench/compare/linux.sh SETTINGS.json OUT.json
#
# Work files (the block I/O file, snapshots, OCI bundles) go to
# build/compare-work natively, to the emulated machine's /tmp (tmpfs) there.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
settings=$(realpath -- "$1")
out=$2

measure() { # $1 = repository root, $2 = settings file
    local root=$1
    export PYTHONPATH=$root/bench/compare:$root/bindings/python
    export MICROVM_LIBRARY=$root/build/libmicrovm.so.0 PYTHONDONTWRITEBYTECODE=1
    if [ "${MICROVM_NESTED:-0}" = 1 ]; then
        export CMP_WORKDIR=/tmp/compare-work
    else
        export CMP_WORKDIR=$root/build/compare-work
    fi
    rm -rf "$CMP_WORKDIR"
    mkdir -p "$CMP_WORKDIR"
    trap 'rm -rf "$CMP_WORKDIR"' EXIT
    unshare --net -- /usr/bin/python3 "$root/bench/compare/run.py" "$2"
}

if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
    echo "compare: Linux guests run natively (KVM with hardware virtualization)" >&2
    measure "$root" "$settings" >"$out"
else
    echo "compare: no VT-x/AMD-V: the Linux-guest rows run inside the emulated machine" >&2
    MICROVM_NESTED_TIMEOUT=${MICROVM_NESTED_TIMEOUT:-3600} \
        "$root/tests/harness/run-nested.sh" bash -c "$(declare -f measure); measure $(printf '%q %q' "$root" "$settings")" >"$out"
fi
