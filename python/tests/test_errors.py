"""Every way a call can fail, each an exception that says what is wrong and how to fix it,
carrying the API's kind, message, cause chain and log tail."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

import muster
from conftest import PYTHON, wait_for

GRAPH = """
[services.db]
command = ["sh", "-c", "echo 'FATAL: data directory missing' >&2; exit 3"]
autostart = false
restart = "never"
ready = { notify = true, timeout = "20s" }

[services.api]
command = ["sleep", "3600"]
autostart = false
depends-on = ["db"]

[services.slow]
command = ["sleep", "3600"]
autostart = false
ready = { tcp = "127.0.0.1:1", timeout = "30s" }

[services.slower]
command = ["sleep", "3600"]
autostart = false
ready = { tcp = "127.0.0.1:1", timeout = "30s" }

[services.coordinator]
command = ["sleep", "3600"]
autostart = false
"""


def test_no_supervisor_names_the_command_that_starts_one(supervisor):
    sup = supervisor(GRAPH)
    client = sup.client()
    with pytest.raises(muster.NoSupervisor) as caught:
        client.ensure("coordinator")
    message = str(caught.value)
    assert f"muster up -f {sup.config}" in message, message
    assert caught.value.command == f"muster up -f {sup.config}"
    assert isinstance(caught.value, ConnectionError)
    with pytest.raises(muster.NoSupervisor):
        asyncio.run(sup.aclient().status())
    with pytest.raises(muster.NoSupervisor):
        next(iter(client.events(follow=True)))
    assert not client.is_running()


def test_a_config_that_cannot_be_read_says_how_to_point_at_one(workdir):
    with pytest.raises(muster.ConfigError) as caught:
        muster.Client(os.path.join(workdir, "nowhere.toml"))
    assert "cannot read" in str(caught.value) and "MUSTER_FILE" in str(caught.value)


def test_an_unknown_service_names_the_nearest(supervisor):
    sup = supervisor(GRAPH).up()
    client = sup.client()
    with pytest.raises(muster.UnknownService) as caught:
        client.ensure("cordinator")
    error = caught.value
    assert error.kind == "unknown-service" and error.status == 404
    assert error.service == "cordinator"
    assert error.suggestions == ["coordinator"]
    assert "did you mean `coordinator`?" in str(error)
    assert sorted(error.known) == ["api", "coordinator", "db", "slow", "slower"]
    assert isinstance(error, LookupError)

    # Nothing near: the message lists the services there are.
    with pytest.raises(muster.UnknownService) as caught:
        client.service("zzzzzzzz")
    assert "the services are `api`, `coordinator`, `db`, `slow`, `slower`" in str(caught.value)

    with pytest.raises(muster.UnknownService) as caught:
        asyncio.run(sup.aclient().start("dbb"))
    assert caught.value.suggestions == ["db"]

    with pytest.raises(muster.UnknownService):
        next(iter(client.logs("dbb")))
    with pytest.raises(muster.UnknownService):
        next(iter(client.events(service="dbb", follow=True)))


def test_a_failed_service_raises_not_healthy_with_the_cause_chain_and_log_tail(supervisor):
    sup = supervisor(GRAPH).up()
    with pytest.raises(muster.NotHealthy) as caught:
        sup.client().ensure("api", timeout=20)
    error = caught.value
    assert error.kind == "not-healthy" and error.status == 503
    assert error.service == "api"
    assert len(error.cause) == 2, error.cause
    assert error.cause[0].startswith("api: failed")
    assert error.root_cause is not None and error.root_cause.startswith("db: failed")
    assert any("FATAL: data directory missing" in line for line in error.log_tail), error.log_tail
    text = str(error)
    assert "because:" in text and "| " in text and "FATAL" in text


def test_not_healthy_in_time_raises_timeout(supervisor):
    sup = supervisor(GRAPH).up()
    began = time.monotonic()
    with pytest.raises(muster.Timeout) as caught:
        sup.client().ensure("slow", timeout=0.5)
    assert time.monotonic() - began < 5
    error = caught.value
    assert isinstance(error, TimeoutError)
    assert error.kind == "timeout" and error.status == 504
    assert "was not healthy within 500ms" in error.message, error.message
    assert error.cause and error.cause[0].startswith("slow: starting")

    with pytest.raises(muster.Timeout):
        asyncio.run(sup.aclient().ensure("slow", timeout="300ms"))
    from datetime import timedelta

    with pytest.raises(muster.Timeout) as caught:
        sup.client().ensure("slower", timeout=timedelta(milliseconds=200))
    assert "within 200ms" in caught.value.message


def test_a_malformed_timeout_is_refused_before_any_request(supervisor):
    sup = supervisor(GRAPH)
    with pytest.raises(ValueError, match="not a duration"):
        sup.client().ensure("db", timeout="soon")
    with pytest.raises(TypeError):
        sup.client().ensure("db", timeout=None)  # type: ignore[arg-type]


def test_a_stopped_supervisor_is_named_with_the_way_to_resume_it(supervisor):
    sup = supervisor(GRAPH).up()
    assert sup.process is not None
    os.kill(sup.process.pid, signal.SIGSTOP)
    try:
        client = sup.client(api_timeout=0.5)
        began = time.monotonic()
        with pytest.raises(muster.NoAnswer) as caught:
            # The ensure may wait 60 s, but a supervisor stopped for the API timeout
            # is not worth waiting for.
            client.ensure("coordinator", timeout=60)
        assert time.monotonic() - began < 5
        error = caught.value
        assert error.pid == sup.process.pid and error.stopped
        assert f"kill -CONT {sup.process.pid}" in str(error)
        with pytest.raises(muster.NoAnswer) as caught:
            asyncio.run(sup.aclient(api_timeout=0.5).ensure("coordinator", timeout=60))
        assert caught.value.stopped
    finally:
        os.kill(sup.process.pid, signal.SIGCONT)
    assert sup.client().ensure("coordinator").service.state == "healthy"


def test_shutting_down_refuses_starts(supervisor):
    sup = supervisor(
        """
        [services.stubborn]
        command = ["sh", "-c", "trap '' TERM; while :; do sleep 0.05; done"]
        stop-timeout = "3s"

        [services.coordinator]
        command = ["sleep", "3600"]
        autostart = false
        """
    ).up()
    client = sup.client()
    client.ensure("stubborn")
    client.shutdown(wait=False)
    with pytest.raises(muster.ShuttingDown) as caught:
        client.ensure("coordinator")
    assert caught.value.status == 409 and "shutting down" in caught.value.message


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_tcp_with_tokens(supervisor, workdir):
    port = free_port()
    with open(os.path.join(workdir, "control.token"), "w") as handle:
        handle.write("control-secret\n")
    with open(os.path.join(workdir, "read.token"), "w") as handle:
        handle.write("read-secret\n")
    sup = supervisor(
        f"""
        [settings.api]
        listen = "127.0.0.1:{port}"
        token-file = "control.token"
        read-token-file = "read.token"

        [services.coordinator]
        command = ["sleep", "3600"]
        autostart = false
        """
    ).up()
    url = f"http://127.0.0.1:{port}"
    control = muster.Client(url=url, token_file=os.path.join(workdir, "control.token"))
    endpoint = control.ensure("coordinator")
    assert endpoint.service.state == "healthy"
    assert [e.kind for e in control.events(service="coordinator")] == ["spawned", "ready"]
    assert asyncio.run(muster.AsyncClient(url=url, token="control-secret").service("coordinator")).healthy

    reader = muster.Client(url=url, token="read-secret")
    assert reader.service("coordinator").healthy
    with pytest.raises(muster.Forbidden) as caught:
        reader.stop("coordinator")
    assert caught.value.status == 403 and "control token" in caught.value.message

    with pytest.raises(muster.Unauthorized):
        muster.Client(url=url, token="read-secret-").status()
    with pytest.raises(muster.Unauthorized):
        muster.Client(url=url).status()

    sup.down()
    with pytest.raises(muster.NoSupervisor) as refused:
        control.status()
    assert f"127.0.0.1:{port}" in str(refused.value)


def test_a_url_that_is_not_http_is_refused():
    with pytest.raises(muster.MusterError, match="http://HOST:PORT"):
        muster.Client(url="https://127.0.0.1:7070")
    with pytest.raises(muster.MusterError, match="http://HOST:PORT"):
        muster.Client(url="http://127.0.0.1")


def test_errors_survive_pickling_between_processes(supervisor):
    import pickle

    sup = supervisor(GRAPH).up()
    with pytest.raises(muster.NotHealthy) as caught:
        sup.client().ensure("api", timeout=20)
    copy = pickle.loads(pickle.dumps(caught.value))
    assert type(copy) is muster.NotHealthy
    assert (copy.kind, copy.cause, copy.log_tail, str(copy)) == (
        caught.value.kind, caught.value.cause, caught.value.log_tail, str(caught.value)
    )


def test_a_service_that_fails_while_starting_answers_with_its_exit(supervisor):
    sup = supervisor(
        f"""
        [services.crashy]
        command = ["{PYTHON}", "-c", "import sys; print('cannot load weights', file=sys.stderr); sys.exit(2)"]
        autostart = false
        ready = {{ notify = true, timeout = "20s" }}
        restart = "never"
        """
    ).up()
    with pytest.raises(muster.NotHealthy) as caught:
        sup.client().start("crashy", timeout=20)
    assert "cannot load weights" in "\n".join(caught.value.log_tail)
    wait_for(lambda: sup.client().service("crashy").state == "failed", "crashy failed")


def test_a_supervisor_that_dies_during_an_ensure_is_said_to_have_gone(supervisor):
    import threading

    sup = supervisor(GRAPH).up()
    client = sup.client()
    errors = []

    def waiting() -> None:
        try:
            client.ensure("slow", timeout=30)
        except muster.MusterError as error:
            errors.append(error)

    thread = threading.Thread(target=waiting)
    thread.start()
    wait_for(lambda: client.service("slow").state == "starting", "the ensure under way")
    sup.kill()
    thread.join(20)
    assert len(errors) == 1 and isinstance(errors[0], muster.Disconnected), errors
    assert "went away before it had answered POST /v1/services/slow/ensure" in str(errors[0])
    assert isinstance(errors[0], ConnectionError)


def test_the_cluster_of_a_supervisor_without_one_is_no_cluster(supervisor):
    sup = supervisor(GRAPH).up()
    for call in (sup.client().cluster, sup.client().cluster_services):
        with pytest.raises(muster.NoCluster) as caught:
            call()
        assert caught.value.kind == "no-cluster" and caught.value.status == 409
        assert "has no [cluster] section" in str(caught.value)
    with pytest.raises(muster.NoCluster):
        asyncio.run(sup.aclient().cluster())
