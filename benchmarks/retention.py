"""Benchmark a retention pass on a SQLite database of 200 000 messages, and webhook ingest while it runs.

    python benchmarks/retention.py                  # 200 000 messages, 50 webhooks/s, about 2 minutes
    python benchmarks/retention.py --messages 50000 --rate 100

The database is filled directly with SQL (fast: one transaction of bulk inserts, as `serve` would have written
the rows over a year): one tenant, 2 000 chats, 90 % of the messages older than ``retain_messages`` (90 days),
5 % between ``retain_raw`` (30 days) and 90 days (their raw bodies are cleared), 5 % younger; a reply job for every
fourth message and a pause event for every fortieth. Then ``hybridflow serve`` runs twice on it, each time with
webhooks posted at a steady rate (open loop: each at its planned time, whatever the answers before it):

1. with retention off (``forever``): the ingest latency without it;
2. with ``retain_raw=30d`` and ``retain_messages=90d``: ``serve`` starts its first retention pass at once, and the
   webhooks posted until its ``retention.done`` log line are the latency during the pass.

It prints both latencies, the pass's duration and what it cleared, the file's size before and after, and PASS or
MISS against the targets: a pass over 200 k messages under 60 s, and ingest p99 during it under 50 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import Server, run_command  # noqa: E402
from loadgen import percentile  # noqa: E402

from tests.support.builders import raw, upsert  # noqa: E402
from tests.support.fakes import FakeEvolution, FakeOllama  # noqa: E402
from tests.support.ports import free_port  # noqa: E402
from tests.support.serve import HYBRIDFLOW, clean_env  # noqa: E402

INSTANCE = "loja-retention"
API_KEY = "bench-evolution-api-key"
TARGET_PASS_S = 60.0
TARGET_P99_MS = 50.0
RAW_PAD = "x" * 600  # a raw body of about 1 KB, like a real Evolution 2.x capture


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _stamp(value: datetime) -> str:
    """A time as HybridFlow stores it in SQLite (UTC, no zone)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def fill(path: Path, messages: int, chats: int, now: datetime) -> dict[str, int]:
    """Bulk-insert ``messages`` messages (with replies and events) of the benchmark's tenant; rows per table."""
    rng = random.Random(16)
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA synchronous=OFF")
        (tenant_id,) = conn.execute("SELECT id FROM tenants WHERE instance = ?", (INSTANCE,)).fetchone()
        chat_ids = [f"55119{n:08d}@s.whatsapp.net" for n in range(chats)]
        conn.executemany(
            "INSERT INTO sessions (tenant_id, chat_id, chat_kind, push_name, is_paused, created_at, updated_at) "
            "VALUES (?, ?, 'user', 'Cliente', 0, ?, ?)", [(tenant_id, c, _stamp(now), _stamp(now)) for c in chat_ids])
        session_of = dict(conn.execute("SELECT chat_id, id FROM sessions WHERE tenant_id = ?", (tenant_id,)))
        rows, jobs, events = [], [], []
        for n in range(messages):
            share = n / messages  # oldest first, as they were received
            if share < 0.90:
                age = timedelta(days=400 - 309 * share / 0.90)  # 400 -> 91 days
            elif share < 0.95:
                age = timedelta(days=89 - 58 * (share - 0.90) / 0.05)  # 89 -> 31 days
            else:
                age = timedelta(days=29 * (1 - share) / 0.05, minutes=5)  # 29 days -> now
            at = _stamp(now - age)
            chat = chat_ids[rng.randrange(chats)]
            sid = session_of[chat]
            mid = f"BENCH{n:09d}"
            body = json.dumps({"event": "messages.upsert", "instance": INSTANCE, "data": {
                "key": {"remoteJid": chat, "fromMe": False, "id": mid}, "message": {"conversation": "Olá"},
                "pad": RAW_PAD}})
            rows.append((tenant_id, sid, mid, chat, "messages.upsert", "customer", 0, "text", "conversation",
                         f"Mensagem {n}", "Cliente", at, at, "reply_queued", body))
            if n % 4 == 0:
                jobs.append((tenant_id, sid, chat, "reply", mid, mid, "sent", at, 1, "Resposta", f"BOT{n:09d}", at,
                             at, at, at, at))
            if n % 40 == 0:
                events.append((tenant_id, sid, at, "paused", "human_message", "owner", mid))
        conn.executemany(
            "INSERT INTO messages (tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, "
            "message_type, text, push_name, wa_timestamp, received_at, action, raw) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany(
            "INSERT INTO reply_jobs (tenant_id, session_id, chat_id, kind, trigger_message_id, last_message_id, "
            "status, due_at, attempts, reply_text, sent_message_id, received_at, created_at, updated_at, "
            "attempted_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", jobs)
        conn.executemany(
            "INSERT INTO session_events (tenant_id, session_id, at, change, reason, actor, message_id) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)", events)
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"messages": len(rows), "reply_jobs": len(jobs), "session_events": len(events), "sessions": chats}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


@dataclass(slots=True)
class Posted:
    at: float  # wall-clock time it was sent (compared with the log's timestamps)
    ms: float  # until its answer
    ok: bool


async def post_steadily(url: str, rate: float, stop: asyncio.Event, chats: int, run: str) -> list[Posted]:
    """Customer webhooks at ``rate`` per second, each at its planned time, until ``stop`` is set."""
    results: list[Posted] = []
    pending: set[asyncio.Task[None]] = set()
    rng = random.Random(run)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(n: int) -> None:
            chat = f"55119{rng.randrange(chats):08d}@s.whatsapp.net"
            body = raw(upsert(f"Pedido {n}", instance=INSTANCE, chat=chat, message_id=f"{run}{n:08d}"))
            started, wall = time.monotonic(), time.time()
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            results.append(Posted(wall, (time.monotonic() - started) * 1000, ok))

        start, n = time.monotonic(), 0
        while not stop.is_set():
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                continue
            task = asyncio.create_task(one(n))
            pending.add(task)
            task.add_done_callback(pending.discard)
            n += 1
        await asyncio.gather(*pending)
    return results


def summary(posted: list[Posted]) -> dict[str, float]:
    latencies = sorted(p.ms for p in posted if p.ok)
    return {"webhooks": len(posted), "errors": sum(not p.ok for p in posted),
            "p50_ms": percentile(latencies, 50), "p95_ms": percentile(latencies, 95),
            "p99_ms": percentile(latencies, 99), "max_ms": latencies[-1] if latencies else 0.0}


def logged(log: Path, event: str) -> dict | None:
    """The first log line of ``event`` serve wrote, with its time as a Unix timestamp under ``"at"``."""
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict) and entry.get("event") == event:
                    return entry | {"at": datetime.fromisoformat(entry["timestamp"].replace("Z", "+00:00")).timestamp()}
    return None


async def phase(name: str, env: dict[str, str], work: Path, *, rate: float, chats: int, seconds: float | None,
                wait_for_retention: bool) -> tuple[dict[str, float], dict | None]:
    port = free_port()
    log = work / f"serve-{name}.log"
    async with Server(f"serve ({name})", [*HYBRIDFLOW, "serve"], port=port, log=log, cwd=work,
                      env={**env, "HYBRIDFLOW_PORT": str(port)}) as serve:
        stop = asyncio.Event()
        posting = asyncio.create_task(post_steadily(f"{serve.url}/webhooks/evolution", rate, stop, chats, name[:3]))
        deadline = time.monotonic() + (seconds or 600)
        done = None
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            if wait_for_retention and (done := logged(log, "retention.done")) is not None:
                break
        stop.set()
        posted = await posting
    result = summary(posted)
    if done is not None and (vacuuming := logged(log, "retention.vacuuming")) is not None:
        # The pass in its two parts: deleting rows (through serve's writer), then giving pages back.
        result["deleting"] = summary([p for p in posted if p.at < vacuuming["at"]])
        result["vacuuming"] = summary([p for p in posted if vacuuming["at"] <= p.at < done["at"]])
        result["vacuum_s"] = done["at"] - vacuuming["at"]
    say(f"{name}: {result['webhooks']} webhooks, p99 {result['p99_ms']:.1f} ms, errors {result['errors']}")
    return result, done


async def main(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="hybridflow-retention-") as directory:
        work = Path(directory)
        database = work / "hybridflow.db"
        async with FakeEvolution(api_key=API_KEY) as evolution, FakeOllama() as ollama:
            ollama.delay = 1.0  # a model answers a handful of chats per second; replies must not eat the ingest's CPU
            secret_key = (await run_command([*HYBRIDFLOW, "keys", "generate"], cwd=work, timeout=60)).strip()
            env = clean_env(database_url=f"sqlite:///{database}", secret_key=secret_key, log_format="json",
                            log_level="info", host="127.0.0.1", ollama_host=ollama.url or "",
                            evolution_url=evolution.url or "", debounce="0", retain_raw="forever",
                            retain_messages="forever")
            await run_command([*HYBRIDFLOW, "tenants", "add", INSTANCE, "--prompt", "Seja breve.", "--api-key",
                               API_KEY, "--reply-cap", "off"], env=env, cwd=work, timeout=120)
            say(f"filling {database} with {args.messages:,} messages")
            started = time.monotonic()
            counts = await asyncio.to_thread(fill, database, args.messages, args.chats, datetime.now(UTC))
            size_before = size_of(database)
            say(f"filled in {time.monotonic() - started:.1f} s: {counts}, {size_before / 2**20:.0f} MiB")
            without, _ = await phase("without retention", env, work, rate=args.rate, chats=args.chats,
                                     seconds=args.baseline, wait_for_retention=False)
            during, done = await phase("during retention", env | {"HYBRIDFLOW_RETAIN_RAW": "30d",
                                                                  "HYBRIDFLOW_RETAIN_MESSAGES": "90d"},
                                       work, rate=args.rate, chats=args.chats, seconds=args.timeout,
                                       wait_for_retention=True)
            size_after = size_of(database)
    print(report(args, counts, without, during, done, size_before, size_after))
    return 0


def report(args: argparse.Namespace, counts: dict[str, int], without: dict[str, float], during: dict[str, float],
           done: dict | None, before: int, after: int) -> str:
    def line(name: str, r: dict[str, float]) -> str:
        return (f"  {name:<18} {r['webhooks']:>6} webhooks  p50 {r['p50_ms']:6.1f} ms  p95 {r['p95_ms']:6.1f} ms  "
                f"p99 {r['p99_ms']:6.1f} ms  max {r['max_ms']:7.1f} ms  errors {int(r['errors'])}")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lines = [f"HybridFlow retention benchmark - SQLite, {counts['messages']:,} messages, {counts['reply_jobs']:,} "
             f"replies, {counts['session_events']:,} events, {counts['sessions']:,} chats; webhooks at "
             f"{args.rate:g}/s", "ingest (webhook posted -> 200):", line("without retention", without),
             line("during retention", during)]
    if done is None:
        lines.append(f"retention pass: not finished within {args.timeout:g} s  MISS")
        return "\n".join(lines)
    seconds = float(done["seconds"])
    lines += [f"retention pass: {seconds:.1f} s: {done['messages_deleted']:,} messages, {done['jobs_deleted']:,} "
              f"replies and {done['events_deleted']:,} events deleted, {done['raw_cleared']:,} raw bodies cleared, "
              f"{done['pages_freed']:,} pages given back",
              f"database file: {before / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB (with -wal)",
              *([line("  while deleting", during["deleting"]), line("  while vacuuming", during["vacuuming"]),
                 f"  (pages given back in {during['vacuum_s']:.1f} s of the pass)"] if "deleting" in during else []),
              f"  {verdict(seconds < TARGET_PASS_S)}  a pass over {counts['messages'] // 1000} k messages < "
              f"{TARGET_PASS_S:g} s ({seconds:.1f} s)",
              f"  {verdict(during['p99_ms'] < TARGET_P99_MS and not during['errors'])}  ingest p99 during the pass < "
              f"{TARGET_P99_MS:g} ms ({during['p99_ms']:.1f} ms, {int(during['errors'])} errors)"]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=200_000, help="messages in the database (default 200000)")
    parser.add_argument("--chats", type=int, default=2000, help="chats they are spread over (default 2000)")
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second during both phases (default 50)")
    parser.add_argument("--baseline", type=float, default=15.0, help="seconds of the phase without retention")
    parser.add_argument("--timeout", type=float, default=300.0, help="longest wait for the pass to finish, seconds")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse_args())))
