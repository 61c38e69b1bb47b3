"""The store on both backends: schema and its version, unique constraints, UTC timestamps, SQLite WAL sharing."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from typer.testing import CliRunner

from hybridflow.cli import app
from hybridflow.models import SCHEMA_VERSION, ChatSession, Message, SchemaInfo, Tenant
from hybridflow.sql import sqlite as sqlite_sql
from hybridflow.store import SchemaTooNew, Store

TENANTS, SESSIONS, MESSAGES = Tenant.__table__, ChatSession.__table__, Message.__table__
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """A store on a fresh database with the schema created."""
    store = Store(database_url)
    await store.create_schema()
    yield store
    await store.dispose()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "shared.db"


@pytest.fixture
async def sqlite_stores(sqlite_path: Path) -> AsyncIterator[tuple[Store, Store]]:
    """Two stores on one SQLite file, as `serve` and a CLI command in another terminal have."""
    server, cli = Store(f"sqlite:///{sqlite_path}"), Store(f"sqlite:///{sqlite_path}")
    await server.create_schema()
    await cli.create_schema()
    yield server, cli
    await cli.dispose()
    await server.dispose()


def tenant_row(instance: str, created_at: datetime = NOW) -> dict[str, Any]:
    return {"instance": instance, "prompt": "Be brief.", "api_version": "v2", "allow_groups": False,
            "send_presence": False, "mark_read": False, "created_at": created_at, "updated_at": created_at}


def session_row(tenant_id: int, chat_id: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "chat_id": chat_id, "chat_kind": "user", "is_paused": False,
            "created_at": NOW, "updated_at": NOW}


def message_row(tenant_id: int, session_id: int, message_id: str) -> dict[str, Any]:
    return {"tenant_id": tenant_id, "session_id": session_id, "message_id": message_id,
            "chat_id": "5511999990000@s.whatsapp.net", "event": "messages.upsert", "direction": "customer",
            "from_me": False, "kind": "text", "received_at": NOW, "action": "reply_queued", "raw": "{}"}


async def insert(store: Store, table: sa.Table, values: dict[str, Any]) -> int:
    """Insert one row in its own write transaction and return its id."""
    async with store.write() as conn:
        result = await conn.execute(sa.insert(table).values(**values))
        return result.inserted_primary_key[0]


async def count(store: Store, table: sa.Table) -> int:
    async with store.read() as conn:
        return (await conn.execute(sa.select(sa.func.count()).select_from(table))).scalar_one()


def store_tables(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


async def set_schema_version(store: Store, version: int) -> None:
    table = SchemaInfo.__table__
    async with store.write() as conn:
        await conn.execute(sa.update(table).where(table.c.id == 1).values(version=version))


# --- schema -------------------------------------------------------------------------------------------------------


async def test_create_schema_is_idempotent_and_records_the_version(database_url):
    store = Store(database_url)
    try:
        assert await store.schema_version() is None
        assert await store.create_schema() == SCHEMA_VERSION
        await insert(store, TENANTS, tenant_row("loja"))
        assert await store.create_schema() == SCHEMA_VERSION
        assert await store.schema_version() == SCHEMA_VERSION
        assert await count(store, TENANTS) == 1, "creating the schema again must keep the data"
        assert await count(store, SchemaInfo.__table__) == 1
    finally:
        await store.dispose()


async def test_two_stores_creating_the_schema_at_once_both_succeed(database_url):
    first, second = Store(database_url), Store(database_url)
    try:
        versions = await asyncio.gather(first.create_schema(), second.create_schema())
        assert versions == [SCHEMA_VERSION, SCHEMA_VERSION]
        assert await count(first, SchemaInfo.__table__) == 1
    finally:
        await first.dispose()
        await second.dispose()


async def test_a_database_from_a_newer_release_is_refused_and_left_alone(store):
    await set_schema_version(store, SCHEMA_VERSION + 1)
    with pytest.raises(SchemaTooNew) as caught:
        await store.create_schema()
    assert str(SCHEMA_VERSION + 1) in caught.value.message and "upgrade" in caught.value.message.lower()
    assert await store.schema_version() == SCHEMA_VERSION + 1


def test_cli_on_a_database_from_a_newer_release_says_upgrade_and_exits_2(database_url):
    async def prepare() -> None:
        store = Store(database_url)
        await store.create_schema()
        await set_schema_version(store, SCHEMA_VERSION + 1)
        await store.dispose()

    asyncio.run(prepare())
    result = CliRunner().invoke(app, ["--database-url", database_url, "tenants", "list"])
    assert result.exit_code == 2
    assert "upgrade" in result.stderr.lower() and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


async def test_tables_and_the_indexes_later_queries_need_exist(store):
    def inspect(sync_conn: sa.Connection) -> dict[str, list[list[str]]]:
        inspector = sa.inspect(sync_conn)
        return {name: [list(ix["column_names"]) for ix in inspector.get_indexes(name)]
                for name in inspector.get_table_names()}

    async with store.read() as conn:
        indexes = await conn.run_sync(inspect)
    assert {"tenants", "sessions", "messages"} <= set(indexes)
    assert ["is_paused", "last_human_at"] in indexes["sessions"]  # paused sessions by last human time
    assert ["session_id", "received_at"] in indexes["messages"]  # messages by session and time


# --- unique constraints -------------------------------------------------------------------------------------------


async def test_two_tenants_cannot_share_an_instance(store):
    await insert(store, TENANTS, tenant_row("loja"))
    with pytest.raises(sa_exc.IntegrityError):
        await insert(store, TENANTS, tenant_row("loja"))
    assert await count(store, TENANTS) == 1


async def test_one_session_per_tenant_and_chat_but_chats_are_per_tenant(store):
    first, second = await insert(store, TENANTS, tenant_row("a")), await insert(store, TENANTS, tenant_row("b"))
    await insert(store, SESSIONS, session_row(first, "chat-1"))
    with pytest.raises(sa_exc.IntegrityError):
        await insert(store, SESSIONS, session_row(first, "chat-1"))
    await insert(store, SESSIONS, session_row(second, "chat-1"))  # another tenant may have the same chat
    assert await count(store, SESSIONS) == 2


async def test_one_message_per_tenant_and_message_id_but_ids_are_per_tenant(store):
    first, second = await insert(store, TENANTS, tenant_row("a")), await insert(store, TENANTS, tenant_row("b"))
    session_a = await insert(store, SESSIONS, session_row(first, "chat-1"))
    session_b = await insert(store, SESSIONS, session_row(second, "chat-1"))
    await insert(store, MESSAGES, message_row(first, session_a, "3EB0ABC"))
    with pytest.raises(sa_exc.IntegrityError):
        await insert(store, MESSAGES, message_row(first, session_a, "3EB0ABC"))
    await insert(store, MESSAGES, message_row(second, session_b, "3EB0ABC"))
    assert await count(store, MESSAGES) == 2


async def test_a_failed_insert_rolls_back_its_whole_transaction(store):
    await insert(store, TENANTS, tenant_row("loja"))
    with pytest.raises(sa_exc.IntegrityError):
        async with store.write() as conn:
            await conn.execute(sa.insert(TENANTS).values(**tenant_row("other")))
            await conn.execute(sa.insert(TENANTS).values(**tenant_row("loja")))
    assert await count(store, TENANTS) == 1


# --- timestamps ---------------------------------------------------------------------------------------------------


async def test_timestamps_come_back_equal_and_in_utc(store):
    sao_paulo = timezone(timedelta(hours=-3))
    written = datetime(2024, 5, 1, 15, 30, 45, 123456, tzinfo=sao_paulo)
    await insert(store, TENANTS, tenant_row("loja", created_at=written))
    async with store.read() as conn:
        read = (await conn.execute(sa.select(TENANTS.c.created_at))).scalar_one()
    assert read == written
    assert read.tzinfo is UTC
    assert (read.hour, read.minute) == (18, 30)


async def test_timestamps_with_different_offsets_sort_by_the_real_instant(store):
    # 12:00 in São Paulo is 15:00 UTC: later than 14:00 UTC although its wall clock is earlier.
    await insert(store, TENANTS, tenant_row("later", datetime(2024, 5, 1, 12, 0, tzinfo=timezone(timedelta(hours=-3)))))
    await insert(store, TENANTS, tenant_row("earlier", datetime(2024, 5, 1, 14, 0, tzinfo=UTC)))
    async with store.read() as conn:
        ordered = (await conn.execute(sa.select(TENANTS.c.instance).order_by(TENANTS.c.created_at))).scalars().all()
        after = (await conn.execute(sa.select(TENANTS.c.instance).where(
            TENANTS.c.created_at > datetime(2024, 5, 1, 14, 30, tzinfo=UTC)))).scalars().all()
    assert ordered == ["earlier", "later"]
    assert after == ["later"]


async def test_a_naive_timestamp_is_refused_rather_than_guessed(store):
    with pytest.raises(sa_exc.StatementError):
        await insert(store, TENANTS, tenant_row("loja", created_at=datetime(2024, 5, 1, 12, 0)))
    assert await count(store, TENANTS) == 0


# --- SQLite: one file shared by the server and the CLI -------------------------------------------------------------


async def test_sqlite_file_and_its_directories_are_created_on_first_start(tmp_path):
    path = tmp_path / "var" / "lib" / "hybridflow" / "data.db"
    store = Store(f"sqlite:///{path}")
    try:
        await store.create_schema()
    finally:
        await store.dispose()
    assert path.is_file()
    assert store_tables(path) >= {"tenants", "sessions", "messages"}



async def test_sqlite_is_in_wal_mode_with_a_busy_timeout(sqlite_stores, sqlite_path):
    server, _cli = sqlite_stores
    with sqlite3.connect(sqlite_path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persisted in the file itself
    for engine in (server.write_engine, server.read_engine):
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar() >= 1000


async def test_sqlite_cli_can_write_while_the_server_has_a_read_open(sqlite_stores):
    server, cli = sqlite_stores
    await insert(server, TENANTS, tenant_row("before"))
    async with server.read() as reading:
        seen = (await reading.execute(sa.select(TENANTS.c.instance))).scalars().all()
        await asyncio.wait_for(insert(cli, TENANTS, tenant_row("during")), timeout=5)
        assert seen == ["before"]
    assert await count(server, TENANTS) == 2


async def test_sqlite_second_writer_waits_for_the_first_instead_of_failing(sqlite_stores):
    server, cli = sqlite_stores
    async with server.write() as conn:
        await conn.execute(sa.insert(TENANTS).values(**tenant_row("server")))
        waiting = asyncio.create_task(insert(cli, TENANTS, tenant_row("cli")))
        # The scenario: the lock is held for a while. A writer that failed at once ("database is locked")
        # would be done within these 0.5 s; one that waits (busy timeout) finishes only after the commit below.
        await asyncio.sleep(0.5)
        assert not waiting.done(), "the second writer should wait for the lock (busy timeout), not fail"
    await asyncio.wait_for(waiting, timeout=10)
    assert await count(server, TENANTS) == 2


async def test_sqlite_batch_waits_for_a_lock_held_elsewhere_without_stalling_the_event_loop(sqlite_stores):
    """A batch's statements run on the event loop, which must never wait for SQLite's lock: while a CLI command
    holds it, the batch waits in the writer thread and commits once it is free, and the loop goes on meanwhile."""
    server, cli = sqlite_stores
    tenant_id = await insert(server, TENANTS, tenant_row("locked"))
    loop = asyncio.get_running_loop()
    async with cli.write() as holding:
        await holding.execute(sa.insert(TENANTS).values(**tenant_row("cli")))
        batch = asyncio.create_task(server.batch(
            lambda conn: conn.execute(SESSIONS.insert().values(**session_row(tenant_id, "5511999990001@s.whatsapp.net")))
            .inserted_primary_key[0]))
        lags = []
        for _ in range(10):  # a loop blocked by the batch would oversleep by the whole wait
            started = loop.time()
            await asyncio.sleep(0.05)
            lags.append(loop.time() - started - 0.05)
        assert not batch.done(), "the batch should wait for the lock, not fail"
    assert await asyncio.wait_for(batch, timeout=10) > 0  # committed once the CLI's transaction ended
    assert max(lags) < 0.2, f"the event loop stalled {max(lags):.2f} s while the batch waited"
    assert await count(server, SESSIONS) == 1
    assert await count(server, TENANTS) == 2
    # The next batch finds the lock free and runs on the loop again.
    assert await server.batch(lambda conn: conn.exec_driver_sql("SELECT count(*) FROM tenants").scalar()) == 2


async def test_dropping_a_paused_chats_waiting_jobs_looks_them_up_by_chat(tmp_path: Path) -> None:
    """The statements that skip a paused chat's waiting jobs find them through the chat: SQLite's planner once chose
    the status index instead and walked every job waiting in any chat, on every batch that paused one."""
    path = tmp_path / "plans.db"
    store = Store(f"sqlite:///{path}")
    await store.create_schema()
    await store.dispose()
    raw = sqlite3.connect(path)
    try:
        statements: list[str] = []
        raw.set_trace_callback(statements.append)
        sqlite_sql.skip_queued(raw, [1, 2], NOW, "paused", "skipped_paused", ["handoff", "away"])
        raw.set_trace_callback(None)
        plans = {s: [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {s}")] for s in statements
                 if s.startswith("UPDATE")}
    finally:
        raw.close()
    assert len(plans) == 2
    for statement, plan in plans.items():
        walks = [step for step in plan if "reply_jobs" in step or step.startswith("SEARCH r ")]
        assert walks and not any("status" in step for step in walks), (statement, plan)
        assert any("session_id=?" in step for step in walks), (statement, plan)


async def test_sqlite_wal_stays_bounded_while_writes_never_stop(tmp_path: Path) -> None:
    """Passive checkpoints never catch up with a writer that never stops, and SQLite starts its WAL over only once
    one has: the WAL (and its index, mapped into memory) grew for as long as webhooks kept coming. Past its limit
    the writer truncates it between two batches."""
    path = tmp_path / "wal.db"
    store = Store(f"sqlite:///{path}", background_checkpoints=True, wal_restart_frames=256)  # 1 MiB of pages
    await store.create_schema()
    tenant_id = await insert(store, TENANTS, tenant_row("wal"))
    session_id = await insert(store, SESSIONS, session_row(tenant_id, "5511999990000@s.whatsapp.net"))
    body = "x" * 8_000
    largest, done = 0, asyncio.Event()

    async def checkpoints() -> None:  # what `serve` does every second, here more often
        nonlocal largest
        while not done.is_set():
            await store.checkpoint()
            largest = max(largest, path.with_name(path.name + "-wal").stat().st_size)
            await asyncio.sleep(0.02)

    async def writer(n: int) -> None:  # several at once: the writer thread always has a batch waiting
        for i in range(60):
            rows = [message_row(tenant_id, session_id, f"W{n}-{i}-{k}") | {"raw": body} for k in range(20)]
            await store.batch(lambda conn, rows=rows: conn.execute(MESSAGES.insert(), rows))

    checking = asyncio.create_task(checkpoints())
    try:
        await asyncio.gather(*(writer(n) for n in range(4)))  # about 40 MB of rows
    finally:
        done.set()
        await checking
        await store.dispose()
    assert path.stat().st_size > 30 * 2**20  # everything reached the database file
    assert largest < 12 * 2**20, f"the WAL grew to {largest / 2**20:.0f} MiB"
