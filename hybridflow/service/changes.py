"""The change cursor: where the database is, so that a watcher (the console's live pages) learns what changed
since it last looked, whichever process made the change (``serve`` itself, another ``serve`` on the same
PostgreSQL, a CLI command on the same SQLite file).

It needs no table of its own. Rows that are only added are followed by their ids: the highest message id (a new
message, with its decision) and the highest session event id (a pause or a resume). Jobs change in place, but only
while they are open (queued, due again, being written, being sent), and the open ones are few and indexed by
status: the cursor keeps them with their status and attempts, so a job that is queued, moves on or finishes shows
as a change. Tenants are few: a digest of their pause columns and ``updated_at`` covers a tenant paused as a whole.

A cursor travels as a short token (the ids and two digests, e.g. in an event stream's ``Last-Event-ID``). From a
token the chats that changed are known by their ids; when only a digest differs, ``chats`` is None: anything
may have changed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hybridflow.models import EVENTS, JOBS, MESSAGES, OPEN_JOB_STATES, SESSIONS, TENANTS

MAX_NAMED = 200  # more changed rows than this since a cursor: "anything may have changed", not a long list
ChatKey = tuple[str, str]  # (instance, chat_id)


def _digest(items: Any) -> str:
    return hashlib.sha1(repr(items).encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where the database was when it was read; ``open_jobs`` (id -> (status, attempts, session id)) is known only
    to the process that read it, the token carries its digest."""

    message_id: int
    event_id: int
    job_id: int
    jobs_digest: str
    tenants_digest: str
    open_jobs: dict[int, tuple[str, int, int]] | None = field(default=None, compare=False)

    @property
    def token(self) -> str:
        return f"{self.message_id}.{self.event_id}.{self.job_id}.{self.jobs_digest}.{self.tenants_digest}"

    @classmethod
    def parse(cls, token: str) -> Cursor | None:
        """A cursor from its token; None for anything that is not one (a stale or made-up header)."""
        parts = token.strip().split(".")
        if len(parts) != 5 or not all(p.isdigit() and len(p) < 19 for p in parts[:3]):
            return None
        if not all(len(p) == 12 and all(c in "0123456789abcdef" for c in p) for p in parts[3:]):
            return None
        return cls(int(parts[0]), int(parts[1]), int(parts[2]), parts[3], parts[4])


@dataclass(frozen=True, slots=True)
class Changes:
    """What changed between two cursors: the chats by (instance, chat_id), None for "anything may have", and
    ``tenants`` when a tenant's pause changed."""

    cursor: Cursor
    chats: frozenset[ChatKey] | None
    tenants: bool = False

    def __bool__(self) -> bool:
        return self.chats is None or bool(self.chats) or self.tenants

    def as_dict(self) -> dict[str, Any]:
        chats = None if self.chats is None else sorted(f"{i}/{c}" for i, c in self.chats)
        return {"cursor": self.cursor.token, "chats": chats, "tenants": self.tenants}


async def read(conn: AsyncConnection) -> Cursor:
    """The cursor of the database now."""
    top = (await conn.execute(sa.select(
        sa.select(sa.func.coalesce(sa.func.max(MESSAGES.c.id), 0)).scalar_subquery(),
        sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.id), 0)).scalar_subquery(),
        sa.select(sa.func.coalesce(sa.func.max(JOBS.c.id), 0)).scalar_subquery()))).one()
    open_jobs = {row.id: (str(row.status), int(row.attempts), int(row.session_id)) for row in await conn.execute(
        sa.select(JOBS.c.id, JOBS.c.status, JOBS.c.attempts, JOBS.c.session_id).where(
            JOBS.c.status.in_(OPEN_JOB_STATES)))}
    tenants = (await conn.execute(sa.select(TENANTS.c.id, TENANTS.c.paused_at, TENANTS.c.paused_until,
                                            TENANTS.c.updated_at, TENANTS.c.removed_at).order_by(TENANTS.c.id))).all()
    return Cursor(int(top[0]), int(top[1]), int(top[2]), _digest(sorted(open_jobs.items())),
                  _digest([tuple(t) for t in tenants]), open_jobs)


async def since(conn: AsyncConnection, previous: Cursor) -> Changes:
    """What changed since ``previous``, with the cursor of now."""
    now = await read(conn)
    if now == previous:
        return Changes(now, frozenset())
    sessions: set[int] = set()
    named = True
    for table, column, last in ((MESSAGES, MESSAGES.c.id, previous.message_id),
                                (EVENTS, EVENTS.c.id, previous.event_id), (JOBS, JOBS.c.id, previous.job_id)):
        rows = (await conn.execute(sa.select(table.c.session_id).where(column > last).order_by(column)
                                   .limit(MAX_NAMED + 1))).scalars().all()
        named = named and len(rows) <= MAX_NAMED
        sessions.update(rows)
    if now.jobs_digest != previous.jobs_digest:
        if previous.open_jobs is None:
            named = False
        else:
            assert now.open_jobs is not None
            moved = {job for job in previous.open_jobs.keys() | now.open_jobs.keys()
                     if previous.open_jobs.get(job) != now.open_jobs.get(job)}
            sessions.update((previous.open_jobs.get(job) or now.open_jobs[job])[2] for job in moved)
    tenants = now.tenants_digest != previous.tenants_digest
    if not named:
        return Changes(now, None, tenants)
    return Changes(now, await _chat_keys(conn, sessions), tenants)


async def _chat_keys(conn: AsyncConnection, session_ids: set[int]) -> frozenset[ChatKey]:
    if not session_ids:
        return frozenset()
    rows = await conn.execute(sa.select(TENANTS.c.instance, SESSIONS.c.chat_id)
                              .join(TENANTS, TENANTS.c.id == SESSIONS.c.tenant_id)
                              .where(SESSIONS.c.id.in_(sorted(session_ids))))
    return frozenset((row.instance, row.chat_id) for row in rows)


__all__ = ["ChatKey", "Changes", "Cursor", "read", "since"]
