"""The CLI in-process (typer's CliRunner) and readers of what it printed: exit codes, rich tables, JSON."""

from __future__ import annotations

import json
from typing import Any

import typer.main
from typer.testing import CliRunner, Result

from hybridflow.cli import app


def command_tree(command: Any = None, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the CLI, the root (path ``()``) first, with the words that invoke it."""
    command = typer.main.get_command(app) if command is None else command
    found = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        found.extend(command_tree(sub, (*path, name)))
    return found


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    """`hybridflow ARGS` in this process, with ``env`` added to the environment and a wide terminal."""
    return CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, list(args))


def ok(result: Result) -> Result:
    """The result of a command that succeeded (exit code 0)."""
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result


def as_json(result: Result) -> Any:
    """The JSON a successful ``--json`` command printed."""
    return json.loads(ok(result).stdout)


def failed(result: Result, code: int | None = None) -> str:
    """The error line of a failed command (checked: non-zero exit, no traceback)."""
    assert result.exit_code != 0 if code is None else result.exit_code == code, (result.exit_code, result.stdout)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip(), "the reason must be printed on stderr"
    return result.stderr


def one_line_error(result: Result) -> str:
    """A failure with exactly one line on stderr and no traceback; returns that line."""
    error = failed(result)
    assert len(error.strip().splitlines()) == 1, error
    return error.strip()


def lines_of_table(output: str) -> list[dict[str, str]]:
    """Every row of the rich table in ``output``, in order, as {header: cell}."""
    lines = output.splitlines()
    headers = next([c.strip() for c in line.split("┃")[1:-1]] for line in lines if "┃" in line)
    return [dict(zip(headers, [c.strip() for c in line.split("│")[1:-1]], strict=True))
            for line in lines if line.startswith("│")]


def table_rows(output: str) -> dict[str, dict[str, str]]:
    """The cells of a rich table, by the first column and then by header."""
    return {next(iter(row.values())): row for row in lines_of_table(output)}


def json_documents(text: str) -> list[Any]:
    """Every JSON value printed one after the other in ``text`` (`replay --json` prints one per body)."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while (index := len(text) - len(text[index:].lstrip())) < len(text):
        value, index = decoder.raw_decode(text, index)
        values.append(value)
    return values
