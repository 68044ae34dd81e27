#!/usr/bin/env python3
"""Run one command in a throw-away microVM sandbox and print what it said.

    examples/python/run_command.py --kernel bzImage --initrd agent.cpio.gz -- uname -a

The kernel and initrd are the project's default guest (scripts/guest-
artifacts.sh prints their paths); MICROVM_KERNEL / MICROVM_INITRD work too.
Exits with the command's exit status.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bindings" / "python"))
import microvm  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kernel", default=os.environ.get("MICROVM_KERNEL"))
    ap.add_argument("--initrd", default=os.environ.get("MICROVM_INITRD"))
    ap.add_argument("--cpus", type=int, default=1)
    ap.add_argument("--mem", type=int, default=256, help="MiB")
    ap.add_argument("cmd", nargs="+")
    args = ap.parse_args()

    t0 = time.monotonic()
    with microvm.Sandbox.create(cpus=args.cpus, memory_mib=args.mem, kernel=args.kernel,
                                initrd=args.initrd, timeout=300) as sbx:
        t1 = time.monotonic()
        r = sbx.commands.run(args.cmd, check=False, timeout=300)
        t2 = time.monotonic()
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    print("sandbox up in %.0f ms, command took %.0f ms, exit status %d"
          % ((t1 - t0) * 1e3, (t2 - t1) * 1e3, r.exit_code), file=sys.stderr)
    return r.exit_code


if __name__ == "__main__":
    sys.exit(main())
