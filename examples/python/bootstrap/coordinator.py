"""A coordinator that initialises itself inside its event loop.

Story 001's actor called loop.run_until_complete() in __init__ inside a loop that was
already running, and crashed. Here the initialisation is an ordinary coroutine awaited
in the program's one loop; each step is said with STATUS= (muster shows it), and
READY=1 comes once the coordinator can take tasks. With FAIL_ORGAN=N, organ N fails to
initialise and the process exits: muster reports it with the last lines it printed.
"""

import argparse
import asyncio
import json
import os
import sys

import muster

ORGANS = ["memory", "planner", "executor", "critic", "archive"]


class Coordinator:
    def __init__(self) -> None:
        self.organs: list = []

    async def initialize(self) -> None:
        fail = int(os.environ.get("FAIL_ORGAN", "0"))
        for number, organ in enumerate(ORGANS, start=1):
            muster.status(f"initialising organ {number}/{len(ORGANS)}: {organ}")
            print(f"initialising organ {number}/{len(ORGANS)}: {organ}", flush=True)
            await asyncio.sleep(0.4)
            if number == fail:
                raise RuntimeError(f"organ {organ} could not reach its store")
            self.organs.append(organ)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = json.loads((await reader.readline()).decode() or "{}")
        writer.write(json.dumps({"success": True, "task": task, "organs": self.organs}).encode() + b"\n")
        await writer.drain()
        writer.close()


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    coordinator = Coordinator()
    try:
        await coordinator.initialize()
    except RuntimeError as error:
        print(f"coordinator initialisation failed: {error}", file=sys.stderr, flush=True)
        return 1
    server = await asyncio.start_server(coordinator.handle, "127.0.0.1", args.port)
    muster.ready(status=f"healthy: {len(coordinator.organs)} organs")
    print("coordinator ready", flush=True)
    async with server:
        await server.serve_forever()
    return 0


sys.exit(asyncio.run(main()))
