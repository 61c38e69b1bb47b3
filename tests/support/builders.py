"""Small builders for webhook bodies and fixture access, shared by the tests."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "fixtures"
EXPECTED: dict[str, Any] = json.loads((FIXTURES / "expected.json").read_text())
WEBHOOK_FIXTURES = sorted(name for name in EXPECTED if not name.startswith("_"))
CUSTOMER = "5511987654321@s.whatsapp.net"
OWN_NUMBER = "5511955550000@s.whatsapp.net"  # the test instance's own number: every envelope's "sender"


def fixture(name: str) -> tuple[dict[str, Any], str]:
    """A fixture's parsed body and raw text."""
    raw = (FIXTURES / name).read_text(encoding="utf-8")
    return json.loads(raw), raw


def upsert(text: str | None = "Olá, vocês abrem domingo?", *, instance: str = "test-instance", chat: str = CUSTOMER,
           from_me: bool = False, message_id: str | None = None, event: str = "messages.upsert",
           push_name: str = "Maria", timestamp: int = 1764000000, **data: Any) -> dict[str, Any]:
    """A v2 ``messages.upsert`` (or ``send.message``) body as Evolution 2.3 sends it."""
    message: dict[str, Any] = {"conversation": text} if text is not None else {
        "audioMessage": {"ptt": True, "seconds": 4, "mimetype": "audio/ogg; codecs=opus"}}
    body = {
        "event": event,
        "instance": instance,
        "data": {
            "key": {"remoteJid": chat, "fromMe": from_me, "id": message_id or uuid.uuid4().hex.upper()},
            "pushName": "Padaria" if from_me else push_name,
            "status": "SERVER_ACK" if from_me else "DELIVERY_ACK",
            "message": message,
            "messageType": "conversation" if text is not None else "audioMessage",
            "messageTimestamp": timestamp,
            "instanceId": "0b6c7a8e-2f8e-4c39-9a0e-1f1d7a3c9b21",
            "source": "android",
            **data,
        },
        "destination": "http://127.0.0.1/webhooks/evolution",
        "date_time": "2025-11-24T12:00:00.000Z",
        "sender": OWN_NUMBER,
        "server_url": "http://127.0.0.1:8080",
        "apikey": None,
    }
    return body


def owner(text: str = "Oi Maria, aqui é o João!", **kwargs: Any) -> dict[str, Any]:
    """The owner typing on the phone: ``messages.upsert`` with ``fromMe: true``."""
    return upsert(text, from_me=True, **kwargs)


async def eventually(check: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0,
                     what: str = "condition") -> None:
    """Wait until ``check`` holds (background work is running); fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.05)


async def settled(value: Callable[[], Any], quiet: float = 0.5, timeout: float = 10.0) -> Any:
    """Wait until ``value()`` has not changed for ``quiet`` seconds (work already on its way has landed); returns it.

    A process killed with SIGKILL may have written requests that a fake server in this event loop has not read yet:
    they are still delivered. Counting them needs the loop to run until nothing new arrives.
    """
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < quiet:
        if time.monotonic() > deadline:
            raise AssertionError(f"still changing after {timeout}s: {last!r}")
        await asyncio.sleep(0.05)
        current = value()
        if current != last:
            last, since = current, time.monotonic()
    return last


async def said(service: Any, text: str, **kwargs: Any) -> tuple[str, str | None]:
    """A customer's (or, with ``from_me``, the owner's) message through ``service.ingest``: the action and reason."""
    body = upsert(text, **kwargs)
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


def texts_to(fake_evolution: Any, chat: str) -> list[str]:
    """The texts the fake Evolution delivered to ``chat``, in order."""
    return [t["text"] for t in fake_evolution.sent_texts if t["number"] == chat.partition("@")[0]]


async def run_due(service: Any, limit: int = 10) -> list[str]:
    """What a reply worker does, once: claim the due jobs and run them one by one; their final statuses."""
    return [await service.replies.run(job) for job in await service.replies.claim(limit)]


async def posted(client: Any, body: Any) -> str:
    """POST a webhook body to an in-process app (aiohttp's TestClient); the action it answered (200 only)."""
    response = await client.post("/webhooks/evolution", data=raw(body), headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()
    return (await response.json())["action"]


def dialect_of(database_url: str) -> str:
    """The name /health and the logs give the database of ``database_url``."""
    return "sqlite" if database_url.startswith("sqlite") else "postgresql"


def raw(body: Any) -> str:
    return json.dumps(body)
