"""Issue 13's reply-path behaviour, on both databases: while the model server refuses connections the worker stops
sending it jobs (one ``llm.down``, cheap probes, no attempt used up) and resumes when it is back; a reply held up by
failures past the tenant's ``--max-reply-delay`` ends ``expired`` instead of going out late."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, eventually, run_due, said, texts_to
from tests.support.cli import failed, ok
from tests.support.fakes import FakeEvolution, FakeOllama

INSTANCE = "test-instance"
CHATS = [f"55119000000{i:02d}@s.whatsapp.net" for i in range(5)]


async def test_a_model_server_that_is_down_is_probed_not_hammered_and_every_reply_goes_out_once_it_is_back(
        service: Service, tenant, fake_ollama: FakeOllama, fake_evolution: FakeEvolution,
        capsys: pytest.CaptureFixture[str]):
    port = urlsplit(fake_ollama.url).port
    await fake_ollama.stop()  # Ollama is down: connections are refused
    for chat in CHATS:
        assert await said(service, "Oi, tudo bem?", chat=chat) == ("reply_queued", None)
    # The first job finds the model down; it and the others claimed with it wait for it, their attempts uncounted.
    assert await run_due(service) == ["retry"] * 5
    for _ in range(5):
        assert await run_due(service) == []  # nothing needing the model is claimed while it is down
    assert service.replies.model_down is not None and "cannot connect" in service.replies.model_down
    detail = await service.session_detail(INSTANCE, CHATS[0])
    assert (detail.replies[0].status, detail.replies[0].attempts) == ("retry", 0)
    assert detail.replies[0].last_error.startswith("waiting for the model server: cannot connect")
    logged = capsys.readouterr().out
    assert logged.count("llm.down") == 1 and "reply.retry" not in logged
    assert logged.count("llm.request") == 1  # one call found it down; the other four never called it

    await fake_ollama.start(port)  # Ollama is back where it was
    sent: list[str] = []

    async def all_sent() -> bool:
        sent.extend(await run_due(service))
        return len(sent) == 5

    await eventually(all_sent, timeout=10, what="the replies after the model came back")
    assert sent == ["sent"] * 5 and service.replies.model_down is None
    assert sorted(t["number"] for t in fake_evolution.sent_texts) == sorted(c.partition("@")[0] for c in CHATS)
    assert len(fake_ollama.requests) == 5  # one answer each, none wasted
    assert capsys.readouterr().out.count("llm.up") == 1


async def test_texts_already_written_still_go_out_while_the_model_is_down(
        service: Service, tenant, fake_ollama: FakeOllama, fake_evolution: FakeEvolution, clock: FakeClock):
    await said(service, "Oi, tudo bem?")
    fake_evolution.fail_next(500)
    assert await run_due(service) == ["retry"]  # written, then Evolution failed: the text is kept
    await fake_ollama.stop()
    await said(service, "Alguém aí?", chat=CHATS[0])
    assert await run_due(service) == ["retry"]  # this one needs the model: it waits for it
    clock.advance(seconds=6)
    assert await run_due(service) == ["sent"]  # the written text goes out although the model is down
    assert texts_to(fake_evolution, CUSTOMER) == ["Echo: Oi, tudo bem?"]


async def test_a_reply_that_waited_for_the_model_past_the_max_reply_delay_expires(
        service: Service, tenant, fake_ollama: FakeOllama, fake_evolution: FakeEvolution, clock: FakeClock):
    port = urlsplit(fake_ollama.url).port
    await fake_ollama.stop()
    await said(service, "Vocês entregam hoje?")
    assert await run_due(service) == ["retry"]
    clock.advance(hours=2)  # Ollama is down for two hours
    await fake_ollama.start(port)
    statuses: list[str] = []

    async def settled() -> bool:
        statuses.extend(await run_due(service))
        return bool(statuses)

    await eventually(settled, timeout=10, what="the reply once the model is back")
    assert statuses == ["expired"] and fake_evolution.sent_texts == []  # not a two-hour-old answer


async def test_a_reply_held_up_past_the_max_reply_delay_expires(
        service: Service, tenant, fake_evolution: FakeEvolution, clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(owner_number="+55 11 95555-0000"))
    fake_evolution.fail_next(500, times=2)  # Evolution is down for a long while
    await said(service, "Vocês entregam hoje?")
    assert await run_due(service) == ["retry"]
    clock.advance(minutes=9)
    assert await run_due(service) == ["retry"]  # still within the 10 minutes: tried again
    clock.advance(minutes=2)
    assert await run_due(service) == ["expired"]
    [reply] = (await service.session_detail(INSTANCE, CUSTOMER)).replies
    assert reply.status == "expired" and "more than --max-reply-delay 10m" in reply.last_error
    assert 'hybridflow_replies_total{status="expired"} 1.0' in service.metrics.render({})
    assert await run_due(service) == ["sent"]  # the owner is told: the customer is still waiting
    [told] = texts_to(fake_evolution, "5511955550000@s.whatsapp.net")
    assert "falhou" in told and "--max-reply-delay" in told and "Vocês entregam hoje?" in told
    assert texts_to(fake_evolution, CUSTOMER) == []
    assert await run_due(service) == []


async def test_no_limit_and_a_longer_limit_are_settings(service: Service, tenant, fake_evolution: FakeEvolution,
                                                       clock: FakeClock):
    await service.update_tenant(INSTANCE, TenantChanges(max_reply_delay=0))
    fake_evolution.fail_next(500)
    await said(service, "Vocês entregam hoje?")
    assert await run_due(service) == ["retry"]
    clock.advance(hours=3)
    assert await run_due(service) == ["sent"]  # no limit: sent however late


def test_max_reply_delay_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Olá"))
    assert "max-reply-delay" in ok(hf("tenants", "show", INSTANCE)).stdout
    assert "30m" in ok(hf("tenants", "update", INSTANCE, "--max-reply-delay", "30m")).stdout
    assert "no limit" in ok(hf("tenants", "update", INSTANCE, "--max-reply-delay", "off")).stdout
    assert "invalid --max-reply-delay" in failed(hf("tenants", "update", INSTANCE, "--max-reply-delay", "5s"), 2)
