"""Snapshot and VM.restore with the counter tiny guest (it counts in guest
RAM and prints "count N": a restored VM continues where the snapshot left
it), every restore option, and the errors."""

import os
import re
import shutil
import signal
import time

import pytest

from conftest import GUEST_TIMEOUT, Console, payload

import microvm


def last_count(text):
    """The last complete "count N" line, 0 if none."""
    found = re.findall(r"(?:^|\n)count (\d+)\n", text)
    return int(found[-1]) if found else 0


def check_sequence(text):
    """Every complete "count N" line follows the previous one, from 1;
    returns the last N."""
    want = 1
    for n in re.findall(r"(?:^|\n)count (\d+)(?=\n)", text):
        assert int(n) == want, "count %s where %d was expected" % (n, want)
        want += 1
    return want - 1


def wait_count(console, n):
    end = time.monotonic() + GUEST_TIMEOUT
    while last_count(console.text()) < n:
        assert time.monotonic() < end, "count %d never reached: %r" % (n, console.text()[-200:])
        time.sleep(0.002)


@pytest.fixture
def paused_counter(kvm, tmp_path):
    """A counter VM that counted to 5 and is paused; its console."""
    out = Console(tmp_path, "orig")
    vm = microvm.VM(kernel=payload("counter"), cmdline="every=20000", memory_mib=16,
                    console_out=out)
    vm.start()
    wait_count(out, 5)
    vm.pause()
    yield vm, out
    vm.close()
    out.close()


def test_restore_continues_the_count(paused_counter, tmp_path):
    vm, out = paused_counter
    snap = tmp_path / "snap"
    vm.snapshot(snap)
    assert vm.state == microvm.State.PAUSED
    assert sorted(os.listdir(snap)) == ["memory", "state.dtb"]
    before = out.text()
    k = last_count(before)
    vm.close()
    out2 = Console(tmp_path, "clone")
    with microvm.VM.restore(snap, console_out=out2) as clone:
        assert clone.state == microvm.State.RUNNING
        wait_count(out2, k + 3)
        assert check_sequence(before + out2.text()) >= k + 3
        clone.stop()
        assert clone.wait(GUEST_TIMEOUT).reason == microvm.ExitReason.STOPPED
    out2.close()


def test_restore_options(paused_counter, tmp_path):
    vm, out = paused_counter
    snap = str(tmp_path / "snap")
    vm.snapshot(snap)
    k = last_count(out.text())
    for opts in ({"paused": True}, {"paused": True, "verify_memory": True},
                 {"paused": True, "prefault": True},
                 {"paused": True, "track_dirty": True, "kick_signal": signal.SIGRTMIN + 2}):
        c_out = Console(tmp_path, "c")
        with microvm.VM.restore(snap, console_out=c_out.file, **opts) as c:
            assert c.state == microvm.State.PAUSED
            c.resume()
            wait_count(c_out, k + 2)
            c.pause()
            # A restored VM can be snapshotted again, as a diff when dirty
            # pages were tracked from the start.
            if opts.get("track_dirty"):
                c.snapshot(tmp_path / "diff", diff=True)
            else:
                c.snapshot(tmp_path / "again")
        c_out.close()
    with microvm.VM.restore(tmp_path / "diff", paused=True, verify_memory=True) as c:
        assert c.state == microvm.State.PAUSED
    with microvm.VM.restore(tmp_path / "again", paused=True) as c:
        c.resume()
        assert c.state == microvm.State.RUNNING


def test_diff_snapshot_needs_a_base(paused_counter, tmp_path):
    vm, out = paused_counter
    with pytest.raises(microvm.NotFoundError) as e:
        vm.snapshot(tmp_path / "d", diff=True)
    assert e.value.function == "microvm_snapshot"
    vm.snapshot(tmp_path / "base")
    vm.resume()
    with pytest.raises(microvm.InvalidError):
        vm.snapshot(tmp_path / "running")          # not paused
    vm.pause()
    vm.snapshot(tmp_path / "d", diff=True)
    with microvm.VM.restore(tmp_path / "d", paused=True, verify_memory=True) as c:
        assert c.state == microvm.State.PAUSED


def test_restore_log_callback_and_console_in(paused_counter, tmp_path):
    vm, out = paused_counter
    vm.snapshot(tmp_path / "snap")
    got = []
    rd, wr = os.pipe()
    c_out = Console(tmp_path, "c")

    def restore():
        def cb(level, msg):                        # only the VM refers to it
            got.append(msg)
        return microvm.VM.restore(tmp_path / "snap", console_in=rd, console_out=c_out,
                                  log=cb, log_level="debug")

    try:
        c = restore()
        import gc
        gc.collect()
        os.write(wr, b"A")
        c_out.wait_for("in 65\n")
        c.stop()
        c.close()
        assert got, "the restored VM logged nothing"
    finally:
        os.close(rd)
        os.close(wr)
        c_out.close()


def test_restore_device_overrides(kvm, tmp_path):
    img, img2 = tmp_path / "a.img", tmp_path / "b.img"
    for p in (img, img2):
        with open(p, "wb") as f:
            f.truncate(1 << 20)
    uds, uds2 = str(tmp_path / "v"), str(tmp_path / "v2")
    with microvm.VM(kernel=payload("counter"), memory_mib=16, rng=True,
                    disks=[{"path": img, "read_only": True, "sync": True, "serial": "s1"}],
                    vsock_cid=7, vsock_uds_path=uds) as vm:
        vm.start()
        vm.pause()
        vm.snapshot(tmp_path / "snap")
    with microvm.VM.restore(tmp_path / "snap", paused=True) as c:
        assert c.disk_backend(0) == "sync"
        assert os.path.exists(uds)
    with microvm.VM.restore(tmp_path / "snap", disk_paths=[img2], vsock_cid=9,
                            vsock_uds_path=uds2) as c:
        assert os.path.exists(uds2)
    with microvm.VM.restore(tmp_path / "snap", disk_paths=[None], paused=True) as c:
        assert c.disk_backend(0) == "sync"
    os.truncate(img2, 2 << 20)
    with pytest.raises(microvm.InvalidError) as e:
        microvm.VM.restore(tmp_path / "snap", disk_paths=[img2])
    assert e.value.function == "microvm_restore" and e.value.message
    with pytest.raises(ValueError):
        microvm.VM.restore(tmp_path / "snap", disk_paths=[img] * 17)
    with pytest.raises(TypeError):
        microvm.VM.restore(tmp_path / "snap", disk_paths=str(img))
    with pytest.raises(ValueError):
        microvm.VM.restore(tmp_path / "snap", vsock_cid=1)


def test_restore_errors(kvm, paused_counter, tmp_path):
    vm, _ = paused_counter
    with pytest.raises(microvm.NotFoundError) as e:
        microvm.VM.restore(tmp_path / "none")
    assert isinstance(e.value, FileNotFoundError) and e.value.message
    (tmp_path / "empty").mkdir()
    with pytest.raises(microvm.Error) as e:
        microvm.VM.restore(tmp_path / "empty")
    assert e.value.message
    vm.snapshot(tmp_path / "snap")
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path / "snap", bad)
    with open(bad / "memory", "r+b") as f:   # flip a byte the guest wrote
        data = f.read()
        at = data.find(b"count")
        assert at >= 0
        f.seek(at)
        f.write(b"C")
    with pytest.raises(microvm.ChecksumError) as e:
        microvm.VM.restore(bad, verify_memory=True)
    assert e.value.errno == 74 and e.value.message
    for kw in ({"paused": "yes"}, {"console_out": "out"}, {"log": 5}):
        with pytest.raises(TypeError):
            microvm.VM.restore(tmp_path / "snap", **kw)
    for kw in ({"kick_signal": signal.SIGUSR1}, {"log_level": "info"},
               {"log": print, "log_level": 7}):
        with pytest.raises(ValueError):
            microvm.VM.restore(tmp_path / "snap", **kw)


def test_reset_returns_to_the_snapshot(paused_counter, tmp_path):
    """VM.reset(): a restored counter VM goes back, in place, to the count
    of its snapshot, running or paused, as often as asked."""
    vm, out = paused_counter
    snap = tmp_path / "snap"
    vm.snapshot(snap)
    at = last_count(out.text())
    clone_out = Console(tmp_path, "clone")
    clone = microvm.VM.restore(snap, console_out=clone_out)
    try:
        for i in range(3):
            wait_count(clone_out, at + 3)
            clone.reset(paused=bool(i % 2))
            assert clone.state == (microvm.State.PAUSED if i % 2 else microvm.State.RUNNING)
            mark = len(clone_out.text())
            if i % 2:
                clone.resume()
            # The next count after a reset is the snapshot's next one again.
            end = time.monotonic() + GUEST_TIMEOUT
            while not re.search(r"count %d\n" % (at + 1), clone_out.text()[mark:]):
                assert time.monotonic() < end, clone_out.text()[mark:][-200:]
                time.sleep(0.002)
    finally:
        clone.close()
        clone_out.close()


def test_reset_without_snapshot_is_an_error(kvm, tmp_path):
    vm = microvm.VM(kernel=payload("counter"), cmdline="every=20000", memory_mib=16)
    try:
        vm.start()
        with pytest.raises(microvm.Error) as e:
            vm.reset()
        assert "snapshot" in str(e.value)
        assert vm.state == microvm.State.RUNNING
    finally:
        vm.close()


def test_fork_diverges(paused_counter, tmp_path):
    """VM.fork(): a paused VM's child runs on from the same count; parent
    and child then count independently; forks of forks work."""
    vm, out = paused_counter
    at = last_count(out.text())
    c1_out = Console(tmp_path, "child")
    child = vm.fork(console_out=c1_out)
    try:
        wait_count(c1_out, at + 3)
        assert vm.state == microvm.State.PAUSED
        assert last_count(out.text()) == at   # the parent did not move
        child.pause()
        c2_out = Console(tmp_path, "grandchild")
        grandchild = child.fork(console_out=c2_out, paused=True)
        try:
            assert grandchild.state == microvm.State.PAUSED
            grandchild.resume()
            wait_count(c2_out, last_count(c1_out.text()) + 2)
        finally:
            grandchild.close()
            c2_out.close()
        vm.resume()
        wait_count(out, at + 2)
    finally:
        child.close()
        c1_out.close()
    with pytest.raises(microvm.Error):
        vm.fork()   # running: only a paused VM forks
