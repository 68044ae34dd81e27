#!/usr/bin/env python3
"""A tiny function-as-a-service pool: boot one sandbox, snapshot it once it
is ready, then serve N calls each from a fresh copy-on-write clone of that
snapshot (restore, run the function, destroy), with W workers at a time,
and print the latency percentiles of a call.

    examples/python/function_pool.py --kernel bzImage --initrd agent.cpio.gz \\
        --calls 20 --workers 2

Every call gets a clean VM (nothing a call leaves behind is seen by the
next) at the cost of a restore, not a boot.
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
import microvm  # noqa: E402

# The "function": reads its argument from a file, answers on stdout.
FUNCTION = 'n=$(cat /tmp/arg); echo "square of $n is $((n * n))"'


def percentile(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1)))))
    return xs[k]


def call(template, n):
    t0 = time.monotonic()
    with microvm.Sandbox.create(template=template, timeout=300) as sbx:
        t1 = time.monotonic()
        sbx.files.write("/tmp/arg", str(n))
        out = sbx.commands.run(FUNCTION, timeout=300).stdout.strip()
    t2 = time.monotonic()
    return out, (t1 - t0) * 1e3, (t2 - t0) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default=os.environ.get("MICROVM_KERNEL"))
    ap.add_argument("--initrd", default=os.environ.get("MICROVM_INITRD"))
    ap.add_argument("--mem", type=int, default=256, help="MiB per VM")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(dir=os.environ.get("MICROVM_NESTED_SCRATCH")) as d:
        template = os.path.join(d, "template")
        t0 = time.monotonic()
        with microvm.Sandbox.create(memory_mib=args.mem, kernel=args.kernel,
                                    initrd=args.initrd, timeout=300) as sbx:
            boot_ms = (time.monotonic() - t0) * 1e3
            sbx.snapshot(template)
        print("template: booted in %.0f ms, snapshot in %s" % (boot_ms, template))

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
            results = list(pool.map(lambda n: call(template, n), range(args.calls)))
        wall = time.monotonic() - t0
        for n, (out, _, _) in enumerate(results):
            assert out == "square of %d is %d" % (n, n * n), out
        ready = [r[1] for r in results]
        total = [r[2] for r in results]
        print("%d calls, %d workers, %.1f calls/s" % (args.calls, args.workers,
                                                      args.calls / wall))
        print("%-28s %8s %8s %8s %8s" % ("ms per call", "p50", "p90", "p99", "mean"))
        for name, xs in (("restore -> agent ready", ready), ("whole call", total)):
            print("%-28s %8.1f %8.1f %8.1f %8.1f" % (name, percentile(xs, 50),
                                                     percentile(xs, 90), percentile(xs, 99),
                                                     statistics.mean(xs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
