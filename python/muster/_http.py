"""HTTP/1.1 for the API, without I/O: the request's bytes, and a parser that turns the
answer's bytes into its head and body pieces. The blocking client and the asyncio
client feed it from their own sockets, so both read answers the same way.

The supervisor speaks HTTP/1.1: whole answers carry a Content-Length, streamed ones
(logs, events) are chunked. Each request asks for `Connection: close`, so an answer
without either ends where the connection does.
"""

from __future__ import annotations

import json
import re
from datetime import timedelta
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import quote

from .errors import Disconnected, ProtocolError

#: The most a head may take: the supervisor's heads are a few hundred bytes.
MAX_HEAD = 64 * 1024


def segment(text: str) -> str:
    """`text` as one path segment or query value, every reserved byte escaped."""
    return quote(text, safe="")


def request_bytes(
    method: str, path: str, host: str = "muster", token: Optional[str] = None
) -> bytes:
    """One request with no body, asking the server to close the connection after it."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}",
        "Connection: close",
        "Accept: application/json, text/event-stream, application/x-ndjson",
        "User-Agent: muster-python",
    ]
    if method != "GET":
        lines.append("Content-Length: 0")
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


class Head:
    """An answer's status line and headers (names lowercased)."""

    def __init__(self, status: int, reason: str, headers: Dict[str, str]) -> None:
        self.status = status
        self.reason = reason
        self.headers = headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class ResponseParser:
    """Feed it bytes as they arrive; it gives the head once complete, then body pieces.

    `feed` returns the body bytes decoded from what it was given (chunk framing
    removed); `done` is true once the body has ended; `eof` says the connection closed.
    """

    def __init__(self, asked: str) -> None:
        self.asked = asked
        self.head: Optional[Head] = None
        self.done = False
        self._buffer = bytearray()
        # "length": Content-Length bytes left; "chunked": chunk framing; "close": until EOF.
        self._mode = ""
        self._left = 0
        # In chunked mode: "size" (a size line), "data", "crlf" (after data), "trailer".
        self._chunk = "size"

    def feed(self, data: bytes) -> List[bytes]:
        self._buffer.extend(data)
        pieces: List[bytes] = []
        if self.head is None and not self._parse_head():
            return pieces
        while not self.done:
            piece = self._next_piece()
            if piece is None:
                break
            if piece:
                pieces.append(piece)
        return pieces

    def eof(self) -> List[bytes]:
        """The connection closed: what remains, or an error if the answer was cut off."""
        if self.head is None:
            raise Disconnected(gone(self.asked))
        if self._mode == "close":
            rest = bytes(self._buffer)
            self._buffer.clear()
            self.done = True
            return [rest] if rest else []
        if not self.done:
            raise Cut(gone(self.asked))
        return []

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD:
                raise ProtocolError(f"the head of the answer to {self.asked} is too long")
            return False
        text = bytes(self._buffer[:end]).decode("latin-1")
        del self._buffer[: end + 4]
        lines = text.split("\r\n")
        match = re.match(r"HTTP/1\.[01] (\d{3})(?: (.*))?$", lines[0])
        if not match:
            raise ProtocolError(
                f"the answer to {self.asked} is not HTTP: {lines[0][:80]!r}"
            )
        headers: Dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        self.head = Head(int(match.group(1)), match.group(2) or "", headers)
        if "chunked" in headers.get("transfer-encoding", "").lower():
            self._mode = "chunked"
        elif "content-length" in headers:
            try:
                self._left = int(headers["content-length"])
            except ValueError:
                raise ProtocolError(
                    f"the answer to {self.asked} has a bad Content-Length"
                ) from None
            self._mode = "length"
            self.done = self._left == 0
        elif self.head.status in (204, 304) or 100 <= self.head.status < 200:
            self._mode = "length"
            self.done = True
        else:
            self._mode = "close"
        return True

    def _next_piece(self) -> Optional[bytes]:
        """The next body piece from the buffer; None when more bytes are needed."""
        if self._mode == "length":
            if not self._buffer:
                return None
            take = bytes(self._buffer[: self._left])
            del self._buffer[: len(take)]
            self._left -= len(take)
            self.done = self._left == 0
            return take
        if self._mode == "close":
            if not self._buffer:
                return None
            take = bytes(self._buffer)
            self._buffer.clear()
            return take
        return self._next_chunk()

    def _next_chunk(self) -> Optional[bytes]:
        if self._chunk == "size":
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return None
            line = bytes(self._buffer[:end]).split(b";")[0].strip()
            del self._buffer[: end + 2]
            try:
                self._left = int(line, 16)
            except ValueError:
                raise ProtocolError(
                    f"the answer to {self.asked} has a bad chunk size {line[:20]!r}"
                ) from None
            self._chunk = "data" if self._left > 0 else "trailer"
            return b""
        if self._chunk == "data":
            if not self._buffer:
                return None
            take = bytes(self._buffer[: self._left])
            del self._buffer[: len(take)]
            self._left -= len(take)
            if self._left == 0:
                self._chunk = "crlf"
            return take
        if self._chunk == "crlf":
            if len(self._buffer) < 2:
                return None
            del self._buffer[:2]
            self._chunk = "size"
            return b""
        # Trailers: lines up to an empty one.
        end = self._buffer.find(b"\r\n")
        if end < 0:
            return None
        del self._buffer[: end + 2]
        if end == 0:
            self.done = True
        return b""


class Cut(Disconnected):
    """An answer that ended before its end: the supervisor went away."""


def gone(asked: str) -> str:
    return (
        f"the supervisor went away before it had answered {asked} (it stopped or crashed "
        "meanwhile); whether that was carried out is not known: `status()` says how "
        "things are now"
    )


class Lines:
    """Splits body pieces into lines (without their line ends)."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, piece: bytes) -> List[str]:
        self._pending.extend(piece)
        lines: List[str] = []
        while True:
            end = self._pending.find(b"\n")
            if end < 0:
                return lines
            raw = bytes(self._pending[:end])
            del self._pending[: end + 1]
            lines.append(raw.decode("utf-8", "replace").rstrip("\r"))

    def rest(self) -> List[str]:
        if not self._pending:
            return []
        text = bytes(self._pending).decode("utf-8", "replace")
        self._pending.clear()
        return [text]


class ServerSentEvents:
    """Reads server-sent events from lines: each event's `data`, once its blank line
    arrives. Comments (the keep-alives) and other fields are skipped."""

    def __init__(self) -> None:
        self._data: List[str] = []

    def feed(self, line: str) -> Optional[str]:
        if line == "":
            if not self._data:
                return None
            data = "\n".join(self._data)
            self._data = []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        return None


def parse_json(asked: str, status: int, body: bytes) -> Any:
    """The body as JSON, or an error naming the request."""
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        excerpt = body[:200].decode("utf-8", "replace").replace("\n", " ")
        raise ProtocolError(
            f"the supervisor answered {asked} with {status} and a body that is not "
            f"JSON: {excerpt!r}; if it runs another version of muster, restart it "
            "(`muster down`, then `muster up`)"
        ) from None


def collect(parser: ResponseParser, chunks: Iterator[bytes], prefix: bytes = b"") -> Tuple[Head, bytes]:
    """Feeds `chunks` (b"" meaning end of input) to `parser` until the answer is whole.
    `prefix` is body the parser already gave back."""
    body = bytearray(prefix)
    for data in (chunks if not parser.done else ()):
        if data:
            for piece in parser.feed(data):
                body.extend(piece)
        else:
            for piece in parser.eof():
                body.extend(piece)
        if parser.done:
            break
    if parser.head is None or not parser.done:
        raise Disconnected(gone(parser.asked))
    return parser.head, bytes(body)


_UNITS = {
    "nsec": 1e-9, "ns": 1e-9,
    "usec": 1e-6, "us": 1e-6,
    "msec": 1e-3, "ms": 1e-3,
    "seconds": 1.0, "second": 1.0, "sec": 1.0, "s": 1.0,
    "minutes": 60.0, "minute": 60.0, "min": 60.0, "m": 60.0,
    "hours": 3600.0, "hour": 3600.0, "hr": 3600.0, "h": 3600.0,
    "days": 86400.0, "day": 86400.0, "d": 86400.0,
    "weeks": 604800.0, "week": 604800.0, "w": 604800.0,
}
_PART = re.compile(r"\s*([0-9]+)\s*([a-z]+)\s*")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as muster writes them: "10s", "1m 30s", "500ms"."""
    position, total = 0, 0.0
    text = text.strip()
    if not text:
        raise ValueError("an empty duration; write it with a unit, such as \"30s\"")
    while position < len(text):
        match = _PART.match(text, position)
        if not match or match.group(2) not in _UNITS:
            raise ValueError(
                f"{text!r} is not a duration; write it with a unit, such as \"30s\""
            )
        total += int(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    return total


def format_duration(seconds: float) -> str:
    """Seconds as a duration the API reads: whole milliseconds (at least 1 ms)."""
    if seconds < 0:
        raise ValueError(f"a timeout of {seconds} s: it must not be negative")
    millis = max(1, int(round(seconds * 1000)))
    if millis >= 10**9:
        return f"{max(1, int(round(seconds)))}s"
    return f"{millis}ms"


def duration_query(timeout: Any) -> Tuple[str, float]:
    """A timeout given as seconds, a `timedelta` or a duration string: the query value
    and seconds."""
    if isinstance(timeout, str):
        return timeout, parse_duration(timeout)
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(
            f"timeout must be seconds (a number) or a duration such as \"30s\", not {timeout!r}"
        )
    return format_duration(float(timeout)), float(timeout)
