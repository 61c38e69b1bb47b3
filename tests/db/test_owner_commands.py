"""Commands in "Message yourself" (issue 12, part 2), on both databases: the owner's number comes from the tenant
(learned from connection.update, or --owner-number), commands are taken only from that chat and only on
authenticated webhooks, notes are stored, each command is carried out and answered in the same chat through the
queue, and HybridFlow's own answers there are recognised as its own."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hybridflow.service import Service, TenantChanges
from hybridflow.service.auth import Credentials
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, raw, run_due, upsert
from tests.support.cli import as_json, ok
from tests.support.fakes import FakeEvolution

INSTANCE = "test-instance"
SECRET = "s3cret-for-commands"
OWNER = "5511955550000@s.whatsapp.net"  # the instance's own number (the builders' envelope sender)
OWNER_LID = "99887766554433@lid"
SIGNED = Credentials(bearer=SECRET)


def note(text: str, *, from_me: bool = True, chat: str = OWNER, **data) -> dict:
    """A message in the owner's own chat, as typed on the phone."""
    return upsert(text, chat=chat, from_me=from_me, push_name="João", **data)


async def send(service: Service, body: dict, credentials: Credentials = SIGNED) -> tuple[str, str | None]:
    result = await service.ingest(body, raw(body), credentials)
    return result.action, result.reason


async def answers(service: Service, fake_evolution: FakeEvolution) -> list[str]:
    """Run the queue; what HybridFlow sent to the owner's chat."""
    await run_due(service)
    return [t["text"] for t in fake_evolution.sent_texts if t["number"] == OWNER.partition("@")[0]]


@pytest.fixture
async def owner_tenant(service: Service, tenant):  # type: ignore[no-untyped-def]
    await service.update_tenant(INSTANCE, TenantChanges(webhook_secret=SECRET, resume_after=7200))
    connected = {"event": "connection.update", "instance": INSTANCE, "sender": OWNER,
                 "data": {"instance": INSTANCE, "state": "open", "statusReason": 200, "wuid": OWNER}}
    assert (await send(service, connected))[0] == "ignored_event"
    assert (await service.tenant(INSTANCE)).owner_jid == OWNER  # learned from the instance
    return service


async def test_bot_off_and_on_a_number_from_message_yourself(owner_tenant: Service, clock: FakeClock,
                                                             fake_evolution: FakeEvolution):
    service = owner_tenant
    await send(service, upsert("Oi, vocês abrem hoje?"))  # Maria's chat exists
    assert await send(service, note("bot off 11 98765-4321 2h")) == ("command", None)
    view = await service.session(INSTANCE, CUSTOMER)
    assert view.is_paused and view.pause_reason == "operator" and view.paused_by == "owner"
    assert view.resumes_at == clock.now + timedelta(hours=2)
    [answer] = await answers(service, fake_evolution)
    assert answer.startswith("⏸ pausado: Maria (+5511987654321) · até ")
    assert await send(service, note("Bot ON (11) 98765-4321")) == ("command", None)
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused
    assert (await answers(service, fake_evolution))[-1] == "▶ o bot voltou a responder: Maria (+5511987654321)"


async def test_bot_status_lists_paused_chats_with_reasons(owner_tenant: Service, fake_evolution: FakeEvolution):
    service = owner_tenant
    await send(service, upsert("Oi"))
    await send(service, upsert("Oi, é o Pedro", chat="5521999998888@s.whatsapp.net", push_name="Pedro"))
    await send(service, upsert("Já te atendo", chat="5521999998888@s.whatsapp.net", from_me=True))
    assert await send(service, note("bot status")) == ("command", None)
    [answer] = await answers(service, fake_evolution)
    assert answer.splitlines()[0] == "🤖 respondendo 1 · pausadas 1"
    assert answer.splitlines()[1].startswith("• Pedro (+5521999998888) · você digitou · até ")


async def test_bot_off_all_pauses_the_tenant_and_its_answer_still_goes_out(owner_tenant: Service,
                                                                          fake_evolution: FakeEvolution):
    service = owner_tenant
    assert await send(service, note("bot off all até 18:00")) == ("command", None)
    assert await send(service, upsert("Oi")) == ("ignored_paused", "tenant_paused")
    [answer] = await answers(service, fake_evolution)
    assert answer.startswith("⏸ pausado: todas as conversas · até ")
    assert await send(service, note("bot on all")) == ("command", None)
    assert (await answers(service, fake_evolution))[-1].startswith("▶ o bot voltou a responder: todas as conversas")
    assert await send(service, upsert("Oi de novo")) == ("reply_queued", None)


async def test_notes_and_unknown_commands(owner_tenant: Service, fake_evolution: FakeEvolution):
    service = owner_tenant
    assert await send(service, note("Lembrar: comprar farinha")) == ("stored", "note")
    assert await send(service, note("bot dance")) == ("command", None)
    assert await send(service, note("bot off 99")) == ("command", None)  # not a number of any chat
    first, second = await answers(service, fake_evolution)
    assert first.startswith("✗ I don't know 'dance'") and "bot status" in first
    assert second.startswith("✗ ") and len(second.splitlines()) == 1


async def test_fromme_false_and_the_owners_lid_are_the_owners_chat(owner_tenant: Service,
                                                                   fake_evolution: FakeEvolution):
    service = owner_tenant
    assert await send(service, note("bot help", from_me=False)) == ("command", None)  # Baileys rc.9 self chat
    both = note("bot status", remoteJidAlt=OWNER)
    both["data"]["key"]["remoteJid"], both["data"]["key"]["remoteJidAlt"] = OWNER_LID, OWNER
    assert await send(service, both) == ("command", None)
    only_lid = note("bot status", chat=OWNER_LID)  # later, the LID alone: learned from the message with both
    assert await send(service, only_lid) == ("command", None)
    assert len(await answers(service, fake_evolution)) == 3


async def test_no_commands_without_webhook_authentication_or_from_another_chat(owner_tenant: Service):
    service = owner_tenant
    forged = Credentials(bearer="wrong")
    with pytest.raises(Exception) as refused:
        await send(service, note("bot off all"), forged)
    assert getattr(refused.value, "status", None) == 401
    assert await send(service, upsert("bot off all")) == ("reply_queued", None)  # a customer typing it
    await service.update_tenant(INSTANCE, TenantChanges(webhook_secret=""))  # no authentication: no commands
    assert await send(service, note("bot off all"), Credentials()) == ("stored", "note")
    assert not (await service.tenant(INSTANCE)).paused_now(service.clock())


async def test_our_answer_echoed_back_is_our_own_and_a_retried_command_runs_once(owner_tenant: Service,
                                                                                fake_evolution: FakeEvolution):
    service = owner_tenant
    command = note("bot off all")
    assert await send(service, command) == ("command", None)
    assert await send(service, command) == ("duplicate", None)  # Evolution retried it
    [answer] = await answers(service, fake_evolution)
    sent = fake_evolution.sent_messages[-1]
    echo = upsert(answer, chat=OWNER, from_me=True, event="send.message", message_id=sent["key"]["id"])
    assert await send(service, echo) == ("own_message", None)


async def test_the_command_word_and_the_owner_number_are_settings(service: Service, tenant,
                                                                  fake_evolution: FakeEvolution):
    await service.update_tenant(INSTANCE, TenantChanges(webhook_secret=SECRET, owner_number="+55 11 95555-0000",
                                                        command_word="robô"))
    tenant_now = await service.tenant(INSTANCE)
    assert (tenant_now.owner_jid, tenant_now.owner_source, tenant_now.command_word) == (OWNER, "operator", "robô")
    assert await send(service, note("ROBO status")) == ("command", None)
    assert await send(service, note("bot status")) == ("stored", "note")
    connected = {"event": "connection.update", "instance": INSTANCE,
                 "data": {"state": "open", "wuid": "5511900001111@s.whatsapp.net"}}
    await send(service, connected)
    assert (await service.tenant(INSTANCE)).owner_jid == OWNER  # a number set by hand wins


def test_owner_settings_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--owner-number", "11 95555-0000",
          "--command-word", "hf"))
    shown = as_json(hf("tenants", "show", INSTANCE, "--json"))
    assert shown["owner_number"] == f"{OWNER} (set)" and shown["command_word"] == "hf"
    refused = hf("tenants", "update", INSTANCE, "--owner-number", "95555")
    assert refused.exit_code == 2 and "--owner-number" in refused.stderr
