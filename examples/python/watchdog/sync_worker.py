"""A synchronous worker watched by a thread that beats only while the work goes on.

A thread that heartbeat on a timer would keep a hung process alive: this one sends a
heartbeat only if `handle` returned since it last looked. In its first run the worker
deadlocks after 40 items; the thread lives on but sees no progress, the heartbeats stop,
and muster restarts the worker.
"""

import os
import threading
import time

import muster

watchdog = muster.ThreadWatchdog()


@watchdog.watch
def handle(item: int) -> None:
    time.sleep(0.05)  # an item's work


def main() -> None:
    first_run = muster.Client().service(os.environ["MUSTER_SERVICE"]).restarts == 0
    with watchdog:
        muster.ready(status="working")
        handled = 0
        while True:
            handle(handled)
            handled += 1
            if handled % 10 == 0:
                muster.status(f"handled {handled} items")
                print(f"handled {handled} items", flush=True)
            if first_run and handled == 40:
                print("deadlock: the loop waits on a lock it already holds", flush=True)
                lock = threading.Lock()
                lock.acquire()
                lock.acquire()  # never returns


main()
