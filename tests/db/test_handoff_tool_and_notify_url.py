"""The model hands a chat to a person (``--handoff-tool``), and notifications POSTed to ``--notify-url`` (issue 12,
parts 3 and 4), on both databases, against the Ollama and Evolution fakes and a real HTTP receiver."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import timedelta

import pytest

from hybridflow.hooks import signature, verify
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, owner, raw, run_due, said, texts_to
from tests.support.cli import failed, ok
from tests.support.fakes import FakeEvolution, FakeOllama, NotifyReceiver

INSTANCE = "test-instance"
OWNER = "5511955550000@s.whatsapp.net"
SECRET = "n8n-shared-secret-0123456789abcdef"


def hand_off_when_asked(body: dict) -> dict | None:
    """The model of a tenant whose prompt says "hand over refunds to a person"."""
    last = body["messages"][-1]["content"]
    return {"name": "handoff_to_human", "arguments": {"reason": "refund request"}} if "reembolso" in last else None


@pytest.fixture
async def shop(service: Service, tenant, fake_ollama: FakeOllama):  # type: ignore[no-untyped-def]
    await service.update_tenant(INSTANCE, TenantChanges(owner_number="+55 11 95555-0000", handoff_tool=True,
                                                        handoff_message="Já chamo alguém da equipe."))
    fake_ollama.tool_call = hand_off_when_asked
    return service


# -- the handoff tool -----------------------------------------------------------------------------------------

async def test_the_model_hands_a_chat_to_a_person_like_a_handoff_phrase(
        shop: Service, clock: FakeClock, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    service = shop
    assert await said(service, "Quero meu reembolso do pedido 123") == ("reply_queued", None)
    assert await run_due(service) == ["handed_off"]
    [request] = fake_ollama.requests
    assert [t["function"]["name"] for t in request["tools"]] == ["handoff_to_human"]

    view = await service.session(INSTANCE, CUSTOMER)
    assert (view.is_paused, view.pause_reason, view.paused_by) == (True, "customer_request", "model")
    assert view.resumes_at == clock.now + timedelta(hours=24)
    [job] = [j for j in (await service.session_detail(INSTANCE, CUSTOMER)).replies if j.kind == "reply"]
    assert job.status == "handed_off" and job.last_error == "the model handed the chat to a person: refund request"
    assert job.tokens == 22  # the call's tokens count towards the budget like an answer's

    assert sorted(await run_due(service)) == ["sent", "sent"]  # the handoff message, the owner's notification
    assert texts_to(fake_evolution, CUSTOMER) == ["Já chamo alguém da equipe."]  # nothing of the model's own
    [told] = texts_to(fake_evolution, OWNER)
    assert told.splitlines()[:3] == ["🙋 Maria (+5511987654321) pediu para falar com uma pessoa",
                                     "motivo: refund request",
                                     'última mensagem: "Quero meu reembolso do pedido 123"']
    assert told.splitlines()[-1] == "para devolver ao bot: bot on 5511987654321"
    assert await said(service, "Alô?") == ("ignored_paused", "customer_request")
    assert await run_due(service) == []


async def test_without_a_call_the_model_answers_as_usual_and_the_tool_is_only_offered_when_on(
        shop: Service, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    service = shop
    await said(service, "Vocês abrem domingo?")
    assert await run_due(service) == ["sent"]
    assert texts_to(fake_evolution, CUSTOMER) == ["Echo: Vocês abrem domingo?"]
    await service.update_tenant(INSTANCE, TenantChanges(handoff_tool=False))
    await said(service, "E o reembolso?")
    assert await run_due(service) == ["sent"]
    assert [bool(r.get("tools")) for r in fake_ollama.requests] == [True, False]


async def test_a_model_without_tool_support_still_answers_and_is_asked_without_tools_from_then_on(
        shop: Service, fake_evolution: FakeEvolution, fake_ollama: FakeOllama, capsys: pytest.CaptureFixture[str]):
    service = shop
    fake_ollama.no_tools = {"llama3.2"}
    await said(service, "Quero reembolso")
    assert await run_due(service) == ["sent"]  # the phrase-less handoff is lost, the customer is still answered
    await said(service, "Oi?", chat="5511900001111@s.whatsapp.net")
    assert await run_due(service) == ["sent"]
    assert [bool(r.get("tools")) for r in fake_ollama.requests] == [True, False, False]  # asked again once, then never
    assert capsys.readouterr().out.count("llm.tools_unsupported") == 1


async def test_an_owner_who_took_over_while_the_model_thought_keeps_the_chat(
        shop: Service, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    service = shop
    await said(service, "Quero reembolso")
    [job] = await service.replies.claim(10)
    body = owner("Oi Maria, eu resolvo isso")
    await service.ingest(body, raw(body))
    assert await service.replies.run(job) == "skipped_paused"
    view = await service.session(INSTANCE, CUSTOMER)
    assert view.pause_reason == "human_message"  # the owner's pause, not a handoff
    assert await run_due(service) == []  # no handoff message, no notification
    assert texts_to(fake_evolution, CUSTOMER) == []


# -- notifications to a URL -----------------------------------------------------------------------------------

@pytest.fixture
async def hooked(shop: Service, notify_receiver: NotifyReceiver) -> Service:
    await shop.update_tenant(INSTANCE, TenantChanges(notify_url=notify_receiver.hook_url, notify_secret=SECRET))
    return shop


async def test_a_handoff_is_posted_signed_to_the_notify_url_and_sent_on_whatsapp(
        hooked: Service, clock: FakeClock, fake_evolution: FakeEvolution, notify_receiver: NotifyReceiver):
    service = hooked
    assert await said(service, "Quero falar com um atendente") == ("paused", "customer_request")
    assert sorted(await run_due(service)) == ["sent", "sent", "sent"]  # handoff message, WhatsApp, URL
    [post] = notify_receiver.received
    [raw_body] = notify_receiver.bodies
    expected = "sha256=" + hmac.new(SECRET.encode(), raw_body, hashlib.sha256).hexdigest()  # as the README says
    assert post.headers["x-hybridflow-signature"] == expected == signature(SECRET, raw_body)
    assert post.headers["content-type"] == "application/json"
    assert post.headers["x-hybridflow-event"] == "handoff"
    assert post.headers["x-hybridflow-delivery"].startswith(f"{INSTANCE}/notify:")
    document = json.loads(raw_body)
    assert document["event"] == "handoff" and document["instance"] == INSTANCE
    assert document["customer"] == {"name": "Maria", "number": "+5511987654321", "chat_id": CUSTOMER}
    assert document["last_message"] == "Quero falar com um atendente"
    assert document["paused_until"] == (clock.now + timedelta(hours=24)).isoformat()
    assert document["hand_back"] == "bot on 5511987654321"
    assert document["text"] == texts_to(fake_evolution, OWNER)[0]
    assert not verify("another-secret", raw_body, post.headers["x-hybridflow-signature"])
    assert not verify(SECRET, raw_body + b" ", post.headers["x-hybridflow-signature"])
    assert post.json["customer"]["number"] not in [t["number"] for t in fake_evolution.sent_texts
                                                   if t["text"].startswith("{")]  # JSON never goes to WhatsApp


async def test_a_receiver_that_fails_gets_the_same_notification_again_then_a_4xx_ends_it(
        hooked: Service, clock: FakeClock, notify_receiver: NotifyReceiver, fake_ollama: FakeOllama):
    service = hooked
    notify_receiver.fail_next(503)
    await said(service, "Quero reembolso")  # handed off by the model, with its reason
    assert await run_due(service) == ["handed_off"]
    assert sorted(await run_due(service)) == ["retry", "sent", "sent"]
    clock.advance(seconds=6)
    assert await run_due(service) == ["sent"]
    first, second = notify_receiver.bodies
    assert first == second  # the same bytes, the same signature, the same delivery id: the receiver can dedupe
    assert notify_receiver.received[0].headers["x-hybridflow-delivery"] == \
        notify_receiver.received[1].headers["x-hybridflow-delivery"]
    assert json.loads(first)["reason"] == "refund request"

    notify_receiver.fail_next(404)
    await said(service, "Quero falar com um atendente", chat="5511900002222@s.whatsapp.net")
    statuses = await run_due(service)
    assert sorted(statuses) == ["failed", "sent", "sent"]  # a wrong URL: no retry; the message and WhatsApp went
    detail = await service.session_detail(INSTANCE, "5511900002222@s.whatsapp.net")
    [hook_job] = [j for j in detail.replies if j.kind == "notify_url"]
    assert hook_job.status == "failed" and "HTTP 404" in (hook_job.last_error or "")


async def test_a_url_alone_notifies_a_tenant_whose_owner_number_is_not_known(
        service: Service, tenant, notify_receiver: NotifyReceiver, fake_evolution: FakeEvolution):
    await service.update_tenant(INSTANCE, TenantChanges(notify_url=notify_receiver.hook_url, notify_secret=SECRET))
    await said(service, "Quero falar com um atendente")
    assert await run_due(service) == ["sent"]
    assert [r.json["event"] for r in notify_receiver.received] == ["handoff"]
    assert fake_evolution.sent_texts == []


def test_notify_url_options_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Olá"))
    refused = failed(hf("tenants", "update", INSTANCE, "--notify-url", "https://n8n.example.com/webhook/x"), 2)
    assert "--notify-url needs --notify-secret" in refused
    bad = failed(hf("tenants", "update", INSTANCE, "--notify-url", "n8n.example.com", "--notify-secret", SECRET), 2)
    assert "invalid --notify-url" in bad
    shown = ok(hf("tenants", "update", INSTANCE, "--notify-url", "https://n8n.example.com/webhook/x",
                  "--notify-secret", SECRET, "--handoff-tool")).stdout
    assert "https://n8n.example.com/webhook/x (signed)" in shown and SECRET not in shown
    assert "handoff-tool" in shown
    cleared = ok(hf("tenants", "update", INSTANCE, "--notify-url", "")).stdout
    assert "notify-url" in cleared and "(signed)" not in cleared
