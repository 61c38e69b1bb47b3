"""The durable queue of messages to send (replies today; notices and notifications use the same kinds machinery):
every state change of a job is a named function here, over a connection, and nothing else writes ``reply_jobs``.

    queued --claim--> running --record_attempt--> sending --mark_sent--> sent
      ^                  |  \\                       |   \\
      |   release        |   finish: failed,         |    recover_stale (worker died mid-send):
      +------------------+   skipped_paused          |      sent if the echo came back, else unknown
      retry <--retry_later-------------------------- +
      retry <--retry_failed-- failed (an operator's retry: the same row, due now, its attempts counted afresh)

A chat that is forgotten (``hybridflow sessions forget``) loses its jobs and its session row at once: a job being
generated then ends ``cancelled`` at ``record_attempt`` (never sent), and ``mark_sent`` of a send that was already
under way recreates nothing (it only remembers the sent id as deleted, so that its echo is a duplicate).

Exactly once: the attempt is recorded (``sending``, with the text) in the same transaction that re-checks the
pause, before Evolution is called; a job whose send outcome cannot be known becomes ``unknown`` and is never
sent again. A claim is one atomic statement (``FOR UPDATE SKIP LOCKED`` on PostgreSQL; a guarded
``UPDATE ... RETURNING`` in SQLite's single writer), and every later transition is guarded by the status it
leaves (and, for the send, by the worker that holds the lease), so a job that moved on meanwhile is left alone.

Every function is synchronous Core code over a ``Connection``: the reply workers run them inside the process's
batching writer (``WriteOp``), and readers call them through ``AsyncConnection.run_sync``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from hybridflow.models import JOBS, MESSAGES, OPEN_JOB_STATES, QUEUED_REPLY, SESSIONS, TENANTS, JobKind, JobStatus
from hybridflow.sql import hot
from hybridflow.sql.rows import BatchReads, ClaimRow
from hybridflow.sql import sqlite as sqlite_sql
from hybridflow.statements import (DELETED, add_tombstones, dialect_insert, insert_for, pairs_in, recent_texts,
                                   stored_directions)

T = TypeVar("T")
WriteOp = Callable[[Connection], T]  # synchronous Core code, run inside the writer's batch transaction

QUEUED, RUNNING, RETRY, SENDING = JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRY, JobStatus.SENDING
SENT, FAILED, SKIPPED_PAUSED, UNKNOWN = JobStatus.SENT, JobStatus.FAILED, JobStatus.SKIPPED_PAUSED, JobStatus.UNKNOWN
CANCELLED, SKIPPED_BUDGET, HANDED_OFF = JobStatus.CANCELLED, JobStatus.SKIPPED_BUDGET, JobStatus.HANDED_OFF
EXPIRED = JobStatus.EXPIRED
MODEL_WAIT = "waiting for the model server"  # how a job handed back while the model server is down says so


@dataclass(frozen=True, slots=True)
class KindRule:
    """How jobs of one kind are queued.

    ``debounced``: at most one queued job per chat; a later trigger moves its due time and last message instead
    of queueing another (the partial unique index ``uq_reply_jobs_one_queued_reply``). Every kind is unique per
    (tenant, kind, triggering message): a retried webhook never queues a second job.
    ``skipped_when_paused``: a pause of the chat drops the kind's queued jobs and skips them at sending time.
    """

    debounced: bool
    skipped_when_paused: bool


RULES: dict[JobKind, KindRule] = {
    JobKind.REPLY: KindRule(debounced=True, skipped_when_paused=True),
    JobKind.AWAY: KindRule(debounced=False, skipped_when_paused=True),
    JobKind.NOTICE: KindRule(debounced=False, skipped_when_paused=False),
    JobKind.HANDOFF: KindRule(debounced=False, skipped_when_paused=False),
    JobKind.NOTIFY: KindRule(debounced=False, skipped_when_paused=False),
    JobKind.NOTIFY_URL: KindRule(debounced=False, skipped_when_paused=False),
}
PAUSABLE_KINDS = tuple(kind for kind, rule in RULES.items() if rule.skipped_when_paused)
# Pausable kinds other than the reply, whose waiting jobs the partial index of waiting replies does not cover.
_OTHER_PAUSABLE = tuple(str(kind) for kind in PAUSABLE_KINDS if kind != JobKind.REPLY)


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed job, with what its transaction read of the chat."""

    id: int
    kind: JobKind
    tenant_id: int
    session_id: int
    chat_id: str
    trigger_message_id: str
    last_message_id: str | None
    attempts: int
    reply_text: str | None
    received_at: datetime
    paused: bool = False  # the chat's state when the job was claimed
    parts: tuple[str, ...] | None = None  # a paced reply's parts, once written; None: one message
    parts_sent: int = 0  # how many of them were delivered
    asked_at: datetime | None = None  # for a reply held up by failures: when the message it answers arrived
    held_up: bool = False  # failures delayed it: a retry, or it waited for the model server to come back
    history: tuple[tuple[str, str], ...] = ()  # (who wrote it, text) of the chat's recent messages, oldest first


@dataclass(frozen=True, slots=True)
class Reply:
    """A new or merged reply for ``enqueue_replies``: the customer message that asks for it."""

    tenant_id: int
    session_id: int
    chat_id: str
    message_id: str
    due_at: datetime


@dataclass(frozen=True, slots=True)
class Notice:
    """A fixed text to send a chat (an away message), queued once per ``key``: the (tenant, kind, key) unique
    constraint makes a second one for the same key a no-op, in every process."""

    kind: JobKind
    tenant_id: int
    session_id: int
    chat_id: str
    key: str  # e.g. "away:2026-12-01:5511987654321@s.whatsapp.net": once per chat per local day
    message_id: str  # the customer message it answers
    text: str
    due_at: datetime


# -- queueing -------------------------------------------------------------------------------------------------


@functools.cache
def _enqueue_reply(dialect: str) -> Any:
    """The debounced upsert, built once per dialect."""
    upsert = dialect_insert(dialect, JOBS)
    return upsert.on_conflict_do_update(
        index_elements=["session_id"],
        index_where=sa.text(QUEUED_REPLY),  # literal: PostgreSQL matches the partial index by its predicate
        set_={"due_at": upsert.excluded.due_at, "last_message_id": upsert.excluded.last_message_id,
              "updated_at": upsert.excluded.updated_at},
    )


def _merged_replies(replies: Iterable[Reply], now: datetime) -> list[dict[str, Any]]:
    """One row per chat: the first message triggers the reply, the last one sets its due time."""
    merged: dict[int, dict[str, Any]] = {}
    for reply in replies:
        row = merged.setdefault(reply.session_id, {
            "kind": JobKind.REPLY, "tenant_id": reply.tenant_id, "session_id": reply.session_id,
            "chat_id": reply.chat_id, "trigger_message_id": reply.message_id, "status": QUEUED, "attempts": 0,
            "received_at": now, "created_at": now})
        row.update(last_message_id=reply.message_id, due_at=reply.due_at, updated_at=now)
    return list(merged.values())


def reply_rows(replies: Iterable[Reply], now: datetime, ts: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    """The queued replies' rows for a dialect's ``write_batch`` (timestamps bound by its ``ts``)."""
    return [(JobKind.REPLY.value, r["tenant_id"], r["session_id"], r["chat_id"], r["trigger_message_id"],
             QUEUED.value, 0, ts(now), ts(now), r["last_message_id"], ts(r["due_at"]), ts(now))
            for r in _merged_replies(replies, now)]


def enqueue_replies(conn: Connection, replies: Iterable[Reply], now: datetime) -> None:
    """Queue a reply per chat, or move the chat's waiting reply to the latest message (debounce), through Core
    (where the driver's own statements are used, ``reply_rows`` goes into the batch's ``write_batch``)."""
    rows = _merged_replies(replies, now)
    if rows:
        conn.execute(_enqueue_reply(conn.dialect.name), rows)


@functools.cache
def _enqueue_notice(dialect: str) -> Any:
    return dialect_insert(dialect, JOBS).on_conflict_do_nothing(
        index_elements=["tenant_id", "kind", "trigger_message_id"])


def enqueue_notices(conn: Connection, notices: Iterable[Notice], now: datetime) -> None:
    """Queue fixed texts, each at most once per its key (also when several processes queue the same one)."""
    rows = {(n.tenant_id, n.kind, n.key): {
        "kind": n.kind, "tenant_id": n.tenant_id, "session_id": n.session_id, "chat_id": n.chat_id,
        "trigger_message_id": n.key, "last_message_id": n.message_id, "status": QUEUED, "attempts": 0,
        "reply_text": n.text, "due_at": n.due_at, "received_at": now, "created_at": now, "updated_at": now}
        for n in notices}
    if rows:
        conn.execute(_enqueue_notice(conn.dialect.name), list(rows.values()))


def enqueue_notification(conn: Connection, *, tenant_id: int, chat_id: str, key: str, message_id: str, text: str,
                         now: datetime, kind: JobKind = JobKind.NOTIFY, create: bool = True) -> bool:
    """Queue a text for the owner (a notification, or a ``notice``: a command's answer) to the owner's chat or the
    tenant's notify number, once per ``key``. That chat's session is created if needed (unless ``create`` is
    False: then nothing is queued for a chat that does not exist, e.g. one just forgotten) but not locked:
    nothing about it changes, so no batch waits on it. Returns whether it was queued (or was already)."""
    if create:
        conn.execute(insert_for(conn, SESSIONS).values(
            tenant_id=tenant_id, chat_id=chat_id, chat_kind="user", is_paused=False, created_at=now, updated_at=now)
            .on_conflict_do_nothing(index_elements=["tenant_id", "chat_id"]))
    session_id = conn.execute(sa.select(SESSIONS.c.id).where(
        SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.chat_id == chat_id)).scalar()
    if session_id is None:
        return False
    enqueue_notices(conn, [Notice(kind, tenant_id, session_id, chat_id, key, message_id, text, now)], now)
    return True


def skip_queued(conn: Connection, session_ids: Iterable[int], now: datetime, reason: str) -> None:
    """Drop the waiting jobs of chats that were just paused (the kinds a pause skips)."""
    ids = list(session_ids)
    fast = hot(conn) if ids else None
    if fast is not None:
        fast.sql.skip_queued(fast.raw, ids, now, reason, SKIPPED_PAUSED.value, [str(k) for k in _OTHER_PAUSABLE])
    elif ids:
        # The literal predicate lets both databases use the partial index of waiting replies per chat.
        conn.execute(sa.update(JOBS).where(JOBS.c.session_id.in_(ids), sa.text(QUEUED_REPLY))
                     .values(status=SKIPPED_PAUSED, updated_at=now, last_error=reason))
        conn.execute(sa.update(JOBS).where(JOBS.c.session_id.in_(ids), JOBS.c.status == QUEUED,
                                           JOBS.c.kind.in_(_OTHER_PAUSABLE))
                     .values(status=SKIPPED_PAUSED, updated_at=now, last_error=reason))


def cancel_for_tenant(conn: Connection, tenant_id: int, now: datetime, reason: str) -> int:
    """Cancel every job of a tenant that is still waiting (queued or due for a retry); returns how many. Jobs
    already being generated or sent finish (their tenant's settings are still readable)."""
    result = conn.execute(sa.update(JOBS).where(JOBS.c.tenant_id == tenant_id, JOBS.c.status.in_([QUEUED, RETRY]))
                          .values(status=CANCELLED, last_error=reason, updated_at=now))
    return result.rowcount


# Model replies that count for the reply cap: all but those dropped before anything was sent.
_CAP_DROPPED = (SKIPPED_PAUSED, CANCELLED, SKIPPED_BUDGET, EXPIRED, HANDED_OFF)


def recent_replies(conn: Connection, session_ids: Iterable[int], since: datetime) -> list[tuple[int, datetime, str]]:
    """(session_id, created_at, status) of the model replies of these chats started since ``since``, those dropped
    before anything was sent left out (Core; ``batch_reads`` reads it with the batch's other reads)."""
    return [(r.session_id, r.created_at, r.status) for r in conn.execute(
        sa.select(JOBS.c.session_id, JOBS.c.created_at, JOBS.c.status).where(
            JOBS.c.session_id.in_(list(session_ids)), JOBS.c.kind == JobKind.REPLY, JOBS.c.created_at >= since,
            JOBS.c.status.not_in(_CAP_DROPPED)))]


def replies_started(rows: Iterable[tuple[int, datetime, str]]) -> dict[int, tuple[list[datetime], bool]]:
    """For the reply cap, from ``recent_replies``' rows: per chat, when its model replies were started, and whether
    one is waiting now (a new message joins it: no new reply)."""
    found: dict[int, tuple[list[datetime], bool]] = {}
    for session_id, created_at, status in rows:
        started, waiting = found.get(session_id, ([], False))
        started.append(created_at)
        found[session_id] = (started, waiting or status == QUEUED)
    return found


# -- the worker's transitions ---------------------------------------------------------------------------------


def claim(conn: Connection, *, now: datetime, worker_id: str, lease: float, limit: int,
          history_limit: int, model_up: bool = True) -> list[Job]:
    """Atomically take up to ``limit`` due jobs, with their chat's pause state and recent history. While the model
    server is down (``model_up`` False) only jobs whose text is written already are taken."""
    fast = hot(conn)
    if fast is not None:
        rows: Sequence[Any] = fast.sql.claim(fast.raw, now=now, worker_id=worker_id, limit=limit,
                                             lease_until=now + timedelta(seconds=lease), written_only=not model_up,
                                             history_limit=history_limit)
    else:
        rows = _claim_rows(conn, now=now, worker_id=worker_id, lease=lease, limit=limit, model_up=model_up,
                           history_limit=history_limit)
    if not rows:
        return []
    held_up = {row.id for row in rows if row.attempts > 1 or (row.last_error or "").startswith(MODEL_WAIT)}
    asked_of = {row.id: (row.tenant_id, row.last_message_id or row.trigger_message_id) for row in rows
                if row.id in held_up and row.kind == JobKind.REPLY}
    # When the customer wrote: only a reply held up by failures needs it (--max-reply-delay), not the common case.
    asked = {(r.tenant_id, r.message_id): r.received_at for r in conn.execute(
        sa.select(MESSAGES.c.tenant_id, MESSAGES.c.message_id, MESSAGES.c.received_at).where(pairs_in(
            MESSAGES.c.tenant_id, MESSAGES.c.message_id, set(asked_of.values()))))} if asked_of else {}
    return [Job(row.id, JobKind(row.kind), row.tenant_id, row.session_id, row.chat_id, row.trigger_message_id,
                row.last_message_id, row.attempts, row.reply_text, row.received_at,
                paused=RULES[JobKind(row.kind)].skipped_when_paused and (row.session_paused or row.tenant_paused),
                parts=load_parts(row.parts), parts_sent=row.parts_sent or 0,
                asked_at=asked.get(asked_of.get(row.id)), held_up=row.id in held_up, history=row.history)
            for row in rows]


def _claim_rows(conn: Connection, *, now: datetime, worker_id: str, lease: float, limit: int, model_up: bool,
                history_limit: int) -> list[ClaimRow]:
    """``claim``'s statements through SQLAlchemy Core (where the driver's own are not used)."""
    pick = (sa.select(JOBS.c.id).where(JOBS.c.status.in_([QUEUED, RETRY]), JOBS.c.due_at <= now)
            .order_by(JOBS.c.due_at).limit(limit))
    if not model_up:
        pick = pick.where(JOBS.c.reply_text.is_not(None))
    # One reply of a chat at a time: a reply queued while another is being written or sent (a paced one takes a
    # while) waits for it, so the two never interleave.
    busy = JOBS.alias("busy")
    pick = pick.where(sa.or_(JOBS.c.kind != JobKind.REPLY, ~sa.exists().where(
        busy.c.session_id == JOBS.c.session_id, busy.c.kind == JobKind.REPLY,
        busy.c.status.in_([RUNNING, SENDING]))))
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    rows = conn.execute(
        sa.update(JOBS).where(JOBS.c.id.in_(pick.scalar_subquery()))
        .values(status=RUNNING, attempts=JOBS.c.attempts + 1, claimed_by=worker_id,
                lease_until=now + timedelta(seconds=lease), updated_at=now)
        .returning(JOBS.c.id, JOBS.c.kind, JOBS.c.tenant_id, JOBS.c.session_id, JOBS.c.chat_id,
                   JOBS.c.trigger_message_id, JOBS.c.last_message_id, JOBS.c.attempts, JOBS.c.reply_text,
                   JOBS.c.received_at, JOBS.c.parts, JOBS.c.parts_sent, JOBS.c.last_error)).all()
    if not rows:
        return []
    paused = {r.id: r.is_paused for r in conn.execute(sa.select(SESSIONS.c.id, SESSIONS.c.is_paused).where(
        SESSIONS.c.id.in_({row.session_id for row in rows})))}
    held = tenants_paused(conn, {row.tenant_id for row in rows}, now)
    return [ClaimRow(*row, paused.get(row.session_id, False), row.tenant_id in held,
                     tuple(recent_texts(conn, row.session_id, history_limit))) for row in rows]


def record_attempt(conn: Connection, job: Job, *, worker_id: str, text: str, now: datetime,
                   send_lease: float, generated: bool = False, tokens: int | None = None,
                   parts: Sequence[str] | None = None) -> JobStatus:
    """The last-moment pause check and the record of the attempt, in one transaction. ``generated``: the model
    wrote ``text`` for this attempt, with ``tokens`` (None: unknown), which the job keeps for the daily budget.
    ``parts``: a paced reply's parts (the attempt is the send of part ``job.parts_sent``), kept with the text.

    Returns ``sending`` (go ahead and send), ``skipped_paused`` (the chat was paused meanwhile; the job ends),
    ``cancelled`` (the chat was forgotten meanwhile: its session and jobs are gone, nothing is sent), or
    ``running`` when this worker no longer holds the job (its lease ran out and another worker took it).
    """
    fast = hot(conn)
    spent: dict[str, Any] = {"tokens": tokens, "generated_at": now} if generated else {}
    if parts is not None:
        spent["parts"] = json.dumps(list(parts), ensure_ascii=False)
    tenant_paused: bool | None = None
    # An answer to the owner goes out whatever is paused.
    pausable = RULES[job.kind].skipped_when_paused
    sending = {"status": SENDING, "reply_text": text, "attempted_at": now, "updated_at": now,
               "lease_until": now + timedelta(seconds=send_lease), **spent}
    if fast is not None:  # the check, and the move to sending when it finds nothing paused: on PostgreSQL in one
        # round trip that locks the session FOR UPDATE and the tenant FOR SHARE
        is_paused, tenant_paused, moved = fast.sql.send_if_free(
            fast.raw, job.id, worker_id, RUNNING.value, job.session_id, job.tenant_id, now, pausable, _bound(sending))
        if moved is not None:
            return SENDING if moved == 1 else RUNNING
    else:
        query = sa.select(SESSIONS.c.is_paused).where(SESSIONS.c.id == job.session_id)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()  # a pause committed by another process waits for us, or we see it
        session = conn.execute(query).first()
        is_paused = None if session is None else session.is_paused
    if is_paused is None:  # the chat was forgotten while the text was written (its jobs went with it)
        _move_mine(conn, fast, job.id, worker_id, status=CANCELLED, updated_at=now,
                   last_error="the chat was forgotten")
        return CANCELLED
    # Every pause, read from the database: the chat's (all its reasons are summed up in is_paused) and the tenant's.
    chat_paused = pausable and is_paused
    if chat_paused or (pausable and (tenant_paused if tenant_paused is not None else
                                     bool(tenants_paused(conn, {job.tenant_id}, now, lock=True)))):
        what = "the chat" if chat_paused else "the whole tenant (bot off all)"
        when = (f"before part {job.parts_sent + 1} of {len(parts)} (the parts before it were sent)"
                if parts is not None and job.parts_sent else "while the reply was being generated")
        _move_mine(conn, fast, job.id, worker_id, status=SKIPPED_PAUSED, reply_text=text, updated_at=now,
                   last_error=f"{what} was paused {when}", **spent)
        return SKIPPED_PAUSED
    return SENDING if _move_mine(conn, fast, job.id, worker_id, **sending) == 1 else RUNNING


def _bound(values: dict[str, Any]) -> dict[str, Any]:
    """Column values for the driver's own statements: statuses as their text."""
    return {k: v.value if isinstance(v, JobStatus) else v for k, v in values.items()}


def _move_mine(conn: Connection, fast: Any, job_id: int, worker_id: str, **values: Any) -> int:
    """Move a job this worker runs (``running``, claimed by it); how many rows moved."""
    if fast is not None:
        moved: int = fast.sql.move_mine(fast.raw, job_id, worker_id, RUNNING.value, _bound(values))
        return moved
    mine = sa.and_(JOBS.c.id == job_id, JOBS.c.status == RUNNING, JOBS.c.claimed_by == worker_id)
    return conn.execute(sa.update(JOBS).where(mine).values(**values)).rowcount


def mark_sent(conn: Connection, job: Job, text: str, message_id: str | None, now: datetime) -> str | None:
    """The job is sent; its text joins the chat's transcript (so a late echo of it is recognised as ours).
    Returns the WhatsApp id of the sent message when known.

    When the chat was forgotten during the send (its session and the job are gone), nothing is written but a
    tombstone of the sent id: its echo is then a duplicate and recreates no chat.
    """
    raw = sqlite_sql.driver(conn)
    sent = None
    if raw is not None:
        if sqlite_sql.session_exists(raw, job.session_id):
            sent = sqlite_sql.mark_sent(raw, job.id, now, message_id, len(job.parts) if job.parts else None)
    else:
        session = sa.select(SESSIONS.c.id).where(SESSIONS.c.id == job.session_id)
        if conn.dialect.name == "postgresql":
            # Before the job's row, as a forget and the ingest take them (session, then jobs): an echo being stored
            # waits for this (or is seen by it), and the two never wait for each other in the other order.
            session = session.with_for_update()
        if conn.execute(session).first() is not None:
            sent = conn.execute(
                sa.update(JOBS).where(JOBS.c.id == job.id).values(
                    status=SENT, sent_at=now, updated_at=now, last_error=None,
                    sent_message_id=sa.func.coalesce(JOBS.c.sent_message_id, message_id),
                    **({"parts_sent": len(job.parts)} if job.parts else {}))
                .returning(JOBS.c.sent_message_id)).first()
    if sent is None:
        if message_id:
            add_tombstones(conn, [(job.tenant_id, message_id)], now)
        return None
    mid = sent[0]
    if mid:
        _keep_sent(conn, job, mid, text, now)
    return mid


def mark_part_sent(conn: Connection, job: Job, text: str, message_id: str | None, *, worker_id: str,
                   now: datetime, lease: float) -> str | None | bool:
    """Part ``job.parts_sent`` of a paced reply (not its last) is delivered: it joins the transcript, the job counts
    it and goes back to ``running`` (this worker's, a new lease) for the next part. Returns the part's WhatsApp id
    when known; False when the job is no longer this worker's send (the chat was forgotten, or it was recovered
    after its lease ran out): the parts after it are not sent."""
    # ``running``: a retried part whose echo came back meanwhile (delivered, not sent again).
    mine = sa.and_(JOBS.c.id == job.id, JOBS.c.status.in_([SENDING, RUNNING]), JOBS.c.claimed_by == worker_id)
    session = sa.select(SESSIONS.c.id).where(SESSIONS.c.id == job.session_id)
    query = sa.select(JOBS.c.sent_message_id).where(mine)
    if conn.dialect.name == "postgresql":
        # The session before the job, as a forget and the ingest take them: an echo being stored waits for this
        # part to be counted (or is seen by it), so it is never settled on the next part.
        session, query = session.with_for_update(), query.with_for_update()
    if conn.execute(session).first() is None:
        if message_id:
            add_tombstones(conn, [(job.tenant_id, message_id)], now)
        return False
    row = conn.execute(query).first()
    if row is None:
        return False
    conn.execute(sa.update(JOBS).where(mine).values(
        status=RUNNING, parts_sent=job.parts_sent + 1, sent_message_id=None, last_error=None,
        lease_until=now + timedelta(seconds=lease), updated_at=now))
    mid = row.sent_message_id or message_id  # the echo may have come back before Evolution's answer
    if mid:
        _keep_sent(conn, job, mid, text, now)
    return mid


def _keep_sent(conn: Connection, job: Job, message_id: str, text: str, now: datetime) -> None:
    """A text we sent joins the chat's transcript, as the bot's (its echo is then a duplicate)."""
    raw = sqlite_sql.driver(conn)
    if raw is not None:
        sqlite_sql.keep_sent(raw, (job.tenant_id, job.session_id, message_id, job.chat_id, text, sqlite_sql.ts(now)))
        return
    conn.execute(insert_for(conn, MESSAGES).on_conflict_do_nothing(
        index_elements=["tenant_id", "message_id"]).values(
        tenant_id=job.tenant_id, session_id=job.session_id, message_id=message_id, chat_id=job.chat_id,
        event="reply", direction="bot", from_me=True, kind="text", message_type="conversation", text=text,
        received_at=now, action="own_message", raw="{}"))


def load_parts(stored: str | None) -> tuple[str, ...] | None:
    """A job's ``parts`` column as the texts it holds."""
    return tuple(json.loads(stored)) if stored else None


def retry_later(conn: Connection, job_id: int, *, from_status: JobStatus, due_at: datetime, error: str,
                now: datetime) -> None:
    """A transient failure: the job is due again at ``due_at`` (keeping its text, if it has one)."""
    _move(conn, job_id, from_status, status=RETRY, due_at=due_at, last_error=error, updated_at=now)


def finish(conn: Connection, job_id: int, *, from_status: JobStatus, status: JobStatus, error: str,
           now: datetime) -> bool:
    """End a job without sending it: ``failed`` or ``skipped_paused``, with the reason. False when the job had
    moved on (or is gone with its forgotten chat)."""
    return _move(conn, job_id, from_status, status=status, last_error=error, updated_at=now)


def _move(conn: Connection, job_id: int, from_status: JobStatus, **values: Any) -> bool:
    return conn.execute(sa.update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status == from_status)
                        .values(**values)).rowcount == 1


def hand_back(conn: Connection, job_id: int, *, worker_id: str, due_at: datetime, error: str,
              now: datetime) -> None:
    """A job that could not run because the model server is down goes back to the queue, due at ``due_at``,
    without using up an attempt (nothing was tried); its error starts with ``MODEL_WAIT`` (it is held up)."""
    conn.execute(sa.update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status == RUNNING,
                                       JOBS.c.claimed_by == worker_id).values(
        status=RETRY, due_at=due_at, lease_until=None, claimed_by=None, updated_at=now,
        last_error=f"{MODEL_WAIT}: {error}", attempts=JOBS.c.attempts - 1))


def release(conn: Connection, job_ids: Iterable[int], now: datetime) -> None:
    """Hand jobs a stopping worker claimed but did not start sending back to the queue, as if never claimed.
    Jobs already ``sending`` keep their record (their outcome is settled by ``recover_stale``)."""
    ids = list(job_ids)
    if ids:
        conn.execute(sa.update(JOBS).where(JOBS.c.id.in_(ids), JOBS.c.status == RUNNING).values(
            status=QUEUED, due_at=now, lease_until=None, claimed_by=None, updated_at=now,
            attempts=JOBS.c.attempts - 1))


def recover_stale(conn: Connection, now: datetime) -> list[Row[Any]]:
    """Take back the jobs of workers that died: before sending they are due again; mid-send they become ``sent`` if
    the echo came back, else ``unknown`` (never resent). Returns the (id, chat_id) of the ``unknown`` ones."""
    stale = sa.and_(JOBS.c.status == SENDING, JOBS.c.lease_until < now)
    # Between the parts of a paced reply, or before its send: due again (a paced reply goes on at its next part).
    conn.execute(sa.update(JOBS).where(JOBS.c.status == RUNNING, JOBS.c.lease_until < now)
                 .values(status=RETRY, due_at=now, claimed_by=None, updated_at=now))
    # A part whose echo came back was delivered: the reply goes on with the next part, if there is one.
    for row in conn.execute(sa.select(JOBS.c.id, JOBS.c.parts, JOBS.c.parts_sent).where(
            stale, JOBS.c.sent_message_id.is_not(None), JOBS.c.parts.is_not(None))).all():
        if (row.parts_sent or 0) + 1 < len(load_parts(row.parts) or ()):
            conn.execute(sa.update(JOBS).where(JOBS.c.id == row.id, stale).values(
                status=RETRY, due_at=now, claimed_by=None, parts_sent=(row.parts_sent or 0) + 1,
                sent_message_id=None, updated_at=now))
    conn.execute(sa.update(JOBS).where(stale, JOBS.c.sent_message_id.is_not(None))
                 .values(status=SENT, sent_at=now, updated_at=now))
    unknown = conn.execute(
        sa.update(JOBS).where(stale).values(
            status=UNKNOWN, updated_at=now,
            last_error="the worker stopped while sending; the reply may or may not have been delivered "
                       "and is not sent again")
        .returning(JOBS.c.id, JOBS.c.chat_id, JOBS.c.parts, JOBS.c.parts_sent)).all()
    for row in unknown:
        if row.parts:
            conn.execute(sa.update(JOBS).where(JOBS.c.id == row.id).values(
                last_error=f"the worker stopped while sending part {(row.parts_sent or 0) + 1} of "
                           f"{len(load_parts(row.parts) or ())}; it may or may not have been delivered: it is not sent "
                           "again, nor are the parts after it"))
    return unknown


def failed_of_session(conn: Connection, session_id: int, job_id: int | None = None) -> Row[Any] | None:
    """A chat's failed job to retry: the one with ``job_id``, else its latest failed one; None when there is none."""
    query = sa.select(JOBS.c.id, JOBS.c.kind, JOBS.c.status).where(JOBS.c.session_id == session_id)
    if job_id is not None:
        return conn.execute(query.where(JOBS.c.id == job_id)).first()
    return conn.execute(query.where(JOBS.c.status == FAILED).order_by(JOBS.c.id.desc()).limit(1)).first()


def open_of_kind(conn: Connection, session_id: int, kind: JobKind) -> int:
    """How many jobs of ``kind`` a chat has that are not finished yet (waiting, being written or sent)."""
    return conn.execute(sa.select(sa.func.count()).select_from(JOBS).where(
        JOBS.c.session_id == session_id, JOBS.c.kind == kind, JOBS.c.status.in_(OPEN_JOB_STATES))).scalar_one()


def retry_failed(conn: Connection, job_id: int, now: datetime) -> bool:
    """A failed job is due again now, with a fresh count of attempts (the same row: its kind's uniqueness holds,
    and a text already written is sent as it was). Its last error stays until the next attempt. Returns whether
    the job was still ``failed``."""
    moved = conn.execute(sa.update(JOBS).where(JOBS.c.id == job_id, JOBS.c.status == FAILED).values(
        status=RETRY, due_at=now, attempts=0, lease_until=None, claimed_by=None, updated_at=now))
    return moved.rowcount == 1


# -- retention and forgetting ---------------------------------------------------------------------------------


def delete_finished_before(conn: Connection, tenant_id: int, cutoff: datetime, limit: int) -> int:
    """Delete up to ``limit`` of a tenant's finished jobs created before ``cutoff`` (retention); returns how many.
    Jobs still open are left to finish. On PostgreSQL the pick skips rows another process holds."""
    pick = (sa.select(JOBS.c.id).where(JOBS.c.tenant_id == tenant_id, JOBS.c.created_at < cutoff,
                                       JOBS.c.status.not_in(OPEN_JOB_STATES))
            .order_by(JOBS.c.created_at).limit(limit))
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
    ids = list(conn.execute(pick).scalars())
    if ids:
        conn.execute(sa.delete(JOBS).where(JOBS.c.id.in_(ids)))
    return len(ids)


def delete_for_session(conn: Connection, session_id: int) -> int:
    """Delete every job of a chat, whatever its state (the chat is forgotten); returns how many."""
    return conn.execute(sa.delete(JOBS).where(JOBS.c.session_id == session_id)).rowcount


def sending_for_session(conn: Connection, session_id: int) -> int:
    """How many of a chat's jobs are being sent right now (their text may be at Evolution already)."""
    return conn.execute(sa.select(sa.func.count()).select_from(JOBS).where(
        JOBS.c.session_id == session_id, JOBS.c.status == SENDING)).scalar_one()


# -- echoes of our own sends ----------------------------------------------------------------------------------


def recent_sends(conn: Connection, session_ids: Iterable[int], since: datetime) -> list[Row[Any]]:
    """Jobs of these chats that sent (or are sending) a text since ``since``, oldest first: what an echo of ours
    is matched against, by its id when Evolution returned it, else by chat and text (Core; ``batch_reads`` reads
    it with the batch's other reads)."""
    return conn.execute(
        sa.select(JOBS.c.id, JOBS.c.tenant_id, JOBS.c.chat_id, JOBS.c.reply_text, JOBS.c.sent_message_id,
                  JOBS.c.parts, JOBS.c.parts_sent).where(
            JOBS.c.session_id.in_(list(session_ids)), JOBS.c.attempted_at >= since, JOBS.c.reply_text.is_not(None),
        ).order_by(JOBS.c.id)).all()


def batch_reads(conn: Connection, stored: set[tuple[int, str]], sends_of: set[int], sends_since: datetime,
                replies_of: set[int], replies_since: datetime) -> BatchReads:
    """What a webhook batch reads once its chats are locked: which (tenant, message id) pairs are stored
    (``stored_directions``), the recent sends to the chats ``sends_of`` (``recent_sends``) and the recent replies
    of the chats ``replies_of`` (``recent_replies``). On PostgreSQL all three are one round trip."""
    fast = hot(conn)
    if fast is not None:
        return fast.sql.batch_reads(  # type: ignore[no-any-return]
            fast.raw, stored, DELETED, sends_of, sends_since, replies_of, replies_since, JobKind.REPLY.value,
            [s.value for s in _CAP_DROPPED])
    return (stored_directions(conn, stored), recent_sends(conn, sends_of, sends_since) if sends_of else [],
            recent_replies(conn, replies_of, replies_since) if replies_of else [])


def settle_echoes(conn: Connection, echoes: dict[int, str], now: datetime) -> None:
    """The echoes of these jobs' texts arrived (job id -> the echo's message id): the send reached WhatsApp.
    The id is kept for a retry to see; a job reported ``unknown`` after a crash becomes ``sent``."""
    if not echoes:
        return
    fast = hot(conn)
    if fast is not None:
        fast.sql.settle_echoes(fast.raw, echoes, now, SENT.value, UNKNOWN.value)
        return
    params = [{"b_id": job_id, "b_mid": mid} for job_id, mid in echoes.items()]
    conn.execute(sa.update(JOBS).where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.sent_message_id.is_(None))
                 .values(sent_message_id=sa.bindparam("b_mid")), params)
    # A paced reply left unknown stays so: the parts after the one that echoed were never sent.
    conn.execute(sa.update(JOBS).where(JOBS.c.id == sa.bindparam("b_id"), JOBS.c.status == UNKNOWN,
                                       JOBS.c.parts.is_(None))
                 .values(status=SENT, sent_at=now, last_error=None), params)


def echo_seen(conn: Connection, job_id: int) -> bool:
    """Whether the echo of this job's text has come back (its send reached WhatsApp)."""
    return bool(conn.execute(sa.select(JOBS.c.sent_message_id).where(JOBS.c.id == job_id)).scalar())


# -- reading --------------------------------------------------------------------------------------------------


def tenants_paused(conn: Connection, tenant_ids: Iterable[int], now: datetime, *, lock: bool = False) -> set[int]:
    """Which of these tenants are paused as a whole at ``now`` ("bot off all"). ``lock``: on PostgreSQL, hold the
    tenants' rows (FOR SHARE) so that a pause being committed waits for this transaction, or is seen by it."""
    ids = list(tenant_ids)
    if not ids:
        return set()
    raw = sqlite_sql.driver(conn)
    if raw is not None:  # (SQLite's one writer: nothing to lock)
        return sqlite_sql.tenants_paused(raw, ids, now)
    query = sa.select(TENANTS.c.id, TENANTS.c.paused_at, TENANTS.c.paused_until).where(TENANTS.c.id.in_(ids))
    if lock and conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    return {r.id for r in conn.execute(query)
            if r.paused_at is not None and (r.paused_until is None or r.paused_until > now)}


def skip_tenant_queued(conn: Connection, tenant_id: int, now: datetime, reason: str) -> int:
    """Drop every waiting job of the kinds a pause skips, of a tenant just paused as a whole; returns how many."""
    return conn.execute(sa.update(JOBS).where(
        JOBS.c.tenant_id == tenant_id, JOBS.c.status.in_([QUEUED, RETRY]), JOBS.c.kind.in_([str(k) for k in PAUSABLE_KINDS]))
        .values(status=SKIPPED_PAUSED, updated_at=now, last_error=reason)).rowcount


def depth(conn: Connection) -> dict[str, int]:
    """Jobs not finished yet, by status (every open status, zero included)."""
    rows = conn.execute(sa.select(JOBS.c.status, sa.func.count()).where(JOBS.c.status.in_(OPEN_JOB_STATES))
                        .group_by(JOBS.c.status))
    return {str(status): 0 for status in OPEN_JOB_STATES} | {row[0]: row[1] for row in rows}


def tokens_since(conn: Connection, tenant_id: int, since: datetime) -> tuple[int, int]:
    """The model tokens a tenant's texts used since ``since``, and how many of those texts had no count."""
    row = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(JOBS.c.tokens), 0),
                                 sa.func.count().filter(JOBS.c.tokens.is_(None))).where(
        JOBS.c.tenant_id == tenant_id, JOBS.c.generated_at >= since)).one()
    return int(row[0]), int(row[1])


def for_session(conn: Connection, session_id: int, limit: int | None) -> list[Row[Any]]:
    """A chat's latest ``limit`` jobs (all of them for None), oldest first."""
    rows = conn.execute(sa.select(JOBS).where(JOBS.c.session_id == session_id).order_by(JOBS.c.id.desc())
                        .limit(limit)).all()
    return list(reversed(rows))
