"""A process that holds libmicrovm VMs, for the memory cases: one process
with N VMs is how the library is meant to be used, and a separate process
can be put in a memory cgroup and have its Pss read alone.

  holder.py KERNEL IMAGE TEMPLATE     (run by cases.py, not by hand)

Reads commands on stdin, one per line, answers one line on stdout:
  boot      start one more VM (boot), agent ready, `true` run -> "ok"
  restore   one more clone of TEMPLATE, agent ready, `true` run -> "ok"
  quit      close all and exit
It prints "up" once loaded (its Pss then is the baseline). A failure
answers "error: ..." and the holder exits."""
import sys

import common
from common import Settings
from vms import Libmicrovm, LibmicrovmClone


def main(kernel, image, template):
    s = Settings(kernel=kernel, image=image)
    boot, clone = Libmicrovm(s), LibmicrovmClone(s, template)
    held = []
    print("up", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        try:
            inst = {"boot": boot, "restore": clone}[cmd].start()
            held.append(inst)
            rc, out, err = inst.run(["true"], common.CMD_TIMEOUT)
            if rc:
                raise RuntimeError("true: exit %d %s" % (rc, err))
            print("ok", flush=True)
        except Exception as e:  # reported to the runner, which stops adding
            print("error: %s" % str(e).replace("\n", " ")[:2000], flush=True)
            break
    for inst in held:
        inst.close()


if __name__ == "__main__":
    main(*sys.argv[1:4])
