"""`Client`: the supervisor's API from ordinary (blocking) Python code.

One request per connection, so one `Client` may be used from any number of threads at
once, and from processes forked after it was made. Nothing in it touches asyncio: it
works the same in a script, in a thread, or called from inside a running event loop
(where it holds up that loop while it waits, as any blocking call does; `AsyncClient`
is the one for coroutines).

Every wait has a deadline: a plain request `api_timeout` (`MUSTER_TIMEOUT`, 10 s),
`ensure`, `start` and `restart` their `timeout` on top. A supervisor that does not
answer in time is `NoAnswer`, naming its pid, and `kill -CONT PID` when it is stopped.
"""

from __future__ import annotations

import socket
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union, overload

from . import _core, _http
from ._core import Deadline, Patience, Timeout
from ._history import History
from ._locate import PathLike, Place, Request, is_gone, lock_holder, locate, peer_pid
from .errors import APIError, Disconnected, MusterError, NoSupervisor, UnknownService
from .models import Endpoint, Event, LogLine, Service, Status


class Client:
    """A client of one supervisor.

    Found the way the `muster` command finds it: `Client()` uses `MUSTER_STATE_DIR`,
    `MUSTER_FILE`, the supervisor this process runs under, or `./muster.toml`;
    `Client("path/to/muster.toml")` (or `file=`, or its directory) goes through that
    config (a state directory, its socket or an `http://` URL work there too);
    `Client(state_dir=".muster")` straight to a state directory;
    `Client(url="http://127.0.0.1:7070", token="...")` to the optional TCP listener.
    Where to look is settled when it is made; the state directory that leads to is
    worked out at each request, so a client made before the supervisor started, or kept
    across a restart, finds the one running now.
    """

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
        #: Seconds a plain request waits for the supervisor's answer.
        self.api_timeout = _core.api_timeout(api_timeout)
        # Resolved now, so a wrong path or URL is said at once.
        self.place()

    def __repr__(self) -> str:
        return f"Client({self.place().where!r})"

    def place(self) -> Place:
        """Where the supervisor is looked for now."""
        return locate(self._request)

    # ---- services -------------------------------------------------------------------

    @overload
    def status(self) -> Status: ...

    @overload
    def status(self, name: str) -> Service: ...

    def status(self, name: Optional[str] = None) -> Union[Status, Service]:
        """Every service, and where the supervisor is in its life; with a name, that
        service (as `service(name)`), as `muster status [NAME]` does."""
        if name is not None:
            return self.service(name)
        return Status.from_json(self._call("GET", "/v1/services"))

    def services(self) -> List[Service]:
        return self.status().services

    def service(self, name: str) -> Service:
        """One service; `UnknownService` (with the nearest names) if there is none."""
        return Service.from_json(self._call("GET", _core.service_path(name)))

    def ensure(self, name: str, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Endpoint:
        """Makes `name` healthy and says where it is: at once when it is, joining a start
        in progress, or starting it (and what it needs). However many threads, processes
        and event loops ask at once, it is started once.

        `timeout` is seconds, or a duration such as "5m". Raises `NotHealthy` (it failed:
        `cause` and `log_tail` say why), `Timeout` (not healthy in time), `UnknownService`,
        `ShuttingDown`, `NoSupervisor`.
        """
        path, wait = _core.waited_path(name, "ensure", timeout)
        return Endpoint.of(Service.from_json(self._call("POST", path, wait)))

    def start(self, name: str, *, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Service:
        """Starts `name` and what it needs; with `wait`, returns once it is healthy (a
        one-shot: completed) and raises `NotHealthy` if it failed."""
        path, seconds = _core.waited_path(name, "start", timeout, wait)
        return Service.from_json(self._call("POST", path, seconds))

    def restart(self, name: str, *, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> Service:
        """Restarts `name` (starts it if it never ran); with `wait`, returns once the new
        run is healthy."""
        path, seconds = _core.waited_path(name, "restart", timeout, wait)
        return Service.from_json(self._call("POST", path, seconds))

    def stop(self, name: str) -> Service:
        """Stops `name`; returns once it is down."""
        return Service.from_json(self._call("POST", _core.service_path(name, "stop"), _core.STOP_WAIT))

    def cluster(self) -> Dict[str, Any]:
        """`[cluster]`: the hosts (`name`, `address`, `alive`, `pid`) and the singletons
        (`name`, `owner`, `fence`, `endpoint`, `state`), as `muster cluster --json`
        prints them. Raises `NoCluster` without `[cluster]`, `EtcdUnavailable` when etcd
        does not answer."""
        return dict(self._call("GET", "/v1/cluster"))

    def cluster_services(self) -> Dict[str, Any]:
        """`[cluster]`: every host's services as each published them (`muster status
        --cluster --json`)."""
        return dict(self._call("GET", "/v1/cluster/services"))

    def scale(self, name: str, replicas: int) -> List[str]:
        """Runs `replicas` instances of `name` (a service with `replicas`); returns
        their names (`web.0`, ...) once extra ones have stopped. Raises `Refused` when
        the service has no replicas or the config cannot run that many."""
        path = _core.scale_path(name, replicas)
        return list(self._call("POST", path, _core.STOP_WAIT).get("instances", []))

    def reload(self) -> Dict[str, List[str]]:
        """Applies the edited config: `{"restarted", "added", "removed", "unchanged"}`.
        An invalid config changes nothing and raises `InvalidConfig` (its `report` has
        the diagnostics)."""
        answer = self._call("POST", "/v1/reload", _core.STOP_WAIT)
        return dict(answer.get("reloaded", {}))

    def shutdown(self, wait: bool = True, timeout: Timeout = _core.DEFAULT_TIMEOUT) -> None:
        """Stops every service in reverse order and the supervisor; with `wait`, returns
        once the supervisor has exited (`NoAnswer` if it has not within `timeout`)."""
        place = self.place()
        pid = self._shutdown(place)
        if not wait:
            return
        _, seconds = _http.duration_query(timeout)
        deadline = time.monotonic() + seconds
        while True:
            if pid is not None:
                if is_gone(pid):
                    return
            elif not _connectable(place):
                return
            if time.monotonic() >= deadline:
                raise _core.not_exited(place, seconds, pid)
            time.sleep(0.02)

    def _shutdown(self, place: Place) -> Optional[int]:
        head, body, pid = self._exchange(place, "POST", "/v1/shutdown", Patience(self.api_timeout))
        _core.document("POST", "/v1/shutdown", head, body)
        return pid if pid is not None else (lock_holder(place.state_dir) if place.state_dir else None)

    def is_running(self) -> bool:
        """Whether a supervisor answers."""
        try:
            self.status()
        except MusterError:
            return False
        return True

    # ---- events and logs --------------------------------------------------------------

    def last_event_id(self) -> int:
        """The id of the newest event recorded: `events(since=client.last_event_id(),
        follow=True)` follows only what happens from now on."""
        place = self.place()
        if place.state_dir is not None:
            history = History.open(place.state_dir)
            if history is not None:
                with history:
                    return history.last_id()
        events = self._call("GET", "/v1/events").get("events") or []
        return max((int(e["id"]) for e in events), default=0)

    def events(
        self,
        since: Optional[int] = None,
        follow: bool = False,
        *,
        service: Optional[str] = None,
        kind: Optional[str] = None,
        reconnect: Optional[float] = None,
    ) -> Iterator[Event]:
        """The events after id `since` (all of them by default), oldest first; with
        `follow`, then each one as it happens.

        Locally the past comes from the history database, as `muster events` reads it,
        with or without a supervisor; over TCP from the supervisor's memory (its last
        10,000). A follow survives the supervisor's restart: it waits for the next one
        (up to `reconnect` seconds; None waits for ever, 0 ends the follow) and goes on
        after the last event it gave, none lost, none twice. It raises `NoSupervisor` if
        none runs when it starts.
        """
        last = _core.since_id(since)
        if not follow:
            return self._past(last, service, kind)
        # The follow is opened now: once `events` returns, nothing that happens is missed,
        # and a supervisor that is not there is said at once.
        return self._follow(last, service, kind, reconnect, self._open_follow(last, service, kind))

    def _past(self, last: int, service: Optional[str], kind: Optional[str]) -> Iterator[Event]:
        place = self.place()
        history = History.open(place.state_dir) if place.state_dir is not None else None
        if history is None:
            for doc in self._call("GET", _core.events_path(last, False, service, kind)).get("events") or []:
                yield Event.from_json(doc)
            return
        with history:
            if service is not None and not history.knows_service(service):
                self._check_service(service)
            yield from _stored(history, last, None, service, kind)

    def _open_follow(
        self, last: int, service: Optional[str], kind: Optional[str]
    ) -> "Tuple[_Stream, Optional[History], int, str]":
        """A follow's stream from the supervisor running now, and where the history
        database (if this client can read it) hands over to it."""
        place = self.place()
        history = History.open(place.state_dir) if place.state_dir is not None else None
        try:
            # What is stored up to `top` is read from the database; the stream begins
            # after it, so it goes back no further than the supervisor's memory.
            top = max(history.last_id() if history is not None else last, last)
            path = _core.events_path(top, True, service, kind)
            return self._stream(place, path), history, top, path
        except BaseException:
            if history is not None:
                history.close()
            raise

    def _follow(
        self,
        last: int,
        service: Optional[str],
        kind: Optional[str],
        reconnect: Optional[float],
        opened: "Optional[Tuple[_Stream, Optional[History], int, str]]",
    ) -> Iterator[Event]:
        backoff = _core.Backoff()
        while True:
            if opened is not None:
                stream, history, top, path = opened
                opened = None
                backoff.reset()
                try:
                    with stream:
                        if history is not None:
                            for event in _stored(history, last, top, service, kind):
                                last = event.id
                                yield event
                            history.close()
                            history = None
                        last = max(last, top)
                        for data in stream.server_sent_events():
                            event = _core.event_of(data, path)
                            if event.id <= last:
                                continue
                            last = event.id
                            yield event
                finally:
                    if history is not None:
                        history.close()
            # The supervisor went away: wait for the next one, then go on after `last`.
            deadline = _core.reconnect_deadline(reconnect)
            while opened is None:
                if _core.expired(deadline):
                    return
                time.sleep(backoff.next())
                try:
                    opened = self._open_follow(last, service, kind)
                except APIError:
                    raise
                except MusterError:
                    # Not there yet, or still on its way out: try again.
                    continue

    def _check_service(self, service: str) -> None:
        """Raises `UnknownService` when a running supervisor does not know `service`."""
        try:
            self._call("GET", _core.service_path(service))
        except NoSupervisor:
            pass

    def logs(self, name: Optional[str] = None, tail: int = 100, follow: bool = False) -> Iterator[LogLine]:
        """The last `tail` lines of `name`'s output (of every service, by time, without a
        name) that the supervisor keeps in memory (`logs.tail-lines`, 1,000 by default;
        the files in STATE_DIR/logs hold the rest); with `follow`, then each new line,
        until the supervisor stops."""
        path = _core.logs_path(name, tail, follow)
        return self._logs(path, follow)

    def _logs(self, path: str, follow: bool) -> Iterator[LogLine]:
        if follow:
            # Opened now: every line printed once `logs` has returned is in it.
            return self._followed_lines(self._stream(self.place(), path))
        return self._past_lines(path)

    def _past_lines(self, path: str) -> Iterator[LogLine]:
        place = self.place()
        head, body, _ = self._exchange(place, "GET", path, Patience(self.api_timeout))
        if not head.ok:
            raise self._unknown(place, _core.error_of("GET", path, head, body))
        for doc in _core.json_lines(body):
            yield LogLine.from_json(doc)

    @staticmethod
    def _followed_lines(stream: "_Stream") -> Iterator[LogLine]:
        import json

        with stream:
            for line in stream.lines():
                if line.strip():
                    yield LogLine.from_json(json.loads(line))

    # ---- requests -----------------------------------------------------------------------

    def _call(self, method: str, path: str, wait: float = 0.0) -> Any:
        place = self.place()
        head, body, _ = self._exchange(place, method, path, Patience(self.api_timeout, wait))
        try:
            return _core.document(method, path, head, body)
        except UnknownService as error:
            raise self._unknown(place, error) from None

    def _unknown(self, place: Place, error: Exception) -> Exception:
        if isinstance(error, UnknownService):
            try:
                head, body, _ = self._exchange(place, "GET", "/v1/services", Patience(self.api_timeout))
                names = Status.from_json(_core.document("GET", "/v1/services", head, body)).names
            except MusterError:
                names = None
            _core.suggest(error, names)
        return error

    def _exchange(
        self, place: Place, method: str, path: str, patience: Patience
    ) -> Tuple[_http.Head, bytes, Optional[int]]:
        """One request, its whole answer: (head, body, the supervisor's pid)."""
        deadline = Deadline(place, patience)
        sock = _connect(place, deadline)
        try:
            deadline.pid = peer_pid(sock)
            _send(sock, deadline, _http.request_bytes(method, path, place.host_header, place.token))
            parser = _http.ResponseParser(_core.asked(method, path))
            head, body = _http.collect(parser, _receive(sock, deadline))
            return head, body, deadline.pid
        finally:
            sock.close()

    def _stream(self, place: Place, path: str) -> "_Stream":
        """A GET whose answer streams, once its head has come within the API timeout; an
        error answer is raised."""
        deadline = Deadline(place, Patience(self.api_timeout))
        sock = _connect(place, deadline)
        try:
            deadline.pid = peer_pid(sock)
            _send(sock, deadline, _http.request_bytes("GET", path, place.host_header, place.token))
            parser = _http.ResponseParser(_core.asked("GET", path))
            pieces: List[bytes] = []
            while parser.head is None:
                data = _recv(sock, deadline)
                pieces.extend(parser.feed(data) if data else parser.eof())
            head = parser.head
            if not head.ok:
                _, body = _http.collect(parser, _receive(sock, deadline), b"".join(pieces))
                raise self._unknown(place, _core.error_of("GET", path, head, body))
        except BaseException:
            sock.close()
            raise
        sock.settimeout(None)
        return _Stream(sock, parser, pieces)


class _Stream:
    """An answer being streamed: its body as lines, or as server-sent events' data."""

    def __init__(self, sock: socket.socket, parser: _http.ResponseParser, pieces: List[bytes]) -> None:
        self._sock = sock
        self._parser = parser
        self._pieces = pieces

    def __enter__(self) -> "_Stream":
        return self

    def __exit__(self, *exc: object) -> None:
        self._sock.close()

    def pieces(self) -> Iterator[bytes]:
        yield from self._pieces
        self._pieces = []
        while not self._parser.done:
            try:
                data = self._sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                return
            except OSError:
                if self._sock.fileno() < 0:
                    return
                raise
            try:
                yield from (self._parser.feed(data) if data else self._parser.eof())
            except Disconnected:
                # Cut off: the supervisor went away in the middle.
                return
            if not data:
                return

    def lines(self) -> Iterator[str]:
        splitter = _http.Lines()
        for piece in self.pieces():
            yield from splitter.feed(piece)
        yield from splitter.rest()

    def server_sent_events(self) -> Iterator[str]:
        reader = _http.ServerSentEvents()
        for line in self.lines():
            data = reader.feed(line)
            if data is not None:
                yield data


def _stored(history: History, after: int, upto: Optional[int], service: Optional[str], kind: Optional[str]) -> Iterator[Event]:
    while True:
        page = history.page(after, upto, service, kind)
        if not page:
            return
        yield from page
        after = page[-1].id


def _connectable(place: Place) -> bool:
    """Whether something accepts connections at `place` now."""
    try:
        sock = _connect(place, Deadline(place, Patience(1.0)))
    except MusterError:
        return False
    sock.close()
    return True


def _connect(place: Place, deadline: Deadline) -> socket.socket:
    if place.tcp:
        assert place.host is not None and place.port is not None
        try:
            return socket.create_connection((place.host, place.port), timeout=max(deadline.left(), 0.001))
        except (ConnectionRefusedError, socket.gaierror) as error:
            raise _core.no_supervisor(place, error) from None
        except socket.timeout:
            raise deadline.no_answer(deadline.patience.total) from None
        except OSError as error:
            raise MusterError(f"cannot connect to {place.where}: {error}") from None
    assert place.socket is not None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setblocking(False)
    while True:
        try:
            sock.connect(place.socket)
            return sock
        except (FileNotFoundError, ConnectionRefusedError) as error:
            sock.close()
            raise _core.no_supervisor(place, error) from None
        except (BlockingIOError, InterruptedError):
            # A full listen queue (a burst of clients, or a supervisor that accepts
            # nothing): wait for room, until the deadline.
            if deadline.left() <= 0:
                sock.close()
                pid = lock_holder(place.state_dir) if place.state_dir else None
                raise deadline.no_answer(deadline.patience.total, pid) from None
            time.sleep(0.01)
        except OSError as error:
            sock.close()
            raise MusterError(f"cannot connect to {place.socket}: {error}") from None


def _send(sock: socket.socket, deadline: Deadline, data: bytes) -> None:
    view = memoryview(data)
    while view:
        sock.settimeout(max(deadline.slice(), 0.001))
        try:
            sent = sock.send(view)
        except socket.timeout:
            deadline.check()
            continue
        except (BrokenPipeError, ConnectionResetError) as error:
            raise Disconnected(f"the supervisor closed the connection before it had the request ({error}); it stopped or crashed meanwhile") from None
        view = view[sent:]


def _recv(sock: socket.socket, deadline: Deadline) -> bytes:
    while True:
        deadline.check()
        sock.settimeout(max(deadline.slice(), 0.001))
        try:
            return sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return b""


def _receive(sock: socket.socket, deadline: Deadline) -> Iterator[bytes]:
    """What arrives on `sock` before the deadline; b"" at the end."""
    while True:
        data = _recv(sock, deadline)
        yield data
        if not data:
            return
