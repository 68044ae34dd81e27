"""microvm.AsyncSandbox: microvm.Sandbox for asyncio.

    async with await microvm.AsyncSandbox.create() as sbx:
        r = await sbx.commands.run("uname -r")
        await sbx.files.write("/tmp/x", "data")

Every blocking call (booting, connecting, a foreground command, a file
transfer, killing) runs in a thread of an executor (the event loop's
default one unless executor= is given); libmicrovm's C calls release the
GIL, so the event loop keeps running meanwhile. Waiting for a background
command and iterating over its output do not hold an executor thread: the
CommandHandle wakes the loop. Cancelling an await does not stop the call
already running in its thread (a foreground command runs on until it ends
or its timeout=); kill the sandbox to stop everything.
"""

import asyncio
import functools

from .sandbox import Sandbox


class _Runner:
    def __init__(self, executor):
        self._executor = executor

    async def call(self, fn, *args, **kwargs):
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))


class AsyncCommandHandle:
    """A background command (``await sbx.commands.run(cmd,
    background=True)``): ``await wait(timeout=)``, ``await kill(signal=)``,
    ``async for stream, data in handle``. ``handle.sync`` is the
    underlying microvm.CommandHandle."""

    def __init__(self, handle, runner):
        self.sync = handle
        self._runner = runner

    pid = property(lambda self: self.sync.pid)
    argv = property(lambda self: self.sync.argv)
    done = property(lambda self: self.sync.done)

    def _event(self):
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()

        def wake():
            loop.call_soon_threadsafe(ev.set)
        return ev, self.sync._watch(wake)

    async def wait(self, timeout=None):
        """As CommandHandle.wait(): the CommandResult, or CommandExitError
        (unless check=False), or the error that stopped the command;
        TimeoutError after @timeout seconds (the command keeps running)."""
        if timeout is not None and (not isinstance(timeout, (int, float)) or timeout < 0):
            raise ValueError("timeout must be None or seconds >= 0, got %r" % (timeout,))
        ev, unwatch = self._event()

        async def ended():
            while True:
                ev.clear()
                if self.sync.done:
                    return
                await ev.wait()
        try:
            await asyncio.wait_for(ended(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("%s still runs after %s s" % (" ".join(self.argv), timeout)) \
                from None
        finally:
            unwatch()
        return self.sync.wait(0)

    async def kill(self, signal=9):
        """As CommandHandle.kill(): True if sent, False if already ended."""
        return await self._runner.call(self.sync.kill, signal)

    async def __aiter__(self):
        h = self.sync
        ev, unwatch = self._event()
        try:
            i = 0
            while True:
                ev.clear()
                with h._cond:
                    if i < len(h._chunks):
                        item = h._chunks[i]
                    elif h._done:
                        return
                    else:
                        item = None
                if item is None:
                    await ev.wait()
                    continue
                i += 1
                yield item
        finally:
            unwatch()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        """Kill the command if it still runs and wait for it to end."""
        await self.kill()
        try:
            await self.wait()
        except Exception:
            pass

    def __repr__(self):
        return "<microvm.AsyncCommandHandle %r %s>" % (" ".join(self.argv),
                                                       "done" if self.done else "running")


class AsyncCommands:
    """sbx.commands of an AsyncSandbox."""

    def __init__(self, commands, runner):
        self._commands = commands
        self._runner = runner

    async def run(self, cmd, **kwargs):
        """As Sandbox.commands.run (same arguments): the CommandResult, or
        with background=True an AsyncCommandHandle."""
        r = await self._runner.call(self._commands.run, cmd, **kwargs)
        if kwargs.get("background"):
            return AsyncCommandHandle(r, self._runner)
        return r


class AsyncFiles:
    """sbx.files of an AsyncSandbox."""

    def __init__(self, files, runner):
        self._files = files
        self._runner = runner

    async def read(self, path, *, max_size=None) -> bytes:
        return await self._runner.call(self._files.read, path, max_size=max_size)

    async def read_text(self, path, encoding="utf-8", errors="strict") -> str:
        return await self._runner.call(self._files.read_text, path, encoding, errors)

    async def write(self, path, data, *, mode=0o644):
        await self._runner.call(self._files.write, path, data, mode=mode)


class AsyncSandbox:
    """A Sandbox for asyncio: create it with ``await AsyncSandbox.create()``
    (same arguments as Sandbox.create, plus executor=) or wrap a Sandbox;
    ``sync`` is the underlying Sandbox."""

    def __init__(self, sandbox, executor=None):
        if not isinstance(sandbox, Sandbox):
            raise TypeError("AsyncSandbox wraps a microvm.Sandbox; use "
                            "await AsyncSandbox.create(...)")
        self.sync = sandbox
        self._runner = _Runner(executor)
        self.commands = AsyncCommands(sandbox.commands, self._runner)
        self.files = AsyncFiles(sandbox.files, self._runner)

    @classmethod
    async def create(cls, *, executor=None, **kwargs):
        """Boot a sandbox in a thread (see Sandbox.create). If this await is
        cancelled, the sandbox is killed as soon as it is up."""
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(executor, functools.partial(Sandbox.create, **kwargs))
        try:
            sbx = await asyncio.shield(fut)
        except asyncio.CancelledError:
            def cleanup(f):
                if not f.cancelled() and f.exception() is None:
                    f.result().kill()
            fut.add_done_callback(cleanup)
            raise
        return cls(sbx, executor)

    vm = property(lambda self: self.sync.vm)
    state = property(lambda self: self.sync.state)
    is_running = property(lambda self: self.sync.is_running)

    async def pause(self):
        await self._runner.call(self.sync.pause)

    async def resume(self):
        await self._runner.call(self.sync.resume)

    async def snapshot(self, path, *, diff=False):
        await self._runner.call(self.sync.snapshot, path, diff=diff)

    async def kill(self):
        """Stop and destroy the sandbox (running background commands are
        killed)."""
        await self._runner.call(self.sync.kill)

    close = kill

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.kill()


__all__ = ["AsyncSandbox", "AsyncCommandHandle", "AsyncCommands", "AsyncFiles"]
