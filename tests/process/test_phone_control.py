"""Control from the phone through a running `serve` (issue 12), on both databases: the owner's number learned from
connection.update, a label put on and taken off a chat, commands in "Message yourself" answered there, and a
customer asking for a person, with the owner notified; every webhook signed with the tenant's secret, as the
README sets Evolution up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path

import pytest

from tests.support.builders import eventually, texts_to, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.serve import ServeProcess, cli, post_signed, serve_env, serving

INSTANCE = "padaria"
SECRET = "phone-control-secret-0123456789"
OWNER = "5511955550000@s.whatsapp.net"
CUSTOMER = "5511987654321@s.whatsapp.net"
_ids = count(1)


@pytest.fixture
async def running(database_url: str, tmp_path: Path, fake_evolution: FakeEvolution,
                  fake_ollama: FakeOllama) -> AsyncIterator[tuple[ServeProcess, dict[str, str]]]:
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url)
    cli(env, "tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--api-key", "k",
        "--webhook-secret", SECRET, "--pause-label", "Bot off", "--handoff-message", "Já chamo alguém!")
    async with serving(env, tmp_path / "serve.log") as server:
        yield server, env


async def post(server: ServeProcess, body: dict) -> tuple[str, str | None]:
    return await post_signed(server, body, SECRET)


def message(text: str, *, chat: str = CUSTOMER, from_me: bool = False) -> dict:
    return upsert(text, instance=INSTANCE, chat=chat, from_me=from_me, message_id=f"PHONE{next(_ids):06d}")


def event(name: str, data: dict) -> dict:
    return {"event": name, "instance": INSTANCE, "sender": OWNER, "date_time": "2026-12-01T10:00:00.000Z",
            "data": {"instance": INSTANCE, **data}}


async def test_the_owner_steers_the_bot_from_the_phone(running, fake_evolution: FakeEvolution):
    server, env = running
    assert (await post(server, event("connection.update", {"state": "open", "wuid": OWNER})))[0] == "ignored_event"

    # A label on the chat: the bot keeps out until it comes off.
    assert await post(server, event("labels.edit", {"id": "7", "name": "bot OFF", "color": 1, "deleted": False})) == (
        "label_stored", "known")
    assert await post(server, message("Oi, tem pão?")) == ("reply_queued", None)
    await eventually(lambda: len(texts_to(fake_evolution, CUSTOMER)) == 1, what="the first reply")
    assert await post(server, event("labels.association", {"type": "add", "chatId": CUSTOMER, "labelId": "7"})) == (
        "label_paused", "label")
    assert await post(server, message("Alô?")) == ("ignored_paused", "label")
    assert await post(server, event("labels.association", {"type": "remove", "chatId": CUSTOMER,
                                                           "labelId": "7"})) == ("label_resumed", "label")

    # Commands in "Message yourself", answered there. The tenant was read before the owner's number was learned:
    # within serve's few seconds of tenant cache the note is only stored; then it is a command.
    async def commanded() -> bool:
        return (await post(server, message("bot off all", chat=OWNER, from_me=True)))[0] == "command"

    await eventually(commanded, timeout=15, what="the owner's number known to serve")
    await eventually(lambda: any(t.startswith("⏸ pausado: todas as conversas") for t in texts_to(fake_evolution, OWNER)),
                     what="the answer in Message yourself")
    assert await post(server, message("Oi de novo", chat="5511922223333@s.whatsapp.net")) == (
        "ignored_paused", "tenant_paused")
    assert await post(server, message("bot on all", chat=OWNER, from_me=True)) == ("command", None)
    await eventually(lambda: any(t.startswith("▶ o bot voltou") for t in texts_to(fake_evolution, OWNER)),
                     what="the second answer")

    # A customer asks for a person: paused, told once, and the owner is notified.
    assert await post(server, message("Quero falar com um atendente")) == ("paused", "customer_request")
    await eventually(lambda: "Já chamo alguém!" in texts_to(fake_evolution, CUSTOMER), what="the handoff message")
    await eventually(lambda: any(t.startswith("🙋 Maria (+5511987654321) pediu") for t in texts_to(fake_evolution, OWNER)),
                     what="the owner's notification")
    shown = cli(env, "sessions", "show", INSTANCE, CUSTOMER).stdout
    assert "customer_request" in shown
