"""The customer asks for a person (issue 12, parts 3 and 4), on both databases: a handoff phrase pauses the chat
for the handoff pause, the handoff message goes out once although the chat is paused, and the owner is notified
in their own chat (or at the notify number) with who, why, the last message and how to hand the chat back; a loop
stopped by the reply cap is notified too. Notifications never go to a customer."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hybridflow.errors import BadRequest
from hybridflow.handoff import asks_for_person, parse_phrases, DEFAULT_PHRASES
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, raw, run_due, said, texts_to, upsert
from tests.support.cli import as_json, ok
from tests.support.fakes import FakeEvolution

INSTANCE = "test-instance"
OWNER = "5511955550000@s.whatsapp.net"


@pytest.fixture
async def shop(service: Service, tenant):  # type: ignore[no-untyped-def]
    await service.update_tenant(INSTANCE, TenantChanges(owner_number="+55 11 95555-0000",
                                                        handoff_message="Claro! Já chamo alguém da equipe."))
    return service


async def test_a_customer_asking_for_a_person_pauses_the_chat_gets_the_message_and_the_owner_is_told(
        shop: Service, clock: FakeClock, fake_evolution: FakeEvolution):
    service = shop
    assert await said(service, "Quero falar com um ATENDENTE, por favor!") == ("paused", "customer_request")
    view = await service.session(INSTANCE, CUSTOMER)
    assert (view.pause_reason, view.paused_by, view.resumes_at) == ("customer_request", "customer",
                                                                    clock.now + timedelta(hours=24))
    statuses = await run_due(service)
    assert sorted(statuses) == ["sent", "sent"]
    assert texts_to(fake_evolution, CUSTOMER) == ["Claro! Já chamo alguém da equipe."]
    [told] = texts_to(fake_evolution, OWNER)
    lines = told.splitlines()
    assert [lines[0], lines[1], lines[3]] == [
        "🙋 Maria (+5511987654321) pediu para falar com uma pessoa",
        'última mensagem: "Quero falar com um ATENDENTE, por favor!"',
        "para devolver ao bot: bot on 5511987654321"]
    assert lines[2].startswith("o bot está pausado nessa conversa até ")
    assert await said(service, "Alô?") == ("ignored_paused", "customer_request")
    assert await run_due(service) == []  # once: no second message, no second notification


async def test_a_handoff_is_whole_words_only(shop: Service):
    assert await said(shop, "Qual é o horário do atendimento?") == ("reply_queued", None)  # not "atendente"
    assert asks_for_person("Can I talk to a person?", DEFAULT_PHRASES) == "talk to a person"
    assert asks_for_person("humanidade", DEFAULT_PHRASES) is None


async def test_the_phrases_and_the_pause_are_settings(shop: Service, clock: FakeClock):
    await shop.update_tenant(INSTANCE, TenantChanges(handoff_phrases="gerente, falar com o dono", handoff_pause=3600))
    assert await said(shop, "Quero falar com um atendente") == ("reply_queued", None)  # no longer a phrase
    assert await said(shop, "Chama o GERENTE", chat="5511911110000@s.whatsapp.net") == ("paused", "customer_request")
    assert (await shop.session(INSTANCE, "5511911110000@s.whatsapp.net")).resumes_at == clock.now + timedelta(hours=1)
    await shop.update_tenant(INSTANCE, TenantChanges(handoff_phrases="off"))
    assert await said(shop, "gerente!", chat="5511922220000@s.whatsapp.net") == ("reply_queued", None)
    assert parse_phrases("off") == () and parse_phrases(" Falar com o Dono , ") == ("falar com o dono",)


async def test_notifications_go_to_the_notify_number_and_a_stopped_loop_is_told(
        service: Service, tenant, fake_evolution: FakeEvolution):
    manager = "5511944443333@s.whatsapp.net"
    await service.update_tenant(INSTANCE, TenantChanges(notify_number="+55 11 94444-3333", reply_cap="1/10m"))
    assert await said(service, "Olá, sou um robô") == ("reply_queued", None)
    await run_due(service)
    assert await said(service, "Olá, sou um robô (2)") == ("paused", "rate_limited")
    await run_due(service)
    [told] = texts_to(fake_evolution, manager)
    assert told.startswith("⚠️ Maria (+5511987654321) chegou ao limite de respostas do bot")
    # The echo of the notification in the manager's chat is ours: it pauses nothing there.
    sent = fake_evolution.sent_messages[-1]
    echo = upsert(told, chat=manager, from_me=True, event="send.message", message_id=sent["key"]["id"])
    assert (await service.ingest(echo, raw(echo))).action == "own_message"
    assert not (await service.session(INSTANCE, manager)).is_paused


async def test_without_an_owners_number_nobody_is_notified_but_the_handoff_still_holds(service: Service, tenant,
                                                                                       fake_evolution: FakeEvolution):
    assert await said(service, "atendente") == ("paused", "customer_request")
    assert await run_due(service) == [] and fake_evolution.sent_texts == []


async def test_bad_handoff_settings_are_refused(service: Service, tenant):
    for changes in (TenantChanges(handoff_pause=0), TenantChanges(notify_number="1234")):
        with pytest.raises(BadRequest):
            await service.update_tenant(INSTANCE, changes)


def test_handoff_options_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--handoff-phrases",
          "atendente, gerente", "--handoff-pause", "2h", "--handoff-message", "Já chamo alguém!",
          "--notify-number", "+55 11 94444-3333"))
    shown = as_json(hf("tenants", "show", INSTANCE, "--json"))
    assert (shown["handoff_phrases"], shown["handoff_pause"], shown["handoff_message"], shown["notify"]) == (
        "atendente, gerente", "2h", "Já chamo alguém!", "5511944443333@s.whatsapp.net")


async def test_the_owner_is_told_once_a_day_that_the_budget_ran_out_and_of_each_reply_that_failed(
        shop: Service, fake_ollama, fake_evolution: FakeEvolution):
    service = shop
    await service.update_tenant(INSTANCE, TenantChanges(daily_tokens=1))
    fake_ollama.prompt_tokens, fake_ollama.answer_tokens = 5, 5
    await said(service, "Oi")
    assert await run_due(service) == ["sent"]  # it started with tokens left
    for n in range(2):
        await said(service, "Oi", chat=f"551193333000{n}@s.whatsapp.net")
        assert "skipped_budget" in await run_due(service)  # (with the notification queued before it)
    await run_due(service)
    budget = [t for t in texts_to(fake_evolution, OWNER) if "orçamento" in t]
    assert len(budget) == 1 and budget[0].startswith("⚠️ o orçamento diário de tokens acabou")

    await service.update_tenant(INSTANCE, TenantChanges(daily_tokens=0))
    fake_ollama.fail_next(404)  # the model is gone: a permanent failure
    await said(service, "Oi de novo", chat="5511933339999@s.whatsapp.net")
    assert await run_due(service) == ["failed"]
    assert await run_due(service) == ["sent"]  # the notification
    [failed] = [t for t in texts_to(fake_evolution, OWNER) if "falhou" in t]
    # Who (the push name when known, and the number), why, and what the customer wrote last.
    head, why, wrote = failed.split("\n")
    assert head.startswith("⚠️ uma resposta para ") and head.endswith("(+5511933339999) falhou")
    assert why.startswith("motivo: ") and "ollama pull llama3.2" in why
    assert wrote == 'última mensagem: "Oi de novo"'
