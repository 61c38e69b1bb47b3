"""Commands that only read never create a database: run in the wrong directory (or with a typo in the path) they
say which database they looked for, exit 2, and leave no empty file or directory behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli import invoke, ok, one_line_error

READ_ONLY = [["tenants", "list"], ["tenants", "show", "padaria"], ["sessions", "list"],
             ["sessions", "show", "padaria", "5511987654321"]]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_a_read_only_command_on_a_missing_sqlite_file_creates_nothing(isolated: Path, args: list[str]):
    database = isolated / "typo-dir" / "hybridflow.db"
    result = invoke("--database-url", f"sqlite:///{database}", *args)
    assert result.exit_code == 2
    error = one_line_error(result)
    assert f"no database at {database}" in error and "--database-url" in error
    assert not database.parent.exists()


def test_doctor_reports_the_missing_database_as_a_failed_check_and_creates_nothing(isolated: Path):
    database = isolated / "typo-dir" / "hybridflow.db"
    result = invoke("--database-url", f"sqlite:///{database}", "doctor", "--json")
    assert result.exit_code == 1
    [check] = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "database"]
    assert check["ok"] is False and f"no database at {database}" in check["detail"]
    assert not database.parent.exists()


def test_a_read_only_command_in_the_wrong_directory_does_not_leave_a_hybridflow_db(isolated: Path):
    result = invoke("sessions", "list")
    assert result.exit_code == 2 and str(isolated / "hybridflow.db") in one_line_error(result)
    assert list(isolated.iterdir()) == []


def test_commands_that_write_create_the_database(isolated: Path):
    database = isolated / "data" / "hf.db"
    ok(invoke("--database-url", f"sqlite:///{database}", "tenants", "add", "padaria", "--prompt", "Seja breve."))
    assert database.is_file()
    assert "padaria" in ok(invoke("--database-url", f"sqlite:///{database}", "tenants", "list")).stdout


def test_an_empty_postgresql_database_is_not_given_a_schema_by_a_listing(postgres_url: str, isolated: Path):
    result = invoke("--database-url", postgres_url, "tenants", "list")
    assert result.exit_code == 2 and "has no HybridFlow schema" in one_line_error(result)
    migrated = ok(invoke("--database-url", postgres_url, "migrate"))
    assert "version" in migrated.stdout
    empty = ok(invoke("--database-url", postgres_url, "tenants", "list")).stdout
    assert "No tenants yet in PostgreSQL" in empty and postgres_url.rsplit("/", 1)[1] in empty
