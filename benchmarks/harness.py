"""What the benchmark starts and always stops: child processes, a PostgreSQL cluster, and a look into the database.

Children run in sessions of their own, so a Ctrl-C reaches only the benchmark, which then stops them in order
(SIGTERM, then SIGKILL after a grace period) from ``finally`` blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support.pg import Cluster, start_cluster  # noqa: E402
from tests.support.serve import ServeProcess  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class CommandFailed(RuntimeError):
    """A command the benchmark ran exited non-zero."""


async def run_command(argv: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                      timeout: float | None = None) -> str:
    """Run a command to its end and return its stdout; the child is killed if we are interrupted or time out."""
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise CommandFailed(f"{' '.join(argv[:3])} ... exited with {process.returncode}: "
                            f"{stderr.decode(errors='replace').strip()[-2000:]}")
    return stdout.decode()


@dataclass(frozen=True, slots=True)
class Memory:
    """Resident memory of a process, in MiB: now and at its peak (VmHWM)."""

    rss: float
    peak: float


def memory(pid: int) -> Memory:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return Memory(rss=int(fields["VmRSS"].split()[0]) / 1024, peak=int(fields["VmHWM"].split()[0]) / 1024)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads included."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class Server:
    """An HTTP server in a child process on 127.0.0.1, ready once ``GET /health`` answers 200.

    The child is the tests' ``ServeProcess`` (tests/support/serve.py) with the benchmark's command line, in an
    async context manager that stops it (SIGTERM, then SIGKILL after a grace period) however the block ends.
    """

    def __init__(self, name: str, argv: Sequence[str], *, port: int, log: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self._server = ServeProcess(dict(os.environ) if env is None else env, log, command=argv, port=port,
                                    cwd=cwd or Path.cwd())
        self.url = self._server.url
        self.log = log

    @property
    def pid(self) -> int:
        return self._server.pid

    async def __aenter__(self) -> Server:
        self._server.start()
        try:
            await self._server.wait_healthy(timeout=60.0)
        except BaseException as error:
            await self.stop()
            if isinstance(error, (RuntimeError, TimeoutError)):
                raise RuntimeError(f"{self.name}: {error}") from None
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM (a graceful stop), then SIGKILL if it has not exited after ``grace`` seconds."""
        if not self._server.alive:
            return
        try:
            await asyncio.to_thread(self._server.stop, grace)
        except asyncio.CancelledError:
            self._server.kill()
            raise

    def memory(self) -> Memory:
        return memory(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        return self._server.log_tail(lines)

    def logged_problems(self) -> Counter[str]:
        """Each warning or error the server logged (JSON lines), with the first one's error text, and how often."""
        counts: Counter[str] = Counter()
        examples: dict[str, str] = {}
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = {"level": "error", "event": line[:120]}
                if not isinstance(entry, dict) or entry.get("level") not in ("warning", "error", "critical"):
                    continue
                name = f"{entry['level']}: {entry.get('event')}"
                examples.setdefault(name, f"{name} ({str(entry['error'])[:160]})" if entry.get("error") else name)
                counts[name] += 1
        return Counter({examples[name]: count for name, count in counts.items()})


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL


class DurableCluster(Cluster):
    """The test cluster restarted with PostgreSQL's default durability: fsync and synchronous_commit on."""

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c max_connections=200"
        self._ctl("-o", options, "-l", str(self.directory / "log"), "-w", "start")


@contextlib.contextmanager
def _temporary_directories_in(directory: Path) -> Iterator[None]:
    saved, tempfile.tempdir = tempfile.tempdir, str(directory)
    try:
        yield
    finally:
        tempfile.tempdir = saved


def _start_durable_cluster(parent: Path) -> Cluster:
    # start_cluster() makes its directory with tempfile.mkdtemp(): inside ``parent``, a start that is interrupted
    # half-way leaves nothing outside the directories the benchmark removes.
    with _temporary_directories_in(parent):
        cluster = start_cluster()
    cluster.stop()
    durable = DurableCluster(cluster.directory, cluster.port, cluster.run_as, cluster.pg_ctl)
    durable.start()
    return durable


def stop_postmasters(root: Path, timeout: float = 10.0) -> None:
    """Shut down (immediately) every PostgreSQL server whose data directory lies under ``root``."""
    for pidfile in root.glob("*/data/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
        except (OSError, ValueError, IndexError):
            continue
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)


@contextlib.asynccontextmanager
async def postgres_cluster(parent: Path) -> AsyncIterator[Cluster]:
    """A throwaway PostgreSQL server (tests/support/pg.py) with production durability, destroyed afterwards."""
    parent.mkdir(mode=0o755, exist_ok=True)
    parent.chmod(0o755)  # the postgres user must reach its directory inside
    starting = asyncio.ensure_future(asyncio.to_thread(_start_durable_cluster, parent))
    try:
        yield await asyncio.shield(starting)
    finally:
        with contextlib.suppress(BaseException):
            await asyncio.to_thread((await starting).destroy)
        stop_postmasters(parent)


# ---------------------------------------------------------------------------------------------------------------
# a look into the database HybridFlow writes


class Database:
    """Read-only questions to the database of the server under test (SQLite file or PostgreSQL)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.sqlite_path is not None:
            return await asyncio.to_thread(self._sqlite_rows, sql)
        connection = await asyncpg.connect(self.url)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    def _sqlite_rows(self, sql: str) -> list[tuple[Any, ...]]:
        connection = sqlite3.connect(f"file:{self.sqlite_path}?mode=ro", uri=True, timeout=10)
        try:
            return connection.execute(sql).fetchall()
        finally:
            connection.close()

    async def messages(self) -> int:
        return (await self.rows("SELECT count(*) FROM messages"))[0][0]

    async def actions(self) -> dict[str, int]:
        """How many stored messages got each action (reply_queued, paused, ignored_paused, ...)."""
        return dict(await self.rows("SELECT action, count(*) FROM messages GROUP BY action ORDER BY 2 DESC"))

    async def replies(self) -> dict[str, int]:
        """How many reply jobs are in each state."""
        return dict(await self.rows("SELECT status, count(*) FROM reply_jobs GROUP BY status ORDER BY 2 DESC"))
