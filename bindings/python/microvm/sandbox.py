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

import codecs
import dataclasses
import errno
import os
import threading
import time

from . import _convert as cv
from . import _lib as L
from . import guest
from .agent import Agent, CommandResult, argv_bytes, guest_path
from .errors import CommandExitError, Error
from .vm import VM, State

# tsc=reliable: a restored clone's kvmclock and TSC are set at different
# moments, so the guest's clocksource watchdog would see skew, mark the TSC
# unstable and patch kernel text; with Linux 6.1 that occasionally wedged a
# clone (see the snapshot section of include/microvm.h).
DEFAULT_CMDLINE = "console=ttyS0 reboot=k panic=-1 pci=off i8042.noaux tsc=reliable"
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
        self._handles = set()        # running CommandHandles

    def acquire(self):
        """An agent connection for one request (idle or new)."""
        with self._lock:
            if self._closed:
                raise ValueError("the sandbox is closed")
            agent = self._idle.pop() if self._idle else None
        if agent is None:
            agent = self._connect()
        return agent

    def register(self, handle):
        """Track running CommandHandle @handle (holding its connection) so
        close() stops it; ValueError if the pool is closed."""
        with self._lock:
            if not self._closed:
                self._handles.add(handle)
                return
        raise ValueError("the sandbox is closed")

    def release(self, agent, ok, handle=None):
        """Give @agent back (kept if @ok and the pool is open, else closed)."""
        with self._lock:
            self._handles.discard(handle)
            if ok and not self._closed:
                self._idle.append(agent)
                agent = None
        if agent is not None:
            agent.close()

    def run(self, fn):
        agent = self.acquire()
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
            self.release(agent, ok)

    def drop_idle(self):
        with self._lock:
            idle, self._idle = self._idle, []
        for a in idle:
            a.close()

    def close(self):
        """Refuse new requests, close the idle connections and send SIGKILL
        to the running background commands; returns their handles."""
        with self._lock:
            self._closed = True
            handles = list(self._handles)
        for h in handles:
            h._abort()
        self.drop_idle()
        return handles


def _display_argv(argv):
    return [os.fsdecode(a) if isinstance(a, bytes) else a for a in argv]


class CommandHandle:
    """A command started with ``sbx.commands.run(cmd, background=True)``.

    ``for stream, data in handle:`` yields its output as it comes, stream
    being "stdout" or "stderr" and data str (text=True) or bytes; the
    iteration ends when the command has ended, and may be repeated (it
    starts from the first chunk). ``wait(timeout=)`` returns the
    CommandResult (or raises, as a foreground run does); ``kill(signal=)``
    signals it. The output is collected for the result (at most
    @output_limit bytes per stream, then truncated and flagged) and also
    passed to on_stdout/on_stderr, which run on the handle's thread.

    ``pid`` is None: the agent protocol's STARTED message carries the
    guest pid, but libmicrovm's C API (microvm_agent_exec) does not report
    it. The handle owns one agent connection until the command ends; all
    methods may be called from any thread."""

    def __init__(self, pool, argv, exec_kwargs, *, check, text, on_stdout, on_stderr,
                 output_limit):
        self.argv = _display_argv(argv)
        self.pid = None
        self._pool = pool
        self._check = check
        self._text = text
        self._callbacks = {1: on_stdout, 2: on_stderr}
        self._limit = output_limit
        self._cond = threading.Condition(threading.Lock())
        self._chunks = []                 # (stream name, str or bytes)
        self._size = {1: 0, 2: 0}
        self._truncated = 0
        self._decoders = ({s: codecs.getincrementaldecoder("utf-8")("replace") for s in (1, 2)}
                          if text else None)
        self._watchers = []               # called after every change (AsyncCommandHandle)
        self._done = False
        self._result = None               # CommandResult, unchecked
        self._error = None                # an exception of the run itself
        self._aborted = False
        self._agent = pool.acquire()      # the pool is closed, or connecting failed: raises
        try:
            pool.register(self)
        except BaseException:
            self._agent.close()
            raise
        self._thread = threading.Thread(target=self._run, args=(argv, exec_kwargs),
                                        name="microvm-command", daemon=True)
        self._thread.start()

    # -------------------------------------------------------- the worker

    def _add(self, stream, data, final=False):
        """Collect @data (bytes) of @stream; returns what was added."""
        if self._decoders is not None:
            data = self._decoders[stream].decode(data, final)
        if data:
            with self._cond:
                self._chunks.append(("stdout" if stream == 1 else "stderr", data))
                self._cond.notify_all()
            self._notify()
        return data

    def _watch(self, fn):
        """Call fn() (from any thread, no lock held) after each new chunk and
        when the command ends; returns a function that stops it."""
        with self._cond:
            self._watchers.append(fn)

        def remove():
            with self._cond:
                if fn in self._watchers:
                    self._watchers.remove(fn)
        return remove

    def _notify(self):
        with self._cond:
            watchers = list(self._watchers)
        for fn in watchers:
            try:
                fn()
            except Exception:            # e.g. its event loop is closed
                pass

    def _on_output(self, stream, data):
        room = self._limit - self._size[stream]
        if len(data) > room:
            data = data[:max(room, 0)]
            self._truncated |= L.EXEC_OUT_TRUNCATED if stream == 1 else L.EXEC_ERR_TRUNCATED
        self._size[stream] += len(data)
        data = self._add(stream, data) if data else data
        f = self._callbacks[stream]
        if f is not None and data:
            f(data)
        return False

    def _run(self, argv, kw):
        ok = False
        result = error = None
        try:
            with self._cond:
                if self._aborted:
                    raise ValueError("the sandbox is closed")
            result = self._agent.exec(argv, on_output=self._on_output, **kw)
            ok = True
        except Error as e:
            ok = e.errno not in _BROKEN
            error = e
        except BaseException as e:       # noqa: B902 - an output callback's, kept for wait()
            ok = True
            error = e
        finally:
            if self._decoders is not None:
                for stream in (1, 2):
                    self._add(stream, b"", final=True)
            try:
                self._pool.release(self._agent, ok, self)
            finally:
                with self._cond:
                    if result is not None:
                        out = [d for s, d in self._chunks if s == "stdout"]
                        err = [d for s, d in self._chunks if s == "stderr"]
                        empty = "" if self._text else b""
                        self._result = dataclasses.replace(
                            result, stdout=empty.join(out), stderr=empty.join(err),
                            flags=result.flags | self._truncated)
                    self._error = error
                    self._done = True
                    self._cond.notify_all()
                self._notify()

    def _abort(self):
        """The sandbox closes: SIGKILL the command. This never waits for the
        guest: a hung one is dealt with by destroying the VM, which resets
        the connection."""
        with self._cond:
            self._aborted = True
        try:
            self._kill(9, 2.0)
        except Exception:
            pass

    def _join(self, timeout):
        with self._cond:
            return self._cond.wait_for(lambda: self._done, timeout)

    # ------------------------------------------------------------ public

    @property
    def done(self):
        """True once the command has ended (wait() then returns at once)."""
        with self._cond:
            return self._done

    def wait(self, timeout=None):
        """Wait for the command to end, at most @timeout seconds (None = no
        limit; TimeoutError after it, the command keeps running). Returns
        its CommandResult; raises CommandExitError if it did not exit with
        0 (unless check=False), or the error that stopped it from running
        (e.g. microvm.NotFoundError for a missing program) or an exception
        raised by on_stdout/on_stderr."""
        if timeout is not None:
            cv.timeout_ms(timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: self._done, timeout):
                raise TimeoutError("%s still runs after %s s" % (" ".join(self.argv), timeout))
        if self._error is not None:
            raise self._error
        if self._check and not self._result.ok:
            raise CommandExitError(self._result, self.argv)
        return self._result

    def kill(self, signal=9):
        """Send @signal (default SIGKILL) to the command's process group.
        Returns True if it was sent, False if the command had already
        ended."""
        return self._kill(cv.integer("signal", signal, 1, 64), 10.0)

    def _kill(self, signo, patience):
        end = time.monotonic() + patience
        while True:
            with self._cond:
                if self._done:
                    return False
            try:
                self._agent.kill(signo)
                return True
            except (Error, ValueError) as e:
                # ESRCH: the request is not started yet (or the command just
                # ended); ValueError: the connection was closed meanwhile.
                if isinstance(e, Error) and e.errno != errno.ESRCH:
                    raise
                with self._cond:
                    if self._cond.wait_for(lambda: self._done, 0.01):
                        return False
                if time.monotonic() > end:
                    raise

    def _next(self, index, timeout=None):
        """Chunk number @index, waiting for it; None once the command ended
        without it; TimeoutError after @timeout seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: index < len(self._chunks) or self._done, timeout):
                raise TimeoutError("no output within %s s" % timeout)
            return self._chunks[index] if index < len(self._chunks) else None

    def __iter__(self):
        i = 0
        while True:
            item = self._next(i)
            if item is None:
                return
            i += 1
            yield item

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        """Kill the command if it still runs and wait for it to end."""
        self.kill()
        with self._cond:
            self._cond.wait_for(lambda: self._done)

    def __repr__(self):
        return "<microvm.CommandHandle %r %s>" % (" ".join(self.argv),
                                                  "done" if self.done else "running")


class Commands:
    """sbx.commands: run commands in the sandbox."""

    def __init__(self, pool):
        self._pool = pool

    def run(self, cmd, *, timeout=60.0, env=None, cwd=None, stdin=None, check=True, text=True,
            on_stdout=None, on_stderr=None, background=False,
            output_limit=L.EXEC_OUTPUT_MAX, user=None):
        """Run @cmd (a str is a shell command line, run by /bin/sh -c; a
        list is the argv) and wait for it, at most @timeout seconds (None =
        no limit; then it is killed). @env (a dict) is added to the default
        environment; @cwd; @stdin (bytes/str, a file or an fd); @user
        ("name", "uid", "name:group" or "uid:gid" in the guest; None =
        root). Returns a CommandResult (stdout/stderr as str with
        text=True, else bytes; max_rss_kib, user_us, sys_us its resource
        use). Raises CommandExitError if it exits non-zero, is killed or
        times out, unless check=False; microvm.Error if it cannot run at
        all (NotFoundError for a missing program or an unknown user).
        on_stdout/on_stderr(data) stream the output as it comes (then it is
        not collected).

        With background=True it returns a CommandHandle at once (the
        command runs on its own connection; errors come from its wait()),
        its output is collected (up to @output_limit bytes per stream) and
        also passed to on_stdout/on_stderr; @stdin as a file or fd must
        stay open until the command ends."""
        if isinstance(cmd, str):
            argv = ["/bin/sh", "-c", cmd]
        elif isinstance(cmd, bytes):
            argv = [b"/bin/sh", b"-c", cmd]
        else:
            argv = cmd
        argv = argv_bytes(argv)                   # TypeError/ValueError now
        if user is not None:
            cv.cbytes("user", user, max_len=L.EXEC_USER_MAX, allow_empty=False)
        if env is not None and not isinstance(env, dict):
            raise TypeError("env must be a dict, not %s" % type(env).__name__)
        check = cv.flag("check", check)
        text = cv.flag("text", text)
        background = cv.flag("background", background)
        cv.timeout_ms(timeout)
        for name, f in (("on_stdout", on_stdout), ("on_stderr", on_stderr)):
            if f is not None and not callable(f):
                raise TypeError("%s must be callable" % name)
        if background:
            if cwd is not None:
                guest_path(cwd)
            limit = cv.integer("output_limit", output_limit, 1, 2**63 - 1)
            kw = dict(env=env, merge_env=True, cwd=cwd, stdin=stdin, timeout=timeout,
                      user=user)
            return CommandHandle(self._pool, argv, kw, check=check, text=text,
                                 on_stdout=on_stdout, on_stderr=on_stderr, output_limit=limit)
        on_output = None
        if on_stdout is not None or on_stderr is not None:
            # A character split across chunks is passed whole.
            dec = {s: codecs.getincrementaldecoder("utf-8")("replace") for s in (1, 2)}

            def on_output(stream, data, final=False):
                f = on_stdout if stream == 1 else on_stderr
                if f is not None:
                    if text:
                        data = dec[stream].decode(data, final)
                    if data:
                        f(data)
                return False

        result = self._pool.run(lambda a: a.exec(argv, env=env, merge_env=True, cwd=cwd,
                                                 stdin=stdin, timeout=timeout,
                                                 on_output=on_output, user=user))
        if on_output is not None and text:
            for stream in (1, 2):
                on_output(stream, b"", final=True)    # an incomplete character at the end
        if text:
            result = result.decoded()
        if check and not result.ok:
            raise CommandExitError(result, _display_argv(argv))
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


def _sandbox_nets(net, publish):
    """Sandbox.create's @net and @publish as a list of add_net kwargs."""
    if isinstance(publish, (str, bytes)):
        raise TypeError("publish must be a list of port forwards, not a single string")
    publish = list(publish)
    if net is None or net == "none":
        nets = []
    elif net == "user":
        nets = [{"backend": "user"}]
    elif isinstance(net, str) and net.startswith("tap:") and len(net) > 4:
        nets = [{"backend": "tap", "tap": net[4:]}]
    elif isinstance(net, dict):
        nets = [dict(net)]
    else:
        raise ValueError("net must be None, 'none', 'user', 'tap:NAME' or a dict of "
                         "VM.add_net's arguments, not %r" % (net,))
    if publish:
        if not nets or nets[0].get("backend", "user") != "user":
            raise ValueError("publish needs net='user'")
        nets[0]["ports"] = list(nets[0].get("ports", ())) + publish
    return nets


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
               log=None, log_level=None, net=None, publish=(), library=None):
        """Boot a sandbox: a VM with @cpus vCPUs, @memory_mib MiB, @kernel
        and @initrd (default: $MICROVM_KERNEL and $MICROVM_INITRD, else the
        project's default guest as scripts/guest-artifacts.sh builds it, see
        microvm.guest; microvm.guest.GuestNotFoundError, a FileNotFoundError,
        if there is none) and a vsock device, then wait up to @timeout seconds for its agent. With
        @template (a snapshot directory of such a VM) the sandbox is a
        restored clone instead (cpus, memory_mib, kernel, initrd and cmdline
        then come from the snapshot) and its entropy pool is reseeded.

        @net: None or "none" (no network interface), "user" (user-mode
        networking through passt: the guest gets eth0 configured by DHCP,
        "ip=dhcp" being added to the default command line, and DNS; the
        gateway address reaches the host's loopback), "tap:NAME" (an
        existing TAP interface), or a dict of VM.add_net's arguments.
        @publish: TCP port forwards from the host, "HOSTPORT:GUESTPORT" or
        (host, guest) (net="user" only). A template keeps its network."""
        nets = _sandbox_nets(net, publish)
        cv.integer("cpus", cpus, 1)
        cv.integer("memory_mib", memory_mib, 2)
        ms = cv.timeout_ms(timeout)
        wait = None if ms < 0 else ms / 1000.0
        if template is not None:
            if kernel is not None or initrd is not None or cmdline is not None or nets:
                raise ValueError("template= restores a snapshot: kernel, initrd, cmdline and "
                                 "net come from it")
            vm = VM.restore(template, console_out=console_out, log=log, log_level=log_level,
                            library=library)
        else:
            kernel, initrd = guest.find(kernel, initrd)
            if cmdline is None:
                dhcp = any(n.get("backend", "user") == "user" for n in nets)
                cmdline = DEFAULT_CMDLINE + (" ip=dhcp" if dhcp else "")
            vm = VM(vcpus=cpus, memory_mib=memory_mib, kernel=kernel, cmdline=cmdline,
                    initrd=initrd, console_out=console_out, rng=True, vsock_cid=vsock_cid,
                    nets=nets, log=log, log_level=log_level, library=library)
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

    def reset(self):
        """Return the sandbox, in place, to the snapshot it was created from
        (template=) or last took (snapshot()): its memory, files in tmpfs,
        processes and kernel state are the snapshot's again, and the guest
        reseeds its RNG (VMGENID). Much cheaper than a new clone. Running
        background commands are killed first; do not reset while other
        threads run commands in the sandbox (their requests fail)."""
        with self._pool._lock:
            handles = list(self._pool._handles)
        for h in handles:
            h._abort()
        end = time.monotonic() + 10.0
        for h in handles:
            h._join(max(0.0, end - time.monotonic()))
        self._pool.drop_idle()
        self._vm.reset()

    def kill(self):
        """Stop and destroy the sandbox, releasing everything. Running
        background commands are killed (their wait() reports SIGKILL, or a
        connection error when the VM went first)."""
        handles = self._pool.close()
        if self._vm is not None and self._owns_vm:
            self._vm.close()
        end = time.monotonic() + 10.0
        for h in handles:
            h._join(max(0.0, end - time.monotonic()))

    close = kill

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()


__all__ = ["Sandbox", "Commands", "CommandHandle", "Files", "CommandResult", "CommandExitError"]
