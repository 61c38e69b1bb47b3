"""Ingestion: the decision for each message, and the batch that stores messages, sessions and decisions at once.

``decide`` is the state machine (pure: it mutates only the in-memory session it is given). ``store_batch`` runs it
for every message of a batch inside one transaction (synchronous Core code: the store runs a whole batch in one
hop to the database thread, see ``Store.batch``): sessions are created and locked (``FOR UPDATE`` on
PostgreSQL, the single ``BEGIN IMMEDIATE`` writer on SQLite) before duplicates are checked, so two processes that
receive the same message at once serialize on the session row and exactly one stores it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from hybridflow import events as ev
from hybridflow.models import QUEUED, SENT, SKIPPED_PAUSED, UNKNOWN, ChatSession, Message, ReplyJob, SessionEvent
from hybridflow.service.tenants import TenantConfig

SESSIONS = ChatSession.__table__
MESSAGES = Message.__table__
EVENTS = SessionEvent.__table__
JOBS = ReplyJob.__table__

# Actions answered to the webhook and logged.
REPLY_QUEUED, PAUSED, IGNORED_PAUSED = "reply_queued", "paused", "ignored_paused"
DUPLICATE, OWN_MESSAGE, STORED, IGNORED_EVENT = "duplicate", "own_message", "stored", "ignored_event"
# Who wrote a message.
CUSTOMER, OWNER, API, BOT = "customer", "owner", "api", "bot"
# Why a session was paused or resumed.
HUMAN_MESSAGE, API_TAKEOVER, AUTO_RESUME, OPERATOR = "human_message", "api_takeover", "auto_resume", "operator"

# An echo of our own reply is recognised by its id, or by chat + text within this window (the echo can arrive
# before the send call has returned the id).
ECHO_WINDOW = timedelta(minutes=10)
MAX_TEXT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message-carrying webhook of a known tenant, parsed, with its raw body."""

    tenant: TenantConfig
    event: ev.Event
    raw: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    """The decision for one webhook, as answered to Evolution and logged."""

    action: str
    instance: str | None
    chat_id: str | None = None
    message_id: str | None = None
    reason: str | None = None
    paused: bool | None = None
    resumes_at: datetime | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "instance": self.instance}
        for name in ("chat_id", "message_id", "reason", "paused"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.resumes_at is not None:
            out["resumes_at"] = self.resumes_at.isoformat()
        return out


@dataclass(slots=True)
class SessionState:
    """A session row being decided on; ``dirty`` when it must be written back."""

    id: int
    tenant_id: int
    chat_id: str
    is_paused: bool
    pause_reason: str | None
    paused_by: str | None
    paused_at: datetime | None
    resumes_at: datetime | None
    last_human_at: datetime | None
    last_message_at: datetime | None
    push_name: str | None
    dirty: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)

    def pause(self, reason: str, actor: str, now: datetime, resumes_at: datetime | None, message_id: str | None) -> None:
        """Pause (or extend a pause). Only the transition is recorded as an event."""
        if self.is_paused and self.resumes_at is None:
            pass  # paused by an operator until further notice: a human message does not shorten that
        elif self.is_paused and self.resumes_at is not None and resumes_at is not None:
            self.resumes_at = max(self.resumes_at, resumes_at)
        else:
            self.resumes_at = resumes_at
        if not self.is_paused:
            self.is_paused, self.pause_reason, self.paused_by, self.paused_at = True, reason, actor, now
            self.changes.append(_change("paused", reason, actor, now, message_id, self.resumes_at))
        self.dirty = True

    def resume(self, reason: str, actor: str, now: datetime, message_id: str | None = None) -> None:
        if self.is_paused:
            self.changes.append(_change("resumed", reason, actor, now, message_id, None))
        self.is_paused, self.pause_reason, self.paused_by, self.paused_at, self.resumes_at = False, None, None, None, None
        self.dirty = True


def _change(change: str, reason: str, actor: str, at: datetime, message_id: str | None,
            resumes_at: datetime | None) -> dict[str, Any]:
    return {"change": change, "reason": reason, "actor": actor, "at": at, "message_id": message_id,
            "resumes_at": resumes_at}


def clean_text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """Text safe for both databases: no NUL, no lone surrogates, bounded length."""
    if value is None:
        return None
    value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def direction_of(event: ev.Event) -> str:
    """Customer, owner typing on a linked device, or another API client of the instance."""
    if event.event == "send.message":
        return API
    return OWNER if event.from_me else CUSTOMER


def decide(item: Inbound, session: SessionState, now: datetime, *, duplicate: bool, echo: bool) -> tuple[str, str | None]:
    """The action for one message, applying its effect to ``session``. Returns (action, reason)."""
    event, tenant = item.event, item.tenant
    if echo:
        return OWN_MESSAGE, None
    if duplicate:
        return DUPLICATE, None
    session.last_message_at = now
    session.dirty = True
    if event.chat_kind in (ev.BROADCAST, ev.NEWSLETTER):
        return STORED, event.chat_kind
    if event.chat_kind == ev.GROUP and not tenant.allow_groups:
        return STORED, "group"
    direction = direction_of(event)
    if direction != CUSTOMER:
        session.last_human_at = now
        reason = API_TAKEOVER if direction == API else HUMAN_MESSAGE
        session.pause(reason, direction, now, now + timedelta(seconds=tenant.resume_after), event.message_id)
        return PAUSED, reason
    if event.push_name:
        session.push_name = clean_text(event.push_name, 200)
    if session.is_paused and session.resumes_at is not None and session.resumes_at <= now:
        session.resume(AUTO_RESUME, "webhook", now, event.message_id)
    if session.is_paused:
        return IGNORED_PAUSED, session.pause_reason
    if event.kind not in (ev.TEXT, ev.MEDIA) or not event.text:
        return STORED, event.kind if event.kind != ev.MEDIA else "media_without_text"
    return REPLY_QUEUED, None


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """The batch's statements, built once per dialect (building an upsert costs more than running it)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    upsert_job, upsert_session = insert(JOBS), insert(SESSIONS)
    return {
        "lock_sessions": upsert_session.on_conflict_do_update(
            index_elements=["tenant_id", "chat_id"], set_={"updated_at": upsert_session.excluded.updated_at},
        ).returning(*SESSIONS.c),
        "new_messages": insert(MESSAGES).on_conflict_do_nothing(index_elements=["tenant_id", "message_id"]),
        "queue_jobs": upsert_job.on_conflict_do_update(
            index_elements=["session_id"],
            index_where=sa.text("status = 'queued'"),  # literal: PostgreSQL matches the partial index by text
            set_={"due_at": upsert_job.excluded.due_at, "last_message_id": upsert_job.excluded.last_message_id,
                  "updated_at": upsert_job.excluded.updated_at},
        ),
        "update_sessions": sa.update(SESSIONS).where(SESSIONS.c.id == sa.bindparam("b_id")).values(
            updated_at=sa.bindparam("b_updated_at"), **{c: sa.bindparam(f"b_{c}") for c in SESSION_COLUMNS}),
    }


SESSION_COLUMNS = ("is_paused", "pause_reason", "paused_by", "paused_at", "resumes_at", "last_human_at",
                   "last_message_at", "push_name")


def pairs_in(tenant_column: sa.Column, key_column: sa.Column, pairs: Iterable[tuple[int, str]]) -> Any:
    """``(tenant, key) IN pairs`` written so that both databases use the composite index.

    SQLite scans the whole table for a row-value IN list; ``tenant = ? AND key IN (...)`` per tenant is an index
    search on both backends.
    """
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, key in pairs:
        by_tenant.setdefault(tenant_id, []).append(key)
    return sa.or_(*(sa.and_(tenant_column == t, key_column.in_(keys)) for t, keys in by_tenant.items()))


def _session_state(row: Any) -> SessionState:
    return SessionState(
        id=row.id, tenant_id=row.tenant_id, chat_id=row.chat_id, is_paused=row.is_paused,
        pause_reason=row.pause_reason, paused_by=row.paused_by, paused_at=row.paused_at,
        resumes_at=row.resumes_at, last_human_at=row.last_human_at, last_message_at=row.last_message_at,
        push_name=row.push_name,
    )


def lock_sessions(conn: Connection, keys: dict[tuple[int, str], str], now: datetime) -> dict[tuple[int, str], SessionState]:
    """Create the sessions that do not exist yet and lock all of them for this transaction: one upsert that
    returns the rows (on PostgreSQL, ON CONFLICT DO UPDATE locks each row as FOR UPDATE would)."""
    # Sorted: two processes upserting the same sessions take their row locks in one order (no deadlock).
    rows = [{"tenant_id": t, "chat_id": c, "chat_kind": keys[(t, c)], "is_paused": False, "created_at": now,
             "updated_at": now} for (t, c) in sorted(keys)]
    result = conn.execute(_statements(conn.dialect.name)["lock_sessions"], rows)
    return {(row.tenant_id, row.chat_id): _session_state(row) for row in result}


def stored_messages(conn: Connection, ids: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """Which (tenant, message id) pairs are already stored, with who wrote them."""
    query = sa.select(MESSAGES.c.tenant_id, MESSAGES.c.message_id, MESSAGES.c.direction).where(
        pairs_in(MESSAGES.c.tenant_id, MESSAGES.c.message_id, ids))
    return {(row.tenant_id, row.message_id): row.direction for row in conn.execute(query)}


@dataclass(slots=True)
class _OwnSends:
    by_id: dict[tuple[int, str], int]
    # (tenant, chat, text) -> ids of the jobs that sent that text whose echo has not been seen yet, oldest first
    by_text: dict[tuple[int, str, str], list[int]]


def own_sends(conn: Connection, items: list[Inbound], sessions: dict[tuple[int, str], SessionState],
                    now: datetime) -> _OwnSends:
    """Replies HybridFlow sent or is sending to the chats of the fromMe messages of a batch."""
    found = _OwnSends({}, {})
    mine = [i for i in items if i.event.from_me or i.event.event == "send.message"]
    if not mine:
        return found
    session_ids = {sessions[(i.tenant.id, i.event.chat_jid)].id for i in mine}
    query = sa.select(JOBS.c.id, JOBS.c.tenant_id, JOBS.c.chat_id, JOBS.c.reply_text, JOBS.c.sent_message_id).where(
        JOBS.c.session_id.in_(session_ids),
        JOBS.c.attempted_at >= now - ECHO_WINDOW,  # older echoes find the reply's own message row instead
        JOBS.c.reply_text.is_not(None),
    ).order_by(JOBS.c.id)
    for row in conn.execute(query):
        if row.sent_message_id:
            found.by_id[(row.tenant_id, row.sent_message_id)] = row.id
        elif row.reply_text:
            found.by_text.setdefault((row.tenant_id, row.chat_id, row.reply_text.strip()), []).append(row.id)
    return found


def _is_echo(item: Inbound, sends: _OwnSends, matched: dict[int, str]) -> bool:
    event = item.event
    if not (event.from_me or event.event == "send.message"):
        return False
    if (item.tenant.id, event.message_id) in sends.by_id:
        return True
    waiting = sends.by_text.get((item.tenant.id, event.chat_jid, (event.text or "").strip()))
    if not waiting or not event.text:
        return False
    job_id = waiting.pop(0)  # the same text sent twice: each echo settles one send
    matched[job_id] = event.message_id  # remember the id: the echo proves the send reached WhatsApp
    sends.by_id[(item.tenant.id, event.message_id)] = job_id
    return True


def _message_row(item: Inbound, session: SessionState, now: datetime, action: str, echo: bool) -> dict[str, Any]:
    event = item.event
    return {
        "tenant_id": item.tenant.id, "session_id": session.id, "message_id": event.message_id,
        "chat_id": event.chat_jid, "event": event.event, "direction": BOT if echo else direction_of(event),
        "from_me": event.from_me, "kind": event.kind, "message_type": clean_text(event.message_type, 100),
        "text": clean_text(event.text), "push_name": clean_text(event.push_name, 200),
        "wa_timestamp": event.timestamp, "received_at": now, "action": action, "raw": clean_text(item.raw, 10**9),
    }


def store_batch(conn: Connection, items: list[Inbound], now: datetime) -> list[IngestResult]:
    """Store and decide a batch of message webhooks inside the caller's transaction."""
    keys = {(i.tenant.id, i.event.chat_jid): i.event.chat_kind for i in items}
    sessions = lock_sessions(conn, keys, now)
    stored = stored_messages(conn, {(i.tenant.id, i.event.message_id) for i in items})
    sends = own_sends(conn, items, sessions, now)
    matched_echoes: dict[int, str] = {}
    results, messages, jobs = [], [], {}
    for item in items:
        event, session = item.event, sessions[(item.tenant.id, item.event.chat_jid)]
        key = (item.tenant.id, event.message_id)
        duplicate = key in stored
        # Our own reply is stored when it is sent: a late (or repeated) echo of it finds that row.
        echo = stored.get(key) == BOT or _is_echo(item, sends, matched_echoes)
        action, reason = decide(item, session, now, duplicate=duplicate, echo=echo)
        if not duplicate:
            stored[key] = BOT if echo else direction_of(event)
            messages.append(_message_row(item, session, now, action, echo))
        if action == REPLY_QUEUED:
            job = jobs.setdefault(session.id, {
                "tenant_id": item.tenant.id, "session_id": session.id, "chat_id": session.chat_id,
                "trigger_message_id": event.message_id, "status": QUEUED, "attempts": 0,
                "received_at": now, "created_at": now,
            })
            job.update(last_message_id=event.message_id, updated_at=now,
                       due_at=now + timedelta(seconds=item.tenant.debounce))
        results.append(IngestResult(action, item.tenant.instance, event.chat_jid, event.message_id, reason,
                                    session.is_paused, session.resumes_at))
    if messages:
        conn.execute(_statements(conn.dialect.name)["new_messages"], messages)
    _write_sessions(conn, [s for s in sessions.values() if s.dirty], now)
    _write_jobs(conn, list(jobs.values()), matched_echoes, now)
    return results


def _write_sessions(conn: Connection, dirty: list[SessionState], now: datetime) -> None:
    if not dirty:
        return
    conn.execute(_statements(conn.dialect.name)["update_sessions"],
                 [{"b_id": s.id, "b_updated_at": now, **{f"b_{c}": getattr(s, c) for c in SESSION_COLUMNS}}
                  for s in dirty])
    changes = [{"tenant_id": s.tenant_id, "session_id": s.id, **c} for s in dirty for c in s.changes]
    if changes:
        conn.execute(sa.insert(EVENTS), changes)
    paused_now = [s.id for s in dirty if any(c["change"] == "paused" for c in s.changes)]
    if paused_now:
        # Replies still waiting for a chat that a human just took over are dropped at once.
        conn.execute(
            # The literal lets both databases use the partial index of queued jobs per session.
            sa.update(JOBS).where(JOBS.c.session_id.in_(paused_now), sa.text("status = 'queued'"))
            .values(status=SKIPPED_PAUSED, updated_at=now, last_error="paused before the reply was generated")
        )


def _write_jobs(conn: Connection, jobs: list[dict[str, Any]], echoes: dict[int, str],
                     now: datetime) -> None:
    if jobs:
        conn.execute(_statements(conn.dialect.name)["queue_jobs"], jobs)
    if echoes:
        params = [{"b_id": job_id, "b_mid": mid} for job_id, mid in echoes.items()]
        conn.execute(
            sa.update(JOBS).where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.sent_message_id.is_(None))
            .values(sent_message_id=sa.bindparam("b_mid")), params)
        # A send reported "unknown" after a crash is settled by its late echo.
        conn.execute(
            sa.update(JOBS).where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == UNKNOWN)
            .values(status=SENT, sent_at=now, last_error=None), params)
