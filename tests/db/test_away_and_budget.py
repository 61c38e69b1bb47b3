"""The rest of who-and-when (issue 11), on both databases: the away message (once per chat per local day, its own
job kind, skipped when paused, outside the reply cap), the daily token budget from Ollama's own counts, the
model told the hours and the local clock, a tenant's country for typed numbers, and business hours across DST."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from hybridflow.errors import BadRequest
from hybridflow.models import JOBS
from hybridflow.service import Service, TenantChanges
from hybridflow.store import Store
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, owner, raw, run_due, upsert
from tests.support.fakes import FakeEvolution, FakeOllama

INSTANCE = "test-instance"
AWAY = "Olá! Estamos fechados agora. Voltamos {next_open}."


async def say(service: Service, clock: FakeClock, at: str | None, text: str = "Vocês estão abertos?",
              chat: str = CUSTOMER) -> tuple[str, str | None]:
    """A customer message received at ``at`` (UTC, ISO) or now; the webhook's action and reason."""
    if at is not None:
        clock.now = datetime.fromisoformat(at).replace(tzinfo=UTC)
    body = upsert(text, chat=chat)
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


async def jobs_of(store: Store) -> list[tuple[str, str, str | None]]:
    async with store.read() as conn:
        return [tuple(r) for r in await conn.execute(
            sa.select(JOBS.c.kind, JOBS.c.status, JOBS.c.reply_text).order_by(JOBS.c.id))]


async def shop_with_away(service: Service, **changes: object) -> None:
    """Open Monday to Friday 08:00-18:00 in São Paulo (UTC-3), the bot answering only while open."""
    await service.update_tenant(INSTANCE, TenantChanges(**{
        "hours": "mon-fri 08:00-18:00", "timezone": "America/Sao_Paulo", "hours_mode": "inside",
        "away_message": AWAY, **changes}))


# -- the away message ---------------------------------------------------------------------------------------------


async def test_the_away_message_goes_out_once_per_chat_per_local_day(service: Service, tenant, clock: FakeClock,
                                                                     fake_evolution: FakeEvolution):
    await shop_with_away(service)
    # Tuesday 2026-12-01 21:30 in São Paulo (00:30 UTC on Wednesday): closed, and still Tuesday there.
    assert await say(service, clock, "2026-12-02T00:30:00") == ("ignored_hours", None)
    assert await run_due(service) == ["sent"]
    assert [m["text"] for m in fake_evolution.sent_texts] == ["Olá! Estamos fechados agora. Voltamos quarta-feira, 08:00."]
    assert await say(service, clock, "2026-12-02T02:00:00", "Alguém aí?") == ("ignored_hours", None)  # 23:00 there
    assert await run_due(service) == []  # the same local day: no second away message
    # Wednesday 06:00 in São Paulo: a new local day, still closed -> one more, naming today's opening time.
    assert await say(service, clock, "2026-12-02T09:00:00", "Bom dia?") == ("ignored_hours", None)
    assert await run_due(service) == ["sent"]
    assert fake_evolution.sent_texts[-1]["text"] == "Olá! Estamos fechados agora. Voltamos quarta-feira, 08:00."
    assert await say(service, clock, "2026-12-02T11:00:00", "E agora?") == ("reply_queued", None)  # 08:00: open
    kinds = [(kind, status) for kind, status, _ in await jobs_of(service.store)]
    assert kinds == [("away", "sent"), ("away", "sent"), ("reply", "queued")]


async def test_an_away_message_is_not_a_reply_to_the_cap_and_its_echo_pauses_nothing(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution):
    await shop_with_away(service, reply_cap="1/1h")
    await say(service, clock, "2026-12-01T10:50:00")  # 07:50 there: closed
    assert await run_due(service) == ["sent"]
    sent = fake_evolution.sent_messages[-1]  # the phone echoes what the bot sent, with its id
    echo = owner(fake_evolution.sent_texts[-1]["text"], message_id=sent["key"]["id"])
    assert (await service.ingest(echo, raw(echo))).action == "own_message"
    # 08:05: open; the away message does not count against a cap of one reply per hour.
    assert await say(service, clock, "2026-12-01T11:05:00", "Abriram?") == ("reply_queued", None)
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused


async def test_no_away_message_to_a_paused_chat_and_a_waiting_one_is_dropped_by_a_pause(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution):
    await shop_with_away(service)
    await say(service, clock, "2026-12-01T23:00:00")  # 20:00 there: closed, the away message waits
    takeover = owner("Oi! Já te respondo.")
    assert (await service.ingest(takeover, raw(takeover))).action == "paused"
    assert await run_due(service) == []
    assert await jobs_of(service.store) == [("away", "skipped_paused", AWAY.replace("{next_open}", "quarta-feira, 08:00"))]
    assert await say(service, clock, None, "Oi?") == ("ignored_paused", "human_message")
    assert fake_evolution.sent_texts == []


async def test_two_processes_queue_one_away_message_for_a_chat(service: Service, tenant, settings, clock: FakeClock):
    await shop_with_away(service)
    clock.now = datetime(2026, 12, 1, 23, 0, tzinfo=UTC)
    async with Service.open(settings, clock=clock) as other:
        bodies = [upsert(f"Mensagem {n}") for n in range(6)]
        results = await asyncio.gather(*((service if n % 2 else other).ingest(b, raw(b))
                                         for n, b in enumerate(bodies)))
    assert {r.action for r in results} == {"ignored_hours"}
    assert [kind for kind, _, _ in await jobs_of(service.store)] == ["away"]


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"away_message": "Voltamos {next_opening}"}, "{next_opening}"),
    ({"locale": "klingon"}, "--locale"),
    ({"country": "XX"}, "--country"),
    ({"daily_tokens": -5}, "--daily-tokens"),
])
async def test_bad_policy_values_are_refused_and_change_nothing(service: Service, tenant, changes, fragment):
    with pytest.raises(BadRequest) as refused:
        await service.update_tenant(INSTANCE, TenantChanges(**changes))
    assert fragment in refused.value.message
    again = await service.tenant(INSTANCE)
    assert (again.away_message, again.locale, again.country, again.daily_tokens) == (None, "pt_BR", "BR", None)


async def test_the_away_message_speaks_the_tenants_locale(service: Service, tenant, clock: FakeClock,
                                                          fake_evolution: FakeEvolution):
    await shop_with_away(service, locale="en", away_message="We are closed. Back on {next_open}.")
    await say(service, clock, "2026-12-04T22:00:00")  # Friday 19:00 there
    assert await run_due(service) == ["sent"]
    assert fake_evolution.sent_texts[-1]["text"] == "We are closed. Back on Monday, 08:00."


# -- the daily token budget ---------------------------------------------------------------------------------------


async def test_the_daily_budget_counts_ollamas_tokens_and_skips_replies_once_spent(
        service: Service, tenant, clock: FakeClock, fake_ollama: FakeOllama, fake_evolution: FakeEvolution):
    await service.update_tenant(INSTANCE, TenantChanges(daily_tokens=60, hours="mon-sun 00:00-24:00",
                                                        timezone="America/Sao_Paulo"))
    fake_ollama.prompt_tokens, fake_ollama.answer_tokens = 20, 15  # 35 per answer
    clock.now = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)
    await say(service, clock, None, "Oi", chat="5511911110001@s.whatsapp.net")
    assert await run_due(service) == ["sent"]
    await say(service, clock, None, "Oi", chat="5511911110002@s.whatsapp.net")
    assert await run_due(service) == ["sent"]  # 35 of 60 used when it started: it goes out (70 now)
    await say(service, clock, None, "Oi", chat="5511911110003@s.whatsapp.net")
    assert await run_due(service) == ["skipped_budget"]
    assert len(fake_evolution.sent_texts) == 2 and len(fake_ollama.requests) == 2  # the model was not asked

    tenant_now, usage = await service.tenant_report(INSTANCE)
    assert (usage["used"], usage["budget"], usage["uncounted_answers"]) == (70, 60, 0)
    assert usage["since"] == "2026-12-01T00:00:00-03:00"
    skipped = (await service.session_detail(INSTANCE, "5511911110003@s.whatsapp.net")).replies[-1]
    assert skipped.status == "skipped_budget" and "70 of 60 tokens" in skipped.last_error
    sent = (await service.session_detail(INSTANCE, "5511911110001@s.whatsapp.net")).replies[-1]
    assert (sent.status, sent.tokens) == ("sent", 35)
    text = await service.metrics_text()
    assert 'hybridflow_tokens_today{tenant="test-instance"} 70.0' in text
    assert 'hybridflow_replies_total{status="skipped_budget"} 1.0' in text
    assert 'hybridflow_llm_tokens_total{tenant="test-instance"} 70.0' in text

    clock.now = datetime(2026, 12, 2, 3, 0, 1, tzinfo=UTC)  # 00:00:01 in São Paulo: a new budget day
    await say(service, clock, None, "Bom dia", chat="5511911110003@s.whatsapp.net")
    assert await run_due(service) == ["sent"]


async def test_replies_already_being_generated_when_the_budget_runs_out_are_sent(
        service: Service, tenant, clock: FakeClock, fake_ollama: FakeOllama, fake_evolution: FakeEvolution):
    await service.update_tenant(INSTANCE, TenantChanges(daily_tokens=40))
    fake_ollama.prompt_tokens, fake_ollama.answer_tokens = 20, 15
    fake_ollama.delay = 0.3
    for n in range(3):
        await say(service, clock, None, "Oi", chat=f"551192222000{n}@s.whatsapp.net")
    claimed = await service.replies.claim(10)
    statuses = await asyncio.gather(*(service.replies.run(job) for job in claimed))
    assert statuses == ["sent", "sent", "sent"]  # all three started with tokens left: none is wasted
    await say(service, clock, None, "Mais uma", chat="5511922220000@s.whatsapp.net")
    assert await run_due(service) == ["skipped_budget"]
    assert len(fake_evolution.sent_texts) == 3


async def test_an_answer_without_counts_is_unknown_not_free(service: Service, tenant, clock: FakeClock,
                                                          fake_ollama: FakeOllama):
    await service.update_tenant(INSTANCE, TenantChanges(daily_tokens=1000))
    fake_ollama.counts = False
    await say(service, clock, None)
    assert await run_due(service) == ["sent"]
    _, usage = await service.tenant_report(INSTANCE)
    assert (usage["used"], usage["uncounted_answers"]) == (0, 1)
    assert (await service.session_detail(INSTANCE, CUSTOMER)).replies[-1].tokens is None


# -- the model's clock, the country, DST ----------------------------------------------------------------------------


async def test_the_model_is_told_the_hours_and_the_local_clock(service: Service, tenant, clock: FakeClock,
                                                               fake_ollama: FakeOllama):
    await service.update_tenant(INSTANCE, TenantChanges(hours="mon-fri 08:00-18:00", timezone="America/Sao_Paulo"))
    await say(service, clock, "2026-12-01T17:05:00", "Até que horas vocês ficam?")  # Tuesday 14:05 there
    assert await run_due(service) == ["sent"]
    system = fake_ollama.requests[-1]["messages"][0]
    assert system["role"] == "system" and system["content"].startswith("You are the assistant of Padaria Boa.")
    assert system["content"].endswith("mon-fri 08:00-18:00, sat-sun closed. agora: terça-feira 14:05, aberto até 18:00")


async def test_a_tenants_country_reads_numbers_typed_without_a_country_code(service: Service, tenant):
    await service.update_tenant(INSTANCE, TenantChanges(country="pt"))
    assert (await service.tenant(INSTANCE)).country == "PT"
    assert await service.change_audience(INSTANCE, "ignore", ["912 345 678"], add=True) == ["+351912345678"]
    assert await service.audience(INSTANCE, "ignore") == [("+351912345678", ["351912345678@s.whatsapp.net"])]
    body = upsert("Olá", chat="351912345678@s.whatsapp.net")
    assert (await service.ingest(body, raw(body))).reason == "ignored_contact"


async def test_business_hours_follow_a_dst_change_through_the_database(service: Service, tenant, clock: FakeClock):
    # New York leaves DST on Sunday 2026-11-01: 09:00 is 13:00 UTC on the Friday before and 14:00 UTC after.
    await service.update_tenant(INSTANCE, TenantChanges(hours="mon-fri 09:00-17:00", timezone="America/New_York",
                                                        hours_mode="inside"))
    assert await say(service, clock, "2026-10-30T13:30:00", "Friday?") == ("reply_queued", None)  # 09:30 EDT
    assert await say(service, clock, "2026-11-02T13:30:00", "Monday?", chat="15550001111@s.whatsapp.net") == (
        "ignored_hours", None)  # 08:30 EST
    assert await say(service, clock, "2026-11-02T14:00:00", "Now?", chat="15550002222@s.whatsapp.net") == (
        "reply_queued", None)  # 09:00 EST
    assert await say(service, clock, "2026-11-02T21:59:59", "Late?", chat="15550003333@s.whatsapp.net") == (
        "reply_queued", None)  # 16:59:59 EST
    assert await say(service, clock, "2026-11-02T22:00:00", "Closed?", chat="15550004444@s.whatsapp.net") == (
        "ignored_hours", None)  # 17:00 EST


async def test_a_removed_away_message_is_not_sent(service: Service, tenant, clock: FakeClock):
    await shop_with_away(service)
    await service.update_tenant(INSTANCE, TenantChanges(away_message=""))
    assert (await service.tenant(INSTANCE)).away_message is None
    await say(service, clock, "2026-12-01T23:00:00")
    assert await jobs_of(service.store) == []


async def test_the_tenant_is_told_when_an_away_message_cannot_be_sent(service: Service, tenant):
    saved = await service.update_tenant(INSTANCE, TenantChanges(away_message=AWAY))
    assert [gap for gap in saved.gaps() if "away message" in gap] == [
        "the away message is only sent with --hours-mode inside (this tenant's mode is always): it is kept but "
        "not sent"]
