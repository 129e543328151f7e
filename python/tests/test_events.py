"""Events: the past from the history, then a follow that survives the supervisor's
restart, a graceful one or a crash, with no event lost or given twice."""

from __future__ import annotations

import asyncio
import queue
import threading
from typing import Any, List

import pytest

import muster
from conftest import WAIT_SECONDS, wait_for

CONFIG = """
[services.web]
command = ["sleep", "3600"]

[services.job]
command = ["sleep", "3600"]
autostart = false
"""


class Follower:
    """Follows events in a thread (the blocking client), collecting them."""

    def __init__(self, client: muster.Client, **kwargs: Any) -> None:
        self.events: "queue.Queue[Any]" = queue.Queue()
        self.seen: List[muster.Event] = []
        self.iterator = client.events(follow=True, **kwargs)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            for event in self.iterator:
                self.events.put(event)
        except BaseException as error:  # noqa: BLE001 - handed to the test
            self.events.put(error)
        self.events.put(StopIteration())

    def until(self, predicate: Any, what: str) -> muster.Event:
        """Collects events until one matches `predicate`."""
        while True:
            try:
                item = self.events.get(timeout=WAIT_SECONDS)
            except queue.Empty:
                pytest.fail(f"{what}: no such event within {WAIT_SECONDS:g} s; got {[(e.id, e.service, e.kind) for e in self.seen]}")
            if isinstance(item, BaseException):
                if isinstance(item, StopIteration):
                    pytest.fail(f"{what}: the follow ended; got {[(e.id, e.service, e.kind) for e in self.seen]}")
                raise item
            self.seen.append(item)
            if predicate(item):
                return item


def assert_whole(seen: List[muster.Event], stored: List[dict]) -> None:
    """The ids followed are exactly the history's, in order: none lost, none twice."""
    ids = [e.id for e in seen]
    assert ids == [e["id"] for e in stored][: len(ids)], (ids, [e["id"] for e in stored])
    assert ids == list(range(ids[0], ids[0] + len(ids))), ids


def test_past_events_come_from_the_history_with_or_without_a_supervisor(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    client.ensure("job")
    listed = list(client.events())
    assert [(e.service, e.kind) for e in listed] == [
        ("web", "spawned"), ("web", "ready"), ("job", "spawned"), ("job", "ready"),
    ]
    assert [e.id for e in listed] == [1, 2, 3, 4]
    assert listed[0].data == {"pid": listed[0].data["pid"]} and listed[0].time is not None
    assert [e.id for e in client.events(since=2)] == [3, 4]
    assert [e.kind for e in client.events(service="job")] == ["spawned", "ready"]
    assert [e.service for e in client.events(kind="ready")] == ["web", "job"]
    # The async client's: an async iterator, or a list when awaited.
    assert asyncio.run(_awaited(sup)) == listed
    sup.down()
    # The history is read without a supervisor, as `muster events` reads it.
    after = list(client.events())
    assert [e.id for e in after] == list(range(1, len(after) + 1))
    assert [e.kind for e in after][-2:] == ["stopped", "stopped"]
    assert client.last_event_id() == after[-1].id
    # What the API says and what the history says are the same events.
    sup.up()
    api = asyncio.run(_api_events(sup))
    stored = {e.id: e for e in client.events()}
    for event in api:
        assert stored[event.id] == event


async def _awaited(sup: Any) -> List[muster.Event]:
    client = sup.aclient()
    streamed = [event async for event in client.events()]
    assert streamed == await client.events()
    with pytest.raises(TypeError, match="async for"):
        await client.events(follow=True)
    return streamed


async def _api_events(sup: Any) -> List[muster.Event]:
    # Over the API only: a client with no state directory (TCP) reads this.
    client = sup.aclient()
    answer = await client._call("GET", "/v1/events?since=0")
    return [muster.Event.from_json(doc) for doc in answer["events"]]


def test_a_follow_goes_on_across_a_graceful_restart(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    follower = Follower(client)
    follower.until(lambda e: e.service == "web" and e.kind == "ready", "web ready")
    sup.down()
    follower.until(lambda e: e.service == "web" and e.kind == "stopped", "web stopped")
    sup.up()
    client.ensure("job")
    follower.until(lambda e: e.service == "job" and e.kind == "ready", "job ready after the restart")
    client.stop("job")
    last = follower.until(lambda e: e.service == "job" and e.kind == "stopped", "job stopped")
    stored = sup.events()
    assert last.id == stored[-1]["id"] or stored[-1]["id"] > last.id
    assert_whole(follower.seen, stored)
    assert follower.seen[0].id == 1


def test_a_follow_goes_on_across_a_crash_of_the_supervisor(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    client.ensure("job")
    since = client.last_event_id()
    follower = Follower(client, reconnect=WAIT_SECONDS)
    client.restart("job")
    follower.until(lambda e: e.service == "job" and e.kind == "ready", "job ready again")
    sup.kill()
    # The next supervisor stops what the killed one left running, and says so.
    sup.up()
    follower.until(lambda e: e.kind == "orphan-stopped", "the orphans stopped")
    follower.until(lambda e: e.service == "web" and e.kind == "ready", "web ready after the crash")
    client.ensure("job")
    follower.until(lambda e: e.service == "job" and e.kind == "ready" and e.id > since + 4, "job ready after the crash")
    assert_whole(follower.seen, sup.events())


def test_a_follow_since_an_id_with_filters_resumes_after_the_last_one(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    client.ensure("job")
    since = client.last_event_id()
    follower = Follower(client, since=since, service="job", kind="ready")
    client.restart("job")
    first = follower.until(lambda e: True, "job ready")
    sup.down()
    sup.up()
    client.ensure("job")
    second = follower.until(lambda e: True, "job ready after the restart")
    assert (first.kind, second.kind) == ("ready", "ready") and first.service == second.service == "job"
    assert first.id > since and second.id > first.id
    assert [e.id for e in follower.seen] == [e["id"] for e in sup.events("job", "ready") if e["id"] > since]


def test_an_async_follow_goes_on_across_a_restart(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.aclient()

    async def main() -> List[muster.Event]:
        seen: List[muster.Event] = []
        restarted = False
        async for event in client.events(follow=True):
            seen.append(event)
            if event.service == "web" and event.kind == "ready" and not restarted:
                restarted = True
                # The restart runs in threads, so the loop keeps reading meanwhile.
                loop = asyncio.get_running_loop()
                loop.run_in_executor(None, lambda: (sup.down(), sup.up(), sup.client().ensure("job")))
            if event.service == "job" and event.kind == "ready":
                return seen
        return seen

    seen = asyncio.run(asyncio.wait_for(main(), WAIT_SECONDS * 2))
    kinds = [(e.service, e.kind) for e in seen]
    assert kinds.count(("web", "ready")) == 2, kinds
    assert ("web", "stopped") in kinds
    assert_whole(seen, sup.events())


def test_a_follow_with_reconnect_zero_ends_when_the_supervisor_stops(supervisor):
    sup = supervisor(CONFIG).up()
    follower = Follower(sup.client(), reconnect=0)
    follower.until(lambda e: e.service == "web" and e.kind == "ready", "web ready")
    sup.down()
    with pytest.raises(pytest.fail.Exception, match="the follow ended"):
        follower.until(lambda e: False, "anything more")
    assert follower.seen[-1].kind == "stopped"
    wait_for(lambda: not follower.thread.is_alive(), "the follow's thread ending")


def test_an_event_kind_that_does_not_exist_is_a_bad_request(supervisor):
    sup = supervisor(CONFIG).up()
    with pytest.raises(muster.BadRequest) as caught:
        list(sup.client().events(kind="exploded", follow=True))
    assert "not an event kind" in caught.value.message


def test_a_follow_over_tcp_goes_on_across_a_restart(supervisor, workdir):
    import os
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(os.path.join(workdir, "token"), "w") as handle:
        handle.write("sesame\n")
    sup = supervisor(f"""
        [settings.api]
        listen = "127.0.0.1:{port}"
        token-file = "token"
        {CONFIG}
        """).up()
    # Over TCP there is no history database to read: the supervisor's API gives it all.
    client = muster.Client(url=f"http://127.0.0.1:{port}", token="sesame")
    follower = Follower(client)
    follower.until(lambda e: e.service == "web" and e.kind == "ready", "web ready")
    sup.down()
    sup.up()
    client.ensure("job")
    follower.until(lambda e: e.service == "job" and e.kind == "ready", "job ready after the restart")
    assert_whole(follower.seen, sup.events())
    assert follower.seen[0].id == 1
