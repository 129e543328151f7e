"""The helpers for services: ready/status/heartbeat/stopping, and the watchdogs that
catch a hung process (story 004) without a status file."""

from __future__ import annotations

import asyncio
import os
import socket
from typing import List

import pytest

import muster
from conftest import PYTHON, wait_for

WORKER = """
[services.worker]
command = ["{python}", "{fixtures}/{script}"]
ready = {{ notify = true, timeout = "20s" }}
watchdog = "1s"
env = {{ BLOCK_FILE = "{block}" }}
"""


def beats(sup, run: int) -> List[str]:
    return [line.text for line in sup.client().logs("worker", tail=1000) if line.text.startswith("beat ") and line.text.endswith(f"run {run}")]


@pytest.mark.parametrize("script", ["loop_worker.py", "thread_worker.py"])
def test_a_hung_worker_is_restarted_by_its_watchdog(supervisor, workdir, script):
    block = os.path.join(workdir, "block")
    sup = supervisor(WORKER.format(python=PYTHON, fixtures="{fixtures}", script=script, block=block)).up()
    client = sup.client()
    first = client.ensure("worker", timeout=20)
    # Healthy for well past the 1 s deadline: the heartbeats come while it works.
    wait_for(lambda: len(beats(sup, first.run_id)) >= 5, "five heartbeats (over a second)")
    assert client.service("worker").run_id == first.run_id
    assert not sup.events("worker", "restarting")

    with open(block, "w"):
        pass
    restart = wait_for(lambda: sup.events("worker", "restarting"), "a restart after the worker hung")[0]
    assert restart["data"]["cause"] == "watchdog", restart
    assert "no heartbeat" in restart["message"], restart
    stopped = [e for e in sup.events("worker", "stopped") if e["run_id"] == first.run_id]
    assert stopped and stopped[0]["data"]["cause"] == "watchdog"
    again = wait_for(
        lambda: [e for e in sup.events("worker", "ready") if e["run_id"] > first.run_id],
        "the restarted worker ready",
    )[0]
    assert client.ensure("worker").run_id == again["run_id"]
    assert "deadlocking the loop" in [line.text for line in client.logs("worker", tail=1000)]


def test_without_a_notify_socket_the_helpers_do_nothing(monkeypatch):
    for name in ("NOTIFY_SOCKET", "MUSTER_HEARTBEAT_FILE", "WATCHDOG_USEC"):
        monkeypatch.delenv(name, raising=False)
    assert not muster.under_muster()
    assert muster.ready() is False
    assert muster.status("loading") is False
    assert muster.heartbeat() is False
    assert muster.stopping() is False
    assert muster.notify.ready() is False and muster.send_notify("READY=1") is False
    assert muster.watchdog_interval() is None

    async def main() -> bool:
        async with muster.Watchdog() as watchdog:
            await asyncio.sleep(0)
            return watchdog.active

    assert asyncio.run(main()) is False
    with muster.ThreadWatchdog() as watchdog:
        assert not watchdog.active


def test_messages_are_the_notify_protocol(monkeypatch, workdir):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "notify.sock")
    receiver.bind(path)
    receiver.settimeout(5)
    heartbeat_file = os.path.join(workdir, "svc.heartbeat")
    open(heartbeat_file, "w").close()
    os.utime(heartbeat_file, (0, 0))
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("MUSTER_HEARTBEAT_FILE", heartbeat_file)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    try:
        assert muster.status("loading shard 1/5\nsecond line")
        assert receiver.recv(4096) == b"STATUS=loading shard 1/5 second line"
        assert muster.ready(status="serving")
        assert receiver.recv(4096) == b"READY=1\nSTATUS=serving"
        assert muster.heartbeat()
        assert receiver.recv(4096) == b"WATCHDOG=1"
        assert os.stat(heartbeat_file).st_mtime > 0
        assert muster.stopping()
        assert receiver.recv(4096) == b"STOPPING=1"
        assert muster.extend_timeout(2.5)
        assert receiver.recv(4096) == b"EXTEND_TIMEOUT_USEC=2500000"
        assert muster.watchdog_interval() == 3.0
        assert muster.Watchdog().interval == 1.0
    finally:
        receiver.close()


def test_an_abstract_notify_socket_is_reached(monkeypatch):
    name = f"muster-test-{os.getpid()}"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind("\0" + name)
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert muster.ready()
        assert receiver.recv(4096) == b"READY=1"
    finally:
        receiver.close()


def test_a_full_notify_queue_never_blocks_the_sender(monkeypatch, workdir):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "full.sock")
    receiver.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("MUSTER_HEARTBEAT_FILE", raising=False)
    try:
        # Nobody reads: the queue fills, and sending returns False instead of waiting.
        results = [muster.heartbeat() for _ in range(10_000)]
        assert results[0] is True and results[-1] is False
    finally:
        receiver.close()


def test_the_async_watchdog_beats_from_the_loop_and_stops_when_it_is_blocked(monkeypatch, workdir):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "wd.sock")
    receiver.bind(path)
    receiver.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("MUSTER_HEARTBEAT_FILE", raising=False)

    def drain() -> int:
        count = 0
        while True:
            try:
                receiver.recv(64)
                count += 1
            except BlockingIOError:
                return count

    async def main() -> None:
        async with muster.Watchdog(interval=0.01) as watchdog:
            assert watchdog.active
            while watchdog.beats < 5:
                await asyncio.sleep(0.005)
            assert drain() >= 5
            before = watchdog.beats
            import time

            time.sleep(0.3)  # the loop is blocked: no beat can be sent meanwhile
            assert watchdog.beats == before
            assert drain() == 0
            while watchdog.beats == before:
                await asyncio.sleep(0.005)

    try:
        asyncio.run(main())
    finally:
        receiver.close()


def test_the_thread_watchdog_beats_only_on_progress(monkeypatch, workdir):
    import time

    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "twd.sock")
    receiver.bind(path)
    receiver.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("MUSTER_HEARTBEAT_FILE", raising=False)
    counter = [0]
    try:
        with muster.ThreadWatchdog(interval=0.01, progress=lambda: counter[0]) as watchdog:
            assert receiver.recv(64) == b"WATCHDOG=1"  # the first, at start
            settled = wait_for(lambda: watchdog.beats, "the first beat counted")
            assert settled == 1
            time.sleep(0.2)  # no progress meanwhile: the thread stays quiet
            assert watchdog.beats == settled
            counter[0] += 1
            wait_for(lambda: watchdog.beats > settled, "a beat after progress")
            settled = watchdog.beats
            watchdog.tick()
            wait_for(lambda: watchdog.beats > settled, "a beat after a tick")
        assert not watchdog.active
    finally:
        receiver.close()


def test_the_watchdogs_take_their_progress_first_and_stop_either_way(monkeypatch, workdir):
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(workdir, "either.sock")
    receiver.bind(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "30000")
    monkeypatch.delenv("MUSTER_HEARTBEAT_FILE", raising=False)
    counter = [0]
    assert muster.ThreadWatchdog(lambda: counter[0]).interval == 0.01

    async def main() -> None:
        watchdog = await muster.Watchdog(lambda: counter[0]).start()
        assert watchdog.active and watchdog.interval == 0.01
        while watchdog.beats < 1:
            await asyncio.sleep(0.005)
        watchdog.stop()  # without awaiting: stopped all the same
        assert not watchdog.active
        again = await muster.Watchdog()
        assert again.active
        await again.stop()
        assert not again.active

    try:
        asyncio.run(main())
    finally:
        receiver.close()
