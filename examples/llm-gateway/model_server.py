"""A stand-in model server: "loads a model" for a few seconds, then answers HTTP.

It appends a line to starts.log each time it starts, so a demonstration (or a test) can
count how many copies were ever launched.

    python3 model_server.py --port 18650 --load-seconds 3
"""

import argparse
import json
import os
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, default=3.0)
    parser.add_argument("--starts", default="starts.log")
    args = parser.parse_args()

    with open(args.starts, "a") as starts:
        starts.write(f"{os.getpid()} {time.time():.3f}\n")
    print(f"loading the model ({args.load_seconds}s)...", flush=True)
    time.sleep(args.load_seconds)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.answer({"status": "ok", "pid": os.getpid()})

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            prompt = self.rfile.read(length).decode("utf-8", "replace")
            self.answer({"completion": f"an answer to {prompt!r}", "pid": os.getpid()})

        def answer(self, document):
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            print(format % args, flush=True)

    # A real model server takes many connections at once; the standard library's
    # default backlog of 5 would make the sixth client wait for a SYN retry.
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"model loaded; serving on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
