"""One coordinator, however many ask for it, from wherever: threads, processes, event
loops, and a client used in one loop after another (stories 000 and 002)."""

from __future__ import annotations

import asyncio
import subprocess
import threading
import time
from typing import List

import muster
from conftest import PYTHON

COORDINATOR = """
[services.coordinator]
command = ["{python}", "{fixtures}/coordinator.py"]
autostart = false
ready = { notify = true, timeout = "30s" }
env = { INIT_SECONDS = "1" }
"""


def config() -> str:
    return COORDINATOR.replace("{python}", PYTHON)


def test_twelve_threads_ensure_one_coordinator_started_once(supervisor):
    sup = supervisor(config()).up()
    client = sup.client()
    barrier = threading.Barrier(12)
    pids: List[int] = []
    errors: List[BaseException] = []

    def agent() -> None:
        try:
            barrier.wait()
            pids.append(client.ensure("coordinator", timeout=30).pid)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=agent) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    assert not errors, errors
    assert len(pids) == 12 and len(set(pids)) == 1, pids
    assert sup.spawns("coordinator") == 1


def test_processes_ensure_one_coordinator_started_once(supervisor):
    sup = supervisor(config()).up()
    code = (
        "import sys, muster; "
        "print(muster.Client(sys.argv[1]).ensure('coordinator', timeout=30).pid)"
    )
    processes = [
        subprocess.Popen([PYTHON, "-c", code, sup.config], env=sup.env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [p.communicate(timeout=40) for p in processes]
    assert all(p.returncode == 0 for p in processes), outputs
    pids = {int(out.strip()) for out, _ in outputs}
    assert len(pids) == 1, outputs
    assert sup.spawns("coordinator") == 1


def test_event_loops_in_many_threads_share_one_async_client(supervisor):
    sup = supervisor(config()).up()
    client = sup.aclient()
    barrier = threading.Barrier(4)
    pids: List[int] = []
    errors: List[BaseException] = []

    async def agents() -> List[int]:
        endpoints = await asyncio.gather(*(client.ensure("coordinator", timeout=30) for _ in range(3)))
        return [e.pid for e in endpoints]

    def loop_thread() -> None:
        try:
            barrier.wait()
            pids.extend(asyncio.run(agents()))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=loop_thread) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    assert not errors, errors
    assert len(pids) == 12 and len(set(pids)) == 1, pids
    assert sup.spawns("coordinator") == 1


def test_six_asyncio_agents_and_six_threads_at_once_start_one_coordinator(supervisor):
    sup = supervisor(config()).up()
    sync_client = sup.client()
    async_client = sup.aclient()
    pids: List[int] = []
    errors: List[BaseException] = []

    def thread_agent() -> None:
        try:
            pids.append(sync_client.ensure("coordinator", timeout=30).pid)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    async def main() -> None:
        threads = [threading.Thread(target=thread_agent) for _ in range(6)]
        for thread in threads:
            thread.start()
        endpoints = await asyncio.gather(*(async_client.ensure("coordinator", timeout=30) for _ in range(6)))
        pids.extend(e.pid for e in endpoints)
        # Joined off the loop: the loop stays free while the threads finish.
        await asyncio.get_running_loop().run_in_executor(None, lambda: [t.join(40) for t in threads])

    asyncio.run(main())
    assert not errors, errors
    assert len(pids) == 12 and len(set(pids)) == 1, pids
    assert sup.spawns("coordinator") == 1


def test_a_client_used_in_one_loop_then_another_then_synchronously(supervisor):
    # Story 000: initialised in one loop, used in the next: nothing of a loop is kept.
    sup = supervisor(config()).up()
    client = sup.aclient()
    first = asyncio.run(client.ensure("coordinator", timeout=30))
    second = asyncio.run(client.ensure("coordinator", timeout=30))
    loop = asyncio.new_event_loop()
    try:
        third = loop.run_until_complete(client.ensure("coordinator", timeout=30))
    finally:
        loop.close()
    fourth = sup.client().ensure("coordinator")
    assert first.pid == second.pid == third.pid == fourth.pid
    assert sup.spawns("coordinator") == 1


def test_an_async_client_made_inside_a_running_loop_works_in_it(supervisor):
    sup = supervisor(config()).up()

    async def main() -> int:
        client = muster.AsyncClient(sup.config)
        return (await client.ensure("coordinator", timeout=30)).pid

    assert asyncio.run(main()) > 0


def test_ensure_never_blocks_the_loop_while_the_coordinator_loads(supervisor):
    sup = supervisor(config()).up()
    client = sup.aclient()

    async def main() -> float:
        gaps: List[float] = []
        done = asyncio.Event()

        async def ticker() -> None:
            last = time.monotonic()
            while not done.is_set():
                await asyncio.sleep(0.01)
                now = time.monotonic()
                gaps.append(now - last)
                last = now

        tick = asyncio.ensure_future(ticker())
        began = time.monotonic()
        await client.ensure("coordinator", timeout=30)
        took = time.monotonic() - began
        done.set()
        await tick
        # The coordinator takes a second to load: ensure waited that long, and the
        # loop went on ticking all the while.
        assert took >= 0.8, took
        return max(gaps)

    worst = asyncio.run(main())
    assert worst < 0.5, f"the loop was held up for {worst:.3f} s"


def test_a_synchronous_client_works_from_inside_a_running_loop(supervisor):
    # A blocking call in a coroutine holds the loop up, but it works: no "this event
    # loop is already running" (story 001), since the blocking client has no loop.
    sup = supervisor(config()).up()

    async def main() -> int:
        return muster.Client(sup.config).ensure("coordinator", timeout=30).pid

    assert asyncio.run(main()) > 0
    assert sup.spawns("coordinator") == 1


def test_the_bootstrap_waits_on_ensure_and_sees_the_status_the_coordinator_said(supervisor):
    # Story 001's bootstrap polled get_status() with time.sleep(2); ensure waits for
    # READY=1, and the STATUS= lines said while loading are in the service's view.
    sup = supervisor(config()).up()
    client = sup.client()
    seen: List[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            text = client.service("coordinator").notify_status
            if text and (not seen or seen[-1] != text):
                seen.append(text)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        endpoint = client.ensure("coordinator", timeout=30)
    finally:
        stop.set()
        watcher.join(10)
    assert endpoint.service.state == "healthy"
    assert endpoint.service.notify_status == "serving"
    assert any(text.startswith("loading shard") for text in seen), seen
    ready = sup.events("coordinator", "ready")
    assert len(ready) == 1 and "READY=1" in ready[0]["message"]


def test_the_endpoint_names_the_declared_port(supervisor):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    sup = supervisor(
        config().replace('env = { INIT_SECONDS = "1" }', f'env = {{ INIT_SECONDS = "0.1", PORT = "{port}" }}\nports = ["127.0.0.1:{port}"]')
    ).up()
    endpoint = sup.client().ensure("coordinator", timeout=30)
    assert (endpoint.host, endpoint.port, endpoint.address) == ("127.0.0.1", port, f"127.0.0.1:{port}")
    assert endpoint.url == f"http://127.0.0.1:{port}" and endpoint.healthy
    assert endpoint.url_for("health") == f"http://127.0.0.1:{port}/health"
    assert sup.client().status("coordinator").pid == endpoint.pid
    with socket.create_connection((endpoint.host, endpoint.port), timeout=5) as connection:
        greeting = connection.makefile().readline()
    assert greeting.strip() == f"coordinator {endpoint.pid}"


def test_an_ensure_cancelled_by_its_caller_leaves_the_start_to_the_next_one(supervisor):
    sup = supervisor(config()).up()
    client = sup.aclient()

    async def main() -> int:
        try:
            await asyncio.wait_for(client.ensure("coordinator", timeout=30), 0.2)
        except asyncio.TimeoutError:
            pass
        else:
            raise AssertionError("the coordinator takes a second: the wait should have ended first")
        # The start goes on in the supervisor; the next ensure joins it.
        return (await client.ensure("coordinator", timeout=30)).pid

    pid = asyncio.run(main())
    assert pid > 0
    assert sup.spawns("coordinator") == 1
