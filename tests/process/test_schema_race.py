"""Processes and stores creating one new SQLite database at the same moment all succeed.

Every connection switches the file to WAL when it opens. On a new file, two connections switching at once used to
fail one of them with "database is locked" at once, whatever the busy timeout (``hybridflow.store._enter_wal``):
`serve` and a CLI command, or two commands from cron, started together on a new database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import threading
from pathlib import Path

from sqlalchemy.engine import Engine

from hybridflow.models import SCHEMA_VERSION, SchemaInfo
from hybridflow.store import Store
from tests.support.serve import HYBRIDFLOW, clean_env

STORES = 4
ROUNDS = 40
BATCH_ROUNDS = 100  # cheaper rounds: a thread per connection, no schema


def start_at_once(commands: list[list[str]], cwd: Path) -> list[subprocess.Popen[str]]:
    """Start every command at the same moment (one thread each, released by a barrier)."""
    barrier = threading.Barrier(len(commands))
    started: list[subprocess.Popen[str] | None] = [None] * len(commands)

    def start(index: int) -> None:
        barrier.wait()
        started[index] = subprocess.Popen(commands[index], env=clean_env(), cwd=cwd, text=True,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    threads = [threading.Thread(target=start, args=(index,)) for index in range(len(commands))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(started), "a process did not start"
    return started  # type: ignore[return-value]


def schema_rows(path: Path) -> list[tuple[int, int]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute(f"SELECT id, version FROM {SchemaInfo.__tablename__}").fetchall()


def journal_mode(path: Path) -> str:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("PRAGMA journal_mode").fetchone()[0]


def new_file(path: Path) -> None:
    """Remove the database and its -wal and -shm files: the next connection creates a new one."""
    for file in path.parent.glob(f"{path.name}*"):
        file.unlink()


def test_two_hybridflow_processes_creating_one_new_database_at_once_both_succeed(tmp_path: Path) -> None:
    for round_ in range(3):
        path = tmp_path / f"round-{round_}.db"
        migrate = [*HYBRIDFLOW, "--database-url", f"sqlite:///{path}", "migrate"]
        processes = start_at_once([migrate, migrate], cwd=tmp_path)
        for process in processes:
            stdout, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, f"round {round_}: exit {process.returncode}\n{stdout}\n{stderr}"
            assert f"version {SCHEMA_VERSION}" in stdout
        assert schema_rows(path) == [(1, SCHEMA_VERSION)]
        assert journal_mode(path) == "wal"


def test_many_batch_connections_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """The batching writers' connections (the sqlite3 driver, a thread each) of several stores at one instant.

    The engines are warmed first: an engine's first connection spends a while in SQLAlchemy's own setup, which
    spreads the connections too far apart to collide. Warm ones reach ``PRAGMA journal_mode`` together.
    """
    path = tmp_path / "hybridflow.db"
    stores = [Store(f"sqlite:///{path}") for _ in range(STORES)]
    engines: list[Engine] = [store.batch_engine for store in stores if store.batch_engine is not None]
    try:
        for round_ in range(BATCH_ROUNDS):
            for engine in engines:
                engine.dispose()
            new_file(path)
            barrier = threading.Barrier(len(engines))
            errors: list[BaseException] = []

            def connect(engine: Engine) -> None:
                barrier.wait()
                try:
                    engine.connect().close()
                except Exception as exc:  # noqa: BLE001 - collected, asserted below
                    errors.append(exc)

            threads = [threading.Thread(target=connect, args=(engine,)) for engine in engines]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == [], f"round {round_}"
            assert journal_mode(path) == "wal"
    finally:
        for store in stores:
            asyncio.run(store.dispose())


async def test_many_stores_creating_one_new_schema_at_once_all_succeed(tmp_path: Path) -> None:
    """The writing connections (aiosqlite, on the event loop) of several stores, each round on a new file."""
    path = tmp_path / "hybridflow.db"
    stores = [Store(f"sqlite:///{path}") for _ in range(STORES)]
    try:
        for round_ in range(ROUNDS):
            for store in stores:
                await store.write_engine.dispose()  # warm engines, as above; the next connection is a new one
            new_file(path)
            versions = await asyncio.gather(*(store.create_schema() for store in stores), return_exceptions=True)
            assert versions == [SCHEMA_VERSION] * STORES, f"round {round_}"
            assert schema_rows(path) == [(1, SCHEMA_VERSION)]
    finally:
        for store in stores:
            await store.dispose()
