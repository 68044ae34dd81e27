"""microvm.AsyncSandbox with asyncio.run, against the real guest agent
running on the host (see test_agent.py); Sandbox.create's failure without a
guest is tested too (nothing boots)."""

import asyncio
import signal
import time

import pytest

from conftest import raw

import microvm
from microvm.sandbox import Sandbox


@pytest.fixture
def asbx(agent_sock):
    s = Sandbox(None, lambda: microvm.Agent.open_fd(raw(agent_sock), timeout=10),
                owns_vm=False)
    yield microvm.AsyncSandbox(s)
    s.kill()


def test_commands_and_files(asbx, tmp_path):
    async def main():
        async with asbx as sbx:
            r = await sbx.commands.run("echo hi; echo err >&2")
            assert (r.stdout, r.stderr, r.exit_code) == ("hi\n", "err\n", 0)
            r = await sbx.commands.run(["printf", "%s", "$X"], env={"X": "1"}, text=False)
            assert r.stdout == b"$X"
            with pytest.raises(microvm.CommandExitError) as e:
                await sbx.commands.run("exit 4")
            assert e.value.exit_code == 4
            assert (await sbx.commands.run("exit 4", check=False)).exit_code == 4
            with pytest.raises(microvm.NotFoundError):
                await sbx.commands.run(["/no/such/program"])
            with pytest.raises(TypeError):
                await sbx.commands.run(5)
            f = str(tmp_path / "f")
            await sbx.files.write(f, "héllo")
            assert await sbx.files.read(f) == "héllo".encode()
            assert await sbx.files.read_text(f) == "héllo"
            with pytest.raises(FileNotFoundError):
                await sbx.files.read(str(tmp_path / "none"))
            with pytest.raises(ValueError):
                await sbx.files.write("relative", b"")
            assert sbx.vm is None and not sbx.is_running
        # async with killed it
        with pytest.raises(ValueError, match="closed"):
            await asbx.commands.run("true")
    asyncio.run(main())


def test_the_loop_runs_while_commands_run(asbx):
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)
        t = asyncio.create_task(ticker())
        t0 = time.monotonic()
        rs = await asyncio.gather(*(asbx.commands.run("sleep 0.3; echo %d" % i)
                                    for i in range(3)))
        elapsed = time.monotonic() - t0
        t.cancel()
        assert [r.stdout for r in rs] == ["0\n", "1\n", "2\n"]
        assert ticks >= 5 and elapsed < 3             # concurrent, loop not blocked
    asyncio.run(main())


def test_background_handle(asbx, tmp_path):
    gate = tmp_path / "gate"

    async def main():
        h = await asbx.commands.run("echo a; while [ ! -e %s ]; do sleep 0.01; done; "
                                    "echo b >&2; exit 3" % gate, background=True)
        assert isinstance(h, microvm.AsyncCommandHandle) and h.pid is None
        assert "AsyncCommandHandle" in repr(h)
        seen = []
        async for stream, data in h:
            seen.append((stream, data))
            if data == "a\n":
                assert not h.done
                gate.touch()
        assert seen == [("stdout", "a\n"), ("stderr", "b\n")]
        with pytest.raises(microvm.CommandExitError) as e:
            await h.wait(timeout=10)
        assert e.value.exit_code == 3 and e.value.stdout == "a\n"
        assert [x async for x in h] == seen          # again, from the start

        h = await asbx.commands.run("sleep 30", background=True, check=False)
        with pytest.raises(TimeoutError):
            await h.wait(timeout=0.05)
        with pytest.raises(ValueError):
            await h.wait(timeout=-1)
        assert await h.kill(signal.SIGTERM) is True
        assert (await h.wait(10)).signal == signal.SIGTERM
        assert await h.kill() is False

        h = await asbx.commands.run(["/no/such/program"], background=True)
        with pytest.raises(microvm.NotFoundError):
            await h.wait(10)

        out = []
        h = await asbx.commands.run("echo cb", background=True, on_stdout=out.append)
        assert (await h.wait(10)).stdout == "cb\n" and out == ["cb\n"]

        async with await asbx.commands.run("sleep 30", background=True) as h:
            pass
        assert h.done
    asyncio.run(main())


def test_kill_stops_background_commands(asbx):
    async def main():
        h = await asbx.commands.run("sleep 30", background=True)
        waiter = asyncio.create_task(h.wait(20))
        await asyncio.sleep(0.1)
        await asbx.kill()
        with pytest.raises(microvm.CommandExitError) as e:
            await waiter
        assert e.value.signal == signal.SIGKILL
    asyncio.run(main())


def test_create_and_wrap_errors(tmp_path, monkeypatch):
    for v in ("MICROVM_KERNEL", "MICROVM_INITRD"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("MICROVM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(microvm.guest, "_checkout_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)

    async def main():
        with pytest.raises(microvm.GuestNotFoundError, match="guest-artifacts.sh"):
            await microvm.AsyncSandbox.create(cpus=1)
        with pytest.raises(ValueError):
            await microvm.AsyncSandbox.create(cpus=0, kernel="/k", initrd="/i")
        with pytest.raises(microvm.NotFoundError):
            await microvm.AsyncSandbox.create(kernel=str(tmp_path / "none"), initrd="/i")
    asyncio.run(main())
    with pytest.raises(TypeError):
        microvm.AsyncSandbox(object())


def test_create_cancelled_kills_the_sandbox_once_up(monkeypatch):
    import threading
    release = threading.Event()
    killed = threading.Event()

    class Fake(Sandbox):
        def __init__(self):
            pass

        def kill(self):
            killed.set()

    def create(**kw):
        release.wait(10)
        return Fake()
    monkeypatch.setattr(Sandbox, "create", staticmethod(create))

    async def main():
        t = asyncio.create_task(microvm.AsyncSandbox.create(cpus=1))
        await asyncio.sleep(0.05)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        release.set()
    asyncio.run(main())
    assert killed.wait(10)
