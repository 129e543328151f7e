"""What the blocking and the asyncio client share, with no I/O of its own: the paths of
the requests, how long each may wait, how an answer becomes a value or an exception,
and the bookkeeping of an events follow that resumes across supervisor restarts.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _http
from ._locate import Place, no_answer_message
from .errors import APIError, NoAnswer, NoSupervisor, ProtocolError, UnknownService, from_answer
from .models import Event

#: How long a plain request waits for its answer unless told otherwise.
DEFAULT_API_TIMEOUT = 10.0
#: How long `ensure`, `start` and `restart` wait for the service unless told otherwise.
DEFAULT_TIMEOUT = 60.0
#: How long a `stop` may take on top of the API timeout: a service's `stop-timeout`
#: (10 s by default), then SIGKILL.
STOP_WAIT = 120.0
#: How often a waiting client looks whether the supervisor is stopped (SIGSTOP).
STOPPED_POLL = 0.1
#: Between attempts to reach a supervisor that went away during a follow.
RECONNECT_FIRST = 0.02
RECONNECT_MOST = 0.5

Timeout = Union[float, int, str, timedelta]


def api_timeout(value: Optional[Timeout]) -> float:
    """The API timeout: the argument, else `MUSTER_TIMEOUT` (as the CLI reads it), else 10 s."""
    if value is None:
        text = os.environ.get("MUSTER_TIMEOUT")
        if not text:
            return DEFAULT_API_TIMEOUT
        try:
            seconds = _http.parse_duration(text)
        except ValueError as error:
            raise ValueError(f"MUSTER_TIMEOUT: {error}") from None
    elif isinstance(value, str):
        seconds = _http.parse_duration(value)
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = float(value)
    if seconds <= 0:
        raise ValueError("the API timeout must be more than 0s")
    return seconds


@dataclass(frozen=True)
class Patience:
    """How long a request waits, counted from when it begins."""

    #: How long a plain answer may take, and how long the supervisor may stay stopped
    #: (SIGSTOP) during any wait before the client gives up.
    limit: float
    #: How much longer the answer may take because the server first waits for
    #: something (`ensure`'s timeout, a waiting `start`).
    wait: float = 0.0

    @property
    def total(self) -> float:
        return self.limit + self.wait


class Deadline:
    """A request's deadline, and the watch on a supervisor that stopped meanwhile."""

    def __init__(self, place: Place, patience: Patience) -> None:
        self.place = place
        self.patience = patience
        self.began = time.monotonic()
        self.end = self.began + patience.total
        self.pid: Optional[int] = None
        self._stopped_since: Optional[float] = None

    def left(self) -> float:
        return self.end - time.monotonic()

    def slice(self) -> float:
        """How long to wait for bytes before looking again."""
        return max(0.0, min(self.left(), STOPPED_POLL))

    def check(self) -> None:
        """Raises `NoAnswer` once the deadline has passed, or once the supervisor has been
        stopped (SIGSTOP) for the limit: a long wait need not be sat out to learn that no
        one is working on it."""
        from ._locate import is_stopped

        now = time.monotonic()
        if now >= self.end:
            raise self.no_answer(self.patience.total)
        if self.pid is not None and is_stopped(self.pid):
            if self._stopped_since is None:
                self._stopped_since = now
            elif now - self._stopped_since >= self.patience.limit:
                raise self.no_answer(self.patience.limit)
        else:
            self._stopped_since = None

    def no_answer(self, after: float, pid: Optional[int] = None) -> NoAnswer:
        from ._locate import is_stopped

        pid = pid if pid is not None else self.pid
        stopped = is_stopped(pid)
        return NoAnswer(no_answer_message(self.place.where, after, pid, stopped), pid=pid, stopped=stopped)


def no_supervisor(place: Place, error: Optional[BaseException] = None) -> NoSupervisor:
    command = place.start_command()
    if place.tcp:
        why = f" ({error.strerror})" if isinstance(error, OSError) and error.strerror else ""
        message = (
            f"no supervisor answers at {place.where}{why}; start one with `{command}`"
        )
    else:
        message = (
            f"no supervisor is running for this state directory ({place.socket}); "
            f"start one with `{command}` (add -d to run it in the background)"
        )
    return NoSupervisor(message, where=place.where, command=command)


def not_exited(place: Place, seconds: float, pid: Optional[int]) -> NoAnswer:
    """A supervisor asked to shut down that is still there after `seconds`."""
    from ._locate import is_stopped

    who = f"the supervisor (pid {pid})" if pid is not None else f"the supervisor at {place.where}"
    stopped = is_stopped(pid)
    why = (
        f"it is stopped (SIGSTOP); resume it with `kill -CONT {pid}`"
        if stopped
        else "its services may still be stopping (each may take its stop-timeout)"
    )
    return NoAnswer(f"{who} had not exited {seconds:g}s after the shutdown was asked: {why}", pid=pid, stopped=stopped)


def asked(method: str, path: str) -> str:
    return f"{method} {path.split('?')[0]}"


def document(method: str, path: str, head: _http.Head, body: bytes) -> Any:
    """A success's JSON document, or the API's error as an exception."""
    what = asked(method, path)
    parsed = _http.parse_json(what, head.status, body)
    if head.ok:
        return parsed
    raise from_answer(what, head.status, parsed)


def error_of(method: str, path: str, head: _http.Head, body: bytes) -> APIError:
    """The exception for an error answer to a streamed request."""
    what = asked(method, path)
    return from_answer(what, head.status, _http.parse_json(what, head.status, body))


def suggest(error: UnknownService, services: Optional[List[str]]) -> UnknownService:
    """Adds the nearest names and the known ones to an unknown-service error."""
    from .errors import nearest

    if services is not None and error.service is not None:
        error.known = list(services)
        error.suggestions = nearest(error.service, services)
    return error


def service_path(name: str, action: str = "") -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"a service name must be a non-empty string, not {name!r}")
    path = f"/v1/services/{_http.segment(name)}"
    return f"{path}/{action}" if action else path


def scale_path(name: str, replicas: int) -> str:
    """`/v1/services/NAME/scale?replicas=N`, or `ValueError` for a count muster cannot run."""
    if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 1000:
        raise ValueError(f"replicas must be a whole number from 1 to 1000, not {replicas!r}")
    return f"{service_path(name, 'scale')}?replicas={replicas}"


def waited_path(name: str, action: str, timeout: Timeout, wait: bool = True) -> Tuple[str, float]:
    """`/v1/services/NAME/ACTION?...` and how long the server may wait."""
    if not wait:
        return service_path(name, action), 0.0
    query, seconds = _http.duration_query(timeout)
    flag = "wait=true&" if action in ("start", "restart") else ""
    return f"{service_path(name, action)}?{flag}timeout={_http.segment(query)}", seconds


def events_path(since: int, follow: bool, service: Optional[str], kind: Optional[str]) -> str:
    path = f"/v1/events?since={since}"
    if follow:
        path += "&follow=true"
    if service is not None:
        path += f"&service={_http.segment(service)}"
    if kind is not None:
        path += f"&kind={_http.segment(kind)}"
    return path


def logs_path(name: Optional[str], tail: int, follow: bool) -> str:
    if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
        raise ValueError(f"tail must be a whole number of lines, 0 or more, not {tail!r}")
    base = service_path(name, "logs") if name is not None else "/v1/logs"
    path = f"{base}?tail={tail}"
    return path + "&follow=true" if follow else path


def since_id(since: Optional[int]) -> int:
    if since is None:
        return 0
    if isinstance(since, Event):
        return since.id
    if isinstance(since, bool) or not isinstance(since, int) or since < 0:
        raise ValueError(f"since must be an event id (0 or more), not {since!r}")
    return since


def event_of(data: str, what: str) -> Event:
    """An event from the `data` of a server-sent event."""
    import json

    try:
        doc = json.loads(data)
        return Event.from_json(doc)
    except (ValueError, KeyError, TypeError) as error:
        raise ProtocolError(f"an event of {what} cannot be read ({error}): {data[:200]!r}") from None


class Backoff:
    """Growing pauses between attempts to reach a supervisor again."""

    def __init__(self) -> None:
        self.delay = RECONNECT_FIRST

    def next(self) -> float:
        delay = self.delay
        self.delay = min(self.delay * 2, RECONNECT_MOST)
        return delay

    def reset(self) -> None:
        self.delay = RECONNECT_FIRST


def reconnect_deadline(reconnect: Optional[float]) -> Optional[float]:
    return None if reconnect is None else time.monotonic() + reconnect


def expired(deadline: Optional[float]) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def json_lines(body: bytes) -> List[Dict[str, Any]]:
    import json

    out = []
    for line in body.decode("utf-8", "replace").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
