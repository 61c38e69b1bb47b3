"""``hybridflow backup``: a copy of the SQLite database, taken while ``serve`` runs, checked before it is kept.

The copy is made with SQLite's online backup API in one step: it reads one snapshot of the database (WAL lets the
server go on writing meanwhile), where a copy in several steps would start again after every write of the server.
It is written beside the target under a temporary name, checked with ``PRAGMA integrity_check``, and only then
renamed to the target: an interrupted or failed backup never leaves a file that looks like a good one, and
``--force`` replaces an older backup only with a verified one. PostgreSQL is backed up with ``pg_dump``; for it
this module only says the command to run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from hybridflow.errors import BackupFailed, BadRequest, Conflict
from hybridflow.models import EVENTS, JOBS, MESSAGES, SESSIONS, TENANTS, SchemaInfo
from hybridflow.store import SQLITE_BUSY_TIMEOUT_MS, Store

# The tables whose rows a backup counts, in the order they are printed (every schema version has them).
COUNTED = (TENANTS.name, SESSIONS.name, MESSAGES.name, EVENTS.name, JOBS.name)


@dataclass(frozen=True, slots=True)
class Backup:
    """A backup that was written and checked."""

    path: Path
    size: int  # bytes
    source: str  # the database it copies, for humans (``Store.describe``)
    schema_version: int | None
    integrity: str  # what PRAGMA integrity_check answered: "ok"
    rows: dict[str, int] = field(default_factory=dict)  # rows per table, counted in the copy
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "size": self.size, "database": self.source,
                "schema_version": self.schema_version, "integrity": self.integrity, "rows": dict(self.rows),
                "seconds": round(self.seconds, 3)}


def dated_name(now: datetime, suffix: str = ".db") -> str:
    """The file name a backup gets inside a directory: ``hybridflow-2026-12-01T093000.db`` (local time)."""
    return f"hybridflow-{now.astimezone():%Y-%m-%dT%H%M%S}{suffix}"


def target_of(path: Path, now: datetime, suffix: str = ".db") -> Path:
    """Where a backup asked for at ``path`` goes: ``path`` itself, or a dated file when it is a directory."""
    path = path.expanduser()
    return (path / dated_name(now, suffix)).absolute() if path.is_dir() else path.absolute()


def pg_dump_command(database_url: str, target: Path) -> str:
    """The ``pg_dump`` command that backs up ``database_url`` to ``target``, without the password (which
    ``pg_dump`` reads from PGPASSWORD or ~/.pgpass): a line a person can paste."""
    given = sa.engine.make_url(database_url)
    url = sa.engine.URL.create("postgresql", username=given.username, host=given.host, port=given.port,
                               database=given.database, query=given.query)  # everything but the password
    return shlex.join(["pg_dump", "--format=custom", "--file", str(target), url.render_as_string(hide_password=False)])


async def backup(store: Store, path: Path, *, now: datetime, force: bool = False) -> Backup:
    """Copy the SQLite database of ``store`` to ``path`` (a file, or a directory for a dated file) and check the
    copy. ``Conflict`` when the file exists and not ``force``; ``BackupFailed`` on PostgreSQL, with the command
    that backs it up."""
    if not store.is_sqlite:
        target = target_of(path, now, ".dump")
        password = " (the URL's password in PGPASSWORD)" if sa.engine.make_url(store.url).password else ""
        raise BackupFailed(f"`hybridflow backup` copies SQLite databases only; back up PostgreSQL with pg_dump"
                           f"{password}: {pg_dump_command(store.url, target)}")
    source = store.sqlite_path
    if source is None:
        raise BadRequest("an in-memory SQLite database has no file to back up")
    await store.require_schema()  # DatabaseMissing names the file looked for; nothing is created
    target = target_of(path, now)
    _check_target(source.resolve(), target, force=force)
    return await asyncio.to_thread(_write_backup, source.resolve(), target, store.describe(), force)


def _check_target(source: Path, target: Path, *, force: bool) -> None:
    """Refuse, before copying anything, a target that cannot or must not be written."""
    if not target.parent.is_dir():
        raise BadRequest(f"no directory {target.parent}: create it first, or give another PATH")
    beside = target.parent.resolve() == source.parent and target.name.startswith(f"{source.name}-")  # -wal, -shm
    if target.resolve() == source or beside:
        raise BadRequest(f"{target} is the database itself (or one of its files): give another PATH")
    if target.is_dir():
        raise BadRequest(f"{target} is a directory")
    if target.exists() and not force:
        raise Conflict(f"{target} exists: give another PATH, or --force to replace it")
    if not os.access(target.parent, os.W_OK):
        raise BackupFailed(f"cannot write in {target.parent}: permission denied")


def _write_backup(source: Path, target: Path, describe: str, force: bool) -> Backup:
    """The copy and its check, in a worker thread (sqlite3 blocks)."""
    started = time.monotonic()
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    _remove(partial)
    try:
        try:
            _online_copy(source, partial)
            integrity, version, rows = _inspect(partial)
        except sqlite3.Error as exc:
            raise BackupFailed(f"cannot back up {source} to {target}: {exc}") from None
        if integrity != "ok":
            raise BackupFailed(f"the copy of {source} failed its integrity check ({integrity}): the database may be "
                               f"damaged; nothing was written to {target}")
        if target.exists() and not force:  # appeared while copying
            raise Conflict(f"{target} exists: give another PATH, or --force to replace it")
        try:
            os.chmod(partial, 0o600)  # customers' messages: readable by the owner of the file only
            os.replace(partial, target)
            _sync_directory(target.parent)
        except OSError as exc:
            raise BackupFailed(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        _remove(partial)
    return Backup(target, target.stat().st_size, describe, version, integrity, rows, time.monotonic() - started)


def _online_copy(source: Path, partial: Path) -> None:
    # mode=rw: a file that vanished is an error, never a new empty database; a WAL reader needs to write the -shm.
    src = sqlite3.connect(f"{source.as_uri()}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: the whole database in one step, from one snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # a single self-contained file: no -wal to carry along
        finally:
            dst.close()
    finally:
        src.close()


def _inspect(path: Path) -> tuple[str, int | None, dict[str, int]]:
    """What the copy holds: its integrity check's answer, its schema version and its rows per table."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        answers = [line.strip() for row in conn.execute("PRAGMA integrity_check") for line in row[0].splitlines()
                   if line.strip() and not line.startswith("*** in database")]  # one line per problem
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        version = None
        if SchemaInfo.__tablename__ in tables:
            found = conn.execute(f'SELECT version FROM "{SchemaInfo.__tablename__}" WHERE id = 1').fetchone()
            version = found[0] if found else None
        rows = {name: conn.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in COUNTED
                if name in tables}
    finally:
        conn.close()
    return ("ok" if answers == ["ok"] else "; ".join(answers[:3])), version, rows


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (a crash right after it must not bring the old file back)."""
    with contextlib.suppress(OSError):  # not every platform opens directories
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove(path: Path) -> None:
    for leftover in (path, *(path.with_name(path.name + end) for end in ("-journal", "-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


__all__ = ["Backup", "backup", "dated_name", "pg_dump_command", "target_of"]
