"""Schema migrations on both backends: a real version-1 database migrated with its data, and the mechanism itself
with a test-only step (version N+1) applied to a database of version N."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from hybridflow.errors import Unavailable
from hybridflow.migrations import MIGRATIONS, Migration, MigrationMissing
from hybridflow.models import SCHEMA_VERSION, TENANTS
from hybridflow.service import Service
from hybridflow.store import SchemaTooNew, Store
from tests.support.builders import upsert
from tests.support.pg import temporary_database

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
T0 = "2026-11-30 10:00:00"


def dialect_of(url: str) -> str:
    return "sqlite" if url.startswith("sqlite") else "postgresql"


async def execute_script(store: Store, script: str) -> None:
    """Run a multi-statement SQL text as it is (DDL of an old release, hand-written rows)."""
    async with store.write() as conn:
        for statement in (s.strip() for s in script.split(";")):
            if statement:
                await conn.exec_driver_sql(statement)


async def version_of(store: Store) -> int | None:
    return await store.schema_version()


async def rows(store: Store, query: str) -> list[tuple]:
    async with store.read() as conn:
        return [tuple(r) for r in await conn.execute(sa.text(query))]


# Version 1 rows as release 0.1.0 wrote them: a tenant, a chat, a message, a sent reply and a waiting one.
V1_ROWS = f"""
INSERT INTO hybridflow_schema (id, version, updated_at) VALUES (1, 1, '{T0}');
INSERT INTO tenants (id, instance, prompt, api_version, allow_groups, send_presence, mark_read, created_at, updated_at)
    VALUES (1, 'test-instance', 'Be brief.', 'v2', false, false, false, '{T0}', '{T0}');
INSERT INTO sessions (id, tenant_id, chat_id, chat_kind, is_paused, created_at, updated_at)
    VALUES (1, 1, '5511987654321@s.whatsapp.net', 'user', false, '{T0}', '{T0}');
INSERT INTO messages (id, tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, text,
                      received_at, action, raw)
    VALUES (1, 1, 1, 'M1', '5511987654321@s.whatsapp.net', 'messages.upsert', 'customer', false, 'text', 'Oi',
            '{T0}', 'reply_queued', '{{}}');
INSERT INTO reply_jobs (id, tenant_id, session_id, chat_id, trigger_message_id, last_message_id, status, due_at,
                        attempts, reply_text, sent_message_id, received_at, created_at, updated_at, attempted_at,
                        sent_at)
    VALUES (1, 1, 1, '5511987654321@s.whatsapp.net', 'M1', 'M1', 'sent', '{T0}', 1, 'Olá!', 'BOT1', '{T0}', '{T0}',
            '{T0}', '{T0}', '{T0}');
INSERT INTO reply_jobs (id, tenant_id, session_id, chat_id, trigger_message_id, last_message_id, status, due_at,
                        attempts, received_at, created_at, updated_at)
    VALUES (2, 1, 1, '5511987654321@s.whatsapp.net', 'M2', 'M2', 'queued', '{T0}', 0, '{T0}', '{T0}', '{T0}')
"""


@pytest.fixture
async def v1_store(database_url: str) -> AsyncIterator[Store]:
    """A database exactly as release 0.1.0 (schema version 1) left it, with some history."""
    store = Store(database_url)
    await execute_script(store, (SCHEMAS / f"v1-{dialect_of(database_url)}.sql").read_text())
    await execute_script(store, V1_ROWS)
    if store.is_postgres:  # rows written with explicit ids: move the sequences past them, as the release's did
        await execute_script(store, ";".join(
            f"SELECT setval('{table}_id_seq', (SELECT max(id) FROM {table}))"
            for table in ("tenants", "sessions", "messages", "reply_jobs")))
    assert await version_of(store) == 1
    yield store
    await store.dispose()


async def test_a_version_1_database_is_migrated_and_keeps_its_history(v1_store: Store):
    assert await v1_store.create_schema() == SCHEMA_VERSION == 7
    assert await version_of(v1_store) == 7
    assert await rows(v1_store, "SELECT id, kind, status, trigger_message_id, reply_text, sent_message_id "
                                "FROM reply_jobs ORDER BY id") == [
        (1, "reply", "sent", "M1", "Olá!", "BOT1"), (2, "reply", "queued", "M2", None, None)]
    assert await rows(v1_store, "SELECT message_id, text FROM messages") == [("M1", "Oi")]
    assert await rows(v1_store, "SELECT instance FROM tenants") == [("test-instance",)]
    assert await rows(v1_store, "SELECT count(*) FROM tenant_contacts") == [(0,)]  # version 3's table, empty
    assert await v1_store.create_schema() == 7  # a second start changes nothing
    assert len(await rows(v1_store, "SELECT id FROM reply_jobs")) == 2


async def test_after_migrating_the_uniqueness_rules_are_per_kind(v1_store: Store):
    await v1_store.create_schema()
    insert = ("INSERT INTO reply_jobs (tenant_id, session_id, chat_id, kind, trigger_message_id, status, due_at, "
              "attempts, received_at, created_at, updated_at) VALUES (1, 1, '5511987654321@s.whatsapp.net', "
              f"'{{kind}}', '{{trigger}}', '{{status}}', '{T0}', 0, '{T0}', '{T0}', '{T0}')")
    with pytest.raises(sa_exc.IntegrityError):  # a second waiting reply for the chat: debounce merges instead
        await execute_script(v1_store, insert.format(kind="reply", trigger="M3", status="queued"))
    with pytest.raises(sa_exc.IntegrityError):  # a second reply to the same customer message
        await execute_script(v1_store, insert.format(kind="reply", trigger="M1", status="retry"))
    # Another kind of job for the same message and chat is allowed, also while a reply waits.
    await execute_script(v1_store, insert.format(kind="notice", trigger="M1", status="queued"))
    assert await rows(v1_store, "SELECT kind FROM reply_jobs WHERE trigger_message_id = 'M1' ORDER BY kind") == [
        ("notice",), ("reply",)]


async def test_a_migrated_database_serves_webhooks(v1_store: Store, settings, clock):  # type: ignore[no-untyped-def]
    await v1_store.dispose()
    async with Service.open(settings, clock=clock) as service:  # migrates on open, like serve
        assert await service.store.schema_version() == 7
        result = await service.ingest(upsert("Vocês entregam?", message_id="M9"), "{}")
        assert result.action == "reply_queued"
        # The chat's reply that was waiting before the upgrade absorbs the new message (debounce), as before it.
        assert (await service.queue_depth())["queued"] == 1
        assert await rows(service.store, "SELECT id, kind, trigger_message_id, last_message_id FROM reply_jobs "
                                         "WHERE status = 'queued'") == [(2, "reply", "M2", "M9")]


def _test_step(version: int) -> Migration:
    """A schema change only the tests know: a new column with a default, on both dialects."""
    sql = "ALTER TABLE tenants ADD COLUMN test_note VARCHAR(20) NOT NULL DEFAULT 'kept'"
    return Migration(version, "test-only column", {"sqlite": [sql], "postgresql": [sql]})


@pytest.fixture
async def current_store(database_url: str) -> AsyncIterator[Store]:
    """A database of today's version with a tenant in it."""
    store = Store(database_url)
    await store.create_schema()
    await execute_script(store, V1_ROWS.split(";")[1])  # the tenant row
    yield store
    await store.dispose()


async def test_a_new_step_is_applied_to_a_database_of_the_previous_version(current_store: Store):
    with_step = (*MIGRATIONS, _test_step(SCHEMA_VERSION + 1))
    assert await current_store.create_schema(with_step) == SCHEMA_VERSION + 1
    assert await version_of(current_store) == SCHEMA_VERSION + 1
    assert await rows(current_store, "SELECT instance, test_note FROM tenants") == [("test-instance", "kept")]
    assert await current_store.create_schema(with_step) == SCHEMA_VERSION + 1  # applied once only
    with pytest.raises(SchemaTooNew):  # and this release, which does not know the step, refuses the database
        await current_store.create_schema()


async def test_a_failing_step_leaves_the_database_at_its_version(current_store: Store):
    broken = Migration(SCHEMA_VERSION + 1, "breaks halfway", {d: [
        "ALTER TABLE tenants ADD COLUMN test_note VARCHAR(20)", "INSERT INTO no_such_table VALUES (1)"]
        for d in ("sqlite", "postgresql")})
    with pytest.raises((sa_exc.DBAPIError, Unavailable), match="no_such_table"):
        await current_store.create_schema((*MIGRATIONS, broken))
    assert await version_of(current_store) == SCHEMA_VERSION
    columns = await rows(current_store, "SELECT * FROM tenants")
    assert len(columns[0]) == len(TENANTS.columns)  # the step before the failing one was rolled back too


async def test_a_step_without_the_databases_dialect_is_refused(current_store: Store):
    other = "postgresql" if current_store.is_sqlite else "sqlite"
    half = Migration(SCHEMA_VERSION + 1, "one dialect only", {other: ["SELECT 1"]})
    with pytest.raises(MigrationMissing, match=f"no migration for {current_store.dialect}"):
        await current_store.create_schema((*MIGRATIONS, half))
    assert await version_of(current_store) == SCHEMA_VERSION


def test_every_step_has_both_dialects_and_the_last_is_the_models_version():
    assert [m.version for m in MIGRATIONS] == list(range(2, SCHEMA_VERSION + 1))
    assert all(set(m.steps) == {"sqlite", "postgresql"} for m in MIGRATIONS)


async def test_tables_without_their_version_row_are_migrated_from_what_they_are(v1_store: Store):
    await execute_script(v1_store, "DELETE FROM hybridflow_schema")  # a partial restore lost the version row
    assert await v1_store.create_schema() == SCHEMA_VERSION
    assert await version_of(v1_store) == SCHEMA_VERSION
    assert await rows(v1_store, "SELECT id, kind FROM reply_jobs ORDER BY id") == [(1, "reply"), (2, "reply")]


def _shape(sync_conn: sa.Connection) -> dict[str, object]:
    """Every table's columns (name, nullability) and index names, as the database reports them."""
    inspector = sa.inspect(sync_conn)
    return {table: ({(c["name"], c["nullable"]) for c in inspector.get_columns(table)},
                    {i["name"] for i in inspector.get_indexes(table)},
                    {u["name"] for u in inspector.get_unique_constraints(table)})
            for table in inspector.get_table_names()}


async def test_a_migrated_database_has_the_tables_of_a_new_one(v1_store: Store, request: pytest.FixtureRequest,
                                                             tmp_path: Path):
    await v1_store.create_schema()
    async with v1_store.read() as conn:
        migrated = await conn.run_sync(_shape)
    async with AsyncExitStack() as stack:
        url = (f"sqlite:///{tmp_path / 'fresh.db'}" if v1_store.dialect == "sqlite" else
               await stack.enter_async_context(temporary_database(request.getfixturevalue("pg_server"))))
        fresh = Store(url)
        stack.push_async_callback(fresh.dispose)
        await fresh.create_schema()
        async with fresh.read() as conn:
            new = await conn.run_sync(_shape)
    assert migrated == new
