"""The rest of control from the phone through a running `serve` (issue 12), on both databases: the model handing a
chat to a person (its tool), the notification POSTed signed to an n8n-like URL, and paced replies — the owner
typing while part 2 is "typed" stops parts 2 and 3, every part's echo comes back through the webhook without
pausing anything, and a kill -9 between parts sends each part once."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest

from hybridflow.hooks import verify
from tests.support.builders import eventually, texts_to, upsert
from tests.support.fakes import FakeEvolution, FakeOllama, NotifyReceiver
from tests.support.serve import ServeProcess, cli, post_signed, serve_env, serving

INSTANCE = "padaria"
SECRET = "phone-control-secret-0123456789"
HOOK_SECRET = "n8n-hook-secret-abcdef0123456789"
OWNER = "5511955550000@s.whatsapp.net"
CUSTOMER = "5511987654321@s.whatsapp.net"
ANSWER = "Olá, Maria!\n\nTemos pão de queijo saindo às 16h.\n\nQuer que eu separe uma dúzia?"
PARTS = ["Olá, Maria!", "Temos pão de queijo saindo às 16h.", "Quer que eu separe uma dúzia?"]
_ids = count(1)


def tenant(env: dict[str, str], *options: str) -> None:
    cli(env, "tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa. Reembolsos: chame uma pessoa.",
        "--api-key", "k", "--webhook-secret", SECRET, "--owner-number", "+55 11 95555-0000", *options)


async def post(server: ServeProcess, body: dict) -> tuple[str, str | None]:
    return await post_signed(server, body, SECRET)


def message(text: str, *, chat: str = CUSTOMER, from_me: bool = False) -> dict:
    return upsert(text, instance=INSTANCE, chat=chat, from_me=from_me, message_id=f"PACED{next(_ids):06d}")


def typing_calls(fake_evolution: FakeEvolution) -> int:
    return sum("/sendPresence/" in r.path for r in fake_evolution.requests)


def echo_back(fake_evolution: FakeEvolution, server: ServeProcess) -> None:
    """Evolution's send.message echo of each text goes to the webhook, signed, as the README sets it up."""
    fake_evolution.echo_webhook_url = server.webhook_url
    fake_evolution.echo_headers = {"Authorization": f"Bearer {SECRET}"}


async def test_the_model_hands_off_and_the_owner_is_notified_on_whatsapp_and_at_the_url(
        database_url: str, tmp_path: Path, fake_evolution: FakeEvolution, fake_ollama: FakeOllama,
        notify_receiver: NotifyReceiver):
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url)
    tenant(env, "--handoff-tool", "--handoff-message", "Já chamo alguém!", "--notify-url", notify_receiver.hook_url,
           "--notify-secret", HOOK_SECRET)
    fake_ollama.tool_call = lambda body: ({"name": "handoff_to_human", "arguments": {"reason": "pedido de reembolso"}}
                                          if "reembolso" in body["messages"][-1]["content"] else None)
    async with serving(env, tmp_path / "serve.log") as server:
        assert await post(server, message("Quero o reembolso do meu bolo")) == ("reply_queued", None)
        await eventually(lambda: len(notify_receiver.bodies) == 1, timeout=15, what="the POST to the URL")
        await eventually(lambda: texts_to(fake_evolution, CUSTOMER) == ["Já chamo alguém!"], what="handoff message")
        await eventually(lambda: len(texts_to(fake_evolution, OWNER)) == 1, what="the owner's WhatsApp notification")
        [received] = notify_receiver.received
        assert verify(HOOK_SECRET, notify_receiver.bodies[0], received.headers["x-hybridflow-signature"])
        document = json.loads(notify_receiver.bodies[0])
        assert (document["event"], document["reason"], document["hand_back"]) == (
            "handoff", "pedido de reembolso", "bot on 5511987654321")
        assert "motivo: pedido de reembolso" in texts_to(fake_evolution, OWNER)[0]
        assert await post(server, message("Alô?")) == ("ignored_paused", "customer_request")
        shown = cli(env, "sessions", "show", INSTANCE, CUSTOMER).stdout
        assert "handed_off" in shown and "customer_request" in shown
    assert "Traceback" not in server.output()


@pytest.fixture
async def paced(database_url: str, tmp_path: Path, fake_evolution: FakeEvolution,
                fake_ollama: FakeOllama) -> AsyncIterator[tuple[ServeProcess, dict[str, str]]]:
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url, reply_lease="3s")
    tenant(env, "--split-replies", "--time-per-char", "20")
    fake_ollama.reply = lambda body: ANSWER if "pão" in body["messages"][-1]["content"] else "Certo!"
    async with serving(env, tmp_path / "serve.log") as server:
        echo_back(fake_evolution, server)
        yield server, env


async def test_a_paced_reply_goes_out_part_by_part_and_its_echoes_pause_nothing(
        paced, fake_evolution: FakeEvolution):
    server, env = paced
    assert await post(server, message("Tem pão de queijo?")) == ("reply_queued", None)
    await eventually(lambda: texts_to(fake_evolution, CUSTOMER) == PARTS, timeout=20, what="the three parts")
    assert typing_calls(fake_evolution) == 3
    await eventually(lambda: fake_evolution.echo_statuses == [200, 200, 200], what="the echoes answered")
    shown = cli(env, "sessions", "show", INSTANCE, CUSTOMER, "--json").stdout
    detail = json.loads(shown)
    assert detail["is_paused"] is False  # the bot's own echoes never pause it
    assert [(r["status"], r["parts"], r["parts_sent"]) for r in detail["replies"]] == [("sent", 3, 3)]
    assert "parts 3/3 sent" in cli(env, "sessions", "show", INSTANCE, CUSTOMER).stdout
    assert await post(server, message("Obrigada")) == ("reply_queued", None)  # still answering
    await eventually(lambda: texts_to(fake_evolution, CUSTOMER)[-1:] == ["Certo!"], what="the next reply")


async def test_the_owner_typing_while_part_two_is_typed_stops_parts_two_and_three(
        paced, fake_evolution: FakeEvolution):
    server, env = paced
    fake_evolution.delay_scale = 1.0  # each "typing…" lasts as long as Evolution is asked to (at least 1 s)
    assert await post(server, message("Tem pão de queijo?")) == ("reply_queued", None)
    await eventually(lambda: typing_calls(fake_evolution) == 2, timeout=20, what="part 2 being typed")
    assert texts_to(fake_evolution, CUSTOMER) == PARTS[:1]
    assert await post(server, message("Oi Maria, eu mesmo respondo!", from_me=True)) == ("paused", "human_message")
    detail = {}

    async def ended() -> bool:
        nonlocal detail
        detail = json.loads(cli(env, "sessions", "show", INSTANCE, CUSTOMER, "--json").stdout)
        return detail["replies"][0]["status"] == "skipped_paused"

    await eventually(ended, timeout=15, what="the reply stopped")
    assert detail["replies"][0]["parts_sent"] == 1
    assert texts_to(fake_evolution, CUSTOMER) == PARTS[:1]  # parts 2 and 3 never went out


async def test_kill_9_between_parts_sends_each_part_once(
        database_url: str, tmp_path: Path, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url, reply_lease="3s")
    tenant(env, "--split-replies", "--time-per-char", "20")
    fake_ollama.reply = ANSWER
    fake_evolution.delay_scale = 1.0
    server = ServeProcess(env, tmp_path / "serve.log")
    server.start()
    try:
        await server.wait_healthy()
        echo_back(fake_evolution, server)
        assert await post(server, message("Tem pão de queijo?")) == ("reply_queued", None)
        await eventually(lambda: typing_calls(fake_evolution) == 2, timeout=20, what="part 2 being typed")
        server.kill()  # between part 1 (sent) and part 2 (being typed)
        assert texts_to(fake_evolution, CUSTOMER) == PARTS[:1]
        fake_evolution.delay_scale = 0.0
        server.start()
        await server.wait_healthy()
        await eventually(lambda: len(texts_to(fake_evolution, CUSTOMER)) == 3, timeout=30,
                         what="parts 2 and 3 after the restart")
        detail = json.loads(cli(env, "sessions", "show", INSTANCE, CUSTOMER, "--json").stdout)
        assert [(r["status"], r["parts_sent"]) for r in detail["replies"]] == [("sent", 3)]
        assert texts_to(fake_evolution, CUSTOMER) == PARTS  # each part exactly once
        assert detail["is_paused"] is False
    finally:
        server.stop()
