"""microvm.Sandbox: a Linux guest running the guest agent, driven from
Python: run commands, read and write files, pause, snapshot, kill.

    with microvm.Sandbox.create(kernel="bzImage", initrd="initramfs.cpio.gz") as sbx:
        r = sbx.commands.run("echo hello; uname -r")
        print(r.stdout, r.exit_code)
        sbx.files.write("/tmp/x", "data")
        print(sbx.files.read_text("/tmp/x"))

It needs a kernel with virtio-vsock and the project's agent initramfs
(guest/initramfs: the agent is /init).
"""

import errno
import os
import threading

from . import _convert as cv
from .agent import Agent, CommandResult, argv_bytes
from .errors import CommandExitError, Error
from .vm import VM, State

DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux"
DEFAULT_CID = 3

# Errors after which an agent connection is unusable (the library says
# later calls return -ENOTCONN); others (the agent's own errors, such as
# ENOENT for a missing file) leave it usable.
_BROKEN = {errno.ENOTCONN, errno.EPIPE, errno.ECONNRESET, errno.ETIMEDOUT, errno.EPROTO,
           errno.EPROTONOSUPPORT}


class _Pool:
    """Idle agent connections, one per concurrent request (a connection
    serves one request at a time; the agent serves each in its own
    process)."""

    def __init__(self, connect):
        self._connect = connect
        self._idle = []
        self._lock = threading.Lock()
        self._closed = False

    def run(self, fn):
        with self._lock:
            if self._closed:
                raise ValueError("the sandbox is closed")
            agent = self._idle.pop() if self._idle else None
        if agent is None:
            agent = self._connect()
        ok = False
        try:
            result = fn(agent)
            ok = True
            return result
        except Error as e:
            ok = e.errno not in _BROKEN
            raise
        except Exception:
            # Bad arguments (refused before any request) or an exception of
            # an output callback (re-raised once the request completed):
            # the connection is in a clean state.
            ok = True
            raise
        finally:
            with self._lock:
                if ok and not self._closed:
                    self._idle.append(agent)
                    agent = None
            if agent is not None:
                agent.close()

    def drop_idle(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for a in idle:
            a.close()

    def close(self):
        with self._lock:
            self._closed = True
        self.drop_idle()


class Commands:
    """sbx.commands: run commands in the sandbox."""

    def __init__(self, pool):
        self._pool = pool

    def run(self, cmd, *, timeout=60.0, env=None, cwd=None, stdin=None, check=True, text=True,
            on_stdout=None, on_stderr=None):
        """Run @cmd (a str is a shell command line, run by /bin/sh -c; a
        list is the argv) and wait for it, at most @timeout seconds (None =
        no limit; then it is killed). @env (a dict) is added to the default
        environment; @cwd; @stdin (bytes/str, a file or an fd). Returns a
        CommandResult (stdout/stderr as str with text=True, else bytes).
        Raises CommandExitError if it exits non-zero, is killed or times
        out, unless check=False; microvm.Error if it cannot run at all.
        on_stdout/on_stderr(data) stream the output as it comes (then it is
        not collected)."""
        if isinstance(cmd, str):
            argv = ["/bin/sh", "-c", cmd]
        elif isinstance(cmd, bytes):
            argv = [b"/bin/sh", b"-c", cmd]
        else:
            argv = cmd
        argv_bytes(argv)                          # TypeError/ValueError now
        if env is not None and not isinstance(env, dict):
            raise TypeError("env must be a dict, not %s" % type(env).__name__)
        check = cv.flag("check", check)
        text = cv.flag("text", text)
        cv.timeout_ms(timeout)
        on_output = None
        if on_stdout is not None or on_stderr is not None:
            for name, f in (("on_stdout", on_stdout), ("on_stderr", on_stderr)):
                if f is not None and not callable(f):
                    raise TypeError("%s must be callable" % name)

            def on_output(stream, data):
                f = on_stdout if stream == 1 else on_stderr
                if f is not None:
                    f(data.decode("utf-8", "replace") if text else data)
                return False

        result = self._pool.run(lambda a: a.exec(argv, env=env, merge_env=True, cwd=cwd,
                                                 stdin=stdin, timeout=timeout,
                                                 on_output=on_output))
        if text:
            result = result.decoded()
        if check and not result.ok:
            raise CommandExitError(result, [os.fsdecode(a) if isinstance(a, bytes) else a
                                            for a in argv])
        return result


class Files:
    """sbx.files: the sandbox's files (absolute guest paths)."""

    def __init__(self, pool):
        self._pool = pool

    def read(self, path, *, max_size=None) -> bytes:
        return self._pool.run(lambda a: a.get_file(path, max_size))

    def read_text(self, path, encoding="utf-8", errors="strict") -> str:
        return self.read(path).decode(encoding, errors)

    def write(self, path, data, *, mode=0o644):
        """Write @data (str or bytes) to @path, created or truncated."""
        self._pool.run(lambda a: a.put_file(path, data, mode))


class Sandbox:
    """A VM running the guest agent. Create it with Sandbox.create(); close
    it with kill() (or use ``with``)."""

    def __init__(self, vm, connect, owns_vm=True):
        """@vm: a running VM (or None); @connect() returns a new Agent.
        Sandbox.create() is the usual way in."""
        self._vm = vm
        self._owns_vm = owns_vm
        self._pool = _Pool(connect)
        self.commands = Commands(self._pool)
        self.files = Files(self._pool)

    @classmethod
    def create(cls, *, cpus=1, memory_mib=512, kernel=None, initrd=None, cmdline=None,
               template=None, console_out=None, vsock_cid=DEFAULT_CID, timeout=120.0,
               log=None, log_level=None, library=None):
        """Boot a sandbox: a VM with @cpus vCPUs, @memory_mib MiB, @kernel
        and @initrd (default: $MICROVM_KERNEL and $MICROVM_INITRD) and a
        vsock device, then wait up to @timeout seconds for its agent. With
        @template (a snapshot directory of such a VM) the sandbox is a
        restored clone instead (cpus, memory_mib, kernel, initrd and cmdline
        then come from the snapshot) and its entropy pool is reseeded."""
        cv.integer("cpus", cpus, 1)
        cv.integer("memory_mib", memory_mib, 2)
        ms = cv.timeout_ms(timeout)
        wait = None if ms < 0 else ms / 1000.0
        if template is not None:
            if kernel is not None or initrd is not None or cmdline is not None:
                raise ValueError("template= restores a snapshot: kernel, initrd and cmdline "
                                 "come from it")
            vm = VM.restore(template, console_out=console_out, log=log, log_level=log_level,
                            library=library)
        else:
            kernel = kernel if kernel is not None else os.environ.get("MICROVM_KERNEL")
            initrd = initrd if initrd is not None else os.environ.get("MICROVM_INITRD")
            if kernel is None:
                raise ValueError("kernel= is required (or set MICROVM_KERNEL)")
            if initrd is None:
                raise ValueError("initrd= is required: the agent initramfs (or set "
                                 "MICROVM_INITRD)")
            vm = VM(vcpus=cpus, memory_mib=memory_mib, kernel=kernel,
                    cmdline=DEFAULT_CMDLINE if cmdline is None else cmdline, initrd=initrd,
                    console_out=console_out, rng=True, vsock_cid=vsock_cid, log=log,
                    log_level=log_level, library=library)
        try:
            if template is None:
                vm.start()
            first = Agent.connect(vm, timeout=wait)
            sbx = cls(vm, lambda: Agent.connect(vm, timeout=wait))
            sbx._pool._idle.append(first)
            if template is not None:
                sbx._pool.run(lambda a: a.reseed())
            return sbx
        except BaseException:
            vm.close()
            raise

    @property
    def vm(self):
        """The underlying microvm.VM."""
        return self._vm

    @property
    def state(self):
        return self._vm.state

    @property
    def is_running(self):
        return self._vm is not None and not self._vm.closed and self._vm.state == State.RUNNING

    def pause(self):
        self._vm.pause()

    def resume(self):
        self._vm.resume()

    def snapshot(self, path, *, diff=False):
        """Snapshot the sandbox into directory @path, for
        Sandbox.create(template=path). A running sandbox is paused for it
        and resumed after. Agent connections are not part of a snapshot."""
        was_running = self._vm.state == State.RUNNING
        if was_running:
            self._vm.pause()
        try:
            self._vm.snapshot(path, diff=diff)
        finally:
            if was_running:
                self._vm.resume()

    def kill(self):
        """Stop and destroy the sandbox, releasing everything."""
        self._pool.close()
        if self._vm is not None and self._owns_vm:
            self._vm.close()

    close = kill

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


__all__ = ["Sandbox", "Commands", "Files", "CommandResult", "CommandExitError"]
