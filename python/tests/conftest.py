"""The harness: a real `muster up` in a temporary directory, and a guard that kills
everything a test started.

The binary is `$MUSTER_BIN`, or `target/debug/muster` of this repository (`cargo build`).
Every supervisor a test starts runs in its own session with a tag in its environment,
which its services inherit; at the end of each test every process carrying the tag is
killed, whatever state the test left it in. Each test is bounded (`TEST_SECONDS`):
past it, the test fails with a traceback of where it waited, and the cleanup still runs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON_DIR = os.path.dirname(HERE)
REPO = os.path.dirname(PYTHON_DIR)
FIXTURES = os.path.join(HERE, "fixtures")
TAG_VAR = "MUSTER_PYTEST_TAG"
#: The most one test may take, setup and cleanup aside.
TEST_SECONDS = 60
#: The most one wait for a condition may take.
WAIT_SECONDS = 20.0

sys.path.insert(0, PYTHON_DIR)

import muster  # noqa: E402


def muster_bin() -> str:
    return os.environ.get("MUSTER_BIN") or os.path.join(REPO, "target", "debug", "muster")


def pytest_sessionstart(session: Any) -> None:
    binary = muster_bin()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.exit(
            f"the muster binary is not at {binary}: build it with `cargo build` in {REPO}, "
            "or point MUSTER_BIN at one",
            returncode=2,
        )


class TestTimedOut(BaseException):
    """Raised in the main thread when a test runs past TEST_SECONDS."""


@pytest.fixture(autouse=True)
def bounded() -> Iterator[None]:
    def expire(signum: int, frame: Any) -> None:
        raise TestTimedOut(f"the test ran past {TEST_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    """Polls `condition` until it returns something truthy; fails saying `what` was not
    reached within `timeout`."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    last_error: Optional[BaseException] = None
    while True:
        try:
            value = condition()
            if value:
                return value
        except (muster.MusterError, OSError, sqlite3.Error) as error:
            last_error = error
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            pytest.fail(f"{what}: not within {timeout:g} s{detail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def tagged(tag: str) -> List[int]:
    """Every live process whose environment holds `tag`."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                environ = handle.read()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            state = muster._locate.process_state(int(entry))
            if state not in (None, "Z", "X"):
                found.append(int(entry))
    return found


def kill_tagged(tag: str) -> List[int]:
    """SIGKILLs every process carrying `tag` (and its process group), until none is left."""
    killed: List[int] = []
    deadline = time.monotonic() + 10
    while True:
        pids = tagged(tag)
        if not pids:
            return killed
        for pid in pids:
            for kill in (lambda: os.killpg(os.getpgid(pid), signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
                try:
                    kill()
                except OSError:
                    pass
            killed.append(pid)
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes tagged {tag} would not die: {pids}")
        # Our own children must be reaped to stop being listed.
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.01)


class Supervisor:
    """A `muster up` of a config in its own directory."""

    def __init__(self, directory: str, tag: str, config: str) -> None:
        self.dir = directory
        self.tag = tag
        self.config = os.path.join(directory, "muster.toml")
        self.write(config)
        self.process: Optional["subprocess.Popen[bytes]"] = None
        self.log_path = os.path.join(directory, "up.log")
        self.runs = 0

    def write(self, config: str) -> None:
        with open(self.config, "w", encoding="utf-8") as handle:
            handle.write(textwrap.dedent(config).replace("{fixtures}", FIXTURES))

    @property
    def state_dir(self) -> str:
        return muster._locate.state_dir_of(self.config)

    def env(self, **extra: str) -> Dict[str, str]:
        env = dict(os.environ)
        for name in ("MUSTER_STATE_DIR", "MUSTER_FILE", "MUSTER_URL", "NOTIFY_SOCKET",
                     "MUSTER_HEARTBEAT_FILE", "WATCHDOG_USEC"):
            env.pop(name, None)
        env[TAG_VAR] = self.tag
        env["PYTHONPATH"] = PYTHON_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def up(self, *args: str, wait: bool = True) -> "Supervisor":
        """Starts `muster up` and (with `wait`) waits until its API answers."""
        assert self.process is None or self.process.poll() is not None, "already up"
        self.runs += 1
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [muster_bin(), "up", "--no-progress", "-f", self.config, *args],
            cwd=self.dir, env=self.env(), stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        if wait:
            client = self.client()

            def answers() -> bool:
                if self.process is not None and self.process.poll() is not None:
                    pytest.fail(f"muster up exited {self.process.returncode}:\n{self.log()}")
                client.status()
                return True

            wait_for(answers, "the supervisor's API answering")
        return self

    def client(self, **kwargs: Any) -> muster.Client:
        return muster.Client(self.config, **kwargs)

    def aclient(self, **kwargs: Any) -> muster.AsyncClient:
        return muster.AsyncClient(self.config, **kwargs)

    def log(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as handle:
                return handle.read()[-4000:]
        except OSError:
            return ""

    def down(self) -> None:
        """A graceful shutdown, waited for."""
        self.client().shutdown(timeout=WAIT_SECONDS)
        assert self.process is not None
        self.process.wait(timeout=WAIT_SECONDS)

    def kill(self) -> None:
        """SIGKILL to the supervisor alone: its services are left running, as after a crash."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=WAIT_SECONDS)

    def stop_everything(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.terminate()
                self.process.wait(timeout=15)
            except (OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait()

    # ---- what happened ------------------------------------------------------------------

    def events(self, service: Optional[str] = None, kind: Optional[str] = None) -> List[Dict[str, Any]]:
        """Events as the history database holds them."""
        path = os.path.join(self.state_dir, "state.db")
        if not os.path.exists(path):
            return []
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            rows = db.execute(
                "SELECT id, service, kind, run_id, message, data FROM events ORDER BY id"
            ).fetchall()
        return [
            {"id": r[0], "service": r[1], "kind": r[2], "run_id": r[3], "message": r[4], "data": json.loads(r[5])}
            for r in rows
            if (service is None or r[1] == service) and (kind is None or r[2] == kind)
        ]

    def spawns(self, service: str) -> int:
        return len(self.events(service, "spawned"))


@pytest.fixture
def workdir() -> Iterator[str]:
    # Short, so socket paths stay well under the 108 bytes a unix socket may have.
    directory = tempfile.mkdtemp(prefix="mpy-")
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def supervisor(workdir: str) -> Iterator[Callable[[str], Supervisor]]:
    """`supervisor(CONFIG)`: a Supervisor (not yet up) of that config in a fresh
    directory; `{fixtures}` in the config is the fixtures' directory."""
    tag = uuid.uuid4().hex
    made: List[Supervisor] = []

    def make(config: str, subdir: str = "") -> Supervisor:
        directory = os.path.join(workdir, subdir) if subdir else workdir
        os.makedirs(directory, exist_ok=True)
        made.append(Supervisor(directory, tag, config))
        return made[-1]

    try:
        yield make
    finally:
        for each in made:
            each.stop_everything()
        # What a test left on purpose (the services of a supervisor it SIGKILLed), or
        # by accident: nothing outlives the test.
        kill_tagged(tag)


def fixture(name: str) -> str:
    return os.path.join(FIXTURES, name)


PYTHON = sys.executable
