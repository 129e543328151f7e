"""A stand-in worker for the replicas example: an HTTP server on $PORT that says which
instance answered (MUSTER_REPLICA) and which device it was given. Standard library only."""

import http.server
import os

REPLICA = os.environ["MUSTER_REPLICA"]
DEVICE = os.environ.get("CUDA_VISIBLE_DEVICES", "")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"worker.{REPLICA} (CUDA_VISIBLE_DEVICES={DEVICE}) on port {os.environ['PORT']}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


print(f"worker.{REPLICA} listening on {os.environ['PORT']}", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
