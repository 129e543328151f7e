#!/usr/bin/env python3
"""Boot, respawn and memory of two muster binaries, alternated in one run, so the
machine's load weighs on both alike.

    python3 benches/compare_builds.py OLD_BINARY NEW_BINARY [ROUNDS]

Each round, for each binary in turn (a fresh temp dir per binary, reused across rounds
as a real state directory is):

- boot-100: `BINARY up --json` on 100 `sleep` services, from launch to the 100th
  `ready` event;
- respawn: SIGKILL one service's process, time to its next `ready` event (backoff 0),
  ten times;
- RSS: the supervisor's resident memory once booted (VmRSS of /proc/PID/status);

then SIGTERM. Prints the median and the range of each, per binary.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

SERVICES = 100
RESPAWNS = 10


def config(directory):
    path = os.path.join(directory, "boot.toml")
    with open(path, "w") as f:
        f.write(f'[settings]\nstate-dir = "{directory}/state"\n')
        for i in range(SERVICES):
            f.write(
                f'\n[services.s{i:03}]\ncommand = ["sleep", "3600"]\n'
                'backoff = { initial = "0s", max = "0s" }\n'
                'restart-limit = { count = 1000, within = "1s" }\n'
            )
    return path


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def events(up):
    for line in up.stdout:
        yield json.loads(line)


def one_round(binary, path):
    began = time.monotonic()
    up = subprocess.Popen([binary, "up", "--json", "-f", path],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stream = events(up)
    pids = {}
    ready = 0
    for event in stream:
        if event["kind"] == "spawned":
            pids[event["service"]] = event["data"]["pid"]
        if event["kind"] == "ready":
            ready += 1
            if ready == SERVICES:
                break
    boot = (time.monotonic() - began) * 1000
    rss = rss_kib(up.pid)
    respawns = []
    for i in range(RESPAWNS):
        name = f"s{i:03}"
        killed = time.monotonic()
        os.kill(pids[name], signal.SIGKILL)
        for event in stream:
            if event["service"] == name and event["kind"] == "spawned":
                pids[name] = event["data"]["pid"]
            if event["service"] == name and event["kind"] == "ready":
                break
        respawns.append((time.monotonic() - killed) * 1000)
    up.send_signal(signal.SIGTERM)
    up.wait(timeout=60)
    return boot, statistics.median(respawns), rss


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binaries = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    results = [[], []]
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        paths = [config(a), config(b)]
        for _ in range(rounds):
            for index, binary in enumerate(binaries):
                results[index].append(one_round(binary, paths[index]))
    for binary, rows in zip(binaries, results):
        boot = [r[0] for r in rows]
        respawn = [r[1] for r in rows]
        rss = [r[2] / 1024 for r in rows]
        print(f"{binary} ({rounds} rounds):")
        print(f"  boot-100  median {statistics.median(boot):.1f} ms "
              f"({min(boot):.1f}-{max(boot):.1f})")
        print(f"  respawn   median {statistics.median(respawn):.2f} ms "
              f"({min(respawn):.2f}-{max(respawn):.2f})")
        print(f"  RSS       median {statistics.median(rss):.2f} MiB "
              f"({min(rss):.2f}-{max(rss):.2f})")


if __name__ == "__main__":
    main()
