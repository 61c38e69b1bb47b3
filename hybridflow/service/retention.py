"""Data lifecycle: retention (raw payloads cleared, old messages deleted) and forgetting one chat on request.

Both delete rows while ``serve`` runs, so every write is a short transaction of its own, submitted to the process's
batching writer like any webhook: retention works in batches (50 to 5 000 rows, sized to hold the writer about
``BATCH_SECONDS``) and pauses between them, so a webhook waits behind one short batch at most, never behind a pass. On PostgreSQL each batch picks its rows with
``FOR UPDATE SKIP LOCKED``: two ``serve`` replicas (or a ``sweep`` from cron) running at once take different rows
and never wait for each other.

A deleted message leaves a tombstone (tenant and message id, no content, no chat) for ``TOMBSTONE_DAYS``, so that
Evolution's retries and replays of it are answered ``duplicate`` instead of being new again; that is why a message
retention shorter than two days is refused (``config.MIN_MESSAGE_RETENTION``). A session row is never deleted by
retention: a paused chat stays paused, whatever the age of its messages.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from hybridflow import jobs
from hybridflow.config import Settings
from hybridflow.models import ALIASES, CHAT_LABELS, EVENTS, JOBS, MESSAGES, RAW_KEPT, SESSIONS, TENANTS, TOMBSTONES
from hybridflow.service.tenants import effective_retention
from hybridflow.statements import add_tombstones, echo_key, pairs_in
from hybridflow.store import Store

log = structlog.get_logger("hybridflow.retention")

BATCH = 500  # rows of the first transaction of a pass; then sized to take about BATCH_SECONDS
MIN_BATCH, MAX_BATCH = 50, 5000
BATCH_SECONDS = 0.008  # how long one batch may hold the writer (and SQLite's write lock): a webhook waits no longer
PAUSE = 0.005  # the least pause between batches (and at least half the batch's time: retention gets 2/3 of the writer)
TOMBSTONE_DAYS = 7  # a deleted message's id answers "duplicate" this long (at least 2 days: Evolution's replays)
VACUUM_PAGES = 200  # SQLite pages given back per step (800 KB of 4 KiB pages: a few milliseconds)
Submit = Callable[[jobs.WriteOp[Any]], Awaitable[Any]]


@dataclass(slots=True)
class RetentionReport:
    """What one retention pass cleared."""

    raw_cleared: int = 0
    messages_deleted: int = 0
    jobs_deleted: int = 0
    events_deleted: int = 0
    tombstones_pruned: int = 0
    seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "seconds"}

    def as_dict(self) -> dict[str, int]:
        return self.counts()

    @property
    def anything(self) -> bool:
        return any(self.counts().values())


@dataclass(frozen=True, slots=True)
class Policy:
    """A tenant's effective retention (None: forever)."""

    tenant_id: int
    instance: str
    retain_raw: float | None
    retain_messages: float | None


@dataclass(frozen=True, slots=True)
class Forgotten:
    """What ``forget`` erased of one chat."""

    instance: str
    chat_id: str
    messages: int = 0
    replies: int = 0
    events: int = 0
    labels: int = 0  # labels the owner had put on the chat
    sessions: int = 0
    waited: float = 0.0  # seconds spent letting a reply that was being sent finish

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- one batch each: synchronous Core code over the writer's connection -------------------------------------------


def _pick(conn: Connection, query: sa.Select) -> list[Any]:
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return conn.execute(query).all()


def clear_raw(conn: Connection, tenant_id: int, cutoff: datetime, limit: int) -> int:
    """Clear the raw body of up to ``limit`` of a tenant's messages received before ``cutoff``."""
    ids = [row.id for row in _pick(conn, sa.select(MESSAGES.c.id).where(
        MESSAGES.c.tenant_id == tenant_id, MESSAGES.c.received_at < cutoff, sa.text(RAW_KEPT))
        .order_by(MESSAGES.c.received_at).limit(limit))]
    if ids:
        conn.execute(sa.update(MESSAGES).where(MESSAGES.c.id.in_(ids)).values(raw=None))
    return len(ids)


def delete_messages(conn: Connection, tenant_id: int, cutoff: datetime, limit: int, now: datetime) -> int:
    """Delete up to ``limit`` of a tenant's messages received before ``cutoff``, leaving their ids as tombstones."""
    rows = _pick(conn, sa.select(MESSAGES.c.id, MESSAGES.c.message_id).where(
        MESSAGES.c.tenant_id == tenant_id, MESSAGES.c.received_at < cutoff)
        .order_by(MESSAGES.c.received_at).limit(limit))
    if rows:
        add_tombstones(conn, [(tenant_id, row.message_id) for row in rows], now)
        conn.execute(sa.delete(MESSAGES).where(MESSAGES.c.id.in_([row.id for row in rows])))
    return len(rows)


def delete_events(conn: Connection, tenant_id: int, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` of a tenant's pause/resume events before ``cutoff`` (the sessions keep their state)."""
    ids = [row.id for row in _pick(conn, sa.select(EVENTS.c.id).where(
        EVENTS.c.tenant_id == tenant_id, EVENTS.c.at < cutoff).order_by(EVENTS.c.at).limit(limit))]
    if ids:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.id.in_(ids)))
    return len(ids)


def prune_tombstones(conn: Connection, cutoff: datetime, limit: int) -> int:
    """Forget up to ``limit`` tombstones older than ``cutoff``."""
    rows = _pick(conn, sa.select(TOMBSTONES.c.tenant_id, TOMBSTONES.c.message_id).where(
        TOMBSTONES.c.deleted_at < cutoff).order_by(TOMBSTONES.c.deleted_at).limit(limit))
    if rows:
        conn.execute(sa.delete(TOMBSTONES).where(
            TOMBSTONES.c.deleted_at < cutoff,
            pairs_in(TOMBSTONES.c.tenant_id, TOMBSTONES.c.message_id, [(r.tenant_id, r.message_id) for r in rows])))
    return len(rows)


def erase_chat(conn: Connection, tenant_id: int, chat_id: str, now: datetime, *,
               let_sends_finish: bool) -> dict[str, int] | None:
    """Erase one chat in one transaction: its messages (their ids become tombstones), jobs, events and session.
    None, with nothing changed, when ``let_sends_finish`` and a reply to it is being sent right now."""
    query = sa.select(SESSIONS.c.id).where(SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.chat_id == chat_id)
    if conn.dialect.name == "postgresql":
        # The session first, as webhooks and reply workers lock it before the chat's other rows.
        query = query.with_for_update()
    session_id = conn.execute(query).scalar()
    if session_id is None:
        return {"messages": 0, "replies": 0, "events": 0, "labels": 0, "sessions": 0}
    if let_sends_finish and jobs.sending_for_session(conn, session_id):
        return None
    ids = set(conn.execute(sa.select(MESSAGES.c.message_id).where(MESSAGES.c.session_id == session_id)).scalars())
    ids |= set(conn.execute(sa.select(JOBS.c.sent_message_id).where(
        JOBS.c.session_id == session_id, JOBS.c.sent_message_id.is_not(None))).scalars())
    # A text handed to Evolution whose echo has not come back (a send that timed out, is being retried, or whose
    # outcome is unknown) may still echo later: its tombstone keeps that echo from recreating the chat.
    for text, parts in conn.execute(sa.select(JOBS.c.reply_text, JOBS.c.parts).where(
            JOBS.c.session_id == session_id, JOBS.c.reply_text.is_not(None), JOBS.c.attempted_at.is_not(None),
            JOBS.c.sent_message_id.is_(None))):
        ids |= {echo_key(chat_id, t) for t in (jobs.load_parts(parts) or (text,))}  # a paced reply: each part
    add_tombstones(conn, [(tenant_id, mid) for mid in sorted(ids)], now)
    counts = {"messages": conn.execute(sa.delete(MESSAGES).where(MESSAGES.c.session_id == session_id)).rowcount,
              "replies": jobs.delete_for_session(conn, session_id),
              "events": conn.execute(sa.delete(EVENTS).where(EVENTS.c.session_id == session_id)).rowcount}
    # The labels the owner put on the chat, and its @lid, are about this customer too.
    counts["labels"] = conn.execute(sa.delete(CHAT_LABELS).where(CHAT_LABELS.c.tenant_id == tenant_id,
                                                                 CHAT_LABELS.c.chat_id == chat_id)).rowcount
    conn.execute(sa.delete(ALIASES).where(ALIASES.c.tenant_id == tenant_id, ALIASES.c.chat_id == chat_id))
    counts["sessions"] = conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.id == session_id)).rowcount
    return counts


# -- the passes ---------------------------------------------------------------------------------------------------


class Retention:
    """Enforces every tenant's retention, and forgets chats, through the process's writer."""

    def __init__(self, store: Store, settings: Settings, submit: Submit, clock: Callable[[], datetime], *,
                 batch: int = BATCH, max_batch: int = MAX_BATCH, pause: float = PAUSE) -> None:
        self.store, self.settings, self.submit, self.clock = store, settings, submit, clock
        self.batch, self.max_batch, self.pause = batch, max_batch, pause
        self._size = min(batch, max_batch)

    async def policies(self) -> list[Policy]:
        """Every tenant's retention, removed tenants whose history was kept included."""
        async with self.store.read() as conn:
            rows = (await conn.execute(sa.select(TENANTS.c.id, TENANTS.c.instance, TENANTS.c.retain_raw,
                                                 TENANTS.c.retain_messages).order_by(TENANTS.c.id))).all()
        return [Policy(r.id, r.instance, effective_retention(r.retain_raw, self.settings.retain_raw),
                       effective_retention(r.retain_messages, self.settings.retain_messages)) for r in rows]

    async def _drain(self, op: Callable[[int], jobs.WriteOp[int]]) -> int:
        """Submit ``op(size)`` batch after batch until one comes back short; the rows it did in all. Each batch is
        sized from how long the one before took (``BATCH_SECONDS``), and followed by a pause of half as long."""
        total = 0
        while True:
            size = self._size
            started = time.monotonic()
            done = await self.submit(op(size))
            took = time.monotonic() - started
            total += done
            if done < size:
                return total
            if took > 2 * BATCH_SECONDS:
                self._size = max(MIN_BATCH, size // 2)
            elif took < BATCH_SECONDS / 2:
                self._size = min(self.max_batch, size * 2)
            await asyncio.sleep(max(self.pause, took / 2))

    async def enforce(self) -> RetentionReport:
        """One pass over every tenant: raw bodies cleared, old messages, replies and events deleted, old tombstones
        pruned; on SQLite the freed pages go back to the file system."""
        started = time.monotonic()
        now = self.clock()
        report = RetentionReport()
        self._size = min(self.batch, self.max_batch)
        for policy in await self.policies():
            tid = policy.tenant_id
            if policy.retain_messages is not None:
                cutoff = now - timedelta(seconds=policy.retain_messages)
                report.messages_deleted += await self._drain(
                    lambda n: functools.partial(delete_messages, tenant_id=tid, cutoff=cutoff, limit=n, now=now))
                report.jobs_deleted += await self._drain(
                    lambda n: functools.partial(jobs.delete_finished_before, tenant_id=tid, cutoff=cutoff, limit=n))
                report.events_deleted += await self._drain(
                    lambda n: functools.partial(delete_events, tenant_id=tid, cutoff=cutoff, limit=n))
            if policy.retain_raw is not None:
                cutoff = now - timedelta(seconds=policy.retain_raw)
                report.raw_cleared += await self._drain(
                    lambda n: functools.partial(clear_raw, tenant_id=tid, cutoff=cutoff, limit=n))
        stale = now - timedelta(days=TOMBSTONE_DAYS)
        report.tombstones_pruned = await self._drain(
            lambda n: functools.partial(prune_tombstones, cutoff=stale, limit=n))
        freed = 0
        if report.anything and self.store.is_sqlite:
            log.info("retention.vacuuming", **report.counts(), seconds=round(time.monotonic() - started, 3))
            freed = await self.store.incremental_vacuum(VACUUM_PAGES, pause=self.pause)
        report.seconds = time.monotonic() - started
        if report.anything:
            log.info("retention.done", **report.counts(), pages_freed=freed, seconds=round(report.seconds, 3))
        return report

    async def forget(self, tenant_id: int, instance: str, chat_id: str, *, settle: float) -> Forgotten:
        """Erase one chat. A reply being sent to it right now (its text may be at Evolution already) is given up
        to ``settle`` seconds to finish, so that its echo is recognised as ours and erased too; after that the
        chat is erased anyway (the send, if it still completes, recreates nothing: see ``jobs.mark_sent``)."""
        started = time.monotonic()
        while True:
            hurry = time.monotonic() - started >= settle
            counts = await self.submit(functools.partial(erase_chat, tenant_id=tenant_id, chat_id=chat_id,
                                                         now=self.clock(), let_sends_finish=not hurry))
            if counts is not None:
                return Forgotten(instance, chat_id, **counts, waited=round(time.monotonic() - started, 3))
            await asyncio.sleep(0.1)


__all__ = ["BATCH", "Forgotten", "Policy", "Retention", "RetentionReport", "TOMBSTONE_DAYS", "erase_chat"]
