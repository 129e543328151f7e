"""An asyncio worker that heartbeats from its own loop.

It handles an item every 50 ms and says how many with STATUS=. In its first run (muster
counts the restarts) it deadlocks after 40 items: the loop's thread waits on a lock it
already holds, as story 004's loop waited on a file lock. No coroutine runs any more, so
neither does the Watchdog's task: the heartbeats stop and muster restarts the worker.
"""

import asyncio
import os
import threading

import muster


async def main() -> None:
    me = await muster.AsyncClient().service(os.environ["MUSTER_SERVICE"])
    first_run = me.restarts == 0
    async with muster.Watchdog():
        muster.ready(status="working")
        handled = 0
        while True:
            await asyncio.sleep(0.05)  # an item's work
            handled += 1
            if handled % 10 == 0:
                muster.status(f"handled {handled} items")
                print(f"handled {handled} items", flush=True)
            if first_run and handled == 40:
                print("deadlock: the loop waits on a lock it already holds", flush=True)
                lock = threading.Lock()
                lock.acquire()
                lock.acquire()  # never returns


asyncio.run(main())
