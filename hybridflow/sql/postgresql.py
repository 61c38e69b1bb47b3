"""The hot statements on PostgreSQL, as fixed SQL run through asyncpg itself, inside the batch's transaction.

The batch runs as synchronous Core code through ``AsyncConnection.run_sync``; these statements reach the asyncpg
connection under it (``await_only``, as SQLAlchemy's own adapter does). Each has one text whatever the batch's size
(lists travel as arrays: ``= ANY($1)``, ``unnest``), so asyncpg prepares it once per connection, and many rows
go in one round trip (``unnest``, or ``executemany``'s pipeline). Timestamps are bound as aware datetimes
(``timestamptz``). The schema and every cold path stay with SQLModel and SQLAlchemy.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.util import await_only

from hybridflow.sql.rows import BatchReads, ClaimRow, SendRow, SessionRow


class Driver:
    """The asyncpg connection of a batch, called synchronously from inside ``run_sync``."""

    __slots__ = ("raw",)

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def fetch(self, sql: str, *args: Any) -> list[Any]:
        return await_only(self.raw.fetch(sql, *args))

    def execute(self, sql: str, *args: Any) -> str:
        return await_only(self.raw.execute(sql, *args))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await_only(self.raw.executemany(sql, rows))


def driver(conn: Connection) -> Driver | None:
    """The asyncpg connection under ``conn`` once its transaction has begun (SQLAlchemy's adapter begins it
    lazily: it is begun here as the adapter would), else None (not PostgreSQL, or an adapter this does not
    know: the SQLAlchemy statements run instead)."""
    if conn.dialect.name != "postgresql" or conn.dialect.driver != "asyncpg":
        return None
    adapted = conn.connection.dbapi_connection
    raw = getattr(adapted, "_connection", None)
    if raw is None or not hasattr(adapted, "_transaction") or getattr(adapted, "isolation_level", None) == "autocommit":
        return None
    if adapted._transaction is None:
        await_only(adapted._start_transaction())
        if adapted._transaction is None:
            return None
    return Driver(raw)


# -- sessions -------------------------------------------------------------------------------------------------


_LOCK_SESSIONS = (
    "INSERT INTO sessions (tenant_id, chat_id, chat_kind, is_paused, created_at, updated_at) "
    "SELECT t, c, k, false, $4, $4 FROM unnest($1::integer[], $2::text[], $3::text[]) AS u(t, c, k) ORDER BY t, c "
    "ON CONFLICT (tenant_id, chat_id) DO UPDATE SET updated_at = excluded.updated_at RETURNING id, tenant_id, "
    "chat_id, is_paused, pause_reason, paused_by, paused_at, resumes_at, last_human_at, last_message_at, push_name, "
    "pauses, created_at")


def lock_sessions(db: Driver, keys: dict[tuple[int, str], str], now: datetime) -> dict[tuple[int, str], SessionRow]:
    """Create the sessions of ``keys`` (each with its chat kind) that do not exist yet and lock all of them (ON
    CONFLICT DO UPDATE locks each row as FOR UPDATE would; sorted, so two processes lock in one order)."""
    ordered = sorted(keys)
    rows = db.fetch(_LOCK_SESSIONS, [t for t, _ in ordered], [c for _, c in ordered], [keys[k] for k in ordered], now)
    return {(r[1], r[2]): SessionRow(*r) for r in rows}


# -- messages -------------------------------------------------------------------------------------------------


def insert_aliases(db: Driver, rows: list[tuple[int, str, str]]) -> None:
    db.executemany("INSERT INTO chat_aliases (tenant_id, lid, chat_id) VALUES ($1, $2, $3) "
                   "ON CONFLICT (tenant_id, lid) DO NOTHING", rows)


# -- the reply queue ------------------------------------------------------------------------------------------


_BATCH_READS = (
    "SELECT ARRAY(SELECT ROW(m.tenant_id, m.message_id, m.direction) FROM messages AS m JOIN unnest($1::integer[], "
    "$2::text[]) AS u(t, i) ON m.tenant_id = u.t AND m.message_id = u.i), "
    "ARRAY(SELECT ROW(d.tenant_id, d.message_id) FROM message_tombstones AS d JOIN unnest($1::integer[], $2::text[]) "
    "AS u(t, i) ON d.tenant_id = u.t AND d.message_id = u.i), "
    "ARRAY(SELECT ROW(id, tenant_id, chat_id, reply_text, sent_message_id, parts, parts_sent) FROM reply_jobs "
    "WHERE session_id = ANY($3::integer[]) AND attempted_at >= $4 AND reply_text IS NOT NULL ORDER BY id), "
    "ARRAY(SELECT ROW(session_id, created_at, status) FROM reply_jobs WHERE session_id = ANY($5::integer[]) "
    "AND created_at >= $6 AND kind = $7 AND status <> ALL($8::text[]))")


def batch_reads(db: Driver, stored: set[tuple[int, str]], deleted: str, sends_of: set[int], sends_since: datetime,
                replies_of: set[int], replies_since: datetime, reply: str,
                dropped: Sequence[str]) -> BatchReads:
    """A webhook batch's reads (``hybridflow.jobs.batch_reads``) in one round trip, each part an array of rows:
    which (tenant, message id) pairs are stored, with who wrote them (tombstones count as ``deleted``; a stored
    row wins over a tombstone), the jobs of ``sends_of`` that sent or are sending a text since ``sends_since``
    (oldest first), and (session_id, created_at, status) of the model replies of ``replies_of`` started since
    ``replies_since`` and not ``dropped``. Each part reads what committed before the statement began: the
    batch's chats are locked already, so nothing another process writes for them can be missed."""
    pairs = list(stored)
    kept, gone, sends, replies = db.fetch(
        _BATCH_READS, [p[0] for p in pairs], [p[1] for p in pairs], list(sends_of), sends_since, list(replies_of),
        replies_since, reply, list(dropped))[0]
    found: dict[tuple[int, str], str] = {(t, m): deleted for t, m in gone}
    found.update({(t, m): direction for t, m, direction in kept})
    return found, [SendRow(*r) for r in sends], [tuple(r) for r in replies]  # type: ignore[misc]


def skip_queued(db: Driver, session_ids: list[int], now: datetime, reason: str, skipped: str,
                other_kinds: Sequence[str]) -> None:
    """Drop the waiting jobs of these chats in one round trip: their queued reply (through the partial index) and
    their other queued jobs of the kinds a pause skips (``other_kinds`` never holds the reply's kind, so no row is
    in both parts)."""
    db.execute("WITH r AS (UPDATE reply_jobs SET status = $1, updated_at = $2, last_error = $3 WHERE session_id = "
               "ANY($4::integer[]) AND status = 'queued' AND kind = 'reply' RETURNING 1) "
               "UPDATE reply_jobs SET status = $1, updated_at = $2, last_error = $3 WHERE session_id = "
               "ANY($4::integer[]) AND status = 'queued' AND kind = ANY($5::text[])", skipped, now, reason,
               session_ids, list(other_kinds))


def settle_echoes(db: Driver, echoes: dict[int, str], now: datetime, sent: str, unknown: str) -> None:
    """The echoes of these jobs' texts arrived (job id -> the echo's id): keep the id; an ``unknown`` job that is
    not a paced reply becomes ``sent``."""
    db.executemany("UPDATE reply_jobs SET sent_message_id = $1 WHERE id = $2 AND sent_message_id IS NULL",
                   [(mid, job_id) for job_id, mid in echoes.items()])
    db.executemany("UPDATE reply_jobs SET status = $1, sent_at = $2, last_error = NULL WHERE id = $3 "
                   "AND status = $4 AND parts IS NULL", [(sent, now, job_id, unknown) for job_id in echoes])


_CLAIM = (
    "UPDATE reply_jobs AS j SET status = 'running', attempts = j.attempts + 1, claimed_by = $1, lease_until = $2, "
    "updated_at = $3 WHERE j.id IN (SELECT p.id FROM reply_jobs AS p WHERE p.status IN ('queued', 'retry') "
    "AND p.due_at <= $3 AND (NOT $6::boolean OR p.reply_text IS NOT NULL) AND (p.kind != 'reply' OR NOT EXISTS "
    "(SELECT 1 FROM reply_jobs AS busy WHERE busy.session_id = p.session_id AND busy.kind = 'reply' AND busy.status "
    "IN ('running', 'sending'))) ORDER BY p.due_at LIMIT $4 FOR UPDATE SKIP LOCKED) "
    "RETURNING j.id, j.kind, j.tenant_id, j.session_id, j.chat_id, j.trigger_message_id, j.last_message_id, "
    "j.attempts, j.reply_text, j.received_at, j.parts, j.parts_sent, j.last_error, "
    "coalesce((SELECT s.is_paused FROM sessions AS s WHERE s.id = j.session_id), false), "
    "coalesce((SELECT t.paused_at IS NOT NULL AND (t.paused_until IS NULL OR t.paused_until > $3) FROM tenants AS t "
    "WHERE t.id = j.tenant_id), false), "
    "(SELECT coalesce(json_agg(json_build_array(h.direction, h.text) ORDER BY h.received_at, h.id), '[]')::text "
    "FROM (SELECT m.direction, m.text, m.received_at, m.id FROM messages AS m WHERE m.session_id = j.session_id "
    "AND m.text IS NOT NULL ORDER BY m.received_at DESC, m.id DESC LIMIT $5) AS h)")


def claim(db: Driver, *, now: datetime, worker_id: str, lease_until: datetime, limit: int, written_only: bool,
          history_limit: int) -> list[ClaimRow]:
    """Take up to ``limit`` due jobs (the oldest due first; FOR UPDATE SKIP LOCKED: several processes never take
    one job twice), one reply of a chat at a time, with their chats' state and history, in one round trip;
    ``written_only``: only jobs whose text is written already."""
    rows = db.fetch(_CLAIM, worker_id, lease_until, now, limit, history_limit, written_only)
    return sorted((ClaimRow(*r[:15], tuple(tuple(turn) for turn in json.loads(r[15]))) for r in rows),
                  key=lambda row: row.id)


def send_if_free(db: Driver, job_id: int, worker_id: str, running: str, session_id: int, tenant_id: int,
                 now: datetime, pausable: bool, values: dict[str, Any]) -> tuple[bool | None, bool, int | None]:
    """Whether the chat is paused (None: it is gone) and whether its tenant is paused as a whole, at ``now``; when
    neither holds the job back (``pausable``: a pause does), the job this worker runs moves to ``values`` too: how
    many rows moved (0: another worker holds it now), else None. One round trip that locks the session FOR UPDATE
    and the tenant FOR SHARE before the move is decided: a pause being committed by another process waits for this
    transaction, or is seen by it (a row lock waited for gives its newest version)."""
    sets = _assignments(values, first=8)
    chat, tenant, moved = db.fetch(
        "WITH s AS (SELECT is_paused FROM sessions WHERE id = $1 FOR UPDATE), "
        "t AS (SELECT paused_at, paused_until FROM tenants WHERE id = $2 FOR SHARE), "
        "c AS (SELECT (SELECT is_paused FROM s) AS chat, coalesce((SELECT paused_at IS NOT NULL AND (paused_until "
        "IS NULL OR paused_until > $3) FROM t), false) AS tenant), "
        f"m AS (UPDATE reply_jobs SET {sets} WHERE id = $4 AND status = $5 AND claimed_by = $6 AND (SELECT "
        "c.chat IS NOT NULL AND NOT ($7::boolean AND (c.chat OR c.tenant)) FROM c) RETURNING 1) "
        "SELECT c.chat, c.tenant, (SELECT count(*) FROM m) FROM c",
        session_id, tenant_id, now, job_id, running, worker_id, pausable, *values.values())[0]
    free = chat is not None and not (pausable and (chat or tenant))
    return chat, tenant, int(moved) if free else None


def _assignments(values: dict[str, Any], *, first: int) -> str:
    """``SET`` assignments of ``values``' columns, bound from parameter ``$first`` on, in their order."""
    return ", ".join(f"{name} = ${n}" for n, name in enumerate(values, start=first))


def move_mine(db: Driver, job_id: int, worker_id: str, running: str, values: dict[str, Any]) -> int:
    """``UPDATE reply_jobs SET values`` of a job this worker runs (``running``, claimed by it); how many rows moved."""
    sets = _assignments(values, first=4)
    status = db.execute(f"UPDATE reply_jobs SET {sets} WHERE id = $1 AND status = $2 AND claimed_by = $3",
                        job_id, running, worker_id, *values.values())
    return int(status.rpartition(" ")[2])


_WRITE_BATCH = (
    "WITH m AS (INSERT INTO messages (tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, "
    "message_type, text, push_name, wa_timestamp, received_at, action, raw) SELECT * FROM unnest($1::integer[], "
    "$2::integer[], $3::text[], $4::text[], $5::text[], $6::text[], $7::boolean[], $8::text[], $9::text[], $10::text[], "
    "$11::text[], $12::timestamptz[], $13::timestamptz[], $14::text[], $15::text[]) "
    "ON CONFLICT (tenant_id, message_id) DO NOTHING RETURNING 1), "
    "s AS (UPDATE sessions AS x SET updated_at = u.updated_at, pauses = u.pauses, is_paused = u.is_paused, "
    "pause_reason = u.pause_reason, paused_by = u.paused_by, paused_at = u.paused_at, resumes_at = u.resumes_at, "
    "last_human_at = u.last_human_at, last_message_at = u.last_message_at, push_name = u.push_name "
    "FROM unnest($16::timestamptz[], $17::text[], $18::boolean[], $19::text[], $20::text[], $21::timestamptz[], "
    "$22::timestamptz[], $23::timestamptz[], $24::timestamptz[], $25::text[], $26::integer[]) AS u(updated_at, pauses, "
    "is_paused, pause_reason, paused_by, paused_at, resumes_at, last_human_at, last_message_at, push_name, id) "
    "WHERE x.id = u.id RETURNING 1), "
    "e AS (INSERT INTO session_events (tenant_id, session_id, at, change, reason, actor, message_id, resumes_at) "
    "SELECT * FROM unnest($27::integer[], $28::integer[], $29::timestamptz[], $30::text[], $31::text[], $32::text[], "
    "$33::text[], $34::timestamptz[]) RETURNING 1), "
    "j AS (INSERT INTO reply_jobs (kind, tenant_id, session_id, chat_id, trigger_message_id, status, attempts, "
    "received_at, created_at, last_message_id, due_at, updated_at) SELECT * FROM unnest($35::text[], $36::integer[], "
    "$37::integer[], $38::text[], $39::text[], $40::text[], $41::integer[], $42::timestamptz[], $43::timestamptz[], "
    "$44::text[], $45::timestamptz[], $46::timestamptz[]) ON CONFLICT (session_id) WHERE status = 'queued' AND "
    "kind = 'reply' DO UPDATE SET due_at = excluded.due_at, last_message_id = excluded.last_message_id, "
    "updated_at = excluded.updated_at RETURNING 1), "
    "a AS (UPDATE sessions AS x SET updated_at = u.updated_at, last_message_at = u.last_message_at, "
    "push_name = u.push_name FROM unnest($47::timestamptz[], $48::timestamptz[], $49::text[], $50::integer[]) "
    "AS u(updated_at, last_message_at, push_name, id) WHERE x.id = u.id RETURNING 1) "
    "SELECT (SELECT count(*) FROM m), (SELECT count(*) FROM s), (SELECT count(*) FROM e), (SELECT count(*) FROM j), "
    "(SELECT count(*) FROM a)")


def _columns(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as one list per column (what ``unnest`` takes)."""
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]


def write_batch(db: Driver, *, messages: Sequence[Sequence[Any]], sessions: Sequence[Sequence[Any]],
                active: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]],
                replies: Sequence[Sequence[Any]]) -> None:
    """The batch's writes in one statement, in the column orders of ``sqlite.write_batch``: its messages, sessions
    written back (whose pauses changed, and those that only got a message), pause events and replies queued. No row
    is written by two parts (a session is in one of its two lists), so the parts never see or undo one another."""
    if not (messages or sessions or active or events or replies):
        return
    db.fetch(_WRITE_BATCH, *_columns(messages, 15), *_columns(sessions, 11), *_columns(events, 8),
             *_columns(replies, 12), *_columns(active, 4))


def ts(value: datetime | None) -> datetime | None:
    """Timestamps go to asyncpg as they are (aware datetimes, ``timestamptz``)."""
    return value
