"""Statements that several modules share, written once: the dialect's INSERT, index-friendly ``(tenant, key) IN``
lists, the session upsert that creates and locks a batch's chats, and the chat history a reply is written from.

Every function here is synchronous Core code over a ``Connection``: inside the batching writer it runs as it is,
from an ``AsyncConnection`` through ``conn.run_sync(...)``.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from hybridflow import events as ev
from hybridflow.models import ALIASES, MESSAGES, SESSIONS, TOMBSTONES
from hybridflow.sql import hot
from hybridflow.sql import sqlite as sqlite_sql

SessionKey = tuple[int, str]  # (tenant id, chat id)


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT (for statements built once per dialect)."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def insert_for(conn: Connection, table: sa.Table) -> Any:
    """The INSERT of the connection's dialect."""
    return dialect_insert(conn.dialect.name, table)


def pairs_in(tenant_column: sa.Column, key_column: sa.Column, pairs: Iterable[tuple[int, str]]) -> Any:
    """``(tenant, key) IN pairs`` written so that both databases use the composite index.

    SQLite scans the whole table for a row-value IN list; ``tenant = ? AND key IN (...)`` per tenant is an index
    search on both backends.
    """
    by_tenant: dict[int, list[str]] = {}
    for tenant_id, key in pairs:
        by_tenant.setdefault(tenant_id, []).append(key)
    return sa.or_(*(sa.and_(tenant_column == t, key_column.in_(keys)) for t, keys in by_tenant.items()))


@functools.cache
def _lock_sessions(dialect: str) -> Any:
    """Built once per dialect: building an upsert costs more than running it."""
    upsert = dialect_insert(dialect, SESSIONS)
    return upsert.on_conflict_do_update(
        index_elements=["tenant_id", "chat_id"], set_={"updated_at": upsert.excluded.updated_at},
    ).returning(*SESSIONS.c)


def lock_sessions(conn: Connection, keys: dict[SessionKey, str], now: datetime) -> dict[SessionKey, Row[Any]]:
    """Create the sessions (``keys`` maps each to its chat kind) that do not exist yet and lock all of them for this
    transaction: one upsert that returns the rows (on PostgreSQL, ON CONFLICT DO UPDATE locks each row as
    FOR UPDATE would; on SQLite the transaction is the one writer)."""
    fast = hot(conn)
    if fast is not None:
        return fast.sql.lock_sessions(fast.raw, keys, now)  # type: ignore[no-any-return]
    # Sorted: two processes upserting the same sessions take their row locks in one order (no deadlock).
    rows = [{"tenant_id": t, "chat_id": c, "chat_kind": keys[(t, c)], "is_paused": False, "created_at": now,
             "updated_at": now} for (t, c) in sorted(keys)]
    result = conn.execute(_lock_sessions(conn.dialect.name), rows)
    return {(row.tenant_id, row.chat_id): row for row in result}


DELETED = "deleted"  # the "direction" of a message id that was deleted (a tombstone): never new again


def stored_directions(conn: Connection, ids: set[tuple[int, str]]) -> dict[tuple[int, str], str]:
    """Which (tenant, message id) pairs are already stored, with who wrote them; ids of deleted messages
    (retention, a forgotten chat) count as stored, by ``DELETED`` (Core; ``jobs.batch_reads`` reads it with the
    batch's other reads)."""
    query = sa.select(MESSAGES.c.tenant_id, MESSAGES.c.message_id, MESSAGES.c.direction).where(
        pairs_in(MESSAGES.c.tenant_id, MESSAGES.c.message_id, ids)).union_all(
        sa.select(TOMBSTONES.c.tenant_id, TOMBSTONES.c.message_id, sa.literal(DELETED)).where(
            pairs_in(TOMBSTONES.c.tenant_id, TOMBSTONES.c.message_id, ids)))
    found: dict[tuple[int, str], str] = {}
    for row in conn.execute(query):
        if row[2] != DELETED or (row[0], row[1]) not in found:  # a stored row wins over a tombstone
            found[(row[0], row[1])] = row[2]
    return found


@functools.cache
def _tombstone(dialect: str) -> Any:
    return dialect_insert(dialect, TOMBSTONES).on_conflict_do_nothing(index_elements=["tenant_id", "message_id"])


def echo_key(chat_id: str, text: str | None) -> str:
    """The tombstone of a reply text sent to a chat that was then forgotten: its echo, however late, is a duplicate
    (a digest of chat and text, not the text)."""
    digest = hashlib.sha256(f"{chat_id}\n{(text or '').strip()}".encode("utf-8", "replace")).hexdigest()
    return f"echo:{digest[:40]}"


def add_tombstones(conn: Connection, pairs: Iterable[tuple[int, str]], now: datetime) -> None:
    """Remember deleted message ids (tenant, id) so that a webhook of one of them is never new again."""
    rows = [{"tenant_id": t, "message_id": m, "deleted_at": now} for t, m in dict.fromkeys(pairs)]
    if rows:
        conn.execute(_tombstone(conn.dialect.name), rows)


# Messages searched for a LID's phone chat: the newest first, enough to find it without reading a long history.
LID_SEARCH_LIMIT = 200


def alias_of(conn: Connection, tenant_id: int, lid: str) -> str | None:
    """The phone-keyed chat a ``@lid`` is known as, once a message carried both ids."""
    return conn.execute(sa.select(ALIASES.c.chat_id).where(ALIASES.c.tenant_id == tenant_id,
                                                           ALIASES.c.lid == lid)).scalar()


def chats_naming_lid(conn: Connection, tenant_id: int, lid: str) -> tuple[str, ...]:
    """The chats whose stored raw bodies name ``lid`` as their LID (messages from before aliases were kept; a
    bounded search, newest first)."""
    rows = conn.execute(
        sa.select(MESSAGES.c.chat_id, MESSAGES.c.raw)
        .where(MESSAGES.c.tenant_id == tenant_id, MESSAGES.c.chat_id != lid,
               MESSAGES.c.raw.contains(lid, autoescape=True))
        .order_by(MESSAGES.c.id.desc()).limit(LID_SEARCH_LIMIT))
    return tuple(dict.fromkeys(row.chat_id for row in rows if row.raw and _lid_of(row.raw) == lid))


def _lid_of(raw: str) -> str | None:
    """The @lid a stored raw body names for its chat, if any."""
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return ev.parse_event(body).lid_jid


def recent_texts(conn: Connection, session_id: int, limit: int) -> list[tuple[str, str]]:
    """The last ``limit`` messages with text of a chat as (who wrote it, text), oldest first."""
    raw = sqlite_sql.driver(conn)
    if raw is not None:
        return sqlite_sql.recent_texts(raw, session_id, limit)
    rows = conn.execute(
        sa.select(MESSAGES.c.direction, MESSAGES.c.text)
        .where(MESSAGES.c.session_id == session_id, MESSAGES.c.text.is_not(None))
        .order_by(MESSAGES.c.received_at.desc(), MESSAGES.c.id.desc()).limit(limit)
    ).all()
    return [(r.direction, r.text) for r in reversed(rows)]
