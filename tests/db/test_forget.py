"""`hybridflow sessions forget` and `DELETE /sessions/{instance}/{chat_id}` on SQLite and PostgreSQL: everything about
one chat erased while serve runs, a reply being written or sent then never recreates anything, the chat is a new
customer afterwards, and the log says that an erasure happened without saying whose."""

from __future__ import annotations

import asyncio
import functools

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from hybridflow import jobs
from hybridflow.config import Settings
from hybridflow.crypto import keyed_reference
from hybridflow.service import Service
from hybridflow.service.retention import erase_chat
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY
from tests.db.test_migrations import rows
from tests.support.builders import CUSTOMER, eventually, owner, posted, raw, run_due, upsert
from tests.support.cli import as_json, invoke, ok, one_line_error
from tests.support.fakes import FakeEvolution, FakeOllama

pytestmark = pytest.mark.usefixtures("isolated")

INSTANCE = "test-instance"
OTHER = "5511912345678@s.whatsapp.net"
ADMIN = {"Authorization": "Bearer admin-token"}


async def send(service: Service, body: dict) -> str:
    return (await service.ingest(body, raw(body))).action


async def left_of(service: Service, chat: str = CUSTOMER) -> dict[str, int]:
    """What the database still holds about ``chat``, table by table."""
    counted = {}
    for table in ("sessions", "messages", "reply_jobs"):
        [(n,)] = await rows(service.store, f"SELECT count(*) FROM {table} WHERE chat_id = '{chat}'")
        counted[table] = n
    [(n,)] = await rows(service.store, "SELECT count(*) FROM session_events e JOIN sessions s ON s.id = e.session_id "
                                       f"WHERE s.chat_id = '{chat}'")
    return counted | {"session_events": n}


NOTHING = {"sessions": 0, "messages": 0, "reply_jobs": 0, "session_events": 0}


def cli(settings: Settings, *args: str):  # type: ignore[no-untyped-def]
    return invoke(*args, env={"HYBRIDFLOW_DATABASE_URL": settings.database_url,
                              "HYBRIDFLOW_SECRET_KEY": settings.secret_key or ""})


@pytest.fixture
async def chat(service: Service, tenant) -> Service:  # type: ignore[no-untyped-def]
    """Maria's chat: she asked, was answered, the owner took over (a pause), she wrote again; João's chat beside
    it; Maria's number is on the tenant's ignore list (a tenant setting, which forgetting her chat keeps)."""
    assert await send(service, upsert("Vocês abrem domingo?", message_id="M-ASK")) == "reply_queued"
    assert await run_due(service) == ["sent"]
    assert await send(service, owner("Abrimos sim!", message_id="M-OWNER")) == "paused"
    assert await send(service, upsert("Obrigada", message_id="M-THANKS")) == "ignored_paused"
    assert await send(service, upsert("Oi", chat=OTHER, push_name="João", message_id="M-JOAO")) == "reply_queued"
    await service.change_audience(INSTANCE, "ignore", ["+55 11 98765-4321"], add=True)
    return service


async def test_forget_erases_the_chat_and_it_is_a_new_customer_afterwards(chat: Service):
    assert await left_of(chat) == {"sessions": 1, "messages": 4, "reply_jobs": 1, "session_events": 1}
    with capture_logs() as logs:
        forgotten = await chat.forget(INSTANCE, "11 98765-4321")
    assert (forgotten.chat_id, forgotten.messages, forgotten.replies, forgotten.events, forgotten.sessions) == (
        CUSTOMER, 4, 1, 1, 1)
    assert await left_of(chat) == NOTHING
    assert await left_of(chat, OTHER) == {"sessions": 1, "messages": 1, "reply_jobs": 1, "session_events": 0}
    assert [label for label, _ in await chat.audience(INSTANCE, "ignore")] == ["+5511987654321"]  # a setting: kept
    [line] = [e for e in logs if e["event"] == "session.forgotten"]
    assert line["chat_hmac"] == keyed_reference(chat.settings.secret_key, "forgotten-chat", CUSTOMER)
    assert (line["tenant"], line["messages"], line["replies"], line["events"]) == (INSTANCE, 4, 1, 1)
    assert CUSTOMER not in repr(line) and "98765" not in repr(line)
    # Evolution retries a message of the chat: a duplicate, and no chat comes back for it.
    assert await send(chat, upsert("Vocês abrem domingo?", message_id="M-ASK")) == "duplicate"
    assert await left_of(chat) == NOTHING
    # She writes again: a new customer (the ignore list is the tenant's and still applies, so remove it first).
    await chat.change_audience(INSTANCE, "ignore", ["+55 11 98765-4321"], add=False)
    assert await send(chat, upsert("Oi, sou nova aqui", message_id="M-NEW")) == "reply_queued"
    detail = await chat.session_detail(INSTANCE, CUSTOMER)
    assert [m.text for m in detail.messages] == ["Oi, sou nova aqui"] and not detail.events
    assert not detail.session.is_paused


async def test_forget_by_the_cli_asks_or_needs_yes_and_says_what_it_cannot_erase(chat: Service):
    settings = chat.settings
    refused = await asyncio.to_thread(cli, settings, "sessions", "forget", INSTANCE, CUSTOMER)
    assert refused.exit_code == 2 and "needs --yes" in one_line_error(refused)
    assert (await left_of(chat))["messages"] == 4
    result = ok(await asyncio.to_thread(cli, settings, "sessions", "forget", INSTANCE, "11987654321", "--yes"))
    lines = result.stdout.splitlines()
    assert lines[0] == (f"✓ forgot {INSTANCE} · {CUSTOMER}: 4 messages, 1 reply, 1 pause/resume event and the "
                        "session erased")
    assert "not erased, outside HybridFlow's database:" in lines
    assert any("capture" in line for line in lines) and any("backups" in line for line in lines)
    assert any("Evolution's own copy" in line for line in lines)
    assert await left_of(chat) == NOTHING
    again = await asyncio.to_thread(cli, settings, "sessions", "forget", INSTANCE, CUSTOMER, "--yes")
    assert again.exit_code == 1 and "no session for chat" in one_line_error(again)
    gone = await asyncio.to_thread(cli, settings, "sessions", "show", INSTANCE, CUSTOMER)
    assert gone.exit_code == 1
    data = as_json(await asyncio.to_thread(cli, settings, "sessions", "forget", INSTANCE, OTHER, "--yes", "--json"))
    assert (data["messages"], data["replies"], data["sessions"]) == (1, 1, 1) and len(data["not_erased"]) == 3


async def test_a_chat_of_a_tenant_removed_with_its_history_kept_can_be_forgotten(chat: Service):
    await chat.remove_tenant(INSTANCE, history="keep")
    forgotten = await chat.forget(INSTANCE, CUSTOMER)
    assert forgotten.messages == 4 and await left_of(chat) == NOTHING


# --- the admin API, with the reply worker running ---------------------------------------------------------------




def sends(fake: FakeEvolution) -> list:
    return [r for r in fake.requests if r.path.startswith("/message/sendText")]


async def test_delete_erases_the_chat_through_the_admin_api(app_client: TestClient, service: Service,
                                                            fake_evolution: FakeEvolution):
    assert await posted(app_client, upsert("Oi", message_id="M-1")) == "reply_queued"
    await eventually(lambda: _has_bot_message(service), what="the reply sent and its echo stored")
    assert (await app_client.delete(f"/sessions/{INSTANCE}/{CUSTOMER}")).status == 401
    response = await app_client.delete(f"/sessions/{INSTANCE}/11987654321", headers=ADMIN)
    assert response.status == 200
    body = await response.json()
    assert (body["chat_id"], body["messages"], body["replies"], body["sessions"]) == (CUSTOMER, 2, 1, 1)
    assert await left_of(service) == NOTHING
    missing = await app_client.delete(f"/sessions/{INSTANCE}/{CUSTOMER}", headers=ADMIN)
    assert missing.status == 404 and (await missing.json())["error"] == "unknown_session"
    assert (await app_client.get(f"/sessions/{INSTANCE}/{CUSTOMER}", headers=ADMIN)).status == 404


async def _has_bot_message(service: Service) -> bool:
    return ((await rows(service.store, "SELECT count(*) FROM messages WHERE direction = 'bot'"))[0][0] == 1
            and (await rows(service.store, "SELECT status FROM reply_jobs")) == [("sent",)])


async def test_a_reply_being_sent_finishes_first_and_nothing_of_it_comes_back(
        app_client: TestClient, service: Service, fake_evolution: FakeEvolution):
    fake_evolution.hold()
    assert await posted(app_client, upsert("Vocês entregam?", message_id="M-1")) == "reply_queued"
    await eventually(lambda: bool(sends(fake_evolution)), what="the send reached Evolution (held there)")
    forgetting = asyncio.create_task(app_client.delete(f"/sessions/{INSTANCE}/{CUSTOMER}", headers=ADMIN))
    await asyncio.sleep(0.5)
    assert not forgetting.done()  # it lets the send that is under way finish
    fake_evolution.release()
    response = await asyncio.wait_for(forgetting, 15)
    body = await response.json()
    assert response.status == 200 and (body["messages"], body["replies"], body["sessions"]) == (2, 1, 1)
    await asyncio.sleep(0.5)  # anything late (an echo, a settle) would land now
    assert await left_of(service) == NOTHING
    assert len(sends(fake_evolution)) == 1 and fake_evolution.echo_statuses == [200]


async def test_a_reply_being_generated_when_the_chat_is_forgotten_is_never_sent(
        app_client: TestClient, service: Service, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    fake_ollama.delay = 1.0
    assert await posted(app_client, upsert("Vocês entregam?", message_id="M-1")) == "reply_queued"
    await eventually(lambda: bool(fake_ollama.requests), what="the model is writing")
    response = await app_client.delete(f"/sessions/{INSTANCE}/{CUSTOMER}", headers=ADMIN)
    assert response.status == 200 and (await response.json())["replies"] == 1
    await asyncio.sleep(1.5)  # the model answers, the worker's last check finds the chat gone
    assert sends(fake_evolution) == []
    assert await left_of(service) == NOTHING


async def test_a_send_that_completes_after_a_forced_erase_recreates_nothing(service: Service, tenant):
    """The worker's side, step by step: the chat is erased while its reply is at Evolution (the forget stopped
    waiting); the send's success, a late echo and a lost worker's recovery then write nothing about the chat."""
    assert await send(service, upsert("Oi", message_id="M-1")) == "reply_queued"
    [job] = await service.replies.claim(1)
    submit = service.writer.submit
    sending = await submit(functools.partial(jobs.record_attempt, job=job, worker_id=service.worker_id, text="Olá!",
                                             now=service.clock(), send_lease=60))
    assert sending == jobs.SENDING
    erased = await submit(functools.partial(erase_chat, tenant_id=job.tenant_id, chat_id=CUSTOMER,
                                            now=service.clock(), let_sends_finish=False))
    assert erased == {"messages": 1, "replies": 1, "events": 0, "labels": 0, "sessions": 1}
    assert await submit(functools.partial(jobs.mark_sent, job=job, text="Olá!", message_id="BOT-1",
                                          now=service.clock())) is None
    await submit(functools.partial(jobs.settle_echoes, echoes={job.id: "BOT-1"}, now=service.clock()))
    await submit(functools.partial(jobs.recover_stale, now=service.clock()))
    echo = upsert("Olá!", from_me=True, event="send.message", message_id="BOT-1")
    assert (await service.ingest(echo, raw(echo))).action == "duplicate"  # the sent id was remembered as deleted
    assert await left_of(service) == NOTHING
    # And a job claimed before the erase, still being written: its last-moment check cancels it.
    assert await send(service, upsert("Oi de novo", message_id="M-2")) == "reply_queued"
    [job] = await service.replies.claim(1)
    await submit(functools.partial(erase_chat, tenant_id=job.tenant_id, chat_id=CUSTOMER, now=service.clock(),
                                   let_sends_finish=True))
    assert await submit(functools.partial(jobs.record_attempt, job=job, worker_id=service.worker_id, text="Olá",
                                          now=service.clock(), send_lease=60)) == jobs.CANCELLED
    assert await left_of(service) == NOTHING


async def test_forgetting_a_labelled_chat_erases_its_labels_and_it_comes_back_as_a_new_customer(service: Service,
                                                                                               tenant):
    from hybridflow.service import TenantChanges
    from tests.db.test_labels import label_edit, label_on

    await service.update_tenant("test-instance", TenantChanges(pause_label="Bot off"))
    await send(service, upsert("Oi"))
    for body in (label_edit("7", "Bot off"), label_on("7")):
        await service.ingest(body, raw(body))
    assert (await service.session("test-instance", CUSTOMER)).pause_reason == "label"
    forgotten = await service.forget("test-instance", CUSTOMER)
    assert (forgotten.labels, forgotten.sessions) == (1, 1)
    assert await rows(service.store, "SELECT count(*) FROM chat_labels") == [(0,)]
    assert await send(service, upsert("Olá, sou nova aqui")) == "reply_queued"  # not paused by the old label


async def test_a_reply_whose_send_timed_out_echoes_after_the_forget_as_a_duplicate(service: Service, tenant,
                                                                                  fake_evolution: FakeEvolution):
    await send(service, upsert("Oi"))
    [job] = await service.replies.claim(1)
    assert await service.replies._attempt(job, "Olá! Como posso ajudar?") == "sending"
    await service.writer.submit(functools.partial(  # Evolution timed out: the send is retried later, its fate unknown
        jobs.retry_later, job_id=job.id, from_status=jobs.SENDING, due_at=service.clock(), error="timed out",
        now=service.clock()))
    await service.forget(INSTANCE, CUSTOMER)
    late = upsert("Olá! Como posso ajudar?", from_me=True, event="send.message", message_id="LATE-ECHO")
    assert await send(service, late) == "duplicate"  # not an API takeover of a chat that is gone
    assert await left_of(service) == NOTHING


async def test_a_retried_webhook_after_the_forget_does_not_bring_back_the_chats_lid(service: Service, tenant):
    body = upsert("Oi", remoteJidAlt="123456789@lid")
    await send(service, body)
    await service.forget(INSTANCE, CUSTOMER)
    assert await send(service, body) == "duplicate"
    assert await rows(service.store, "SELECT count(*) FROM chat_aliases") == [(0,)]
