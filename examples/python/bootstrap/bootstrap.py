"""Bootstrap: make sure the coordinator is up, then hand it a task.

Before muster this polled get_status() every 2 s for up to 60 s. Here it asks once with
`ensure`, which starts the coordinator if need be and answers when it has said READY=1,
or raises with the reason and the coordinator's last lines if it failed. Meanwhile it
shows what the coordinator prints (a follow of its log, no polling).
"""

import asyncio
import json
import os
import sys

import muster

HERE = os.path.dirname(os.path.abspath(__file__))


async def show(client: muster.AsyncClient) -> None:
    async for line in client.logs("coordinator", tail=0, follow=True):
        print(f"  coordinator | {line.text}", flush=True)


async def main() -> int:
    client = muster.AsyncClient(HERE)
    progress = asyncio.ensure_future(show(client))
    await asyncio.sleep(0)  # let the follow begin first
    try:
        endpoint = await client.ensure("coordinator", timeout=60)
    except muster.NotHealthy as error:
        print(f"bootstrap: the coordinator cannot be made healthy:\n{error}", file=sys.stderr)
        return 1
    except muster.Timeout as error:
        print(f"bootstrap: {error}", file=sys.stderr)
        return 1
    finally:
        progress.cancel()
        await asyncio.gather(progress, return_exceptions=True)
    print(f"bootstrap: coordinator pid {endpoint.pid} on {endpoint.address}: {endpoint.service.notify_status}")

    reader, writer = await asyncio.open_connection(endpoint.host, endpoint.port)
    writer.write(json.dumps({"type": "get_organism_status"}).encode() + b"\n")
    answer = json.loads(await reader.readline())
    writer.close()
    print(f"bootstrap: first task answered: {answer}")
    return 0 if answer.get("success") else 1


sys.exit(asyncio.run(main()))
