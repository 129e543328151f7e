#!/usr/bin/env python3
"""One `muster up` of N `sleep` services, measured as a user would:

    python3 bench/scale_probe.py MUSTER_BINARY N    (WORKDIR=/dev/shm to keep it off the disk;
                                                    PERF=1 to record the boot with perf)

prints the time to the "services up" line and to all healthy, the descriptors, RSS and
CPU time of the supervisor, the median `status --json` and `GET /v1/services` times, and
how long `muster down` takes."""
import os, sys, subprocess, time, json, tempfile, signal, shutil
BIN = sys.argv[1]; N = int(sys.argv[2])
d = tempfile.mkdtemp(prefix="msc", dir=os.environ.get("WORKDIR"))
with open(f"{d}/muster.toml", "w") as f:
    f.write('[settings]\nstate-dir = "state"\n')
    for i in range(N):
        f.write(f'\n[services.s{i:05}]\ncommand = ["/bin/sleep", "3600"]\n')
t0 = time.monotonic()
p = subprocess.Popen([BIN, "up", "--no-progress", "-f", "muster.toml"], cwd=d,
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
first = None
perf = subprocess.Popen(["perf","record"]+os.environ.get("PERFARGS","-e cpu-clock -g").split()+["-o",os.path.join(tempfile.gettempdir(), "muster-boot.perf.data"),"-p",str(p.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if os.environ.get("PERF") else None
for line in p.stdout:
    if "services up" in line or " up" in line and "services" in line:
        first = time.monotonic() - t0; print("line:", line.strip()[:100]); break
def status():
    s = time.monotonic(); r = subprocess.run([BIN, "status", "--json", "-f", "muster.toml"], cwd=d, capture_output=True, text=True)
    return time.monotonic() - s, r
# wait healthy
while True:
    dt, r = status()
    if r.returncode == 0:
        st = json.loads(r.stdout)["services"]
        if sum(1 for s in st if s["state"] == "healthy") >= N: break
    time.sleep(0.05)
healthy = time.monotonic() - t0
if perf: perf.send_signal(signal.SIGINT); perf.wait()
import threading
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
fds = len(os.listdir(f"/proc/{p.pid}/fd"))
st = open(f"/proc/{p.pid}/stat").read().rsplit(")",1)[1].split()
cpu = (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
rss = [l for l in open(f"/proc/{p.pid}/status") if l.startswith("VmRSS")][0].split()[1]
ts = sorted(status()[0] for _ in range(5))
def api():
    s = time.monotonic(); r = subprocess.run(["curl","-s","--unix-socket",f"{d}/state/muster.sock","http://x/v1/services"], capture_output=True)
    return time.monotonic() - s, len(r.stdout)
apis = sorted(api() for _ in range(5))
print(f"api_med={apis[2][0]*1000:.0f}ms size={apis[2][1]}")
if os.environ.get("HOLD"): input("holding; enter to stop")
s = time.monotonic(); subprocess.run([BIN, "down", "-f", "muster.toml"], cwd=d, capture_output=True)
p.wait(); down = time.monotonic() - s
print(f"N={N} line={first and round(first,3)} healthy={healthy:.3f}s fds={fds} rss={rss}KiB cpu={cpu:.2f}s status_med={ts[2]*1000:.0f}ms down={down:.3f}s")
shutil.rmtree(d, ignore_errors=True)
