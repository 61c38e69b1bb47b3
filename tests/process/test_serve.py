"""`hybridflow serve` and `python -m hybridflow` for real, as child processes of the Python running the tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.builders import dialect_of
from tests.support.ports import free_port
from hybridflow.crypto import generate_key
from tests.support.serve import HYBRIDFLOW, ServeProcess, clean_env, cli

START_TIMEOUT, STOP_TIMEOUT = 20.0, 15.0


@contextmanager
def serving(cwd: Path, *args: str, port: int, **settings: str) -> Iterator[ServeProcess]:
    """`hybridflow serve ARGS` running in ``cwd`` (stdout to serve.out, stderr to serve.err); killed at the end.

    It listens on ``port``: given as ``--port`` in ``args``, else as HYBRIDFLOW_PORT.
    """
    env = clean_env(**settings) if "--port" in args else clean_env(port=str(port), **settings)
    server = ServeProcess(env, cwd / "serve.out", args=args, port=port, cwd=cwd, stderr_path=cwd / "serve.err")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def stop(server: ServeProcess) -> int:
    """SIGTERM; the exit code, or a failure naming what it printed when it does not stop in time."""
    code = server.stop(timeout=STOP_TIMEOUT)
    assert code != -9, f"serve did not stop within {STOP_TIMEOUT}s of SIGTERM:\n{server.output()}"
    assert code is not None
    return code


def test_serve_starts_with_no_setup_and_stops_cleanly_on_sigterm(tmp_path):
    """`hybridflow serve` with nothing configured: a SQLite file in the working directory, created on start."""
    port = free_port()
    with serving(tmp_path, "--port", str(port), port=port) as server:
        assert server.wait_healthy_sync(START_TIMEOUT) == {"status": "ok", "database": "sqlite"}
        assert (tmp_path / "hybridflow.db").is_file()
        assert stop(server) == 0
    assert "Traceback" not in server.output()


def test_serve_on_each_backend_logs_json_lines(database_url, tmp_path):
    port = free_port()
    with serving(tmp_path, database_url=database_url, port=port) as server:
        assert server.wait_healthy_sync(START_TIMEOUT)["database"] == dialect_of(database_url)
        assert stop(server) == 0
    lines = [line for line in (tmp_path / "serve.out").read_text().splitlines() if line.strip()]
    events = [json.loads(line)["event"] for line in lines]  # stdout is not a terminal: JSON lines
    assert "serve.started" in events and events[-1] == "serve.stopped"


def test_serve_creates_the_sqlite_file_and_its_directory(tmp_path):
    database = tmp_path / "data" / "hybridflow" / "hf.db"
    port = free_port()
    with serving(tmp_path, database_url=f"sqlite:///{database}", port=port) as server:
        server.wait_healthy_sync(START_TIMEOUT)
        assert database.is_file()
        assert stop(server) == 0


def test_serve_on_a_busy_port_fails_with_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serving(tmp_path, "--port", str(port), port=port) as server:
            code = server.wait(START_TIMEOUT)
    assert code == 1
    errors = (tmp_path / "serve.err").read_text()
    assert f"{port}" in errors and "--port" in errors and "Traceback" not in errors
    assert len(errors.strip().splitlines()) == 1, errors
    assert "writer is not started" not in server.output()


def events_of(path: Path) -> dict[str, dict]:
    """The JSON log lines of a serve's stdout, by event name (the last of each)."""
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]
    return {line["event"]: line for line in lines}


def test_serve_says_where_it_listens_where_to_point_evolution_and_what_is_on(database_url, tmp_path):
    port = free_port()
    with serving(tmp_path, database_url=database_url, port=port, public_url="https://hf.example.com/",
                 admin_token="t0ken", metrics="true") as server:
        server.wait_healthy_sync(START_TIMEOUT)
        assert stop(server) == 0
    started = events_of(tmp_path / "serve.out")["serve.started"]
    assert started["url"] == f"http://127.0.0.1:{port}"
    assert started["webhook_url"] == "https://hf.example.com/webhooks/evolution"
    assert (started["admin_api"], started["metrics"], started["capture"], started["tenants"]) == ("on", "on", "off", 0)
    if database_url.startswith("sqlite"):
        assert started["database"] == f"SQLite {Path(database_url.removeprefix('sqlite:///')).resolve()}"
    else:
        assert started["database"].startswith("PostgreSQL ") and started["database"].endswith(database_url.rsplit("/", 1)[1])
    output = server.output()
    assert "serve.no_tenants" in output and "tenants add" in output  # nothing to answer yet, and what to do
    password = database_url.partition("://")[2].partition("@")[0].partition(":")[2]
    assert not password or password not in output


def test_serve_without_the_key_that_stored_the_secrets_says_so_at_start(tmp_path):
    database = f"sqlite:///{tmp_path / 'hf.db'}"
    env = clean_env(database_url=database, secret_key=generate_key())
    cli(env, "tenants", "add", "padaria", "--prompt", "Seja breve.", "--webhook-secret", "s3cret-of-the-shop")
    port = free_port()
    with serving(tmp_path, database_url=database, port=port) as server:  # started without HYBRIDFLOW_SECRET_KEY
        server.wait_healthy_sync(START_TIMEOUT)
        assert stop(server) == 0
    unreadable = events_of(tmp_path / "serve.out")["serve.secrets_unreadable"]
    assert unreadable["tenants"] == ["padaria"] and unreadable["level"] == "error"
    assert "same HYBRIDFLOW_SECRET_KEY" in unreadable["fix"] and "s3cret" not in server.output()


def test_python_warnings_reach_the_log_as_structured_lines(tmp_path):
    code = ("import warnings; from hybridflow.logs import configure_logging; import sys; "
            "configure_logging('json', 'info', stream=sys.stdout); warnings.warn('an old API', DeprecationWarning)")
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path, env=clean_env())
    assert result.returncode == 0 and result.stderr == "", result.stderr
    [line] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (line["event"], line["category"], line["message"]) == ("python.warning", "DeprecationWarning", "an old API")


def test_python_dash_m_hybridflow_works(tmp_path):
    result = subprocess.run([*HYBRIDFLOW, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": os.defpath, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "tenants" in result.stdout and "serve" in result.stdout
