"""For services muster runs: tell it how they are, and prove they are not hung.

muster gives each service `NOTIFY_SOCKET` (systemd's notify protocol). `ready()` says
the service is ready (with `ready = { notify = true }` that is what makes it healthy),
`status(text)` what it is doing (shown by `muster status` and the API), `stopping()`
that it is shutting down, and `heartbeat()` that it is alive (with `watchdog = "5s"`
a service that sends none for 5 s is restarted). Outside muster (no `NOTIFY_SOCKET`)
each is a no-op that returns False, so the same program runs anywhere.

`Watchdog` heartbeats from an asyncio task: a loop that is blocked (a blocking call in
a coroutine, a deadlock on the loop's thread) runs no task, so the heartbeats stop and
muster restarts the process. `ThreadWatchdog` is its twin for code without a loop: a
thread heartbeats only while the code it watches shows progress.

Sending never blocks: the socket is non-blocking, and a datagram the supervisor has no
room for is dropped (the next one will do).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import socket
import threading
from typing import Any, Callable, Generator, Optional, TypeVar, Union

__all__ = [
    "send", "ready", "status", "heartbeat", "stopping", "reloading", "extend_timeout",
    "under_muster", "watchdog_interval", "Watchdog", "ThreadWatchdog",
]

F = TypeVar("F", bound=Callable[..., Any])

_lock = threading.Lock()
_socket: Optional[socket.socket] = None
_socket_pid = 0


def under_muster() -> bool:
    """Whether this process was given a notify socket (by muster, or systemd)."""
    return bool(os.environ.get("NOTIFY_SOCKET"))


def _address(value: str) -> str:
    # An abstract socket is written "@name"; its address begins with a NUL byte.
    return "\0" + value[1:] if value.startswith("@") else value


def _sender() -> socket.socket:
    """One datagram socket per process (a forked child makes its own)."""
    global _socket, _socket_pid
    with _lock:
        if _socket is None or _socket_pid != os.getpid():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.setblocking(False)
            _socket, _socket_pid = sock, os.getpid()
        return _socket


def send(message: str) -> bool:
    """Sends `message` (newline-separated `KEY=VALUE` lines) to `NOTIFY_SOCKET`.

    True when it was sent; False without a notify socket, or when it could not be
    delivered at once (the supervisor is gone, or its queue is full).
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    data = message.encode("utf-8")
    try:
        _sender().sendto(data, _address(target))
        return True
    except OSError as error:
        if error.errno in (errno.EAGAIN, errno.ECONNREFUSED, errno.ENOENT, errno.ENOBUFS):
            return False
        raise


def ready(status: Optional[str] = None) -> bool:
    """`READY=1`: the service is ready (healthy, with `ready = { notify = true }`); with
    `status`, the `STATUS=` text in the same message."""
    if status is not None:
        return send(f"READY=1\nSTATUS={_one_line(status)}")
    return send("READY=1")


def status(text: str) -> bool:
    """`STATUS=text`: what the service is doing, shown by `muster status` and the API."""
    return send(f"STATUS={_one_line(text)}")


def heartbeat() -> bool:
    """`WATCHDOG=1`: alive. Also touches `$MUSTER_HEARTBEAT_FILE`, which muster takes as
    a heartbeat too: it counts even from a process muster cannot route datagrams from
    (one that left the service's process group with `setsid`)."""
    sent = send("WATCHDOG=1")
    path = os.environ.get("MUSTER_HEARTBEAT_FILE")
    if path:
        try:
            os.utime(path)
            sent = True
        except OSError:
            pass
    return sent


def stopping() -> bool:
    """`STOPPING=1`: the service is shutting down."""
    return send("STOPPING=1")


def reloading() -> bool:
    """`RELOADING=1`: the service is reloading its configuration (until `ready()`)."""
    return send("RELOADING=1")


def extend_timeout(seconds: float) -> bool:
    """`EXTEND_TIMEOUT_USEC`: push the start (or stop) deadline `seconds` from now."""
    return send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_interval() -> Optional[float]:
    """The heartbeat deadline muster set (`WATCHDOG_USEC`), in seconds; None without one."""
    text = os.environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(text)
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


def _one_line(text: str) -> str:
    return " ".join(str(text).splitlines())


def _default_interval(interval: Optional[float]) -> Optional[float]:
    """An explicit interval, else a third of the deadline muster set, else None."""
    if interval is not None:
        if interval <= 0:
            raise ValueError(f"a heartbeat interval must be more than 0 s, not {interval}")
        return float(interval)
    deadline = watchdog_interval()
    return deadline / 3 if deadline is not None else None


_UNSET = object()


class Watchdog:
    """Heartbeats from the running event loop, so a loop that stops running stops them.

        async def main():
            async with muster.Watchdog():
                await serve()

    It sends `WATCHDOG=1` every `interval` seconds (a third of the service's `watchdog`
    deadline by default). The beats come from a task of the loop itself: while a
    coroutine blocks the loop (a `time.sleep`, a lock taken on the loop's thread, a
    synchronous call that never returns), no beat is sent, the deadline passes and
    muster restarts the process, with "no heartbeat for 5s" as the reason.

    `progress`, if given, is called before each beat; the beat is sent only when what
    it returns differs from the last time (a counter of items handled, say), so a loop
    that still runs but whose work has stalled is caught too.

    Without a notify socket or a deadline (`watchdog` not set for the service, no
    `interval`) it does nothing.
    """

    def __init__(
        self,
        interval: Union[float, Callable[[], Any], None] = None,
        *,
        progress: Optional[Callable[[], Any]] = None,
    ) -> None:
        # `Watchdog(items_done)`: a callable given first is the progress to watch.
        if callable(interval):
            interval, progress = None, interval
        self.interval = _default_interval(interval)
        self._progress = progress
        self._last: Any = _UNSET
        self._task: Optional["asyncio.Task[None]"] = None
        #: Heartbeats sent so far.
        self.beats = 0

    @property
    def active(self) -> bool:
        """Whether heartbeats are being sent."""
        return self._task is not None and not self._task.done()

    def start(self) -> "Watchdog":
        """Starts heartbeating from the running loop (call it from a coroutine)."""
        if self.interval is None or not under_muster():
            return self
        if self.active:
            return self
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def stop(self) -> "_Stopped":
        """Stops the heartbeats at once; awaiting the result also waits for the task to
        be gone (`await watchdog.stop()`)."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        return _Stopped(task)

    def __await__(self) -> Generator[Any, None, "Watchdog"]:
        # `await watchdog.start()` (or `await Watchdog()`) reads as naturally as
        # `watchdog.start()`, and does the same.
        self.start()
        return self
        yield  # pragma: no cover - makes this a generator

    async def __aenter__(self) -> "Watchdog":
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _moved(self) -> bool:
        if self._progress is None:
            return True
        value = self._progress()
        moved = bool(value != self._last)
        self._last = value
        return moved

    async def _run(self) -> None:
        assert self.interval is not None
        while True:
            if self._moved() and heartbeat():
                self.beats += 1
            await asyncio.sleep(self.interval)


class _Stopped:
    """What `Watchdog.stop()` gives: awaiting it waits until the task has ended."""

    def __init__(self, task: "Optional[asyncio.Task[None]]") -> None:
        self._task = task

    def __await__(self) -> Generator[Any, None, None]:
        if self._task is None:
            return
        try:
            yield from self._task.__await__()
        except asyncio.CancelledError:
            # The heartbeat task's own cancellation, not the awaiting task's.
            if not self._task.cancelled():
                raise


class ThreadWatchdog:
    """Heartbeats from a thread, for code without an event loop, as long as the code it
    watches makes progress.

        watchdog = muster.ThreadWatchdog().start()
        while True:
            job = jobs.get()
            handle(job)
            watchdog.tick()        # went round once more

    Every `interval` seconds (a third of the `watchdog` deadline by default) the thread
    sends `WATCHDOG=1` if there was progress since it last looked: a `tick()`, a call
    of a function wrapped with `watchdog.watch`, or (with `progress=`) a change in what
    that function returns. Code that hangs (a deadlock, a call that never returns)
    shows none, the beats stop, and muster restarts the process. A thread that beat
    regardless would keep a hung process alive: this one does not.

    Without a notify socket or a deadline it does nothing.
    """

    def __init__(
        self,
        interval: Union[float, Callable[[], Any], None] = None,
        *,
        progress: Optional[Callable[[], Any]] = None,
        name: str = "muster-watchdog",
    ) -> None:
        # `ThreadWatchdog(items_done)`: a callable given first is the progress to watch.
        if callable(interval):
            interval, progress = None, interval
        self.interval = _default_interval(interval)
        self._progress = progress
        self._name = name
        self._last: Any = _UNSET
        self._ticks = 0
        self._seen = -1
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        #: Heartbeats sent so far.
        self.beats = 0

    @property
    def active(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def tick(self) -> None:
        """Progress: the watched code went round once more. Cheap enough for any loop."""
        self._ticks += 1

    def watch(self, function: F) -> F:
        """Wraps `function` so that each call that returns counts as progress."""

        @functools.wraps(function)
        def watched(*args: Any, **kwargs: Any) -> Any:
            result = function(*args, **kwargs)
            self._ticks += 1
            return result

        return watched  # type: ignore[return-value]

    def start(self) -> "ThreadWatchdog":
        if self.interval is None or not under_muster() or self.active:
            return self
        self._stop.clear()
        # The first beat now: the code has just begun.
        self._ticks += 1
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def __enter__(self) -> "ThreadWatchdog":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _moved(self) -> bool:
        moved = self._ticks != self._seen
        self._seen = self._ticks
        if self._progress is not None:
            value = self._progress()
            if value != self._last:
                moved = True
            self._last = value
        return moved

    def _run(self) -> None:
        assert self.interval is not None
        while not self._stop.is_set():
            if self._moved() and heartbeat():
                self.beats += 1
            self._stop.wait(self.interval)
