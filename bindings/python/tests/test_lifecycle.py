"""Running tiny guests: start/wait, pause/resume/stop, the event fd,
context managers, log callbacks, many VMs, several threads."""

import gc
import os
import select
import selectors
import threading
import time

import pytest

from conftest import GUEST_TIMEOUT, fd_count, payload, settle, thread_count

import microvm


def test_start_and_wait_for_reset(kvm, tiny_vm, console):
    vm = tiny_vm("hello", console_out=console)
    vm.start()
    r = vm.wait(GUEST_TIMEOUT)
    assert isinstance(r, microvm.ExitResult)
    assert r.reason == microvm.ExitReason.RESET and r.error == 0 and r.vcpu == 0
    assert "reset" in r.message
    assert console.text() == "Hello from the microvm tiny guest!\n"
    assert vm.state == microvm.State.STOPPED
    assert vm.poll() == r and vm.wait(0) == r
    with pytest.raises(microvm.InvalidError):
        vm.start()


def test_console_file_object_and_fd_input(kvm, tiny_vm, console):
    rd, wr = os.pipe()
    try:
        vm = tiny_vm("echo", console_in=rd, console_out=console)
        vm.start()
        console.wait_for("echo: ready\n")
        os.write(wr, b"ping\n")
        assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.RESET
        assert console.text() == "echo: ready\necho: ping\n"
    finally:
        os.close(rd)
        os.close(wr)


def test_pause_resume_stop_and_timeout(kvm, tiny_vm, console):
    vm = tiny_vm("busy", "loops=1000", console_out=console)
    vm.start()
    console.wait_for("busy: done, halting\n")
    with pytest.raises(microvm.TimedOutError) as e:
        vm.wait(0.05)
    assert isinstance(e.value, TimeoutError) and e.value.function == "microvm_wait"
    assert vm.poll() is None
    assert vm.state == microvm.State.RUNNING
    vm.pause()
    assert vm.state == microvm.State.PAUSED
    vm.pause()                                  # pausing a paused VM is fine
    vm.resume()
    assert vm.state == microvm.State.RUNNING
    with pytest.raises(microvm.InvalidError) as e:
        vm.resume()
    assert e.value.message                     # the library says why
    vm.stop()
    r = vm.wait(GUEST_TIMEOUT)
    assert r.reason == microvm.ExitReason.STOPPED
    vm.stop()                                   # stopping a stopped VM is fine
    assert vm.state == microvm.State.STOPPED


def test_describe_a_paused_vm(kvm, tiny_vm, console):
    """VM.describe(): refused while running, a report once paused."""
    vm = tiny_vm("busy", "loops=1000", console_out=console)
    vm.start()
    console.wait_for("busy: done, halting\n")
    with pytest.raises(microvm.BusyError):
        vm.describe()
    vm.pause()
    text = vm.describe()
    assert text.startswith("paused, 1 vCPU(s)"), text
    assert "vcpu0: halted rip=0x" in text and "apic: irr=" in text, text
    vm.stop()
    vm.wait(GUEST_TIMEOUT)
    assert vm.describe().startswith("stopped, 1 vCPU(s)")


def test_event_fd_readable_on_state_changes(kvm, tiny_vm):
    vm = tiny_vm("busy", "loops=1000")
    fd = vm.event_fd
    assert fd >= 0 and vm.fileno() == fd
    assert select.select([fd], [], [], 0)[0] == []
    assert vm.clear_event() == 0
    vm.start()
    assert select.select([fd], [], [], GUEST_TIMEOUT)[0] == [fd]
    assert vm.clear_event() >= 1
    assert select.select([fd], [], [], 0)[0] == []
    with selectors.DefaultSelector() as sel:
        sel.register(vm, selectors.EVENT_READ)
        vm.pause()
        assert sel.select(GUEST_TIMEOUT)[0][0].fileobj is vm
        vm.clear_event()
        vm.stop()
        assert sel.select(GUEST_TIMEOUT)
        vm.clear_event()
    assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.STOPPED


def test_event_fd_with_asyncio(kvm, tiny_vm):
    import asyncio
    vm = tiny_vm("hello")

    async def main():
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()

        def on_event():
            vm.clear_event()
            if vm.state == microvm.State.STOPPED and not stopped.done():
                stopped.set_result(vm.poll())

        loop.add_reader(vm.fileno(), on_event)
        try:
            vm.start()
            return await asyncio.wait_for(stopped, GUEST_TIMEOUT)
        finally:
            loop.remove_reader(vm.fileno())

    assert asyncio.run(main()).reason == microvm.ExitReason.RESET


def quiet_fd_count():
    """The fd count once no VM teardown thread is left."""
    assert settle(thread_count, 1) == 1
    return fd_count()


def test_wait_async(kvm, tiny_vm):
    import asyncio
    hello = tiny_vm("hello")
    busy = tiny_vm("busy", "loops=1000")

    async def main():
        hello.start()
        busy.start()
        with pytest.raises(microvm.TimedOutError) as e:
            await busy.wait_async(timeout=0.1)
        assert isinstance(e.value, TimeoutError)
        r = await hello.wait_async(timeout=GUEST_TIMEOUT)
        again = await hello.wait_async()        # already stopped
        busy.stop()
        return r, again, await busy.wait_async(GUEST_TIMEOUT)

    r, again, stopped = asyncio.run(main())
    assert r.reason == microvm.ExitReason.RESET and again == r
    assert stopped.reason == microvm.ExitReason.STOPPED


def test_context_manager_releases_on_exception(kvm, console):
    base = quiet_fd_count()
    with pytest.raises(RuntimeError):
        with microvm.VM(kernel=payload("busy"), cmdline="loops=1000", memory_mib=16,
                        console_out=console) as vm:
            vm.start()
            raise RuntimeError("body failed")
    assert vm.closed
    with pytest.raises(ValueError, match="closed"):
        vm.start()
    with pytest.raises(ValueError, match="closed"):
        vm.state
    vm.close()                                  # idempotent
    assert settle(fd_count, base) == base


def test_constructor_failure_releases_the_vm():
    base = quiet_fd_count()
    for _ in range(50):
        with pytest.raises(microvm.NotFoundError):
            microvm.VM(memory_mib=16, kernel="/nonexistent/kernel")
    assert fd_count() == base


def test_log_callback_kept_alive(kvm, console):
    got = []

    def make():
        def cb(level, msg):                     # only the VM refers to it
            got.append((level, msg))
        return microvm.VM(kernel=payload("hello"), memory_mib=16, console_out=console,
                          log=cb, log_level="info")

    vm = make()
    gc.collect()
    vm.start()
    assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.RESET
    vm.close()
    assert any(lv == microvm.LogLevel.INFO and "started" in m for lv, m in got)


def test_log_to_a_logger_and_errors_logged(caplog):
    import logging
    with microvm.VM(log=logging.getLogger("microvm.test"), log_level=microvm.LogLevel.ERROR) as vm:
        with caplog.at_level(logging.DEBUG, logger="microvm.test"):
            with pytest.raises(microvm.InvalidError):
                vm.start()
    assert any(r.levelno == logging.ERROR for r in caplog.records)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_log_callback_exception_does_not_break_the_vm(kvm, console):
    def bad(level, msg):
        raise ZeroDivisionError("in a callback")
    with microvm.VM(kernel=payload("hello"), memory_mib=16, console_out=console,
                    log=bad, log_level="debug") as vm:
        vm.start()
        assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.RESET


def test_thousand_vms_constant_fd_count(tmp_path):
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(1 << 16)
    for _ in range(20):                         # warm up lazily opened fds
        microvm.VM(memory_mib=16).close()
    base = quiet_fd_count()
    for i in range(1000):
        vm = microvm.VM(memory_mib=16, vcpus=2, kernel=payload("hello"), log=print,
                        disks=[img] if i % 10 == 0 else ())
        if i % 2:
            vm.close()
        else:
            del vm                              # dropped without close(): __del__
        if i % 100 == 0:
            assert fd_count() <= base + 4       # at most this VM's
    gc.collect()
    assert quiet_fd_count() == base


def test_started_vms_release_their_fds(kvm):
    base = quiet_fd_count()
    threads = thread_count()
    for _ in range(30):
        with microvm.VM(kernel=payload("hello"), memory_mib=16) as vm:
            vm.start()
            vm.wait(GUEST_TIMEOUT)
    assert settle(fd_count, base) == base
    assert settle(thread_count, threads) == threads


def test_threads_drive_their_own_vms(kvm, tmp_path):
    errors = []
    results = []

    def worker(n):
        try:
            for _ in range(5):
                with open(tmp_path / ("c%d" % n), "w+b") as out:
                    with microvm.VM(kernel=payload("hello"), memory_mib=16,
                                    console_out=out) as vm:
                        vm.start()
                        results.append(vm.wait(GUEST_TIMEOUT).reason)
                    assert os.pread(out.fileno(), 100, 0).startswith(b"Hello")
                    with microvm.VM(kernel=payload("busy"), cmdline="loops=1000",
                                    memory_mib=16) as vm:
                        vm.start()
                        vm.pause()
                        vm.resume()
                        vm.stop()
                        results.append(vm.wait(GUEST_TIMEOUT).reason)
        except BaseException as e:              # noqa: B902 - reported below
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert results.count(microvm.ExitReason.RESET) == 30
    assert results.count(microvm.ExitReason.STOPPED) == 30


def test_blocking_wait_releases_the_gil_and_close_wakes_it(kvm, tiny_vm):
    vm = microvm.VM(kernel=payload("busy"), cmdline="loops=1000", memory_mib=16)
    vm.start()
    out = []

    def waiter():
        try:
            out.append(vm.wait())
        except BaseException as e:              # noqa: B902
            out.append(e)

    t = threading.Thread(target=waiter)
    t.start()
    # The main thread keeps running Python while the waiter is in C.
    n = 0
    end = time.monotonic() + 0.3
    while time.monotonic() < end:
        n += 1
    assert n > 1000 and t.is_alive()
    vm.close()                                  # wakes the waiter, then destroys
    t.join(GUEST_TIMEOUT)
    assert not t.is_alive()
    assert isinstance(out[0], (ValueError, microvm.ExitResult))


def test_one_vm_from_several_threads(kvm, tiny_vm):
    vm = tiny_vm("busy", "loops=1000")
    vm.start()
    got = []
    t = threading.Thread(target=lambda: got.append(vm.wait(GUEST_TIMEOUT)))
    t.start()
    for _ in range(20):
        vm.pause()
        vm.resume()
    vm.stop()
    t.join(GUEST_TIMEOUT)
    assert got and got[0].reason == microvm.ExitReason.STOPPED


def test_vsock_errors(kvm, tiny_vm, tmp_path):
    vm = tiny_vm("busy", "loops=1000")
    vm.start()
    with pytest.raises(microvm.NoDeviceError) as e:
        vm.vsock_connect(1024, timeout=1)
    assert e.value.errno == 19
    vm2 = tiny_vm("busy", "loops=1000", vsock_cid=3, vsock_uds_path=str(tmp_path / "v.sock"))
    vm2.start()
    # The tiny guest has no vsock driver: it never answers.
    with pytest.raises(microvm.TimedOutError):
        vm2.vsock_connect(1024, timeout=0.2)
    assert os.path.exists(tmp_path / "v.sock")
    vm2.close()
    assert not os.path.exists(tmp_path / "v.sock")


GC_IN_CALLBACK = r"""
import gc, os, sys, threading, time
sys.path.insert(0, %(pkg)r)
import microvm
gc.disable()
collected = threading.Event()

def cb(level, msg):
    if "exit" in msg:
        gc.collect()          # finalizes the VM on its own library thread
        collected.set()

base = len(os.listdir("/proc/self/fd"))
vm = microvm.VM(kernel=%(kernel)r, memory_mib=16, log=cb, log_level="debug")
vm.cycle = vm                 # only the garbage collector frees it
vm.start()
del vm
assert collected.wait(60)
end = time.monotonic() + 30
while (len(os.listdir("/proc/self/fd")) - 2 * microvm.runtime_stats().event_threads != base
       and time.monotonic() < end):
    time.sleep(0.01)
ev = 2 * microvm.runtime_stats().event_threads  # the runtime's, kept once made
print("fds", len(os.listdir("/proc/self/fd")) - ev - base)
"""


def test_vm_finalized_inside_its_own_log_callback(kvm):
    # The garbage collector may finalize a dropped VM on one of its own
    # library threads (inside a log callback): that must not deadlock.
    import subprocess
    import sys
    from conftest import PKG_DIR
    code = GC_IN_CALLBACK % {"pkg": str(PKG_DIR), "kernel": payload("hello")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "fds 0"


def test_log_callback_calling_its_own_vm_is_refused(kvm, console):
    seen = []
    box = []

    def cb(level, msg):
        for call in (lambda: box[0].state, box[0].close, box[0].stop):
            try:
                call()
                seen.append("no error")
            except RuntimeError as e:
                seen.append(str(e))

    vm = microvm.VM(kernel=payload("hello"), memory_mib=16, console_out=console, log=cb,
                    log_level="info")
    box.append(vm)
    with microvm.VM() as other:
        vm.start()
        assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.RESET
        assert other.state == microvm.State.CONFIGURED
    vm.close()
    assert seen and all("must not call that VM" in s for s in seen), seen


def test_seccomp_filter_on_the_vm_threads(kvm, tmp_path):
    """set_seccomp("on"): the tiny guest runs to its exit with the filter
    on the library's threads; this (embedder's) thread is not filtered."""
    vm = microvm.VM(kernel=payload("hello"), memory_mib=16)
    try:
        with pytest.raises(ValueError):
            vm.set_seccomp("sometimes")
        vm.set_seccomp("on")
        vm.start()
        ex = vm.wait(GUEST_TIMEOUT)
        assert ex.reason in (microvm.ExitReason.RESET, microvm.ExitReason.POWEROFF), ex
        with open(tmp_path / "still-allowed", "w") as f:   # openat on our thread
            f.write("ok")
    finally:
        vm.close()


def test_runtime_stats_configure_and_teardown_wait(kvm):
    # The process-wide runtime: event threads serve many VMs (none made per
    # VM), destroyed VMs' teardown can be waited for, bad limits refused.
    with microvm.VM(kernel=payload("hello"), memory_mib=16) as vm:
        vm.start()
        vm.wait(GUEST_TIMEOUT)
    st = microvm.runtime_stats()
    assert isinstance(st, microvm.RuntimeStats)
    assert 1 <= st.event_threads <= 8
    vms = [microvm.VM(kernel=payload("busy"), cmdline="loops=1000", memory_mib=16)
           for _ in range(3 * st.event_threads + 1)]
    for vm in vms:
        vm.start()
    # VMs share them: at most one per online CPU (8 at most) for VMs
    # without seccomp, however many run (VMs with a filter have their own)
    after = microvm.runtime_stats().event_threads
    assert after <= st.event_threads + min(os.cpu_count() or 1, 8) < len(vms)
    for vm in vms:
        vm.close()
    assert microvm.teardown_wait(GUEST_TIMEOUT)
    st = microvm.runtime_stats()
    assert st.teardown_pending == 0 and st.teardown_threads == 0
    microvm.runtime_configure(teardown_threads=8, teardown_backlog=64)
    microvm.runtime_configure(teardown_threads=16, teardown_backlog=256)  # the defaults back
    with pytest.raises(ValueError):
        microvm.runtime_configure(event_threads=5000)
    with pytest.raises(ValueError):
        microvm.runtime_configure(teardown_threads=65)


def test_boot_image_cache(kvm, tmp_path):
    # A kernel with a large segment is copied once into the process's
    # boot-image cache (one fd, counted in runtime_stats) and mapped into
    # every VM booting it; the limit is set, and 0 turns the cache off and
    # drops what it holds. Every VM boots either way.
    microvm.runtime_configure(image_cache_mib=256)
    fds = fd_count()
    for _ in range(2):
        out = tmp_path / "out"
        with open(out, "wb") as f, microvm.VM(kernel=payload("big"), memory_mib=64,
                                              console_out=f.fileno()) as vm:
            vm.start()
            vm.wait(GUEST_TIMEOUT)
        assert b"Hello from the big tiny guest!" in out.read_bytes()
    st = microvm.runtime_stats()
    assert st.image_cache_files == 1
    assert st.image_cache_kib >= 20 * 1024
    assert microvm.teardown_wait(GUEST_TIMEOUT)
    assert fd_count() == fds  # the cache's fd is not counted; none per VM
    microvm.runtime_configure(image_cache_mib=0)
    st = microvm.runtime_stats()
    assert (st.image_cache_files, st.image_cache_kib) == (0, 0)
    with microvm.VM(kernel=payload("big"), memory_mib=64) as vm:
        vm.start()
        vm.wait(GUEST_TIMEOUT)
    assert microvm.runtime_stats().image_cache_files == 0
    with pytest.raises(ValueError):
        microvm.runtime_configure(image_cache_mib=(1 << 20) + 1)
    microvm.runtime_configure(image_cache_mib=256)  # the default back


def test_no_pit(kvm, tmp_path):
    # A machine without a PIT boots the tiny guest; the setting is kept by
    # a snapshot and its restore, and refused once the VM started.
    out = tmp_path / "out"
    with open(out, "wb") as f, microvm.VM(kernel=payload("hello"), memory_mib=16, pit=False,
                                          console_out=f.fileno()) as vm:
        assert vm.pit is False
        vm.start()
        vm.wait(GUEST_TIMEOUT)
        with pytest.raises(microvm.BusyError):
            vm.pit = True
    assert out.read_bytes() == b"Hello from the microvm tiny guest!\n"
    with pytest.raises(TypeError):
        microvm.VM(pit="no")
