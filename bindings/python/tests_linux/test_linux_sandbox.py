"""The Python bindings with a real Linux guest running the guest agent:
commands, files, snapshot -> two clones, the low-level VM over vsock.

Run by tests/linux/run.sh (tests/linux/pytest-linux.sh): directly on a host
whose CPU has VT-x/AMD-V, else inside the emulated machine of
tests/harness/run-nested.sh. The guest is the project's kernel and agent
initramfs, given in MICROVM_TEST_BZIMAGE and MICROVM_TEST_AGENT_INITRD;
without them the tests fail (they never skip).
"""

import os
import sys
import tempfile
from pathlib import Path

import pytest

PKG_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PKG_DIR))

import microvm  # noqa: E402

# Emulated machines are slow: generous, never a pass/fail time.
BOOT_TIMEOUT = 240.0
CMD_TIMEOUT = 120.0


def need_env(name):
    v = os.environ.get(name)
    if not v or not os.path.isfile(v):
        pytest.fail("%s is not set to a file (tests/linux/run.sh sets it)" % name)
    return v


@pytest.fixture(scope="module")
def guest():
    return need_env("MICROVM_TEST_BZIMAGE"), need_env("MICROVM_TEST_AGENT_INITRD")


@pytest.fixture(scope="module")
def sbx(guest):
    kernel, initrd = guest
    with tempfile.TemporaryFile() as console:
        try:
            s = microvm.Sandbox.create(cpus=2, memory_mib=256, kernel=kernel, initrd=initrd,
                                       console_out=console, timeout=BOOT_TIMEOUT)
        except microvm.Error:
            # What the guest printed, for the log: a boot that never
            # reaches its agent is the open "wedge" (see the header).
            console.seek(0)
            print("guest console (tail):\n" + console.read().decode(errors="replace")[-4000:])
            raise
        try:
            yield s
        finally:
            s.kill()


def test_commands(sbx):
    r = sbx.commands.run("echo out; echo err >&2; uname -s", timeout=CMD_TIMEOUT)
    assert r.exit_code == 0
    assert r.stdout == "out\nLinux\n"
    assert r.stderr == "err\n"
    with pytest.raises(microvm.CommandExitError) as ei:
        sbx.commands.run("exit 7", timeout=CMD_TIMEOUT)
    assert ei.value.exit_code == 7
    r = sbx.commands.run("exit 3", check=False, timeout=CMD_TIMEOUT)
    assert r.exit_code == 3


def test_command_env_cwd_stdin(sbx):
    r = sbx.commands.run('echo "$GREETING"; pwd; wc -c', env={"GREETING": "hi there"},
                         cwd="/tmp", stdin=b"x" * 100000, timeout=CMD_TIMEOUT)
    assert r.stdout.split("\n")[:3] == ["hi there", "/tmp", "100000"]


def test_command_output_callbacks(sbx):
    seen = []
    r = sbx.commands.run("for i in 1 2 3; do echo line$i; done", timeout=CMD_TIMEOUT,
                         on_stdout=lambda data: seen.append(data))
    text = "".join(x if isinstance(x, str) else x.decode() for x in seen)
    assert text == "line1\nline2\nline3\n"
    assert r.exit_code == 0 and r.stdout == ""  # streamed, not collected


def test_files(sbx):
    blob = os.urandom(1 << 20)
    sbx.files.write("/tmp/blob", blob)
    assert sbx.files.read("/tmp/blob") == blob
    sbx.files.write("/tmp/text", "hello\n")
    assert sbx.files.read_text("/tmp/text") == "hello\n"
    r = sbx.commands.run("sha256sum /tmp/blob | cut -d' ' -f1", timeout=CMD_TIMEOUT)
    import hashlib
    assert r.stdout.strip() == hashlib.sha256(blob).hexdigest()
    with pytest.raises(FileNotFoundError):
        sbx.files.read("/no/such/file")


def test_snapshot_two_clones(guest):
    kernel, initrd = guest
    with tempfile.TemporaryDirectory(dir=os.environ.get("MICROVM_NESTED_SCRATCH")) as d:
        snap = os.path.join(d, "snap")
        with microvm.Sandbox.create(memory_mib=256, kernel=kernel, initrd=initrd,
                                    timeout=BOOT_TIMEOUT) as s:
            s.commands.run("echo before-snapshot > /tmp/state", timeout=CMD_TIMEOUT)
            s.snapshot(snap)
        clones = [microvm.Sandbox.create(template=snap, timeout=BOOT_TIMEOUT)
                  for _ in range(2)]
        try:
            for i, c in enumerate(clones):
                assert c.files.read_text("/tmp/state") == "before-snapshot\n"
                c.files.write("/tmp/id", "clone-%d\n" % i)
            outs = [c.commands.run("cat /tmp/id; head -c 16 /dev/urandom | od -An -tx1",
                                   timeout=CMD_TIMEOUT).stdout for c in clones]
            assert outs[0].startswith("clone-0\n") and outs[1].startswith("clone-1\n")
            # Reseeded at restore: their random streams diverge.
            assert outs[0].split("\n", 1)[1] != outs[1].split("\n", 1)[1]
        finally:
            for c in clones:
                c.kill()


def test_low_level_vm_and_agent(guest):
    kernel, initrd = guest
    with microvm.VM(vcpus=1, memory_mib=256, kernel=kernel, initrd=initrd,
                    cmdline="console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux",
                    rng=True, vsock_cid=3) as vm:
        vm.start()
        with microvm.Agent.connect(vm, timeout=BOOT_TIMEOUT) as a:
            r = a.exec(["sh", "-c", "echo $((6 * 7))"], timeout=CMD_TIMEOUT)
            assert r.exit_code == 0 and r.stdout.strip() == b"42"
        vm.pause()
        assert vm.state == microvm.State.PAUSED
        vm.resume()
        vm.stop()
        res = vm.wait(timeout=BOOT_TIMEOUT)
        assert res.reason == microvm.ExitReason.STOPPED


EXAMPLES = PKG_DIR.parents[1] / "examples" / "python"


def run_example(name, *args):
    import subprocess
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *args], env=env,
                       capture_output=True, text=True, timeout=1200)
    print(p.stdout, p.stderr)
    return p


def test_example_run_command(guest):
    kernel, initrd = guest
    p = run_example("run_command.py", "--kernel", kernel, "--initrd", initrd, "--",
                    "sh", "-c", "echo hello from the example; exit 5")
    assert p.returncode == 5
    assert p.stdout == "hello from the example\n"


def test_example_function_pool(guest):
    kernel, initrd = guest
    p = run_example("function_pool.py", "--kernel", kernel, "--initrd", initrd,
                    "--calls", "2", "--workers", "2")
    assert p.returncode == 0, p.stderr
    assert "2 calls, 2 workers" in p.stdout
    assert "whole call" in p.stdout


def test_example_function_pool_by_reset(guest):
    """The pool serving calls by resetting one clone per worker: each call
    sees a clean VM (the example checks every answer)."""
    kernel, initrd = guest
    p = run_example("function_pool.py", "--kernel", kernel, "--initrd", initrd,
                    "--calls", "6", "--workers", "2", "--mode", "reset")
    assert p.returncode == 0, p.stderr
    assert "6 calls, 2 workers, mode reset" in p.stdout


def test_sandbox_reset_forgets_writes(guest, tmp_path):
    kernel, initrd = guest
    with microvm.Sandbox.create(kernel=kernel, initrd=initrd, memory_mib=256,
                                timeout=BOOT_TIMEOUT) as sbx:
        sbx.files.write("/tmp/keep", "from before the snapshot")
        sbx.snapshot(tmp_path / "snap")
        for i in range(3):
            sbx.files.write("/tmp/scratch", "call %d" % i)
            sbx.commands.run("echo call %d >> /tmp/keep" % i)
            sbx.reset()
            assert sbx.files.read_text("/tmp/keep") == "from before the snapshot"
            assert sbx.commands.run("test -e /tmp/scratch", check=False).exit_code == 1
