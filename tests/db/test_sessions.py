"""The session state machine with a fake clock: invisible mute, its extension, auto-resume, operator control."""

from __future__ import annotations

import sqlalchemy as sa

from hybridflow.models import SessionEvent
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, owner, raw, upsert


async def send(service: Service, body: dict) -> str:
    return (await service.ingest(body, raw(body))).action


async def history(service: Service) -> list[tuple[str, str, str]]:
    table = SessionEvent.__table__
    async with service.store.read() as conn:
        rows = await conn.execute(sa.select(table.c.change, table.c.reason, table.c.actor).order_by(table.c.id))
        return [tuple(r) for r in rows]


async def test_owner_message_pauses_and_customer_is_ignored_while_paused(service: Service, tenant) -> None:
    assert await send(service, upsert("Oi")) == "reply_queued"
    assert await send(service, owner("Deixa comigo")) == "paused"
    assert await send(service, upsert("Ok!")) == "ignored_paused"
    view = await service.session("test-instance", CUSTOMER)
    assert view.is_paused and view.pause_reason == "human_message"


async def test_pause_lifts_two_hours_after_the_last_human_message(service: Service, tenant, clock: FakeClock) -> None:
    paused_at = clock.now
    await send(service, owner())
    view = await service.session("test-instance", CUSTOMER)
    assert (view.resumes_at - paused_at).total_seconds() == 7200
    clock.advance(hours=1, minutes=59)
    assert await send(service, upsert("Ainda aí?")) == "ignored_paused"
    clock.advance(minutes=2)
    assert await send(service, upsert("Alô?")) == "reply_queued"  # lazily resumed, no cron needed
    assert await history(service) == [("paused", "human_message", "owner"), ("resumed", "auto_resume", "webhook")]


async def test_each_owner_message_extends_the_pause(service: Service, tenant, clock: FakeClock) -> None:
    await send(service, owner("primeira"))
    clock.advance(hours=1, minutes=30)
    assert await send(service, owner("segunda")) == "paused"
    clock.advance(hours=1)  # 2h30 after the first, 1h after the second
    assert await send(service, upsert("Oi?")) == "ignored_paused"
    assert await service.sweep() == []
    clock.advance(hours=1, seconds=1)
    resumed = await service.sweep()
    assert [v.chat_id for v in resumed] == [CUSTOMER]
    assert await history(service) == [("paused", "human_message", "owner"), ("resumed", "auto_resume", "sweep")]


async def test_resume_after_is_per_tenant(service: Service, tenant, clock: FakeClock) -> None:
    await service.update_tenant("test-instance", TenantChanges(resume_after=600))
    await send(service, owner())
    clock.advance(minutes=10, seconds=1)
    assert await send(service, upsert("Oi")) == "reply_queued"


async def test_message_sent_by_another_api_client_is_a_takeover(service: Service, tenant) -> None:
    agent = upsert("Olá, sou a Ana do atendimento", from_me=True, event="send.message")
    assert await send(service, agent) == "paused"
    view = await service.session("test-instance", CUSTOMER)
    assert view.pause_reason == "api_takeover"


async def test_manual_pause_without_duration_is_never_lifted_by_sweep(service: Service, tenant, clock: FakeClock) -> None:
    view = await service.pause("test-instance", "+55 11 98765-4321")
    assert view.chat_id == CUSTOMER and view.is_paused and view.resumes_at is None
    clock.advance(days=3)
    assert await service.sweep() == []
    assert await send(service, upsert("Oi")) == "ignored_paused"
    await send(service, owner("estou aqui"))  # a human message does not shorten an operator's pause
    clock.advance(days=1)
    assert await service.sweep() == []
    assert (await service.session("test-instance", CUSTOMER)).is_paused


async def test_manual_pause_with_duration_resumes_on_time(service: Service, tenant, clock: FakeClock) -> None:
    await service.pause("test-instance", CUSTOMER, duration=1800)
    clock.advance(minutes=29)
    assert await service.sweep() == []
    clock.advance(minutes=2)
    assert [v.chat_id for v in await service.sweep()] == [CUSTOMER]


async def test_operator_resume_is_immediate_and_untouched_by_sweep(service: Service, tenant, clock: FakeClock) -> None:
    await send(service, owner())
    view = await service.resume("test-instance", CUSTOMER)
    assert not view.is_paused and view.resumes_at is None
    clock.advance(hours=3)
    assert await service.sweep() == []
    assert await send(service, upsert("Oi")) == "reply_queued"
    assert await history(service) == [("paused", "human_message", "owner"), ("resumed", "operator", "operator")]


async def test_pause_drops_replies_still_waiting(service: Service, tenant) -> None:
    await service.update_tenant("test-instance", TenantChanges(debounce=30))
    await send(service, upsert("Oi"))
    await send(service, owner("Eu respondo"))
    detail = await service.session_detail("test-instance", CUSTOMER)
    assert [r.status for r in detail.replies] == ["skipped_paused"]


async def test_session_detail_shows_history_transcript_and_replies(service: Service, tenant) -> None:
    await send(service, upsert("Oi"))
    await send(service, owner("Oi Maria"))
    detail = await service.session_detail("test-instance", CUSTOMER)
    assert [(m.direction, m.text, m.action) for m in detail.messages] == [
        ("customer", "Oi", "reply_queued"), ("owner", "Oi Maria", "paused")]
    assert [e.change for e in detail.events] == ["paused"]
    assert detail.session.push_name == "Maria"


async def test_pause_state_survives_a_restart(service: Service, tenant, settings, clock: FakeClock) -> None:
    await send(service, owner())
    async with Service.open(settings, clock=clock) as restarted:
        assert await send(restarted, upsert("Oi")) == "ignored_paused"
        body = upsert("Oi")
        assert await send(restarted, body) == "ignored_paused"
        assert await send(restarted, body) == "duplicate"


async def test_sessions_list_filters_and_pages(service: Service, tenant) -> None:
    for i in range(5):
        await send(service, upsert("oi", chat=f"55119000000{i}@s.whatsapp.net"))
    await service.pause("test-instance", "551190000002")
    views, total = await service.list_sessions(paused=True)
    assert total == 1 and views[0].chat_id == "551190000002@s.whatsapp.net"
    page, total = await service.list_sessions(limit=2, offset=4)
    assert total == 5 and len(page) == 1
