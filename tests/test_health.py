"""GET /health on both backends (200 when the database answers, 503 when not), and `hybridflow serve` for real."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from hybridflow.config import Settings
from hybridflow.evolution import EvolutionClient
from hybridflow.llm import LLMClient
from hybridflow.service import Service
from hybridflow.store import Store
from hybridflow.web import create_app
from tests.fakes import closed_port_url

HYBRIDFLOW = Path("/work/venv/bin/hybridflow")
START_TIMEOUT, STOP_TIMEOUT = 20.0, 15.0


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


@contextlib.asynccontextmanager
async def unopened_service(database_url: str) -> AsyncIterator[Service]:
    """A service on a database it never connected to (no schema creation), as when the database goes away."""
    service = Service(Settings(database_url=database_url, log_format="console"), Store(database_url),
                      EvolutionClient(timeout=2.0), LLMClient(host=closed_port_url(), timeout=2.0))
    try:
        yield service
    finally:
        await service.evolution.aclose()
        await service.llm.aclose()
        await service.store.dispose()


async def get_health(aiohttp_client, service: Service) -> tuple[int, dict, str]:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(service, background=False))
    response = await client.get("/health")
    text = await response.text()
    assert response.content_type == "application/json", text
    return response.status, json.loads(text), text


def assert_unavailable(status: int, body: dict, text: str) -> None:
    assert status == 503, text
    assert body.get("error") and body.get("message"), body
    assert "hunter2" not in text, "the database password must not leak into the response"


# --- GET /health --------------------------------------------------------------------------------------------------


async def test_health_is_ok_and_names_the_database(aiohttp_client, service, database_url):
    status, body, _ = await get_health(aiohttp_client, service)
    assert status == 200
    assert body == {"status": "ok", "database": dialect_of(database_url)}


async def test_health_is_503_when_the_postgres_server_is_down(aiohttp_client):
    port = closed_port_url().rsplit(":", 1)[1]
    async with unopened_service(f"postgresql://hybridflow:hunter2@127.0.0.1:{port}/hybridflow") as service:
        assert_unavailable(*await get_health(aiohttp_client, service))


async def test_health_is_503_when_the_postgres_database_does_not_exist(aiohttp_client, pg_cluster):
    if pg_cluster is None:
        pytest.skip("no PostgreSQL server")
    url = pg_cluster.rsplit("/", 1)[0] + f"/hf_missing_{uuid.uuid4().hex[:8]}"
    async with unopened_service(url) as service:
        assert_unavailable(*await get_health(aiohttp_client, service))


async def test_health_recovers_when_the_postgres_database_comes_back(aiohttp_client, pg_cluster):
    if pg_cluster is None:
        pytest.skip("no PostgreSQL server")
    name = f"hf_late_{uuid.uuid4().hex[:8]}"
    async with unopened_service(pg_cluster.rsplit("/", 1)[0] + f"/{name}") as service:
        client = await aiohttp_client(create_app(service, background=False))
        assert (await client.get("/health")).status == 503
        admin = await asyncpg.connect(pg_cluster)
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
            response = await client.get("/health")
            assert response.status == 200, await response.text()
        finally:
            await service.store.dispose()
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


async def test_health_is_503_when_the_sqlite_file_cannot_be_opened(aiohttp_client, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the database directory should be")
    async with unopened_service(f"sqlite:///{blocker / 'hybridflow.db'}") as service:
        assert_unavailable(*await get_health(aiohttp_client, service))
    # aiosqlite keeps the worker thread of a failed connect until it is collected; let it finish on a live loop.
    gc.collect()
    await asyncio.sleep(0.1)


# --- hybridflow serve ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment(**settings: str) -> dict[str, str]:
    """This process's environment without any HYBRIDFLOW_* setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRIDFLOW_")}
    return {**env, **{f"HYBRIDFLOW_{k.upper()}": v for k, v in settings.items()}}


@contextlib.contextmanager
def serving(cwd: Path, *args: str, **settings: str) -> Iterator[subprocess.Popen[bytes]]:
    """`hybridflow serve ARGS` running in ``cwd``; killed at the end if the test did not stop it."""
    with open(cwd / "serve.out", "wb") as stdout, open(cwd / "serve.err", "wb") as stderr:
        process = subprocess.Popen([str(HYBRIDFLOW), "serve", *args], cwd=cwd, env=clean_environment(**settings),
                                   stdout=stdout, stderr=stderr)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)


def output(cwd: Path) -> str:
    return (cwd / "serve.out").read_text(errors="replace") + (cwd / "serve.err").read_text(errors="replace")


def wait_for_health(process: subprocess.Popen[bytes], port: int, cwd: Path) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        assert process.poll() is None, f"serve exited with {process.returncode}:\n{output(cwd)}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return json.loads(response.read())
        time.sleep(0.2)
    raise AssertionError(f"/health did not answer 200 within {START_TIMEOUT}s:\n{output(cwd)}")


def stop(process: subprocess.Popen[bytes], cwd: Path) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"serve did not stop within {STOP_TIMEOUT}s of SIGTERM:\n{output(cwd)}") from None


def test_serve_starts_with_no_setup_and_stops_cleanly_on_sigterm(tmp_path):
    """`hybridflow serve` with nothing configured: a SQLite file in the working directory, created on start."""
    port = free_port()
    with serving(tmp_path, "--port", str(port)) as process:
        assert wait_for_health(process, port, tmp_path) == {"status": "ok", "database": "sqlite"}
        assert (tmp_path / "hybridflow.db").is_file()
        assert stop(process, tmp_path) == 0
    assert "Traceback" not in output(tmp_path)


def test_serve_on_each_backend_logs_json_lines(database_url, tmp_path):
    port = free_port()
    with serving(tmp_path, database_url=database_url, port=str(port)) as process:
        assert wait_for_health(process, port, tmp_path)["database"] == dialect_of(database_url)
        assert stop(process, tmp_path) == 0
    lines = [line for line in (tmp_path / "serve.out").read_text().splitlines() if line.strip()]
    events = [json.loads(line)["event"] for line in lines]  # stdout is not a terminal: JSON lines
    assert "serve.started" in events and events[-1] == "serve.stopped"


def test_serve_creates_the_sqlite_file_and_its_directory(tmp_path):
    database = tmp_path / "data" / "hybridflow" / "hf.db"
    port = free_port()
    with serving(tmp_path, database_url=f"sqlite:///{database}", port=str(port)) as process:
        wait_for_health(process, port, tmp_path)
        assert database.is_file()
        assert stop(process, tmp_path) == 0


def test_serve_on_a_busy_port_fails_with_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with serving(tmp_path, "--port", str(port)) as process:
            code = process.wait(START_TIMEOUT)
    assert code != 0
    errors = (tmp_path / "serve.err").read_text()
    assert f"{port}" in errors and "Traceback" not in errors
