"""The default guest lookup of Sandbox.create() (microvm.guest), with
temporary directories standing in for the kernel cache and the checkout;
nothing boots."""

import os
import time

import pytest

import microvm
from microvm import guest
from microvm.sandbox import Sandbox


@pytest.fixture
def place(tmp_path, monkeypatch):
    """An empty world: no MICROVM_* variables, the cache and the checkout
    in tmp_path, the current directory elsewhere in it."""
    for v in ("MICROVM_KERNEL", "MICROVM_INITRD", "MICROVM_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    monkeypatch.setattr(guest, "_checkout_root", lambda: checkout)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return tmp_path


def make_kernel(cache, key, done=True, age=0):
    d = cache / "kernel" / ("guest-" + key)
    d.mkdir(parents=True)
    (d / "bzImage").write_bytes(b"k")
    t = time.time() - age
    os.utime(d / "bzImage", (t, t))
    if done:
        (d / ".done").touch()
    return str(d / "bzImage")


def make_initrd(root):
    p = root / "build" / "guest" / "initramfs-agent.cpio.gz"
    p.parent.mkdir(parents=True)
    p.write_bytes(b"i")
    return str(p)


def test_nothing_found_says_how_to_build(place):
    with pytest.raises(microvm.GuestNotFoundError) as e:
        guest.find()
    assert isinstance(e.value, FileNotFoundError)
    msg = str(e.value)
    assert "./scripts/guest-artifacts.sh" in msg and "MICROVM_KERNEL" in msg
    assert "MICROVM_INITRD" in msg
    assert str(place / "home" / ".cache" / "microvm" / "kernel") in msg
    # Sandbox.create() says the same before creating anything.
    with pytest.raises(microvm.GuestNotFoundError, match="guest-artifacts.sh"):
        Sandbox.create()
    # Only the initrd missing: only it is named.
    with pytest.raises(FileNotFoundError) as e:
        guest.find(kernel="/k")
    assert "initrd" in str(e.value) and "kernel:" not in str(e.value)


def test_explicit_then_environment(place, monkeypatch):
    assert guest.find("/k", "/i") == ("/k", "/i")
    monkeypatch.setenv("MICROVM_KERNEL", "/env-k")
    monkeypatch.setenv("MICROVM_INITRD", "/env-i")
    make_kernel(place / "home" / ".cache" / "microvm", "aaaa")
    make_initrd(place / "checkout")
    assert guest.find() == ("/env-k", "/env-i")       # before the build outputs
    assert guest.find("/k", None) == ("/k", "/env-i")  # explicit before the environment
    monkeypatch.setenv("MICROVM_KERNEL", "")           # empty = unset
    assert guest.find()[0].endswith("guest-aaaa/bzImage")


def test_cache_and_checkout(place, monkeypatch):
    cache = place / "home" / ".cache" / "microvm"
    make_kernel(cache, "old", age=100)
    new = make_kernel(cache, "new")
    make_kernel(cache, "unfinished", done=False, age=-100)   # no .done: skipped
    d = cache / "kernel" / "l1-x"                             # not a guest kernel
    d.mkdir()
    (d / "bzImage").touch()
    (d / ".done").touch()
    initrd = make_initrd(place / "checkout")
    make_initrd(place / "cwd")
    assert guest.find() == (new, initrd)                # the newest; the checkout first
    assert guest.cached_kernels()[1].endswith("guest-old/bzImage")

    # XDG_CACHE_HOME, then MICROVM_CACHE_DIR win over ~/.cache.
    xdg = place / "xdg"
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    with pytest.raises(microvm.GuestNotFoundError, match=str(xdg)):
        guest.find()
    x = make_kernel(xdg / "microvm", "x")
    assert guest.find()[0] == x
    mc = place / "mc"
    monkeypatch.setenv("MICROVM_CACHE_DIR", str(mc))
    m = make_kernel(mc, "m")
    assert guest.find()[0] == m


def test_initrd_in_the_current_directory(place, monkeypatch):
    make_kernel(place / "home" / ".cache" / "microvm", "k")
    cwd_initrd = make_initrd(place / "cwd")
    assert guest.find()[1] == cwd_initrd
    monkeypatch.setattr(guest, "_checkout_root", lambda: None)   # an installed package
    assert guest.find()[1] == cwd_initrd


def test_the_real_checkout_root():
    root = guest._checkout_root()
    assert root is not None and (root / "scripts" / "guest-artifacts.sh").is_file()
