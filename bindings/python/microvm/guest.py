"""The project's default guest for Sandbox.create(): a kernel with
virtio-vsock and an initramfs whose /init is the guest agent, as
scripts/guest-artifacts.sh builds them.

Each of the two is looked up in this order:

1. the explicit argument (kernel=, initrd=);
2. the environment: MICROVM_KERNEL, MICROVM_INITRD;
3. what scripts/guest-artifacts.sh made: the kernel in guest/kernel/build.sh's
   cache, ``${MICROVM_CACHE_DIR:-${XDG_CACHE_HOME:-~/.cache}/microvm}/kernel/
   guest-*/bzImage`` (finished builds only, the newest first), and the
   initramfs ``build/guest/initramfs-agent.cpio.gz`` of the libmicrovm
   checkout these bindings sit in (else of the current directory).
"""

import glob
import os
from pathlib import Path

BUILD_HINT = ("build the project's default guest with ./scripts/guest-artifacts.sh in a "
              "libmicrovm checkout (it prints KERNEL=... and INITRD=...)")
INITRD_NAME = Path("build") / "guest" / "initramfs-agent.cpio.gz"


class GuestNotFoundError(FileNotFoundError):
    """No kernel or initramfs was given and none of the default places has
    one; the message says where it looked and how to build them."""


def _checkout_root():
    """The libmicrovm checkout holding this package (bindings/python/microvm),
    or None when installed elsewhere."""
    root = Path(__file__).resolve().parents[3]
    return root if (root / "scripts" / "guest-artifacts.sh").is_file() else None


def cache_dir():
    """guest/kernel/build.sh's cache root."""
    d = os.environ.get("MICROVM_CACHE_DIR")
    if d:
        return Path(d)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path(os.path.expanduser("~")) / ".cache"
    return base / "microvm"


def cached_kernels():
    """bzImages of finished guest kernel builds in the cache, newest first."""
    found = []
    for d in glob.glob(str(cache_dir() / "kernel" / "guest-*")):
        image = Path(d) / "bzImage"
        if (Path(d) / ".done").is_file() and image.is_file():
            found.append((image.stat().st_mtime, str(image)))
    return [p for _, p in sorted(found, reverse=True)]


def initrd_candidates():
    roots = []
    root = _checkout_root()
    if root is not None:
        roots.append(root)
    cwd = Path.cwd()
    if cwd not in roots:
        roots.append(cwd)
    return [str(r / INITRD_NAME) for r in roots]


def find(kernel=None, initrd=None):
    """(kernel, initrd) paths for a sandbox: the arguments when given, else
    from the environment or the default guest's build outputs (see the
    module's doc). Raises GuestNotFoundError saying what is missing."""
    looked = []
    if kernel is None:
        kernel = os.environ.get("MICROVM_KERNEL") or None
    if kernel is None:
        kernels = cached_kernels()
        if kernels:
            kernel = kernels[0]
        else:
            looked.append("kernel: kernel= not given, MICROVM_KERNEL not set, no finished build "
                          "in %s" % (cache_dir() / "kernel" / "guest-*" / "bzImage"))
    if initrd is None:
        initrd = os.environ.get("MICROVM_INITRD") or None
    if initrd is None:
        cands = initrd_candidates()
        initrd = next((c for c in cands if os.path.isfile(c)), None)
        if initrd is None:
            looked.append("initrd: initrd= not given, MICROVM_INITRD not set, none of %s exists"
                          % ", ".join(cands))
    if looked:
        raise GuestNotFoundError("no default guest for the sandbox (%s); %s"
                                 % ("; ".join(looked), BUILD_HINT))
    return kernel, initrd
