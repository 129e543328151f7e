"""Six "agents" asking the model at the same time, through muster's proxy.

    python3 agents.py [--agents 6] [--url http://127.0.0.1:18600/v1/completions]

Each prints how long its answer took and which model process answered it. With muster
in front, every agent gets its answer from the same process: one start, six answers.
"""

import argparse
import json
import threading
import time
import urllib.request


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=6)
    parser.add_argument("--url", default="http://127.0.0.1:18600/v1/completions")
    args = parser.parse_args()

    results = [None] * args.agents
    began = time.monotonic()

    def agent(index):
        prompt = f"question {index}".encode()
        request = urllib.request.Request(args.url, data=prompt, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=300) as answer:
                document = json.load(answer)
            results[index] = (time.monotonic() - began, document.get("pid"), None)
        except Exception as error:  # a demonstration reports, never hides, a failure
            results[index] = (time.monotonic() - began, None, error)

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(args.agents)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    pids = set()
    for index, (seconds, pid, error) in enumerate(results):
        if error is None:
            pids.add(pid)
            print(f"agent {index}: answered by pid {pid} after {seconds:.2f}s")
        else:
            print(f"agent {index}: failed after {seconds:.2f}s: {error}")
    failed = sum(1 for r in results if r[2] is not None)
    print(f"{args.agents - failed} answers from {len(pids)} model process(es)")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
