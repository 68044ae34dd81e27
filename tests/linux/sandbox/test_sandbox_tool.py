"""microvm-sandbox driven as a user drives it: as a program, through its
command line (docs/sandbox.md). Run by tests/linux/run.sh (inside the
emulated machine on hosts without VT-x/AMD-V), which sets:

  MICROVM_SANDBOX       the tool
  MICROVM_KERNEL        the project's guest kernel
  MICROVM_TEST_DEBIAN_IMAGE  the project's Debian image, as
                        guest/rootfs/build-debian.sh built it before (the
                        cache is read-only inside the emulated machine; the
                        tool finds it there itself for --image debian)
  MICROVM_TEST_OCI      an OCI image layout built offline (tests/linux/mkoci.sh)
"""
import hashlib
import json
import os
import signal
import subprocess
import time

import pytest

TOOL = os.environ.get("MICROVM_SANDBOX", "")
IMAGE = os.environ.get("MICROVM_TEST_DEBIAN_IMAGE", "")
OCI = os.environ.get("MICROVM_TEST_OCI", "")
LONG = 600  # seconds: generous, the emulated machine is slow


def setup_module():
    # Never skip: the suite runs where it must run.
    for name, path in (("MICROVM_SANDBOX", TOOL), ("MICROVM_TEST_DEBIAN_IMAGE", IMAGE),
                       ("MICROVM_TEST_OCI", OCI), ("MICROVM_KERNEL", os.environ.get("MICROVM_KERNEL", ""))):
        assert path and os.path.exists(path), "%s is not set to an existing path" % name


def sandbox(*args, input=None, timeout=LONG, console=True, **kw):
    """The tool; a `run` also gets -v (unless console=False: the guest's
    console on stderr and, if the guest fails the run, the VM's report) and
    a command timeout below this one, so that a guest that stops answering
    is reported by the tool (exit 125) rather than killed with it."""
    if console and args[:1] == ("run",):
        args = ("run", "-v", "--timeout", str(max(timeout // 2, timeout - 120))) + args[1:]
    return subprocess.run([TOOL, *args], input=input, capture_output=True, timeout=timeout, **kw)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@pytest.fixture(scope="module")
def base_sum():
    """The Debian image's checksum before any test ran; checked at the end."""
    before = sha256(IMAGE)
    yield before
    assert sha256(IMAGE) == before, "a sandbox changed the shared base image"


@pytest.fixture(scope="module")
def template(tmp_path_factory, base_sum):
    d = tmp_path_factory.mktemp("tpl") / "debian"
    r = sandbox("prepare", "--snapshot", str(d), "--image", "debian", "--mem", "256")
    assert r.returncode == 0, r.stderr.decode()
    assert (d / "state.dtb").is_file()
    return str(d)


def test_python_in_debian(base_sum):
    r = sandbox("run", "--image", "debian", "--", "python3", "-c",
                "import sys; print(sys.version); open('/usr/x','w').write('x')")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().startswith("3.11"), r.stdout


def test_oci_entrypoint_env_workdir_user(tmp_path):
    report = tmp_path / "r.json"
    r = sandbox("run", "--image", "oci:" + OCI, "--json", str(report))
    out = r.stdout.decode()
    assert r.returncode == 0, (out, r.stderr.decode())
    # tests/linux/mkoci.sh's image: Entrypoint ["/bin/sh", "-c"], Cmd prints
    # these; Env GREETING, WorkingDir /work, User 1000:1000.
    assert out == "cwd=/work uid=1000 gid=1000 greeting=hello-from-oci\n"
    assert json.loads(report.read_text())["start"] == "boot"
    # Arguments after -- replace the image's Cmd, not its Entrypoint;
    # --env, --user and --workdir override the image's.
    r = sandbox("run", "--image", "oci:" + OCI, "--env", "GREETING=over", "--user", "0:0",
                "--", 'echo "$(pwd) $(id -u):$(id -g) $GREETING $0"', "arg0")
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode() == "/work 0:0 over arg0\n"


def test_exit_codes_signal_timeout(template):
    assert sandbox("run", "--from", template, "--", "sh", "-c", "exit 7").returncode == 7
    r = sandbox("run", "--from", template, "--", "sh", "-c", "kill -TERM $$")
    assert r.returncode == 128 + signal.SIGTERM
    r = sandbox("run", "--from", template, "--", "no-such-command-xyz")
    assert r.returncode == 127 and b"no-such-command-xyz" in r.stderr
    r = sandbox("run", "--from", template, "--", "/etc/passwd")
    assert r.returncode == 126
    t0 = time.monotonic()
    r = sandbox("run", "--from", template, "--timeout", "2", "--", "sleep", "1000")
    assert r.returncode == 124, r.stderr.decode()
    assert time.monotonic() - t0 < LONG


def test_stdout_stderr_apart_and_stdin_10mib(template):
    r = sandbox("run", "--from", template, "--", "sh", "-c", "echo out; echo err >&2",
                console=False)
    assert (r.stdout, r.stderr) == (b"out\n", b"err\n")
    data = os.urandom(10 << 20)
    r = sandbox("run", "--from", template, "--", "sha256sum", input=data)
    assert r.returncode == 0, r.stderr.decode()
    assert r.stdout.decode().split()[0] == hashlib.sha256(data).hexdigest()


def test_copy_in_out_env_workdir(template, tmp_path):
    src = tmp_path / "in.txt"
    src.write_bytes(b"payload\n")
    dst = tmp_path / "out.txt"
    r = sandbox("run", "--from", template, "--copy-in", "%s:/tmp/in.txt" % src,
                "--copy-out", "/tmp/out.txt:%s" % dst, "--env", "SUFFIX=!", "--workdir", "/tmp",
                "--user", "nobody", "--", "sh", "-c",
                'cat in.txt > /tmp/out.txt; echo "$SUFFIX$(id -un)$(pwd)" >> /tmp/out.txt')
    assert r.returncode == 0, r.stderr.decode()
    assert dst.read_bytes() == b"payload\n!nobody/tmp\n"


def test_clones_do_not_see_each_other(template):
    """Two clones of one template at once: each writes its own file all over
    the (overlay) root and sees only its own."""
    script = ('echo $0 > /marker-$0; sleep 2; ls / | grep marker- | tr "\\n" " "; '
              'cat /etc/hostname')
    procs = [subprocess.Popen([TOOL, "run", "--from", template, "--", "sh", "-c", script, n],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for n in ("a", "b")]
    outs = [p.communicate(timeout=LONG) for p in procs]
    for n, p, (out, err) in zip(("a", "b"), procs, outs):
        assert p.returncode == 0, err.decode()
        assert out.decode().split()[0] == "marker-" + n


def test_twenty_runs_leave_no_trace(template, base_sum, tmp_path):
    """20 runs writing all over /: the base image stays byte-identical (the
    module fixture checks its checksum), and no process, file or fd is
    left behind."""
    tmpdir = os.environ.get("TMPDIR", "/tmp")
    before = set(os.listdir(tmpdir))
    for i in range(20):
        r = sandbox("run", "--from", template, "--", "sh", "-c",
                    "for d in / /etc /usr /usr/bin /var /root; do echo %d > $d/w$$; done; "
                    "rm -rf /usr/share/doc; sync" % i)
        assert r.returncode == 0, r.stderr.decode()
    assert set(os.listdir(tmpdir)) - before == set()
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert TOOL not in ps
    # And a fresh clone still sees the template's pristine root.
    r = sandbox("run", "--from", template, "--", "sh", "-c", "ls / /etc /usr /root")
    assert r.returncode == 0, r.stderr.decode()
    assert not [n for n in r.stdout.decode().split() if n.startswith("w") and n[1:].isdigit()]


def test_json_report(template, tmp_path):
    report = tmp_path / "r.json"
    r = sandbox("run", "--from", template, "--json", str(report), "--", "true")
    assert r.returncode == 0
    j = json.loads(report.read_text())
    assert j["status"] == 0 and j["exit_code"] == 0 and j["signal"] == 0
    assert j["start"] == "restore" and j["timed_out"] is False
    assert j["start_ms"] > 0 and j["command_ms"] > 0 and j["peak_memory_kib"] > 0


@pytest.mark.parametrize("args", [
    [],
    ["frobnicate"],
    ["run", "--no-such-option", "--", "true"],
    ["run", "--image", "/no/such/image.ext4", "--", "true"],
    ["run", "--image", "oci:/no/such/layout", "--", "true"],
    ["run", "--from", "/no/such/template", "--", "true"],
    ["run", "--kernel", "/no/such/kernel", "--", "true"],
    ["run", "--cpus", "zero", "--", "true"],
    ["run", "--timeout", "-1", "--", "true"],
    ["run", "--env", "NOEQUALS", "--", "true"],
    ["prepare", "--", "true"],
])
def test_usage_errors(args):
    r = sandbox(*args)
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert b"microvm-sandbox: " in r.stderr and b"--help" in r.stderr


def test_help():
    r = sandbox("--help")
    assert r.returncode == 0 and b"usage: microvm-sandbox run" in r.stdout


def test_image_without_agent_fails_clearly(tmp_path):
    """A file that is not one of the project's images: the guest cannot
    start the agent and stops; the tool says so (exit 125), no 120 s wait."""
    bad = tmp_path / "zeros.img"
    bad.write_bytes(bytes(16 << 20))
    r = sandbox("run", "--image", str(bad), "--", "true", timeout=120)
    assert r.returncode == 125
    assert b"before its agent answered" in r.stderr, r.stderr
