"""The data lifecycle: ``backup`` (a checked copy of the database) and ``sessions export`` (one chat's history)."""

from __future__ import annotations

import contextlib
import os
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.markup import escape

from hybridflow.cli.app import app, err, fail, json_option, local_zone, out, print_json, run
from hybridflow.cli.sessions import app as sessions_app

# The service is imported by the commands that run it: `--help` imports none of it.


class ExportFormat(StrEnum):
    """The formats of `sessions export` (hybridflow.service.export.ExportFormat, which --help must not import)."""

    JSON = "json"
    CSV = "csv"
    TXT = "txt"


def size(n: int) -> str:
    """'812 bytes', '48.0 KiB', '1.2 MiB'."""
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit}"


# How the rows a backup counted are named for people (one, several), in the order printed.
_ROWS = {"tenants": ("tenant", "tenants"), "sessions": ("session", "sessions"), "messages": ("message", "messages"),
         "session_events": ("pause/resume event", "pause/resume events"), "reply_jobs": ("reply", "replies")}


@app.command("backup")
def backup(
    ctx: typer.Context,
    path: Path = typer.Argument(..., metavar="PATH", help="The backup file to write, or a directory to write "
                                "hybridflow-YYYY-MM-DDTHHMMSS.db in."),
    force: bool = typer.Option(False, "--force", help="Replace PATH if it exists (only once the new copy checks out)."),
    as_json: bool = json_option(),
) -> None:
    """Copy the SQLite database to PATH, safely while serve runs, and check the copy (PostgreSQL: use pg_dump)."""
    from hybridflow.service.backup import backup as make_backup

    done = run(ctx, lambda s: make_backup(s.store, path, now=s.clock(), force=force),
               create_schema=False, readonly=True)
    if as_json:
        print_json(done.as_dict())
        return
    out.print(f"backed up {escape(done.source)} to {escape(str(done.path))} ({size(done.size)}, "
              f"schema version {done.schema_version}, integrity {escape(done.integrity)})")
    out.print(" · ".join(f"{done.rows[table]} {one if done.rows[table] == 1 else many}"
                         for table, (one, many) in _ROWS.items() if table in done.rows))


@sessions_app.command("export")
def export(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    chat: str = typer.Argument(..., metavar="CHAT", help="The chat: a full JID or a phone number."),
    form: ExportFormat | None = typer.Option(
        None, "--format", metavar="json|csv|txt", case_sensitive=False,
        help="json (chat, messages, events, replies), csv (one row per message) or txt (for people). "
             "Default: the --output file's extension, else txt."),
    output: Path | None = typer.Option(None, "--output", "-o", metavar="PATH",
                                       help="Write to this file instead of stdout."),
    force: bool = typer.Option(False, "--force", help="Replace the --output file if it exists."),
) -> None:
    """Write one chat's whole history: every message and who wrote it, pauses and resumes, and the replies."""
    from hybridflow.service.export import export_chat, render

    form = form or _format_of(output)
    if output is not None:
        output = output.expanduser().absolute()
        _check_output(output, force)
    transcript = run(ctx, lambda s: export_chat(s, instance, chat), readonly=True)
    document = render(transcript, form, local_zone())
    if output is None:
        sys.stdout.write(document)
        return
    _write(output, document.encode("utf-8"), force)
    err.print(f"wrote {escape(transcript.summary())} of {escape(transcript.chat.instance)} · "
              f"{escape(transcript.chat.chat_id)} to {escape(str(output))} ({form}, {size(output.stat().st_size)})")


def _format_of(output: Path | None) -> ExportFormat:
    """The format an --output file's extension names (.json, .csv, .txt), else txt."""
    suffix = output.suffix.lower().lstrip(".") if output is not None else ""
    return ExportFormat(suffix) if suffix in set(ExportFormat) else ExportFormat.TXT


def _check_output(output: Path, force: bool) -> None:
    """Refuse, before reading the chat, an --output that cannot or must not be written."""
    if output.is_dir():
        raise fail(f"{output} is a directory: give --output a file name", 2)
    if not output.parent.is_dir():
        raise fail(f"no directory {output.parent}: create it first, or give another --output", 2)
    if output.exists() and not force:
        raise fail(f"{output} exists: give another --output, or --force to replace it")


def _write(output: Path, data: bytes, force: bool) -> None:
    """Write the whole file under a temporary name, then rename it: no half-written export is ever left."""
    partial = output.with_name(f".{output.name}.{os.getpid()}.partial")
    try:
        partial.write_bytes(data)
        if output.exists() and not force:
            raise fail(f"{output} exists: give another --output, or --force to replace it")
        os.replace(partial, output)
    except OSError as exc:
        raise fail(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
