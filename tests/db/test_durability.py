"""A 200 means the message is on the disk: SQLite commits with synchronous=FULL unless the operator chooses
``sqlite_synchronous = "normal"`` (issue 13). Read back from the connections `serve` writes with."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from hybridflow.config import Settings, database_url_to_async, load_settings
from hybridflow.errors import ConfigError
from hybridflow.crypto import generate_key
from hybridflow.service import Service
from hybridflow.web import SERVICE
from tests.support.builders import posted, raw, upsert

FULL, NORMAL = 2, 1  # what PRAGMA synchronous reads


async def synchronous_of(service: Service) -> tuple[int, int]:
    """The level of the batching writer's connection (webhooks) and of the other writing connection."""
    store = service.store
    assert store.batch_engine is not None
    with store.batch_engine.connect() as conn:
        batch = conn.exec_driver_sql("PRAGMA synchronous").scalar_one()
    async with store.write_engine.connect() as conn:
        write = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar_one()
    return batch, write


@pytest.mark.parametrize(("level", "expected"), [(None, FULL), ("full", FULL), ("normal", NORMAL)])
async def test_sqlite_commits_are_full_by_default_and_normal_on_request(tmp_path: Path, level, expected):
    values = {"database_url": f"sqlite:///{tmp_path / 'hybridflow.db'}", "secret_key": generate_key()}
    settings = Settings(**values, **({"sqlite_synchronous": level} if level else {}))
    async with Service.open(settings, serving=True) as service:
        assert await synchronous_of(service) == (expected, expected)


def test_an_unknown_level_is_refused_with_the_choices(tmp_path: Path):
    with pytest.raises(ConfigError, match="expected full or normal"):
        load_settings(environ={"HYBRIDFLOW_SQLITE_SYNCHRONOUS": "off"})


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_postgresql_connections_cut_under_serve_cost_503s_never_a_lost_or_refused_message(
        app_client, database_url: str) -> None:
    """A restart, a failover or a proxy's idle timeout cuts the pooled connections while webhooks keep coming (no
    idle ping in between): each webhook is answered 200, or 503 so that Evolution sends it again, and soon 200."""
    ids = [f"CUT{k:04d}" for k in range(4)]
    assert await posted(app_client, upsert("antes do corte", message_id="BEFORE01")) == "reply_queued"
    engine = create_async_engine(database_url_to_async(database_url))
    try:
        async with engine.connect() as conn:
            cut = (await conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
    finally:
        await engine.dispose()
    assert cut >= 1
    statuses: list[int] = []
    for message_id in ids:
        for _ in range(12):  # Evolution's retries, condensed
            response = await app_client.post("/webhooks/evolution", data=raw(upsert("depois", message_id=message_id)),
                                             headers={"Content-Type": "application/json"})
            statuses.append(response.status)
            if response.status == 200:
                break
            assert response.status == 503, await response.text()
            assert (await response.json())["error"] == "unavailable"
    assert statuses[-1] == 200 and statuses.count(200) == len(ids), statuses
    async with app_client.server.app[SERVICE].store.read() as conn:
        stored = (await conn.exec_driver_sql(
            "SELECT message_id, count(*) FROM messages WHERE message_id LIKE 'CUT%' GROUP BY message_id")).all()
    assert dict(stored) == dict.fromkeys(ids, 1)
