"""The examples in examples/python run as python/README.md says: `muster up -d` in the
example's directory, its script, `muster down`. Each runs in a copy (so no state is left
in the repository), with its fixed ports swapped for free ones."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import uuid
from typing import Dict, List, Optional

import pytest

from conftest import PYTHON_DIR, REPO, TAG_VAR, kill_tagged, muster_bin

EXAMPLES = os.path.join(REPO, "examples", "python")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def example(workdir):
    tag = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MUSTER_", "NOTIFY_SOCKET", "WATCHDOG_"))}
    env["PATH"] = os.path.dirname(os.path.abspath(muster_bin())) + os.pathsep + env.get("PATH", "")
    env["PYTHONPATH"] = PYTHON_DIR
    env[TAG_VAR] = tag
    copies: List[str] = []

    def copy(name: str) -> str:
        target = os.path.join(workdir, name)
        shutil.copytree(os.path.join(EXAMPLES, name), target)
        config = os.path.join(target, "muster.toml")
        with open(config) as handle:
            text = handle.read()
        for port in sorted(set(re.findall(r"\b(187\d\d)\b", text))):
            text = text.replace(port, str(free_port()))
        with open(config, "w") as handle:
            handle.write(text)
        copies.append(target)
        return target

    def run(
        directory: str, *command: str, extra: Optional[Dict[str, str]] = None, timeout: float = 60
    ) -> "subprocess.CompletedProcess[str]":
        return subprocess.run(list(command), cwd=directory, env={**env, **(extra or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    try:
        yield copy, run
    finally:
        for directory in copies:
            run(directory, "muster", "down", timeout=30)
        kill_tagged(tag)


def test_agents_six_asyncio_and_six_threads_start_one_coordinator(example):
    copy, run = example
    directory = copy("agents")
    up = run(directory, "muster", "up", "-d")
    assert up.returncode == 0, up.stderr
    agents = run(directory, "python3", "agents.py")
    assert agents.returncode == 0, agents.stdout + agents.stderr
    assert "12 agents, answered by 1 coordinator process; started 1 time(s) for them" in agents.stdout, agents.stdout
    # Asked again: the coordinator is already up; nothing new is started.
    again = run(directory, "python3", "agents.py")
    assert "started 0 time(s) for them" in again.stdout, again.stdout
    down = run(directory, "muster", "down")
    assert down.returncode == 0, down.stderr


def test_bootstrap_waits_on_ensure_and_explains_a_failure(example):
    copy, run = example
    directory = copy("bootstrap")
    assert run(directory, "muster", "up", "-d").returncode == 0
    boot = run(directory, "python3", "bootstrap.py")
    assert boot.returncode == 0, boot.stdout + boot.stderr
    assert "healthy: 5 organs" in boot.stdout and "'success': True" in boot.stdout, boot.stdout
    assert run(directory, "muster", "down").returncode == 0

    assert run(directory, "muster", "up", "-d", extra={"FAIL_ORGAN": "3"}).returncode == 0
    failed = run(directory, "python3", "bootstrap.py")
    assert failed.returncode == 1
    assert "`coordinator` failed" in failed.stderr, failed.stderr
    assert "| coordinator initialisation failed: organ executor could not reach its store" in failed.stderr


def test_watchdog_restarts_the_workers_whose_loops_deadlocked(example):
    copy, run = example
    directory = copy("watchdog")
    assert run(directory, "muster", "up", "-d").returncode == 0
    watched = run(directory, "python3", "watch.py")
    assert watched.returncode == 0, watched.stdout + watched.stderr
    for name in ("worker", "sync-worker"):
        assert re.search(rf"\b{name}\s+restarting\s+now: no heartbeat for 2s", watched.stdout), watched.stdout
        assert f"{name}: healthy, restarted 1 time(s)" in watched.stdout, watched.stdout
