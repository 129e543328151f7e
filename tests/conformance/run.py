#!/usr/bin/env python3
"""API conformance: schemathesis against a real `muster up`, over loopback TCP with a token.

    python3 tests/conformance/run.py [--muster target/release/muster] [--examples N]

Starts muster on a small graph with the API on 127.0.0.1 (a port from the OS) behind a
control token, then runs schemathesis (`pip install schemathesis`) on the OpenAPI
document muster serves: every operation with generated paths, queries and headers,
every check (no 5xx, status codes and content types as documented, bodies matching their
schemas, error shapes). `POST /v1/shutdown` is left out of the generated runs (it would
end the run early) and exercised last, by hand, with its documented answer checked.
Afterwards muster must still be up until that shutdown, and exit cleanly after it.

Exit status: 0 when every check passed, 1 otherwise (schemathesis's report says which).
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
TOKEN = "conformance-control-token"
DEADLINE = 30.0

CONFIG = """
[settings]
state-dir = "{state}"

[settings.api]
listen = "127.0.0.1:{port}"
token-file = "control.token"

[services.db]
command = ["sleep", "3600"]

[services.worker]
command = ["sleep", "3600"]
depends-on = ["db"]

[services.model]
description = "on demand"
command = ["sleep", "3600"]
autostart = false
depends-on = ["db"]
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, method="GET", token=TOKEN):
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait(check, what):
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"conformance: {what} within {DEADLINE:.0f} s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--muster", default=os.path.join(REPO, "target", "release", "muster"))
    parser.add_argument("--examples", type=int, default=50,
                        help="examples per operation (schemathesis --max-examples)")
    args = parser.parse_args()
    # muster runs in its own work directory: a relative path must not depend on it.
    args.muster = os.path.abspath(args.muster)
    schemathesis = shutil.which("st") or shutil.which("schemathesis")
    if not schemathesis:
        sys.exit("conformance: schemathesis is not installed (pip install schemathesis)")

    work = tempfile.mkdtemp(prefix="muster-conformance-")
    port = free_port()
    with open(os.path.join(work, "control.token"), "w") as f:
        f.write(TOKEN + "\n")
    with open(os.path.join(work, "muster.toml"), "w") as f:
        f.write(CONFIG.format(state=os.path.join(work, "state"), port=port))
    log = open(os.path.join(work, "up.log"), "w")
    up = subprocess.Popen([args.muster, "up", "--no-progress", "-f", "muster.toml"], cwd=work,
                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    failed = True
    try:
        def healthy():
            status, body = get(port, "/v1/services")
            states = [s["state"] for s in json.loads(body)["services"]]
            return status == 200 and states.count("healthy") == 2
        wait(healthy, "db and worker were not healthy")

        # `follow=true` streams never end by design, and `ensure` answers 504 by design
        # when the timeout is shorter than a start: schemathesis sends `follow=false` and
        # a timeout of 30s (the fuzz target `api` covers both parameters' parsing).
        with open(os.path.join(work, "schemathesis.toml"), "w") as f:
            f.write('[parameters]\n"query.follow" = "false"\n"query.timeout" = "30s"\n')
        command = [
            schemathesis, "run", f"http://127.0.0.1:{port}/v1/openapi.json",
            "--header", f"Authorization: Bearer {TOKEN}",
            "--checks", "all",
            "--exclude-path", "/v1/shutdown",
            "--max-examples", str(args.examples),
            "--request-timeout", "10",
            "--workers", "1",
            # The same cases every run: a failure in CI reproduces locally.
            "--generation-deterministic",
        ]
        print("conformance: " + " ".join(command), flush=True)
        ran = subprocess.run(command, cwd=work)
        if up.poll() is not None:
            sys.exit(f"conformance: muster exited during the run ({up.returncode})")

        # Without a token or with a wrong one: 401 with the documented error shape.
        for token in ("", "wrong"):
            status, body = get(port, "/v1/services", token=token)
            error = json.loads(body)["error"]
            if status != 401 or error["kind"] != "unauthorized":
                sys.exit(f"conformance: token {token!r} answered {status}: {body!r}")

        status, body = get(port, "/v1/shutdown", method="POST")
        if status != 202 or json.loads(body) != {"shutting_down": True}:
            sys.exit(f"conformance: POST /v1/shutdown answered {status}: {body!r}")
        code = up.wait(timeout=DEADLINE)
        if code != 0:
            sys.exit(f"conformance: muster exited {code} after the shutdown")
        failed = ran.returncode != 0
        print("conformance: " + ("FAILED" if failed else "passed"), flush=True)
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait()
        log.close()
        if failed:
            with open(os.path.join(work, "up.log")) as f:
                print("--- muster up output\n" + f.read()[-4000:], file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
