"""libmicrovm 0.4 / agent protocol 1.1: exec as another user (user=) and
the command's resource use (max_rss_kib, user_us, sys_us), against the real
guest agent running on the host (see test_agent.py). The agent runs as
root here, so the host's /etc/passwd plays the guest's; switching users
needs root, so those tests skip without it (as tests/unit/test_agent_local.c
does)."""

import asyncio
import errno
import os
import sys

import pytest

from conftest import raw

import microvm
from microvm import _lib as L
from microvm.sandbox import Sandbox

# Debian's nobody: 65534:65534 (nogroup), home /nonexistent.
IDS = "echo $(id -u):$(id -g):$HOME"
NOBODY = "65534:65534:/nonexistent\n"
# Touches 32 MiB, so its peak RSS is above that.
BIG = [sys.executable, "-c", "b = bytearray(32 << 20); b[::4096] = b'x' * len(b[::4096])"]

root = pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")


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


def test_library_and_agent_are_new_enough(agent):
    assert L.LIB_MIN_MINOR == 9                    # set_pit() needs 0.9
    assert microvm.library().has(L.LIB_EXEC_USER_MINOR)
    assert agent.protocol >= 0x00010002 == L.AGENT_PROTOCOL_VERSION


@root
def test_exec_as_user(agent):
    r = agent.exec(["sh", "-c", IDS], user="nobody")
    assert r.stdout.decode() == NOBODY and r.ok
    assert agent.exec(["id", "-u"], user=b"65534").stdout == b"65534\n"
    r = agent.exec(["sh", "-c", IDS], user="1234:daemon")   # no passwd entry: HOME=/
    assert r.stdout == b"1234:1:/\n"
    r = agent.exec(["sh", "-c", IDS], user="nobody", env={"HOME": "/h"}, merge_env=True)
    assert r.stdout.decode() == "65534:65534:/h\n"
    assert agent.exec(["id", "-u"]).stdout == b"0\n"        # user=None: root


@root
def test_unknown_user_is_not_found(agent):
    with pytest.raises(microvm.NotFoundError) as e:
        agent.exec(["true"], user="no-such-user-xyz")
    assert isinstance(e.value, FileNotFoundError) and e.value.errno == errno.ENOENT
    assert e.value.function == "microvm_agent_exec"
    assert "no-such-user-xyz" in str(e.value), str(e.value)
    with pytest.raises(microvm.NotFoundError):
        agent.exec(["true"], user="nobody:no-such-group")
    agent.ping()                                   # the connection stays usable


def test_user_argument_checks(agent):
    with pytest.raises(ValueError):
        agent.exec(["true"], user="")
    with pytest.raises(ValueError):
        agent.exec(["true"], user="x" * (L.EXEC_USER_MAX + 1))
    with pytest.raises(ValueError):
        agent.exec(["true"], user="a\0b")
    with pytest.raises(TypeError):
        agent.exec(["true"], user=65534)
    agent.ping()


def test_user_needs_a_0_4_library(agent, monkeypatch):
    """An older library would reject the non-zero user field (EINVAL): it is
    refused before the call, with the reason."""
    lib = agent._lib
    monkeypatch.setattr(lib, "version_info", (0, 3, 0))
    monkeypatch.setattr(lib, "version", "0.3.0")
    with pytest.raises(microvm.NotSupportedError) as e:
        agent.exec(["true"], user="nobody")
    assert e.value.errno == errno.EOPNOTSUPP
    assert "needs libmicrovm 0.4" in str(e.value) and "0.3.0" in str(e.value)
    assert agent.exec(["true"]).ok                 # without user= it still runs
    assert microvm.errors.error_class(errno.EOPNOTSUPP) is microvm.NotSupportedError


def test_resource_use(agent):
    r = agent.exec(BIG)
    assert r.ok, r.stderr
    assert r.max_rss_kib >= 32 * 1024
    assert r.user_us + r.sys_us > 0
    r = agent.exec(["true"])
    assert 0 < r.max_rss_kib < 32 * 1024
    d = r.decoded()
    assert (d.max_rss_kib, d.user_us, d.sys_us) == (r.max_rss_kib, r.user_us, r.sys_us)
    got = []
    r = agent.exec(BIG, on_output=lambda s, data: got.append(data))   # streamed too
    assert r.max_rss_kib >= 32 * 1024
    assert microvm.CommandResult(0, 0, b"", b"").max_rss_kib == 0     # unknown: 0


@root
def test_sandbox_run_as_user(sbx):
    r = sbx.commands.run(IDS, user="nobody")
    assert r.stdout == NOBODY and r.max_rss_kib > 0
    r = sbx.commands.run(["id", "-u"], user="nobody", on_stdout=lambda d: None)
    assert r.ok and r.max_rss_kib > 0
    with pytest.raises(microvm.NotFoundError, match="no-such-user-xyz"):
        sbx.commands.run("true", user="no-such-user-xyz")
    with pytest.raises(ValueError):
        sbx.commands.run("true", user="")
    assert sbx.commands.run("id -u").stdout == "0\n"


@root
def test_background_as_user(sbx):
    h = sbx.commands.run(IDS, background=True, user="nobody")
    r = h.wait(timeout=30)
    assert r.stdout == NOBODY and r.max_rss_kib > 0
    h = sbx.commands.run(BIG, background=True)
    assert h.wait(timeout=30).max_rss_kib >= 32 * 1024
    h = sbx.commands.run("true", background=True, user="no-such-user-xyz")
    with pytest.raises(microvm.NotFoundError, match="no-such-user-xyz"):
        h.wait(timeout=30)
    with pytest.raises(TypeError):
        sbx.commands.run("true", background=True, user=1)


@root
def test_async_as_user(sbx):
    async def main():
        asbx = microvm.AsyncSandbox(sbx)
        r = await asbx.commands.run(IDS, user="nobody")
        assert r.stdout == NOBODY and r.max_rss_kib > 0
        h = await asbx.commands.run(["id", "-u"], background=True, user="nobody")
        r = await h.wait(timeout=30)
        assert r.stdout == "65534\n" and r.max_rss_kib > 0
        with pytest.raises(microvm.NotFoundError):
            await asbx.commands.run("true", user="no-such-user-xyz")
    asyncio.run(main())


def test_run_with_user_checks_then_connects(kvm, tiny_vm):
    """agent.run(vm, argv, user=): microvm_agent_run has no user, so it
    connects and execs itself; arguments are checked first."""
    from microvm import agent as agent_mod
    vm = tiny_vm("busy", "loops=1000")
    vm.start()
    with pytest.raises(ValueError):
        agent_mod.run(vm, ["true"], timeout=1, user="")
    with pytest.raises(TypeError):
        agent_mod.run(vm, "true", user="nobody")
    with pytest.raises(microvm.NoDeviceError) as e:        # no vsock device
        agent_mod.run(vm, ["true"], timeout=1, user="nobody")
    assert e.value.function == "microvm_agent_connect"
