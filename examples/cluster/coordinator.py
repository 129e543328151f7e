"""The example's coordinator: answers every request with its host and fence.

    python3 coordinator.py HOST ADDRESS PORT

`MUSTER_FENCE` is the fence muster gave this run: a store the coordinator writes to
would keep the highest it has seen and refuse writes that carry a lower one.
"""

import http.server
import os
import sys

host, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fence = os.environ.get("MUSTER_FENCE", "?")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"coordinator on {host}, fence {fence}\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"coordinator on {host}, fence {fence}, listening on {address}:{port}", flush=True)
http.server.ThreadingHTTPServer((address, port), Handler).serve_forever()
