#!/usr/bin/env python3
"""Boot-100 for two muster binaries, alternated in one run, so the machine's load
weighs on both alike.

    python3 benches/compare_boot.py OLD_BINARY NEW_BINARY [ROUNDS]

Each round starts `BINARY up --json` on 100 `sleep` services (a fresh temp dir per
binary, reused across rounds as a real state directory is), times it from launch to the
100th `ready` event, and stops it with SIGTERM. Prints the median and the range of each.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time


def config(directory):
    path = os.path.join(directory, "boot.toml")
    with open(path, "w") as f:
        f.write(f'[settings]\nstate-dir = "{directory}/state"\n')
        for i in range(100):
            f.write(f'\n[services.s{i:03}]\ncommand = ["sleep", "3600"]\n')
    return path


def boot(binary, path):
    began = time.monotonic()
    up = subprocess.Popen([binary, "up", "--json", "-f", path],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    ready = 0
    for line in up.stdout:
        if json.loads(line)["kind"] == "ready":
            ready += 1
            if ready == 100:
                break
    took = (time.monotonic() - began) * 1000
    up.terminate()
    up.wait(timeout=60)
    return took


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    binaries = sys.argv[1:3]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        paths = [config(a), config(b)]
        times = [[], []]
        for _ in range(rounds):
            for index, binary in enumerate(binaries):
                times[index].append(boot(binary, paths[index]))
    for binary, took in zip(binaries, times):
        print(f"{binary}: median {statistics.median(took):.1f} ms, "
              f"{min(took):.1f}-{max(took):.1f} ms over {rounds} boots")


if __name__ == "__main__":
    main()
