"""The hot statements on SQLite, as fixed SQL run through the ``sqlite3`` driver's own ``execute``/``executemany``.

The webhook batch and the reply worker's transitions run here many times a second; SQLAlchemy Core's machinery
around each statement (execution context, parameter processing, type processors both ways) cost more than
SQLite's own work. The schema, its migrations and every cold path stay with SQLModel and SQLAlchemy; these
statements run on the connection SQLAlchemy gives the batch, inside its transaction.

Timestamps are bound as exactly the text SQLAlchemy's ``DATETIME`` stores on SQLite (``2026-12-01 17:13:31.000123``,
UTC, always with microseconds), so comparisons with rows written either way keep working. Lists travel as one JSON
array (``IN (SELECT value FROM json_each(?))``, ``INSERT ... SELECT ... FROM json_each(?)``): each statement has one
text whatever the batch's size, so sqlite3 prepares it once and keeps it (one text per size filled its statement
cache with hundreds of compiled statements: memory that grew with the variety of batch sizes).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.engine import Connection

from hybridflow.sql.rows import BatchReads, ClaimRow, SendRow, SessionRow


def driver(conn: Connection) -> sqlite3.Connection | None:
    """The ``sqlite3`` connection under a SQLAlchemy one (the batching writer's), else None (aiosqlite, PostgreSQL:
    those run the SQLAlchemy statements)."""
    if conn.dialect.name != "sqlite":
        return None
    raw = conn.connection.driver_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


def ts(value: datetime | None) -> str | None:
    """A timestamp as SQLAlchemy stores it on SQLite: naive UTC text with microseconds."""
    global _last_ts
    if value is None:
        return None
    given, last = value, _last_ts
    if given is last[0]:  # a batch binds its ``now`` many times
        return last[1]
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
    text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d} {value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond:06d}")
    _last_ts = (given, text)
    return text


_last_ts: tuple[datetime | None, str | None] = (None, None)


def parse_ts(value: str | None) -> datetime | None:
    """A stored timestamp, timezone-aware in UTC."""
    return None if value is None else datetime.fromisoformat(value).replace(tzinfo=UTC)


def json_list(values: Iterable[Any]) -> str:
    """A list bound as one JSON array, for ``json_each``."""
    return json.dumps(list(values))


# -- sessions -------------------------------------------------------------------------------------------------


_SESSION_COLUMNS = ("id, tenant_id, chat_id, is_paused, pause_reason, paused_by, paused_at, resumes_at, "
                    "last_human_at, last_message_at, push_name, pauses, created_at")


_LOCK_SESSIONS = (
    "INSERT INTO sessions (tenant_id, chat_id, chat_kind, is_paused, created_at, updated_at) SELECT "
    "json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), 0, ?, ? "
    "FROM json_each(?) WHERE true ON CONFLICT (tenant_id, chat_id) DO UPDATE SET updated_at = excluded.updated_at "
    "RETURNING " + _SESSION_COLUMNS)


def lock_sessions(raw: sqlite3.Connection, keys: dict[tuple[int, str], str],
                  now: datetime) -> dict[tuple[int, str], SessionRow]:
    """Create the sessions of ``keys`` (each with its chat kind) that do not exist yet and return all of them
    (the transaction is SQLite's one writer: nothing else changes them until it commits)."""
    stamp = ts(now)
    rows = raw.execute(_LOCK_SESSIONS, (stamp, stamp, json.dumps([[t, c, keys[(t, c)]] for t, c in keys]))).fetchall()
    return {(r[1], r[2]): SessionRow(r[0], r[1], r[2], bool(r[3]), r[4], r[5], parse_ts(r[6]), parse_ts(r[7]),
                                     parse_ts(r[8]), parse_ts(r[9]), r[10], r[11], parse_ts(r[12])) for r in rows}


_UPDATE_SESSION = ("UPDATE sessions SET updated_at = ?, pauses = ?, is_paused = ?, pause_reason = ?, paused_by = ?, "
                   "paused_at = ?, resumes_at = ?, last_human_at = ?, last_message_at = ?, push_name = ? WHERE id = ?")


_TOUCH_SESSION = "UPDATE sessions SET updated_at = ?, last_message_at = ?, push_name = ? WHERE id = ?"


_INSERT_EVENT = ("INSERT INTO session_events (tenant_id, session_id, at, change, reason, actor, message_id, resumes_at) "
                 "VALUES (?,?,?,?,?,?,?,?)")


# -- messages -------------------------------------------------------------------------------------------------


def stored_directions(raw: sqlite3.Connection, ids: set[tuple[int, str]], deleted: str) -> dict[tuple[int, str], str]:
    """Which (tenant, message id) pairs are stored, with who wrote them; tombstones count as ``deleted`` (a stored
    row wins over a tombstone)."""
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, message_id in ids:
        by_tenant.setdefault(tenant_id, []).append(message_id)
    found: dict[tuple[int, str], str] = {}
    for tenant_id, message_ids in by_tenant.items():
        listed = json_list(message_ids)
        for t, m, direction in raw.execute(_STORED, (tenant_id, listed, tenant_id, listed)):
            if direction is not None:
                found[(t, m)] = direction
            elif (t, m) not in found:
                found[(t, m)] = deleted
    return found


_STORED = ("SELECT tenant_id, message_id, direction FROM messages WHERE tenant_id = ? AND message_id IN "
           "(SELECT value FROM json_each(?)) UNION ALL SELECT tenant_id, message_id, NULL FROM message_tombstones "
           "WHERE tenant_id = ? AND message_id IN (SELECT value FROM json_each(?))")


_INSERT_MESSAGE = ("INSERT INTO messages (tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, "
                   "message_type, text, push_name, wa_timestamp, received_at, action, raw) "
                   "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (tenant_id, message_id) DO NOTHING")


def insert_aliases(raw: sqlite3.Connection, rows: list[tuple[int, str, str]]) -> None:
    """Remember (tenant, lid, chat) aliases, the first one of a LID kept."""
    raw.executemany("INSERT INTO chat_aliases (tenant_id, lid, chat_id) VALUES (?,?,?) "
                    "ON CONFLICT (tenant_id, lid) DO NOTHING", rows)


# -- the reply queue ------------------------------------------------------------------------------------------


def batch_reads(raw: sqlite3.Connection, stored: set[tuple[int, str]], deleted: str, sends_of: set[int],
                sends_since: datetime, replies_of: set[int], replies_since: datetime, reply: str,
                dropped: Sequence[str]) -> BatchReads:
    """A webhook batch's reads (``hybridflow.jobs.batch_reads``): on SQLite each is a call of its own, no round trip."""
    return (stored_directions(raw, stored, deleted), recent_sends(raw, sends_of, sends_since) if sends_of else [],
            recent_replies(raw, replies_of, replies_since, reply, dropped) if replies_of else [])


def recent_sends(raw: sqlite3.Connection, session_ids: Iterable[int], since: datetime) -> list[SendRow]:
    """The jobs of these chats that sent or are sending a text since ``since``, oldest first."""
    return list(map(SendRow._make, raw.execute(
        "SELECT id, tenant_id, chat_id, reply_text, sent_message_id, parts, parts_sent FROM reply_jobs WHERE "
        "session_id IN (SELECT value FROM json_each(?)) AND attempted_at >= ? AND reply_text IS NOT NULL ORDER BY id",
        (json_list(session_ids), ts(since)))))


def recent_replies(raw: sqlite3.Connection, session_ids: Iterable[int], since: datetime, reply: str,
                   dropped: Sequence[str]) -> list[tuple[int, datetime, str]]:
    """(session_id, created_at, status) of the model replies of these chats started since ``since`` and not
    ``dropped``."""
    return [(session_id, parse_ts(created_at), status) for session_id, created_at, status in raw.execute(
        "SELECT session_id, created_at, status FROM reply_jobs WHERE session_id IN (SELECT value FROM json_each(?)) "
        "AND kind = ? AND created_at >= ? AND status NOT IN (SELECT value FROM json_each(?))",
        (json_list(session_ids), reply, ts(since), json_list(dropped)))]


_ENQUEUE_REPLY = ("INSERT INTO reply_jobs (kind, tenant_id, session_id, chat_id, trigger_message_id, status, attempts, "
                  "received_at, created_at, last_message_id, due_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
                  "ON CONFLICT (session_id) WHERE status = 'queued' AND kind = 'reply' DO UPDATE SET "
                  "due_at = excluded.due_at, last_message_id = excluded.last_message_id, "
                  "updated_at = excluded.updated_at")


def write_batch(raw: sqlite3.Connection, *, messages: Sequence[Sequence[Any]], sessions: Sequence[Sequence[Any]],
                active: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]],
                replies: Sequence[Sequence[Any]]) -> None:
    """A batch's writes, each list in its statement's column order: its messages (an id stored meanwhile is left as
    it is), sessions whose pauses changed written back (updated_at, pauses, is_paused, pause_reason, paused_by,
    paused_at, resumes_at, last_human_at, last_message_at, push_name, id), sessions that only got a message
    (updated_at, last_message_at, push_name, id), pause events, and replies queued (the debounced upsert)."""
    for statement, rows in ((_INSERT_MESSAGE, messages), (_UPDATE_SESSION, sessions), (_TOUCH_SESSION, active),
                            (_INSERT_EVENT, events), (_ENQUEUE_REPLY, replies)):
        if rows:
            raw.executemany(statement, rows)


def skip_queued(raw: sqlite3.Connection, session_ids: list[int], now: datetime, reason: str, skipped: str,
                other_kinds: Sequence[str]) -> None:
    """Drop the waiting jobs of these chats: their queued reply (through the partial index) and their other
    queued jobs of the kinds a pause skips.

    The chats drive each lookup (``CROSS JOIN`` keeps that order): with ``status = 'queued'`` beside
    ``session_id IN (json_each)``, SQLite's planner guessed the status index cheaper and walked every waiting
    job of every chat, about 1.5 ms a batch under load here."""
    stamp, listed = ts(now), json_list(session_ids)
    raw.execute("UPDATE reply_jobs SET status = ?, updated_at = ?, last_error = ? WHERE id IN (SELECT r.id FROM "
                "json_each(?) AS j CROSS JOIN reply_jobs AS r ON r.session_id = j.value "
                "WHERE r.status = 'queued' AND r.kind = 'reply')", (skipped, stamp, reason, listed))
    raw.execute("UPDATE reply_jobs SET status = ?, updated_at = ?, last_error = ? WHERE id IN (SELECT r.id FROM "
                "json_each(?) AS j CROSS JOIN reply_jobs AS r ON r.session_id = j.value "
                "WHERE +r.status = 'queued' AND r.kind IN (SELECT value FROM json_each(?)))",
                (skipped, stamp, reason, listed, json_list(other_kinds)))


def settle_echoes(raw: sqlite3.Connection, echoes: dict[int, str], now: datetime, sent: str, unknown: str) -> None:
    """The echoes of these jobs' texts arrived (job id -> the echo's id): keep the id; an ``unknown`` job that is
    not a paced reply becomes ``sent``."""
    raw.executemany("UPDATE reply_jobs SET sent_message_id = ? WHERE id = ? AND sent_message_id IS NULL",
                    [(mid, job_id) for job_id, mid in echoes.items()])
    stamp = ts(now)
    raw.executemany("UPDATE reply_jobs SET status = ?, sent_at = ?, last_error = NULL WHERE id = ? AND status = ? "
                    "AND parts IS NULL", [(sent, stamp, job_id, unknown) for job_id in echoes])


# -- the reply worker's transitions ---------------------------------------------------------------------------


def claim(raw: sqlite3.Connection, *, now: datetime, worker_id: str, lease_until: datetime, limit: int,
          written_only: bool, history_limit: int) -> list[ClaimRow]:
    """Take up to ``limit`` due jobs (the oldest due first), one reply of a chat at a time, with their chats'
    state and history; ``written_only``: only jobs whose text is written already."""
    rows = raw.execute(
        "UPDATE reply_jobs SET status = 'running', attempts = attempts + 1, claimed_by = ?, lease_until = ?, "
        "updated_at = ? WHERE id IN (SELECT id FROM reply_jobs WHERE status IN ('queued', 'retry') AND due_at <= ?"
        + (" AND reply_text IS NOT NULL" if written_only else "")
        + " AND (kind != 'reply' OR NOT EXISTS (SELECT 1 FROM reply_jobs AS busy WHERE busy.session_id = "
          "reply_jobs.session_id AND busy.kind = 'reply' AND busy.status IN ('running', 'sending'))) "
          "ORDER BY due_at LIMIT ?) RETURNING id, kind, tenant_id, session_id, chat_id, trigger_message_id, "
          "last_message_id, attempts, reply_text, received_at, parts, parts_sent, last_error",
        (worker_id, ts(lease_until), ts(now), ts(now), limit)).fetchall()
    if not rows:
        return []
    rows.sort()
    paused = sessions_paused(raw, {r[3] for r in rows})
    held = tenants_paused(raw, list({r[2] for r in rows}), now)
    return [ClaimRow(*r[:9], parse_ts(r[9]), *r[10:], paused.get(r[3], False), r[2] in held,
                     tuple(recent_texts(raw, r[3], history_limit))) for r in rows]


def sessions_paused(raw: sqlite3.Connection, session_ids: Iterable[int]) -> dict[int, bool]:
    """Whether each of these sessions is paused (the ones that exist)."""
    return {sid: bool(paused) for sid, paused in raw.execute(
        "SELECT id, is_paused FROM sessions WHERE id IN (SELECT value FROM json_each(?))", (json_list(session_ids),))}


def tenants_paused(raw: sqlite3.Connection, tenant_ids: list[int], now: datetime) -> set[int]:
    """Which of these tenants are paused as a whole at ``now``."""
    stamp = ts(now)
    return {tenant_id for tenant_id, paused_at, until in raw.execute(
        "SELECT id, paused_at, paused_until FROM tenants WHERE id IN (SELECT value FROM json_each(?))",
        (json_list(tenant_ids),))
        if paused_at is not None and (until is None or until > stamp)}


def recent_texts(raw: sqlite3.Connection, session_id: int, limit: int) -> list[tuple[str, str]]:
    """The last ``limit`` messages with text of a chat as (who wrote it, text), oldest first."""
    rows = raw.execute("SELECT direction, text FROM messages WHERE session_id = ? AND text IS NOT NULL "
                       "ORDER BY received_at DESC, id DESC LIMIT ?", (session_id, limit)).fetchall()
    rows.reverse()
    return rows


def move_mine(raw: sqlite3.Connection, job_id: int, worker_id: str, running: str, values: dict[str, Any]) -> int:
    """``UPDATE reply_jobs SET values`` of a job this worker runs (``running``, claimed by it); how many rows moved
    (0 or 1). Timestamps in ``values`` are bound as ``ts`` gives them."""
    params = [ts(v) if isinstance(v, datetime) else v for v in values.values()]
    return raw.execute(f"UPDATE reply_jobs SET {', '.join(f'{name} = ?' for name in values)} WHERE id = ? AND "
                       "status = ? AND claimed_by = ?", (*params, job_id, running, worker_id)).rowcount


def send_if_free(raw: sqlite3.Connection, job_id: int, worker_id: str, running: str, session_id: int, tenant_id: int,
                 now: datetime, pausable: bool, values: dict[str, Any]) -> tuple[bool | None, bool, int | None]:
    """Whether the chat is paused (None: it is gone) and whether its tenant is paused as a whole, at ``now``; when
    neither holds the job back (``pausable``: a pause does), the job this worker runs moves to ``values`` too:
    how many rows moved (0: another worker holds it now), else None (nothing moved)."""
    chat, tenant = session_paused(raw, session_id), tenant_id in tenants_paused(raw, [tenant_id], now)
    if chat is None or (pausable and (chat or tenant)):
        return chat, tenant, None
    return chat, tenant, move_mine(raw, job_id, worker_id, running, values)


def session_exists(raw: sqlite3.Connection, session_id: int) -> bool:
    return raw.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone() is not None


def session_paused(raw: sqlite3.Connection, session_id: int) -> bool | None:
    """Whether the session is paused; None when it is gone."""
    row = raw.execute("SELECT is_paused FROM sessions WHERE id = ?", (session_id,)).fetchone()
    return None if row is None else bool(row[0])


def mark_sent(raw: sqlite3.Connection, job_id: int, now: datetime, message_id: str | None,
              parts_sent: int | None) -> tuple[str | None] | None:
    """The job is sent (its echo's id kept if one came first); (the id it keeps,), or None when it is gone."""
    stamp = ts(now)
    return raw.execute(
        "UPDATE reply_jobs SET status = 'sent', sent_at = ?, updated_at = ?, last_error = NULL, "
        "sent_message_id = coalesce(sent_message_id, ?)" + (", parts_sent = ?" if parts_sent is not None else "")
        + " WHERE id = ? RETURNING sent_message_id",
        (stamp, stamp, message_id, *(() if parts_sent is None else (parts_sent,)), job_id)).fetchone()


def keep_sent(raw: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """A text we sent joins the chat's transcript as the bot's: (tenant_id, session_id, message_id, chat_id, text,
    received_at)."""
    raw.execute("INSERT INTO messages (tenant_id, session_id, message_id, chat_id, event, direction, from_me, kind, "
                "message_type, text, received_at, action, raw) VALUES (?, ?, ?, ?, 'reply', 'bot', 1, 'text', "
                "'conversation', ?, ?, 'own_message', '{}') ON CONFLICT (tenant_id, message_id) DO NOTHING", row)
