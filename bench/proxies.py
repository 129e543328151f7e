#!/usr/bin/env python3
"""muster's TCP proxy beside haproxy, socat and systemd-socket-proxyd, on one loopback
upstream, in one run.

    python3 bench/proxies.py [--reps N] [--no-build] [--mib N] [--round-trips N] [--conns N]

Builds muster (release) and bench/netload.c, starts the upstream (`netload echo`, a
thread per connection), then for each proxy in turn, alternating within each
repetition: one stream of `--mib` MiB sent and echoed back (MiB/s), `--round-trips`
round trips of 64 bytes on one connection (p50, p99), and `--conns` connections at once
that each send 64 bytes, read them back and close (time until the last is done). The
same three against the upstream directly are the floor. Prints a markdown table of
medians with the range.

Each proxy is set up as its documentation shows, listening on loopback:
  muster                 a service `upstream` (the echo server) with
                         `proxy = { listen = ..., upstream = ... }`
  haproxy                `mode tcp`, one frontend and one backend server, `maxconn 4096`
  socat                  `TCP-LISTEN:PORT,fork,reuseaddr TCP:UPSTREAM` (a process per
                         connection)
  systemd-socket-proxyd  socket-activated by `systemd-socket-activate -l ADDRESS`
Install the peers with `apt-get install -y haproxy socat systemd`; one not installed is
listed as skipped.
"""

import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PROXYD = "/lib/systemd/systemd-socket-proxyd"


def log(text):
    print(text, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait(check, what, limit=30):
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.02)


class Proxy:
    name = ""

    def __init__(self, work, upstream):
        self.work = os.path.join(work, self.name.replace(" ", "-"))
        os.makedirs(self.work, exist_ok=True)
        self.upstream = upstream
        self.port = free_port()
        self.process = None

    def missing(self):
        return None

    def start(self):
        self.process = subprocess.Popen(self.argv(), cwd=self.work, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        wait(lambda: accepts(self.port), f"{self.name} listening")

    def stop(self):
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.process = None


class Direct(Proxy):
    name = "direct (floor)"

    def __init__(self, work, upstream):
        super().__init__(work, upstream)
        self.port = upstream

    def start(self):
        pass

    def stop(self):
        pass


class Muster(Proxy):
    name = "muster"

    def __init__(self, work, upstream, binary, netload):
        super().__init__(work, upstream)
        self.binary = binary
        # muster runs its own upstream: the same echo server on a port of its own.
        self.own_upstream = free_port()
        with open(os.path.join(self.work, "muster.toml"), "w") as f:
            f.write(f'[settings]\nstate-dir = "state"\n\n[services.upstream]\n'
                    f'command = ["{netload}", "echo", "{self.own_upstream}"]\n'
                    f'ports = ["127.0.0.1:{self.own_upstream}"]\n'
                    f'ready = {{ tcp = "127.0.0.1:{self.own_upstream}" }}\n'
                    f'proxy = {{ listen = "127.0.0.1:{self.port}", '
                    f'upstream = "127.0.0.1:{self.own_upstream}" }}\n')

    def argv(self):
        return [self.binary, "up", "--no-progress", "-f", "muster.toml"]

    def start(self):
        super().start()
        wait(lambda: accepts(self.own_upstream), "muster's upstream listening")


class Haproxy(Proxy):
    name = "haproxy"

    def missing(self):
        return None if shutil.which("haproxy") else "not installed (apt-get install -y haproxy)"

    def argv(self):
        config = os.path.join(self.work, "haproxy.cfg")
        with open(config, "w") as f:
            f.write("global\n  maxconn 4096\n\ndefaults\n  mode tcp\n  timeout connect 5s\n"
                    "  timeout client 60s\n  timeout server 60s\n  maxconn 4096\n\n"
                    f"frontend front\n  bind 127.0.0.1:{self.port}\n  default_backend back\n\n"
                    f"backend back\n  server upstream 127.0.0.1:{self.upstream}\n")
        return ["haproxy", "-db", "-f", config]


class Socat(Proxy):
    name = "socat"

    def missing(self):
        return None if shutil.which("socat") else "not installed (apt-get install -y socat)"

    def argv(self):
        return ["socat", f"TCP-LISTEN:{self.port},bind=127.0.0.1,fork,reuseaddr,backlog=4096",
                f"TCP:127.0.0.1:{self.upstream},nodelay"]


class Proxyd(Proxy):
    name = "systemd-socket-proxyd"

    def missing(self):
        if not os.path.exists(PROXYD):
            return f"{PROXYD} not found (apt-get install -y systemd)"
        if not shutil.which("systemd-socket-activate"):
            return "systemd-socket-activate not found"
        return None

    def argv(self):
        return ["systemd-socket-activate", "-l", f"127.0.0.1:{self.port}",
                PROXYD, "--connections-max=10000", f"127.0.0.1:{self.upstream}"]


def measure(netload, port, args):
    """{figure: value} of one pass of the three loads through `port`."""
    figures = {}
    for argv in (["stream", str(port), str(args.mib)], ["rtt", str(port), str(args.round_trips)],
                 ["conns", str(port), str(args.conns)]):
        got = subprocess.run([netload] + argv, capture_output=True, text=True, timeout=300)
        for line in got.stdout.splitlines():
            name, value = line.split()[:2]
            figures[name] = float(value)
        if got.returncode != 0:
            figures.setdefault("errors", 0)
            figures["errors"] += 1
    return figures


def cell(values, digits=1):
    if not values:
        return "n/a"
    return (f"{statistics.median(values):.{digits}f} "
            f"({min(values):.{digits}f}–{max(values):.{digits}f})")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mib", type=int, default=1024, help="MiB of the stream")
    parser.add_argument("--round-trips", type=int, default=20000)
    parser.add_argument("--conns", type=int, default=1000)
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()

    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    work = tempfile.mkdtemp(prefix="muster-proxies-")
    muster = os.path.join(REPO, "target", "release", "muster")
    if not args.no_build:
        log("building muster (release) and bench/netload.c")
        if subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO).returncode:
            sys.exit("cargo build --release failed")
    netload = os.path.join(work, "netload")
    if subprocess.run(["cc", "-O2", "-pthread", "-o", netload,
                       os.path.join(HERE, "netload.c")]).returncode:
        sys.exit("cc netload.c failed")

    upstream_port = free_port()
    upstream = subprocess.Popen([netload, "echo", str(upstream_port)], start_new_session=True)
    proxies, skipped = [], {}
    try:
        wait(lambda: accepts(upstream_port), "the upstream listening")
        candidates = [Direct(work, upstream_port), Muster(work, upstream_port, muster, netload),
                      Haproxy(work, upstream_port), Socat(work, upstream_port),
                      Proxyd(work, upstream_port)]
        for proxy in candidates:
            reason = proxy.missing()
            if reason:
                skipped[proxy.name] = reason
            else:
                proxies.append(proxy)
        results = {p.name: [] for p in proxies}
        for rep in range(args.reps):
            for proxy in proxies:
                log(f"{rep + 1}/{args.reps}: {proxy.name}")
                try:
                    proxy.start()
                    results[proxy.name].append(measure(netload, proxy.port, args))
                except (TimeoutError, subprocess.TimeoutExpired) as error:
                    log(f"  {error}")
                finally:
                    proxy.stop()
    finally:
        os.killpg(upstream.pid, signal.SIGKILL)
        upstream.wait()
        shutil.rmtree(work, ignore_errors=True)

    uname = os.uname()
    print(f"Measured {time.strftime('%Y-%m-%d')} on {uname.sysname} {uname.release}, "
          f"{os.cpu_count()} cores; `python3 bench/proxies.py --reps {args.reps} --mib {args.mib} "
          f"--round-trips {args.round_trips} --conns {args.conns}`\n")
    print(f"| proxy | one stream, MiB/s (echoed) | 64-byte round trip p50, µs | p99, µs "
          f"| {args.conns} connections at once, ms | failed |")
    print("|---|---|---|---|---|---|")
    for proxy in proxies:
        runs = results[proxy.name]

        def of(key):
            return [r[key] for r in runs if key in r]
        print(f"| {proxy.name} | {cell(of('stream'))} | {cell(of('rtt-p50'))} | "
              f"{cell(of('rtt-p99'))} | {cell(of('conns'))} | "
              f"{int(sum(of('conns-failed')))} |")
    for name, reason in skipped.items():
        print(f"| {name} | skipped: {reason} | | | | |")
    print()
    print("Medians of the repetitions, with the range. The upstream is one echo server "
          "(bench/netload.c) on loopback; muster proxies to its own copy of it, run as "
          "its service.")


if __name__ == "__main__":
    main()
