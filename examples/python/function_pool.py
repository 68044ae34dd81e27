#!/usr/bin/env python3
"""A tiny function-as-a-service pool: boot one sandbox, snapshot it once it
is ready, then serve N calls with W workers at a time, each call on a clean
VM, and print the latency percentiles of a call. Two ways to get a clean VM:

  --mode restore  each call gets a fresh copy-on-write clone of the
                  snapshot (restore, run the function, destroy);
  --mode reset    each worker restores one clone and, after each call,
                  resets it in place to the snapshot (Sandbox.reset()).

    examples/python/function_pool.py --kernel bzImage --initrd agent.cpio.gz \\
        --calls 20 --workers 2 --mode reset

Nothing a call leaves behind is seen by the next, at the cost of a restore
or a reset, not a boot.
"""

import argparse
import concurrent.futures
import os
import statistics
import sys
import tempfile
import threading
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


def call_on(sbx, n):
    """The function on a ready sandbox; its answer."""
    sbx.files.write("/tmp/arg", str(n))
    return sbx.commands.run(FUNCTION, timeout=300).stdout.strip()


class ResetWorkers:
    """One restored clone per worker thread, reset after each call."""

    def __init__(self, template):
        self._template = template
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def __call__(self, n):
        t0 = time.monotonic()
        sbx = getattr(self._local, "sbx", None)
        if sbx is None:
            sbx = self._local.sbx = microvm.Sandbox.create(template=self._template, timeout=300)
            with self._lock:
                self._all.append(sbx)
        t1 = time.monotonic()
        out = call_on(sbx, n)
        sbx.reset()
        return out, (t1 - t0) * 1e3, (time.monotonic() - t0) * 1e3

    def close(self):
        for sbx in self._all:
            sbx.kill()


def call(template, n):
    t0 = time.monotonic()
    with microvm.Sandbox.create(template=template, timeout=300) as sbx:
        t1 = time.monotonic()
        out = call_on(sbx, n)
    t2 = time.monotonic()
    return out, (t1 - t0) * 1e3, (t2 - t0) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default=os.environ.get("MICROVM_KERNEL"))
    ap.add_argument("--initrd", default=os.environ.get("MICROVM_INITRD"))
    ap.add_argument("--mem", type=int, default=256, help="MiB per VM")
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", choices=("restore", "reset"), default="restore")
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
        fn = (lambda n: call(template, n)) if args.mode == "restore" else ResetWorkers(template)
        try:
            with concurrent.futures.ThreadPoolExecutor(args.workers) as pool:
                results = list(pool.map(fn, range(args.calls)))
        finally:
            if args.mode == "reset":
                fn.close()
        wall = time.monotonic() - t0
        for n, (out, _, _) in enumerate(results):
            assert out == "square of %d is %d" % (n, n * n), out
        ready = [r[1] for r in results]
        total = [r[2] for r in results]
        print("%d calls, %d workers, mode %s, %.1f calls/s" % (args.calls, args.workers,
                                                               args.mode, args.calls / wall))
        print("%-28s %8s %8s %8s %8s" % ("ms per call", "p50", "p90", "p99", "mean"))
        first = "restore -> agent ready" if args.mode == "restore" else "(reused clone) ready"
        for name, xs in ((first, ready), ("whole call incl. reset" if args.mode == "reset"
                                          else "whole call", total)):
            print("%-28s %8.1f %8.1f %8.1f %8.1f" % (name, percentile(xs, 50),
                                                     percentile(xs, 90), percentile(xs, 99),
                                                     statistics.mean(xs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
