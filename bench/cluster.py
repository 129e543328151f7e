#!/usr/bin/env python3
"""Failover of a singleton, and what a muster host costs etcd at rest.

    python3 bench/cluster.py [--muster target/release/muster] [--kills 20] [--ttl 3] [--rest 60]

Starts a three-member etcd and three `muster up` hosts on loopback (ports from the OS,
everything in a temp directory), each with the same singleton: a python fixture that
appends `start HOST FENCE T` to a shared log as its first act (T: CLOCK_MONOTONIC ns,
shared by every process of the machine) and then sleeps. It has no readiness probe, so
it is ready when it has started.

Failover: `--kills` times, SIGKILL the supervisor of the host whose instance runs, and
time from the kill to the next instance's `start` line (another host's, with a higher
fence). The killed host is then started again, and the next kill waits until it has
joined. Reported: median, p99 (with 20 samples, the largest but none), min and max.

At rest: once the last failover has settled, each host's count of etcd requests (`muster
cluster --json`, `etcd_requests`: every request its supervisor sent, a watch counted
once when opened) is read twice, `--rest` seconds apart; the requests the reading itself
made are taken off. Reported per host per minute, owner and non-owners apart.

Needs etcd (Debian: etcd-server) and a release build (`cargo build --release`).
Exit status 0 when every failover happened, 1 otherwise.
"""

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

FIXTURE = """import os, sys, time
with open(sys.argv[1], "a") as f:
    f.write(f"start {sys.argv[2]} {os.environ['MUSTER_FENCE']} {time.monotonic_ns()}\\n")
while True:
    time.sleep(3600)
"""

CONFIG = """[settings]
state-dir = "{dir}/state"
shutdown-timeout = "5s"

[cluster]
name = "bench"
etcd = [{etcd}]
host = "{host}"
advertise = "127.0.0.1"
lease-ttl = "{ttl}s"

[services.coordinator]
command = ["{python}", "{fixture}", "{log}", "{host}"]
singleton = true
stop-timeout = "1s"
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, within):
    deadline = time.monotonic() + within
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            sys.exit(f"bench: {what} did not happen within {within}s")
        time.sleep(0.02)


def starts(log):
    try:
        with open(log) as f:
            lines = [line.split() for line in f]
    except FileNotFoundError:
        return []
    return [(w[1], int(w[2]), int(w[3])) for w in lines if len(w) == 4 and w[0] == "start"]


class Bench:
    def __init__(self, args, root):
        self.args, self.root = args, root
        self.log = os.path.join(root, "instances.log")
        self.fixture = os.path.join(root, "fixture.py")
        with open(self.fixture, "w") as f:
            f.write(FIXTURE)
        self.etcd = []
        self.hosts = {}

    def start_etcd(self):
        peers = [free_port() for _ in range(3)]
        self.clients = [f"http://127.0.0.1:{free_port()}" for _ in range(3)]
        initial = ",".join(f"e{i}=http://127.0.0.1:{p}" for i, p in enumerate(peers))
        for i in range(3):
            log = open(os.path.join(self.root, f"etcd{i}.log"), "w")
            self.etcd.append(subprocess.Popen(
                ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(self.root, f"e{i}"),
                 "--listen-client-urls", self.clients[i], "--advertise-client-urls", self.clients[i],
                 "--listen-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peers[i]}",
                 "--initial-cluster", initial, "--initial-cluster-state", "new",
                 "--heartbeat-interval", "50", "--election-timeout", "500"],
                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))

    def config(self, host):
        return os.path.join(self.root, host, "muster.toml")

    def start_host(self, host):
        directory = os.path.join(self.root, host)
        os.makedirs(directory, exist_ok=True)
        with open(self.config(host), "w") as f:
            f.write(CONFIG.format(
                dir=directory, host=host, ttl=self.args.ttl, python=sys.executable,
                fixture=self.fixture, log=self.log,
                etcd=", ".join(f'"{c}"' for c in self.clients)))
        out = open(os.path.join(directory, "up.log"), "a")
        self.hosts[host] = subprocess.Popen(
            [self.args.muster, "-f", self.config(host), "up"],
            stdout=out, stderr=out, start_new_session=True)

    def cluster(self, host):
        run = subprocess.run([self.args.muster, "-f", self.config(host), "cluster", "--json"],
                             capture_output=True, text=True, timeout=30)
        return json.loads(run.stdout) if run.returncode == 0 else None

    def joined(self, count):
        for host in self.hosts:
            view = self.cluster(host)
            if not view or sum(h["alive"] for h in view["hosts"]) != count:
                return False
        return True

    def stop(self):
        # A supervisor stops its services when told to (SIGTERM); the instances of the
        # killed ones went down with their guards.
        for process in self.hosts.values():
            if process.poll() is None:
                process.terminate()
        for process in self.hosts.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for process in self.etcd:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--muster", default=os.path.join(REPO, "target", "release", "muster"))
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--ttl", type=int, default=3, help="lease-ttl in seconds")
    parser.add_argument("--rest", type=float, default=60.0, help="seconds to count requests at rest")
    args = parser.parse_args()
    if not os.access(args.muster, os.X_OK):
        sys.exit(f"bench: no muster at {args.muster}; run `cargo build --release` first")
    with tempfile.TemporaryDirectory(prefix="muster-cluster-bench.") as root:
        bench = Bench(args, root)
        try:
            return run(bench, args)
        finally:
            bench.stop()


def run(bench, args):
    bench.start_etcd()
    for host in ("h0", "h1", "h2"):
        bench.start_host(host)
    wait("the first instance", lambda: starts(bench.log), 60)
    wait("three hosts joined", lambda: bench.joined(3), 60)
    times = []
    for kill in range(args.kills):
        owner, fence, _ = starts(bench.log)[-1]
        killed_at = time.monotonic_ns()
        bench.hosts[owner].kill()
        bench.hosts[owner].wait()
        nxt = wait(f"failover {kill + 1}",
                   lambda: next((s for s in starts(bench.log) if s[1] > fence), None),
                   args.ttl * 4 + 30)
        took = (nxt[2] - killed_at) / 1e9
        times.append(took)
        print(f"kill {kill + 1:2}: {owner} (fence {fence}) -> {nxt[0]} (fence {nxt[1]}) in {took:.2f}s",
              flush=True)
        bench.start_host(owner)
        wait("the killed host joined again", lambda: bench.joined(3), 60)
    ordered = sorted(times)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    print()
    print(f"failover over {len(times)} kills, lease-ttl {args.ttl}s: median {statistics.median(times):.2f}s, "
          f"p99 {p99:.2f}s, min {ordered[0]:.2f}s, max {ordered[-1]:.2f}s")

    # At rest: settle, then count.
    time.sleep(5)
    owner = starts(bench.log)[-1][0]
    before = {host: bench.cluster(host)["etcd_requests"] for host in bench.hosts}
    time.sleep(args.rest)
    after = {host: bench.cluster(host)["etcd_requests"] for host in bench.hosts}
    # Each reading sends 3 range requests, counted before it answers: the second
    # reading's are in `after`.
    per_minute = {host: (after[host] - before[host] - 3) * 60 / args.rest for host in bench.hosts}
    for host, rate in sorted(per_minute.items()):
        role = "owner" if host == owner else "candidate"
        print(f"at rest, {host} ({role}): {rate:.0f} etcd requests per minute")
    return 0


if __name__ == "__main__":
    sys.exit(main())
