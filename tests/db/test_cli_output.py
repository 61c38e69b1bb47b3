"""What the CLI prints, on SQLite and PostgreSQL: filters that match nothing, tables at 80 columns and piped, local
times with their offset, and one ``--json`` shape per command (README.md, "Output for scripts")."""

from __future__ import annotations

import importlib
import io
import json
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from rich.console import Console

from hybridflow.cli.app import clock, relative, span, when
from hybridflow.cli.sessions import resumes
from hybridflow.service.sessions import SessionView
from tests.support.builders import CUSTOMER, owner, upsert
from tests.support.cli import as_json, invoke, json_documents, lines_of_table, ok, one_line_error, table_rows

pytestmark = pytest.mark.usefixtures("isolated")
cli_app = importlib.import_module("hybridflow.cli.app")  # the module (hybridflow.cli.app is also the Typer app)

PROMPT = "Você é a assistente da Padaria Boa."
SAO_PAULO = ZoneInfo("America/Sao_Paulo")  # -03:00 all year
LONG_INSTANCE = "padaria-boa-centro-sul"
LONG_URL = "https://evolution-api.padaria-boa-centro-sul.example.com:8443/api/v2"
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? [+-]\d\d:\d\d"


def replay(hf, tmp_path: Path, *bodies: object):  # type: ignore[no-untyped-def]
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies), encoding="utf-8")
    return ok(hf("replay", str(path)))


# --- filters that match nothing -----------------------------------------------------------------------------------


def test_sessions_list_of_an_unknown_instance_names_it(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    for args in (("--instance", "padaira"), ("-i", "padaira", "--json")):
        result = hf("sessions", "list", *args)
        assert result.exit_code == 1 and result.stdout == ""
        error = one_line_error(result)
        assert "unknown instance 'padaira'" in error and "did you mean 'padaria'?" in error
    assert "unknown instance 'nope'" in one_line_error(hf("sessions", "list", "--instance", "nope"))


def test_sessions_list_of_a_known_instance_without_chats_is_not_an_error(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    assert ok(hf("sessions", "list", "-i", "padaria")).stdout == "No sessions match --instance padaria.\n"


def test_sessions_list_of_a_removed_instance_says_it_was_removed(hf, tmp_path):
    ok(hf("tenants", "add", "test-instance", "--prompt", PROMPT))
    replay(hf, tmp_path, upsert("Olá"))
    ok(hf("tenants", "remove", "test-instance", "--yes", "--keep-history"))
    error = one_line_error(hf("sessions", "list", "--instance", "test-instance"))
    assert "was removed" in error and "sessions show test-instance" in error


def test_a_page_past_the_end_says_so(hf, tmp_path):
    ok(hf("tenants", "add", "test-instance", "--prompt", PROMPT))
    replay(hf, tmp_path, upsert("Olá"))
    assert ok(hf("sessions", "list", "--page", "2")).stdout == (
        "Page 2 is past the end: 1 sessions make 1 page of 50 (the last is --page 1).\n")
    assert as_json(hf("sessions", "list", "--page", "2", "--json")) == {
        "sessions": [], "total": 1, "page": 2, "pages": 1, "limit": 50}


# --- tables: nothing users need is cut ----------------------------------------------------------------------------


def add_long_tenant(hf) -> None:  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", LONG_INSTANCE, "--prompt", PROMPT, "--evolution-url", LONG_URL,
          "--model", "qwen2.5:7b-instruct"))


def test_piped_tables_print_every_value_in_full_even_at_80_columns(hf, db, tmp_path):
    add_long_tenant(hf)
    replay(hf, tmp_path, upsert("Olá", instance=LONG_INSTANCE, push_name="Maria Aparecida dos Santos Oliveira"),
           owner("Oi!", instance=LONG_INSTANCE))

    tenants = ok(invoke("tenants", "list", env={"COLUMNS": "80", **db})).stdout  # as a shell sets COLUMNS
    row = table_rows(tenants)[LONG_INSTANCE]
    assert (row["evolution url"], row["model"]) == (LONG_URL, "qwen2.5:7b-instruct")
    assert "…" not in tenants

    listed = ok(invoke("sessions", "list", env={"COLUMNS": "80", **db})).stdout
    [row] = lines_of_table(listed)
    assert (row["instance"], row["chat"], row["customer"]) == (
        LONG_INSTANCE, CUSTOMER, "Maria Aparecida dos Santos Oliveira")
    assert "…" not in listed and max(len(line) for line in listed.splitlines()) > 80

    shown = ok(invoke("tenants", "show", LONG_INSTANCE, env={"COLUMNS": "80", **db})).stdout
    assert LONG_URL in shown


@pytest.fixture
def db(database_url: str) -> dict[str, str]:
    """The test database as the environment of a command run with ``invoke`` and variables of its own."""
    return {"HYBRIDFLOW_DATABASE_URL": database_url}


def terminal_rows(output: str) -> list[dict[str, str]]:
    """The physical lines of a rich table whose headers may wrap over several lines, as {header: cell}."""
    lines = output.splitlines()
    parts = [[c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line]
    headers = [" ".join(p for p in column if p) for column in zip(*parts, strict=True)]
    return [dict(zip(headers, [c.strip() for c in line.split("│")[1:-1]], strict=True))
            for line in lines if line.startswith("│")]


def on_a_terminal(monkeypatch: pytest.MonkeyPatch, width: int = 80) -> io.StringIO:
    """Tables go to an 80-column terminal (captured); everything else still goes to the runner's stdout."""
    screen = io.StringIO()
    monkeypatch.setattr(cli_app, "out", Console(file=screen, width=width, force_terminal=True, color_system=None,
                                                highlight=False))
    return screen


def test_at_80_columns_ids_names_and_numbers_stay_whole_and_the_url_folds(hf, monkeypatch):
    ok(hf("tenants", "add", "padaria-centro", "--prompt", PROMPT, "--evolution-url", LONG_URL, "--model", "qwen2.5:7b"))
    screen = on_a_terminal(monkeypatch)
    ok(hf("tenants", "list"))
    table = screen.getvalue()

    assert max(len(line) for line in table.splitlines()) <= 80
    assert "…" not in table
    rows = terminal_rows(table)
    assert rows[0]["instance"] == "padaria-centro" and rows[0]["model"] == "qwen2.5:7b"
    assert len(rows) > 1, "the URL folds over several lines"
    assert "".join(row["evolution url"] for row in rows) == LONG_URL


def test_at_80_columns_the_sessions_table_keeps_chat_ids_whole(hf, tmp_path, monkeypatch):
    add_long_tenant(hf)
    replay(hf, tmp_path, upsert("Olá", instance=LONG_INSTANCE, push_name="Maria Aparecida dos Santos Oliveira"),
           owner("Oi!", instance=LONG_INSTANCE))
    screen = on_a_terminal(monkeypatch)
    ok(hf("sessions", "list"))
    rows = terminal_rows(screen.getvalue())

    assert "…" not in screen.getvalue()
    assert (rows[0]["instance"], rows[0]["chat"]) == (LONG_INSTANCE, CUSTOMER)  # wider than 80: lines, not ids, wrap
    assert re.fullmatch(r"1 h 59 min|2 h", rows[0]["resumes in"])
    customer = [cells[2] for cells in ([c.strip() for c in line.split("│")[1:-1]]
                                       for line in screen.getvalue().splitlines() if line.startswith("│"))]
    assert "".join("".join(customer).split()) == "MariaAparecidadosSantosOliveira"  # folded, nothing lost


# --- times --------------------------------------------------------------------------------------------------------


NOW = datetime(2026, 12, 1, 11, 18, tzinfo=UTC)


def test_times_are_local_with_the_offset_and_how_far_from_now():
    resumes_at = NOW + timedelta(hours=1, minutes=12)
    assert when(resumes_at, NOW, SAO_PAULO) == "2026-12-01 09:30 -03:00 (in 1 h 12 min)"
    assert when(NOW - timedelta(minutes=3), NOW, SAO_PAULO) == "2026-12-01 08:15 -03:00 (3 min ago)"
    assert clock(NOW, ZoneInfo("Asia/Kolkata"), seconds=True) == "2026-12-01 16:48:00 +05:30"
    assert when(None, NOW, SAO_PAULO) == "-"
    assert [span(s) for s in (0, 59, 60, 3600, 7260, 172800, 190800)] == [
        "0 s", "59 s", "1 min", "1 h", "2 h 1 min", "2 d", "2 d 5 h"]
    assert relative(NOW + timedelta(seconds=1799.5), NOW) == "in 30 min"


def view(**fields: object) -> SessionView:
    base = dict(instance="padaria", chat_id=CUSTOMER, chat_kind="user", push_name=None, is_paused=True,
                pause_reason="operator", paused_by="cli", paused_at=NOW, resumes_at=None, last_human_at=None,
                last_message_at=None, created_at=NOW)
    return SessionView(**(base | fields))  # type: ignore[arg-type]


def test_an_expired_pause_resumes_at_the_next_sweep_not_seconds_ago():
    assert resumes(view(resumes_at=NOW - timedelta(seconds=1)), NOW, SAO_PAULO) == "resumes at the next sweep"
    assert resumes(view(resumes_at=NOW + timedelta(minutes=30)), NOW, SAO_PAULO) == (
        "resumes 2026-12-01 08:48 -03:00 (in 30 min)")
    assert resumes(view(), NOW, SAO_PAULO) == "until resumed by hand"


def test_an_expired_pause_in_show_and_list(hf, tmp_path):
    ok(hf("tenants", "add", "test-instance", "--prompt", PROMPT))
    ok(hf("sessions", "pause", "test-instance", CUSTOMER, "--for", "1s"))
    time.sleep(1.2)  # the scenario: the pause runs out on the CLI's real clock, before any sweep
    shown = ok(hf("sessions", "show", "test-instance", CUSTOMER)).stdout
    assert "resumes at the next sweep" in shown and " ago)" not in shown.split("\n")[1]
    assert lines_of_table(ok(hf("sessions", "list")).stdout)[0]["resumes in"] == "next sweep"


def test_sessions_show_prints_local_times_in_the_zone_of_tz_and_each_reply_its_times(hf, db, tmp_path):
    ok(hf("tenants", "add", "test-instance", "--prompt", PROMPT))
    replay(hf, tmp_path, upsert("Olá", message_id="C1"), owner("Oi!", message_id="O1"))
    output = ok(invoke("sessions", "show", "test-instance", CUSTOMER, env={"TZ": "America/Sao_Paulo", **db}))
    lines = output.stdout.splitlines()

    assert re.search(rf"state: paused \(human_message\) · resumes {STAMP} \(in (1 h 59 min|2 h)\)", lines[1]), lines
    assert re.fullmatch(rf"last human message: {STAMP} \(\d+ s ago\) · last message: {STAMP} \(\d+ s ago\)",
                        lines[2]), lines
    assert all(" -03:00" in line for line in lines if re.search(STAMP, line))
    [reply] = [line for line in lines if line.startswith("  #")]
    assert re.match(rf"  #\d+ \w+ \(attempts 0\) · queued {STAMP} \(\d+ s ago\)( — .*)?$", reply), reply

    detail = as_json(hf("sessions", "show", "test-instance", CUSTOMER, "--json"))
    for value in (detail["resumes_at"], detail["messages"][0]["received_at"], detail["replies"][0]["created_at"]):
        assert datetime.fromisoformat(value).utcoffset() is not None, value  # ISO-8601 with its offset


# --- tenants show: the words users type ---------------------------------------------------------------------------


def test_tenants_show_uses_option_names_and_yes_no(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--typing", "--no-groups", "--resume-after", "90m"))
    output = ok(hf("tenants", "show", "padaria")).stdout
    shown = {key: value.strip() for key, value in (line.split(None, 1) for line in output.splitlines()
                                                   if len(line.split(None, 1)) == 2)}
    assert (shown["typing"], shown["allow-groups"], shown["mark-read"]) == ("yes", "no", "no")
    assert (shown["resume-after"], shown["api-version"], shown["webhook-auth"]) == ("90m", "v2", "none")
    assert re.fullmatch(STAMP, shown["created"])
    assert "True" not in output and "False" not in output and "send_presence" not in output

    tenant = as_json(hf("tenants", "show", "padaria", "--json"))
    assert (tenant["typing"], tenant["allow_groups"], tenant["resume_after"]) == (True, False, 5400)
    assert "send_presence" not in tenant


# --- one --json shape per command ---------------------------------------------------------------------------------


def test_every_json_command_prints_one_object_and_replay_prints_json_lines(hf, tmp_path):
    added = as_json(hf("tenants", "add", "test-instance", "--prompt", PROMPT, "--json"))
    assert added["instance"] == "test-instance"
    assert as_json(hf("tenants", "update", "test-instance", "--model", "m", "--json"))["model"] == "m"
    assert as_json(hf("tenants", "show", "test-instance", "--json"))["instance"] == "test-instance"
    assert list(as_json(hf("tenants", "list", "--json"))) == ["tenants"]

    path = tmp_path / "bodies.jsonl"
    path.write_text(json.dumps(upsert("Olá")) + "\n" + json.dumps(owner("Oi!")) + "\n", encoding="utf-8")
    lines = ok(hf("replay", str(path), "--json")).stdout.splitlines()
    assert [json.loads(line)["action"] for line in lines] == ["reply_queued", "paused"]
    assert len(json_documents("\n".join(lines))) == 2

    assert set(as_json(hf("sessions", "list", "--json"))) == {"sessions", "total", "page", "pages", "limit"}
    assert as_json(hf("sessions", "show", "test-instance", CUSTOMER, "--json"))["chat_id"] == CUSTOMER
    assert as_json(hf("sessions", "pause", "test-instance", CUSTOMER, "--json"))["is_paused"] is True
    assert as_json(hf("sessions", "resume", "test-instance", CUSTOMER, "--json"))["is_paused"] is False
    assert as_json(hf("sweep", "--json")) == {"resumed": [], "retention": {
        "raw_cleared": 0, "messages_deleted": 0, "jobs_deleted": 0, "events_deleted": 0, "tombstones_pruned": 0}}
    doctor = hf("doctor", "--json", ollama_host="http://127.0.0.1:9")
    assert set(json.loads(doctor.stdout)) == {"ok", "checks"}


def test_sessions_list_shows_people_and_groups_or_broadcasts_only_when_asked(hf, tmp_path):  # type: ignore[no-untyped-def]
    assert hf("tenants", "add", "test-instance", "--prompt", "Seja breve.", "--allow-groups").exit_code == 0
    bodies = [upsert("Oi"), upsert("Bom dia grupo", chat="120363025246125888@g.us",
                                     participant="5511911112222@s.whatsapp.net"),
              upsert("status", chat="status@broadcast", participant="5511911112222@s.whatsapp.net")]
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(b) + "\n" for b in bodies))
    assert hf("replay", str(path)).exit_code == 0
    people = json.loads(hf("sessions", "list", "--json").stdout)
    assert [s["chat_id"] for s in people["sessions"]] == ["5511987654321@s.whatsapp.net"] and people["total"] == 1
    every = json.loads(hf("sessions", "list", "--all", "--json").stdout)
    assert {s["chat_kind"] for s in every["sessions"]} == {"user", "group", "broadcast"}
