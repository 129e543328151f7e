#!/usr/bin/env python3
"""muster beside the supervisors people use today, on the same workloads, in one run.

    python3 bench/peers.py [--reps N] [--idle SECONDS] [--only TOOL,...]
                           [--workloads WORKLOAD,...] [--no-install] [--no-build]

Installs what it can (supervisor, honcho and circus from PyPI into bench/.peers/venv,
pm2 from npm into bench/.peers/npm, horust with `cargo install` into bench/.peers/cargo,
s6 and runit from Debian with apt-get when run as root), builds muster (release) and
four small C programs (the fixtures and the physical floor), then runs each workload
on each tool, alternating tools within each repetition, and prints markdown tables of
medians with the range and the ratio to muster. A tool that cannot be installed or run
is reported as skipped, with the reason; a workload a tool has no means for, as n/a or
never, with the reason.

Workloads (see bench/README.md for how each tool is configured and measured):
  boot       launch to the tool's own status reporting 100 `sleep` services running
  respawn    SIGKILL of a supervised process to its replacement's start stamp
  footprint  RSS of the supervisor and its helper processes with 100 services, and CPU
             used by them over an idle period
  chain      10 services, each depending on the one before and listening 50 ms after
             it starts: launch to the tool's own status reporting the last one ready
  hang       a process that stops heartbeating but stays alive: its last heartbeat to
             its replacement's start stamp, with the same deadline for every tool
  fan-in     100 clients connecting at once to one on-demand service not yet started:
             how many times it is started, and the time until every client is answered
  scale      boot and stop 100, 1,000, 5,000 and 10,000 `sleep` services (muster, and s6
             and runit where they can hold that many), per service, beside the floor of
             spawning and stopping as many processes (bench/floor.c scale N)
"""

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xmlrpc.client

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
PEERS = os.path.join(HERE, ".peers")
VENV = os.path.join(PEERS, "venv")
NPM = os.path.join(PEERS, "npm")
CARGO = os.path.join(PEERS, "cargo")
SLEEP = shutil.which("sleep") or "/bin/sleep"
DEADLINE = 60.0
WORKLOADS = ("boot", "respawn", "footprint", "chain", "hang", "fan-in", "scale")
SCALE_SIZES = (100, 1000, 5000, 10000)
# The peers that can be configured for 10,000 services; the others take minutes for a
# few hundred (boot-100 above).
SCALE_TOOLS = ("muster", "s6", "runit")
# runsvdir.c: `#define MAXSERVICES 1000`; it ignores service directories past that.
RUNIT_MOST = 1000
CHAIN_LINKS = 10
CHAIN_DELAY_MS = 50
HANG_DEADLINE = 2      # seconds without a heartbeat before a tool acts, for every tool
HANG_AFTER = 3         # seconds the fixture heartbeats before it hangs
HANG_WAIT = 30         # seconds after the last heartbeat; no replacement by then: never
FAN_IN_CLIENTS = 100
# The workloads a tool has no means for, and why: a cell that reads "n/a" or "never".
NO_DEPENDENCIES = "n/a: no dependencies between services"
NO_LIVENESS = "never: no liveness check"
NO_ON_DEMAND = "n/a: starts nothing on a first connection"

# One service of chain-10-ready: listens on `port`, once `after` (a name, or None) is ready.
Link = collections.namedtuple("Link", "name argv port after")


def log(text):
    print(text, file=sys.stderr, flush=True)


def run(argv, **kwargs):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


# ---------------------------------------------------------------- installing


def install(skip, wanted):
    """Installs the peers in `wanted`; returns {tool: reason} for those that could not be."""
    missing = {}
    if skip:
        return missing
    python_tools = {"supervisord", "honcho", "circus"} & wanted
    os.makedirs(PEERS, exist_ok=True)
    if python_tools and not os.path.exists(os.path.join(VENV, "bin", "python")):
        log("installing supervisor, honcho, circus (PyPI)")
        made = run([sys.executable, "-m", "venv", VENV])
        if made.returncode != 0:
            for tool in ("supervisord", "honcho", "circus"):
                missing[tool] = "python3 -m venv failed: " + made.stderr.strip()[-200:]
    if python_tools and os.path.exists(os.path.join(VENV, "bin", "pip")):
        for package in ("supervisor", "honcho", "circus"):
            if os.path.exists(os.path.join(VENV, "bin", {"supervisor": "supervisord",
                                                         "circus": "circusd"}.get(package, package))):
                continue
            got = run([os.path.join(VENV, "bin", "pip"), "install", "-q", package])
            if got.returncode != 0:
                missing[{"supervisor": "supervisord"}.get(package, package)] = (
                    f"pip install {package} failed: " + got.stderr.strip()[-200:])
    if "pm2" in wanted and not os.path.exists(os.path.join(NPM, "node_modules", ".bin", "pm2")):
        if shutil.which("npm"):
            log("installing pm2 (npm)")
            os.makedirs(NPM, exist_ok=True)
            got = run(["npm", "install", "--silent", "--prefix", NPM, "pm2"])
            if got.returncode != 0:
                missing["pm2"] = "npm install pm2 failed: " + got.stderr.strip()[-200:]
        else:
            missing["pm2"] = "npm is not installed"
    if "horust" in wanted and not os.path.exists(os.path.join(CARGO, "bin", "horust")):
        log("installing horust (cargo install; a few minutes)")
        got = run(["cargo", "install", "--quiet", "--root", CARGO, "horust"])
        if got.returncode != 0:
            missing["horust"] = "cargo install horust failed: " + got.stderr.strip()[-200:]
    debian = [p for p, b in (("s6", "s6-svscan"), ("runit", "runsvdir"))
              if p in wanted and not shutil.which(b)]
    if debian:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            log("installing " + " ".join(debian) + " (Debian)")
            got = run(["apt-get", "install", "-y", "-q"] + debian,
                      env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
            if got.returncode != 0:
                for p in debian:
                    missing[p] = "apt-get install failed: " + got.stderr.strip()[-200:]
        else:
            for p in debian:
                missing[p] = "not installed, and apt-get needs root"
    return missing


def build(work, cargo):
    """Builds muster unless `cargo` is false (then the last release build is used), and
    compiles the C programs into `work`; returns muster's path and {program: path}."""
    muster = os.path.join(REPO, "target", "release", "muster")
    if cargo:
        log("building muster (release) and the C fixtures")
        got = run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
        if got.returncode != 0:
            sys.exit("cargo build --release failed:\n" + got.stderr)
    elif not os.path.exists(muster):
        sys.exit(f"--no-build: {muster} does not exist")
    programs = {}
    for name, flags in (("stamp", ["-static"]), ("hang", ["-static"]), ("listen", ["-static"]),
                        ("floor", [])):
        path = os.path.join(HERE, name + ".c")
        binary = programs[name] = os.path.join(work, name)
        built = run(["cc", "-O2"] + flags + ["-o", binary, path])
        if built.returncode != 0 and flags:
            built = run(["cc", "-O2", "-o", binary, path])
        if built.returncode != 0:
            sys.exit(f"cc {name}.c failed:\n{built.stderr}")
    return muster, programs


# ---------------------------------------------------------------- processes


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    return {"state": fields[0], "ppid": int(fields[1]), "utime": int(fields[11]),
            "stime": int(fields[12])}


def exe_name(pid):
    try:
        return os.path.basename(os.readlink(f"/proc/{pid}/exe"))
    except OSError:
        return ""


def memory_kib(pid, field):
    """`Rss` or `Pss` (resident pages, each shared page divided among its sharers)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def descendants(roots):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            s = stat(int(entry))
            if s and s["state"] != "Z":
                children.setdefault(s["ppid"], []).append(int(entry))
    seen, order, todo = set(), [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        order.append(pid)
        todo.extend(children.get(pid, []))
    return order


def supervisor_tree(roots, service_exes):
    """The supervisor's processes: `roots` and their descendants that are not services
    (nor the shells some tools run them through)."""
    return [p for p in descendants(roots)
            if exe_name(p) not in service_exes and stat(p) is not None]


def kill_tree(roots):
    for pid in reversed(descendants(roots)):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def read_stamp(path):
    try:
        with open(path) as f:
            pid, ns = f.read().split()
        return int(pid), int(ns)
    except (OSError, ValueError):
        return None


def wait(check, what, limit=DEADLINE, every=0.002):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(every)


# ---------------------------------------------------------------- the tools


class Tool:
    """One supervisor: how to configure it, start it, ask it what runs, and stop it."""

    name = ""
    status_how = ""
    ready_how = ""
    # {workload: the cell it gets, with the reason} for the workloads the tool has no
    # means for. The others need configure_chain and ready, configure_hang, or
    # configure_fan_in.
    cannot = {}

    def __init__(self, work):
        self.work = os.path.join(work, self.name)
        self.process = None

    def missing(self):
        return None

    def fresh(self):
        """An empty working directory: nothing from the previous run is read again."""
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)

    def prepare(self, services):
        """`services`: [(name, argv)]; writes the tool's configuration."""
        self.fresh()
        self.configure(services)

    def launch(self):
        raise NotImplementedError

    def running(self):
        """How many services the tool's own status reports running."""
        raise NotImplementedError

    def ready(self, name):
        """chain-10-ready: whether the tool's own status reports `name` ready."""
        raise NotImplementedError

    def roots(self):
        return [self.process.pid] if self.process else []

    def stop(self):
        # The tree as it was before the tool was asked: a supervisor that exits at once
        # (runsvdir on SIGTERM) leaves its children to init, no longer its descendants.
        tree = descendants(self.roots())
        self.terminate()
        kill_tree(tree)
        if self.process:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.process = None

    def stop_all(self):
        """Asks the tool to stop every service, without waiting (the scale workload)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def terminate(self):
        """Asks the tool to stop everything: SIGTERM, unless it documents another way."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass

    def spawn(self, argv, **kwargs):
        self.process = subprocess.Popen(argv, cwd=self.work, stdin=subprocess.DEVNULL,
                                        stdout=kwargs.pop("stdout", subprocess.DEVNULL),
                                        stderr=kwargs.pop("stderr", subprocess.DEVNULL),
                                        start_new_session=True, **kwargs)


class Muster(Tool):
    name = "muster"
    status_how = "`muster status --json`: services in state healthy"
    ready_how = "`muster status --json`: state healthy"
    # Restarted at once, however often: what the respawn and hang workloads measure.
    restart = ['restart = "always"', 'backoff = { initial = "0s", max = "0s" }',
               'restart-limit = { count = 1000000, within = "1s" }']

    def __init__(self, work, binary):
        super().__init__(work)
        self.binary = binary

    def write(self, services):
        """`services`: [(name, [TOML line, ...])], the `command` line first."""
        with open(os.path.join(self.work, "muster.toml"), "w") as f:
            f.write('[settings]\nstate-dir = "state"\n')
            for name, lines in services:
                f.write(f"\n[services.{name}]\n" + "".join(line + "\n" for line in lines))

    def configure(self, services):
        self.write([(name, [f"command = {json.dumps(argv)}"] + self.restart)
                    for name, argv in services])

    def configure_chain(self, links):
        # The readiness probe at its default interval (100 ms), as a user would write it.
        self.write([(link.name, [f"command = {json.dumps(link.argv)}",
                                 f'ready = {{ tcp = "127.0.0.1:{link.port}" }}']
                     + ([f'depends-on = ["{link.after}"]'] if link.after else []))
                    for link in links])

    def configure_hang(self, argv):
        self.write([("hang", [f"command = {json.dumps(argv)}",
                              f'watchdog = "{HANG_DEADLINE}s"'] + self.restart)])

    def configure_fan_in(self, argv, upstream, listen):
        self.write([("upstream", [
            f"command = {json.dumps(argv)}",
            f'ports = ["127.0.0.1:{upstream}"]',
            "autostart = false",
            f'ready = {{ tcp = "127.0.0.1:{upstream}" }}',
            f'proxy = {{ listen = "127.0.0.1:{listen}", upstream = "127.0.0.1:{upstream}" }}'])])

    def launch(self):
        self.spawn([self.binary, "up", "--no-progress", "-f", "muster.toml"])

    def states(self):
        """{service: state}, as `muster status --json` reports them."""
        got = run([self.binary, "status", "--json", "-f", "muster.toml"], cwd=self.work)
        if got.returncode != 0:
            return {}
        return {s["name"]: s["state"] for s in json.loads(got.stdout)["services"]}

    def running(self):
        return sum(1 for state in self.states().values() if state == "healthy")

    def ready(self, name):
        return self.states().get(name) == "healthy"


class Supervisord(Tool):
    name = "supervisord"
    status_how = "XML-RPC `getAllProcessInfo`: processes in state RUNNING"
    cannot = {
        "chain": NO_DEPENDENCIES + " (`priority` only orders the start)",
        "hang": NO_LIVENESS + " (superlance's `httpok`, a separate package, restarts a "
                "program whose HTTP GET fails: no heartbeat)",
        "fan-in": NO_ON_DEMAND,
    }

    def missing(self):
        return None if os.path.exists(os.path.join(VENV, "bin", "supervisord")) else "not installed"

    def configure(self, services):
        self.port = free_port()
        with open(os.path.join(self.work, "supervisord.conf"), "w") as f:
            f.write(f"[supervisord]\nlogfile={self.work}/supervisord.log\n"
                    f"pidfile={self.work}/supervisord.pid\nnodaemon=true\n"
                    f"[inet_http_server]\nport=127.0.0.1:{self.port}\n"
                    "[rpcinterface:supervisor]\nsupervisor.rpcinterface_factory = "
                    "supervisor.rpcinterface:make_main_rpcinterface\n")
            for name, argv in services:
                # startsecs=0: RUNNING as soon as spawned, as the others count it.
                f.write(f"\n[program:{name}]\ncommand={' '.join(argv)}\nstartsecs=0\n"
                        "autorestart=true\nstdout_logfile=NONE\nstderr_logfile=NONE\n")

    def launch(self):
        self.spawn([os.path.join(VENV, "bin", "supervisord"), "-c", "supervisord.conf"])

    def running(self):
        try:
            server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{self.port}/RPC2")
            return sum(1 for p in server.supervisor.getAllProcessInfo() if p["statename"] == "RUNNING")
        except (OSError, xmlrpc.client.Error):
            return 0


class Honcho(Tool):
    name = "honcho"
    status_how = "no status command: its own `started (pid=N)` lines"
    cannot = {
        "chain": NO_DEPENDENCIES + " (a Procfile is one command a line)",
        "hang": NO_LIVENESS + ", nor restarts",
        "fan-in": NO_ON_DEMAND,
    }

    def missing(self):
        return None if os.path.exists(os.path.join(VENV, "bin", "honcho")) else "not installed"

    def configure(self, services):
        with open(os.path.join(self.work, "Procfile"), "w") as f:
            for name, argv in services:
                f.write(f"{name}: exec {' '.join(argv)}\n")
        self.output = os.path.join(self.work, "honcho.out")

    def launch(self):
        self.log = open(self.output, "w")
        self.spawn([os.path.join(VENV, "bin", "honcho"), "start"], stdout=self.log,
                   env=dict(os.environ, PYTHONUNBUFFERED="1"))

    def running(self):
        with open(self.output) as f:
            return f.read().count(" started (pid=")


class Circus(Tool):
    name = "circus"
    status_how = "`circusctl status`: watchers active"
    cannot = {
        "chain": NO_DEPENDENCIES + " (`priority` only orders the start)",
        "fan-in": NO_ON_DEMAND + " (circusd can hold a watcher's socket, but starts the "
                  "process with itself)",
    }

    def missing(self):
        return None if os.path.exists(os.path.join(VENV, "bin", "circusd")) else "not installed"

    def configure(self, services, plugins=""):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        with open(os.path.join(self.work, "circus.ini"), "w") as f:
            f.write(f"[circus]\nendpoint = {self.endpoint}\npubsub_endpoint = "
                    f"tcp://127.0.0.1:{free_port()}\nstatsd = false\n")
            for name, argv in services:
                f.write(f"\n[watcher:{name}]\ncmd = {' '.join(argv)}\nnumprocesses = 1\n")
            f.write(plugins)

    def configure_hang(self, argv):
        # The watchdog plugin kills a process it has had no "pid;timestamp" datagram from
        # for loop_rate * max_count seconds, looking every loop_rate; the watcher then
        # starts another. watchers_regex: by default it watches every watcher, itself too
        # (a plugin runs as one), and kills itself for want of heartbeats.
        port = free_port(socket.SOCK_DGRAM)
        self.configure([("hang", argv + [f"udp:{port}"])],
                       "\n[plugin:watchdog]\nuse = circus.plugins.watchdog.WatchDog\n"
                       f"watchers_regex = ^hang$\nloop_rate = 1\nmax_count = {HANG_DEADLINE}\n"
                       f"ip = 127.0.0.1\nport = {port}\n")

    def launch(self):
        self.spawn([os.path.join(VENV, "bin", "circusd"), "circus.ini"])

    def running(self):
        got = run([os.path.join(VENV, "bin", "circusctl"), "--endpoint", self.endpoint,
                   "--timeout", "5", "status"])
        return got.stdout.count(": active")


class Pm2(Tool):
    name = "pm2"
    status_how = "`pm2 jlist`: apps with status online"
    cannot = {
        "chain": NO_DEPENDENCIES + " (the ecosystem file has no key for one)",
        "hang": NO_LIVENESS + " (it restarts on exit, memory, cron or file changes)",
        "fan-in": NO_ON_DEMAND,
    }

    def missing(self):
        return None if os.path.exists(self.pm2()) else "not installed"

    def pm2(self):
        return os.path.join(NPM, "node_modules", ".bin", "pm2")

    def env(self):
        return dict(os.environ, PM2_HOME=os.path.join(self.work, "home"))

    def configure(self, services):
        apps = [{"name": name, "script": argv[0], "args": argv[1:], "interpreter": "none",
                 "autorestart": True, "min_uptime": 0, "restart_delay": 0}
                for name, argv in services]
        with open(os.path.join(self.work, "ecosystem.config.js"), "w") as f:
            f.write("module.exports = " + json.dumps({"apps": apps}) + ";\n")

    def launch(self):
        # `pm2 start` starts the daemon, hands it the apps and returns; the daemon is
        # what supervises. Asking `pm2 jlist` before it returns would start a second one.
        run([self.pm2(), "start", "ecosystem.config.js"], cwd=self.work, env=self.env())

    def daemon(self):
        try:
            with open(os.path.join(self.work, "home", "pm2.pid")) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def roots(self):
        return [p for p in (self.daemon(),) if p]

    def running(self):
        got = run([self.pm2(), "jlist"], env=self.env())
        try:
            return sum(1 for app in json.loads(got.stdout) if app["pm2_env"]["status"] == "online")
        except (ValueError, KeyError):
            return 0

    def terminate(self):
        run([self.pm2(), "kill"], env=self.env())
        super().terminate()


class ScanDirectory(Tool):
    """s6 and runit: a directory of service directories, each with a `run` script."""

    def fresh(self):
        super().fresh()
        self.dirs = []

    def configure(self, services):
        for name, argv in services:
            self.service_dir(name, ["exec " + " ".join(argv)])

    def service_dir(self, name, run_lines):
        """Makes scan/NAME with a `run` script of these lines; returns its path."""
        directory = os.path.join(self.work, "scan", name)
        os.makedirs(directory)
        write_file(os.path.join(directory, "run"), "#!/bin/sh\n" + "".join(
            line + "\n" for line in run_lines), 0o755)
        self.dirs.append(directory)
        return directory


class S6(ScanDirectory):
    name = "s6"
    status_how = "each service's `supervise/status` (what `s6-svstat` reads): a pid"
    ready_how = "`s6-svstat -o up,ready`: `true true`"
    cannot = {
        "hang": NO_LIVENESS + " (`notification-fd` is for readiness only)",
        "fan-in": NO_ON_DEMAND + " (s6-networking's `s6-tcpserver` starts a process for "
                  "each connection: another model)",
    }

    def missing(self):
        return None if shutil.which("s6-svscan") else "not installed"

    def configure_chain(self, links):
        # Readiness is pushed: the fixture writes a newline on the fd named in
        # notification-fd once it listens; `s6-svwait -U` waits for that, without s6-rc.
        for link in links:
            wait = [f"s6-svwait -U ../{link.after} || exit 1"] if link.after else []
            directory = self.service_dir(
                link.name, wait + ["exec " + " ".join(link.argv + ["ready-fd:3"])])
            write_file(os.path.join(directory, "notification-fd"), "3\n")

    def launch(self):
        # `-c`: how many services s6-svscan makes room for (500 by default).
        self.spawn(["s6-svscan", "-c", str(max(500, len(self.dirs) + 10)),
                    os.path.join(self.work, "scan")])

    def running(self):
        up = 0
        for directory in self.dirs:
            try:
                with open(os.path.join(directory, "supervise", "status"), "rb") as f:
                    data = f.read()
            except OSError:
                continue
            # s6_svstatus_t: stamp (12), readystamp (12), pid (8, big-endian), ...
            if len(data) >= 32 and int.from_bytes(data[24:32], "big") != 0:
                up += 1
        return up

    def ready(self, name):
        got = run(["s6-svstat", "-o", "up,ready", os.path.join(self.work, "scan", name)])
        return got.stdout.split() == ["true", "true"]

    def terminate(self):
        if self.process and self.process.poll() is None:
            run(["s6-svscanctl", "-t", os.path.join(self.work, "scan")])
        super().terminate()

    def stop_all(self):
        # s6-svscanctl -t: every s6-supervise gets SIGTERM and brings its service down.
        if self.process and self.process.poll() is None:
            run(["s6-svscanctl", "-t", os.path.join(self.work, "scan")])


class Runit(ScanDirectory):
    name = "runit"
    status_how = "`sv status` on every service: `run:`"
    ready_how = "`sv check`: `ok: run:` (up, and its ./check passes)"
    cannot = {
        "hang": NO_LIVENESS + " (`./check` is run by `sv` commands only)",
        "fan-in": NO_ON_DEMAND + " (ipsvd's `tcpsvd` starts a process for each "
                  "connection: another model)",
    }

    def missing(self):
        return None if shutil.which("runsvdir") else "not installed"

    def configure_chain(self, links):
        # runit's documented dependency: `sv start` in the run script, which waits (up to
        # 7 s) for the other service to be up and its ./check script to pass.
        for link in links:
            start = [f"sv start ../{link.after} || exit 1"] if link.after else []
            directory = self.service_dir(link.name, start + ["exec " + " ".join(link.argv)])
            write_file(os.path.join(directory, "check"),
                  f"#!/bin/sh\nexec {link.argv[0]} probe {link.port}\n", 0o755)

    def launch(self):
        self.spawn(["runsvdir", "-P", os.path.join(self.work, "scan")])

    def stop_all(self):
        # runsvdir(8): on SIGHUP it sends TERM to each runsv, which stops its service
        # and exits (on SIGTERM runsvdir itself would exit and leave them running).
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGHUP)

    def running(self):
        got = run(["sv", "status"] + self.dirs)
        return sum(1 for line in got.stdout.splitlines() if line.startswith("run:"))

    def ready(self, name):
        # `sv check` also says "ok" of a service that is down (its run script exited).
        got = run(["sv", "check", os.path.join(self.work, "scan", name)])
        return got.returncode == 0 and got.stdout.startswith("ok: run:")


class Horust(Tool):
    name = "horust"
    status_how = "no status command: its service children that are running"
    ready_how = "no status command: its own debug log, `StatusChanged(\"s10.toml\", Running)`"
    cannot = {"fan-in": NO_ON_DEMAND}
    restart = ["[restart]", 'strategy = "always"', 'backoff = "0s"', "attempts = 0"]

    def missing(self):
        return None if os.path.exists(self.horust()) else "not installed"

    def horust(self):
        return os.path.join(CARGO, "bin", "horust")

    def fresh(self):
        super().fresh()
        self.state_log = None

    def write(self, name, lines):
        directory = os.path.join(self.work, "services")
        os.makedirs(directory, exist_ok=True)
        write_file(os.path.join(directory, f"{name}.toml"),
                   "".join(line + "\n" for line in lines))

    def configure(self, services):
        self.services = [argv for _, argv in services]
        for name, argv in services:
            self.write(name, [f'command = "{" ".join(argv)}"'] + self.restart)

    def configure_chain(self, links):
        # Its documented readiness: a file the service creates once it is ready; horust
        # removes it before the start and checks for it once a second.
        self.state_log = os.path.join(self.work, "horust.log")
        for link in links:
            flag = os.path.join(self.work, link.name + ".ready")
            lines = [f'command = "{" ".join(link.argv + ["ready-file:" + flag])}"']
            if link.after:
                lines.append(f'start-after = ["{link.after}.toml"]')
            self.write(link.name, lines + ["[healthiness]", f'file-path = "{flag}"'])

    def configure_hang(self, argv):
        # A health-check command (run once a second) that fails once the heartbeat file
        # is older than the deadline; max-failed = 0: the first failure kills the
        # service, and the restart strategy starts another.
        beat = os.path.join(self.work, "heartbeat")
        check = os.path.join(self.work, "heartbeat-fresh")
        write_file(check, "#!/bin/sh\n"
                          f"# Healthy while $1 was touched in the last {HANG_DEADLINE} seconds.\n"
                          f"test -n \"$(find \"$1\" -newermt '{HANG_DEADLINE} seconds ago')\"\n",
                   0o755)
        self.write("hang", [f'command = "{" ".join(argv + ["file:" + beat])}"'] + self.restart
                   + ["[healthiness]", f'command = "{check} {beat}"', "max-failed = 0"])

    def launch(self):
        argv = [self.horust(), "--services-path", os.path.join(self.work, "services")]
        if self.state_log is None:
            self.spawn(argv)
            return
        # At debug level horust logs every state change: the only status it gives.
        with open(self.state_log, "w") as log:
            self.spawn(argv, stderr=log, env=dict(os.environ, HORUST_LOG="debug"))

    def running(self):
        names = {os.path.basename(argv[0]) for argv in self.services}
        return sum(1 for p in descendants(self.roots())[1:] if exe_name(p) in names)

    def ready(self, name):
        with open(self.state_log) as f:
            return f'StatusChanged("{name}.toml", Running)' in f.read()


def raise_descriptor_limit():
    """The soft limit on descriptors up to the hard one, for the floor and the tools."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def write_file(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def free_port(kind=socket.SOCK_STREAM):
    """A loopback port the OS had free, for TCP or (SOCK_DGRAM) UDP."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port):
    """Whether a socket listens on `port`, read from /proc/net/tcp: no connection is made."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return True
    return False


# ---------------------------------------------------------------- workloads


def boot(tool, count):
    tool.prepare([(f"s{i:03}", [SLEEP, "3600"]) for i in range(count)])
    began = time.monotonic()
    tool.launch()
    try:
        wait(lambda: tool.running() >= count, f"{tool.name}: {count} running")
        return time.monotonic() - began
    finally:
        tool.stop()


def respawn(tool, stamp, rounds):
    stamp_file = os.path.join(tool.work + ".stamp")
    if os.path.exists(stamp_file):
        os.unlink(stamp_file)
    tool.prepare([("target", [stamp, stamp_file])])
    tool.launch()
    took = []
    try:
        pid, _ = wait(lambda: read_stamp(stamp_file), f"{tool.name}: fixture started")
        for _ in range(rounds):
            killed = time.time_ns()
            os.kill(pid, signal.SIGKILL)
            try:
                new_pid, ns = wait(lambda: (s := read_stamp(stamp_file)) and s[0] != pid and s,
                                   f"{tool.name}: respawn", limit=10)
            except TimeoutError:
                return None
            took.append((ns - killed) / 1e9)
            pid = new_pid
            # s6, runit and others hold back a restart of a process that lived under a
            # second: let each run live past that, as a real service does.
            time.sleep(1.5)
        return took
    finally:
        tool.stop()


def footprint(tool, count, idle):
    tool.prepare([(f"s{i:03}", [SLEEP, "3600"]) for i in range(count)])
    tool.launch()
    try:
        wait(lambda: tool.running() >= count, f"{tool.name}: {count} running")
        time.sleep(1)
        services = {"sleep"}
        tree = supervisor_tree(tool.roots(), services)
        rss = memory_kib(tool.roots()[0], "Rss")
        pss = sum(memory_kib(p, "Pss") for p in tree)
        before = {p: stat(p) for p in tree}
        time.sleep(idle)
        ticks = 0
        for pid, first in before.items():
            now = stat(pid)
            if first and now:
                ticks += (now["utime"] + now["stime"]) - (first["utime"] + first["stime"])
        cpu = ticks / os.sysconf("SC_CLK_TCK") / idle * 100
        return rss / 1024, cpu, len(tree), pss / 1024
    finally:
        tool.stop()


def scale(tool, count):
    """(boot s, down s, descriptors, RSS KiB of the main process) with `count` sleeps:
    boot is launch to the tool's own status reporting all running, down is asking it to
    stop them all until no service process is left and the tool has exited."""
    tool.prepare([(f"s{i:05}", [SLEEP, "3600"]) for i in range(count)])
    limit = max(DEADLINE, count * 0.03)
    began = time.monotonic()
    tool.launch()
    try:
        # Asked every 50 ms: a status of thousands of services is itself work, which
        # would otherwise take the machine from the boot it measures.
        wait(lambda: tool.running() >= count, f"{tool.name}: {count} running", limit, 0.05)
        booted = time.monotonic() - began
        root = tool.roots()[0]
        fds = len(os.listdir(f"/proc/{root}/fd"))
        rss = memory_kib(root, "Rss")
        services = [p for p in descendants(tool.roots()) if exe_name(p) == "sleep"]
        began = time.monotonic()
        tool.stop_all()

        def gone():
            alive = [p for p in services if (s := stat(p)) and s["state"] != "Z"]
            return not alive and tool.process.poll() is not None
        wait(gone, f"{tool.name}: {count} stopped", limit, 0.01)
        return booted, time.monotonic() - began, fds, rss
    finally:
        tool.stop()


def scale_report(tools, results, floors, sizes):
    """Per-service costs against N: a table and a plot in text."""
    print("Scale: per service, boot (launch to all running, by the tool's own status) and "
          "down (stop asked to every service process gone), beside the floor (posix_spawn "
          "of N `sleep`s, each with an output pipe, until each has exec'd; SIGTERM to all "
          "and reap).")
    print()
    names = [t.name for t in tools]
    print("| N | floor spawn | " + " | ".join(f"{n} boot" for n in names) +
          " | floor down | " + " | ".join(f"{n} down" for n in names) + " |")
    print("|---|---|" + "---|" * len(names) + "---|" + "---|" * len(names))
    for size in sizes:
        spawn = floors.get(f"spawn-{size}")
        down = floors.get(f"down-{size}")

        def per(seconds, floor_ms):
            ms = seconds * 1000 / size
            ratio = f" ({ms / (floor_ms / size):.2f}x)" if floor_ms else ""
            return f"{ms:.2f} ms{ratio}"

        cells = [f"{size}", f"{spawn / size:.2f} ms" if spawn else "n/a"]
        for name in names:
            got = results.get(name, {}).get(size)
            cells.append(got if isinstance(got, str) else per(got[0], spawn) if got else "n/a")
        cells.append(f"{down / size:.3f} ms" if down else "n/a")
        for name in names:
            got = results.get(name, {}).get(size)
            cells.append("n/a" if isinstance(got, str) or not got else
                         f"{got[1] * 1000 / size:.3f} ms" + (f" ({got[1] * 1000 / down:.2f}x)" if down else ""))
        print("| " + " | ".join(cells) + " |")
    print()
    muster = results.get("muster", {})
    rows = [(size, muster[size]) for size in sizes if isinstance(muster.get(size), tuple)]
    if rows:
        base_size, base = rows[0]
        print("muster's main process: " + "; ".join(
            f"N={size}: {got[2]} descriptors, RSS {got[3] / 1024:.1f} MiB"
            + (f" ({(got[3] - base[3]) / (size - base_size):.1f} KiB per service above N={base_size})"
               if size != base_size else "")
            for size, got in rows) + ".")
        print()
    # Boot per service against N, one bar per tool and size (ms per service).
    print("```")
    print("boot, ms per service (floor: spawn alone)")
    series = [("floor", {size: floors[f"spawn-{size}"] / 1000 for size in sizes
                         if f"spawn-{size}" in floors})]
    series += [(name, {size: got[0] for size, got in results.get(name, {}).items()
                       if isinstance(got, tuple)}) for name in names]
    top = max((secs * 1000 / size for _, values in series for size, secs in values.items()),
              default=1)
    for size in sizes:
        for label, values in series:
            if size in values:
                ms = values[size] * 1000 / size
                print(f"N={size:<6} {label:<7} {'#' * max(1, round(ms / top * 50)):<50} {ms:.2f}")
        print()
    print("```")
    print()


def chain(tool, listen):
    """Seconds from launching the tool to its own status reporting the last link ready."""
    links = []
    for i in range(1, CHAIN_LINKS + 1):
        port = free_port()
        links.append(Link(f"s{i}", [listen, str(port), str(CHAIN_DELAY_MS)], port,
                          f"s{i - 1}" if i > 1 else None))
    tool.fresh()
    tool.configure_chain(links)
    began = time.monotonic()
    tool.launch()
    try:
        wait(lambda: tool.ready(links[-1].name), f"{tool.name}: {links[-1].name} ready")
        return time.monotonic() - began
    finally:
        tool.stop()


def hang(tool, fixture):
    """Seconds from the fixture's last heartbeat to its replacement's start stamp, or
    None when no replacement starts within HANG_WAIT."""
    stamp_file = tool.work + ".hang"
    for path in (stamp_file, stamp_file + ".last"):
        if os.path.exists(path):
            os.unlink(path)
    tool.fresh()
    tool.configure_hang([fixture, stamp_file, str(HANG_AFTER)])
    tool.launch()
    try:
        pid, _ = wait(lambda: read_stamp(stamp_file), f"{tool.name}: fixture started")
        _, last = wait(lambda: (s := read_stamp(stamp_file + ".last")) and s[0] == pid and s,
                       f"{tool.name}: fixture heartbeating, then hanging",
                       limit=HANG_AFTER + DEADLINE)
        try:
            _, started = wait(lambda: (s := read_stamp(stamp_file)) and s[0] != pid and s,
                              f"{tool.name}: hung fixture replaced", limit=HANG_WAIT)
        except TimeoutError:
            return None
        return (started - last) / 1e9
    finally:
        tool.stop()


def fan_in(tool, listen):
    """FAN_IN_CLIENTS clients at once on the proxy of a service not yet started; returns
    (seconds until the last answer, starts of the service, clients answered)."""
    starts_file = tool.work + ".starts"
    if os.path.exists(starts_file):
        os.unlink(starts_file)
    upstream, proxy = free_port(), free_port()
    tool.fresh()
    tool.configure_fan_in([listen, str(upstream), "0", "count:" + starts_file], upstream, proxy)
    tool.launch()
    try:
        wait(lambda: listening(proxy), f"{tool.name}: proxy listening")
        took, answered = clients(proxy, FAN_IN_CLIENTS)
        try:
            with open(starts_file) as f:
                starts = len(f.read().split())
        except FileNotFoundError:
            starts = 0
        return took, starts, answered
    finally:
        tool.stop()


def clients(port, count):
    """`count` connections opened together, each reading its one-line answer; returns
    (seconds from their release to the last answer, answers)."""
    barrier = threading.Barrier(count + 1)
    answered = []

    def client():
        with socket.socket() as s:
            s.settimeout(DEADLINE)
            barrier.wait()
            try:
                s.connect(("127.0.0.1", port))
                line = s.makefile().readline()
            except OSError:
                return
            if line.startswith("ok "):
                answered.append(time.monotonic())

    threads = [threading.Thread(target=client) for _ in range(count)]
    for thread in threads:
        thread.start()
    wait(lambda: barrier.n_waiting == count, "clients ready")
    began = time.monotonic()
    barrier.wait()
    for thread in threads:
        thread.join()
    return (max(answered) - began if answered else None), len(answered)


# ---------------------------------------------------------------- report


def cell(values, unit, scale=1.0, digits=2):
    if not values:
        return "n/a"
    values = [v * scale for v in values]
    med = statistics.median(values)
    return f"{med:.{digits}f} {unit} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def ratio(values, reference):
    if not values or not reference:
        return ""
    return f"{statistics.median(values) / statistics.median(reference):.1f}x"


def versus(values, reference, tool):
    """" · 1.9x" after a peer's median: its ratio to muster's."""
    text = ratio(values, reference)
    return f" · {text}" if text and tool.name != "muster" else ""


def chain_cell(tool, chains):
    if "chain" in tool.cannot:
        return tool.cannot["chain"]
    values = chains[tool.name]
    if not values:
        return f"no result: every run timed out ({DEADLINE:g} s)"
    return cell(values, "s", digits=3) + versus(values, chains.get("muster"), tool)


def hang_cell(tool, hangs):
    if "hang" in tool.cannot:
        return tool.cannot["hang"]
    results = hangs[tool.name]
    values = [v for v in results if v is not None]
    if not values:
        return f"never (no replacement {HANG_WAIT} s after the last heartbeat)" if results else "n/a"
    reference = [v for v in hangs.get("muster", []) if v is not None]
    text = cell(values, "s", digits=3) + versus(values, reference, tool)
    missed = len(results) - len(values)
    return text + (f" · never in {missed} of {len(results)}" if missed else "")


def fan_in_cell(tool, fan_ins):
    if "fan-in" in tool.cannot:
        return tool.cannot["fan-in"]
    results = fan_ins[tool.name]
    times = [took for took, _, _ in results if took is not None]
    if not times:
        return "n/a: no client was answered" if results else "n/a"
    starts = sorted({count for _, count, _ in results})
    starts_text = (f"{starts[0]} start" + ("s" if starts[0] != 1 else "") if len(starts) == 1
                   else f"{starts[0]}–{starts[-1]} starts")
    answered = min(count for _, _, count in results)
    answered_text = (f"{answered}/{FAN_IN_CLIENTS} answered"
                     + (" in the worst run" if answered < FAN_IN_CLIENTS else ""))
    reference = [took for took, _, _ in fan_ins.get("muster", []) if took is not None]
    return (cell(times, "s", digits=3) + versus(times, reference, tool)
            + f" · {starts_text} · {answered_text}")


def table(columns, tools, skipped):
    """`columns`: [(header, tool -> cell text)]."""
    print("| tool | " + " | ".join(header for header, _ in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for tool in tools:
        print(f"| {tool.name} | " + " | ".join(text(tool) for _, text in columns) + " |")
    for name, reason in skipped.items():
        print(f"| {name} | skipped: {reason} |" + " |" * (len(columns) - 1))
    print()


def repeat(tools, reps, label, measure):
    """{tool: [measure(tool), ...]}, `reps` times, alternating tools within each
    repetition; a run that times out is logged and left out."""
    results = {tool.name: [] for tool in tools}
    for rep in range(reps):
        for tool in tools:
            log(f"{label} {rep + 1}/{reps}: {tool.name}")
            try:
                results[tool.name].append(measure(tool))
            except TimeoutError as error:
                log(f"  {error}")
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions per tool of boot-100, chain-10-ready, hang and fan-in")
    parser.add_argument("--respawns", type=int, default=20)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle CPU measured")
    parser.add_argument("--only", help="comma-separated tools (muster is always run)")
    parser.add_argument("--workloads", help="comma-separated, of: " + ",".join(WORKLOADS))
    parser.add_argument("--scale-sizes", default=",".join(map(str, SCALE_SIZES)),
                        help="service counts of the scale workload")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--no-build", action="store_true",
                        help="use the last release build of muster instead of building it")
    args = parser.parse_args()
    selected = set(args.workloads.split(",")) if args.workloads else set(WORKLOADS)
    if selected - set(WORKLOADS):
        parser.error("unknown workload: " + ", ".join(sorted(selected - set(WORKLOADS))))

    names = {"muster", "s6", "runit", "honcho", "circus", "pm2", "supervisord", "horust"}
    if args.only:
        names = set(args.only.split(",")) | {"muster"}
    missing = install(args.no_install, names)
    work = tempfile.mkdtemp(prefix="muster-peers-")
    muster, programs = build(work, not args.no_build)
    tools = [Muster(work, muster)] + [cls(work) for cls in
                                      (S6, Runit, Honcho, Circus, Pm2, Supervisord, Horust)]
    tools = [t for t in tools if t.name in names]
    skipped = {}
    for tool in tools:
        reason = missing.get(tool.name) or tool.missing()
        if reason:
            skipped[tool.name] = reason
    tools = [t for t in tools if t.name not in skipped]

    def able(workload):
        return [t for t in tools if workload not in t.cannot] if workload in selected else []

    boots = repeat(tools if "boot" in selected else [], args.reps, "boot-100",
                   lambda tool: boot(tool, 100))
    respawns, footprints = {}, {}
    for tool in tools:
        if "respawn" in selected:
            log(f"respawn: {tool.name}")
            respawns[tool.name] = respawn(tool, programs["stamp"], args.respawns)
        if "footprint" in selected:
            log(f"footprint: {tool.name}")
            try:
                footprints[tool.name] = footprint(tool, 100, args.idle)
            except TimeoutError as error:
                log(f"  {error}")
    chains = repeat(able("chain"), args.reps, "chain-10-ready",
                    lambda tool: chain(tool, programs["listen"]))
    hangs = repeat(able("hang"), args.reps, "hang", lambda tool: hang(tool, programs["hang"]))
    fan_ins = repeat(able("fan-in"), args.reps, "fan-in",
                     lambda tool: fan_in(tool, programs["listen"]))

    sizes = [int(n) for n in args.scale_sizes.split(",")] if "scale" in selected else []
    scale_tools = [t for t in tools if t.name in SCALE_TOOLS] if sizes else []
    scales, scale_floors = {t.name: {} for t in scale_tools}, {}
    for size in sizes:
        # A supervisor of N services holds at least N descriptors; so does the floor.
        raise_descriptor_limit()
        got = run([programs["floor"], "scale", str(size)]).stdout
        scale_floors.update({line.split()[0]: float(line.split()[1])
                             for line in got.splitlines() if line.strip()})
        for tool in scale_tools:
            if tool.name == "runit" and size > RUNIT_MOST:
                scales[tool.name][size] = f"n/a: runsvdir holds at most {RUNIT_MOST}"
                continue
            log(f"scale {size}: {tool.name}")
            try:
                scales[tool.name][size] = scale(tool, size)
            except TimeoutError as error:
                log(f"  {error}")
                scales[tool.name][size] = f"not all running within {max(DEADLINE, size * 0.03):.0f} s"

    floor_out = run([programs["floor"], programs["stamp"], work]).stdout
    floors = {line.split()[0]: (float(line.split()[1]), line.split()[2])
              for line in floor_out.splitlines() if line.strip()}
    shutil.rmtree(work, ignore_errors=True)

    uname = os.uname()
    command = f"python3 bench/peers.py --reps {args.reps} --idle {args.idle:g}"
    if args.workloads:
        command += f" --workloads {args.workloads}"
    if args.scale_sizes != ",".join(map(str, SCALE_SIZES)):
        command += f" --scale-sizes {args.scale_sizes}"
    print(f"Measured {time.strftime('%Y-%m-%d')} on {uname.sysname} {uname.release}, "
          f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"`{command}`\n")

    def boot_text(tool):
        b = boots[tool.name]
        return cell(b, "s", digits=3) + versus(b, boots.get("muster"), tool)

    def respawn_text(tool):
        r = respawns.get(tool.name)
        return "never" if r is None else cell(r, "ms", 1000, 2) + versus(r, respawns.get("muster"), tool)

    def foot_text(tool):
        f = footprints.get(tool.name)
        return "n/a" if f is None else f"{f[3]:.1f} MiB ({f[2]}) · RSS {f[0]:.1f} MiB"

    def cpu_text(tool):
        f = footprints.get(tool.name)
        return "n/a" if f is None else f"{f[1]:.2f} %"

    first = [column for workload, column in (
        ("boot", ("boot-100", boot_text)), ("respawn", ("respawn", respawn_text)),
        ("footprint", ("supervisor PSS (processes) · main process RSS", foot_text)),
        ("footprint", ("idle CPU", cpu_text))) if workload in selected]
    if first:
        table(first, tools, skipped)
        print("Running, by each tool's own status: " + "; ".join(
            f"{tool.name}: {tool.status_how}" for tool in tools) + ".")
        print()
    second = [column for workload, column in (
        ("chain", ("chain-10-ready", lambda tool: chain_cell(tool, chains))),
        ("hang", (f"hang (deadline {HANG_DEADLINE} s)", lambda tool: hang_cell(tool, hangs))),
        ("fan-in", (f"fan-in ({FAN_IN_CLIENTS} clients)", lambda tool: fan_in_cell(tool, fan_ins))),
    ) if workload in selected]
    if second:
        table(second, tools, skipped)
    if "chain" in selected:
        print("Ready, by each tool's own status: " + "; ".join(
            f"{tool.name}: {tool.ready_how}" for tool in able("chain")) + ".")
        print()
    if sizes:
        scale_report(scale_tools, scales, scale_floors, sizes)
    print("Physical floor (bench/floor.c, same run): " + ", ".join(
        f"{name} {value:g} {unit}" for name, (value, unit) in floors.items()))


if __name__ == "__main__":
    main()
