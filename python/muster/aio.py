"""`AsyncClient`: the supervisor's API as coroutines, for code that runs in an event loop.

It never blocks the loop: each request is a non-blocking socket driven by the running
loop's own `sock_connect`/`sock_sendall`/`sock_recv`, and the only blocking work, reading
the history database for `events`, runs in the loop's default executor. It holds nothing
tied to a loop (no locks, no open connections, no futures), so one `AsyncClient` may be
used from inside any running loop, from several loops in one process (one per thread,
or one `asyncio.run` after another), and made before any loop exists.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import (
    Any, AsyncGenerator, AsyncIterator, Dict, Generator, Generic, List, Optional, Tuple, TypeVar, Union,
    overload,
)

from . import _core, _http
from ._core import Deadline, Patience, Timeout
from ._history import History
from ._locate import PathLike, Place, Request, is_gone, lock_holder, locate, peer_pid
from .errors import APIError, Disconnected, MusterError, NoSupervisor, UnknownService
from .models import Endpoint, Event, LogLine, Service, Status


class AsyncClient:
    """The coroutine twin of `Client`: the same constructor, the same methods, each
    awaited (`events` and `logs` are async iterators)."""

    def __init__(
        self,
        config: Optional[PathLike] = None,
        *,
        file: Optional[PathLike] = None,
        state_dir: Optional[PathLike] = None,
        url: Optional[str] = None,
        token: Optional[str] = None,
        token_file: Optional[PathLike] = None,
        api_timeout: Optional[Timeout] = None,
    ) -> None:
        # `file=` is the CLI's name for the config (`-f/--file`).
        self._request = Request.of(config if config is not None else file, state_dir, url, token, token_file)
        self.api_timeout = _core.api_timeout(api_timeout)
        self.place()

    def __repr__(self) -> str:
        return f"AsyncClient({self.place().where!r})"

    def place(self) -> Place:
        """Where the supervisor is looked for now (reads the config file, at most 4 MiB,
        and the lock of its runtime directory)."""
        return locate(self._request)

    # ---- services -------------------------------------------------------------------

    @overload
    async def status(self) -> Status: ...

    @overload
    async def status(self, name: str) -> Service: ...

    async def status(self, name: Optional[str] = None) -> Union[Status, Service]:
        """Every service; with a name, that service."""
        if name is not None:
            return await self.service(name)
        return Status.from_json(await self._call("GET", "/v1/services"))

    async def services(self) -> List[Service]:
        return (await self.status()).services

    async def service(self, name: str) -> Service:
        return Service.from_json(await self._call("GET", _core.service_path(name)))

    async def ensure(self, name: str, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Endpoint:
        """Makes `name` healthy and says where it is; see `Client.ensure`."""
        path, wait = _core.waited_path(name, "ensure", timeout)
        return Endpoint.of(Service.from_json(await self._call("POST", path, wait)))

    async def start(self, name: str, *, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Service:
        path, seconds = _core.waited_path(name, "start", timeout, wait)
        return Service.from_json(await self._call("POST", path, seconds))

    async def restart(self, name: str, *, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Service:
        path, seconds = _core.waited_path(name, "restart", timeout, wait)
        return Service.from_json(await self._call("POST", path, seconds))

    async def stop(self, name: str) -> Service:
        return Service.from_json(await self._call("POST", _core.service_path(name, "stop"), _core.STOP_WAIT))

    async def cluster(self) -> Dict[str, Any]:
        """See `Client.cluster`."""
        return dict(await self._call("GET", "/v1/cluster"))

    async def cluster_services(self) -> Dict[str, Any]:
        """See `Client.cluster_services`."""
        return dict(await self._call("GET", "/v1/cluster/services"))

    async def scale(self, name: str, replicas: int) -> List[str]:
        path = _core.scale_path(name, replicas)
        return list((await self._call("POST", path, _core.STOP_WAIT)).get("instances", []))

    async def reload(self) -> Dict[str, List[str]]:
        answer = await self._call("POST", "/v1/reload", _core.STOP_WAIT)
        return dict(answer.get("reloaded", {}))

    async def shutdown(self, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> None:
        place = self.place()
        head, body, pid = await self._exchange(place, "POST", "/v1/shutdown", Patience(self.api_timeout))
        _core.document("POST", "/v1/shutdown", head, body)
        if pid is None and place.state_dir is not None:
            pid = lock_holder(place.state_dir)
        if not wait:
            return
        _, seconds = _http.duration_query(timeout)
        deadline = time.monotonic() + seconds
        while True:
            if pid is not None:
                if is_gone(pid):
                    return
            elif not await _connectable(place):
                return
            if time.monotonic() >= deadline:
                raise _core.not_exited(place, seconds, pid)
            await asyncio.sleep(0.02)

    async def is_running(self) -> bool:
        try:
            await self.status()
        except MusterError:
            return False
        return True

    # ---- events and logs --------------------------------------------------------------

    async def last_event_id(self) -> int:
        place = self.place()
        if place.state_dir is not None:
            state_dir = place.state_dir

            def read() -> Optional[int]:
                history = History.open(state_dir)
                if history is None:
                    return None
                with history:
                    return history.last_id()

            found: Optional[int] = await _in_executor(read)
            if found is not None:
                return found
        events = (await self._call("GET", "/v1/events")).get("events") or []
        return max((int(e["id"]) for e in events), default=0)

    def events(
        self,
        since: Optional[int] = None,
        follow: bool = False,
        *,
        service: Optional[str] = None,
        kind: Optional[str] = None,
        reconnect: Optional[float] = None,
    ) -> "Results[Event]":
        """`async for event in client.events(...)`; see `Client.events`. Without
        `follow`, `await client.events()` gives them as a list."""
        return Results(self._events(_core.since_id(since), follow, service, kind, reconnect), follow)

    async def _events(
        self,
        last: int,
        follow: bool,
        service: Optional[str],
        kind: Optional[str],
        reconnect: Optional[float],
    ) -> AsyncGenerator[Event, None]:
        if not follow:
            async for event in self._past(last, service, kind):
                yield event
            return
        opened: Optional[Tuple[_Stream, Optional[History], int, str]] = await self._open_follow(last, service, kind)
        backoff = _core.Backoff()
        while True:
            if opened is not None:
                stream, history, top, path = opened
                opened = None
                backoff.reset()
                try:
                    if history is not None:
                        async for event in _stored(history, last, top, service, kind):
                            last = event.id
                            yield event
                        history.close()
                        history = None
                    last = max(last, top)
                    async for data in stream.server_sent_events():
                        event = _core.event_of(data, path)
                        if event.id <= last:
                            continue
                        last = event.id
                        yield event
                finally:
                    stream.close()
                    if history is not None:
                        history.close()
            # The supervisor went away: wait for the next one, then go on after `last`.
            deadline = _core.reconnect_deadline(reconnect)
            while opened is None:
                if _core.expired(deadline):
                    return
                await asyncio.sleep(backoff.next())
                try:
                    opened = await self._open_follow(last, service, kind)
                except APIError:
                    raise
                except MusterError:
                    continue

    async def _past(self, last: int, service: Optional[str], kind: Optional[str]) -> AsyncIterator[Event]:
        place = self.place()
        history = await _open_history(place)
        if history is None:
            answer = await self._call("GET", _core.events_path(last, False, service, kind))
            for doc in answer.get("events") or []:
                yield Event.from_json(doc)
            return
        try:
            if service is not None and not await _in_executor(history.knows_service, service):
                await self._check_service(service)
            async for event in _stored(history, last, None, service, kind):
                yield event
        finally:
            history.close()

    async def _open_follow(
        self, last: int, service: Optional[str], kind: Optional[str]
    ) -> Tuple["_Stream", Optional[History], int, str]:
        place = self.place()
        history = await _open_history(place)
        try:
            top = max(await _in_executor(history.last_id) if history is not None else last, last)
            path = _core.events_path(top, True, service, kind)
            return await self._stream(place, path), history, top, path
        except BaseException:
            if history is not None:
                history.close()
            raise

    async def _check_service(self, service: str) -> None:
        try:
            await self._call("GET", _core.service_path(service))
        except NoSupervisor:
            pass

    def logs(self, name: Optional[str] = None, tail: int = 100, follow: bool = False) -> "Results[LogLine]":
        """`async for line in client.logs(...)`; see `Client.logs`. Without `follow`,
        `await client.logs(name)` gives them as a list."""
        return Results(self._logs(_core.logs_path(name, tail, follow), follow), follow)

    async def _logs(self, path: str, follow: bool) -> AsyncGenerator[LogLine, None]:
        place = self.place()
        if not follow:
            head, body, _ = await self._exchange(place, "GET", path, Patience(self.api_timeout))
            if not head.ok:
                raise await self._unknown(place, _core.error_of("GET", path, head, body))
            for doc in _core.json_lines(body):
                yield LogLine.from_json(doc)
            return
        stream = await self._stream(place, path)
        try:
            async for line in stream.lines():
                if line.strip():
                    yield LogLine.from_json(json.loads(line))
        finally:
            stream.close()

    # ---- requests -----------------------------------------------------------------------

    async def _call(self, method: str, path: str, wait: float = 0.0) -> Any:
        place = self.place()
        head, body, _ = await self._exchange(place, method, path, Patience(self.api_timeout, wait))
        try:
            return _core.document(method, path, head, body)
        except UnknownService as error:
            raise await self._unknown(place, error) from None

    async def _unknown(self, place: Place, error: Exception) -> Exception:
        if isinstance(error, UnknownService):
            try:
                head, body, _ = await self._exchange(place, "GET", "/v1/services", Patience(self.api_timeout))
                names: Optional[List[str]] = Status.from_json(
                    _core.document("GET", "/v1/services", head, body)
                ).names
            except MusterError:
                names = None
            _core.suggest(error, names)
        return error

    async def _exchange(
        self, place: Place, method: str, path: str, patience: Patience
    ) -> Tuple[_http.Head, bytes, Optional[int]]:
        deadline = Deadline(place, patience)
        sock = await _connect(place, deadline)
        try:
            deadline.pid = peer_pid(sock)
            await _send(sock, deadline, _http.request_bytes(method, path, place.host_header, place.token))
            parser = _http.ResponseParser(_core.asked(method, path))
            body = bytearray()
            while not parser.done:
                data = await _recv(sock, deadline)
                body.extend(b"".join(parser.feed(data) if data else parser.eof()))
                if not data and not parser.done:
                    raise Disconnected(_http.gone(parser.asked))
            assert parser.head is not None
            return parser.head, bytes(body), deadline.pid
        finally:
            sock.close()

    async def _stream(self, place: Place, path: str) -> "_Stream":
        deadline = Deadline(place, Patience(self.api_timeout))
        sock = await _connect(place, deadline)
        try:
            deadline.pid = peer_pid(sock)
            await _send(sock, deadline, _http.request_bytes("GET", path, place.host_header, place.token))
            parser = _http.ResponseParser(_core.asked("GET", path))
            pieces: List[bytes] = []
            while parser.head is None:
                data = await _recv(sock, deadline)
                pieces.extend(parser.feed(data) if data else parser.eof())
            head = parser.head
            if not head.ok:
                body = bytearray(b"".join(pieces))
                while not parser.done:
                    data = await _recv(sock, deadline)
                    body.extend(b"".join(parser.feed(data) if data else parser.eof()))
                    if not data:
                        break
                raise await self._unknown(place, _core.error_of("GET", path, head, bytes(body)))
        except BaseException:
            sock.close()
            raise
        return _Stream(sock, parser, pieces)


T = TypeVar("T")


class Results(Generic[T]):
    """What `events` and `logs` give: an async iterator, which can also be awaited for
    a list when it ends (without `follow`)."""

    def __init__(self, items: AsyncGenerator[T, None], follow: bool) -> None:
        self._items = items
        self._follow = follow

    def __aiter__(self) -> "Results[T]":
        return self

    async def __anext__(self) -> T:
        return await self._items.__anext__()

    async def aclose(self) -> None:
        await self._items.aclose()

    def __await__(self) -> Generator[Any, None, List[T]]:
        return self._all().__await__()

    async def _all(self) -> List[T]:
        if self._follow:
            raise TypeError("a follow does not end: read it with `async for`")
        return [item async for item in self._items]


class _Stream:
    """A streamed answer read from the running loop."""

    def __init__(self, sock: socket.socket, parser: _http.ResponseParser, pieces: List[bytes]) -> None:
        self._sock = sock
        self._parser = parser
        self._pieces = pieces

    def close(self) -> None:
        self._sock.close()

    async def pieces(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            yield piece
        self._pieces = []
        loop = asyncio.get_running_loop()
        while not self._parser.done:
            try:
                data = await loop.sock_recv(self._sock, 65536)
            except (ConnectionResetError, BrokenPipeError):
                return
            try:
                for piece in self._parser.feed(data) if data else self._parser.eof():
                    yield piece
            except Disconnected:
                return
            if not data:
                return

    async def lines(self) -> AsyncIterator[str]:
        splitter = _http.Lines()
        async for piece in self.pieces():
            for line in splitter.feed(piece):
                yield line
        for line in splitter.rest():
            yield line

    async def server_sent_events(self) -> AsyncIterator[str]:
        reader = _http.ServerSentEvents()
        async for line in self.lines():
            data = reader.feed(line)
            if data is not None:
                yield data


async def _in_executor(function: Any, *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, function, *args)


async def _open_history(place: Place) -> Optional[History]:
    if place.state_dir is None:
        return None
    history: Optional[History] = await _in_executor(History.open, place.state_dir)
    return history


async def _stored(
    history: History, after: int, upto: Optional[int], service: Optional[str], kind: Optional[str]
) -> AsyncIterator[Event]:
    while True:
        page = await _in_executor(history.page, after, upto, service, kind)
        if not page:
            return
        for event in page:
            yield event
        after = page[-1].id


async def _connectable(place: Place) -> bool:
    try:
        sock = await _connect(place, Deadline(place, Patience(1.0)))
    except MusterError:
        return False
    sock.close()
    return True


async def _connect(place: Place, deadline: Deadline) -> socket.socket:
    loop = asyncio.get_running_loop()
    if place.tcp:
        try:
            infos = await asyncio.wait_for(
                loop.getaddrinfo(place.host, place.port, type=socket.SOCK_STREAM),
                max(deadline.left(), 0.001),
            )
        except socket.gaierror as error:
            raise _core.no_supervisor(place, error) from None
        except asyncio.TimeoutError:
            raise deadline.no_answer(deadline.patience.total) from None
        last: Optional[OSError] = None
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), max(deadline.left(), 0.001))
                return sock
            except asyncio.TimeoutError:
                sock.close()
                raise deadline.no_answer(deadline.patience.total) from None
            except OSError as error:
                sock.close()
                last = error
        if isinstance(last, ConnectionRefusedError) or last is None:
            raise _core.no_supervisor(place, last) from None
        raise MusterError(f"cannot connect to {place.where}: {last}") from None
    assert place.socket is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    while True:
        try:
            # A unix socket connects at once, or refuses with EAGAIN when its listen
            # queue is full: never a wait inside the call.
            sock.connect(place.socket)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            raise _core.no_supervisor(place, error) from None
        except (BlockingIOError, InterruptedError):
            if deadline.left() <= 0:
                sock.close()
                pid = lock_holder(place.state_dir) if place.state_dir else None
                raise deadline.no_answer(deadline.patience.total, pid) from None
            await asyncio.sleep(0.01)
        except OSError as error:
            sock.close()
            raise MusterError(f"cannot connect to {place.socket}: {error}") from None


async def _send(sock: socket.socket, deadline: Deadline, data: bytes) -> None:
    loop = asyncio.get_running_loop()
    send = asyncio.ensure_future(loop.sock_sendall(sock, data))
    try:
        while True:
            done, _ = await asyncio.wait({send}, timeout=max(deadline.slice(), 0.001))
            if done:
                try:
                    send.result()
                except (BrokenPipeError, ConnectionResetError) as error:
                    raise Disconnected(f"the supervisor closed the connection before it had the request ({error}); it stopped or crashed meanwhile") from None
                return
            deadline.check()
    finally:
        if not send.done():
            send.cancel()


async def _recv(sock: socket.socket, deadline: Deadline) -> bytes:
    loop = asyncio.get_running_loop()
    deadline.check()
    receive = asyncio.ensure_future(loop.sock_recv(sock, 65536))
    try:
        while True:
            # Woken by the bytes, or every so often to look at the deadline and at
            # whether the supervisor was stopped.
            done, _ = await asyncio.wait({receive}, timeout=max(deadline.slice(), 0.001))
            if done:
                try:
                    return receive.result()
                except ConnectionResetError:
                    return b""
            deadline.check()
    finally:
        if not receive.done():
            receive.cancel()
