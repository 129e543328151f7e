"""The example's worker: asks the coordinator who it is, once a second, through this
host's proxy (which forwards to wherever the coordinator runs now).

    python3 worker.py HOST URL

Started once the coordinator is healthy somewhere; muster says where in
MUSTER_DEP_COORDINATOR_ADDR (and _HOST, _PORT, _FENCE) at the start.
"""

import os
import sys
import time
import urllib.request

host, url = sys.argv[1], sys.argv[2]
print(
    f"worker on {host}: the coordinator was at {os.environ.get('MUSTER_DEP_COORDINATOR_ADDR')} "
    f"(fence {os.environ.get('MUSTER_DEP_COORDINATOR_FENCE')}) when I started",
    flush=True,
)
while True:
    began = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=30) as answer:
            said = answer.read().decode().strip()
        waited = time.monotonic() - began
        print(f"worker on {host}: {said} (answered in {waited:.2f}s)", flush=True)
    except OSError as error:
        print(f"worker on {host}: no answer: {error}", flush=True)
    time.sleep(1)
