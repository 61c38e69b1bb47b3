"""`hybridflow sessions export`: one chat's whole history, as a shop hands it to the customer who asks for it (LGPD
art. 18), on SQLite and PostgreSQL: every message with who wrote it and when, the pauses, the replies."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re

import pytest
from aiohttp.test_utils import TestClient

from hybridflow.config import Settings
from hybridflow.service import Service
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY
from tests.support.builders import CUSTOMER, eventually, owner, posted, raw, upsert
from tests.support.cli import as_json, invoke, ok, one_line_error
from tests.support.fakes import FakeEvolution, FakeOllama

pytestmark = pytest.mark.usefixtures("isolated")

PROMPT = "Você é a assistente da Padaria Boa."
WHILE_PAUSED = 21  # more than `sessions show` prints by default: the export has them all
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d"
LOCAL = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d -03:00"


def bodies() -> list[dict]:
    """Maria asks, the owner answers by hand (the chat pauses), Maria writes on, another API client confirms."""
    return [upsert("Vocês abrem domingo?", message_id="M-FIRST"),
            owner("Oi Maria, aqui é o João!", message_id="M-OWNER"),
            *(upsert(f"Mensagem {n}", message_id=f"M-{n:02}") for n in range(WHILE_PAUSED)),
            upsert('Pedido nº 7, "pão de queijo", 2 un.\nRetirada às 8h', from_me=True, event="send.message",
                   message_id="M-API")]


@pytest.fixture
def chat(hf, tmp_path):  # type: ignore[no-untyped-def]
    """The chat of ``bodies()``, stored through `replay` (the webhook's pipeline)."""
    ok(hf("tenants", "add", "test-instance", "--prompt", PROMPT))
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies()), encoding="utf-8")
    ok(hf("replay", str(path)))
    return hf


def test_json_holds_the_chat_every_message_with_who_wrote_it_the_pauses_and_the_replies(chat):
    exported = as_json(chat("sessions", "export", "test-instance", CUSTOMER, "--format", "json"))
    assert set(exported) == {"chat", "exported_at", "messages", "events", "replies"}
    shown = as_json(chat("sessions", "show", "test-instance", CUSTOMER, "--json"))
    assert exported["chat"] == {k: v for k, v in shown.items() if k not in ("events", "messages", "replies")}
    messages = exported["messages"]
    assert [m["message_id"] for m in messages] == (
        ["M-FIRST", "M-OWNER", *(f"M-{n:02}" for n in range(WHILE_PAUSED)), "M-API"])
    assert [(m["direction"], m["author"]) for m in messages[:3] + messages[-1:]] == [
        ("customer", "Maria (customer)"), ("owner", "business (a person)"), ("customer", "Maria (customer)"),
        ("api", "business (another API client)")]
    assert messages[0] | {"received_at": None} == {
        "message_id": "M-FIRST", "received_at": None, "whatsapp_timestamp": "2025-11-24T16:00:00+00:00",
        "direction": "customer", "author": "Maria (customer)", "push_name": "Maria", "kind": "text",
        "text": "Vocês abrem domingo?", "action": "reply_queued"}
    assert all(re.fullmatch(ISO, m["received_at"]) for m in messages)
    assert [m["action"] for m in messages[2:-1]] == ["ignored_paused"] * WHILE_PAUSED
    paused, takeover = exported["events"]  # the owner's pause, then the API client's, stacked on it
    assert (paused["change"], paused["reason"], paused["actor"], paused["message_id"]) == (
        "paused", "human_message", "owner", "M-OWNER")
    assert (takeover["change"], takeover["reason"], takeover["message_id"]) == ("paused", "api_takeover", "M-API")
    [reply] = exported["replies"]  # the owner answered before any reply was written
    assert (reply["kind"], reply["status"], reply["attempts"], reply["trigger_message_id"], reply["reply_text"]) == (
        "reply", "skipped_paused", 0, "M-FIRST", None)


def test_the_chat_is_found_as_sessions_show_finds_it(chat):
    for typed in ("11 98765-4321", "+55 (11) 98765-4321", "5511987654321", CUSTOMER):
        exported = as_json(chat("sessions", "export", "test-instance", typed, "--format", "json"))
        assert exported["chat"]["chat_id"] == CUSTOMER, typed
    unknown = chat("sessions", "export", "test-instance", "11 91111-2222")
    assert unknown.exit_code == 1 and unknown.stdout == ""
    assert "no session for chat '11 91111-2222' of instance 'test-instance'" in one_line_error(unknown)
    assert "unknown instance 'padaria'" in one_line_error(chat("sessions", "export", "padaria", CUSTOMER))


def test_csv_is_one_row_per_message_with_a_header_and_local_times(chat, monkeypatch):
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    result = ok(chat("sessions", "export", "test-instance", CUSTOMER, "--format", "csv"))
    rows = list(csv.DictReader(io.StringIO(result.stdout, newline="")))
    assert list(rows[0]) == ["received_at", "whatsapp_timestamp", "direction", "author", "push_name", "kind", "text",
                             "message_id", "action"]
    assert len(rows) == 2 + WHILE_PAUSED + 1
    assert rows[0]["whatsapp_timestamp"] == "2025-11-24T13:00:00-03:00"
    assert all(re.fullmatch(ISO, row["received_at"]) and row["received_at"].endswith("-03:00") for row in rows)
    assert rows[-1]["text"] == 'Pedido nº 7, "pão de queijo", 2 un.\nRetirada às 8h'  # commas, quotes, lines
    assert (rows[-1]["direction"], rows[-1]["author"]) == ("api", "business (another API client)")


def test_txt_is_for_people_with_local_times_and_their_offset(chat, monkeypatch):
    monkeypatch.setenv("TZ", "America/Sao_Paulo")
    text = ok(chat("sessions", "export", "test-instance", "11987654321")).stdout
    lines = text.splitlines()
    assert lines[0] == f"Chat {CUSTOMER} (Maria) with test-instance"
    assert re.fullmatch(rf"Exported {LOCAL}: 24 messages, 2 pause/resume events and 1 reply\.", lines[1])
    assert lines[2] == "Times are in America/Sao_Paulo, each with its offset from UTC."
    assert re.search(rf"^{LOCAL}  Maria \(customer\): Vocês abrem domingo\?$", text, re.M)
    assert re.search(rf"^{LOCAL}  business \(a person\): Oi Maria, aqui é o João!$", text, re.M)
    assert re.search(rf"^{LOCAL}  business \(another API client\): Pedido nº 7, \"pão de queijo\", 2 un\.\n"
                     rf" {{28}}Retirada às 8h$", text, re.M)  # a message's later lines under its first
    assert re.search(rf"^Pause / resume history\n{LOCAL}  paused \(human_message\) by owner, until {LOCAL}$", text,
                     re.M)
    assert re.search(rf"^Replies\n{LOCAL}  #\d+ reply skipped_paused, 0 attempts, last error: .+$", text, re.M)


def test_output_writes_the_file_refuses_to_replace_it_and_says_what_it_wrote(chat, isolated):
    target = isolated / "maria.csv"
    result = ok(chat("sessions", "export", "test-instance", CUSTOMER, "--output", str(target)))
    assert result.stdout == ""
    assert re.fullmatch(rf"wrote 24 messages, 2 pause/resume events and 1 reply of test-instance · {CUSTOMER} to "
                        rf"{re.escape(str(target))} \(csv, \d+\.\d KiB\)\n", result.stderr)
    written = target.read_text(encoding="utf-8")
    assert written.startswith("received_at,whatsapp_timestamp,") and "Mensagem 20" in written  # csv: the extension
    again = chat("sessions", "export", "test-instance", CUSTOMER, "-o", str(target), "--format", "json")
    assert again.exit_code == 1 and f"{target} exists" in one_line_error(again) and "--force" in again.stderr
    assert target.read_text(encoding="utf-8") == written
    ok(chat("sessions", "export", "test-instance", CUSTOMER, "-o", str(target), "--format", "json", "--force"))
    assert len(json.loads(target.read_text(encoding="utf-8"))["messages"]) == 24
    assert not [p for p in isolated.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    missing = chat("sessions", "export", "test-instance", CUSTOMER, "-o", str(isolated / "typo" / "maria.txt"))
    assert missing.exit_code == 2 and "no directory" in one_line_error(missing)


def test_a_chat_of_a_tenant_removed_with_its_history_kept_can_still_be_exported(chat):
    ok(chat("tenants", "remove", "test-instance", "--yes", "--keep-history"))
    exported = as_json(chat("sessions", "export", "test-instance", "11 98765-4321", "--format", "json"))
    assert len(exported["messages"]) == 24 and exported["chat"]["instance"] == "test-instance"


# --- replies sent and failed, by the real worker ------------------------------------------------------------------




async def export_json(settings: Settings) -> dict:
    """The CLI, beside the running app (in a thread: the command runs its own event loop)."""
    env = {"HYBRIDFLOW_DATABASE_URL": settings.database_url, "HYBRIDFLOW_SECRET_KEY": settings.secret_key or ""}
    result = await asyncio.to_thread(invoke, "sessions", "export", "test-instance", CUSTOMER, "--format", "json",
                                     env=env)
    return as_json(result)


async def statuses(service: Service) -> list[str]:
    return [r.status for r in (await service.session_detail("test-instance", CUSTOMER)).replies]


async def test_the_replies_sent_and_failed_are_in_the_export_with_their_text_and_error(
        app_client: TestClient, service: Service, settings: Settings, fake_evolution: FakeEvolution,
        fake_ollama: FakeOllama) -> None:
    assert await posted(app_client, upsert("Vocês abrem domingo?", message_id="M-ASK")) == "reply_queued"
    await eventually(lambda: _sent_and_echoed(service), what="the reply sent and its echo stored")
    fake_ollama.models = {"qwen2.5"}  # the tenant's model is gone: the next reply fails for good
    assert await posted(app_client, upsert("E no sábado?", message_id="M-AGAIN")) == "reply_queued"
    await eventually(lambda: _statuses_are(service, ["sent", "failed"]), what="the second reply failed")

    exported = await export_json(settings)
    sent, failed = exported["replies"]
    assert (sent["status"], sent["attempts"], sent["trigger_message_id"], sent["reply_text"]) == (
        "sent", 1, "M-ASK", "Echo: Vocês abrem domingo?")
    assert re.fullmatch(ISO, sent["sent_at"]) and sent["last_error"] is None
    assert (failed["status"], failed["trigger_message_id"], failed["reply_text"], failed["sent_at"]) == (
        "failed", "M-AGAIN", None, None)
    assert "ollama pull" in failed["last_error"]
    assert [(m["direction"], m["author"], m["text"]) for m in exported["messages"]] == [
        ("customer", "Maria (customer)", "Vocês abrem domingo?"),
        ("bot", "business (automatic AI reply)", "Echo: Vocês abrem domingo?"),
        ("customer", "Maria (customer)", "E no sábado?")]


async def _sent_and_echoed(service: Service) -> bool:
    detail = await service.session_detail("test-instance", CUSTOMER)
    return [r.status for r in detail.replies] == ["sent"] and any(m.direction == "bot" for m in detail.messages)


async def _statuses_are(service: Service, expected: list[str]) -> bool:
    return await statuses(service) == expected


def test_a_missing_database_is_named_and_neither_it_nor_the_output_is_created(isolated):
    database = isolated / "typo" / "hybridflow.db"
    result = invoke("--database-url", f"sqlite:///{database}", "sessions", "export", "test-instance", CUSTOMER,
                    "-o", str(isolated / "maria.txt"))
    assert result.exit_code == 2 and f"no database at {database}" in one_line_error(result)
    assert list(isolated.iterdir()) == []
