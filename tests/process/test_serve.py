"""`hybridflow serve` and `python -m hybridflow` for real, as child processes of the Python running the tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.builders import dialect_of
from tests.support.ports import free_port
from tests.support.serve import HYBRIDFLOW, ServeProcess, clean_env

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
    assert code != 0
    errors = (tmp_path / "serve.err").read_text()
    assert f"{port}" in errors and "Traceback" not in errors


def test_python_dash_m_hybridflow_works(tmp_path):
    result = subprocess.run([*HYBRIDFLOW, "--help"], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                            env={"PATH": os.defpath, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    assert "tenants" in result.stdout and "serve" in result.stdout
