"""`replay` says what it does: an empty directory, what a dry run *would* do (a stored message's reply included),
the summary table of a single file, and a question before a real replay messages customers. On both backends."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from typer.testing import CliRunner, Result

from hybridflow.cli import app
from hybridflow.crypto import generate_key
from tests.db.test_cli_ops import EVOLUTION_KEY, INSTANCE, OTHER, PeersInThread, add_tenant, sessions, write_json, \
    write_lines
from tests.support.builders import CUSTOMER, owner, upsert
from tests.support.cli import json_documents, ok, one_line_error, table_rows

pytestmark = pytest.mark.usefixtures("isolated")


@pytest.fixture
def peers():  # type: ignore[no-untyped-def]
    with PeersInThread() as running:
        yield running


@pytest.fixture
def at_terminal(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """`hybridflow ARGS` as typed at a terminal, answering ``input`` to any question."""
    monkeypatch.setattr("hybridflow.cli.ops._interactive", lambda: True)
    env = {"COLUMNS": "200", "HYBRIDFLOW_DATABASE_URL": database_url, "HYBRIDFLOW_SECRET_KEY": generate_key()}

    def run(*args: str, input: str | None = None) -> Result:
        return CliRunner(env=env).invoke(app, list(args), input=input)

    return run


# --- what is replayed ---------------------------------------------------------------------------------------------


def test_an_empty_directory_says_so_and_exits_1(hf, tmp_path):
    (tmp_path / "captured").mkdir()
    (tmp_path / "captured" / "notes.txt").write_text("not a body", encoding="utf-8")
    result = hf("replay", str(tmp_path / "captured"))
    assert result.exit_code == 1
    error = one_line_error(result)
    assert "holds no webhook bodies" in error and str(tmp_path / "captured") in error
    assert result.stdout == ""


def test_a_single_file_gets_the_summary_table(hf, tmp_path):
    add_tenant(hf)
    path = write_json(tmp_path / "body.json", upsert("Olá", message_id="ONE"))
    result = ok(hf("replay", str(path)))
    assert result.stdout.splitlines()[0] == f"{path}: reply_queued chat_id={CUSTOMER} message_id=ONE"
    assert {action: row["count"] for action, row in table_rows(result.stdout).items()} == {"reply_queued": "1"}
    assert "┃" not in ok(hf("replay", str(path), "--json")).stdout  # scripts get JSON lines only


# --- dry run ------------------------------------------------------------------------------------------------------


def test_a_dry_run_says_what_would_happen(hf, tmp_path, peers):
    add_tenant(hf)
    path = write_lines(tmp_path / "p.jsonl", upsert("Tem pão?", message_id="D1"),
                       owner("Já respondo", message_id="D2", chat=OTHER))
    result = ok(hf("replay", str(path), "--dry-run", ollama_host=peers.ollama.url))

    lines = [line for line in result.stdout.splitlines() if line.startswith(f"{path}:")]
    assert lines[0] == f"{path}:1: would reply chat_id={CUSTOMER} message_id=D1"
    assert lines[1].startswith(f"{path}:2: would pause ") and "reason=human_message" in lines[1]
    assert "reply: Echo: Tem pão?" in result.stdout
    assert {a: row["count"] for a, row in table_rows(result.stdout).items()} == {"would reply": "1", "would pause": "1"}
    assert sessions(hf)["total"] == 0

    documents = json_documents(ok(hf("replay", str(path), "--dry-run", "--json", ollama_host=peers.ollama.url)).stdout)
    assert [(d["action"], d["dry_run"], d["would"]) for d in documents] == [
        ("reply_queued", True, "reply"), ("paused", True, "pause")]


def test_a_dry_run_in_a_paused_chat_would_ignore_it(hf, tmp_path, peers):
    add_tenant(hf)
    ok(hf("sessions", "pause", INSTANCE, CUSTOMER))
    path = write_json(tmp_path / "body.json", upsert("Alô?", message_id="P1"))
    result = ok(hf("replay", str(path), "--dry-run", ollama_host=peers.ollama.url))
    assert result.stdout.startswith(f"{path}: would ignore: chat paused ")
    assert "reply:" not in result.stdout


def test_a_dry_run_of_a_stored_message_still_shows_the_reply(hf, tmp_path, peers):
    add_tenant(hf)
    stored = write_lines(tmp_path / "stored.jsonl", upsert("Vocês abrem domingo?", message_id="S1"),
                         upsert("E sábado?", message_id="S2"), owner("Abrimos sim", message_id="S3"))
    ok(hf("replay", str(stored)))  # the tenant has no API key: nothing to ask
    again = write_json(tmp_path / "again.json", upsert("Vocês abrem domingo?", message_id="S1"))

    result = ok(hf("replay", str(again), "--dry-run", ollama_host=peers.ollama.url))

    assert result.stdout.startswith(f"{again}: already stored chat_id={CUSTOMER} message_id=S1")
    assert "reply: Echo: Vocês abrem domingo?" in result.stdout
    asked = peers.ollama.requests[-1]["messages"]
    assert [m["content"] for m in asked[1:]] == ["Vocês abrem domingo?"]  # the chat as it was up to that message
    document = json.loads(ok(hf("replay", str(again), "--dry-run", "--json", ollama_host=peers.ollama.url)).stdout)
    assert (document["action"], document["would"], document["reply"]) == (
        "duplicate", "already stored", "Echo: Vocês abrem domingo?")

    second = ok(hf("replay", str(stored), "--dry-run", ollama_host=peers.ollama.url)).stdout
    assert second.count("reply:") == 2  # the owner's message gets none
    asked = peers.ollama.requests[-1]["messages"]  # for S2: both customer messages, not the owner's later one
    assert asked[-1]["role"] == "user" and asked[-1]["content"].endswith("E sábado?")
    assert "Vocês abrem domingo?" in json.dumps(asked, ensure_ascii=False)
    assert "Abrimos sim" not in json.dumps(asked, ensure_ascii=False)
    assert sessions(hf, "--paused")["total"] == 1  # as the real replay left it


# --- a real replay asks before messaging customers ----------------------------------------------------------------


def test_a_real_replay_that_would_answer_customers_needs_yes_without_a_terminal(hf, tmp_path):
    add_tenant(hf, INSTANCE, "--api-key", EVOLUTION_KEY)
    path = write_lines(tmp_path / "p.jsonl", upsert("Oi", message_id="R1"), upsert("Tudo bem?", message_id="R2"),
                       upsert("Olá", message_id="R3", chat=OTHER), owner("Oi!", message_id="R4", chat=OTHER))

    refused = hf("replay", str(path))
    assert refused.exit_code == 2
    error = one_line_error(refused)
    # OTHER counts too: a running serve may answer R3 before the owner's R4 is replayed.
    assert "would answer 2 customer chats through Evolution (real messages)" in error and "--yes" in error
    assert refused.stdout == "" and sessions(hf)["total"] == 0

    result = ok(hf("replay", str(path), "--yes"))
    assert [line.split(": ")[1].split()[0] for line in result.stdout.splitlines() if line.startswith(f"{path}:")] == [
        "reply_queued", "reply_queued", "reply_queued", "paused"]
    assert sessions(hf)["total"] == 2


def test_distinct_chats_are_counted_and_a_dry_run_never_asks(hf, tmp_path, peers):
    add_tenant(hf, INSTANCE, "--api-key", EVOLUTION_KEY)
    path = write_lines(tmp_path / "p.jsonl", upsert("Oi", message_id="C1"), upsert("Olá", message_id="C2", chat=OTHER),
                       upsert("De novo", message_id="C3"))
    assert "would answer 2 customer chats" in one_line_error(hf("replay", str(path), "--json"))
    ok(hf("replay", str(path), "--dry-run", ollama_host=peers.ollama.url))


def test_nothing_to_answer_means_nothing_to_ask(hf, tmp_path):
    add_tenant(hf, INSTANCE, "--api-key", EVOLUTION_KEY)
    path = write_lines(tmp_path / "p.jsonl", upsert("Oi", message_id="N1"))
    assert "would answer 1 customer chat through" in one_line_error(hf("replay", str(path)))
    ok(hf("replay", str(path), "--yes"))
    assert ": duplicate " in ok(hf("replay", str(path))).stdout  # replaying what is stored answers no one
    owners = write_json(tmp_path / "owner.json", owner("Oi!", message_id="N2", chat=OTHER))
    assert ": paused " in ok(hf("replay", str(owners))).stdout


def test_a_tenant_without_an_api_key_sends_nothing_so_nothing_is_asked(hf, tmp_path):
    add_tenant(hf)
    ok(hf("replay", str(write_json(tmp_path / "body.json", upsert("Oi")))))


def test_at_a_terminal_it_asks_and_a_no_replays_nothing(at_terminal, tmp_path):
    ok(at_terminal("tenants", "add", INSTANCE, "--prompt", "Seja breve.", "--api-key", EVOLUTION_KEY))
    path = write_lines(tmp_path / "p.jsonl", upsert("Oi", message_id="T1"), upsert("Olá", message_id="T2", chat=OTHER))

    declined = at_terminal("replay", str(path), input="n\n")
    assert declined.exit_code == 1
    assert "Replay will answer 2 customer chats through Evolution (real messages). Continue?" in declined.stderr
    assert "nothing was replayed" in declined.stderr and "reply_queued" not in declined.stdout
    assert json.loads(ok(at_terminal("sessions", "list", "--json")).stdout)["total"] == 0

    accepted = ok(at_terminal("replay", str(path), input="y\n"))
    assert f"{path}:1: reply_queued" in accepted.stdout
    assert json.loads(ok(at_terminal("sessions", "list", "--json")).stdout)["total"] == 2
