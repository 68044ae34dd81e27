"""The package builds offline into a py3-none-any wheel and installs with
Debian's pip into a fresh venv (pip install --no-build-isolation)."""

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from conftest import BUILD, PKG_DIR


def need(module):
    if importlib.util.find_spec(module) is None:
        msg = "%s is not installed (scripts/setup.sh installs it)" % module
        if os.environ.get("CI"):
            pytest.fail(msg)
        pytest.skip(msg)


def test_wheel_and_venv_install(tmp_path):
    for m in ("pip", "venv", "setuptools", "wheel"):
        need(m)
    src = tmp_path / "src"       # build from a copy: nothing is written into the tree
    shutil.copytree(PKG_DIR, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-build-isolation",
                    "--no-deps", "-w", str(wheels), str(src)], check=True, timeout=300,
                   capture_output=True)
    (whl,) = os.listdir(wheels)
    assert whl.endswith("-py3-none-any.whl"), whl
    with zipfile.ZipFile(wheels / whl) as z:
        names = z.namelist()
    assert "microvm/__init__.py" in names and "microvm/_lib.py" in names
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=300, capture_output=True)
    py = str(venv / "bin" / "python")
    subprocess.run([py, "-m", "pip", "install", "-q", "--no-index", "--no-build-isolation",
                    str(src)], check=True, timeout=300, capture_output=True)
    env = dict(os.environ, MICROVM_LIBRARY=str(BUILD / "libmicrovm.so.0"))
    env.pop("PYTHONPATH", None)
    r = subprocess.run([py, "-m", "microvm", "--version"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "microvm (Python package)" in r.stdout and "libmicrovm " in r.stdout
    r = subprocess.run([py, "-c", "import microvm; print(microvm.__file__)"], cwd=str(tmp_path),
                       env=env, capture_output=True, text=True, timeout=60)
    assert str(venv) in r.stdout, r.stdout + r.stderr
    # Without any library: the import works, every use says what was searched,
    # and an explicit path still loads it.
    env.pop("MICROVM_LIBRARY")
    env["LD_LIBRARY_PATH"] = ""
    r = subprocess.run([py, "-m", "microvm", "--version"], cwd=str(tmp_path), env=env,
                       capture_output=True, text=True, timeout=60)
    if "libmicrovm 0." in r.stdout:
        pytest.skip("a libmicrovm is installed system-wide")
    assert r.returncode == 1 and "not found" in r.stderr and "MICROVM_LIBRARY" in r.stderr
    code = ("import microvm\n"
            "try:\n    microvm.VM()\nexcept microvm.LibraryNotFoundError as e:\n    print('NF', e)\n"
            "microvm.load_library(%r)\n"
            "with microvm.VM() as vm: print('OK', vm.state)\n" % str(BUILD / "libmicrovm.so.0"))
    r = subprocess.run([py, "-c", code], cwd=str(tmp_path), env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("NF libmicrovm (libmicrovm.so.0) not found")
    assert "OK State.CONFIGURED" in r.stdout
