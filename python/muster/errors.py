"""The exceptions: every failure a caller can meet, each saying what is wrong and how to
fix it.

`APIError` and its subclasses are the supervisor's own error answers, with the fields
of its error document: `kind` (a stable name to match on), `message`, `service`,
`cause` (the cause chain, from the service asked about down to the root cause) and
`log_tail` (the root cause's last log lines). One subclass per kind, so
`except muster.NotHealthy` reads as what it means; `ERRORS_BY_KIND` maps the kinds.

`NoSupervisor` and `NoAnswer` are about reaching the supervisor at all.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Type


class MusterError(Exception):
    """Anything that went wrong talking to muster."""


class NoSupervisor(MusterError, ConnectionError):
    """No supervisor is running where the client looked. The message names the command
    that starts one."""

    def __init__(self, message: str, *, where: str, command: str) -> None:
        super().__init__(message)
        #: The socket path or `host:port` that was tried.
        self.where = where
        #: The command that starts a supervisor for this config.
        self.command = command


class NoAnswer(MusterError, TimeoutError):
    """A supervisor is there but did not answer in time: stopped (SIGSTOP), or stuck."""

    def __init__(
        self, message: str, *, pid: Optional[int] = None, stopped: bool = False
    ) -> None:
        super().__init__(message)
        #: The supervisor's pid, when the system said.
        self.pid = pid
        #: Whether that process is stopped (then `kill -CONT PID` resumes it).
        self.stopped = stopped


class Disconnected(MusterError, ConnectionError):
    """The supervisor went away before it had answered: it stopped, or crashed, while
    the request waited. Whether the request was carried out is not known; `status()`
    says how things are now."""


class ProtocolError(MusterError):
    """An answer that is not what the API promises: most likely a supervisor of another
    version of muster, still running from before an upgrade."""


class APIError(MusterError):
    """An error answer of the API."""

    #: The kind this class stands for (`None` on the base class).
    KIND: Optional[str] = None

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        service: Optional[str] = None,
        cause: Optional[List[str]] = None,
        log_tail: Optional[List[str]] = None,
        report: Optional[str] = None,
        diagnostics: Optional[List[Dict[str, Any]]] = None,
        asked: str = "",
    ) -> None:
        super().__init__(message)
        #: The HTTP status code.
        self.status = status
        #: A stable name for programs: `unknown-service`, `not-healthy`, `timeout`, ...
        self.kind = kind
        #: One line for people.
        self.message = message
        #: The service concerned, when there is one.
        self.service = service
        #: `service: state (reason)`, from the service asked about to the root cause.
        self.cause: List[str] = list(cause or [])
        #: The root cause's last log lines.
        self.log_tail: List[str] = list(log_tail or [])
        #: `invalid-config` only: the diagnostics as `muster check` prints them.
        self.report = report
        #: `invalid-config` only: the diagnostics as data.
        self.diagnostics = diagnostics
        #: The request that got this answer, such as `POST /v1/services/db/ensure`.
        self.asked = asked

    @property
    def root_cause(self) -> Optional[str]:
        """The last link of the cause chain: why, in the end."""
        return self.cause[-1] if self.cause else None

    def __str__(self) -> str:
        lines = [self.message]
        if len(self.cause) > 1:
            lines.append("because:")
            lines.extend(f"  {step}" for step in self.cause[1:])
        if self.log_tail:
            lines.append("last lines of its log:")
            lines.extend(f"  | {line}" for line in self.log_tail)
        if self.report:
            lines.append(self.report.rstrip("\n"))
        return "\n".join(lines)

    def __reduce__(self) -> Any:
        # Picklable (multiprocessing hands exceptions between processes).
        return (
            _rebuild,
            (
                type(self),
                self.status,
                self.kind,
                self.message,
                dict(self.__dict__),
            ),
        )


def _rebuild(cls: Type[APIError], status: int, kind: str, message: str, state: Dict[str, Any]) -> APIError:
    error = cls.__new__(cls)
    APIError.__init__(error, status, kind, message)
    error.__dict__.update(state)
    return error


class UnknownService(APIError, LookupError):
    """No service by that name. `suggestions` holds the nearest names (nearest first),
    `known` every service the supervisor has."""

    KIND = "unknown-service"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.suggestions: List[str] = []
        self.known: List[str] = []

    def __str__(self) -> str:
        text = super().__str__()
        if self.known and "did you mean" not in text:
            if self.suggestions:
                names = ", ".join(f"`{name}`" for name in self.suggestions)
                text += f"; did you mean {names}?"
            else:
                text += "; the services are " + ", ".join(f"`{n}`" for n in self.known)
        elif not self.known and self.service is not None and "did you mean" not in text:
            text += "; the supervisor has no services"
        return text


class NotFound(APIError):
    KIND = "not-found"


class MethodNotAllowed(APIError):
    KIND = "method-not-allowed"


class BadRequest(APIError, ValueError):
    KIND = "bad-request"


class NotHealthy(APIError):
    """The service cannot be made healthy (it failed, or a dependency did): `cause` and
    `log_tail` say why."""

    KIND = "not-healthy"


class Timeout(APIError, TimeoutError):
    """Not healthy within the timeout: `cause` says where it stands."""

    KIND = "timeout"


class InvalidConfig(APIError):
    """`reload` of a config that is not valid; nothing changed. `report` has the
    diagnostics."""

    KIND = "invalid-config"


class Unauthorized(APIError, PermissionError):
    """Over TCP: no token, or a wrong one."""

    KIND = "unauthorized"


class Forbidden(APIError, PermissionError):
    """Over TCP: the read token tried to act; use the control token."""

    KIND = "forbidden"


class TooLarge(APIError):
    KIND = "too-large"


class ShuttingDown(APIError):
    """The supervisor is shutting down; nothing starts any more."""

    KIND = "shutting-down"


class Refused(APIError):
    """The request cannot be honoured; the message says why."""

    KIND = "refused"


class Busy(APIError):
    KIND = "busy"


class NoCluster(APIError):
    """The supervisor's config has no `[cluster]` (`Client.cluster()`)."""

    KIND = "no-cluster"


class EtcdUnavailable(APIError):
    """`[cluster]`: etcd did not answer the supervisor (`Client.cluster()`)."""

    KIND = "etcd-unavailable"


#: The exception class of each kind the API documents.
ERRORS_BY_KIND: Dict[str, Type[APIError]] = {
    cls.KIND: cls
    for cls in (
        UnknownService, NotFound, MethodNotAllowed, BadRequest, NotHealthy, Timeout,
        InvalidConfig, Unauthorized, Forbidden, TooLarge, ShuttingDown, Refused, Busy,
        NoCluster, EtcdUnavailable,
    )
    if cls.KIND is not None
}


def from_answer(asked: str, status: int, document: Any) -> APIError:
    """The exception for an error answer `{"error": {...}}`."""
    if not isinstance(document, dict) or not isinstance(document.get("error"), dict):
        raise ProtocolError(
            f"the supervisor answered {asked} with {status} and a body that is not an "
            f"error document: {str(document)[:200]!r}; if it runs another version of "
            "muster, restart it (`muster down`, then `muster up`)"
        )
    error = document["error"]
    kind = str(error.get("kind", ""))
    cls = ERRORS_BY_KIND.get(kind, APIError)
    return cls(
        status,
        kind,
        str(error.get("message", "")),
        service=error.get("service"),
        cause=[str(c) for c in error.get("cause") or []],
        log_tail=[str(line) for line in error.get("log_tail") or []],
        report=error.get("report"),
        diagnostics=error.get("diagnostics"),
        asked=asked,
    )


def nearest(word: str, candidates: List[str]) -> List[str]:
    """The candidates near `word`, nearest first, by the rule `muster check` uses: an
    edit distance (with transpositions) of at most a third of the longer name."""
    found = []
    lower = word.lower()
    for candidate in candidates:
        distance = _distance(lower, candidate.lower())
        longest = max(len(word), len(candidate))
        if (0 < distance <= max(longest // 3, 1)) or (distance == 0 and word != candidate):
            found.append((distance, candidate))
    return [candidate for _, candidate in sorted(found)]


def _distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (optimal string alignment)."""
    rows = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        rows[i][0] = i
    for j in range(len(b) + 1):
        rows[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            rows[i][j] = min(rows[i - 1][j] + 1, rows[i][j - 1] + 1, rows[i - 1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                rows[i][j] = min(rows[i][j], rows[i - 2][j - 2] + 1)
    return rows[len(a)][len(b)]
