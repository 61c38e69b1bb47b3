"""A 200 means the message is on the disk: SQLite commits with synchronous=FULL unless the operator chooses
``sqlite_synchronous = "normal"`` (issue 13). Read back from the connections `serve` writes with."""

from __future__ import annotations

from pathlib import Path

import pytest

from hybridflow.config import Settings, load_settings
from hybridflow.errors import ConfigError
from hybridflow.crypto import generate_key
from hybridflow.service import Service

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
