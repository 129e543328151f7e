"""Six asyncio agents and six threads, each needing the coordinator.

Before muster, each agent started its own coordinator (story 002: six model loads of
2-5 minutes each), and a coordinator set up in one event loop was lost in the next
(story 000). Here every agent asks muster with `ensure`: the coordinator is started
once, the others wait for that start, and all talk to the same process. The one
`AsyncClient` is used in two event loops in turn, and holds nothing of either.

Run it with the supervisor up (`muster up -d` in this directory).
"""

import asyncio
import os
import sys
import threading

import muster

HERE = os.path.dirname(os.path.abspath(__file__))
client = muster.Client(HERE)
aclient = muster.AsyncClient(HERE)


def ask(endpoint: muster.Endpoint, question: str) -> str:
    import socket

    with socket.create_connection((endpoint.host, endpoint.port), timeout=10) as connection:
        connection.sendall(question.encode() + b"\n")
        return connection.makefile().readline().strip()


def thread_agent(number: int, answers: list) -> None:
    endpoint = client.ensure("coordinator", timeout=60)
    answers.append(ask(endpoint, f"thread agent {number}"))


async def async_agent(number: int) -> str:
    endpoint = await aclient.ensure("coordinator", timeout=60)
    loop = asyncio.get_running_loop()
    # The socket talk is blocking: it goes to a thread, the loop stays free.
    return await loop.run_in_executor(None, ask, endpoint, f"asyncio agent {number}")


async def agents() -> list:
    return await asyncio.gather(*(async_agent(n) for n in range(1, 7)))


def main() -> int:
    # A first event loop: where was the history at the start?
    since = asyncio.run(aclient.last_event_id())

    answers: list = []
    threads = [threading.Thread(target=thread_agent, args=(n, answers)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
    # A second event loop, with the same client, while the threads ask too.
    answers.extend(asyncio.run(agents()))
    for thread in threads:
        thread.join()

    for line in sorted(answers):
        print(line)
    started = [e for e in client.events(since=since, service="coordinator", kind="spawned")]
    answered_by = {line.split()[1] for line in answers}
    print(f"{len(answers)} agents, answered by {len(answered_by)} coordinator process; "
          f"started {len(started)} time(s) for them")
    return 0 if len(answers) == 12 and len(answered_by) == 1 and len(started) <= 1 else 1


sys.exit(main())
