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
# A full run: each phase of run.py (cold, warm, memory, rate, workloads)
# runs in a machine of its own: the emulated machine's own kernel now and
# then fails (run-nested.sh exits 125 then), which loses that phase only;
# such a phase is run once more. --quick (settings "one_machine"): all the
# phases in one machine (one boot of it, one setup), run once more the same
# way if that machine's kernel fails (past 3 minutes then). The machine
# is killed after the runner's deadline + 120 s at the latest. The phases'
# results are merged into OUT.json.
#
# Work files (the block I/O file, snapshots, OCI bundles) go to
# build/compare-work natively, to the emulated machine's /tmp (tmpfs) there.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
settings=$(realpath -- "$1")
out=$2

measure() { # $1 = repository root, $2 = settings file, $3 = phase
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
    local rc=0
    unshare --net -- /usr/bin/python3 "$root/bench/compare/run.py" "$2" "$3" || rc=$?
    if [ "${MICROVM_NESTED:-0}" = 1 ]; then
        # How the emulated machine's kernel and KVM took the TSC rate (see
        # MICROVM_NESTED_TSC_FROM_HOST in run-nested.sh), for the log.
        dmesg | grep -E 'tsc: (Detected|Refined)|TSC rate' | sed 's/^/compare: L1 /' >&2 || true
    fi
    return "$rc"
}

setting() { /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$settings" "$1"; }
one_machine=$(setting one_machine)
deadline=$(setting deadline_s)
nested_timeout=3600
((deadline > 0)) && nested_timeout=$((deadline + 120))

one_phase() { # $1 = phase(s), $2 = output file
    if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
        measure "$root" "$settings" "$1" >"$2"
    else
        # The QEMU guests need the L1's TSC rate right (run-nested.sh).
        MICROVM_NESTED_TSC_FROM_HOST=1 \
        MICROVM_NESTED_TIMEOUT=${MICROVM_NESTED_TIMEOUT:-$nested_timeout} \
            "$root/tests/harness/run-nested.sh" bash -c "$(declare -f measure); measure $(printf '%q %q %q' "$root" "$settings" "$1")" >"$2"
    fi
}

if grep -qE '\b(vmx|svm)\b' /proc/cpuinfo; then
    echo "compare: Linux guests run natively (KVM with hardware virtualization)" >&2
else
    echo "compare: no VT-x/AMD-V: the Linux-guest rows run inside the emulated machine" >&2
fi
parts=()
phases=(cold warm memory rate workloads)
((one_machine)) && phases=(cold,warm,memory,rate,workloads)
for phase in "${phases[@]}"; do
    part=$out.$phase
    echo "compare: phase $phase" >&2
    rc=0
    one_phase "$phase" "$part" || rc=$?
    if ((rc == 125)); then
        # --quick too: a run that needs this takes longer than 3 minutes
        echo "compare: phase $phase: the machine failed (exit 125); running it once more" >&2
        rc=0
        one_phase "$phase" "$part" || rc=$?
        echo "$phase: the emulated machine's kernel failed once; the phase was run again" >"$part.note"
    fi
    if ((rc == 125)); then
        echo "compare: phase $phase: the emulated machine failed or timed out (run-nested.sh exit 125)" >&2
        exit 1
    fi
    ((rc == 0)) || { echo "compare: phase $phase failed (exit $rc)" >&2; exit 1; }
    parts+=("$part")
done
/usr/bin/python3 - "$out" "${parts[@]}" <<'PY'
import json, os, sys
out, parts = sys.argv[1], sys.argv[2:]
m = {"samples": {}, "values": {}, "errors": {}, "retries": [], "runner_seconds": 0}
for p in parts:
    d = json.load(open(p))
    for k in ("samples", "values"):
        for metric, bysys in d[k].items():
            m[k].setdefault(metric, {}).update(bysys)
    m["errors"].update(d["errors"])
    m["retries"] += d["retries"]
    if os.path.exists(p + ".note"):
        m["retries"].append(open(p + ".note").read().strip())
    m["runner_seconds"] += d["runner_seconds"]
    m["settings"] = d["settings"]
json.dump(m, open(out, "w"))
PY
