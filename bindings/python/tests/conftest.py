"""Shared fixtures: the source tree, the tiny guest payloads, /dev/kvm.

The tests import the package from this source tree (bindings/python), so
they test what is checked out, and libmicrovm from MICROVM_LIBRARY or the
build tree (build/libmicrovm.so.0, built by scripts/setup.sh).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

PKG_DIR = Path(__file__).resolve().parents[1]
ROOT = PKG_DIR.parents[1]
BUILD = Path(os.environ.get("MICROVM_BUILD_DIR", ROOT / "build"))
TINY = BUILD / "guest" / "tiny"

sys.path.insert(0, str(PKG_DIR))

# Long enough for the slowest (emulated) /dev/kvm; never a pass/fail time.
GUEST_TIMEOUT = 60.0


def kvm_usable():
    """None if /dev/kvm can be opened, else why not. MICROVM_TEST_NO_KVM
    pretends it cannot (tests/test_suite.py checks the CI rule with it)."""
    if os.environ.get("MICROVM_TEST_NO_KVM"):
        return "MICROVM_TEST_NO_KVM is set"
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        return str(e)
    os.close(fd)
    return None


@pytest.fixture
def kvm():
    """Guest tests need /dev/kvm: skip without it, fail under CI (CI set),
    as the C KVM tests do (tests/kvm/kvm_test.h)."""
    why = kvm_usable()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail("/dev/kvm is not usable (%s) and CI is set" % why)
        pytest.skip("/dev/kvm is not usable: %s" % why)


def payload(name):
    """Path of tiny guest @name (build/guest/tiny/@name.elf)."""
    p = TINY / (name + ".elf")
    if not p.is_file():
        pytest.fail("tiny guest %s missing: build the project first (scripts/setup.sh)" % p)
    return str(p)


class Console:
    """A memfd-like temporary file collecting console output."""

    def __init__(self, tmp_path, name="console"):
        self.file = open(tmp_path / name, "w+b")

    def fileno(self):
        return self.file.fileno()

    def text(self):
        return os.pread(self.file.fileno(), 1 << 20, 0).decode("utf-8", "replace")

    def wait_for(self, needle, timeout=GUEST_TIMEOUT):
        end = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > end:
                raise AssertionError("console never showed %r; it has %r" % (needle, self.text()))
            time.sleep(0.002)

    def close(self):
        self.file.close()


@pytest.fixture
def console(tmp_path):
    c = Console(tmp_path)
    yield c
    c.close()


@pytest.fixture
def tiny_vm():
    """tiny_vm(name, cmdline=None, **kw): a 16 MiB VM for a tiny guest,
    closed at the end of the test."""
    import microvm
    vms = []

    def make(name, cmdline=None, **kw):
        kw.setdefault("memory_mib", 16)
        vm = microvm.VM(kernel=payload(name), cmdline=cmdline, **kw)
        vms.append(vm)
        return vm

    yield make
    for vm in vms:
        vm.close()


def fd_count():
    """Open fds, without those of the library's event threads (process-wide,
    kept once made: 2 each) and of its boot-image cache (1 per file)."""
    import microvm
    st = microvm.runtime_stats()
    return len(os.listdir("/proc/self/fd")) - 2 * st.event_threads - st.image_cache_files


def thread_count():
    """Threads, without the library's event threads (kept once made)."""
    import microvm
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Threads:"):
                return int(line.split()[1]) - microvm.runtime_stats().event_threads
    return -1


def settle(fn, want, timeout=30.0):
    """Poll fn() until it returns @want (the library's VM teardown runs on
    detached threads for a moment after destroy); returns the last value."""
    end = time.monotonic() + timeout
    v = fn()
    while v != want and time.monotonic() < end:
        time.sleep(0.01)
        v = fn()
    return v


# The real guest agent, run on the host over a Unix socket (test_agent.py).
AGENT = BUILD / "guest" / "agent" / "microvm-agent"


@pytest.fixture(scope="module")
def agent_sock():
    if not AGENT.is_file():
        pytest.fail("%s missing: build the project first (scripts/setup.sh)" % AGENT)
    d = tempfile.mkdtemp(prefix="microvm-py-agent-")
    path = os.path.join(d, "agent.sock")
    p = subprocess.Popen([str(AGENT), "--listen", "unix:" + path], stdout=subprocess.PIPE,
                         stdin=subprocess.DEVNULL)
    line = p.stdout.readline()
    assert b"MICROVM-AGENT-READY" in line, line
    yield path
    p.send_signal(signal.SIGTERM)
    p.wait(30)
    p.stdout.close()
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)


def raw(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s
