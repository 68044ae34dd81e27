"""A VM's device work on the caller's own loop (event_loop="embedder"):
console input from selectors and asyncio loops, a disk guest across
snapshot, fork and restore, errors."""

import asyncio
import os
import selectors
import threading

import pytest

from conftest import GUEST_TIMEOUT, payload

import microvm


@pytest.fixture
def echo(kvm, tiny_vm, console):
    """The echo guest with event_loop="embedder", started and ready; yields
    (vm, the write end of its console input)."""
    rd, wr = os.pipe()
    try:
        vm = tiny_vm("echo", console_in=rd, console_out=console, event_loop="embedder")
        vm.start()
        console.wait_for("echo: ready\n")
        yield vm, wr
    finally:
        os.close(rd)
        os.close(wr)


def test_console_input_through_selectors(echo, console):
    vm, wr = echo
    os.write(wr, b"ping\n")
    sel = selectors.DefaultSelector()
    sel.register(vm.loop_fd, selectors.EVENT_READ)
    assert sel.select(GUEST_TIMEOUT)               # the input is there...
    assert "echo: ping" not in console.text()      # ...but nobody ran the loop
    sel.close()
    taken = 0
    for _ in range(int(GUEST_TIMEOUT / 0.01)):
        if "echo: ping\n" in console.text():
            break
        taken += vm.loop_run(0.01)
    assert taken >= 1
    assert vm.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.RESET
    assert console.text() == "echo: ready\necho: ping\n"


def test_console_input_through_asyncio(echo, console):
    vm, wr = echo

    async def main():
        loop = asyncio.get_running_loop()
        loop.add_reader(vm.loop_fd, vm.loop_run)
        try:
            os.write(wr, b"aio\n")
            await loop.run_in_executor(None, vm.wait, GUEST_TIMEOUT)
        finally:
            loop.remove_reader(vm.loop_fd)
    asyncio.run(main())
    assert console.text() == "echo: ready\necho: aio\n"


def test_disk_guest_across_snapshot_fork_restore(kvm, tiny_vm, console, tmp_path):
    img = tmp_path / "disk.img"
    img.write_bytes(bytes(1 << 20))
    vm = tiny_vm("vblk", "loop=1", console_out=console, event_loop="embedder",
                 disks=[{"path": str(img), "read_only": True}])
    vm.start()
    stop = threading.Event()

    def run(v):
        while not stop.is_set():
            v.loop_run(0.02)
    runners = [threading.Thread(target=run, args=(vm,))]
    runners[0].start()
    try:
        console.wait_for("vblk: reads 128\n")
        vm.pause()
        vm.snapshot(tmp_path / "snap")
        children = []
        for mode in ("embedder", "shared"):
            out = open(tmp_path / ("out-" + mode), "w+b")
            c = vm.fork(console_out=out, event_loop=mode)
            children.append((c, out, mode))
        out = open(tmp_path / "out-restored", "w+b")
        children.append((microvm.VM.restore(tmp_path / "snap", console_out=out,
                                            event_loop="embedder"), out, "embedder"))
        for c, _, mode in children:
            if mode == "embedder":
                runners.append(threading.Thread(target=run, args=(c,)))
                runners[-1].start()
            else:
                with pytest.raises(microvm.InvalidError):
                    c.loop_fd
        for c, out, _ in children:
            for _ in range(int(GUEST_TIMEOUT / 0.01)):
                if b"vblk: reads" in os.pread(out.fileno(), 1 << 16, 0):
                    break
                threading.Event().wait(0.01)
            assert b"vblk: reads" in os.pread(out.fileno(), 1 << 16, 0)
        vm.resume()
        vm.reset()
        at = len(console.text())
        for _ in range(int(GUEST_TIMEOUT / 0.01)):
            if "vblk: reads" in console.text()[at:]:
                break
            threading.Event().wait(0.01)
        assert "vblk: reads" in console.text()[at:]
    finally:
        stop.set()
        for t in runners:
            t.join()
    for c, out, _ in children:
        c.close()
        out.close()


def test_errors(kvm, tiny_vm, console):
    with pytest.raises(ValueError):
        microvm.VM(kernel=payload("idle"), event_loop="mine")
    vm = tiny_vm("idle", console_out=console, event_loop="embedder")
    with pytest.raises(microvm.InvalidError) as e:
        vm.loop_fd
    assert "not started" in str(e.value)
    with pytest.raises(ValueError):
        vm.loop_run(-1)
    vm.start()
    assert vm.loop_fd >= 0
    assert vm.loop_run() == 0
    with pytest.raises(microvm.BusyError):
        vm.set_event_loop("shared")
    shared = tiny_vm("idle", console_out=console)
    shared.start()
    with pytest.raises(microvm.InvalidError) as e:
        shared.loop_run()
    assert "event threads" in str(e.value)
    with pytest.raises(ValueError):
        shared.pause() or shared.fork(event_loop="x")


def test_blocking_loop_run_returns_at_close(kvm, tiny_vm, console):
    vm = tiny_vm("idle", console_out=console, event_loop="embedder")
    vm.start()
    errors = []

    def wait_forever():
        try:
            vm.loop_run(None)
        except ValueError as e:
            errors.append(e)
    t = threading.Thread(target=wait_forever)
    t.start()
    vm.close()
    t.join(GUEST_TIMEOUT)
    assert not t.is_alive() and errors
