"""A non-root user in the kvm group, the way a host gives one access to KVM,
made inside the emulated machine (or a test host) by root for the tests of
the sandbox tool run least-privileged (test_sandbox_privs.py, and
tests/linux/net):

- a group "kvm" and a user "sbxuser" in it: /etc/group and /etc/passwd are
  copies with one line added, bind-mounted over the real ones (the emulated
  machine's root file system is the host's, read-only; a bind mount there
  changes nothing on the host) and unmounted afterwards;
- /dev/kvm root:kvm 0660, as udev makes it (restored afterwards);
- a directory the user can read (0755) holding a copy of the guest kernel
  (the cached one lives in root's home, 0700), and a home directory.

`as_user(cmd)` is `cmd` run by that user with its groups (setpriv
--init-groups: its groups as initgroups(3) reads them from /etc/group).
"""
import grp
import os
import pwd
import shutil
import subprocess
import tempfile

NAME = "sbxuser"


def _free_id(taken, start):
    n = start
    while n in taken:
        n += 1
    return n


class KvmUser:
    def __init__(self, kernel):
        self.kernel_src = kernel
        self.mounts = []
        self.kvm_stat = None

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="microvm-kvmuser-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        try:  # a host's own kvm group, or a new one
            self.gid = grp.getgrnam("kvm").gr_gid
        except KeyError:
            self.gid = _free_id({g.gr_gid for g in grp.getgrall()}, 990)
        self.uid = _free_id({p.pw_uid for p in pwd.getpwall()}, 4242)
        self.home = os.path.join(self.dir, "home")
        self._add_lines()
        self.kvm_stat = os.stat("/dev/kvm")
        os.chown("/dev/kvm", 0, self.gid)
        os.chmod("/dev/kvm", 0o660)
        self.kernel = os.path.join(self.dir, "bzImage")
        shutil.copy(self.kernel_src, self.kernel)
        os.chmod(self.kernel, 0o644)
        os.makedirs(self.home, mode=0o700)
        os.chown(self.home, self.uid, self.uid)
        return self

    def _bind_copy(self, path, line):
        copy = os.path.join(self.dir, os.path.basename(path))
        with open(path) as f:
            text = f.read()
        with open(copy, "w") as f:
            f.write(text + ("" if text.endswith("\n") else "\n") + line + "\n")
        os.chmod(copy, 0o644)
        subprocess.run(["mount", "--bind", copy, path], check=True)
        self.mounts.append(path)

    def _add_lines(self):
        self._bind_copy("/etc/group", "kvm:x:%d:%s" % (self.gid, NAME))
        self._bind_copy("/etc/passwd", "%s:x:%d:%d::%s:/bin/sh" % (NAME, self.uid, self.uid,
                                                                   self.home))

    def __exit__(self, *exc):
        if self.kvm_stat:
            os.chown("/dev/kvm", self.kvm_stat.st_uid, self.kvm_stat.st_gid)
            os.chmod("/dev/kvm", self.kvm_stat.st_mode & 0o7777)
        for m in reversed(self.mounts):
            subprocess.run(["umount", m])
        shutil.rmtree(self.dir, ignore_errors=True)

    def as_user(self, cmd):
        return ["setpriv", "--reuid", str(self.uid), "--regid", str(self.uid),
                "--init-groups", "--", *cmd]

    def env(self, **extra):
        e = dict(os.environ, HOME=self.home, USER=NAME, LOGNAME=NAME)
        e.pop("XDG_CACHE_HOME", None)
        e.update(extra)
        return e

    def mkdir(self, name):
        """A directory of the user's, in the readable one."""
        d = os.path.join(self.dir, name)
        os.makedirs(d, mode=0o755)
        os.chown(d, self.uid, self.uid)
        return d
