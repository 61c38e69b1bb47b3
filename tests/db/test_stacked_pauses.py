"""Pauses that stack (issue 12, part 0), on both databases: a chat is paused while any of its reasons holds, a
reason that ends lifts only itself, an operator's resume lifts them all; the whole tenant can be paused; the
last-moment check before a send reads every pause from the database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hybridflow.errors import BadRequest
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, owner, raw, run_due, upsert
from tests.support.cli import as_json, ok
from tests.support.fakes import FakeEvolution

INSTANCE = "test-instance"


async def say(service: Service, body: dict) -> tuple[str, str | None]:
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


async def test_an_operator_pause_and_the_owners_typing_stack(service: Service, tenant, clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(resume_after=3600))
    await service.pause(INSTANCE, CUSTOMER, duration=4 * 3600)
    assert await say(service, owner("Oi, já te atendo")) == ("paused", "human_message")
    view = await service.session(INSTANCE, CUSTOMER)
    assert [(p.reason, p.until) for p in view.pauses] == [
        ("operator", clock.now + timedelta(hours=4)), ("human_message", clock.now + timedelta(hours=1))]
    assert (view.pause_reason, view.resumes_at) == ("operator", clock.now + timedelta(hours=4))

    clock.advance(hours=2)  # the owner's pause ended; the operator's holds
    assert await say(service, upsert("Ainda aí?")) == ("ignored_paused", "operator")
    assert [p.reason for p in (await service.session(INSTANCE, CUSTOMER)).pauses] == ["operator"]
    clock.advance(hours=2, seconds=1)  # the last one ended: answered again
    assert await say(service, upsert("E agora?")) == ("reply_queued", None)
    changes = [(e.change, e.reason) for e in (await service.session_detail(INSTANCE, CUSTOMER)).events]
    assert changes == [("paused", "operator"), ("paused", "human_message"), ("resumed", "auto_resume")]


async def test_the_owner_typing_does_not_shorten_a_pause_until_resumed_and_resume_lifts_all(
        service: Service, tenant, clock: FakeClock):
    await service.pause(INSTANCE, CUSTOMER, duration=None)
    await say(service, owner("Oi"))
    clock.advance(hours=3)
    assert await say(service, upsert("Alô")) == ("ignored_paused", "operator")
    resumed = await service.resume(INSTANCE, CUSTOMER)
    assert (resumed.is_paused, resumed.pauses) == (False, ())
    assert await say(service, upsert("Oi de novo")) == ("reply_queued", None)


async def test_the_sweep_resumes_a_chat_when_its_last_pause_ends(service: Service, tenant, clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(resume_after=600))
    await say(service, owner("Oi"))
    await service.pause(INSTANCE, CUSTOMER, duration=1800)
    clock.advance(minutes=11)
    assert await service.sweep() == []  # the owner's ended, the operator's has 19 minutes left
    clock.advance(minutes=20)
    [view] = await service.sweep()
    assert (view.is_paused, view.pauses) == (False, ())


async def test_a_chat_paused_before_pauses_stacked_reads_as_its_one_pause(service: Service, tenant, clock: FakeClock):
    await service.pause(INSTANCE, CUSTOMER, duration=600)
    async with service.store.write() as conn:  # as a database of an older release holds it: no pauses column value
        from hybridflow.models import SESSIONS
        await conn.execute(SESSIONS.update().values(pauses=None))
    view = await service.session(INSTANCE, CUSTOMER)
    assert [(p.reason, p.until) for p in view.pauses] == [("operator", clock.now + timedelta(minutes=10))]
    assert await say(service, owner("Oi")) == ("paused", "human_message")
    assert {p.reason for p in (await service.session(INSTANCE, CUSTOMER)).pauses} == {"operator", "human_message"}


# -- the whole tenant ---------------------------------------------------------------------------------------------


async def test_a_tenant_wide_pause_silences_every_chat_and_drops_waiting_replies(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution):
    await service.update_tenant(INSTANCE, TenantChanges(debounce=30))
    assert await say(service, upsert("Oi")) == ("reply_queued", None)
    paused, dropped = await service.pause_tenant(INSTANCE, length="2h")
    assert dropped == 1 and paused.paused_until == clock.now + timedelta(hours=2)
    assert await say(service, upsert("Alguém?", chat="5511977776666@s.whatsapp.net")) == (
        "ignored_paused", "tenant_paused")
    clock.advance(minutes=1)
    assert await run_due(service) == [] and fake_evolution.sent_texts == []
    await service.pause(INSTANCE, CUSTOMER, duration=None)  # a chat paused one by one meanwhile
    await service.resume_tenant(INSTANCE)
    assert await say(service, upsert("Voltaram?", chat="5511977776666@s.whatsapp.net")) == ("reply_queued", None)
    assert await say(service, upsert("E eu?")) == ("ignored_paused", "operator")  # its own pause stays


async def test_a_tenant_pause_until_a_local_time_ends_by_itself(service: Service, tenant, clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(hours="mon-sun 00:00-24:00", timezone="America/Sao_Paulo"))
    paused, _ = await service.pause_tenant(INSTANCE, length="until 18:00")
    local = paused.paused_until.astimezone(paused.zone)
    assert (local.hour, local.minute) == (18, 0) and clock.now < paused.paused_until <= clock.now + timedelta(days=1)
    clock.now = paused.paused_until
    assert await say(service, upsert("Oi")) == ("reply_queued", None)


@pytest.mark.parametrize("length", ["soon", "until 25:00", "0s"])
async def test_a_tenant_pause_of_no_sense_is_refused(service: Service, tenant, length):
    with pytest.raises(BadRequest):
        await service.pause_tenant(INSTANCE, length=length)
    assert (await service.tenant(INSTANCE)).paused_at is None


async def test_a_reply_being_written_when_the_tenant_is_paused_is_not_sent(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution):
    assert await say(service, upsert("Oi")) == ("reply_queued", None)
    [job] = await service.replies.claim(1)
    await service.pause_tenant(INSTANCE)  # from the phone or the CLI, while the model writes
    assert await service.replies.run(job) == "skipped_paused"
    assert fake_evolution.sent_texts == []
    reply = (await service.session_detail(INSTANCE, CUSTOMER)).replies[-1]
    assert "whole tenant" in reply.last_error


def test_tenants_pause_and_resume_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa."))
    result = ok(hf("tenants", "pause", INSTANCE, "--for", "2h"))
    assert "paused every chat of test-instance until" in result.stdout
    assert as_json(hf("tenants", "show", INSTANCE, "--json"))["paused"].startswith("since ")
    assert "answers again" in ok(hf("tenants", "resume", INSTANCE)).stdout
    assert as_json(hf("tenants", "show", INSTANCE, "--json"))["paused"] == "no"
    refused = hf("tenants", "pause", INSTANCE, "--for", "a while")
    assert refused.exit_code == 2 and "30m, 2h, 1d or until 18:00" in refused.stderr


async def test_a_process_that_read_the_tenant_paused_answers_as_soon_as_another_resumed_it(service: Service, tenant,
                                                                                          settings, clock: FakeClock):
    await service.pause_tenant(INSTANCE)
    async with Service.open(settings, clock=clock) as other:
        assert await say(other, upsert("Oi")) == ("ignored_paused", "tenant_paused")  # it caches the paused tenant
        await service.resume_tenant(INSTANCE)  # from the phone, through the first process
        assert await say(other, upsert("Oi de novo")) == ("reply_queued", None)  # not 5 s of silence
