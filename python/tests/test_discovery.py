"""Finding the supervisor the way the `muster` command does: through a config file or a
state directory, the environment the CLI reads, the lock that records where a running
supervisor keeps its state, and from inside a service muster runs."""

from __future__ import annotations

import os
import subprocess

import pytest

import muster
from muster import _locate, _toml
from conftest import PYTHON, muster_bin, wait_for

CONFIG = """
[services.coordinator]
command = ["sleep", "3600"]
autostart = false
"""


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("MUSTER_STATE_DIR", "MUSTER_FILE", "MUSTER_URL", "MUSTER_TOKEN",
                 "MUSTER_TOKEN_FILE", "MUSTER_HEARTBEAT_FILE", "MUSTER_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_the_config_file_its_directory_the_environment_and_the_working_directory(supervisor, clean_env):
    sup = supervisor(CONFIG).up()
    expected = os.path.join(sup.dir, ".muster", "muster.sock")
    assert muster.Client(sup.config).place().socket == expected
    assert muster.Client(sup.dir).place().socket == expected
    assert muster.Client(state_dir=os.path.join(sup.dir, ".muster")).place().socket == expected
    # The CLI's name for the config, and what else a path may be: the state directory,
    # or the socket itself.
    assert muster.Client(file=sup.config).place().socket == expected
    assert muster.Client(os.path.join(sup.dir, ".muster")).place().socket == expected
    assert muster.Client(expected).status().lifecycle == "running"

    clean_env.chdir(sup.dir)
    assert muster.Client().place().socket == expected
    assert muster.Client(state_dir=".muster").place().state_dir == os.path.join(sup.dir, ".muster")
    assert muster.Client().ensure("coordinator").service.healthy

    made_here = muster.Client()
    clean_env.chdir("/")
    # Settled when made: changing directory afterwards does not move it.
    assert made_here.status().lifecycle == "running"
    with pytest.raises(muster.ConfigError):
        muster.Client()
    clean_env.setenv("MUSTER_FILE", sup.config)
    assert muster.Client().place().socket == expected
    # As with the CLI, the state directory wins over the file.
    clean_env.setenv("MUSTER_STATE_DIR", "/nonexistent/state")
    assert muster.Client().place().socket == "/nonexistent/state/muster.sock"
    with pytest.raises(muster.NoSupervisor):
        muster.Client().status()
    # An explicit argument wins over the environment.
    assert muster.Client(sup.config).status().lifecycle == "running"


def test_settings_state_dir_relative_to_the_file_or_absolute(supervisor, workdir, clean_env):
    elsewhere = os.path.join(workdir, "state elsewhere")
    sup = supervisor(f"""
        [settings]
        state-dir = "{elsewhere}"  # absolute
        {CONFIG}
        """, subdir="project").up()
    assert muster.Client(sup.config).place().state_dir == elsewhere
    assert muster.Client(sup.config).ensure("coordinator").service.healthy
    sup.write('[settings]\nstate-dir = "../run/state"\n' + CONFIG)
    assert _locate.state_dir_of(sup.config) == os.path.join(workdir, "project", "..", "run", "state")


def test_the_lock_a_supervisor_records_is_found(supervisor):
    sup = supervisor(CONFIG).up()
    lock = _locate.config_lock_path(sup.config)
    assert lock is not None and os.path.exists(lock), lock
    with open(lock) as handle:
        pid, state_dir = handle.read().splitlines()[:2]
    assert int(pid) == sup.process.pid
    assert _locate.running_state_dir(sup.config) == state_dir == os.path.join(sup.dir, ".muster")
    sup.down()
    # A free lock's record is stale: nobody runs the file.
    assert _locate.running_state_dir(sup.config) is None


def test_a_supervisor_whose_state_dir_was_edited_since_is_still_found(supervisor, clean_env):
    sup = supervisor('[settings]\nstate-dir = "old"\n' + CONFIG).up()
    sup.write('[settings]\nstate-dir = "new"\n' + CONFIG)
    client = muster.Client(sup.config)
    assert client.place().state_dir == os.path.join(sup.dir, "old")
    assert client.ensure("coordinator").service.healthy
    # The CLI agrees.
    cli = subprocess.run([muster_bin(), "status", "-f", sup.config], capture_output=True, text=True, timeout=30)
    assert "keeps its state in" in cli.stderr and os.path.join(sup.dir, "old") in cli.stderr
    sup.down()
    # Once it is gone, the file's own directory is where a new one will be.
    assert client.place().state_dir == os.path.join(sup.dir, "new")


def test_a_service_finds_the_supervisor_that_runs_it_from_any_working_directory(supervisor, workdir):
    elsewhere = os.path.join(workdir, "elsewhere")
    os.makedirs(elsewhere)
    code = "import muster; print('coordinator at', muster.Client().ensure('coordinator').pid)"
    sup = supervisor(f"""
        {CONFIG}
        [services.agent]
        command = ["{PYTHON}", "-c", "{code}"]
        cwd = "{elsewhere}"
        restart = "never"
        """).up()
    client = sup.client()
    done = wait_for(lambda: client.service("agent").state in ("completed", "failed") and client.service("agent"), "the agent finishing")
    lines = [line.text for line in client.logs("agent")]
    assert done.state == "completed", lines
    pid = client.service("coordinator").pid
    assert f"coordinator at {pid}" in lines, lines


def test_the_state_dir_scanner_reads_what_tomllib_reads():
    texts = {
        '[settings]\nstate-dir = "a"\n': "a",
        '[settings]\n"state-dir" = \'b/c\'  # comment\n': "b/c",
        'settings.state-dir = "d"\n[services.x]\ncommand = "y"\n': "d",
        'settings = { state-dir = "e", logs = { keep = 2 } }\n': "e",
        '[ settings ]\nstate-dir = "f\\u00e9"\n': "f\u00e9",
        '[services.x]\nstate-dir = "no"\n[settings]\n': None,
        '[settings.api]\nstate-dir = "no"\n': None,
        '[settings]\nstate-dir = 3\n': None,
        '# [settings]\n# state-dir = "no"\n': None,
        '': None,
    }
    for text, expected in texts.items():
        assert _toml.state_dir_scan(text) == expected, text
        if _toml._tomllib is not None:
            assert _toml.state_dir_tomllib(text) == expected, text
    # A file TOML cannot read gives the default, as the supervisor's reader does.
    if _toml._tomllib is not None:
        assert _toml.state_dir_tomllib('[settings\nstate-dir = "x"') is None


def test_the_config_lock_name_is_the_supervisors():
    # The same FNV-1a as the supervisor: the test above checks the file it made is the
    # one computed; this pins the function on known values.
    assert _locate.fnv1a(b"") == 0xCBF29CE484222325
    assert _locate.fnv1a(b"a") == 0xAF63DC4C8601EC8C
    assert _locate.fnv1a(b"foobar") == 0x85944171F73967E8


def test_the_api_timeout_comes_from_muster_timeout(clean_env, workdir):
    clean_env.setenv("MUSTER_TIMEOUT", "1m 30s")
    assert muster.Client(state_dir=workdir).api_timeout == 90.0
    clean_env.setenv("MUSTER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="MUSTER_TIMEOUT"):
        muster.Client(state_dir=workdir)
    assert muster.Client(state_dir=workdir, api_timeout=2.5).api_timeout == 2.5


def test_a_url_in_the_environment(clean_env, supervisor, workdir):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(os.path.join(workdir, "token"), "w") as handle:
        handle.write("sesame\n")
    sup = supervisor(f"""
        [settings.api]
        listen = "127.0.0.1:{port}"
        token-file = "token"
        {CONFIG}
        """).up()
    clean_env.setenv("MUSTER_URL", f"http://127.0.0.1:{port}")
    clean_env.setenv("MUSTER_TOKEN_FILE", os.path.join(workdir, "token"))
    client = muster.Client()
    assert client.place().tcp
    assert client.ensure("coordinator").service.healthy
    # A URL given as the path, its token from the environment.
    clean_env.delenv("MUSTER_URL")
    assert muster.Client(f"http://127.0.0.1:{port}").service("coordinator").healthy
    assert sup.client().service("coordinator").healthy
