"""The per-chat reply cap: a conversation with another bot (an auto-responder) stops by itself. The N-th model
reply within the window goes out; the message that would start reply N+1 pauses the chat (rate_limited) for the
tenant's resume_after instead, on both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hybridflow.errors import BadRequest
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import raw, run_due, upsert
from tests.support.fakes import FakeEvolution


async def say(service: Service, text: str) -> tuple[str, str | None]:
    body = upsert(text)
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


async def answer_all(service: Service) -> int:
    """What a worker does: claim the due replies and send them; returns how many were sent."""
    return (await run_due(service)).count("sent")


async def test_the_reply_after_the_cap_pauses_the_chat_instead(service: Service, tenant, clock: FakeClock,
                                                              fake_evolution: FakeEvolution):
    await service.update_tenant("test-instance", TenantChanges(reply_cap="3/10m", resume_after=3600))
    for n in range(3):  # replies 1..3 within ten minutes: each goes out
        assert await say(service, f"Olá, sou um robô ({n})") == ("reply_queued", None)
        assert await answer_all(service) == 1
        clock.advance(minutes=2)
    assert await say(service, "Olá, sou um robô (3)") == ("paused", "rate_limited")
    view = await service.session("test-instance", upsert()["data"]["key"]["remoteJid"])
    assert (view.is_paused, view.pause_reason, view.paused_by) == (True, "rate_limited", "guard")
    assert view.resumes_at == clock.now + timedelta(hours=1)
    assert await say(service, "Olá, sou um robô (4)") == ("ignored_paused", "rate_limited")
    assert (await service.queue_depth())["queued"] == 0 and len(fake_evolution.sent_texts) == 3

    clock.advance(hours=1, minutes=1)  # the pause ran out, and so did the window: talking again
    assert await say(service, "Oi, sou uma pessoa") == ("reply_queued", None)


async def test_messages_that_join_a_waiting_reply_start_no_new_one(service: Service, tenant):
    await service.update_tenant("test-instance", TenantChanges(reply_cap="1/10m", debounce=30))
    assert await say(service, "Oi") == ("reply_queued", None)
    assert await say(service, "Tudo bem?") == ("reply_queued", None)  # the same reply (debounce), not a second
    assert (await service.queue_depth())["queued"] == 1


async def test_a_reply_dropped_by_a_takeover_does_not_count(service: Service, tenant, clock: FakeClock):
    await service.update_tenant("test-instance", TenantChanges(reply_cap="1/10m", debounce=30))
    assert await say(service, "Oi") == ("reply_queued", None)
    await service.pause("test-instance", upsert()["data"]["key"]["remoteJid"], duration=60)  # drops the reply
    clock.advance(minutes=2)
    assert await say(service, "Alguém?") == ("reply_queued", None)


async def test_without_a_cap_replies_are_not_counted(service: Service, tenant, clock: FakeClock):
    await service.update_tenant("test-instance", TenantChanges(reply_cap="off"))
    for n in range(25):  # more than the default cap of 20 in ten minutes
        assert await say(service, f"mensagem {n}") == ("reply_queued", None)
        assert await answer_all(service) == 1
    assert (await service.tenant("test-instance")).reply_cap == (0, 0.0)


@pytest.mark.parametrize("cap", ["abc", "0/10m", "5/0s", "20", "20/soon", "-1/10m"])
async def test_a_bad_cap_is_refused_and_changes_nothing(service: Service, tenant, cap: str):
    with pytest.raises(BadRequest, match="--reply-cap"):
        await service.update_tenant("test-instance", TenantChanges(reply_cap=cap))
    assert (await service.tenant("test-instance")).reply_cap == (20, 600.0)  # the default, 20 per 10 minutes


async def test_a_long_model_answer_is_sent_cut_at_a_sentence(service: Service, tenant, fake_ollama,
                                                             fake_evolution: FakeEvolution):
    fake_ollama.reply = "Abrimos às 8h. Fechamos às 18h! Aos domingos abrimos só de manhã, das 8h às 12h."
    await service.update_tenant("test-instance", TenantChanges(max_reply_chars=40))
    assert await say(service, "Que horas vocês abrem?") == ("reply_queued", None)
    assert await answer_all(service) == 1
    assert [body["text"] for body in fake_evolution.sent_texts] == ["Abrimos às 8h. Fechamos às 18h!"]
    await service.update_tenant("test-instance", TenantChanges(max_reply_chars=0))  # 0: no limit again
    assert (await service.tenant("test-instance")).max_reply_chars is None
    with pytest.raises(BadRequest, match="--max-reply-chars"):
        await service.update_tenant("test-instance", TenantChanges(max_reply_chars=5))


async def test_each_decision_is_counted_in_metrics_by_action_and_reason(service: Service, tenant):
    await service.update_tenant("test-instance", TenantChanges(reply_cap="1/10m"))
    await service.change_audience("test-instance", "ignore", ["+55 11 91111-2222"], add=True)
    await say(service, "Oi")
    await answer_all(service)
    await say(service, "Oi de novo")  # the second reply in ten minutes: rate limited
    body = upsert("Oi, é a mãe", chat="5511911112222@s.whatsapp.net")
    await service.ingest(body, raw(body))
    text = service.metrics.render(await service.queue_depth())
    for labels in ('action="reply_queued",reason=""', 'action="paused",reason="rate_limited"',
                   'action="stored",reason="ignored_contact"'):
        assert f"hybridflow_webhooks_total{{{labels}}} 1.0" in text
