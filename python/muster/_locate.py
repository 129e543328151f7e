"""Where the supervisor listens, found the way the `muster` command finds it.

A supervisor keeps its state (socket, history, logs) in its config's state directory:
`settings.state-dir` of `muster.toml`, relative to the file, `.muster` by default. The
socket is `STATE_DIR/muster.sock`. When a config's `state-dir` was edited while its
supervisor runs, that supervisor still uses the old directory: it records it in a lock
in the user's runtime directory (`$XDG_RUNTIME_DIR/muster`, or `$TMPDIR/muster-UID`),
named after the config file's canonical path. If nothing answers where the file points
now, the recorded directory is used, as the CLI does.

What is asked for, in order (explicit arguments first, then the environment the CLI
reads, then where this process runs):

1. `url=` (TCP, with `token=` or `token_file=`, else `MUSTER_TOKEN` or
   `MUSTER_TOKEN_FILE`), `state_dir=`, or the config (`Client(PATH)`, `config=` or
   `file=`; the path may also be a state directory, its socket, or a URL);
2. `MUSTER_URL` (with `MUSTER_TOKEN` or `MUSTER_TOKEN_FILE`), `MUSTER_STATE_DIR`,
   `MUSTER_FILE`;
3. inside a service muster runs: that supervisor's state directory (from
   `MUSTER_HEARTBEAT_FILE`, which is `STATE_DIR/run/SERVICE.heartbeat`);
4. `muster.toml` in the working directory.

Nothing here starts or changes anything; it only reads files.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import stat
from dataclasses import dataclass
from typing import Optional, Union
from urllib.parse import urlsplit

from ._toml import state_dir_setting
from .errors import MusterError

#: The config file name the CLI uses by default, and the one a directory stands for.
DEFAULT_FILE = "muster.toml"
#: The state directory a config without `settings.state-dir` gets, beside the file.
DEFAULT_STATE_DIR = ".muster"

PathLike = Union[str, "os.PathLike[str]"]

log = logging.getLogger("muster")


class ConfigError(MusterError):
    """The config file to find the supervisor through cannot be read."""


@dataclass(frozen=True)
class Place:
    """Where one supervisor listens: a unix socket in a state directory, or TCP."""

    #: The unix socket, or None over TCP.
    socket: Optional[str] = None
    #: The state directory (history database, logs), or None over TCP.
    state_dir: Optional[str] = None
    #: The config file this was found through, if any.
    config: Optional[str] = None
    host: Optional[str] = None
    port: Optional[int] = None
    token: Optional[str] = None

    @property
    def tcp(self) -> bool:
        return self.socket is None

    @property
    def where(self) -> str:
        if self.socket is not None:
            return self.socket
        return f"{self.host}:{self.port}"

    @property
    def host_header(self) -> str:
        if self.socket is not None:
            return "muster"
        host = f"[{self.host}]" if self.host and ":" in self.host else str(self.host)
        return f"{host}:{self.port}"

    def start_command(self) -> str:
        """The command that starts a supervisor here."""
        if self.config is not None:
            return f"muster up -f {self.config}"
        if self.state_dir is not None:
            return f"muster up --state-dir {self.state_dir} -f PATH/TO/muster.toml"
        return f"muster up -f PATH/TO/muster.toml (with [settings.api] listen = \"{self.host_header}\")"


@dataclass(frozen=True)
class Request:
    """Where to look, settled when the client is made: the arguments, else the
    environment, else the working directory, each path made absolute then (a client
    keeps looking in the same place after the program changes directory). Which state
    directory a config leads to is worked out again at each request."""

    url: Optional[str] = None
    state_dir: Optional[str] = None
    #: A config, found as the CLI finds one (`MUSTER_FILE`, `./muster.toml`).
    config: Optional[str] = None
    #: A path given to `Client(PATH)`: a config, its directory, a state directory, its
    #: socket, or a URL.
    given: Optional[str] = None
    token: Optional[str] = None
    token_file: Optional[str] = None

    @classmethod
    def of(
        cls,
        config: Optional[PathLike],
        state_dir: Optional[PathLike],
        url: Optional[str],
        token: Optional[str],
        token_file: Optional[PathLike],
    ) -> "Request":
        env = os.environ
        tokens = {
            "token": token if token is not None else env.get("MUSTER_TOKEN"),
            "token_file": os.fspath(token_file) if token_file is not None else env.get("MUSTER_TOKEN_FILE"),
        }
        if url is not None:
            return cls(url=url, **tokens)
        if state_dir is not None:
            return cls(state_dir=absolute(os.fspath(state_dir)))
        if config is not None:
            path = os.fspath(config)
            return cls(given=path if "://" in path else absolute(path), **tokens)
        if env.get("MUSTER_URL"):
            return cls(url=env["MUSTER_URL"], **tokens)
        if env.get("MUSTER_STATE_DIR"):
            return cls(state_dir=absolute(env["MUSTER_STATE_DIR"]))
        if env.get("MUSTER_FILE"):
            return cls(config=absolute(env["MUSTER_FILE"]))
        heartbeat = env.get("MUSTER_HEARTBEAT_FILE")
        if heartbeat:
            run_dir = os.path.dirname(heartbeat)
            if os.path.basename(run_dir) == "run":
                return cls(state_dir=absolute(os.path.dirname(run_dir)))
        return cls(config=absolute(DEFAULT_FILE))


def locate(request: Request) -> Place:
    """Where to reach the supervisor now, by the rules in this module's header."""
    if request.url is not None:
        return _tcp(request.url, request.token, request.token_file)
    if request.state_dir is not None:
        return _in_state_dir(request.state_dir, None)
    if request.given is not None:
        return _given(request.given, request.token, request.token_file)
    assert request.config is not None
    return _through_config(request.config)


def absolute(path: str) -> str:
    """`path` made absolute as Rust's `std::path::absolute` does: joined to the working
    directory, `.` components and repeated slashes dropped, `..` and symlinks kept."""
    if not os.path.isabs(path):
        path = os.path.join(os.getcwd(), path)
    parts = [part for part in path.split("/") if part not in ("", ".")]
    return "/" + "/".join(parts)


def _in_state_dir(state_dir: str, config: Optional[str]) -> Place:
    directory = absolute(state_dir)
    return Place(socket=os.path.join(directory, "muster.sock"), state_dir=directory, config=config)


def config_file(path: str) -> str:
    """The config file `path` means: a directory means the `muster.toml` inside it."""
    return os.path.join(path, DEFAULT_FILE) if os.path.isdir(path) else path


def state_dir_of(path: str) -> str:
    """The state directory the config file at `path` names now (`.muster` beside it
    unless `settings.state-dir` says otherwise). Only that key is read, so a config
    being edited (invalid elsewhere) still leads to its supervisor."""
    file = absolute(config_file(path))
    try:
        with open(file, "rb") as handle:
            data = handle.read(4 * 1024 * 1024)
    except OSError as error:
        raise ConfigError(
            f"cannot read {config_file(path)}: {error.strerror or error}; pass the config "
            "with Client(config=PATH) or MUSTER_FILE, or the state directory with "
            "Client(state_dir=DIR) or MUSTER_STATE_DIR"
        ) from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"cannot read {config_file(path)}: it is not UTF-8 ({error})") from error
    named = state_dir_setting(text) or DEFAULT_STATE_DIR
    return os.path.join(os.path.dirname(file), named)


def _given(path: str, token: Optional[str], token_file: Optional[str]) -> Place:
    """What `Client(PATH)` means: a config file or the directory holding one, as with
    `muster -f`; also, for convenience, an `http://` URL, a state directory (holding a
    `muster.sock` or `state.db` and no `muster.toml`), or the socket itself."""
    if "://" in path:
        return _tcp(path, token, token_file)
    try:
        mode = os.stat(path).st_mode
    except OSError:
        mode = 0
    if stat.S_ISSOCK(mode):
        directory = os.path.dirname(absolute(path))
        return Place(socket=absolute(path), state_dir=directory)
    if stat.S_ISDIR(mode) and not os.path.exists(os.path.join(path, DEFAULT_FILE)):
        if any(os.path.exists(os.path.join(path, name)) for name in ("muster.sock", "state.db", "lock")):
            return _in_state_dir(path, None)
    return _through_config(path)


def _through_config(path: str) -> Place:
    named = state_dir_of(path)
    running = _running_elsewhere(config_file(path), named)
    return _in_state_dir(running or named, path)


def _running_elsewhere(file: str, named: str) -> Optional[str]:
    """The state directory the supervisor running `file` recorded, when it is not
    `named` and nothing answers at `named`."""
    running = running_state_dir(file, unless=named)
    if running is None:
        return None
    if _answers(os.path.join(named, "muster.sock")):
        return None
    log.info(
        "the supervisor of %s keeps its state in %s, and that is where this client looks "
        "(the file now names %s, which takes effect after `muster down` and `muster up`)",
        file, running, named,
    )
    return running


def _answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def runtime_dir() -> str:
    """Where the config locks live: `$XDG_RUNTIME_DIR/muster`, or `$TMPDIR/muster-UID`
    (`/tmp` without `TMPDIR`), as the supervisor computes it."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "muster")
    temp = os.environ.get("TMPDIR")
    base = temp if temp is not None else "/tmp"
    return os.path.join(base, f"muster-{os.getuid()}")


def fnv1a(data: bytes) -> int:
    """64-bit FNV-1a, as the supervisor names its config locks."""
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def config_lock_path(file: str) -> Optional[str]:
    """`RUNTIME/config-<FNV-1a of the canonical path>.lock`, or None when the file
    cannot be resolved or the directory is missing or not this user's alone."""
    if not os.path.exists(file):
        return None
    canonical = os.path.realpath(file)
    base = runtime_dir()
    try:
        meta = os.lstat(base)
    except OSError:
        return None
    # Someone else's directory (made first, in /tmp) must not decide who runs what.
    if not stat.S_ISDIR(meta.st_mode) or meta.st_uid != os.getuid() or meta.st_mode & 0o022:
        return None
    return os.path.join(base, f"config-{fnv1a(os.fsencode(canonical)):016x}.lock")


def running_state_dir(file: str, unless: Optional[str] = None) -> Optional[str]:
    """The state directory of the supervisor running the config `file`, if one runs:
    read from its config lock while someone holds it (a free lock's record is stale).
    None too when the record is `unless` (checked first: it needs no look at the locks)."""
    path = config_lock_path(file)
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        with os.fdopen(os.dup(fd), "r", encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
        directory = lines[1].strip() if len(lines) > 1 else ""
        if not directory or directory == unless or not _held(fd):
            return None
        return directory
    finally:
        os.close(fd)


def _held(fd: int) -> bool:
    """Whether someone holds a `flock` on the file `fd` is open on.

    Read from `/proc/locks`, which takes no lock: a client that probed with a lock of
    its own, however briefly, could make a `muster up` starting at that instant believe
    another supervisor runs this config. Without `/proc/locks`, a shared lock is tried.
    """
    meta = os.fstat(fd)
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as handle:
            table = handle.read()
    except OSError:
        table = None
    if table is not None:
        for line in table.splitlines():
            fields = line.split()
            # "1: FLOCK  ADVISORY  WRITE 541 fd:00:123456 0 EOF" ("->" marks waiters).
            if "->" in fields:
                fields.remove("->")
            if len(fields) < 6 or fields[1] != "FLOCK":
                continue
            # By inode alone, as the supervisor itself reads this table: on an overlay
            # file system the device a lock is listed under is not the one stat gives.
            if fields[5].rsplit(":", 1)[-1] == str(meta.st_ino):
                return True
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def lock_holder(state_dir: str) -> Optional[int]:
    """The pid the supervisor wrote in its state lock."""
    try:
        with open(os.path.join(state_dir, "lock"), encoding="utf-8") as handle:
            return int(handle.readline().strip())
    except (OSError, ValueError):
        return None


def _tcp(url: str, token: Optional[str], token_file: Optional[str]) -> Place:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if parts.scheme != "http":
        raise MusterError(
            f"{url}: the API speaks plain http on loopback or a trusted network; write "
            "http://HOST:PORT"
        )
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise MusterError(f"{url}: write the API's address as http://HOST:PORT")
    if token is None and token_file is not None:
        try:
            with open(token_file, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as error:
            raise MusterError(f"cannot read the token file {token_file}: {error.strerror}") from error
        if not token:
            raise MusterError(f"the token file {token_file} is empty")
    return Place(host=parts.hostname, port=port, token=token)


def peer_pid(sock: socket.socket) -> Optional[int]:
    """The pid of the process at the other end of a unix socket, when the system says."""
    if sock.family != socket.AF_UNIX or not hasattr(socket, "SO_PEERCRED"):
        return None
    import struct

    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError:
        return None
    pid = struct.unpack("3i", raw)[0]
    return pid if pid > 0 else None


def process_state(pid: int) -> Optional[str]:
    """The state letter `/proc/PID/stat` gives (`T` stopped, `Z` zombie), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode("ascii", "replace")
    except OSError:
        return None
    end = text.rfind(")")
    fields = text[end + 2 :].split()
    return fields[0] if fields else None


def is_stopped(pid: Optional[int]) -> bool:
    return pid is not None and process_state(pid) in ("T", "t")


def is_gone(pid: int) -> bool:
    return process_state(pid) in (None, "Z", "X")


def no_answer_message(where: str, after: float, pid: Optional[int], stopped: bool) -> str:
    within = f"{after:g}s"
    if pid is not None and stopped:
        return (
            f"the supervisor (pid {pid}) did not answer within {within}: it is stopped "
            f"(SIGSTOP, or Ctrl-Z in its terminal); resume it with `kill -CONT {pid}`"
        )
    if pid is not None:
        return (
            f"the supervisor (pid {pid}) did not answer within {within}; it is busy or "
            "stuck; wait longer with api_timeout= or MUSTER_TIMEOUT"
        )
    return (
        f"the supervisor at {where} did not answer within {within}; wait longer with "
        "api_timeout= or MUSTER_TIMEOUT"
    )
