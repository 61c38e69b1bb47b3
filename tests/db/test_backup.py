"""`hybridflow backup`: a checked copy of the SQLite database that HybridFlow can run on, never a half-written or
overwritten file by accident; on PostgreSQL, the pg_dump command to run instead (without the password)."""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import Result

from hybridflow.models import SCHEMA_VERSION
from tests.support.builders import owner, upsert
from tests.support.cli import as_json, invoke, ok, one_line_error

PROMPT = "Você é a assistente da Padaria Boa."
OTHER = "5511912345678@s.whatsapp.net"
SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SIZE = r"\d+(\.\d)? (bytes|KiB|MiB)"


Run = Callable[..., Result]


def on(path: Path, *args: str) -> Result:
    """`hybridflow ARGS` against the SQLite file at ``path`` (the database, or a backup to see what it holds)."""
    return invoke("--database-url", f"sqlite:///{path}", *args)


def open_shop(hybridflow: Run, directory: Path) -> Run:
    """A tenant with two chats: Maria waiting for a reply, and João's chat, which the owner took over (paused)."""
    ok(hybridflow("tenants", "add", "test-instance", "--prompt", PROMPT))
    bodies = directory / "bodies.jsonl"
    bodies.write_text("".join(json.dumps(body) + "\n" for body in (
        upsert("Vocês abrem domingo?"), upsert("Oi", chat=OTHER, push_name="João"),
        owner("Já te respondo, João", chat=OTHER))), encoding="utf-8")
    ok(hybridflow("replay", str(bodies)))
    bodies.unlink()
    return hybridflow


@pytest.fixture
def shop(isolated: Path) -> Run:
    """The shop on a SQLite file, hybridflow.db in the working directory (the default database)."""
    return open_shop(lambda *args: on(isolated / "hybridflow.db", *args), isolated)


def test_on_each_backend_backup_says_what_it_wrote_or_what_to_run(hf, database_url, tmp_path, isolated):
    open_shop(hf, tmp_path)
    target = tmp_path / "backups" / "hf.db"
    target.parent.mkdir()
    result = hf("backup", str(target))
    if database_url.startswith("sqlite"):
        lines = ok(result).stdout.splitlines()
        assert re.fullmatch(rf"backed up SQLite {re.escape(str(tmp_path / 'hybridflow.db'))} to "
                            rf"{re.escape(str(target))} \({SIZE}, schema version \d+, integrity ok\)", lines[0])
        assert lines[1] == "1 tenant · 2 sessions · 3 messages · 1 pause/resume event · 2 replies"
        assert target.is_file()
    else:
        assert result.exit_code == 1 and result.stdout == ""
        error = one_line_error(result)
        assert "copies SQLite databases only" in error
        assert f"pg_dump --format=custom --file {target} postgresql://" in error
        assert not target.exists()


def test_the_backup_is_a_database_hybridflow_runs_on_with_the_same_chats(shop, tmp_path):
    target = tmp_path / "copy.db"
    ok(shop("backup", str(target)))
    assert not Path(f"{target}-wal").exists() and not Path(f"{target}-shm").exists()  # one file to carry away
    assert as_json(on(target, "sessions", "list", "--json")) == as_json(shop("sessions", "list", "--json"))
    paused = as_json(on(target, "sessions", "show", "test-instance", OTHER, "--json"))
    assert paused["is_paused"] is True and paused["pause_reason"] == "human_message"
    waiting = as_json(on(target, "sessions", "show", "test-instance", "11987654321", "--json"))
    assert [r["status"] for r in waiting["replies"]] == ["queued"]


def test_json_says_the_path_the_size_and_what_the_copy_holds(shop, tmp_path):
    target = tmp_path / "copy.db"
    done = as_json(shop("backup", str(target), "--json"))
    assert done["path"] == str(target) and done["size"] == target.stat().st_size
    assert done["integrity"] == "ok" and done["database"] == f"SQLite {tmp_path / 'hybridflow.db'}"
    assert done["rows"] == {"tenants": 1, "sessions": 2, "messages": 3, "session_events": 1, "reply_jobs": 2}
    assert done["schema_version"] == SCHEMA_VERSION


def test_a_directory_gets_a_dated_file_and_a_second_backup_another_one(shop, tmp_path):
    backups = tmp_path / "backups"
    backups.mkdir()
    first = as_json(shop("backup", str(backups), "--json"))
    assert re.fullmatch(r"hybridflow-\d{4}-\d\d-\d\dT\d{6}\.db", Path(first["path"]).name), first["path"]
    assert Path(first["path"]).parent == backups and Path(first["path"]).is_file()
    assert [p.name for p in backups.iterdir()] == [Path(first["path"]).name]  # no temporary file left


def test_an_existing_file_is_kept_unless_force(shop, tmp_path):
    target = tmp_path / "copy.db"
    target.write_bytes(b"yesterday's backup")
    result = shop("backup", str(target))
    assert result.exit_code == 1 and result.stdout == ""
    assert one_line_error(result) == f"error: {target} exists: give another PATH, or --force to replace it"
    assert target.read_bytes() == b"yesterday's backup"
    ok(shop("backup", str(target), "--force"))
    assert as_json(on(target, "sessions", "list", "--json"))["total"] == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_the_database_itself_is_never_a_target_even_with_force(shop, tmp_path):
    database = tmp_path / "hybridflow.db"
    before = as_json(shop("sessions", "list", "--json"))
    for target in (database, Path(f"{database}-wal")):
        result = shop("backup", str(target), "--force")
        assert result.exit_code == 2
        assert "is the database itself" in one_line_error(result)
    assert as_json(shop("sessions", "list", "--json")) == before


def test_a_missing_directory_is_not_created(shop, tmp_path):
    target = tmp_path / "typo" / "copy.db"
    result = shop("backup", str(target))
    assert result.exit_code == 2 and f"no directory {target.parent}" in one_line_error(result)
    assert not target.parent.exists()


def test_a_missing_database_is_named_and_nothing_is_created(isolated):
    database = isolated / "data" / "hybridflow.db"
    result = on(database, "backup", str(isolated / "copy.db"))
    assert result.exit_code == 2 and f"no database at {database}" in one_line_error(result)
    assert sorted(isolated.iterdir()) == []


def test_an_old_schema_is_copied_as_it_is_not_migrated_first(isolated):
    """The backup before an upgrade is the database as the old release left it."""
    database = isolated / "old.db"
    with sqlite3.connect(database) as conn:
        conn.executescript((SCHEMAS / "v1-sqlite.sql").read_text())
        conn.execute("INSERT INTO hybridflow_schema (id, version, updated_at) VALUES (1, 1, '2026-11-30 10:00:00')")
    done = as_json(on(database, "backup", str(isolated / "copy.db"), "--json"))
    assert done["schema_version"] == 1 and done["rows"]["messages"] == 0
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT version FROM hybridflow_schema").fetchone() == (1,)


def test_a_write_in_progress_neither_blocks_the_backup_nor_gets_into_it(shop, tmp_path):
    """What a running serve does: a write transaction that has not committed yet. The copy is the last commit."""
    writer = sqlite3.connect(tmp_path / "hybridflow.db", isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE sessions SET push_name = 'not committed'")
        ok(shop("backup", str(tmp_path / "copy.db")))
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    names = {s["push_name"] for s in as_json(on(tmp_path / "copy.db", "sessions", "list", "--json"))["sessions"]}
    assert names == {"Maria", "João"}


def test_a_damaged_database_is_reported_and_no_backup_is_left(shop, tmp_path):
    database = tmp_path / "hybridflow.db"
    with sqlite3.connect(database) as conn:  # an index forgotten by the schema: its pages are "never used"
        conn.execute("PRAGMA writable_schema = ON")
        conn.execute("DELETE FROM sqlite_master WHERE name = 'ix_messages_session_received'")
    target = tmp_path / "copy.db"
    result = shop("backup", str(target))
    assert result.exit_code == 1
    error = one_line_error(result)
    assert "failed its integrity check (Page " in error and f"nothing was written to {target}" in error
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".copy.db")]


def test_postgresql_gets_the_pg_dump_command_without_the_password(postgres_url, isolated):
    ok(invoke("--database-url", postgres_url, "migrate"))
    with_password = postgres_url.replace("postgres@", "postgres:s3cr3t-pw@", 1)
    backups = isolated / "backups"
    backups.mkdir()
    result = invoke("--database-url", with_password, "backup", str(backups), "--json")
    assert result.exit_code == 1 and result.stdout == ""
    error = one_line_error(result)
    assert "s3cr3t-pw" not in error and "the URL's password in PGPASSWORD" in error
    command = re.search(r"pg_dump --format=custom --file (\S+) (\S+)$", error)
    assert command, error
    assert re.fullmatch(rf"{re.escape(str(backups))}/hybridflow-\d{{4}}-\d\d-\d\dT\d{{6}}\.dump", command[1])
    assert command[2] == postgres_url  # the URL as given, minus the password: pg_dump can use it as it is
    assert list(backups.iterdir()) == []



def test_a_backup_is_readable_by_its_owner_only(shop, tmp_path):  # type: ignore[no-untyped-def]
    import stat

    target = tmp_path / "private.db"
    ok(shop("backup", str(target)))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # customers' messages: not for other users of the server
