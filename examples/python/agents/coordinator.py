"""A stand-in for a coordinator that loads a model: it says what it is doing while it
loads (STATUS=, shown by `muster status`), then READY=1 once it answers on its port.

Each connection gets one line: which process answered, and the question echoed back.
"""

import argparse
import asyncio
import os

import muster


async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    question = (await reader.readline()).decode().strip()
    writer.write(f"coordinator {os.getpid()} heard: {question}\n".encode())
    await writer.drain()
    writer.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--load-seconds", type=float, default=2.0)
    args = parser.parse_args()

    shards = 4
    for shard in range(1, shards + 1):
        muster.status(f"loading shard {shard}/{shards}")
        await asyncio.sleep(args.load_seconds / shards)
    server = await asyncio.start_server(answer, "127.0.0.1", args.port)
    muster.ready(status=f"serving on 127.0.0.1:{args.port}")
    print(f"coordinator {os.getpid()} ready", flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
