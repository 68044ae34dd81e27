"""python3 -m microvm run: argument parsing, the failure paths (nothing
boots) and the exit status passthrough with a sandbox over the host-side
agent (see test_agent.py)."""

import os
import signal
import subprocess
import sys

import pytest

from conftest import PKG_DIR, raw

import microvm
from microvm import __main__ as cli
from microvm.sandbox import Sandbox


@pytest.fixture
def no_guest(tmp_path, monkeypatch):
    """No default guest anywhere (environment for a subprocess too)."""
    for v in ("MICROVM_KERNEL", "MICROVM_INITRD"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("MICROVM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(microvm.guest, "_checkout_root", lambda: tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_parse_run_args():
    a = cli.parse_run_args(["--", "echo", "hi"])
    assert (a.cpus, a.mem, a.kernel, a.initrd, a.timeout, a.template) == \
        (1, 256, None, None, None, None)
    assert a.command == ["echo", "hi"] and a.env == [] and not a.interactive
    a = cli.parse_run_args(["--cpus", "2", "--mem", "512", "--kernel", "K", "--initrd", "I",
                            "--timeout", "1.5", "--env", "A=1", "--env", "B=", "--cwd", "/tmp",
                            "-i", "-v", "--", "ls", "--cpus", "-l"])
    assert (a.cpus, a.mem, a.kernel, a.initrd, a.timeout) == (2, 512, "K", "I", 1.5)
    assert a.env == ["A=1", "B="] and a.cwd == "/tmp" and a.interactive and a.verbose
    assert a.command == ["ls", "--cpus", "-l"]     # after --: the command's own
    assert cli.parse_run_args(["--template", "/t", "true"]).template == "/t"
    assert cli.parse_run_args(["uname", "-a"]).command == ["uname", "-a"]
    for bad in ([], ["--"], ["--cpus", "0", "--", "x"], ["--cpus", "two", "--", "x"],
                ["--mem", "1", "--", "x"], ["--timeout", "0", "--", "x"],
                ["--timeout", "nan", "--", "x"], ["--timeout", "-3", "--", "x"],
                ["--env", "NOEQ", "--", "x"], ["--bogus", "--", "x"]):
        with pytest.raises(cli._UsageError):
            cli.parse_run_args(bad)


def test_usage_errors_exit_125(capsys):
    assert cli.main(["run"]) == 125
    err = capsys.readouterr().err
    assert "usage: python3 -m microvm run" in err and "no command given" in err
    assert cli.main(["run", "--cpus", "0", "--", "true"]) == 125
    assert "cpus must be >= 1" in capsys.readouterr().err
    assert cli.main(["run", "--help"]) == 0
    assert "--template DIR" in capsys.readouterr().out


def test_no_guest_exits_125_saying_how_to_build(no_guest, capsys):
    assert cli.main(["run", "--", "true"]) == 125
    err = capsys.readouterr().err
    assert err.startswith("microvm: guest: ") and "./scripts/guest-artifacts.sh" in err


def test_missing_kernel_file_exits_125(no_guest, capsys):
    assert cli.main(["run", "--kernel", str(no_guest / "none"), "--initrd",
                     str(no_guest / "none2"), "--", "true"]) == 125
    err = capsys.readouterr().err
    assert "microvm: sandbox:" in err and "none" in err


def test_subprocess_no_guest(no_guest):
    env = dict(os.environ, PYTHONPATH=str(PKG_DIR))
    # Only the environment: the package found in the checkout would find the
    # checkout's build/guest/initramfs-agent.cpio.gz, but no kernel is in the
    # empty MICROVM_CACHE_DIR.
    p = subprocess.run([sys.executable, "-m", "microvm", "run", "--", "true"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert p.returncode == 125 and p.stdout == b""
    assert b"guest-artifacts.sh" in p.stderr and b"Traceback" not in p.stderr


@pytest.fixture
def host_sandbox(agent_sock):
    """create= for cli.run: a sandbox over the host-side agent."""
    made = []

    def create(args):
        s = Sandbox(None, lambda: microvm.Agent.open_fd(raw(agent_sock), timeout=10),
                    owns_vm=False)
        made.append(s)
        return s
    create.made = made
    return create


def test_exit_status_passthrough_and_streaming(host_sandbox, capfd, tmp_path):
    assert cli.run(["--", "sh", "-c", "echo out; echo err >&2; exit 3"],
                   create=host_sandbox) == 3
    c = capfd.readouterr()
    assert (c.out, c.err) == ("out\n", "err\n")
    assert cli.run(["--", "sh", "-c", "kill -TERM $$"], create=host_sandbox) == \
        128 + signal.SIGTERM
    assert cli.run(["--timeout", "0.2", "--", "sleep", "10"], create=host_sandbox) == 124
    assert cli.run(["--env", "A=x=y", "--cwd", str(tmp_path), "--", "sh", "-c",
                    'echo "$A" "$PWD"'], create=host_sandbox) == 0
    assert capfd.readouterr().out == "x=y %s\n" % tmp_path
    assert cli.run(["--", "/no/such/program"], create=host_sandbox) == 125
    assert "microvm: /no/such/program:" in capfd.readouterr().err
    if os.geteuid() == 0:                                      # switching users
        assert cli.run(["--user", "nobody", "--", "id", "-u"], create=host_sandbox) == 0
        assert capfd.readouterr().out == "65534\n"
        assert cli.run(["--user", "no-such-user-xyz", "--", "true"], create=host_sandbox) == 125
        assert "no-such-user-xyz" in capfd.readouterr().err
    assert all(not s._pool._idle for s in host_sandbox.made)   # each sandbox was killed


def test_interactive_stdin(host_sandbox, capfd, monkeypatch, tmp_path):
    f = tmp_path / "in"
    f.write_bytes(b"from stdin\n")
    with open(f, "rb") as stdin:
        monkeypatch.setattr(sys, "stdin", stdin)
        assert cli.run(["-i", "--", "cat"], create=host_sandbox) == 0
    assert capfd.readouterr().out == "from stdin\n"


class FakeSandbox:
    def __init__(self, calls, fail_snapshot=False):
        self.calls = calls
        self.fail_snapshot = fail_snapshot
        self._pool = self

    def drop_idle(self):
        self.calls.append("drop_idle")

    def snapshot(self, path):
        self.calls.append(("snapshot", path))
        if self.fail_snapshot:
            raise OSError(28, "No space left on device")


def test_template_made_on_first_use_then_restored(tmp_path, monkeypatch, capsys):
    calls = []
    fail = []

    def create(**kw):
        calls.append(kw)
        return FakeSandbox(calls, bool(fail))
    monkeypatch.setattr(microvm.Sandbox, "create", staticmethod(create))
    tmpl = str(tmp_path / "tmpl")
    args = cli.parse_run_args(["--cpus", "2", "--mem", "300", "--kernel", "K", "--initrd", "I",
                               "--template", tmpl, "--", "true"])
    cli._sandbox(args, microvm, None)
    assert calls == [dict(cpus=2, memory_mib=300, kernel="K", initrd="I", console_out=None),
                     "drop_idle", ("snapshot", tmpl)]
    # A failed snapshot is a warning: the run goes on.
    calls.clear()
    fail.append(1)
    assert isinstance(cli._sandbox(args, microvm, None), FakeSandbox)
    assert "warning: no snapshot saved" in capsys.readouterr().err
    # Once DIR holds a snapshot, it is restored.
    os.mkdir(tmpl)
    open(os.path.join(tmpl, "state.dtb"), "w").close()
    calls.clear()
    args = cli.parse_run_args(["--template", tmpl, "--", "true"])
    cli._sandbox(args, microvm, 7)
    assert calls == [dict(template=tmpl, console_out=7)]
