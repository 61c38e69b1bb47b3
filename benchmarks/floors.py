"""What the machine itself costs, measured at the start of a run: the floors under the report's figures.

A durable SQLite commit (WAL, ``synchronous=FULL``, one small row) back to back and at idle, and a round trip from
the event loop to a thread and back. ``serve`` pays the first at least once per batch of webhooks and once more
per reply (the attempt is on disk before the send); the report sets them beside the bare handler's own CPU per
request, which no server built on aiohttp can go below.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

BACK_TO_BACK = 200
AT_IDLE = 40
IDLE_GAP = 0.05  # seconds between commits at idle: about the reply probes' pace
HOPS = 200


@dataclass(frozen=True, slots=True)
class Floors:
    commit_p50_us: float  # back to back: under load, where a batch's commit waits
    commit_cpu_us: float  # the CPU one such commit uses (the fsync's system time included)
    idle_commit_p50_us: float  # one commit after 50 ms of nothing: what a lone webhook or reply waits
    hop_p50_us: float  # the event loop -> a thread -> the event loop, doing nothing

    def lines(self) -> list[str]:
        return [f"  one SQLite commit (WAL, synchronous=FULL): p50 {self.commit_p50_us:,.0f} µs back to back "
                f"({self.commit_cpu_us:,.0f} µs of CPU), {self.idle_commit_p50_us:,.0f} µs after 50 ms idle",
                f"  one hop from the event loop to a thread and back: p50 {self.hop_p50_us:,.0f} µs"]


def _commits(path: Path, count: int, gap: float) -> tuple[float, float]:
    """p50 wall time and mean CPU time of ``count`` one-row commits, ``gap`` seconds apart, in µs."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("CREATE TABLE IF NOT EXISTS t (body TEXT)")
        walls = []
        before = resource.getrusage(resource.RUSAGE_THREAD)
        for _ in range(count):
            started = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
            connection.execute("COMMIT")
            walls.append(time.perf_counter() - started)
            if gap:
                time.sleep(gap)
        after = resource.getrusage(resource.RUSAGE_THREAD)
    finally:
        connection.close()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return statistics.median(walls) * 1e6, cpu / count * 1e6


async def _hops() -> float:
    loop = asyncio.get_running_loop()
    walls = []
    with ThreadPoolExecutor(1) as thread:
        for _ in range(HOPS):
            started = time.perf_counter()
            await loop.run_in_executor(thread, int)
            walls.append(time.perf_counter() - started)
    return statistics.median(walls) * 1e6


async def measure(directory: Path) -> Floors:
    """The floors, on the file system of ``directory`` (where the benchmark's SQLite database lives)."""
    path = directory / "floors.db"
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(1) as thread:  # the commits sleep between them: off the loop serving the fakes
        busy, cpu = await loop.run_in_executor(thread, _commits, path, BACK_TO_BACK, 0.0)
        idle, _ = await loop.run_in_executor(thread, _commits, path, AT_IDLE, IDLE_GAP)
    for suffix in ("", "-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    return Floors(commit_p50_us=busy, commit_cpu_us=cpu, idle_commit_p50_us=idle, hop_p50_us=await _hops())
