"""microvm.Agent and microvm.Sandbox without a Linux guest: the project's
real guest agent binary (build/guest/agent/microvm-agent) runs on the host
with `--listen unix:PATH`, as the C tests do (tests/unit/test_agent_local.c),
and the bindings reach it through microvm_agent_open_fd. What needs a
guest (Sandbox.create booting Linux, Agent.connect over vsock) is not
tested here."""

import os
import signal
import socket
import threading
import time

import pytest

from conftest import payload, raw

import microvm
from microvm.sandbox import Sandbox

@pytest.fixture
def agent(agent_sock):
    a = microvm.Agent.open_fd(raw(agent_sock), timeout=10)
    yield a
    a.close()


@pytest.fixture
def sbx(agent_sock):
    s = Sandbox(None, lambda: microvm.Agent.open_fd(raw(agent_sock), timeout=10),
                owns_vm=False)
    yield s
    s.kill()


def test_hello_ping_version(agent):
    assert agent.protocol >> 16 == 1
    assert agent.version.startswith("microvm-agent ") or agent.version
    agent.ping()
    agent.set_io_timeout(5)
    agent.set_io_timeout(None)
    assert "microvm.Agent" in repr(agent)


def test_exec_output_exit_code_env_cwd_stdin(agent, tmp_path):
    r = agent.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (r.exit_code, r.signal, r.stdout, r.stderr) == (3, 0, b"out\n", b"err\n")
    assert not r.ok and not r.timed_out
    r = agent.exec(["sh", "-c", "echo $FOO:$HOME"], env={"FOO": "bar"}, merge_env=True)
    assert r.stdout == b"bar:/root\n"
    r = agent.exec(["/usr/bin/env"], env=["A=1"])
    assert r.stdout == b"A=1\n"
    r = agent.exec(["pwd"], cwd=str(tmp_path))
    assert r.stdout.decode().strip() == str(tmp_path)
    r = agent.exec(["cat"], stdin=b"\x00binary\xff")
    assert r.stdout == b"\x00binary\xff" and r.ok
    with open(tmp_path / "in", "wb") as f:
        f.write(b"from a file\n")
    with open(tmp_path / "in", "rb") as f:
        assert agent.exec(["cat"], stdin=f).stdout == b"from a file\n"
    assert agent.exec(["cat"], stdin="text").stdout == b"text"


def test_exec_timeout_signal_and_kill(agent):
    r = agent.exec(["sleep", "10"], timeout=0.2)
    assert r.timed_out and r.signal == signal.SIGKILL and r.exit_code == -1
    r = agent.exec(["sh", "-c", "kill -TERM $$"])
    assert r.signal == signal.SIGTERM
    with pytest.raises(microvm.NoProcessError) as e:
        agent.kill()
    assert isinstance(e.value, ProcessLookupError)
    def interrupt():
        while True:                               # until the command runs
            try:
                return agent.kill(signal.SIGINT)
            except microvm.NoProcessError:
                time.sleep(0.01)
    t = threading.Thread(target=interrupt)
    t.start()
    r = agent.exec(["sleep", "30"])
    t.join()
    assert r.signal == signal.SIGINT


def test_exec_streaming_and_limits(agent):
    got = []
    r = agent.exec(["sh", "-c", "echo a; echo b >&2"], on_output=lambda s, d: got.append((s, d)))
    assert r.stdout == b"" and sorted(got) == [(1, b"a\n"), (2, b"b\n")]
    r = agent.exec(["sh", "-c", "while :; do echo y; done"], on_output=lambda s, d: True)
    assert r.cancelled
    r = agent.exec(["head", "-c", "100000", "/dev/zero"], output_limit=1000)
    assert len(r.stdout) == 1000 and r.stdout_truncated

    def boom(stream, data):
        raise KeyError("from the callback")
    with pytest.raises(KeyError):
        agent.exec(["echo", "x"], on_output=boom)
    agent.ping()                                  # still usable


def test_exec_errors(agent, tmp_path):
    with pytest.raises(microvm.NotFoundError) as e:
        agent.exec(["/no/such/program"])
    assert e.value.function == "microvm_agent_exec" and e.value.message
    with pytest.raises(FileNotFoundError):
        agent.exec(["true"], cwd=str(tmp_path / "missing"))
    agent.ping()                                  # agent errors keep it usable
    with pytest.raises(TypeError):
        agent.exec("echo hi")
    with pytest.raises(ValueError):
        agent.exec([])
    with pytest.raises(ValueError):
        agent.exec(["a\0b"])
    with pytest.raises(TypeError):
        agent.exec([1])
    with pytest.raises(ValueError):
        agent.exec(["x"] * 4096)
    with pytest.raises(ValueError):
        agent.exec(["true"], cwd="relative")
    with pytest.raises(ValueError):
        agent.exec(["true"], env={"A=B": "c"})
    with pytest.raises(ValueError):
        agent.exec(["true"], env=["NOEQUALS"])
    with pytest.raises(TypeError):
        agent.exec(["true"], env="A=1")
    with pytest.raises(TypeError):
        agent.exec(["true"], stdin=3.5)
    with pytest.raises(ValueError):
        agent.exec(["true"], timeout=-1)
    with pytest.raises(TypeError):
        agent.exec(["true"], on_output=5)
    with pytest.raises(ValueError):
        agent.kill(0)


def test_files(agent, tmp_path):
    p = str(tmp_path / "f")
    agent.put_file(p, b"\x00\x01data", mode=0o600)
    assert agent.get_file(p) == b"\x00\x01data"
    assert os.stat(p).st_mode & 0o777 == 0o600
    agent.put_file(p, "text")
    assert agent.get_file(p) == b"text"
    agent.put_file(p, b"")
    assert agent.get_file(p) == b""
    agent.put_file(p, b"x" * 100)
    with pytest.raises(microvm.FileTooBigError):
        agent.get_file(p, max_size=10)
    with pytest.raises(microvm.NotFoundError):
        agent.get_file(str(tmp_path / "none"))
    with pytest.raises(microvm.NotFoundError):
        agent.put_file(str(tmp_path / "no" / "dir"), b"x")
    with pytest.raises(microvm.Error) as e:
        agent.get_file(str(tmp_path))             # a directory
    assert e.value.errno == 21
    with pytest.raises(ValueError):
        agent.get_file("relative")
    with pytest.raises(TypeError):
        agent.put_file(p, 5)
    with pytest.raises(ValueError):
        agent.put_file(p, b"", mode=0o10000)
    agent.ping()


def test_reseed(agent):
    agent.reseed()
    agent.reseed(b"x" * 4096)
    with pytest.raises(ValueError):
        agent.reseed(b"")
    with pytest.raises(ValueError):
        agent.reseed(b"x" * 4097)
    with pytest.raises(TypeError):
        agent.reseed("text")


def test_open_fd_errors(agent_sock, tmp_path):
    a, b = socket.socketpair()
    b.close()
    with pytest.raises(microvm.ConnectionReset):
        microvm.Agent.open_fd(a, timeout=5)
    a, b = socket.socketpair()
    with pytest.raises(microvm.TimedOutError):
        microvm.Agent.open_fd(a, timeout=0.1)    # nobody says HELLO
    b.close()
    with open(tmp_path / "f", "w") as f:
        with pytest.raises(microvm.Error) as e:
            microvm.Agent.open_fd(os.dup(f.fileno()), timeout=1)
    assert e.value.errno == 88                    # ENOTSOCK
    with pytest.raises(TypeError):
        microvm.Agent.open_fd("sock")
    with pytest.raises(TypeError):
        microvm.Agent()


def test_close_kills_a_running_exec_and_threads(agent_sock):
    a = microvm.Agent.open_fd(raw(agent_sock), timeout=10)
    out = []
    t = threading.Thread(target=lambda: out.append(a.exec(["sleep", "30"])))
    t.start()
    while not a._inflight:                        # exec() entered C
        time.sleep(0.001)
    a.close()
    t.join(30)
    assert not t.is_alive() and out and out[0].signal == signal.SIGKILL
    with pytest.raises(ValueError, match="closed"):
        a.ping()

    errors = []

    def worker():
        try:
            with microvm.Agent.open_fd(raw(agent_sock), timeout=10) as c:
                for i in range(10):
                    assert c.exec(["echo", str(i)]).stdout == b"%d\n" % i
        except BaseException as e:                # noqa: B902
            errors.append(e)
    ts = [threading.Thread(target=worker) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def test_sandbox_commands_and_files(sbx, tmp_path):
    r = sbx.commands.run("echo hello; echo oops >&2")
    assert (r.stdout, r.stderr, r.exit_code) == ("hello\n", "oops\n", 0)
    r = sbx.commands.run(["printf", "%s", "a b"], text=False)
    assert r.stdout == b"a b"
    r = sbx.commands.run("echo $X; pwd", env={"X": "1"}, cwd=str(tmp_path))
    assert r.stdout == "1\n%s\n" % tmp_path
    assert "PATH=" in sbx.commands.run("env").stdout    # env adds to the defaults
    assert sbx.commands.run("cat", stdin="in").stdout == "in"
    with pytest.raises(microvm.CommandExitError) as e:
        sbx.commands.run("echo bad >&2; exit 7")
    assert e.value.exit_code == 7 and e.value.stderr == "bad\n"
    assert "exited with code 7" in str(e.value) and "bad" in str(e.value)
    r = sbx.commands.run("exit 7", check=False)
    assert r.exit_code == 7
    with pytest.raises(microvm.CommandExitError) as e:
        sbx.commands.run("sleep 10", timeout=0.2)
    assert e.value.result.timed_out and "timed out" in str(e.value)
    with pytest.raises(microvm.NotFoundError):
        sbx.commands.run(["/no/such/program"])
    parts = []
    r = sbx.commands.run("echo s1; echo s2 >&2", on_stdout=parts.append, on_stderr=parts.append)
    assert sorted(parts) == ["s1\n", "s2\n"] and r.stdout == ""

    f = str(tmp_path / "file")
    sbx.files.write(f, "héllo")
    assert sbx.files.read(f) == "héllo".encode()
    assert sbx.files.read_text(f) == "héllo"
    sbx.files.write(f, b"\xff", mode=0o600)
    assert sbx.files.read(f) == b"\xff"
    with pytest.raises(FileNotFoundError):
        sbx.files.read(str(tmp_path / "none"))
    sbx.commands.run("true")                    # the connection survived


def test_sandbox_argument_validation(sbx):
    sbx.commands.run("true")
    assert len(sbx._pool._idle) == 1
    for bad in (5, None, [], [""], ["a\0"]):
        with pytest.raises((TypeError, ValueError)):
            sbx.commands.run(bad)
    with pytest.raises(TypeError):
        sbx.commands.run("true", env=["A=1"])
    with pytest.raises(TypeError):
        sbx.commands.run("true", check="no")
    with pytest.raises(ValueError):
        sbx.commands.run("true", timeout=-5)
    with pytest.raises(TypeError):
        sbx.commands.run("true", on_stdout=1)
    with pytest.raises(ValueError):
        sbx.files.read("rel/path")
    with pytest.raises(TypeError):
        sbx.files.write("/tmp/x", 3)
    with pytest.raises(TypeError):
        sbx.commands.run("cat", stdin=1.5)

    def boom(data):
        raise KeyError(data)
    with pytest.raises(KeyError):
        sbx.commands.run("echo x", on_stdout=boom)
    # None of that cost the connection.
    assert len(sbx._pool._idle) == 1
    assert sbx.commands.run("echo ok").stdout == "ok\n"


def test_sandbox_pool_concurrency_and_kill(sbx):
    errors = []

    def worker(n):
        try:
            for i in range(5):
                assert sbx.commands.run("echo %d-%d" % (n, i)).stdout == "%d-%d\n" % (n, i)
        except BaseException as e:                # noqa: B902
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert 1 <= len(sbx._pool._idle) <= 4
    sbx.kill()
    with pytest.raises(ValueError, match="closed"):
        sbx.commands.run("true")


def test_sandbox_create_validation(tmp_path, monkeypatch):
    for v in ("MICROVM_KERNEL", "MICROVM_INITRD"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("MICROVM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(microvm.guest, "_checkout_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(microvm.GuestNotFoundError, match="kernel"):
        Sandbox.create()
    with pytest.raises(FileNotFoundError, match="initrd"):
        Sandbox.create(kernel=payload("hello"))
    with pytest.raises(TypeError):
        Sandbox.create(cpus="2", kernel=payload("hello"), initrd=payload("hello"))
    with pytest.raises(ValueError):
        Sandbox.create(cpus=0, kernel=payload("hello"), initrd=payload("hello"))
    with pytest.raises(ValueError):
        Sandbox.create(template=tmp_path, kernel=payload("hello"))
    with pytest.raises(microvm.NotFoundError):
        Sandbox.create(kernel=str(tmp_path / "none"), initrd=payload("hello"))
    with pytest.raises(microvm.NotFoundError):
        Sandbox.create(template=tmp_path / "no-snapshot")


def test_sandbox_create_without_agent_times_out(kvm, tmp_path):
    # A tiny guest never answers on vsock: create gives up after its
    # timeout and leaves nothing behind.
    with pytest.raises(microvm.TimedOutError):
        Sandbox.create(kernel=payload("busy"), initrd=payload("hello"), memory_mib=16,
                       cmdline="loops=1000", timeout=0.5)


def test_connect_and_run_errors(kvm, tiny_vm, tmp_path):
    from microvm import agent as agent_mod
    vm = tiny_vm("busy", "loops=1000")
    with pytest.raises(microvm.Error):
        microvm.Agent.connect(vm, timeout=0.2)    # not started
    vm.start()
    with pytest.raises(microvm.NoDeviceError) as e:
        microvm.Agent.connect(vm, timeout=1)
    assert e.value.function == "microvm_agent_connect"
    with pytest.raises(microvm.NoDeviceError):
        agent_mod.run(vm, ["true"], timeout=1)
    with pytest.raises(TypeError):
        agent_mod.run(vm, "true")
    with pytest.raises(ValueError):
        microvm.Agent.connect(vm, timeout=-1)
    quiet = tiny_vm("busy", "loops=1000", vsock_cid=5)
    quiet.start()
    with pytest.raises(microvm.TimedOutError):   # no agent in a tiny guest
        microvm.Agent.connect(quiet, timeout=0.3)
    quiet.close()
    with pytest.raises(ValueError, match="closed"):
        microvm.Agent.connect(quiet)
