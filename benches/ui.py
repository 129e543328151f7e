#!/usr/bin/env python3
"""`muster ui` on 100 services: time to the first frame, and CPU used while idle.

    python3 benches/ui.py [BINARY] [SECONDS]

Starts `BINARY up --json` on 100 `sleep` services and waits for the 100th `ready`. Then
runs `BINARY ui` in a pseudo-terminal of 160x50 (NO_COLOR unset: colours on) and times
it from launch to the first frame that shows the table with all 100 services ("services
100/100" in the table's title), 5 runs, median and range. Then keeps one dashboard open,
idle (no keys, services quiet), reading its output as a terminal would, and reads its
utime + stime from /proc/PID/stat over SECONDS (default 10): CPU in percent of one core.
"""

import json
import os
import pty
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import fcntl
import termios


def config(directory):
    path = os.path.join(directory, "muster.toml")
    with open(path, "w") as f:
        f.write(f'[settings]\nstate-dir = "{directory}/state"\n')
        for i in range(100):
            f.write(f'\n[services.s{i:03}]\ncommand = ["sleep", "3600"]\n')
    return path


def up(binary, path):
    process = subprocess.Popen(
        [binary, "up", "--json", "-f", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ready = 0
    for line in process.stdout:
        if json.loads(line).get("kind") == "ready":
            ready += 1
            if ready == 100:
                break
    return process


def ui(binary, path):
    """The dashboard in a new pty: (process, the pty's master side)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    env = dict(os.environ, TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [binary, "ui", "-f", path],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    return process, master


def read_until(master, needle, deadline):
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.01)
        if ready:
            seen += os.read(master, 65536)
            if needle in seen:
                return True
    return False


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def drain(master, seconds):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                os.read(master, 65536)
            except OSError:
                return


def quit(process, master):
    os.write(master, b"q")
    process.wait(timeout=10)
    os.close(master)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/muster"
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
    with tempfile.TemporaryDirectory() as directory:
        path = config(directory)
        supervisor = up(binary, path)
        try:
            firsts = []
            for _ in range(5):
                began = time.monotonic()
                process, master = ui(binary, path)
                if not read_until(master, b"services 100/100", began + 10):
                    sys.exit("no first frame within 10 s")
                firsts.append((time.monotonic() - began) * 1000)
                quit(process, master)
            process, master = ui(binary, path)
            drain(master, 2.0)
            hz = os.sysconf("SC_CLK_TCK")
            before = cpu_ticks(process.pid)
            began = time.monotonic()
            drain(master, seconds)
            used = (cpu_ticks(process.pid) - before) / hz
            elapsed = time.monotonic() - began
            quit(process, master)
        finally:
            supervisor.terminate()
            supervisor.wait(timeout=30)
    print(
        f"first frame with 100 services: median {statistics.median(firsts):.0f} ms "
        f"(min {min(firsts):.0f}, max {max(firsts):.0f}, 5 runs)"
    )
    print(f"idle CPU over {elapsed:.1f} s: {100 * used / elapsed:.2f} % of one core ({used:.2f} s)")


if __name__ == "__main__":
    main()
