"""What a driver of tests/linux/net shows when its guest fails it: the last
lines of the guest's console, where the VMM's vCPU threads wait, the paused
VM's report (VM.describe(): where each vCPU is, its pending interrupts,
each virtio queue's indices) and, when the guest kernel reported a stalled
vCPU twice (a stall over a minute long) while every vCPU thread was in
KVM_RUN, "GUEST-STUCK" on stderr: the emulated machine's trouble
(tests/linux/linux_test.h), which test_net.py retries once, loudly.
"""
import contextlib
import os
import sys
import traceback

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..",
                                "bindings", "python"))
import microvm  # noqa: E402


def console_tail(path, lines=30):
    with open(path, "rb") as f:
        text = f.read().decode(errors="replace")
    return text, "\n".join(text.splitlines()[-lines:])


def vcpu_threads_blocked_in_library():
    """Prints the process's vCPU threads; True if one waits in a system call
    other than ioctl (KVM_RUN): in the library, not in the guest."""
    blocked = False
    for tid in os.listdir("/proc/self/task"):
        base = "/proc/self/task/%s/" % tid
        try:
            comm = open(base + "comm").read().strip()
            if not comm.startswith("vcpu"):
                continue
            sysc = open(base + "syscall").read().split()
            wchan = open(base + "wchan").read().strip()
        except OSError:
            continue
        print("  thread %s (%s): system call %s, waits in %s"
              % (tid, comm, " ".join(sysc[:2]), wchan or "-"), file=sys.stderr)
        if sysc and sysc[0].isdigit() and sysc[0] != "16":
            blocked = True
    return blocked


def describe(name, vm):
    """Pauses @vm (if it still runs) and prints its report."""
    try:
        if vm.state == microvm.State.RUNNING:
            vm.pause()
        print("---- %s: the VM ----\n%s----" % (name, vm.describe()), file=sys.stderr)
    except microvm.Error as e:
        print("%s: no report: %s" % (name, e), file=sys.stderr)


def report_failed(name, console, vm=None):
    """The last lines of @name's console (a file), its vCPU threads and,
    given its VM, the VM's report; "GUEST-STUCK" as above."""
    text, tail = console_tail(console)
    print("---- %s: last console lines ----\n%s\n----" % (name, tail), file=sys.stderr)
    print("%s: the vCPU threads:" % name, file=sys.stderr)
    blocked = vcpu_threads_blocked_in_library()
    if vm is not None:
        describe(name, vm)
    if text.count("detected stall") >= 2 and not blocked:
        print("GUEST-STUCK: %s: a stalled vCPU, every vCPU thread in KVM_RUN" % name,
              file=sys.stderr)
    sys.stderr.flush()


@contextlib.contextmanager
def reported(name, console, vm):
    """Runs the block; if it raises, prints the traceback and then reports
    @name's guest and @vm (last on stderr, where a cut log still shows it),
    and exits 1, as Python does for an uncaught exception."""
    try:
        yield
    except Exception:
        traceback.print_exc()
        report_failed(name, console, vm)
        raise SystemExit(1)
