"""`Client.scale`: a service with `replicas` run as more or fewer instances, and what
cannot be scaled refused with a typed error."""

from __future__ import annotations

import asyncio

import pytest

import muster

CONFIG = """
[services.worker]
command = ["sleep", "1000"]
replicas = 2

[services.single]
command = ["sleep", "1000"]
"""


def test_scale_runs_the_instances_asked_for(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    assert client.scale("worker", 3) == ["worker.0", "worker.1", "worker.2"]
    assert client.status("worker.2").name == "worker.2"
    assert client.scale("worker", 1) == ["worker.0"]
    with pytest.raises(muster.UnknownService):
        client.status("worker.1")


def test_scale_refuses_a_service_without_replicas_and_a_bad_count(supervisor):
    sup = supervisor(CONFIG).up()
    client = sup.client()
    with pytest.raises(muster.Refused) as refused:
        client.scale("single", 2)
    assert "has no `replicas`" in str(refused.value)
    with pytest.raises(muster.UnknownService):
        client.scale("nope", 2)
    with pytest.raises(ValueError):
        client.scale("worker", 0)


def test_the_async_client_scales_too(supervisor):
    sup = supervisor(CONFIG).up()

    async def scale() -> list:
        client = muster.AsyncClient(sup.config)
        return await client.scale("worker", 4)

    assert asyncio.run(scale()) == ["worker.0", "worker.1", "worker.2", "worker.3"]
