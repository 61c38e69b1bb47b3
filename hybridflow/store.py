"""Engines, schema and the database plumbing shared by every query.

SQLite (the default) gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` on the one writing connection, so the CLI and
a running server can share one file; reads use their own connections (WAL lets them run beside the writer).
PostgreSQL gets one pool for both; correctness between processes comes from constraints and row locks.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy import event as sa_event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import AdaptedConnection, Connection, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from hybridflow.config import database_url_to_async
from hybridflow.errors import ConfigError, DatabaseMissing, HybridFlowError, Unavailable
from hybridflow.migrations import MIGRATIONS, Migration, latest, migrate
from hybridflow.models import SchemaInfo, SQLModel

log = structlog.get_logger("hybridflow.store")
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000


class SchemaTooNew(HybridFlowError):
    exit_code = 2
    code = "schema_too_new"


# Raised while connecting: the database or the role is missing, the password is wrong. The operator must act,
# but the request itself was fine, so it is answered like an outage (503: Evolution retries) with the reason.
_CONNECT_ERRORS = ("InvalidCatalogNameError", "InvalidPasswordError", "InvalidAuthorizationSpecificationError",
                   "CannotConnectNowError", "TooManyConnectionsError")
# asyncpg's own errors for a connection that is gone (closed, cut, the server shutting down), as the hot statements
# see them: they call asyncpg directly (``hybridflow.sql.postgresql``), past SQLAlchemy's translation.
_LOST_CONNECTION_ERRORS = frozenset({"InterfaceError", "ConnectionDoesNotExistError", "PostgresConnectionError",
                                     "OperatorInterventionError", "InternalClientError"})
_DRIVER_MODULES = ("asyncpg", "sqlalchemy.dialects.postgresql.asyncpg")
# A pooled PostgreSQL connection idle this long is pinged before use; one in steady use is not (a ping is three
# round trips with SQLAlchemy's asyncpg adapter: BEGIN, ";", ROLLBACK).
PING_AFTER_IDLE_SECONDS = 1.0
# SQLite: past this many frames in the WAL (64 MiB of 4 KiB pages) the writer truncates it (``Store.checkpoint``),
# waiting at most WAL_TRUNCATE_WAIT_MS for readers still on an older snapshot (it tries again a second later).
WAL_RESTART_FRAMES = 16_384
WAL_TRUNCATE_WAIT_MS = 100
_LAST_USED = "hybridflow_last_used"  # in a pooled connection's record.info: when it was last checked in


def is_transient_db_error(exc: BaseException) -> bool:
    """True for failures that a retry may cure: server down, connection lost, SQLite busy."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, OSError, asyncio.TimeoutError)):
        return True
    if _lost_connection(exc):
        return True
    if isinstance(exc, sa_exc.DBAPIError) and type(exc.orig).__name__ in _CONNECT_ERRORS:
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None and \
            type(getattr(exc.orig, "__cause__", None)).__name__ in _CONNECT_ERRORS:
        return True
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(exc, sa_exc.DBAPIError) and "connection" in str(exc.orig).lower()


def _lost_connection(exc: BaseException) -> bool:
    """An error of asyncpg (or of SQLAlchemy's adapter of it), raised past SQLAlchemy's translation, that says the
    connection is gone."""
    return type(exc).__module__.startswith(_DRIVER_MODULES) and any(
        cls.__name__ in _LOST_CONNECTION_ERRORS for cls in type(exc).__mro__)


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Pessimistic disconnect handling, as ``pool_pre_ping`` does, for connections idle a while only: the pool
    replaces one whose ping fails (up to three tries) before anyone uses it."""
    sync_engine = engine.sync_engine

    @sa_event.listens_for(sync_engine, "checkout")
    def _checkout(dbapi_connection, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if time.monotonic() - record.info.get(_LAST_USED, 0.0) < PING_AFTER_IDLE_SECONDS:
            return
        try:
            alive = sync_engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure of the ping means "replace it"
            raise sa_exc.DisconnectionError(f"ping failed: {type(exc).__name__}") from exc
        if not alive:
            raise sa_exc.DisconnectionError("ping failed")

    @sa_event.listens_for(sync_engine, "checkin")
    def _checkin(_dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        record.info[_LAST_USED] = time.monotonic()


def _reason(exc: BaseException) -> str:
    """One line saying why the database failed, without SQL or parameters."""
    orig = getattr(exc, "orig", None) or exc
    cause = getattr(orig, "__cause__", None)
    text = str(cause or orig).strip().splitlines()
    return f"{type(cause or orig).__name__}: {text[0][:200]}" if text else type(orig).__name__


def _sqlite_path(async_url: str) -> Path | None:
    database = sa.engine.make_url(async_url).database
    return Path(database) if database and database != ":memory:" else None


def _enter_wal(cursor: Any, pause: Callable[[float], None]) -> None:
    """``PRAGMA journal_mode=WAL``, retried while another connection is switching the same new file to WAL.

    The switch reads the file header under a read lock, then upgrades to a write lock to rewrite it. When two
    connections switch a new file at once, SQLite answers the second one SQLITE_BUSY at once, without calling the
    busy handler (waiting for the write lock while holding the read lock could deadlock). Its retry finds the file
    in WAL already and changes nothing.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    delay = 0.001
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or time.monotonic() + delay > deadline:
                raise
        pause(delay)
        delay = min(delay * 2, 0.1)


def _pause_for(dbapi_connection: Any) -> Callable[[float], None]:
    """How a connect event waits: aiosqlite's events run on the event loop, which must not be blocked."""
    if isinstance(dbapi_connection, AdaptedConnection):
        return lambda seconds: dbapi_connection.run_async(lambda _driver: asyncio.sleep(seconds))
    return time.sleep


def _install_sqlite_pragmas(engine: AsyncEngine | Engine, *, begin: str | None, writer: bool,
                            cache_kib: int | None = None, synchronous: str = "full") -> None:
    """The pragmas of every new connection; ``begin``: what SQLAlchemy's "begin" sends (None: the caller sends its
    own BEGIN on the driver connection, as the batching writer does)."""
    sync_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine

    @sa_event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite would defer it otherwise).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        # Before WAL and before any table: only then does a new file take it (an existing one keeps its mode
        # until `hybridflow vacuum`). Retention then gives freed pages back with PRAGMA incremental_vacuum. Only on
        # an empty file: on an existing one even the same mode is a write, which would wait for a running serve.
        cursor.execute("PRAGMA page_count")
        if cursor.fetchone()[0] == 0:
            cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        _enter_wal(cursor, _pause_for(dbapi_connection))
        # FULL: a commit is on the disk before the webhook's 200 (a power loss loses nothing acknowledged);
        # NORMAL: the last commits of the WAL may be lost to a power loss, never to a crash of the process.
        cursor.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
        cursor.execute("PRAGMA foreign_keys=ON")
        if cache_kib:
            cursor.execute(f"PRAGMA cache_size=-{cache_kib}")  # bounded page cache per reading connection
        if writer:
            # Checkpoints run from a background task, not inside a commit on the request path.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    if begin is not None:
        @sa_event.listens_for(sync_engine, "begin")
        def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
            conn.exec_driver_sql(begin)


@contextlib.contextmanager
def _outage_is_unavailable() -> Iterator[None]:
    """Outages (server down, SQLite busy, bad credentials) become ``Unavailable``; other errors pass unchanged."""
    try:
        yield
    except HybridFlowError:
        raise
    except Exception as exc:
        if is_transient_db_error(exc):
            raise Unavailable(f"database unavailable: {_reason(exc)}") from exc
        raise


@contextlib.asynccontextmanager
async def _transaction(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A transaction on ``engine``, with outages reported as ``Unavailable``."""
    with _outage_is_unavailable():
        async with engine.begin() as conn:
            try:
                yield conn
            except Exception as exc:
                if _lost_connection(exc):  # SQLAlchemy did not see it: the pool must not hand this one out again
                    await conn.invalidate(exc)
                raise


class Store:
    """The database: a writing engine and a reading engine (the same one on PostgreSQL)."""

    def __init__(self, database_url: str, *, background_checkpoints: bool = False, create: bool = True,
                 synchronous: str = "full", wal_restart_frames: int = WAL_RESTART_FRAMES) -> None:
        """``create``: a SQLite file (and its directory) that does not exist yet is created on first use.
        ``synchronous``: SQLite's durability of a commit, ``full`` (survives a power loss) or ``normal``.
        ``wal_restart_frames``: the WAL's size (in pages) past which ``checkpoint`` truncates it."""
        self.url = database_url
        self.synchronous = synchronous
        async_url = database_url_to_async(database_url)
        self.dialect = "sqlite" if async_url.startswith("sqlite") else "postgresql"
        if self.is_sqlite:
            path = self.sqlite_path = _sqlite_path(async_url)
            if create and path is not None and path.parent and not path.parent.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
            # One writing connection: SQLite has one writer anyway, and more only queue on its lock.
            self.write_engine = create_async_engine(async_url, pool_size=1, max_overflow=0, pool_timeout=60)
            _install_sqlite_pragmas(self.write_engine, begin="BEGIN IMMEDIATE", writer=background_checkpoints,
                                    synchronous=synchronous)
            self.read_engine = create_async_engine(async_url, pool_size=2, max_overflow=2)
            _install_sqlite_pragmas(self.read_engine, begin="BEGIN", writer=False, cache_kib=1024)
            # The batching writer's one connection: the same file through the standard sqlite3 driver, so that a
            # batch's statements are plain calls (through aiosqlite each statement is several thread hops). They
            # run on the event loop; the commit, which waits for the disk, and a batch that must wait for the
            # write lock run in the writer thread (see ``batch``). Never two at once: ``_batch_lock``.
            self.batch_engine: Engine | None = sa.create_engine(
                async_url.replace("sqlite+aiosqlite", "sqlite+pysqlite"), poolclass=sa.pool.StaticPool,
                connect_args={"check_same_thread": False})
            _install_sqlite_pragmas(self.batch_engine, begin=None, writer=background_checkpoints,
                                    synchronous=synchronous)
            self._batch_thread: ThreadPoolExecutor | None = ThreadPoolExecutor(1, thread_name_prefix="hybridflow-db")
            self._batch_connection: Connection | None = None  # kept open from batch to batch
            self._batch_lock = asyncio.Lock()
        else:
            # Writes go through one writer per process; the pool serves reads. Each connection keeps a bounded
            # cache of prepared statements (asyncpg's default of 100 per connection kept memory growing).
            try:
                self.write_engine = create_async_engine(
                    async_url, pool_size=5, max_overflow=5, pool_timeout=10,
                    connect_args={"prepared_statement_cache_size": 32},
                )
            except ImportError:
                raise ConfigError("a postgresql:// database needs the PostgreSQL driver: "
                                  "pip install 'hybridflow[postgres]'") from None
            _ping_when_idle(self.write_engine)
            self.read_engine = self.write_engine
            self.batch_engine = None
            self._batch_thread = None
        self.background_checkpoints = background_checkpoints and self.is_sqlite
        self.wal_restart_frames = wal_restart_frames

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def missing(self) -> str | None:
        """Why there is no database to read yet (a SQLite file that does not exist), else None. Asks nothing of
        the database, so it creates nothing."""
        if self.is_sqlite and self.sqlite_path is not None and not self.sqlite_path.exists():
            return (f"no database at {self.sqlite_path.resolve()}: `hybridflow serve` or `hybridflow migrate` "
                    "creates it; to use another one, give --database-url or HYBRIDFLOW_DATABASE_URL")
        return None

    async def require_schema(self) -> None:
        """``DatabaseMissing`` unless the database exists and holds HybridFlow's schema."""
        reason = self.missing()
        if reason is None and await self.schema_version() is None:
            reason = (f"{self.describe()} has no HybridFlow schema yet: `hybridflow serve` or `hybridflow migrate` "
                      "creates it")
        if reason is not None:
            raise DatabaseMissing(reason)

    def describe(self) -> str:
        """The database for humans, without its password: the SQLite file, or PostgreSQL's user@host:port/db."""
        url = sa.engine.make_url(database_url_to_async(self.url))
        if self.is_sqlite:
            return f"SQLite {Path(url.database).resolve() if url.database else '(in memory)'}"
        user = f"{url.username}@" if url.username else ""
        return f"PostgreSQL {user}{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    async def dispose(self) -> None:
        """Close every pooled connection (a final checkpoint on SQLite keeps the WAL small)."""
        if self.background_checkpoints:
            with contextlib.suppress(Exception):
                await self.checkpoint("TRUNCATE")
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
        if self._batch_thread is not None and self.batch_engine is not None:
            await asyncio.get_running_loop().run_in_executor(self._batch_thread, self._close_batch_connection)
            self._batch_thread.shutdown(wait=True)
            self._batch_thread = None

    async def batch(self, work: Callable[[Connection], T], *, alone: bool = False) -> T:
        """Run synchronous Core code in one write transaction: on PostgreSQL through ``run_sync`` on an asyncpg
        connection; on SQLite on the batching writer's own connection.

        On SQLite the statements run on the event loop itself. A batch's Python and most of SQLite's work hold the
        GIL, so in a thread of their own they never ran beside the loop; they only added a hop (0.1-0.3 ms here) and a
        GIL handover at every statement (936-999 µs of CPU per webhook under load here, against 771-877 µs with
        the statements on the loop). What does run beside the
        loop is the commit, which waits for the disk (``synchronous=FULL``): it goes to the writer thread, and the
        loop reads the next webhooks meanwhile. ``alone`` (a batch of one: no load) commits on the loop too, as the
        hop would cost more than the wait. When the write lock is taken (the CLI, a VACUUM), the loop never waits
        for it: the whole batch goes to the writer thread, which does, for up to the busy timeout."""
        if self._batch_thread is None:
            async with _transaction(self.write_engine) as conn:
                return await conn.run_sync(work)
        with _outage_is_unavailable():
            async with self._batch_lock:
                conn = self._writer_connection()
                try:
                    result = self._run_batch(conn, work, wait=False)
                except _LockTaken:
                    return await self._in_thread(self._sync_transaction, work)
                if alone:
                    self._commit_batch(conn)
                else:
                    await self._in_thread(self._commit_batch, conn)
                return result

    async def _in_thread(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)`` in the writer thread. Cancelled meanwhile, it still waits for the call to end before it
        gives the connection back (the thread goes on with it regardless)."""
        done = asyncio.get_running_loop().run_in_executor(self._batch_thread, call, *args)
        try:
            return await asyncio.shield(done)
        except asyncio.CancelledError:
            await asyncio.wait([done])
            raise

    def _writer_connection(self) -> Connection:
        """The batching writer's connection (a new one after a lost one); its busy timeout is 0 between batches:
        a batch on the event loop must not wait for the lock."""
        assert self.batch_engine is not None
        conn = self._batch_connection
        if conn is None or conn.closed or conn.invalidated:
            conn = self._batch_connection = self.batch_engine.connect()
            conn.connection.driver_connection.execute("PRAGMA busy_timeout=0")
        return conn

    def _run_batch(self, conn: Connection, work: Callable[[Connection], T], *, wait: bool) -> T:
        """``BEGIN IMMEDIATE`` sent on the driver connection itself (SQLAlchemy's begin only does its bookkeeping
        there), then the work; the transaction is left open for ``_commit_batch``. Without ``wait``, a write
        lock held elsewhere raises ``_LockTaken`` at once, before any work."""
        raw = conn.connection.driver_connection
        transaction = conn.begin()
        try:
            if wait:
                with _busy_timeout(raw, SQLITE_BUSY_TIMEOUT_MS):
                    raw.execute("BEGIN IMMEDIATE")
            else:
                try:
                    raw.execute("BEGIN IMMEDIATE")
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                    raise _LockTaken() from None
            return work(conn)
        except BaseException:
            self._abandon(conn, transaction)
            raise

    def _commit_batch(self, conn: Connection) -> None:
        transaction = conn.get_transaction()
        assert transaction is not None
        try:
            transaction.commit()
        except BaseException:
            self._abandon(conn, transaction)
            raise

    def _abandon(self, conn: Connection, transaction: sa.RootTransaction) -> None:
        """Roll back a failed batch; a connection lost on the way is replaced at the next batch."""
        with contextlib.suppress(Exception):
            transaction.rollback()
        if conn.invalidated:
            self._batch_connection = None
            with contextlib.suppress(Exception):
                conn.close()

    def _sync_transaction(self, work: Callable[[Connection], T]) -> T:
        """A whole batch in the writer thread, waiting for the write lock (see ``batch``)."""
        conn = self._writer_connection()
        result = self._run_batch(conn, work, wait=True)
        self._commit_batch(conn)
        return result

    def _close_batch_connection(self) -> None:
        """Close the writer thread's connection and its engine (in that thread)."""
        conn, self._batch_connection = self._batch_connection, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()
        if self.batch_engine is not None:
            self.batch_engine.dispose()

    def write(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A write transaction (``BEGIN IMMEDIATE`` on SQLite); database outages become ``Unavailable``."""
        return _transaction(self.write_engine)

    @contextlib.asynccontextmanager
    async def rehearsal(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction that is always rolled back (``--dry-run``)."""
        async with self.write_engine.connect() as conn:
            transaction = await conn.begin()
            try:
                yield conn
            finally:
                await transaction.rollback()

    def read(self) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
        """A read transaction on its own connection (beside the writer, on SQLite too)."""
        return _transaction(self.read_engine)

    async def ping(self) -> None:
        """Prove the database answers (``SELECT 1``)."""
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Move the WAL into the database file (SQLite only).

        A passive checkpoint never blocks the writer, but under sustained writes it never catches up with it
        either, and SQLite starts the WAL over only once a checkpoint has copied all of it: the WAL grew by about
        30 KiB per message for as long as webhooks kept coming (329 MiB after 11 000 here), and its index (the
        ``-shm`` file, mapped into every connection's memory) with it. Past ``wal_restart_frames``, the writer
        thread itself truncates the WAL between two batches: it is the one writer, so nothing competes for the
        lock, and the batches queued meanwhile wait for that one checkpoint (what passive ones left to copy)."""
        if not self.is_sqlite:
            return
        async with self.read_engine.connect() as conn:
            row = (await conn.exec_driver_sql(f"PRAGMA wal_checkpoint({mode})")).first()
        if (mode == "PASSIVE" and row is not None and row[1] > self.wal_restart_frames
                and self._batch_thread is not None):
            async with self._batch_lock:
                await self._in_thread(self._truncate_wal)

    def _truncate_wal(self) -> None:
        """A ``TRUNCATE`` checkpoint on the batching writer's own connection, between two of its batches."""
        conn = self._batch_connection
        if conn is None or conn.closed or conn.invalidated:
            return
        raw = conn.connection.driver_connection
        with _busy_timeout(raw, WAL_TRUNCATE_WAIT_MS):  # a long read must not hold up the webhooks
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    async def size(self) -> int:
        """The database's size on disk in bytes: the SQLite file with its ``-wal``; PostgreSQL's
        ``pg_database_size`` of the current database."""
        if self.is_sqlite:
            return _sqlite_size(self.sqlite_path)
        async with self.read() as conn:
            return int((await conn.execute(sa.text("SELECT pg_database_size(current_database())"))).scalar_one())

    async def incremental_vacuum(self, pages: int = 200, *, pause: float = 0.005) -> int:
        """SQLite only: give the file's free pages back to the file system, ``pages`` at a time, each step its own
        short write transaction (webhooks never wait behind a long one). Returns the pages freed. A database
        created before auto_vacuum was turned on frees nothing here (``hybridflow vacuum`` converts it)."""
        if not self.is_sqlite or self.sqlite_path is None:
            return 0
        freed = 0
        while True:
            started = time.monotonic()
            step, left = await asyncio.to_thread(_incremental_vacuum_step, self.sqlite_path, pages)
            freed += step
            if not step or not left:  # webhooks reuse free pages meanwhile: a step may free fewer than asked
                return freed
            await asyncio.sleep(max(pause, time.monotonic() - started))  # the writer gets the lock half the time

    async def vacuum(self) -> None:
        """Rewrite the database compactly: SQLite's VACUUM (which also turns on incremental auto-vacuum for a
        database created before it was the default), PostgreSQL's VACUUM (ANALYZE) of HybridFlow's tables."""
        if self.is_sqlite:
            if self.sqlite_path is not None:
                await asyncio.to_thread(_sqlite_vacuum, self.sqlite_path)
            return
        with _outage_is_unavailable():
            async with self.write_engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                tables = ", ".join(sorted(SQLModel.metadata.tables))
                await conn.exec_driver_sql(f"VACUUM (ANALYZE) {tables}")

    async def create_schema(self, migrations: Sequence[Migration] = MIGRATIONS) -> int:
        """Create the tables of a new database, or apply the pending migration steps of an older one; safe to run
        any number of times, from several processes at once. Returns the schema version."""
        async with self.write() as conn:
            if self.is_postgres:
                # Two processes starting at once must not both create the tables.
                await conn.execute(sa.text("SELECT pg_advisory_xact_lock(727274)"))
            return await conn.run_sync(_create_or_migrate, migrations)

    async def schema_version(self) -> int | None:
        """The version recorded in the database, or None when the schema was never created."""
        table = SchemaInfo.__table__
        async with self.read() as conn:
            try:
                return (await conn.execute(sa.select(table.c.version).where(table.c.id == 1))).scalar()
            except sa_exc.DBAPIError:
                return None


def _sqlite_size(path: Path | None) -> int:
    if path is None:
        return 0
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def _sqlite_connection(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
    connection.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    return connection


def _incremental_vacuum_step(path: Path, pages: int) -> tuple[int, int]:
    """Free up to ``pages`` pages; returns (pages freed, free pages left)."""
    with contextlib.closing(_sqlite_connection(path)) as connection:
        if connection.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # not incremental: nothing to give back
            return 0, 0
        before = connection.execute("PRAGMA freelist_count").fetchone()[0]
        if not before:
            return 0, 0
        # executescript steps the pragma to its end (execute() frees a single page); in autocommit, it is its
        # own transaction.
        connection.executescript(f"PRAGMA incremental_vacuum({int(pages)})")
        left = connection.execute("PRAGMA freelist_count").fetchone()[0]
        return max(before - left, 0), left


def _sqlite_vacuum(path: Path) -> None:
    with contextlib.closing(_sqlite_connection(path)) as connection:
        connection.execute("PRAGMA auto_vacuum=INCREMENTAL")  # applied by this VACUUM to an older file
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _version_of_tables(inspector: sa.Inspector) -> int | None:
    """The schema version HybridFlow's tables have when no version is recorded; None when there are none."""
    tables = set(inspector.get_table_names())
    if "tenants" not in tables:
        return None
    if "reply_jobs" in tables and "kind" not in {c["name"] for c in inspector.get_columns("reply_jobs")}:
        return 1
    if "tenant_contacts" not in tables:
        return 2
    if "daily_tokens" not in {c["name"] for c in inspector.get_columns("tenants")}:
        return 3
    if "message_tombstones" not in tables:
        return 4
    if "tenant_labels" not in tables:
        return 5
    return 6 if "handoff_tool" not in {c["name"] for c in inspector.get_columns("tenants")} else 7


def _create_or_migrate(conn: Connection, migrations: Sequence[Migration]) -> int:
    """In the schema transaction: a new database gets today's tables, an older one its pending steps."""
    table = SchemaInfo.__table__
    target = latest(migrations)
    now = datetime.now(UTC)
    inspector = sa.inspect(conn)
    current = conn.execute(sa.select(table.c.version).where(table.c.id == 1)).scalar() \
        if inspector.has_table(table.name) else None
    if current is None:
        current = _version_of_tables(inspector)
        if current is None:  # a new database
            SQLModel.metadata.create_all(conn)
            conn.execute(sa.insert(table).values(id=1, version=target, updated_at=now))
            log.info("schema.created", version=target, backend=conn.dialect.name)
            return target
        # HybridFlow's tables without their version (a partial restore, a hand-made copy): migrate from what they are.
        SchemaInfo.__table__.create(conn, checkfirst=True)
        conn.execute(sa.insert(table).values(id=1, version=current, updated_at=now))
        log.warning("schema.version_inferred", version=current, backend=conn.dialect.name)
    if current > target:
        raise SchemaTooNew(f"the database has schema version {current}, newer than this HybridFlow "
                           f"(version {target}); upgrade HybridFlow")
    if current < target:
        migrate(conn, current, migrations)
        conn.execute(sa.update(table).where(table.c.id == 1).values(version=target, updated_at=now))
    return target


@contextlib.contextmanager
def _busy_timeout(raw: sqlite3.Connection, milliseconds: int) -> Iterator[None]:
    """Let the batching writer's connection wait ``milliseconds`` for the lock, then none again (see ``batch``)."""
    raw.execute(f"PRAGMA busy_timeout={milliseconds}")
    try:
        yield
    finally:
        raw.execute("PRAGMA busy_timeout=0")


class _LockTaken(Exception):
    """SQLite's write lock is held by another connection (the batch is then run where it may wait for it)."""
