"""The API's documents as Python values: a service, the supervisor's status, the
endpoint `ensure` answers with, an event, a log line.

Each is built from the JSON the supervisor writes (`from_json`), reading the fields it
knows and keeping the whole document in `raw`, so a newer supervisor's extra fields
are never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Dict, Iterator, List, Optional, Tuple

#: A service's states, as the API names them.
STATES = (
    "stopped", "pending", "starting", "healthy", "unhealthy", "exited", "stopping",
    "completed", "failed",
)


def parse_time(text: Optional[str]) -> Optional[datetime]:
    """An RFC 3339 time as the supervisor writes it ("2026-01-02T03:04:05.678Z"), in UTC."""
    if not text:
        return None
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    # fromisoformat before 3.11 takes 3 or 6 fraction digits only.
    head, _, zone = value.partition("+")
    if "." in head:
        whole, fraction = head.split(".", 1)
        head = whole + "." + (fraction + "000000")[:6]
    try:
        parsed = datetime.fromisoformat(head + ("+" + zone if zone else ""))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Probe:
    """The last probe attempt: `kind` is `ready` or `alive`."""

    kind: str
    ok: bool
    message: str
    time: Optional[datetime]

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Probe":
        return cls(
            kind=str(doc.get("kind", "")),
            ok=bool(doc.get("ok", False)),
            message=str(doc.get("message", "")),
            time=parse_time(doc.get("time")),
        )


@dataclass(frozen=True)
class Proxy:
    """The proxy muster runs in front of a service, and its numbers."""

    listen: str
    upstream: str
    open_connections: int = 0
    waiting: int = 0
    served: int = 0
    refused: int = 0

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Proxy":
        return cls(
            listen=str(doc.get("listen", "")),
            upstream=str(doc.get("upstream", "")),
            open_connections=int(doc.get("open_connections") or 0),
            waiting=int(doc.get("waiting") or 0),
            served=int(doc.get("served") or 0),
            refused=int(doc.get("refused") or 0),
        )


@dataclass(frozen=True)
class Service:
    """One service as the supervisor sees it now."""

    name: str
    #: One of `STATES`.
    state: str
    #: Why it is in that state, in one line.
    reason: str
    pid: Optional[int] = None
    #: The current (or last) run; 0 before the first spawn.
    run_id: int = 0
    since: Optional[datetime] = None
    uptime_seconds: Optional[float] = None
    restarts: int = 0
    last_exit: Optional[str] = None
    last_probe: Optional[Probe] = None
    probe_failures: int = 0
    #: The last `STATUS=` the service sent (`muster.status(...)`).
    notify_status: Optional[str] = None
    #: `reloading` or `stopping`, when the service said so.
    notify_state: Optional[str] = None
    main_pid: Optional[int] = None
    #: Declared ports, as written: `"5433"` or `"127.0.0.1:5433"`.
    ports: List[str] = field(default_factory=list)
    #: False for a service started on demand (by `ensure`).
    autostart: bool = True
    description: Optional[str] = None
    #: Failed because this dependency will not meet its condition.
    blocked_by: Optional[str] = None
    proxy: Optional[Proxy] = None
    #: The document as the supervisor wrote it.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    @property
    def running(self) -> bool:
        """Whether a process of it runs (healthy, unhealthy, starting or stopping)."""
        return self.state in ("starting", "healthy", "unhealthy", "stopping")

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Service":
        probe = doc.get("last_probe")
        proxy = doc.get("proxy")
        return cls(
            name=str(doc.get("name", "")),
            state=str(doc.get("state", "")),
            reason=str(doc.get("reason", "")),
            pid=doc.get("pid"),
            run_id=int(doc.get("run_id") or 0),
            since=parse_time(doc.get("since")),
            uptime_seconds=doc.get("uptime_seconds"),
            restarts=int(doc.get("restarts") or 0),
            last_exit=doc.get("last_exit"),
            last_probe=Probe.from_json(probe) if isinstance(probe, dict) else None,
            probe_failures=int(doc.get("probe_failures") or 0),
            notify_status=doc.get("notify_status"),
            notify_state=doc.get("notify_state"),
            main_pid=doc.get("main_pid"),
            ports=[str(p) for p in doc.get("ports") or []],
            autostart=bool(doc.get("autostart", True)),
            description=doc.get("description"),
            blocked_by=doc.get("blocked_by"),
            proxy=Proxy.from_json(proxy) if isinstance(proxy, dict) else None,
            raw=doc,
        )


@dataclass(frozen=True)
class Status:
    """`GET /v1/services`: where the supervisor is, and every service."""

    #: `booting`, `running`, `shutting-down` or `done`.
    lifecycle: str
    #: Whether the bootstrap has settled (stays true once it is).
    booted: bool
    services: List[Service]
    #: Why events cannot be written to the history database now, if they cannot.
    history_problem: Optional[str] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def __getitem__(self, name: str) -> Service:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:
        return any(service.name == name for service in self.services)

    def __iter__(self) -> Iterator[Service]:
        return iter(self.services)

    def __len__(self) -> int:
        return len(self.services)

    @property
    def names(self) -> List[str]:
        return [service.name for service in self.services]

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Status":
        return cls(
            lifecycle=str(doc.get("lifecycle", "")),
            booted=bool(doc.get("booted", False)),
            services=[Service.from_json(s) for s in doc.get("services") or []],
            history_problem=doc.get("history_problem"),
            raw=doc,
        )


def _split_address(address: str) -> Tuple[str, int]:
    """`"127.0.0.1:80"`, `"[::1]:80"` or `"80"` as (host, port); a wildcard or missing
    host becomes the loopback address a local client connects to."""
    host, port = "", address
    if address.startswith("["):
        host, _, port = address[1:].partition("]:")
    elif ":" in address:
        host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


@dataclass(frozen=True)
class Endpoint:
    """Where a healthy service is: what `ensure` answers.

    `host` and `port` are where a client connects: the proxy muster runs in front of the
    service when it has one, otherwise its first declared port (a port declared without
    an address, or on a wildcard address, is reached on the loopback address). Both are
    None for a service that declares no port.

    For a singleton (`[cluster]`), `owner` is the host that runs it and `fence` its
    fence; when another host runs it and it has no proxy here, `host` and `port` are that
    host's endpoint (a proxy here forwards to wherever it runs, so it is still the one
    to use).
    """

    name: str
    host: Optional[str]
    port: Optional[int]
    pid: Optional[int]
    run_id: int
    #: Every declared port, as written.
    ports: List[str]
    #: The whole service view.
    service: Service = field(repr=False, compare=False)
    #: A singleton's owner host, and its fence.
    owner: Optional[str] = None
    fence: Optional[int] = None

    @property
    def address(self) -> Optional[str]:
        """`host:port` (IPv6 hosts in brackets), or None without a port."""
        if self.host is None or self.port is None:
            return None
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> Optional[str]:
        """`http://host:port`, or None without a port."""
        return self.url_for("")

    def url_for(self, path: str = "/", scheme: str = "http") -> Optional[str]:
        """`http://host:port/path`, or None without a port."""
        address = self.address
        if address is None:
            return None
        tail = f"/{path.lstrip('/')}" if path else ""
        return f"{scheme}://{address}{tail}"

    @property
    def state(self) -> str:
        return self.service.state

    @property
    def healthy(self) -> bool:
        return self.service.healthy

    @classmethod
    def of(cls, service: Service) -> "Endpoint":
        host: Optional[str] = None
        port: Optional[int] = None
        address = service.proxy.listen if service.proxy else (service.ports[0] if service.ports else None)
        placed = service.raw.get("singleton")
        placed = placed if isinstance(placed, dict) else {}
        if placed and not placed.get("here") and not service.proxy:
            address = placed.get("endpoint")
        if address:
            try:
                host, port = _split_address(address)
            except ValueError:
                host, port = None, None
        return cls(
            name=service.name,
            host=host,
            port=port,
            pid=service.pid,
            run_id=service.run_id,
            ports=list(service.ports),
            service=service,
            owner=placed.get("host"),
            fence=placed.get("fence"),
        )


@dataclass(frozen=True)
class Event:
    """One event: something that happened to a service, numbered.

    `kind` is one of `spawned`, `ready`, `unhealthy`, `healthy`, `exited`,
    `restarting`, `stopping`, `stopped`, `completed`, `failed`, `orphan-stopped`,
    `idle-stopped`, `hook-failed`, `reloaded`. Ids grow by one per event in a state
    directory, across supervisor restarts.
    """

    id: int
    time: Optional[datetime]
    service: str
    run_id: int
    kind: str
    message: str
    data: Any = None

    @property
    def cause(self) -> Optional[str]:
        """For `restarting` and `stopped`: `exit`, `watchdog`, `liveness`,
        `start-deadline`, `asked` or `idle`."""
        if isinstance(self.data, dict):
            cause = self.data.get("cause")
            return str(cause) if cause is not None else None
        return None

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "Event":
        return cls(
            id=int(doc["id"]),
            time=parse_time(doc.get("time")),
            service=str(doc.get("service", "")),
            run_id=int(doc.get("run_id") or 0),
            kind=str(doc.get("kind", "")),
            message=str(doc.get("message", "")),
            data=doc.get("data"),
        )


@dataclass(frozen=True)
class LogLine:
    """One line a service printed: `stream` is `stdout` or `stderr` (or `muster` for
    what the supervisor wrote in the service's log)."""

    service: str
    time: Optional[datetime]
    stream: str
    text: str

    @classmethod
    def from_json(cls, doc: Dict[str, Any]) -> "LogLine":
        return cls(
            service=str(doc.get("service", "")),
            time=parse_time(doc.get("time")),
            stream=str(doc.get("stream", "")),
            text=str(doc.get("text", "")),
        )
