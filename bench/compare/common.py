"""Shared pieces of the comparison runner (bench/compare/run.py): progress
output, clocks, the run's settings, memory readings, console readers."""
import itertools
import os
import subprocess
import sys
import threading
import time

T0 = time.monotonic()

# Time limits (s), set from the settings by run.py (and passed to holder.py
# through the environment): how long a VM may take to answer its agent
# (boots in the emulator took 4-40 s), and how long a short command may run.
READY_TIMEOUT = float(os.environ.get("CMP_READY_TIMEOUT", 120))
CMD_TIMEOUT = float(os.environ.get("CMP_CMD_TIMEOUT", 120))


def set_timeouts(ready, cmd):
    global READY_TIMEOUT, CMD_TIMEOUT
    READY_TIMEOUT, CMD_TIMEOUT = float(ready), float(cmd)
    os.environ["CMP_READY_TIMEOUT"] = str(ready)
    os.environ["CMP_CMD_TIMEOUT"] = str(cmd)


def log(msg):
    """A progress line on stderr, with the seconds since the runner began."""
    print("compare [%6.1fs] %s" % (time.monotonic() - T0, msg), file=sys.stderr, flush=True)


def now_ms():
    return time.monotonic() * 1e3


class Settings:
    """What the runner was given (paths of the artifacts, run counts)."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


_cids = itertools.count(100)
_cid_lock = threading.Lock()


def next_cid():
    """A vsock context ID no other instance of this run uses."""
    with _cid_lock:
        return next(_cids)


def pss_kib(pid):
    """Proportional set size of process @pid (KiB), 0 if it is gone."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def run(argv, check=True, timeout=120, **kw):
    """subprocess.run with the output captured as text; a command that
    takes longer than @timeout seconds is killed and raises."""
    r = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout, **kw)
    if check and r.returncode:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                (r.stderr or r.stdout)[-2000:]))
    return r


class Console:
    """Drains the read end @fd of an instance's output (serial console or
    stdout) in a thread: records when the first byte came and keeps the
    last 8 KiB for error messages. @t0 is the launch time (ms)."""

    def __init__(self, fd, t0):
        self.fd, self.t0 = fd, t0
        self.first_ms = None
        self.first = threading.Event()
        self.tail = b""
        self.seen = threading.Condition()
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self):
        while True:
            try:
                b = os.read(self.fd, 65536)
            except OSError:
                b = b""
            if not b:
                break
            if self.first_ms is None:
                self.first_ms = now_ms() - self.t0
                self.first.set()
            with self.seen:
                self.tail = (self.tail + b)[-8192:]
                self.seen.notify_all()
        self.first.set()
        with self.seen:
            self.seen.notify_all()

    def wait_first(self, timeout):
        if not self.first.wait(timeout) or self.first_ms is None:
            raise RuntimeError("no output within %ds; output so far: %r" % (timeout, self.tail))
        return self.first_ms

    def wait_for(self, text, timeout):
        """Block until @text (bytes) appears in the output; its time (ms)."""
        end = time.monotonic() + timeout
        with self.seen:
            while text not in self.tail:
                left = end - time.monotonic()
                if left <= 0 or not self.thread.is_alive():
                    raise RuntimeError("%r not seen in %ds; output: %r" % (text, timeout,
                                                                          self.tail[-2000:]))
                self.seen.wait(left)
        return now_ms() - self.t0

    def close(self):
        try:
            os.close(self.fd)
        except OSError:
            pass


def launch(argv, cgroup=None):
    """Start @argv (an instance that is a process: QEMU, the plain process)
    with its stdout on a pipe drained by a Console, in @cgroup when given:
    (process, console, launch time in ms)."""
    r, w = os.pipe()
    pre = (lambda: cgroup.enter()) if cgroup else None
    t0 = now_ms()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=w,
                            stderr=subprocess.DEVNULL, preexec_fn=pre)
    os.close(w)
    return proc, Console(r, t0), t0


def timed_command(inst, argv, timeout=None):
    """Run @argv in instance @inst; (ms it took, stdout text). Fails on a
    non-zero exit status, and when it runs longer than @timeout s (default
    CMD_TIMEOUT): the instance's run() kills it then."""
    if timeout is None:
        timeout = CMD_TIMEOUT
    t = now_ms()
    rc, out, err = inst.run(argv, timeout)
    if rc:
        raise RuntimeError("%s in %s: exit %s: %s %s" % (argv, inst.system, rc, out[-500:],
                                                         err[-1500:]))
    return now_ms() - t, out
