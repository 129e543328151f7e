#!/usr/bin/env python3
"""A stand-in for an OpenAI-compatible model server (llama-server, vLLM), standard
library only: it "loads" for a while, then answers chat completions (streamed or not),
completions, embeddings and audio transcriptions for one model.

    server.py --port 8001 --model llama3-8b --load 2 --memory 8GiB

Options that make it useful to watch a router:
  --load SECONDS      time before /health answers 200 (the model "loading")
  --token-delay SECS  time between streamed tokens
  --record FILE       on SIGTERM, append {"model", "in_flight", "served"} as a JSON line
  --stamps FILE       append "began|loaded|stopping|exiting TIME" lines (wall clock)
A prompt containing "crash-mid-stream" makes the server die after its first token.
"""

import argparse
import json
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
LOADED = threading.Event()
LOCK = threading.Lock()
IN_FLIGHT = 0
SERVED = 0


def stamp(what):
    if ARGS.stamps:
        with open(ARGS.stamps, "a") as f:
            f.write("%s %s %.6f\n" % (ARGS.model, what, time.time()))


def track(delta):
    global IN_FLIGHT, SERVED
    with LOCK:
        IN_FLIGHT += delta
        if delta < 0:
            SERVED += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stderr
        sys.stderr.write("%s %s\n" % (ARGS.model, fmt % args))

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/health":
            if LOADED.is_set():
                self.send_json(200, {"status": "ok"})
            else:
                self.send_json(503, {"status": "loading model"})
        elif self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": ARGS.model, "object": "model"}]})
        elif self.path == "/stats":
            with LOCK:
                self.send_json(200, {"in_flight": IN_FLIGHT, "served": SERVED, "pid": os.getpid()})
        else:
            self.send_json(404, {"error": {"message": "no route " + self.path}})

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if not LOADED.is_set():
            self.send_json(503, {"error": {"message": "loading model"}})
            return
        track(+1)
        try:
            if self.path.startswith("/v1/audio/"):
                self.send_json(200, {"text": "transcribed by " + ARGS.model})
                return
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                self.send_json(400, {"error": {"message": "not JSON"}})
                return
            if self.path == "/v1/embeddings":
                self.send_json(200, {"object": "list", "model": ARGS.model,
                                     "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3]}]})
                return
            prompt = json.dumps(body.get("messages") or body.get("prompt") or "")
            words = ["Hello", " from", " " + ARGS.model, "."]
            if body.get("stream"):
                self.stream(words, "crash-mid-stream" in prompt)
            else:
                time.sleep(ARGS.token_delay * len(words))
                self.send_json(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": int(time.time()),
                    "model": ARGS.model,
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "".join(words)}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": len(words), "total_tokens": len(words) + 1},
                })
        finally:
            track(-1)

    def stream(self, words, crash):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(text):
            data = text.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

        for i, word in enumerate(words):
            event = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": int(time.time()),
                     "model": ARGS.model, "sent_at": time.time(),
                     "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            chunk("data: %s\n\n" % json.dumps(event))
            if crash:
                os._exit(3)
            time.sleep(ARGS.token_delay)
        chunk("data: [DONE]\n\n")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--model", default="model")
    parser.add_argument("--load", type=float, default=1.0)
    parser.add_argument("--token-delay", type=float, default=0.05)
    parser.add_argument("--memory", default="")
    parser.add_argument("--record", default="")
    parser.add_argument("--stamps", default="")
    ARGS = parser.parse_args()
    stamp("began")

    server = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    server.daemon_threads = True

    def stop(signum, frame):
        stamp("stopping")
        if ARGS.record:
            with LOCK:
                line = json.dumps({"model": ARGS.model, "in_flight": IN_FLIGHT, "served": SERVED})
            with open(ARGS.record, "a") as f:
                f.write(line + "\n")
        stamp("exiting")
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def load():
        time.sleep(ARGS.load)
        stamp("loaded")
        LOADED.set()
        print("%s loaded (%s) on port %d" % (ARGS.model, ARGS.memory or "no size given", ARGS.port), flush=True)

    threading.Thread(target=load, daemon=True).start()
    print("%s loading on port %d" % (ARGS.model, ARGS.port), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
