"""The operator commands through the CLI, on SQLite and PostgreSQL: replay, sessions, sweep, migrate, doctor.

Every test sets up its data through the public surface only (``tenants add``, ``replay`` of bodies written to
files) and checks what an operator sees: the lines printed, the tables, the ``--json`` documents, exit codes.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from hybridflow.models import SCHEMA_VERSION
from tests.support.builders import CUSTOMER, EXPECTED, FIXTURES, owner, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.ports import closed_port_url
from tests.support.cli import invoke, as_json, json_documents, lines_of_table, ok, one_line_error, table_rows

pytestmark = pytest.mark.usefixtures("isolated")

T = TypeVar("T")
INSTANCE = "test-instance"
PROMPT = "Você é a assistente da Padaria Boa. Responda em poucas palavras."
EVOLUTION_KEY = "instance-token-123"
OTHER = "5511912345678@s.whatsapp.net"


# --- helpers ------------------------------------------------------------------------------------------------------


class PeersInThread:
    """FakeEvolution and FakeOllama serving from their own event loop thread.

    A CLI command runs ``asyncio.run`` in the test's thread, so the fakes cannot share its loop.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fake-peers", daemon=True)
        self.evolution: FakeEvolution
        self.ollama: FakeOllama

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=15)

    def __enter__(self) -> PeersInThread:
        self.thread.start()

        async def start() -> tuple[FakeEvolution, FakeOllama]:
            evolution, ollama = FakeEvolution(api_key=EVOLUTION_KEY), FakeOllama()
            await evolution.start()
            await ollama.start()
            return evolution, ollama

        self.evolution, self.ollama = self.call(start())
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            await self.evolution.stop()
            await self.ollama.stop()

        try:
            self.call(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def peers() -> Iterator[PeersInThread]:
    """A FakeEvolution (api key EVOLUTION_KEY, every instance 'open') and a FakeOllama (llama3.2), running."""
    with PeersInThread() as running:
        yield running


def write_json(path: Path, body: Any) -> Path:
    path.write_text(json.dumps(body, ensure_ascii=False), encoding="utf-8")
    return path


def write_lines(path: Path, *lines: Any) -> Path:
    """A JSON-lines file; strings are written as they are (to write broken lines), the rest as JSON."""
    path.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines),
                    encoding="utf-8")
    return path


def add_tenant(hf, instance: str = INSTANCE, *args: str, **settings: str) -> None:  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", instance, "--prompt", PROMPT, *args, **settings))


def replay(hf, tmp_path: Path, *bodies: Any, name: str = "body.json", **settings: str):  # type: ignore[no-untyped-def]
    """Write the bodies to a file (one: .json, several: .jsonl) and replay it; returns the result."""
    path = tmp_path / name
    if len(bodies) == 1 and name.endswith(".json"):
        write_json(path, bodies[0])
    else:
        write_lines(path, *bodies)
    return hf("replay", str(path), **settings)


def sessions(hf, *args: str, **settings: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return as_json(hf("sessions", "list", "--json", *args, **settings))


def chat(number: int) -> str:
    return f"55119{number:08d}@s.whatsapp.net"


# --- replay -------------------------------------------------------------------------------------------------------


def test_replay_a_json_file_prints_its_action_and_keeps_the_message(hf, tmp_path):
    add_tenant(hf)
    body = upsert("Vocês abrem domingo?", message_id="MSG-1")
    result = ok(replay(hf, tmp_path, body))

    assert result.stdout.splitlines()[0] == f"{tmp_path / 'body.json'}: reply_queued chat_id={CUSTOMER} message_id=MSG-1"
    assert {a: row["count"] for a, row in table_rows(result.stdout).items()} == {"reply_queued": "1"}
    listed = sessions(hf)
    assert listed["total"] == 1
    assert (listed["sessions"][0]["chat_id"], listed["sessions"][0]["push_name"]) == (CUSTOMER, "Maria")


def test_replay_a_directory_prints_one_line_per_payload_and_a_summary(hf, tmp_path):
    add_tenant(hf, "hf-demo")
    names = ["v2-connection-update-open.json", "v2-messages-upsert-ephemeral-wrapper.json",
             "v2-messages-upsert-group-text.json", "v2-messages-upsert-reaction.json",
             "v2-send-message-api-sent.json", "v2-messages-upsert-status-broadcast.json"]
    captured = tmp_path / "captured"
    (captured / "more").mkdir(parents=True)  # sorted before the others: nothing in it touches their chat
    for name in names[:-1]:
        shutil.copy(FIXTURES / name, captured / name)
    shutil.copy(FIXTURES / names[-1], captured / "more" / names[-1])
    shutil.copy(FIXTURES / "README.md", captured / "README.md")  # not a body: skipped

    result = ok(hf("replay", str(captured)))

    printed = {line.split(": ")[0]: line.split(": ")[1].split()[0]
               for line in result.stdout.splitlines() if line.startswith(str(captured))}
    expected = {str(path): EXPECTED[path.name]["action"] for path in captured.rglob("*.json")}
    assert printed == expected
    assert len(printed) == len(names)
    summary = table_rows(result.stdout)
    assert {action: int(row["count"]) for action, row in summary.items()} == Counter(expected.values())
    assert not any("README" in line for line in result.stdout.splitlines())


def test_replay_a_json_lines_file_reports_each_line(hf, tmp_path):
    add_tenant(hf)
    path = write_lines(tmp_path / "captured.jsonl",
                       upsert("Bom dia", message_id="L1"),
                       owner("Já te respondo", message_id="L2"),
                       "",
                       upsert("Obrigada", message_id="L3"))
    result = ok(hf("replay", str(path)))

    lines = [line for line in result.stdout.splitlines() if line.startswith(str(path))]
    assert [line.split(": ")[0] for line in lines] == [f"{path}:1", f"{path}:2", f"{path}:4"]
    assert [line.split(": ")[1].split()[0] for line in lines] == ["reply_queued", "paused", "ignored_paused"]
    assert "reason=human_message" in lines[1]
    summary = table_rows(result.stdout)
    assert {a: row["count"] for a, row in summary.items()} == {"reply_queued": "1", "paused": "1",
                                                               "ignored_paused": "1"}


def test_replay_a_broken_json_line_is_an_error_for_that_line_only(hf, tmp_path):
    add_tenant(hf)
    path = write_lines(tmp_path / "captured.ndjson",
                       upsert("Primeira", message_id="B1"),
                       '{"event": "messages.upsert", "instance": ',
                       upsert("Terceira", message_id="B3", chat=OTHER))
    result = hf("replay", str(path))

    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = {line.split(": ")[0]: line for line in result.stdout.splitlines() if line.startswith(str(path))}
    assert "reply_queued" in lines[f"{path}:1"] and "reply_queued" in lines[f"{path}:3"]
    assert ": error not valid JSON" in lines[f"{path}:2"]
    assert {a: row["count"] for a, row in table_rows(result.stdout).items()} == {"reply_queued": "2", "error": "1"}
    assert {s["chat_id"] for s in sessions(hf)["sessions"]} == {CUSTOMER, OTHER}


def test_replay_the_same_file_twice_answers_duplicate(hf, tmp_path):
    add_tenant(hf)
    path = write_json(tmp_path / "body.json", upsert("Olá", message_id="TWICE"))
    assert ": reply_queued " in ok(hf("replay", str(path))).stdout
    assert ": duplicate " in ok(hf("replay", str(path))).stdout

    detail = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))
    assert [m["message_id"] for m in detail["messages"]] == ["TWICE"]


def test_replay_instance_option_replays_captured_bodies_as_another_instance(hf, tmp_path):
    add_tenant(hf, "padaria")
    path = write_json(tmp_path / "body.json", upsert("Olá", instance="captured-on-staging"))

    unknown = hf("replay", str(path))
    assert unknown.exit_code == 1
    assert ": error unknown instance 'captured-on-staging'" in unknown.stdout

    assert ": reply_queued " in ok(hf("replay", str(path), "--instance", "padaria")).stdout
    assert [(s["instance"], s["chat_id"]) for s in sessions(hf)["sessions"]] == [("padaria", CUSTOMER)]


def test_replay_unknown_instance_is_an_error_action_that_says_how_to_fix_it(hf, tmp_path):
    result = replay(hf, tmp_path, upsert("Olá", instance="ghost"))

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    line = result.stdout.strip()
    assert line.startswith(f"{tmp_path / 'body.json'}: error ")
    assert "unknown instance 'ghost'" in line and "hybridflow tenants add ghost" in line
    assert sessions(hf)["total"] == 0


def test_replay_unknown_instance_suggests_a_command_that_can_be_pasted(hf, tmp_path):
    shutil.copy(FIXTURES / "v2-messages-upsert-audio-ptt.json", tmp_path / "body.json")
    result = hf("replay", str(tmp_path / "body.json"))
    assert result.exit_code == 1
    assert "hybridflow tenants add 'Carlos Gabriel'" in result.stdout


@pytest.mark.parametrize(
    ("content", "fragment"),
    [("[1, 2, 3]", "not a JSON object"),
     ('{"instance": "test-instance", "data": {}}', "no 'event'"),
     ('{"event": "messages.upsert", "data": {}}', "no 'instance'")],
    ids=["array", "no event", "no instance"],
)
def test_replay_a_body_it_cannot_use_is_an_error_action(hf, tmp_path, content, fragment):
    add_tenant(hf)
    (tmp_path / "body.json").write_text(content, encoding="utf-8")
    result = hf("replay", str(tmp_path / "body.json"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert ": error " in result.stdout and fragment in result.stdout


def test_replay_a_path_it_cannot_read_is_a_usage_error(hf, tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n\n", encoding="utf-8")
    assert "holds no JSON" in one_line_error(hf("replay", str(tmp_path / "empty.jsonl")))
    assert hf("replay", str(tmp_path / "empty.jsonl")).exit_code == 2

    missing = hf("replay", str(tmp_path / "missing.json"))
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_replay_json_of_one_file_is_one_document(hf, tmp_path):
    add_tenant(hf)
    result = ok(hf("replay", str(write_json(tmp_path / "body.json", upsert("Olá", message_id="J1"))), "--json"))
    assert json.loads(result.stdout) == {"origin": str(tmp_path / "body.json"), "action": "reply_queued",
                                         "instance": INSTANCE, "chat_id": CUSTOMER, "message_id": "J1",
                                         "paused": False}


def test_replay_json_of_many_payloads_parses_and_has_no_table(hf, tmp_path):
    add_tenant(hf)
    path = write_lines(tmp_path / "p.jsonl", upsert("Um", message_id="M1"), "nope", owner("Dois", message_id="M2"))
    result = hf("replay", str(path), "--json")
    assert result.exit_code == 1
    documents = json_documents(result.stdout)
    assert [(d["origin"], d["action"]) for d in documents] == [
        (f"{path}:1", "reply_queued"), (f"{path}:2", "error"), (f"{path}:3", "paused")]
    assert "not valid JSON" in documents[1]["error"]
    assert "┃" not in result.stdout


def test_replay_json_prints_one_json_document_per_line_as_its_help_says(hf, tmp_path):
    add_tenant(hf)
    path = write_lines(tmp_path / "p.jsonl", upsert("Um", message_id="M1"), upsert("Dois", message_id="M2"))
    result = ok(hf("replay", str(path), "--json"))
    assert "JSON lines" in hf("replay", "--help").stdout
    assert [json.loads(line)["message_id"] for line in result.stdout.splitlines()] == ["M1", "M2"]


def test_replay_dry_run_shows_the_model_reply_and_keeps_nothing(hf, tmp_path, peers):
    add_tenant(hf)
    path = write_json(tmp_path / "body.json", upsert("Vocês abrem domingo?", message_id="DRY"))

    result = ok(hf("replay", str(path), "--dry-run", ollama_host=peers.ollama.url))

    assert f"{path}: would reply" in result.stdout
    assert "reply: Echo: Vocês abrem domingo?" in result.stdout
    asked = peers.ollama.requests[-1]["messages"]
    assert asked[0] == {"role": "system", "content": PROMPT}
    assert asked[-1]["content"] == "Vocês abrem domingo?"
    assert sessions(hf)["total"] == 0
    assert ": reply_queued " in ok(hf("replay", str(path))).stdout  # not a duplicate: nothing was kept


def test_replay_dry_run_json_carries_the_reply(hf, tmp_path, peers):
    add_tenant(hf)
    path = write_json(tmp_path / "body.json", upsert("Tem pão?", message_id="DRY2"))
    document = json.loads(ok(hf("replay", str(path), "--dry-run", "--json", ollama_host=peers.ollama.url)).stdout)
    assert (document["action"], document["dry_run"], document["reply"]) == ("reply_queued", True, "Echo: Tem pão?")
    assert sessions(hf)["total"] == 0


def test_replay_dry_run_with_ollama_down_reports_it_and_keeps_nothing(hf, tmp_path):
    add_tenant(hf)
    down = closed_port_url()
    path = write_json(tmp_path / "body.json", upsert("Olá", message_id="DOWN"))
    result = hf("replay", str(path), "--dry-run", ollama_host=down)

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert f": error cannot connect to Ollama at {down}" in result.stdout
    assert sessions(hf)["total"] == 0


def test_replay_dry_run_of_an_owner_message_needs_no_model_and_pauses_nothing(hf, tmp_path):
    add_tenant(hf)
    path = write_json(tmp_path / "owner.json", owner("Eu respondo", message_id="O1"))
    result = ok(hf("replay", str(path), "--dry-run", ollama_host=closed_port_url()))
    assert result.stdout.startswith(f"{path}: would pause ") and "reason=human_message" in result.stdout
    assert "reply:" not in result.stdout
    assert sessions(hf)["total"] == 0


def test_replay_many_payloads_prints_every_line_and_a_clean_summary(hf, tmp_path):
    add_tenant(hf)
    path = write_lines(tmp_path / "many.jsonl", *[upsert(f"Mensagem {n}", chat=chat(n)) for n in range(30)])
    result = ok(hf("replay", str(path)))
    lines = result.stdout.splitlines()
    assert len([line for line in lines if line.startswith(f"{path}:")]) == 30
    assert table_rows(result.stdout)["reply_queued"]["count"] == "30"
    assert "replaying" not in result.stdout and "\x1b" not in result.stdout  # no progress bar left in piped output


# --- sessions list ------------------------------------------------------------------------------------------------


def test_sessions_list_table_shows_each_chat_with_its_state(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá", chat=OTHER, push_name="João"), upsert("Oi", push_name="Maria"),
              owner("Oi Maria!"), name="p.jsonl"))

    result = ok(hf("sessions", "list"))
    rows = lines_of_table(result.stdout)
    assert list(rows[0]) == ["instance", "chat", "customer", "state", "reason", "resumes in", "last message"]
    assert [(r["chat"], r["customer"], r["state"], r["reason"]) for r in rows] == [
        (CUSTOMER, "Maria", "paused", "human_message"),  # most recent first; the owner's name is not the customer's
        (OTHER, "João", "active", ""),
    ]
    assert rows[0]["instance"] == rows[1]["instance"] == INSTANCE
    assert re.fullmatch(r"1 h 59 min|2 h", rows[0]["resumes in"]), rows[0]
    assert rows[1]["resumes in"] == "-"
    assert all(re.fullmatch(r"\d+ s ago", r["last message"]) for r in rows), rows
    assert "2 of 2 sessions (page 1 of 1)" in result.stdout


def test_sessions_list_filters_paused_and_instance(hf, tmp_path):
    add_tenant(hf)
    add_tenant(hf, "acougue")
    ok(replay(hf, tmp_path, upsert("Olá", chat=OTHER), upsert("Oi"), owner("Já vou"),
              upsert("Bom dia", instance="acougue", chat=chat(7)), name="p.jsonl"))

    assert sessions(hf)["total"] == 3
    paused = sessions(hf, "--paused")
    assert (paused["total"], [s["chat_id"] for s in paused["sessions"]]) == (1, [CUSTOMER])
    assert [r["chat"] for r in lines_of_table(ok(hf("sessions", "list", "--paused")).stdout)] == [CUSTOMER]
    other = sessions(hf, "--instance", "acougue")
    assert [(s["instance"], s["chat_id"]) for s in other["sessions"]] == [("acougue", chat(7))]
    assert {r["instance"] for r in lines_of_table(ok(hf("sessions", "list", "-i", INSTANCE)).stdout)} == {INSTANCE}
    assert sessions(hf, "--paused", "--instance", "acougue") == {"total": 0, "page": 1, "pages": 0, "limit": 50,
                                                                 "sessions": []}
    assert ok(hf("sessions", "list", "--paused", "-i", "acougue")).stdout == "No sessions match --instance acougue --paused.\n"


def test_sessions_list_since_keeps_recently_active_chats(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Antiga", chat=OTHER), name="old.json"))
    time.sleep(1.5)  # the scenario: the first chat must be more than 1 s old (on the CLI's real clock)
    ok(replay(hf, tmp_path, upsert("Nova"), name="new.json"))

    assert [s["chat_id"] for s in sessions(hf, "--since", "1s")["sessions"]] == [CUSTOMER]
    assert [s["chat_id"] for s in sessions(hf, "--since", "1h")["sessions"]] == [CUSTOMER, OTHER]
    assert "--since" in one_line_error(hf("sessions", "list", "--since", "yesterday"))
    assert hf("sessions", "list", "--since", "yesterday").exit_code == 2


def test_sessions_list_pages_through_many_sessions(hf, tmp_path):
    add_tenant(hf)
    chats = [chat(n) for n in range(60)]
    ok(replay(hf, tmp_path, *[upsert(f"Oi {n}", chat=c) for n, c in enumerate(chats)], name="many.jsonl"))

    pages = [sessions(hf, "--limit", "25", "--page", str(page)) for page in (1, 2, 3, 4)]
    assert [p["total"] for p in pages] == [60] * 4
    assert [len(p["sessions"]) for p in pages] == [25, 25, 10, 0]
    listed = [s["chat_id"] for p in pages for s in p["sessions"]]
    assert listed == list(reversed(chats))  # most recently active first, no chat twice, none missing

    table = ok(hf("sessions", "list", "--limit", "25", "--page", "3")).stdout
    assert [r["chat"] for r in lines_of_table(table)] == list(reversed(chats))[50:]
    assert "10 of 60 sessions (page 3 of 3)" in table
    past = ok(hf("sessions", "list", "--limit", "25", "--page", "4")).stdout
    assert past == "Page 4 is past the end: 60 sessions make 3 pages of 25 (the last is --page 3).\n"
    assert (pages[3]["page"], pages[3]["pages"]) == (4, 3)
    assert hf("sessions", "list", "--limit", "0").exit_code == 2


def test_sessions_list_empty(hf):
    ok(hf("migrate"))  # an empty database (listing never creates one: tests/db/test_readonly_commands.py)
    assert "No sessions yet" in ok(hf("sessions", "list")).stdout
    assert sessions(hf) == {"total": 0, "page": 1, "pages": 0, "limit": 50, "sessions": []}


def test_sessions_list_says_no_match_when_a_filter_matches_nothing(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá")))
    output = ok(hf("sessions", "list", "--paused")).stdout
    assert "No sessions yet" not in output and "No sessions match" in output


# --- sessions show ------------------------------------------------------------------------------------------------


def test_sessions_show_prints_the_transcript_and_the_pause_history(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Vocês abrem domingo?", message_id="C1"),
              owner("Oi Maria, aqui é o João!", message_id="O1"), upsert("Obrigada!", message_id="C2"),
              name="p.jsonl"))
    ok(hf("sessions", "resume", INSTANCE, CUSTOMER))

    output = ok(hf("sessions", "show", INSTANCE, "5511987654321")).stdout  # a bare phone number works too
    assert f"{INSTANCE} · {CUSTOMER} · Maria" in output
    assert "state: active" in output
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d\d:\d\d"  # local time with its offset
    history = [line.split() for line in output.split("pause / resume history")[1].split("transcript")[0].splitlines()
               if line.strip()]
    assert all(re.match(rf"  {stamp} ", line) for line in output.split("pause / resume history")[1]
               .split("transcript")[0].splitlines() if line.strip())
    assert [(h[3], h[4], h[6]) for h in history] == [("paused", "human_message", "owner"),
                                                    ("resumed", "operator", "cli")]
    assert all(re.search(r"\(\d+ s ago\)$", " ".join(h)) for h in history), history
    transcript = output.split("transcript")[1].split("replies")[0].splitlines()
    assert all(re.match(rf"  {stamp} ", line) for line in transcript if ": " in line)
    said = [re.sub(r"\s+\(\w+\)$", "", line.split(" ", 5)[-1]).strip() for line in transcript if ": " in line]
    assert said == ["customer: Vocês abrem domingo?", "owner: Oi Maria, aqui é o João!", "customer: Obrigada!"]
    assert "(reply_queued)" in output and "(paused)" in output and "(ignored_paused)" in output
    assert "replies" in output and "queued" in output


def test_sessions_show_json(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá", message_id="C1"), owner("Oi!", message_id="O1"), name="p.jsonl"))

    detail = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))
    assert (detail["instance"], detail["chat_id"], detail["is_paused"], detail["pause_reason"]) == (
        INSTANCE, CUSTOMER, True, "human_message")
    assert [(m["direction"], m["text"], m["action"]) for m in detail["messages"]] == [
        ("customer", "Olá", "reply_queued"), ("owner", "Oi!", "paused")]
    assert [(e["change"], e["reason"], e["message_id"]) for e in detail["events"]] == [
        ("paused", "human_message", "O1")]
    resumes_at = datetime.fromisoformat(detail["resumes_at"])
    assert timedelta(hours=1, minutes=59) < resumes_at - datetime.now(UTC) <= timedelta(hours=2)
    assert [r["trigger_message_id"] for r in detail["replies"]] == ["C1"]


def test_sessions_show_limit_keeps_the_latest_messages(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, *[upsert(f"Mensagem {n}", message_id=f"M{n}") for n in range(5)], name="p.jsonl"))
    detail = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--limit", "2", "--json"))
    assert [m["text"] for m in detail["messages"]] == ["Mensagem 3", "Mensagem 4"]


# --- sessions pause / resume --------------------------------------------------------------------------------------


def test_pause_without_for_holds_until_resumed_by_hand(hf, tmp_path):
    add_tenant(hf, INSTANCE, "--resume-after", "1s")
    ok(replay(hf, tmp_path, upsert("Olá")))

    result = ok(hf("sessions", "pause", INSTANCE, CUSTOMER))
    assert "paused (operator" in result.stdout and "until resumed" in result.stdout
    view = as_json(hf("sessions", "pause", INSTANCE, CUSTOMER, "--json"))
    assert (view["is_paused"], view["pause_reason"], view["paused_by"], view["resumes_at"]) == (
        True, "operator", "cli", None)
    row = lines_of_table(ok(hf("sessions", "list")).stdout)[0]
    assert (row["state"], row["reason"], row["resumes in"]) == ("paused", "operator", "manual")

    time.sleep(1.2)  # the scenario: --resume-after 1s has passed, yet an operator pause must still hold
    assert ok(hf("sweep")).stdout == ""
    assert ": ignored_paused " in ok(replay(hf, tmp_path, upsert("Alô?"), name="later.json")).stdout

    resumed = ok(hf("sessions", "resume", INSTANCE, CUSTOMER))
    assert f"{INSTANCE} · {CUSTOMER}: active" in resumed.stdout
    assert ": reply_queued " in ok(replay(hf, tmp_path, upsert("E agora?"), name="after.json")).stdout
    events = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))["events"]
    assert [(e["change"], e["reason"], e["actor"]) for e in events] == [
        ("paused", "operator", "cli"), ("paused", "operator", "cli"), ("resumed", "operator", "cli")]


def test_pause_for_a_duration_sets_when_it_resumes(hf, tmp_path):
    add_tenant(hf)
    view = as_json(hf("sessions", "pause", INSTANCE, "5511987654321", "--for", "30m", "--json"))
    assert view["chat_id"] == CUSTOMER and view["is_paused"]
    remaining = datetime.fromisoformat(view["resumes_at"]) - datetime.now(UTC)
    assert timedelta(minutes=29) < remaining <= timedelta(minutes=30)
    row = lines_of_table(ok(hf("sessions", "list")).stdout)[0]
    assert (row["chat"], row["state"]) == (CUSTOMER, "paused")
    assert re.fullmatch(r"29 min|30 min", row["resumes in"]), row


def test_pause_for_30m_says_it_resumes_in_30m(hf):
    add_tenant(hf)
    output = ok(hf("sessions", "pause", INSTANCE, CUSTOMER, "--for", "30m")).stdout
    assert re.search(r"resumes \d{4}-\d\d-\d\d \d\d:\d\d [+-]\d\d:\d\d \(in 30 min\)", output), output


def test_pause_for_a_short_time_is_resumed_by_the_sweep(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá")))
    ok(hf("sessions", "pause", INSTANCE, CUSTOMER, "--for", "1s"))
    time.sleep(1.2)  # the scenario: the 1 s pause runs out on the CLI's real clock, then the sweep is due
    assert ok(hf("sweep")).stdout == f"resumed {INSTANCE} {CUSTOMER}\n"
    assert sessions(hf, "--paused")["total"] == 0


def test_pause_with_a_bad_duration_is_a_usage_error_and_pauses_nothing(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá")))
    for bad in ("soon", "-5m", "2 hours"):
        result = hf("sessions", "pause", INSTANCE, CUSTOMER, "--for", bad)
        assert result.exit_code == 2, (bad, result.output)
        assert "--for" in one_line_error(result)
    assert sessions(hf, "--paused")["total"] == 0


def test_pause_before_the_first_message_creates_the_session(hf, tmp_path):
    add_tenant(hf)
    ok(hf("sessions", "pause", INSTANCE, "+55 11 98765-4321"))
    assert [(s["chat_id"], s["is_paused"]) for s in sessions(hf)["sessions"]] == [(CUSTOMER, True)]
    assert ": ignored_paused " in ok(replay(hf, tmp_path, upsert("Olá"))).stdout


def test_resume_json_and_resuming_an_active_chat_records_nothing(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá")))
    view = as_json(hf("sessions", "resume", INSTANCE, CUSTOMER, "--json"))
    assert (view["chat_id"], view["is_paused"], view["pause_reason"]) == (CUSTOMER, False, None)
    assert as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))["events"] == []


@pytest.mark.parametrize(
    ("args", "fragments", "code"),
    [
        (("show", INSTANCE, "5511000000000"), ("no session", "5511000000000@s.whatsapp.net"), 1),
        (("resume", INSTANCE, "5511000000000"), ("no session", "5511000000000@s.whatsapp.net"), 1),
        (("show", "ghost", CUSTOMER), ("unknown instance 'ghost'", "tenants add"), 1),
        (("pause", "ghost", CUSTOMER), ("unknown instance 'ghost'",), 1),
        (("resume", "ghost", CUSTOMER), ("unknown instance 'ghost'",), 1),
        (("show", INSTANCE, "not-a-chat"), ("not a chat id or phone number", "not-a-chat"), 2),
        (("pause", INSTANCE, "abc@@x"), ("not a chat id or phone number",), 2),
    ],
    ids=["show unknown chat", "resume unknown chat", "show unknown instance", "pause unknown instance",
         "resume unknown instance", "show bad chat", "pause bad chat"],
)
def test_sessions_errors_are_one_line_on_stderr(hf, tmp_path, args, fragments, code):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá")))
    result = hf("sessions", *args)
    assert result.exit_code == code, result.output
    error = one_line_error(result)
    for fragment in fragments:
        assert fragment in error
    assert result.stdout == ""


# --- tenants remove with history ----------------------------------------------------------------------------------


def test_removing_a_tenant_with_history_needs_delete_history(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá"), owner("Oi!"), name="p.jsonl"))

    refused = hf("tenants", "remove", INSTANCE, "--yes")
    assert refused.exit_code == 1
    error = one_line_error(refused)
    assert "has history (2 messages, 1 sessions)" in error and "--delete-history" in error
    assert sessions(hf)["total"] == 1 and ok(hf("tenants", "show", INSTANCE))

    removed = ok(hf("tenants", "remove", INSTANCE, "--yes", "--delete-history"))
    assert f"tenant {INSTANCE} removed (2 messages, 1 sessions deleted)" in removed.stdout
    assert sessions(hf)["total"] == 0
    assert "unknown instance" in hf("replay", str(tmp_path / "p.jsonl")).stdout



def test_removing_a_tenant_can_keep_its_history_for_when_it_comes_back(hf, tmp_path):
    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá"), owner("Oi!"), name="p.jsonl"))
    assert "--keep-history" in one_line_error(hf("tenants", "remove", INSTANCE, "--yes"))
    assert hf("tenants", "remove", INSTANCE, "--yes", "--keep-history", "--delete-history").exit_code == 2

    removed = ok(hf("tenants", "remove", INSTANCE, "--yes", "--keep-history"))
    assert "history kept" in removed.stdout
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}
    assert sessions(hf)["total"] == 0
    assert "unknown instance" in hf("replay", str(tmp_path / "p.jsonl")).stdout

    add_tenant(hf)  # the same instance again: its chats, pause and messages are back
    assert sessions(hf)["total"] == 1
    assert "duplicate" in ok(hf("replay", str(tmp_path / "p.jsonl"))).stdout

# --- sweep --------------------------------------------------------------------------------------------------------


NOTHING_SWEPT = {"resumed": [], "retention": {"raw_cleared": 0, "messages_deleted": 0, "jobs_deleted": 0,
                                              "events_deleted": 0, "tombstones_pruned": 0}}


def test_sweep_with_nothing_to_do_is_quiet(hf, tmp_path):
    result = ok(hf("sweep"))
    assert (result.stdout, result.stderr) == ("", "")
    assert as_json(hf("sweep", "--json")) == NOTHING_SWEPT

    add_tenant(hf)
    ok(replay(hf, tmp_path, upsert("Olá"), owner("Oi!"), name="p.jsonl"))  # paused for 2 h: not due yet
    assert ok(hf("sweep")).stdout == ""
    assert sessions(hf, "--paused")["total"] == 1


def test_sweep_prints_what_it_resumed_once(hf, tmp_path):
    add_tenant(hf, INSTANCE, "--resume-after", "1s")
    ok(replay(hf, tmp_path, upsert("Olá"), owner("Oi Maria!"), upsert("Olá", chat=OTHER), owner("Oi!", chat=OTHER),
              upsert("Sem pausa", chat=chat(3)), name="p.jsonl"))
    assert sessions(hf, "--paused")["total"] == 2
    time.sleep(1.2)  # the scenario: resume_after (1 s) runs out on the CLI's real clock, then the sweep is due

    result = ok(hf("sweep"))
    assert sorted(result.stdout.splitlines()) == sorted([f"resumed {INSTANCE} {CUSTOMER}",
                                                         f"resumed {INSTANCE} {OTHER}"])
    assert ok(hf("sweep")).stdout == ""
    assert sessions(hf, "--paused")["total"] == 0
    events = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))["events"]
    assert [(e["change"], e["reason"], e["actor"]) for e in events] == [
        ("paused", "human_message", "owner"), ("resumed", "auto_resume", "sweep")]


def test_sweep_json_lists_the_resumed_sessions(hf, tmp_path):
    add_tenant(hf, INSTANCE, "--resume-after", "1s")
    ok(replay(hf, tmp_path, upsert("Olá"), owner("Oi Maria!"), name="p.jsonl"))
    time.sleep(1.2)  # the scenario: resume_after (1 s) runs out on the CLI's real clock, then the sweep is due
    resumed = as_json(hf("sweep", "--json"))["resumed"]
    assert [(v["instance"], v["chat_id"], v["is_paused"], v["push_name"]) for v in resumed] == [
        (INSTANCE, CUSTOMER, False, "Maria")]
    assert as_json(hf("sweep", "--json")) == NOTHING_SWEPT


# --- migrate ------------------------------------------------------------------------------------------------------


def test_migrate_prints_the_schema_version_and_can_run_again(hf):
    assert ok(hf("migrate")).stdout.strip() == f"database schema is at version {SCHEMA_VERSION}"
    assert ok(hf("migrate")).stdout.strip() == f"database schema is at version {SCHEMA_VERSION}"
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}


# --- doctor -------------------------------------------------------------------------------------------------------


def checklist(output: str) -> dict[str, tuple[bool, str]]:
    """The doctor's lines: {check name: (passed, detail)}."""
    found = {}
    for line in output.splitlines():
        match = re.fullmatch(r"([✓✗]) (.+?): (.*)", line)
        assert match, f"not a checklist line: {line!r}"
        found[match[2]] = (match[1] == "✓", match[3])
    return found


def test_doctor_with_nothing_set_up_fails_and_lists_what_is_wrong(isolated):
    database = isolated / "hybridflow.db"
    env = {"HYBRIDFLOW_SECRET_KEY": "", "HYBRIDFLOW_OLLAMA_HOST": closed_port_url()}
    result = invoke("--database-url", f"sqlite:///{database}", "doctor", env=env)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    checks = checklist(result.stdout)
    assert checks["config"][0]
    failing = {name for name, (passed, _) in checks.items() if not passed}
    assert failing == {"secret key", "database", "ollama model llama3.2"}
    assert "hybridflow keys generate" in checks["secret key"][1]
    assert f"no database at {database}" in checks["database"][1] and "hybridflow migrate" in checks["database"][1]
    assert "cannot connect to Ollama" in checks["ollama model llama3.2"][1]
    assert not database.exists()  # doctor creates nothing

    report = json.loads(invoke("--database-url", f"sqlite:///{database}", "doctor", "--json", env=env).stdout)
    assert report["ok"] is False
    assert {c["name"] for c in report["checks"] if not c["ok"]} == failing


def test_doctor_on_a_database_without_the_schema_says_so_and_leaves_it(postgres_url):
    env = {"HYBRIDFLOW_OLLAMA_HOST": closed_port_url()}
    for _ in range(2):  # doctor does not create the schema
        checks = checklist(invoke("--database-url", postgres_url, "doctor", env=env).stdout)
        assert checks["database"][0] is False and "no HybridFlow schema" in checks["database"][1]


def test_doctor_with_a_schema_but_no_tenant_says_to_add_one(hf, peers):
    ok(hf("migrate"))
    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 1
    checks = checklist(result.stdout)
    assert checks["database"] == (True, checks["database"][1])
    assert f"schema version {SCHEMA_VERSION}" in checks["database"][1]
    assert checks["tenants"][0] is False and "tenants add" in checks["tenants"][1]
    assert checks["ollama model llama3.2"][0] is True


def test_doctor_all_green_with_a_working_evolution_and_ollama(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--api-key", EVOLUTION_KEY,
               "--webhook-secret", "s3cret")
    peers.evolution.webhook = {"url": "https://hf.example.com/webhooks/evolution", "enabled": True,
                               "headers": {"Authorization": "Bearer s3cret"}, "webhookByEvents": False,
                               "webhookBase64": False, "events": ["MESSAGES_UPSERT", "SEND_MESSAGE"]}
    result = ok(hf("doctor", ollama_host=peers.ollama.url))

    checks = checklist(result.stdout)
    assert all(passed for passed, _ in checks.values()), checks
    assert set(checks) == {"config", "secret key", "database", "storage", "ollama model llama3.2", "tenant padaria",
                           "webhook padaria", "phone commands padaria"}
    assert "owner's number is known" in checks["phone commands padaria"][1]  # not learned yet: commands wait
    assert "connected, key accepted" in checks["tenant padaria"][1]
    assert "shared secret" in checks["tenant padaria"][1]
    asked = [r for r in peers.evolution.requests if r.path == "/instance/connectionState/padaria"]
    assert asked and asked[-1].headers["apikey"] == EVOLUTION_KEY

    report = as_json(hf("doctor", "--json", ollama_host=peers.ollama.url))
    assert report["ok"] is True
    assert [c["name"] for c in report["checks"]] == ["config", "secret key", "database", "storage",
                                                    "ollama model llama3.2", "tenant padaria", "webhook padaria",
                                                    "phone commands padaria"]
    assert all(c["ok"] for c in report["checks"])


def test_doctor_names_the_tenant_whose_instance_is_not_connected(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--api-key", EVOLUTION_KEY)
    add_tenant(hf, "acougue", "--evolution-url", peers.evolution.url, "--api-key", EVOLUTION_KEY)
    peers.evolution.states["padaria"] = "close"

    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 1
    checks = checklist(result.stdout)
    assert checks["tenant padaria"][0] is False
    assert "'close'" in checks["tenant padaria"][1] and "reconnect" in checks["tenant padaria"][1]
    assert checks["tenant acougue"][0] is True
    report = json.loads(hf("doctor", "--json", ollama_host=peers.ollama.url).stdout)
    assert report["ok"] is False
    assert [c["name"] for c in report["checks"] if not c["ok"]] == ["tenant padaria"]


def test_doctor_names_the_tenant_with_a_wrong_api_key(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--api-key", "not-the-key")
    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 1
    checks = checklist(result.stdout)
    assert checks["tenant padaria"][0] is False
    assert "401" in checks["tenant padaria"][1]
    assert "not-the-key" not in result.output


def test_doctor_names_a_tenant_without_api_key_and_a_model_not_pulled(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--model", "qwen2.5:7b")
    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 1
    checks = checklist(result.stdout)
    assert checks["tenant padaria"][0] is False and "--api-key" in checks["tenant padaria"][1]
    assert checks["ollama model qwen2.5:7b"][0] is False
    assert "ollama pull qwen2.5:7b" in checks["ollama model qwen2.5:7b"][1]
    assert "padaria" in checks["ollama model qwen2.5:7b"][1]


def test_doctor_with_the_database_down_fails_without_a_traceback(hf):
    port = closed_port_url().rsplit(":", 1)[1]
    result = hf("doctor", database_url=f"postgresql://hf:pw@127.0.0.1:{port}/hf", ollama_host=closed_port_url())
    assert result.exit_code == 1 and "Traceback" not in result.output
    checks = checklist(result.stdout)
    assert checks["database"][0] is False and "database unavailable" in checks["database"][1]
    assert "tenants" not in checks  # nothing to say about tenants without a database


def test_doctor_with_evolution_unreachable_names_the_tenant(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", closed_port_url(), "--api-key", EVOLUTION_KEY)
    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert checklist(result.stdout)["tenant padaria"][0] is False
