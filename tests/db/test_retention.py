"""Retention on SQLite and PostgreSQL: raw payloads cleared and old messages deleted at their limits (with their
replies and events), a paused chat kept paused, deleted ids answered ``duplicate``, the limits refused when too
short, what ``sweep --json`` reports, ``vacuum``, and what ``doctor``, ``tenants show`` and ``/metrics`` say."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from hybridflow.config import Settings
from hybridflow.migrations import MIGRATIONS
from hybridflow.models import SCHEMA_VERSION
from hybridflow.service import Service, TenantChanges
from hybridflow.store import Store
from hybridflow.web import create_app
from tests.conftest import FakeClock
from tests.db.test_migrations import SCHEMAS, V1_ROWS, execute_script, rows
from tests.support.builders import CUSTOMER, owner, raw, run_due, upsert
from tests.support.cli import as_json, invoke, ok, one_line_error

pytestmark = pytest.mark.usefixtures("isolated")

INSTANCE = "test-instance"
OTHER = "5511912345678@s.whatsapp.net"
THIRD = "5511933334444@s.whatsapp.net"
DAY = 86400


async def send(service: Service, body: dict) -> str:
    return (await service.ingest(body, raw(body))).action


async def table(service: Service, query: str) -> list[tuple]:
    return await rows(service.store, query)


def cli(settings: Settings, *args: str, **env: str):  # type: ignore[no-untyped-def]
    """The CLI against the test's database with its secret key (in a thread when called from a running loop)."""
    return invoke(*args, env={"HYBRIDFLOW_DATABASE_URL": settings.database_url,
                              "HYBRIDFLOW_SECRET_KEY": settings.secret_key or "",
                              **{f"HYBRIDFLOW_{k.upper()}": v for k, v in env.items()}})


# --- raw payloads ------------------------------------------------------------------------------------------------


async def test_raw_bodies_older_than_retain_raw_are_cleared_and_the_messages_stay(service: Service, tenant,
                                                                                  clock: FakeClock):
    assert await send(service, upsert("Vocês abrem domingo?", message_id="M-OLD")) == "reply_queued"
    clock.advance(hours=1)
    assert await send(service, upsert("E sábado?", message_id="M-YOUNG")) == "reply_queued"
    clock.advance(days=30, minutes=-30)  # M-OLD is 30 d 30 min old, M-YOUNG 29 d 23 h 30 min
    report = await service.enforce_retention()
    assert report.counts() == {"raw_cleared": 1, "messages_deleted": 0, "jobs_deleted": 0, "events_deleted": 0,
                               "tombstones_pruned": 0}
    assert await table(service, "SELECT message_id, raw IS NULL, text FROM messages ORDER BY id") == [
        ("M-OLD", True, "Vocês abrem domingo?"), ("M-YOUNG", False, "E sábado?")]
    detail = await service.session_detail(INSTANCE, CUSTOMER)
    assert [m.text for m in detail.messages] == ["Vocês abrem domingo?", "E sábado?"]
    assert (await service.enforce_retention()).counts()["raw_cleared"] == 0  # nothing twice
    clock.advance(hours=1)
    assert (await service.enforce_retention()).raw_cleared == 1


async def test_a_tenant_may_keep_raw_bodies_forever(service: Service, tenant, clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(retain_raw="forever"))
    await send(service, upsert(message_id="M-OLD"))
    clock.advance(days=400)
    assert (await service.enforce_retention()).raw_cleared == 0
    assert (await service.tenant(INSTANCE)).public()["retain_raw"] == "forever"


# --- messages ------------------------------------------------------------------------------------------------------


@pytest.fixture
async def history(service: Service, tenant, clock: FakeClock) -> datetime:
    """Three chats of a tenant that keeps messages 3 days: Maria asked and was answered, then the owner paused her
    chat by hand (until resumed); João was answered too; Ana writes 2 days later. Returns when it began."""
    await service.update_tenant(INSTANCE, TenantChanges(retain_messages="3d"))
    began = clock()
    assert await send(service, upsert("Vocês abrem domingo?", message_id="M-MARIA")) == "reply_queued"
    assert await send(service, upsert("Tem pão?", chat=OTHER, push_name="João", message_id="M-JOAO")) == "reply_queued"
    assert await run_due(service) == ["sent", "sent"]
    await service.pause(INSTANCE, CUSTOMER)  # until resumed by hand
    clock.advance(days=2)
    assert await send(service, upsert("Bom dia", chat=THIRD, push_name="Ana", message_id="M-ANA")) == "reply_queued"
    assert await run_due(service) == ["sent"]
    return began


async def test_messages_older_than_retain_messages_go_with_their_replies_and_events(service: Service, history,
                                                                                   clock: FakeClock):
    clock.now = history + timedelta(days=3, seconds=-1)  # one second younger than the limit: nothing goes
    assert (await service.enforce_retention()).messages_deleted == 0
    clock.now = history + timedelta(days=3, seconds=1)
    report = await service.enforce_retention()
    assert (report.messages_deleted, report.jobs_deleted, report.events_deleted) == (4, 2, 1)  # 2 asked, 2 answers
    assert (await table(service, "SELECT message_id, direction FROM messages ORDER BY id"))[:1] == [
        ("M-ANA", "customer")]
    assert len(await table(service, "SELECT id FROM messages")) == 2  # Ana's and its reply
    assert len(await table(service, "SELECT id FROM reply_jobs")) == 1
    maria = await service.session(INSTANCE, CUSTOMER)
    assert (maria.is_paused, maria.pause_reason, maria.resumes_at) == (True, "operator", None)  # still paused
    assert await send(service, upsert("Alô?", message_id="M-MARIA-2")) == "ignored_paused"


async def test_a_deleted_message_is_answered_duplicate_and_stores_nothing(service: Service, history,
                                                                          clock: FakeClock):
    clock.now = history + timedelta(days=3, minutes=1)
    await service.enforce_retention()
    before = await table(service, "SELECT count(*) FROM messages")
    # Evolution replays the old customer message (reconnect): it is not answered a second time.
    assert await send(service, upsert("Tem pão?", chat=OTHER, push_name="João", message_id="M-JOAO")) == "duplicate"
    # The echo of our own old reply, whose row is gone, neither pauses the chat nor is stored.
    [(sent_id,)] = await table(service, "SELECT sent_message_id FROM reply_jobs")
    assert sent_id is not None  # Ana's, kept: now find João's own reply id among the tombstones
    tombstones = {m for (m,) in await table(service, "SELECT message_id FROM message_tombstones")}
    assert {"M-MARIA", "M-JOAO"} <= tombstones and len(tombstones) == 4
    bot_id = next(iter(tombstones - {"M-MARIA", "M-JOAO"}))
    echo = upsert("Echo: Tem pão?", chat=OTHER, from_me=True, event="send.message", message_id=bot_id)
    assert (await service.ingest(echo, raw(echo))).action == "duplicate"
    assert not (await service.session(INSTANCE, OTHER)).is_paused
    assert await table(service, "SELECT count(*) FROM messages") == before
    assert await table(service, "SELECT status, chat_id FROM reply_jobs") == [("sent", THIRD)]  # Ana's


async def test_tombstones_are_kept_a_week_then_pruned(service: Service, history, clock: FakeClock):
    clock.now = history + timedelta(days=3, minutes=1)
    await service.enforce_retention()
    clock.advance(days=6)
    assert (await service.enforce_retention()).tombstones_pruned == 0
    clock.advance(days=1, minutes=1)
    assert (await service.enforce_retention()).tombstones_pruned == 4
    assert await table(service, "SELECT count(*) FROM message_tombstones") == [(2,)]  # Ana's, deleted later


async def test_retention_works_in_bounded_batches(service: Service, tenant, clock: FakeClock):
    service.retention.batch = service.retention.max_batch = 3
    for n in range(10):
        await send(service, upsert(f"Mensagem {n}", message_id=f"M-{n}"))
    clock.advance(days=31)
    assert (await service.enforce_retention()).raw_cleared == 10
    await service.update_tenant(INSTANCE, TenantChanges(retain_messages="2d"))
    report = await service.enforce_retention()
    assert (report.messages_deleted, report.jobs_deleted) == (10, 0)  # the queued reply is still open: kept
    assert await table(service, "SELECT count(*) FROM message_tombstones") == [(10,)]


# --- limits --------------------------------------------------------------------------------------------------------


def test_a_message_retention_shorter_than_two_days_is_refused(hf):
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Be brief."))
    for option in ("--retain-messages",):
        result = hf("tenants", "update", INSTANCE, option, "36h")
        assert result.exit_code == 2
        assert "invalid --retain-messages" in one_line_error(result) and "2d" in result.stderr
    result = hf("tenants", "update", INSTANCE, "--retain-raw", "soon")
    assert result.exit_code == 2 and "invalid --retain-raw" in one_line_error(result)
    setting = hf("sweep", retain_messages="1d")
    assert setting.exit_code == 2
    assert "invalid value for 'retain_messages' in environment variable HYBRIDFLOW_RETAIN_MESSAGES" in \
        one_line_error(setting)
    shown = as_json(hf("tenants", "update", INSTANCE, "--retain-messages", "365d", "--retain-raw", "off", "--json"))
    assert (shown["retain_messages"], shown["retain_raw"]) == ("365d", "forever")
    assert ok(hf("tenants", "update", INSTANCE, "--retain-messages", "2d"))
    table = ok(hf("tenants", "show", INSTANCE)).stdout
    assert "retain-messages" in table and "2d" in table and "retain-raw" in table


# --- sweep, vacuum, visibility -------------------------------------------------------------------------------------


async def test_sweep_json_reports_what_retention_cleared(service: Service, tenant, clock: FakeClock):
    clock.now = datetime.now(UTC) - timedelta(days=40)  # the CLI runs on the real clock, 40 days later
    await send(service, upsert("Oi", message_id="M-1"))
    await send(service, owner("Já respondo", message_id="M-2"))
    clock.now = datetime.now(UTC) - timedelta(days=20)
    await send(service, upsert("Oi de novo", chat=OTHER, message_id="M-3"))
    quiet = as_json(await asyncio.to_thread(cli, service.settings, "sweep", "--json", retain_raw="forever"))
    assert quiet["retention"] == {"raw_cleared": 0, "messages_deleted": 0, "jobs_deleted": 0, "events_deleted": 0,
                                  "tombstones_pruned": 0}
    swept = as_json(await asyncio.to_thread(cli, service.settings, "sweep", "--json", retain_messages="30d",
                                            retain_raw="10d"))
    assert isinstance(swept["resumed"], list)  # the owner's pause ran out long ago: resumed by this sweep too
    assert swept["retention"] == {"raw_cleared": 1, "messages_deleted": 2, "jobs_deleted": 1, "events_deleted": 1,
                                  "tombstones_pruned": 0}
    text = ok(await asyncio.to_thread(cli, service.settings, "sweep", retain_raw="1d")).stdout
    assert text == ""  # nothing left to do: quiet for cron


async def test_tenants_show_and_doctor_say_what_is_stored(service: Service, tenant, clock: FakeClock):
    clock.now = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    await send(service, upsert("Oi", message_id="M-1"))
    clock.advance(days=1)
    await send(service, upsert("Oi", chat=OTHER, message_id="M-2"))
    shown = as_json(await asyncio.to_thread(cli, service.settings, "tenants", "show", INSTANCE, "--json"))
    assert shown["messages"] == {"stored": 2, "oldest": "2026-01-05T12:00:00+00:00"}
    assert (shown["retain_raw"], shown["retain_messages"]) == ("30d", "forever")
    text = ok(await asyncio.to_thread(cli, service.settings, "tenants", "show", INSTANCE)).stdout
    assert "messages-stored" in text and "2 (oldest 2026-01-05" in text
    result = await asyncio.to_thread(cli, service.settings, "doctor", "--json")  # exit 1: no Evolution here
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["storage"]["ok"]
    assert checks["storage"]["detail"].startswith("2 messages stored, the oldest received 2026-01-05")
    assert "raw payloads 30d, messages forever" in checks["storage"]["detail"]


async def test_metrics_show_the_database_size_and_the_rows_retention_cleared(settings: Settings, tenant,
                                                                            clock: FakeClock, aiohttp_client):
    from tests.db.test_metrics import parse, value

    async with Service.open(replace(settings, metrics=True), clock=clock) as metered:
        client = await aiohttp_client(create_app(metered, background=False))
        await send(metered, upsert("Oi", message_id="M-1"))
        clock.advance(days=31)
        await metered.enforce_retention()
        response = await client.get("/metrics", headers={"Authorization": "Bearer admin-token"})
        types, samples = parse(await response.text())
    assert types["hybridflow_database_size_bytes"] == "gauge"
    assert value(samples, "hybridflow_database_size_bytes") > 0
    assert value(samples, "hybridflow_retention_rows_total", kind="raw_cleared") == 1
    assert value(samples, "hybridflow_retention_rows_total", kind="messages_deleted") == 0


async def test_vacuum_compacts_the_database(service: Service, tenant, clock: FakeClock):
    for n in range(300):
        await send(service, upsert("x" * 2000, message_id=f"M-{n}", chat=f"55119{n:08d}@s.whatsapp.net"))
    await service.update_tenant(INSTANCE, TenantChanges(retain_messages="2d"))
    clock.advance(days=3)
    await service.enforce_retention()
    result = ok(await asyncio.to_thread(cli, service.settings, "vacuum"))
    if service.store.is_sqlite:
        assert result.stdout.startswith(f"vacuumed SQLite {service.store.sqlite_path.resolve()}: ")
        assert "incremental auto-vacuum is on" in result.stdout
    else:
        assert result.stdout.startswith("ran VACUUM (ANALYZE) on PostgreSQL ") and "autovacuum" in result.stdout
    report = as_json(await asyncio.to_thread(cli, service.settings, "vacuum", "--json"))
    assert report["after"] > 0 and set(report) == {"database", "backend", "before", "after", "seconds"}


def test_a_new_sqlite_database_gives_space_back_by_itself_and_vacuum_converts_an_old_one(tmp_path: Path):
    new = tmp_path / "new.db"
    ok(invoke("--database-url", f"sqlite:///{new}", "migrate"))
    with sqlite3.connect(new) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:  # a database made before auto_vacuum was set: release 0.1.0's schema
        conn.executescript((SCHEMAS / "v1-sqlite.sql").read_text())
    ok(invoke("--database-url", f"sqlite:///{old}", "migrate"))
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (0,)
    vacuumed = ok(invoke("--database-url", f"sqlite:///{old}", "vacuum")).stdout
    assert "incremental auto-vacuum is on" in vacuumed
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,)


# --- the schema step ------------------------------------------------------------------------------------------------


async def test_a_version_4_database_keeps_its_messages_and_may_then_clear_raw(database_url: str,
                                                                             monkeypatch: pytest.MonkeyPatch):
    store = Store(database_url)
    try:
        dialect = "sqlite" if store.is_sqlite else "postgresql"
        await execute_script(store, (SCHEMAS / f"v1-{dialect}.sql").read_text())
        await execute_script(store, V1_ROWS)
        monkeypatch.setattr("hybridflow.migrations.SCHEMA_VERSION", 4)  # this release as it was, up to version 4
        assert await store.create_schema(MIGRATIONS[:3]) == 4
        monkeypatch.undo()
        assert await store.create_schema() == SCHEMA_VERSION
        assert await rows(store, "SELECT message_id, text, raw FROM messages") == [("M1", "Oi", "{}")]
        assert await rows(store, "SELECT retain_raw, retain_messages FROM tenants") == [(None, None)]
        await execute_script(store, "UPDATE messages SET raw = NULL")
        await execute_script(store, "INSERT INTO message_tombstones (tenant_id, message_id, deleted_at) "
                                    "VALUES (1, 'M0', '2026-11-30 10:00:00')")
        assert await rows(store, "SELECT message_id, raw FROM messages") == [("M1", None)]
        async with store.read() as conn:
            indexes = await conn.run_sync(lambda c: {i["name"] for i in sa.inspect(c).get_indexes("messages")})
        assert {"ix_messages_tenant_received", "ix_messages_raw_received", "ix_messages_session_received"} <= indexes
    finally:
        await store.dispose()


def test_settings_document_forever():
    from hybridflow.config import load_settings

    settings = load_settings(environ={"HYBRIDFLOW_RETAIN_RAW": "off", "HYBRIDFLOW_RETAIN_MESSAGES": "365d"})
    assert (settings.retain_raw, settings.retain_messages) == (None, 365 * DAY)
    assert Settings().retain_raw == 30 * DAY and Settings().retain_messages is None

