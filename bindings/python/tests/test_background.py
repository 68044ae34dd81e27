"""sbx.commands.run(..., background=True): CommandHandle, driven against the
real guest agent running on the host (see test_agent.py)."""

import signal
import threading
import time

import pytest

from conftest import raw

import microvm
from microvm.sandbox import Sandbox


@pytest.fixture
def sbx(agent_sock):
    s = Sandbox(None, lambda: microvm.Agent.open_fd(raw(agent_sock), timeout=10),
                owns_vm=False)
    yield s
    s.kill()


def test_background_wait_result_and_iteration(sbx):
    h = sbx.commands.run("echo one; echo two >&2; sleep 0.2; echo three", background=True)
    assert isinstance(h, microvm.CommandHandle)
    assert h.pid is None                           # the C API does not report it
    assert "running" in repr(h) or "done" in repr(h)
    chunks = list(h)
    assert h.done and "done" in repr(h)
    out = "".join(d for s, d in chunks if s == "stdout")
    err = "".join(d for s, d in chunks if s == "stderr")
    assert (out, err) == ("one\nthree\n", "two\n")
    r = h.wait(timeout=10)
    assert (r.exit_code, r.stdout, r.stderr) == (0, "one\nthree\n", "two\n")
    assert h.wait() is r                           # again, at once
    assert list(h) == chunks                       # iteration may be repeated
    assert sbx.commands.run("echo fg").stdout == "fg\n"   # the connection went back


def test_background_output_arrives_while_running(sbx, tmp_path):
    gate = tmp_path / "gate"
    h = sbx.commands.run("echo first; while [ ! -e %s ]; do sleep 0.01; done; echo second"
                         % gate, background=True, text=False)
    it = iter(h)
    assert next(it) == ("stdout", b"first\n")      # before the command ended
    assert not h.done
    gate.touch()
    assert next(it) == ("stdout", b"second\n")
    assert list(it) == []
    assert h.wait(10).stdout == b"first\nsecond\n"


def test_background_callbacks_and_utf8_split(sbx):
    out, err = [], []
    # "é" is two bytes, written one at a time: one character in the result.
    h = sbx.commands.run("printf '\\303'; sleep 0.1; printf '\\251\\n'; echo e >&2",
                         background=True, on_stdout=out.append, on_stderr=err.append)
    r = h.wait(10)
    assert r.stdout == "é\n" and "".join(out) == "é\n" and err == ["e\n"]


def test_foreground_callbacks_get_whole_characters(sbx):
    out = []
    r = sbx.commands.run("printf '\\303'; sleep 0.1; printf '\\251\\n\\303'", on_stdout=out.append)
    assert "".join(out) == "é\n\ufffd" and r.stdout == ""
    out = []
    sbx.commands.run("printf '\\303'; sleep 0.1; printf '\\251'", on_stdout=out.append,
                     text=False)
    assert out == [b"\xc3", b"\xa9"]


def test_background_exit_codes_and_check(sbx):
    h = sbx.commands.run("echo bad >&2; exit 5", background=True)
    with pytest.raises(microvm.CommandExitError) as e:
        h.wait(10)
    assert e.value.exit_code == 5 and e.value.stderr == "bad\n"
    assert "exited with code 5" in str(e.value)
    h = sbx.commands.run("exit 5", background=True, check=False)
    assert h.wait(10).exit_code == 5
    h = sbx.commands.run("sleep 10", background=True, timeout=0.2)
    with pytest.raises(microvm.CommandExitError) as e:
        h.wait(10)
    assert e.value.result.timed_out


def test_background_kill_and_wait_timeout(sbx):
    h = sbx.commands.run("sleep 30", background=True)
    with pytest.raises(TimeoutError):
        h.wait(timeout=0.1)
    assert not h.done
    assert h.kill(signal.SIGTERM) is True          # may come before the command started
    with pytest.raises(microvm.CommandExitError) as e:
        h.wait(timeout=10)
    assert e.value.signal == signal.SIGTERM and e.value.exit_code == -1
    assert h.kill() is False                       # already ended
    h = sbx.commands.run("sleep 30", background=True, check=False)
    t0 = time.monotonic()
    h.kill()
    assert h.wait(10).signal == signal.SIGKILL and time.monotonic() - t0 < 10
    with pytest.raises(ValueError):
        h.kill(0)
    with pytest.raises(TypeError):
        h.kill("TERM")
    with pytest.raises(ValueError):
        h.wait(timeout=-1)


def test_background_errors(sbx, tmp_path):
    h = sbx.commands.run(["/no/such/program"], background=True)
    with pytest.raises(microvm.NotFoundError):
        h.wait(10)
    assert list(h) == []
    h = sbx.commands.run("true", background=True, cwd=str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError):
        h.wait(10)
    for bad in (dict(cwd="relative"), dict(output_limit=0), dict(background="yes"),
                dict(on_stdout=3), dict(timeout=-2)):
        with pytest.raises((TypeError, ValueError)):
            sbx.commands.run("true", background=True, **bad)

    def boom(data):
        raise KeyError(data)
    h = sbx.commands.run("echo x; sleep 5", background=True, on_stdout=boom)
    with pytest.raises(KeyError):
        h.wait(10)                                 # the callback's exception; command killed
    assert sbx.commands.run("echo ok").stdout == "ok\n"


def test_background_output_limit(sbx):
    h = sbx.commands.run("head -c 100000 /dev/zero", background=True, text=False,
                         output_limit=1000)
    r = h.wait(10)
    assert len(r.stdout) == 1000 and r.stdout_truncated and not r.stderr_truncated


def test_background_concurrent_handles_and_threads(sbx):
    hs = [sbx.commands.run("sleep 0.3; echo %d" % i, background=True) for i in range(4)]
    results = [None] * 4

    def waiter(i):
        results[i] = hs[i].wait(10).stdout
    ts = [threading.Thread(target=waiter, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert results == ["%d\n" % i for i in range(4)]
    assert 1 <= len(sbx._pool._idle) <= 4 and not sbx._pool._handles


def test_background_handle_context_manager(sbx):
    with sbx.commands.run("sleep 30", background=True, check=False) as h:
        pass
    assert h.done and h.wait().signal == signal.SIGKILL


def alive(pid):
    """@pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_closing_the_sandbox_kills_running_handles(sbx, tmp_path):
    pidfile = tmp_path / "pid"
    h = sbx.commands.run("echo $$ > %s; exec sleep 30" % pidfile, background=True)
    end = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < end:
        time.sleep(0.01)
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    sbx.kill()
    assert time.monotonic() - t0 < 10 and h.done    # kill() waited for it
    with pytest.raises(microvm.CommandExitError) as e:
        h.wait(10)
    assert e.value.signal == signal.SIGKILL
    end = time.monotonic() + 10
    while alive(pid) and time.monotonic() < end:
        time.sleep(0.01)
    assert not alive(pid)                          # the agent killed it
    assert not sbx._pool._handles
    with pytest.raises(ValueError, match="closed"):
        sbx.commands.run("true", background=True)


def test_kill_right_after_starting(agent_sock):
    """Sandbox.kill() racing a background command that has not started
    yet (the agent answers the first signal with ESRCH) still ends it."""
    for _ in range(10):
        s = Sandbox(None, lambda: microvm.Agent.open_fd(raw(agent_sock), timeout=10),
                    owns_vm=False)
        h = s.commands.run("sleep 30", background=True, check=False)
        s.kill()
        assert h.done
        try:
            assert h.wait(0).signal == signal.SIGKILL
        except ValueError as e:                    # closed before its request went out
            assert "closed" in str(e)
