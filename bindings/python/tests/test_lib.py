"""Loading, version check and the ctypes declarations against the C headers."""

import ctypes
import os
import re
import subprocess
import sys

import pytest

from conftest import BUILD, PKG_DIR, ROOT

import microvm
from microvm import _lib as L

HEADERS = [ROOT / "include" / "microvm.h", ROOT / "include" / "microvm_agent.h"]
LIBPATH = BUILD / "libmicrovm.so.0"


def header_text():
    return "\n".join(h.read_text() for h in HEADERS)


def cmake_version():
    m = re.search(r"project\(microvm VERSION (\d+\.\d+\.\d+)", (ROOT / "CMakeLists.txt").read_text())
    return m.group(1)


def run_py(code, **env):
    e = dict(os.environ)
    e.pop("MICROVM_LIBRARY", None)
    e.update(env)
    e["PYTHONPATH"] = str(PKG_DIR)
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True,
                          timeout=60)


def test_every_function_of_the_headers_is_declared():
    names = set(re.findall(r"MICROVM_API\s+[^;]*?\b(microvm_\w+)\s*\(", header_text(), re.S))
    assert len(names) >= 40
    assert names == set(L.PROTOTYPES)
    lib = microvm.library()
    for name in names:
        fn = getattr(lib, name)
        assert fn.argtypes is not None, name


def test_constants_match_the_headers():
    skip = {"MICROVM_H", "MICROVM_AGENT_H", "MICROVM_API", "MICROVM_VERSION_NUMBER"}
    checked = 0
    for name, value in re.findall(r"#define (MICROVM_\w+)\s+(.+)", header_text()):
        if name in skip or name.endswith("_INIT"):
            continue
        expr = re.sub(r"(?<=[0-9a-fA-F])u\b", "", value.split("/*")[0]).strip()
        try:
            num = eval(expr, {})
        except Exception:
            continue
        attr = name[len("MICROVM_"):]
        assert getattr(L, attr) == num, name
        checked += 1
    assert checked >= 40


STRUCTS = {
    "microvm_disk_config": L.DiskConfig,
    "microvm_vsock_config": L.VsockConfig,
    "microvm_exit": L.Exit,
    "microvm_restore_config": L.RestoreConfig,
    "microvm_exec_config": L.ExecConfig,
    "microvm_exec_result": L.ExecResult,
    "microvm_net_port": L.NetPort,
    "microvm_net_config": L.NetConfig,
    "microvm_net_counters": L.NetCounters,
}


def test_struct_layouts_match_the_c_compiler(tmp_path):
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <microvm.h>",
             "#include <microvm_agent.h>", "int main(void) {"]
    for cname, cls in STRUCTS.items():
        lines.append('printf("%s %%zu\\n", sizeof(%s));' % (cname, cname))
        for f in cls._fields_:
            lines.append('printf("%s.%s %%zu\\n", offsetof(%s, %s));'
                         % (cname, f[0], cname, f[0]))
    lines.append("return 0; }")
    src = tmp_path / "layout.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layout"
    subprocess.run(["cc", "-I", str(ROOT / "include"), "-I", str(BUILD / "include"), str(src),
                    "-o", str(exe)], check=True, timeout=120)
    got = dict(line.split() for line in subprocess.run(
        [str(exe)], capture_output=True, text=True, check=True).stdout.splitlines())
    for cname, cls in STRUCTS.items():
        assert int(got[cname]) == ctypes.sizeof(cls), cname
        for f in cls._fields_:
            assert int(got[cname + "." + f[0]]) == getattr(cls, f[0]).offset, (cname, f[0])
        if issubclass(cls, L._Sized):
            assert cls().size == ctypes.sizeof(cls)
    # The _INIT defaults that are not zero.
    assert L.RestoreConfig().console_in == -1 and L.RestoreConfig().console_out == -1
    assert L.ExecConfig().stdin_fd == -1
    assert L.NetConfig().fd == -1


def test_loaded_library_version_and_path():
    lib = microvm.library()
    assert lib.version == cmake_version() == microvm.library_version()
    assert lib.version_info[0] == L.LIB_MAJOR
    assert isinstance(lib._cdll, ctypes.CDLL) and not isinstance(lib._cdll, ctypes.PyDLL)


def test_package_version_is_the_project_version():
    assert microvm.__version__ == cmake_version()


def test_explicit_path_and_env(monkeypatch):
    before = microvm.library()
    try:
        lib = microvm.load_library(str(LIBPATH))
        assert lib.path == str(LIBPATH) and microvm.library() is lib
        with microvm.VM() as vm:
            assert vm.library is lib
        monkeypatch.setenv("MICROVM_LIBRARY", str(LIBPATH))
        assert microvm.load_library().path == str(LIBPATH)
    finally:
        L._current = before


def test_build_tree_lookup_without_env():
    r = run_py("import microvm; print(microvm.library().path)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(ROOT / "build" / "libmicrovm.so.0")


def fake_library(tmp_path, version):
    src = tmp_path / "fake.c"
    src.write_text('const char *microvm_version(void) { return "%s"; }\n' % version)
    so = tmp_path / ("libfake-%s.so" % version)
    subprocess.run(["cc", "-shared", "-fPIC", str(src), "-o", str(so)], check=True, timeout=120)
    return so


def test_version_mismatch_is_refused_with_the_reason(tmp_path):
    so = fake_library(tmp_path, "1.0.0")
    with pytest.raises(microvm.LibraryError) as e:
        microvm.load_library(so)
    assert "libmicrovm 1.0.0" in str(e.value) and "needs libmicrovm 0.x" in str(e.value)
    old = fake_library(tmp_path, "0.2.9")
    with pytest.raises(microvm.LibraryError, match="0.2.9"):
        L.Library(old)
    # At import: a library found through MICROVM_LIBRARY but wrong fails the import.
    r = run_py("import microvm", MICROVM_LIBRARY=str(so))
    assert r.returncode != 0
    assert "MICROVM_LIBRARY" in r.stderr and "needs libmicrovm 0.x" in r.stderr
    r = subprocess.run([sys.executable, "-m", "microvm", "--version"], capture_output=True,
                       text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=str(PKG_DIR), MICROVM_LIBRARY=str(so)))
    assert r.returncode == 1 and "is libmicrovm 1.0.0" in r.stderr and not r.stdout
    assert microvm.library().version == cmake_version()


def test_bad_library_paths(tmp_path):
    r = run_py("import microvm", MICROVM_LIBRARY=str(tmp_path / "nope.so"))
    assert r.returncode != 0 and "cannot load libmicrovm" in r.stderr
    libc = ctypes.util.find_library("c")
    with pytest.raises(microvm.LibraryError, match="not libmicrovm"):
        L.Library(libc)


def test_version_command():
    r = subprocess.run([sys.executable, "-m", "microvm", "--version"], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=str(PKG_DIR)), timeout=60)
    assert r.returncode == 0, r.stderr
    v = cmake_version()
    assert "microvm (Python package) %s" % v in r.stdout
    assert "libmicrovm %s" % v in r.stdout


def test_strerror():
    lib = microvm.library()
    assert lib.strerror(-2)
    assert isinstance(lib.strerror(-12345), str)
