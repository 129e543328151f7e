"""Follows muster's events until both workers were restarted by their watchdog and are
working again, then says what happened. Run it right after `muster up -d`, or later: a
restart that already happened is read from the history."""

import os
import sys

import muster

HERE = os.path.dirname(os.path.abspath(__file__))
WORKERS = ("sync-worker", "worker")


def show(event: muster.Event) -> None:
    print(f"{event.id:>5} {event.service:<12} {event.kind:<10} {event.message}", flush=True)


def main() -> int:
    client = muster.Client(HERE)
    since = client.last_event_id()
    # What already happened under this supervisor (its restart counts are its own).
    done = set()
    for name in WORKERS:
        service = client.service(name)
        if service.restarts > 0 and service.healthy:
            done.add(name)
            restarts = list(client.events(service=name, kind="restarting"))
            if restarts:
                show(restarts[-1])
    # Then what happens next, as it happens.
    restarting = {}
    if len(done) < len(WORKERS):
        for event in client.events(since=since, follow=True):
            if event.service not in WORKERS:
                continue
            show(event)
            if event.kind == "restarting" and event.cause == "watchdog":
                restarting[event.service] = event.run_id
            elif event.kind == "ready" and event.run_id > restarting.get(event.service, event.run_id):
                done.add(event.service)
            if len(done) == len(WORKERS):
                break
    for name in WORKERS:
        service = client.service(name)
        print(f"{name}: {service.state}, restarted {service.restarts} time(s), says {service.notify_status!r}")
    return 0


sys.exit(main())
