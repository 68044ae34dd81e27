#!/usr/bin/env bash
# The native rows of bench/compare.sh, on any /dev/kvm (the tiny guests
# need no VT-x/AMD-V): libmicrovm's own costs next to the raw-KVM floor,
# QEMU and a plain process.
#
#   bench/compare/tiny.sh RUNS CYCLES LIVE MEM_N OUT.json
#
#  - create -> first guest output: bench-boot --runs RUNS (tiny hello guest)
#  - bench-density --runs RUNS --cycles CYCLES --live LIVE: create -> first
#    output against the floor (raw KVM calls) and QEMU -M microvm's process
#    start, create/start/exit/destroy throughput from 1 and 2 threads
#    against the floor, start and destroy with LIVE idle VMs alive (its
#    Markdown tables are parsed into the JSON)
#  - bench/compare/tiny.py: the same starts and rates for a plain process
#    (busybox), and the host memory (Pss) per idle tiny VM and per idle
#    process, MEM_N of each
# Every step has a time limit (timeout(1)): a stuck step fails the run.
set -euo pipefail
here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$here/../.." && pwd)
runs=$1 cycles=$2 live=$3 mem_n=$4 out=$5
b=$root/build/bench
tmp=$(mktemp -d)
trap 'rm -rf -- "$tmp"' EXIT
limit=${CMP_TINY_TIMEOUT:-900}
echo "compare: tiny guests: bench-boot, $runs runs" >&2
timeout "$limit" "$b/bench-boot" --runs "$runs" --samples "$tmp/boot" >&2
echo "compare: tiny guests: bench-density --runs $runs --cycles $cycles --live $live" >&2
timeout "$limit" "$b/bench-density" --runs "$runs" --cycles "$cycles" --live "$live" \
    --qemu-runs "$(((runs + 9) / 10))" >"$tmp/density"
cat "$tmp/density" >&2
echo "compare: tiny guests: processes and memory per idle instance ($mem_n each)" >&2
PYTHONPATH=$root/bindings/python MICROVM_LIBRARY=$root/build/libmicrovm.so.0 \
    timeout "$limit" /usr/bin/python3 "$here/tiny.py" "$runs" "$cycles" "$mem_n" \
    "$root/build/guest/tiny/idle.elf" >"$tmp/proc"
/usr/bin/python3 - "$tmp/boot" "$tmp/density" "$tmp/proc" "$runs" >"$out" <<'PY'
import json, re, sys
boot = [float(x) for x in open(sys.argv[1])]
txt = open(sys.argv[2]).read()
proc = json.load(open(sys.argv[3]))


def rows(section):
    """The data rows (lists of cells) of bench-density's table @section."""
    part = re.split(r"\n(?=\d\. )", txt)
    sec = next(p for p in part if p.startswith("%d. " % section))
    out = []
    for line in sec.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            out.append([c.strip() for c in line.strip("|").split("|")])
    return out[1:]  # without the heading


# section 1's rows by their labels (others, such as the 20 MiB image rows,
# are not in the comparison)
LABELS = {"floor: raw KVM calls": "floor", "libmicrovm: create + start": "libmicrovm",
          "QEMU -M microvm: exec -> first byte": "qemu_first",
          "QEMU: exec -> process exit": "qemu_exit"}
start = {}
for label, med, p90, _ in rows(1):
    key = next((k for l, k in LABELS.items() if label.startswith(l)), None)
    if key and med:
        start[key] = {"median_ms": float(med), "p90_ms": float(p90)}
for k in ("floor", "libmicrovm"):
    if k not in start:
        sys.exit("tiny.sh: bench-density's output has no %s row" % k)
# section 2: "threads, PIT" | floor closing in the loop | floor with its
# teardown queued as the library's | libmicrovm | ratio
tput, tput_no_pit = {}, {}
for label, sync, queued, r, _ in rows(2):
    threads, pit = [c.strip() for c in label.split(",")]
    (tput if pit == "PIT" else tput_no_pit)[int(threads)] = {
        "floor": float(queued), "floor_sync": float(sync), "libmicrovm": float(r)}
live = [{"alive": int(a), "floor_start_ms": float(f), "start_ms": float(s),
         "destroy_us": float(d)} for a, f, s, _, d in rows(3)]
print(json.dumps({"runs": int(sys.argv[4]), "boot_first_ms": boot, "start": start,
                  "throughput": tput, "throughput_no_pit": tput_no_pit, "live": live, "process": proc["process"],
                  "memory": proc["memory"]}))
PY
