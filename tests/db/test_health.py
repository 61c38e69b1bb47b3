"""GET /health on both backends: 200 when the database answers, 503 when not (`serve` itself: process/test_serve.py)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import uuid
from collections.abc import AsyncIterator

import asyncpg

from hybridflow.config import Settings
from hybridflow.evolution import EvolutionClient
from hybridflow.llm import LLMClient
from hybridflow.service import Service
from hybridflow.store import Store
from hybridflow.web import create_app
from tests.support.builders import dialect_of
from tests.support.ports import closed_port_url

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


async def test_health_is_503_when_the_postgres_database_does_not_exist(aiohttp_client, pg_server):
    url = pg_server.rsplit("/", 1)[0] + f"/hf_missing_{uuid.uuid4().hex[:8]}"
    async with unopened_service(url) as service:
        assert_unavailable(*await get_health(aiohttp_client, service))


async def test_health_recovers_when_the_postgres_database_comes_back(aiohttp_client, pg_server):
    name = f"hf_late_{uuid.uuid4().hex[:8]}"
    async with unopened_service(pg_server.rsplit("/", 1)[0] + f"/{name}") as service:
        client = await aiohttp_client(create_app(service, background=False))
        assert (await client.get("/health")).status == 503
        admin = await asyncpg.connect(pg_server)
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
    # aiosqlite keeps the worker thread of a failed connect until it is collected; let it finish on a live loop
    # (cleanup, not a wait for something the test checks).
    gc.collect()
    await asyncio.sleep(0.1)
