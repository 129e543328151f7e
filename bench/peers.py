#!/usr/bin/env python3
"""muster beside the supervisors people use today, on the same workloads, in one run.

    python3 bench/peers.py [--reps N] [--idle SECONDS] [--only TOOL,...] [--no-install]

Installs what it can (supervisor, honcho and circus from PyPI into bench/.peers/venv,
pm2 from npm into bench/.peers/npm, horust with `cargo install` into bench/.peers/cargo,
s6 and runit from Debian with apt-get when run as root), builds muster (release) and two
small C programs (the respawn fixture and the physical floor), then runs each workload
on each tool, alternating tools within each repetition, and prints a markdown table of
medians with the range and the ratio to muster. A tool that cannot be installed or run
is reported as skipped, with the reason.

Workloads (see bench/README.md for how each tool is configured and measured):
  boot-100   launch to the tool's own status reporting 100 `sleep` services running
  respawn    SIGKILL of a supervised process to its replacement's start stamp
  footprint  RSS of the supervisor and its helper processes with 100 services, and CPU
             used by them over an idle period
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
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


def build(work):
    log("building muster (release) and the C fixtures")
    got = run(["cargo", "build", "--release", "--quiet"], cwd=REPO)
    if got.returncode != 0:
        sys.exit("cargo build --release failed:\n" + got.stderr)
    stamp = os.path.join(work, "stamp")
    floor = os.path.join(work, "floor")
    for source, binary, flags in (("stamp.c", stamp, ["-static"]), ("floor.c", floor, [])):
        path = os.path.join(HERE, source)
        built = run(["cc", "-O2"] + flags + ["-o", binary, path])
        if built.returncode != 0 and flags:
            built = run(["cc", "-O2", "-o", binary, path])
        if built.returncode != 0:
            sys.exit(f"cc {source} failed:\n{built.stderr}")
    return os.path.join(REPO, "target", "release", "muster"), stamp, floor


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
    seen, todo = [], list(roots)
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.append(pid)
        todo.extend(children.get(pid, []))
    return seen


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


def wait(check, what, limit=DEADLINE):
    deadline = time.monotonic() + limit
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.002)


# ---------------------------------------------------------------- the tools


class Tool:
    """One supervisor: how to configure it, start it, ask it what runs, and stop it."""

    name = ""
    status_how = ""

    def __init__(self, work):
        self.work = os.path.join(work, self.name)
        self.process = None

    def missing(self):
        return None

    def prepare(self, services):
        """`services`: [(name, argv)]; writes the tool's configuration."""
        shutil.rmtree(self.work, ignore_errors=True)
        os.makedirs(self.work)
        self.configure(services)

    def launch(self):
        raise NotImplementedError

    def running(self):
        """How many services the tool's own status reports running."""
        raise NotImplementedError

    def roots(self):
        return [self.process.pid] if self.process else []

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        kill_tree(self.roots())
        if self.process:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.process = None

    def spawn(self, argv, **kwargs):
        self.process = subprocess.Popen(argv, cwd=self.work, stdin=subprocess.DEVNULL,
                                        stdout=kwargs.pop("stdout", subprocess.DEVNULL),
                                        stderr=subprocess.DEVNULL, start_new_session=True,
                                        **kwargs)


class Muster(Tool):
    name = "muster"
    status_how = "`muster status --json`: services in state healthy"

    def __init__(self, work, binary):
        super().__init__(work)
        self.binary = binary

    def configure(self, services):
        with open(os.path.join(self.work, "muster.toml"), "w") as f:
            f.write('[settings]\nstate-dir = "state"\n')
            for name, argv in services:
                f.write(f"\n[services.{name}]\ncommand = {json.dumps(argv)}\n"
                        'restart = "always"\nbackoff = { initial = "0s", max = "0s" }\n'
                        'restart-limit = { count = 1000000, within = "1s" }\n')

    def launch(self):
        self.spawn([self.binary, "up", "--no-progress", "-f", "muster.toml"])

    def running(self):
        got = run([self.binary, "status", "--json", "-f", "muster.toml"], cwd=self.work)
        if got.returncode != 0:
            return 0
        return sum(1 for s in json.loads(got.stdout)["services"] if s["state"] == "healthy")


class Supervisord(Tool):
    name = "supervisord"
    status_how = "XML-RPC `getAllProcessInfo`: processes in state RUNNING"

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

    def missing(self):
        return None if os.path.exists(os.path.join(VENV, "bin", "circusd")) else "not installed"

    def configure(self, services):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        with open(os.path.join(self.work, "circus.ini"), "w") as f:
            f.write(f"[circus]\nendpoint = {self.endpoint}\npubsub_endpoint = "
                    f"tcp://127.0.0.1:{free_port()}\nstatsd = false\n")
            for name, argv in services:
                f.write(f"\n[watcher:{name}]\ncmd = {' '.join(argv)}\nnumprocesses = 1\n")

    def launch(self):
        self.spawn([os.path.join(VENV, "bin", "circusd"), "circus.ini"])

    def running(self):
        got = run([os.path.join(VENV, "bin", "circusctl"), "--endpoint", self.endpoint,
                   "--timeout", "5", "status"])
        return got.stdout.count(": active")


class Pm2(Tool):
    name = "pm2"
    status_how = "`pm2 jlist`: apps with status online"

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

    def stop(self):
        run([self.pm2(), "kill"], env=self.env())
        super().stop()


class ScanDirectory(Tool):
    """s6 and runit: a directory of service directories, each with a `run` script."""

    def configure(self, services):
        self.dirs = []
        for name, argv in services:
            directory = os.path.join(self.work, "scan", name)
            os.makedirs(directory)
            script = os.path.join(directory, "run")
            with open(script, "w") as f:
                f.write("#!/bin/sh\nexec " + " ".join(argv) + "\n")
            os.chmod(script, 0o755)
            self.dirs.append(directory)


class S6(ScanDirectory):
    name = "s6"
    status_how = "each service's `supervise/status` (what `s6-svstat` reads): a pid"

    def missing(self):
        return None if shutil.which("s6-svscan") else "not installed"

    def launch(self):
        self.spawn(["s6-svscan", os.path.join(self.work, "scan")])

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

    def stop(self):
        if self.process and self.process.poll() is None:
            run(["s6-svscanctl", "-t", os.path.join(self.work, "scan")])
        super().stop()


class Runit(ScanDirectory):
    name = "runit"
    status_how = "`sv status` on every service: `run:`"

    def missing(self):
        return None if shutil.which("runsvdir") else "not installed"

    def launch(self):
        self.spawn(["runsvdir", "-P", os.path.join(self.work, "scan")])

    def running(self):
        got = run(["sv", "status"] + self.dirs)
        return sum(1 for line in got.stdout.splitlines() if line.startswith("run:"))


class Horust(Tool):
    name = "horust"
    status_how = "no status command: its service children that are running"

    def missing(self):
        return None if os.path.exists(self.horust()) else "not installed"

    def horust(self):
        return os.path.join(CARGO, "bin", "horust")

    def configure(self, services):
        directory = os.path.join(self.work, "services")
        os.makedirs(directory)
        self.services = [argv for _, argv in services]
        for name, argv in services:
            with open(os.path.join(directory, f"{name}.toml"), "w") as f:
                f.write(f'command = "{" ".join(argv)}"\n[restart]\nstrategy = "always"\n'
                        "backoff = \"0s\"\nattempts = 0\n")

    def launch(self):
        self.spawn([self.horust(), "--services-path", os.path.join(self.work, "services")])

    def running(self):
        names = {os.path.basename(argv[0]) for argv in self.services}
        return sum(1 for p in descendants(self.roots())[1:] if exe_name(p) in names)


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="boot-100 repetitions per tool")
    parser.add_argument("--respawns", type=int, default=20)
    parser.add_argument("--idle", type=float, default=30, help="seconds of idle CPU measured")
    parser.add_argument("--only", help="comma-separated tools (muster is always run)")
    parser.add_argument("--no-install", action="store_true")
    args = parser.parse_args()

    names = {"muster", "s6", "runit", "honcho", "circus", "pm2", "supervisord", "horust"}
    if args.only:
        names = set(args.only.split(",")) | {"muster"}
    missing = install(args.no_install, names)
    work = tempfile.mkdtemp(prefix="muster-peers-")
    muster, stamp, floor = build(work)
    tools = [Muster(work, muster)] + [cls(work) for cls in
                                      (S6, Runit, Honcho, Circus, Pm2, Supervisord, Horust)]
    if args.only:
        wanted = set(args.only.split(",")) | {"muster"}
        tools = [t for t in tools if t.name in wanted]
    skipped = {}
    for tool in tools:
        reason = missing.get(tool.name) or tool.missing()
        if reason:
            skipped[tool.name] = reason
    tools = [t for t in tools if t.name not in skipped]

    boots = {t.name: [] for t in tools}
    for rep in range(args.reps):
        for tool in tools:
            log(f"boot-100 {rep + 1}/{args.reps}: {tool.name}")
            try:
                boots[tool.name].append(boot(tool, 100))
            except TimeoutError as error:
                log(f"  {error}")
    respawns, footprints = {}, {}
    for tool in tools:
        log(f"respawn: {tool.name}")
        respawns[tool.name] = respawn(tool, stamp, args.respawns)
        log(f"footprint: {tool.name}")
        try:
            footprints[tool.name] = footprint(tool, 100, args.idle)
        except TimeoutError as error:
            log(f"  {error}")

    floor_out = run([floor, stamp, work]).stdout
    floors = {line.split()[0]: (float(line.split()[1]), line.split()[2])
              for line in floor_out.splitlines() if line.strip()}
    shutil.rmtree(work, ignore_errors=True)

    uname = os.uname()
    print(f"Measured {time.strftime('%Y-%m-%d')} on {uname.sysname} {uname.release}, "
          f"{os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
          f"`python3 bench/peers.py --reps {args.reps} --idle {args.idle:g}`\n")
    print("| tool | boot-100 | respawn | supervisor PSS (processes) · main process RSS | idle CPU |")
    print("|---|---|---|---|---|")
    reference = boots.get("muster")
    reference_respawn = respawns.get("muster")
    for tool in tools:
        b = boots[tool.name]
        r = respawns.get(tool.name)
        f = footprints.get(tool.name)
        boot_text = cell(b, "s", digits=3) + (f" · {ratio(b, reference)}" if tool.name != "muster" else "")
        respawn_text = ("never" if r is None else cell(r, "ms", 1000, 2)
                        + (f" · {ratio(r, reference_respawn)}" if tool.name != "muster" else ""))
        foot_text = "n/a" if f is None else f"{f[3]:.1f} MiB ({f[2]}) · RSS {f[0]:.1f} MiB"
        cpu_text = "n/a" if f is None else f"{f[1]:.2f} %"
        print(f"| {tool.name} | {boot_text} | {respawn_text} | {foot_text} | {cpu_text} |")
    for name, reason in skipped.items():
        print(f"| {name} | skipped: {reason} | | | |")
    print()
    print("Running, by each tool's own status: " + "; ".join(
        f"{tool.name}: {tool.status_how}" for tool in tools) + ".")
    print()
    print("Physical floor (bench/floor.c, same run): " + ", ".join(
        f"{name} {value:g} {unit}" for name, (value, unit) in floors.items()))


if __name__ == "__main__":
    main()
