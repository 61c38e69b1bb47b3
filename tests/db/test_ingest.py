"""Ingestion through the service: every real payload's action, dedupe under concurrency, one transaction."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import struct
from pathlib import Path

import pytest
import sqlalchemy as sa

from hybridflow.config import Settings
from hybridflow.crypto import generate_key
from hybridflow.errors import BadRequest, UnknownInstance
from hybridflow.models import ChatSession, Message, ReplyJob
from hybridflow.service import Service, TenantChanges
from tests.support.builders import EXPECTED, WEBHOOK_FIXTURES, fixture, owner, raw, upsert

PROMPT = TenantChanges(prompt="You are a helpful bakery assistant.")


async def count(service: Service, model: type, **where: object) -> int:
    table = model.__table__
    query = sa.select(sa.func.count()).select_from(table).where(*(table.c[k] == v for k, v in where.items()))
    async with service.store.read() as conn:
        return (await conn.execute(query)).scalar_one()


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
async def test_every_fixture_gets_its_documented_action(service: Service, name: str) -> None:
    body, text = fixture(name)
    expected = EXPECTED[name]
    await service.add_tenant(expected["instance"], PROMPT)
    result = await service.ingest(body, text)
    assert result.action == expected["action"]
    assert result.chat_id == expected["chat_jid"]
    if expected["action"] == "ignored_event":
        assert await count(service, Message) == 0  # an event that carries no message stores none
    else:
        assert await count(service, Message, message_id=result.message_id) == 1


async def test_stored_message_keeps_raw_payload_and_decision(service: Service, tenant) -> None:
    body = upsert("Quanto custa o pão?")
    await service.ingest(body, raw(body))
    async with service.store.read() as conn:
        row = (await conn.execute(sa.select(Message.__table__))).one()
    assert row.raw == raw(body)
    assert row.action == "reply_queued"
    assert row.text == "Quanto custa o pão?"
    assert row.direction == "customer"
    assert row.received_at.tzinfo is not None


async def test_retry_of_the_same_message_is_a_duplicate_and_changes_nothing(service: Service, tenant) -> None:
    body = upsert("Oi")
    first = await service.ingest(body, raw(body))
    second = await service.ingest(body, raw(body))
    assert (first.action, second.action) == ("reply_queued", "duplicate")
    assert await count(service, Message) == 1
    assert await count(service, ReplyJob) == 1


async def test_concurrent_duplicates_store_one_row_and_one_decision(service: Service, tenant) -> None:
    body = upsert("Vocês entregam?")
    results = await asyncio.gather(*(service.ingest(body, raw(body)) for _ in range(20)))
    actions = sorted(r.action for r in results)
    assert actions == ["duplicate"] * 19 + ["reply_queued"]
    assert await count(service, Message) == 1
    assert await count(service, ReplyJob) == 1


async def test_two_processes_on_one_database_store_one_row_per_message(service: Service, tenant, settings, clock) -> None:
    """A second Service with its own engine and writer stands for a second `serve` (or the CLI)."""
    async with Service.open(settings, clock=clock, worker_id="second") as other:
        bodies = [upsert(f"mensagem {i}", message_id=f"MSG{i:04d}", chat=f"55119000{i % 5:05d}@s.whatsapp.net")
                  for i in range(40)]
        calls = [svc.ingest(b, raw(b)) for b in bodies for svc in (service, other)]
        results = await asyncio.gather(*calls)
    by_id: dict[str, list[str]] = {}
    for r in results:
        by_id.setdefault(r.message_id, []).append(r.action)
    assert all(sorted(actions) == ["duplicate", "reply_queued"] for actions in by_id.values())
    assert await count(service, Message) == 40
    assert await count(service, ChatSession) == 5


async def test_messages_sent_together_get_one_reply_job_per_chat(service: Service, tenant) -> None:
    """Debounce: a queued job absorbs the next customer messages of its chat."""
    await service.update_tenant("test-instance", TenantChanges(debounce=5.0))
    bodies = [upsert("Oi"), upsert("Tudo bem?"), upsert("Qual o horário?")]
    for b in bodies:
        assert (await service.ingest(b, raw(b))).action == "reply_queued"
    assert await count(service, ReplyJob) == 1
    async with service.store.read() as conn:
        job = (await conn.execute(sa.select(ReplyJob.__table__))).one()
    assert job.last_message_id == bodies[-1]["data"]["key"]["id"]


async def test_one_bad_item_does_not_fail_its_batch_neighbours(service: Service, tenant) -> None:
    bodies = [upsert(f"ok {i}") for i in range(10)]
    bodies[3]["data"]["message"]["conversation"] = "nul \x00 and lone surrogate \ud800 inside"
    results = await asyncio.gather(*(service.ingest(b, raw(b)) for b in bodies))
    assert [r.action for r in results] == ["reply_queued"] * 10
    assert await count(service, Message) == 10


async def test_unknown_instance_is_a_distinct_error(service: Service) -> None:
    body = upsert(instance="nobody")
    with pytest.raises(UnknownInstance):
        await service.ingest(body, raw(body))


@pytest.mark.parametrize("body", [[], "text", {"instance": "x"}, {"event": "messages.upsert"}])
async def test_bodies_without_event_or_instance_are_bad_requests(service: Service, body: object) -> None:
    with pytest.raises(BadRequest):
        await service.ingest(body, raw(body))


async def test_events_we_do_not_act_on_are_acknowledged_and_not_stored(service: Service, tenant) -> None:
    body = {"event": "connection.update", "instance": "test-instance", "data": {"state": "open"}}
    assert (await service.ingest(body, raw(body))).action == "ignored_event"
    broken = upsert("x")
    del broken["data"]["key"]["id"]
    result = await service.ingest(broken, raw(broken))
    assert result.action == "ignored_event" and result.reason
    assert await count(service, Message) == 0


async def test_media_without_text_is_stored_without_reply(service: Service, tenant) -> None:
    body = upsert(None)
    assert (await service.ingest(body, raw(body))).action == "stored"
    assert await count(service, ReplyJob) == 0


async def test_groups_and_broadcasts_never_get_replies_by_default(service: Service, tenant) -> None:
    group = upsert("bom dia grupo", chat="120363025246125888@g.us", participant="5511987654321@s.whatsapp.net")
    status = upsert("meu status", chat="status@broadcast")
    assert (await service.ingest(group, raw(group))).action == "stored"
    assert (await service.ingest(status, raw(status))).action == "stored"
    assert await count(service, ReplyJob) == 0


async def test_groups_can_be_allowed_per_tenant(service: Service, tenant) -> None:
    await service.update_tenant("test-instance", TenantChanges(allow_groups=True))
    group = upsert("bom dia grupo", chat="120363025246125888@g.us", participant="5511987654321@s.whatsapp.net")
    assert (await service.ingest(group, raw(group))).action == "reply_queued"


async def test_lid_chat_is_keyed_by_phone_when_known_and_by_lid_otherwise(service: Service, tenant) -> None:
    with_phone = upsert("oi", chat="123456789012345@lid", remoteJidAlt="5511965432109@s.whatsapp.net")
    with_phone["data"]["key"]["remoteJidAlt"] = "5511965432109@s.whatsapp.net"
    lid_only = upsert("oi", chat="999888777666555@lid")
    assert (await service.ingest(with_phone, raw(with_phone))).chat_id == "5511965432109@s.whatsapp.net"
    assert (await service.ingest(lid_only, raw(lid_only))).chat_id == "999888777666555@lid"


async def test_a_customer_typing_after_the_owner_in_a_new_chat_is_not_answered(service: Service, tenant) -> None:
    """The owner opened the chat before the bot ever spoke: muted from the first message."""
    first = owner("Oi Maria, seu pedido chegou")
    reply = upsert("Obrigada!")
    assert (await service.ingest(first, raw(first))).action == "paused"
    assert (await service.ingest(reply, raw(reply))).action == "ignored_paused"
    assert await count(service, ReplyJob) == 0


async def test_dry_run_keeps_nothing(service: Service, tenant, fake_ollama) -> None:
    body = upsert("Vocês abrem domingo?")
    result, reply = await service.rehearse(body, raw(body))
    assert result.action == "reply_queued"
    assert reply and "Vocês abrem domingo?" in reply
    assert await count(service, Message) == 0
    assert await count(service, ChatSession) == 0


@pytest.mark.parametrize(("content", "action"), [
    ({"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6, "name": "Padaria Boa",
                          "address": "Rua das Flores, 10"}}, "reply_queued"),
    ({"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6}}, "stored"),
    ({"contactMessage": {"displayName": "João", "vcard": "BEGIN:VCARD\nEND:VCARD"}}, "reply_queued"),
    ({"buttonsResponseMessage": {"selectedButtonId": "b1", "selectedDisplayText": "Quero encomendar"}},
     "reply_queued"),
    ({"reactionMessage": {"key": {"id": "X"}, "text": "👍"}}, "stored"),
])
async def test_what_the_readme_decision_table_says_is_answered(service: Service, tenant, content, action) -> None:
    body = upsert("unused")
    body["data"]["message"] = content
    body["data"]["messageType"] = next(iter(content))
    assert (await service.ingest(body, raw(body))).action == action


async def test_a_batch_writes_back_pauses_and_activity_each_to_its_chat(service: Service, tenant, clock) -> None:
    """One batch where the owner takes over a chat, a customer writes in a chat already taken over, and another
    customer writes in a chat of their own: each session ends as its messages say."""
    taken, waiting, free = (f"55119000{n:05d}@s.whatsapp.net" for n in (1, 2, 3))
    first = owner(chat=waiting)
    assert (await service.ingest(first, raw(first))).action == "paused"
    async with service.store.read() as conn:
        before = (await conn.execute(sa.select(ChatSession.__table__).where(
            ChatSession.__table__.c.chat_id == waiting))).one()
    clock.advance(seconds=60)
    bodies = [owner(chat=taken), upsert("Ainda tem bolo?", chat=waiting, push_name="Ana"),
              upsert("Bom dia!", chat=free, push_name="Bia")]
    actions = [r.action for r in await asyncio.gather(*(service.ingest(b, raw(b)) for b in bodies))]
    assert actions == ["paused", "ignored_paused", "reply_queued"]
    async with service.store.read() as conn:
        rows = {r.chat_id: r for r in await conn.execute(sa.select(ChatSession.__table__))}
    now = clock()
    assert rows[taken].is_paused and rows[taken].last_human_at == now and rows[taken].resumes_at > now
    assert rows[taken].pauses  # its pause is kept with the summary
    kept = rows[waiting]
    assert kept.is_paused and kept.last_message_at == now and kept.push_name == "Ana"
    assert (kept.resumes_at, kept.last_human_at, kept.paused_at, kept.pauses) == (
        before.resumes_at, before.last_human_at, before.paused_at, before.pauses)
    assert not rows[free].is_paused and rows[free].push_name == "Bia" and rows[free].last_message_at == now
    assert rows[free].resumes_at is None and rows[free].last_human_at is None


async def test_on_sqlite_a_customer_message_leaves_the_pause_indexes_unwritten(fake_evolution, fake_ollama, clock,
                                                                              tmp_path: Path) -> None:
    """Each page a commit changes is written to the WAL (and synced): a message that changes no pause must not
    rewrite the sessions' pause indexes (an UPDATE that sets a column rewrites its index entries, same value or
    not)."""
    path = tmp_path / "pages.db"
    settings = Settings(database_url=f"sqlite:///{path}", secret_key=generate_key(), evolution_url=fake_evolution.url,
                        ollama_host=fake_ollama.url, debounce=0.0, log_format="console")
    async with Service.open(settings, clock=clock) as svc:
        await svc.add_tenant("test-instance", PROMPT)
        first = upsert("Oi")
        assert (await svc.ingest(first, raw(first))).action == "reply_queued"
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # the WAL starts empty
            roots = dict(db.execute("SELECT name, rootpage FROM sqlite_schema WHERE type IN ('table', 'index')"))
        clock.advance(seconds=5)
        second = upsert("Tem pão de queijo?")
        assert (await svc.ingest(second, raw(second))).action == "reply_queued"
        written = _wal_pages(path.with_name(path.name + "-wal"))
    # A tiny database: each table and index is its root page alone.
    assert {roots["sessions"], roots["ix_sessions_tenant_last_message"]} <= written  # the chat's activity is written
    assert roots["ix_sessions_paused_resumes_at"] not in written
    assert roots["ix_sessions_paused_last_human"] not in written


def _wal_pages(wal: Path) -> set[int]:
    """The page numbers of a WAL file's frames (a 32-byte header, then frames of a 24-byte header and a page)."""
    data = wal.read_bytes()
    page_size = struct.unpack(">I", data[8:12])[0]
    return {struct.unpack(">I", data[offset:offset + 4])[0] for offset in range(32, len(data), 24 + page_size)}
