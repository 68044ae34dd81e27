"""How the suite itself behaves: without /dev/kvm the guest tests skip, or
fail under CI; scripts/test-python.sh fails when pytest collects nothing."""

import os
import subprocess
import sys

from conftest import PKG_DIR, ROOT

GUEST_TEST = str(PKG_DIR / "tests" / "test_lifecycle.py") + "::test_start_and_wait_for_reset"


def pytest_run(args, **env):
    e = dict(os.environ, MICROVM_TEST_NO_KVM="1")
    e.pop("CI", None)
    e.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + args,
                          env=e, capture_output=True, text=True, timeout=120, cwd=str(ROOT))


def test_guest_tests_skip_without_kvm():
    r = pytest_run([GUEST_TEST, "-rs"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 skipped" in r.stdout and "MICROVM_TEST_NO_KVM" in r.stdout


def test_guest_tests_fail_without_kvm_under_ci():
    r = pytest_run([GUEST_TEST], CI="true")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "CI is set" in r.stdout and "1 error" in r.stdout


def test_script_fails_when_no_tests_are_collected(tmp_path):
    wrapper = tmp_path / "py"
    wrapper.write_text('#!/bin/sh\nexec "%s" "$@" -k no_such_test_name\n' % sys.executable)
    wrapper.chmod(0o755)
    r = subprocess.run([str(ROOT / "scripts" / "test-python.sh")], capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHON=str(wrapper)))
    assert r.returncode == 1
    assert "exit code 5: no tests collected" in r.stderr
