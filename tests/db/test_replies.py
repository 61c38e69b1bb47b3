"""AI replies end to end through the running app: fake Evolution and fake Ollama as real HTTP servers."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from hybridflow.models import ReplyJob
from hybridflow.service import Service, TenantChanges
from hybridflow.web import create_app
from hybridflow.worker import ReplyWorker
from tests.conftest import EVOLUTION_API_KEY, FakeClock
from tests.support.builders import CUSTOMER, eventually, owner, posted, raw, upsert
from tests.support.fakes import FakeEvolution, FakeOllama

PROMPT = "You are the assistant of Padaria Boa. Answer briefly."


async def idle(service: Service) -> None:
    """The barrier before checking that something did NOT happen: no reply job is left for a worker to act on."""
    await eventually(lambda: _no_open_jobs(service), what="no reply job left open")


async def _no_open_jobs(service: Service) -> bool:
    return not any((await service.queue_depth()).values())


async def jobs(service: Service) -> list:
    async with service.store.read() as conn:
        return (await conn.execute(sa.select(ReplyJob.__table__).order_by(ReplyJob.__table__.c.id))).all()




async def test_customer_gets_exactly_one_reply_from_the_tenant_model(
        app_client: TestClient, fake_evolution: FakeEvolution, fake_ollama: FakeOllama, service: Service) -> None:
    assert await posted(app_client, upsert("Vocês abrem domingo?")) == "reply_queued"
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await idle(service)
    assert fake_evolution.sent_texts == [{"number": "5511987654321", "text": "Echo: Vocês abrem domingo?"}]
    messages = fake_ollama.requests[0]["messages"]
    assert messages[0] == {"role": "system", "content": PROMPT}
    assert messages[-1] == {"role": "user", "content": "Vocês abrem domingo?"}
    # The echo of our own reply came back through the webhook before sendText answered: it did not pause us.
    assert fake_evolution.echo_statuses == [200]
    view = await service.session("test-instance", CUSTOMER)
    assert not view.is_paused
    detail = await service.session_detail("test-instance", CUSTOMER)
    assert [(m.direction, m.action) for m in detail.messages] == [("customer", "reply_queued"), ("bot", "own_message")]
    assert [r.status for r in detail.replies] == ["sent"]


async def test_an_idle_worker_claims_a_reply_in_the_webhooks_own_transaction(
        app_client: TestClient, fake_evolution: FakeEvolution, fake_ollama: FakeOllama, service: Service) -> None:
    """The idle worker's claim rides with the next batch: when the webhook is answered, its reply is already being
    written (no second transaction and no wake-up before the model is asked)."""
    fake_ollama.delay = 0.5
    await eventually(lambda: service.writer.riding == 1, what="the idle worker waiting for the next batch")
    assert await posted(app_client, upsert("Vocês abrem domingo?")) == "reply_queued"
    [job] = await jobs(service)
    assert (job.status, job.attempts, job.claimed_by) == ("running", 1, service.worker_id)
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await idle(service)
    assert [j.status for j in await jobs(service)] == ["sent"]
    assert fake_evolution.sent_texts == [{"number": "5511987654321", "text": "Echo: Vocês abrem domingo?"}]


async def test_conversation_history_goes_to_the_model(
        app_client: TestClient, fake_evolution: FakeEvolution, fake_ollama: FakeOllama) -> None:
    await posted(app_client, upsert("Oi"))
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await posted(app_client, upsert("Tem pão de queijo?"))
    await eventually(lambda: len(fake_evolution.sent_texts) == 2)
    assert [m["role"] for m in fake_ollama.requests[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert fake_ollama.requests[1]["messages"][2]["content"] == "Echo: Oi"


async def test_owner_message_means_no_reply(
        app_client: TestClient, fake_evolution: FakeEvolution, service: Service) -> None:
    assert await posted(app_client, owner("Oi Maria!")) == "paused"
    assert await posted(app_client, upsert("Oi João")) == "ignored_paused"
    await idle(service)
    assert await jobs(service) == []  # nothing was queued, so nothing can be sent later
    assert fake_evolution.sent_texts == []


async def test_owner_typing_while_the_model_thinks_discards_the_reply(
        app_client: TestClient, fake_evolution: FakeEvolution, fake_ollama: FakeOllama, service: Service) -> None:
    fake_ollama.delay = 1.0
    await posted(app_client, upsert("Qual o preço do bolo?"))
    await eventually(lambda: len(fake_ollama.requests) == 1)
    assert await posted(app_client, owner("Deixa que eu respondo")) == "paused"
    await eventually(lambda: _statuses(service, ["skipped_paused"]), timeout=5)
    await idle(service)
    assert fake_evolution.sent_texts == []


async def _retry_after(service: Service, attempts: int) -> bool:
    return [(j.status, j.attempts) for j in await jobs(service)] == [("retry", attempts)]


async def _statuses(service: Service, expected: list[str]) -> bool:
    return [j.status for j in await jobs(service)] == expected


async def test_evolution_failing_twice_then_succeeding_gives_one_reply(
        app_client: TestClient, fake_evolution: FakeEvolution, service: Service, clock: FakeClock) -> None:
    fake_evolution.fail_next(500, times=2)
    await posted(app_client, upsert("Oi"))
    for attempt in (1, 2):
        await eventually(lambda: _retry_after(service, attempt))
        [job] = await jobs(service)
        assert "500" in job.last_error
        clock.advance(seconds=(job.due_at - clock.now).total_seconds() + 1)  # the backoff has passed
        service.reply_wakeup.set()
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await idle(service)
    assert len(fake_evolution.sent_texts) == 1
    assert sum(1 for r in fake_evolution.requests if r.path.startswith("/message/sendText")) == 3


async def test_send_that_timed_out_but_reached_whatsapp_is_not_sent_again(
        app_client: TestClient, fake_evolution: FakeEvolution, service: Service, clock: FakeClock) -> None:
    fake_evolution.timeout_next(seconds=service.settings.evolution_timeout + 0.5)  # answers late, but sends
    await posted(app_client, upsert("Oi"))
    await eventually(lambda: _retry_after(service, 1))
    assert "timeout" in (await jobs(service))[0].last_error
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await eventually(lambda: _echo_recorded(service))  # the send.message echo proves the delivery
    clock.advance(minutes=1)
    service.reply_wakeup.set()
    await eventually(lambda: _statuses(service, ["sent"]))
    await idle(service)
    assert len(fake_evolution.sent_texts) == 1
    assert not (await service.session("test-instance", CUSTOMER)).is_paused


async def _echo_recorded(service: Service) -> bool:
    return all(j.sent_message_id for j in await jobs(service))


async def test_permanent_failure_is_visible_not_silent(
        app_client: TestClient, fake_evolution: FakeEvolution, service: Service) -> None:
    fake_evolution.not_on_whatsapp.add("5511987654321")
    await posted(app_client, upsert("Oi"))
    await eventually(lambda: _statuses(service, ["failed"]))
    detail = await service.session_detail("test-instance", CUSTOMER)
    assert "not on WhatsApp" in detail.replies[0].last_error


async def test_model_missing_fails_with_a_clear_reason(
        app_client: TestClient, fake_ollama: FakeOllama, service: Service) -> None:
    fake_ollama.models = {"qwen2.5"}
    await posted(app_client, upsert("Oi"))
    await eventually(lambda: _statuses(service, ["failed"]))
    assert "ollama pull" in (await jobs(service))[0].last_error


async def test_ollama_down_retries_visibly_and_webhooks_still_ack(
        app_client: TestClient, fake_ollama: FakeOllama, fake_evolution: FakeEvolution, service: Service) -> None:
    await fake_ollama.stop()
    assert await posted(app_client, upsert("Oi")) == "reply_queued"
    await eventually(lambda: _statuses(service, ["retry"]))
    assert (await jobs(service))[0].last_error
    assert await posted(app_client, upsert("Alguém aí?")) == "reply_queued"
    assert fake_evolution.sent_texts == []


async def test_concurrent_duplicate_webhooks_give_one_reply(
        app_client: TestClient, fake_evolution: FakeEvolution, service: Service) -> None:
    body = upsert("Vocês entregam no centro?")
    actions = await asyncio.gather(*(posted(app_client, body) for _ in range(10)))
    assert sorted(actions) == ["duplicate"] * 9 + ["reply_queued"]
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await idle(service)
    assert len(fake_evolution.sent_texts) == 1


async def test_debounced_messages_get_one_reply(
        app_client: TestClient, fake_evolution: FakeEvolution, fake_ollama: FakeOllama, service: Service,
        clock: FakeClock) -> None:
    await service.update_tenant("test-instance", TenantChanges(debounce=3))
    service.tenants._cache.clear()
    for text in ("Oi", "Queria encomendar", "um bolo de cenoura"):
        assert await posted(app_client, upsert(text)) == "reply_queued"
    # The barrier: one job, queued, due only after the debounce window: no worker can claim it before the clock moves.
    assert [(j.status, j.due_at > clock.now) for j in await jobs(service)] == [("queued", True)]
    assert fake_evolution.sent_texts == []  # still inside the debounce window
    clock.advance(seconds=4)
    service.reply_wakeup.set()
    await eventually(lambda: len(fake_evolution.sent_texts) == 1)
    await idle(service)
    assert len(fake_evolution.sent_texts) == 1
    users = [m["content"] for m in fake_ollama.requests[0]["messages"] if m["role"] == "user"]
    assert users == ["Oi\nQueria encomendar\num bolo de cenoura"]


# -- crash recovery and several workers --------------------------------------------------------------------------

async def _queue_jobs(service: Service, count: int) -> None:
    bodies = [upsert(f"pergunta {i}", chat=f"5511{i:09d}@s.whatsapp.net") for i in range(count)]
    results = await asyncio.gather(*(service.ingest(b, raw(b)) for b in bodies))
    assert {r.action for r in results} == {"reply_queued"}


async def test_two_workers_on_one_database_send_each_reply_once(
        service: Service, tenant, settings, clock: FakeClock, fake_evolution: FakeEvolution) -> None:
    await _queue_jobs(service, 200)
    async with Service.open(settings, clock=clock, worker_id="second") as other:
        workers = [ReplyWorker(service), ReplyWorker(other)]
        tasks = [asyncio.create_task(w.run()) for w in workers]
        try:
            await eventually(lambda: len(fake_evolution.sent_texts) >= 200, timeout=60)
            await idle(service)
        finally:
            for w in workers:
                await w.stop()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    numbers = [body["number"] for body in fake_evolution.sent_texts]
    assert len(numbers) == 200 and len(set(numbers)) == 200
    assert {j.status for j in await jobs(service)} == {"sent"}
    assert {j.claimed_by for j in await jobs(service)} <= {service.worker_id, "second"}


async def test_worker_killed_while_generating_is_picked_up_after_the_lease(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution) -> None:
    await _queue_jobs(service, 1)
    claimed = await service.replies.claim(10)  # a worker claims, then dies (kill -9) before sending
    assert len(claimed) == 1
    assert await service.replies.claim(10) == []  # leased: nobody else takes it
    clock.advance(seconds=service.settings.reply_lease + 1)
    assert await service.replies.recover_stale() == []  # not sending yet: queued again, nothing is "unknown"
    [job] = await service.replies.claim(10)
    assert await service.replies.run(job) == "sent"
    assert len(fake_evolution.sent_texts) == 1


async def test_worker_killed_mid_send_is_reported_unknown_never_resent(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution) -> None:
    await _queue_jobs(service, 1)
    [job] = await service.replies.claim(1)
    assert await service.replies._attempt(job, "Abrimos às 8h") == "sending"  # then the process dies
    clock.advance(hours=1)
    assert await service.replies.claim(10) == []
    assert len(await service.replies.recover_stale()) == 1
    [row] = await jobs(service)
    assert row.status == "unknown" and "not sent again" in row.last_error
    assert await service.replies.claim(10) == []
    assert fake_evolution.sent_texts == []


async def test_echo_seen_after_a_crash_mid_send_settles_as_sent(
        service: Service, tenant, clock: FakeClock, fake_evolution: FakeEvolution) -> None:
    await _queue_jobs(service, 1)
    [job] = await service.replies.claim(1)
    assert await service.replies._attempt(job, "Abrimos às 8h") == "sending"
    echo = upsert("Abrimos às 8h", chat=job.chat_id, from_me=True, event="send.message")
    assert (await service.ingest(echo, raw(echo))).action == "own_message"
    clock.advance(hours=1)
    assert await service.replies.recover_stale() == []
    assert [j.status for j in await jobs(service)] == ["sent"]
    view = await service.session("test-instance", job.chat_id)
    assert not view.is_paused


async def test_graceful_stop_hands_unfinished_replies_back(
        service: Service, tenant, fake_ollama: FakeOllama, fake_evolution: FakeEvolution) -> None:
    fake_ollama.delay = 5.0
    await _queue_jobs(service, 1)
    worker = ReplyWorker(service)
    task = asyncio.create_task(worker.run())
    await eventually(lambda: len(fake_ollama.requests) == 1)
    await worker.stop(grace=0.2)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    [row] = await jobs(service)
    assert row.status == "queued" and row.claimed_by is None
    fake_ollama.delay = 0
    [job] = await service.replies.claim(1)
    assert await service.replies.run(job) == "sent"
    assert len(fake_evolution.sent_texts) == 1
