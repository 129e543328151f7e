"""Logs: the last lines a service printed, and a follow of the new ones."""

from __future__ import annotations

import asyncio
import threading
from typing import List

import pytest

import muster
from conftest import PYTHON, wait_for

CONFIG = f"""
[services.talker]
command = ["{PYTHON}", "-u", "-c", "import sys, time\\nfor i in range(1, 6): print('line', i)\\nprint('oops', file=sys.stderr)\\ntime.sleep(3600)"]

[services.quiet]
command = ["sleep", "3600"]
"""


def test_tail_and_follow(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    wait_for(lambda: any(l.text == "oops" for l in client.logs("talker")), "talker's output")
    lines = list(client.logs("talker"))
    texts = [line.text for line in lines]
    assert texts[0].startswith("spawned pid") and lines[0].stream == "muster"
    assert texts[1:] == ["line 1", "line 2", "line 3", "line 4", "line 5", "oops"]
    assert [line.stream for line in lines[1:]] == ["stdout"] * 5 + ["stderr"]
    assert [line.text for line in client.logs("talker", tail=2)] == ["line 5", "oops"]
    assert {line.service for line in client.logs()} == {"talker", "quiet"}

    followed: List[muster.LogLine] = []
    stream = client.logs("talker", tail=0, follow=True)

    def follow() -> None:
        spawned = False
        for line in stream:
            followed.append(line)
            spawned = spawned or line.text.startswith("spawned pid")
            if spawned and line.text == "oops":
                return

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    # The follow is open once `logs` has returned: every line of the restart is in it.
    client.restart("talker")
    wait_for(lambda: any(l.text == "oops" for l in followed), "the restarted talker's lines followed")
    texts = [line.text for line in followed]
    assert "line 1" in texts and texts.index("line 1") < texts.index("oops")
    assert any(text.startswith("spawned pid") for text in texts)


def test_async_logs(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.aclient()

    async def main() -> List[str]:
        return [line.text async for line in client.logs("talker", tail=10)]

    wait_for(lambda: "oops" in asyncio.run(main()), "talker's output, read by the async client")

    async def too_many() -> None:
        async for _ in client.logs("talker", tail=200_000):
            pass

    with pytest.raises(muster.BadRequest) as caught:
        asyncio.run(too_many())
    assert "tail: at most 100000" in caught.value.message
