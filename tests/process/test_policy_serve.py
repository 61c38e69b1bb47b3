"""Who and when through a running `serve` (issue 11), on both databases: the rules are set with the CLI while
`serve` runs as a child process, and each shows in what the webhook answers and what Evolution is asked to send:
the ignore list, business hours with an away message, a rule changed without a restart, the reply cap and the
daily token budget."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path

import httpx
import pytest

from tests.support.builders import eventually, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.serve import ServeProcess, cli, serve_env, serving

INSTANCE = "padaria"
IGNORED = "5511988887777@s.whatsapp.net"
AWAY = "Fechado hoje. Voltamos {next_open}."
_ids = count(1)


@pytest.fixture
async def running(database_url: str, tmp_path: Path, fake_evolution: FakeEvolution,
                  fake_ollama: FakeOllama) -> AsyncIterator[tuple[ServeProcess, dict[str, str]]]:
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url)
    cli(env, "tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--api-key", "k",
        "--reply-cap", "1/10m")
    async with serving(env, tmp_path / "serve.log") as server:
        yield server, env


async def post(server: ServeProcess, chat: str, text: str) -> tuple[str, str | None]:
    body = upsert(text, instance=INSTANCE, chat=chat, message_id=f"POLICY{next(_ids):06d}")
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(server.webhook_url, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["action"], answer.get("reason")


def chat_state(env: dict[str, str], chat: str) -> dict:
    return json.loads(cli(env, "sessions", "show", INSTANCE, chat, "--json").stdout)


async def test_each_rule_set_from_the_cli_shows_in_a_running_serve(running, fake_evolution: FakeEvolution,
                                                                   fake_ollama: FakeOllama):
    server, env = running
    cli(env, "tenants", "ignore", "add", INSTANCE, "+55 11 98888-7777")
    assert await post(server, IGNORED, "Oi, é a tia!") == ("stored", "ignored_contact")

    # Closed all of today and tomorrow (UTC), answering only while open, with an away message.
    today = datetime.now(UTC).date()
    cli(env, "tenants", "update", INSTANCE, "--hours", "mon-sun 00:00-24:00", "--timezone", "UTC",
        "--closed", today.isoformat(), "--closed", (today + timedelta(days=1)).isoformat(),
        "--hours-mode", "inside", "--away-message", AWAY, "--locale", "en")
    # Until serve's tenant cache (a few seconds) sees the change, a message may still be answered: each try is a
    # chat of its own, so a reply there (and the cap) leaves the next try alone.
    tries = (f"55119111100{n:02d}@s.whatsapp.net" for n in range(99))
    closed_chat: list[str] = []

    async def closed_now() -> bool:
        chat = next(tries)
        if (await post(server, chat, "Vocês estão abertos?"))[0] != "ignored_hours":
            return False
        closed_chat.append(chat)
        return True

    await eventually(closed_now, timeout=15, what="the new hours apply in the running serve")
    number = closed_chat[0].partition("@")[0]

    def away_texts() -> list[str]:
        return [t["text"] for t in fake_evolution.sent_texts if t["number"] == number]

    await eventually(lambda: len(away_texts()) == 1, what="the away message is sent")
    assert away_texts()[0].startswith("Fechado hoje. Voltamos ")
    assert away_texts()[0].endswith(", 00:00.")  # the opening after the two closed days, in English: "Friday, 00:00"
    assert await post(server, closed_chat[0], "Alô?") == ("ignored_hours", None)

    # Open again, without a restart: the customer gets the model's reply, and the cap of one reply per ten minutes
    # pauses the chat at the next turn (another bot on the other side would loop otherwise).
    cli(env, "tenants", "update", INSTANCE, "--hours", "", "--hours-mode", "always")
    second = "5511933334444@s.whatsapp.net"

    async def answered() -> bool:
        return (await post(server, second, "Tem pão?"))[0] == "reply_queued"

    await eventually(answered, timeout=15, what="the hours were removed in the running serve")
    await eventually(lambda: any(t["number"] == "5511933334444" for t in fake_evolution.sent_texts),
                     what="the reply is sent")
    assert await post(server, second, "E bolo?") == ("paused", "rate_limited")
    assert chat_state(env, second)["pause_reason"] == "rate_limited"

    # A daily budget smaller than what was spent today: the next reply is skipped, and says why.
    cli(env, "tenants", "update", INSTANCE, "--daily-tokens", "5")
    used = json.loads(cli(env, "tenants", "show", INSTANCE, "--json").stdout)["tokens_today"]
    assert used["used"] > 5 and used["budget"] == 5
    chats = (f"55119666600{n:02d}@s.whatsapp.net" for n in range(30))

    async def skipped() -> bool:
        chat = next(chats)
        assert (await post(server, chat, "Oi"))[0] == "reply_queued"
        async def final() -> bool:
            replies = chat_state(env, chat)["replies"]
            return bool(replies) and replies[-1]["status"] not in ("queued", "running", "sending", "retry")
        await eventually(final, what="the reply job ended")
        return chat_state(env, chat)["replies"][-1]["status"] == "skipped_budget"

    await eventually(skipped, timeout=20, what="a reply skipped for the budget")
    assert len(away_texts()) == 1  # the same day: no second away message for that chat
