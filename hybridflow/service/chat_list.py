"""Lists of chats as operators filter them: by tenant, state (paused, active, waiting for a reply, failed
replies), a name or number, paused chats first if asked; and what a list row shows beside the session (whether a
reply is waiting or failed, the last message)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hybridflow import events as ev
from hybridflow.models import JOBS, MESSAGES, OPEN_JOB_STATES, SESSIONS, TENANTS, JobKind, JobStatus


class ChatState(StrEnum):
    """The list filters of chats by state."""

    PAUSED = "paused"
    ACTIVE = "active"
    WAITING = "waiting"  # a reply to the customer is queued, being written or being sent
    FAILED = "failed"  # a reply failed for good (and was not retried)


@dataclass(frozen=True, slots=True)
class ChatFilter:
    """What a list of chats is narrowed to and how it is sorted."""

    instance: str | None = None
    paused: bool | None = None
    state: ChatState | None = None
    search: str | None = None  # a part of the customer's name or of the number
    since: datetime | None = None
    every_kind: bool = False  # also groups, status broadcasts and newsletters
    paused_first: bool = False


@dataclass(frozen=True, slots=True)
class LastMessage:
    direction: str
    kind: str
    text: str | None
    received_at: datetime
    message_type: str | None = None


@dataclass(frozen=True, slots=True)
class RowExtras:
    """What a list row shows beside the session: a reply waiting or failed, and the chat's last message."""

    waiting: bool = False
    failed: bool = False
    last: LastMessage | None = field(default=None)


def _waiting(session_id: Any) -> sa.Exists:
    return sa.exists().where(JOBS.c.session_id == session_id, JOBS.c.kind == JobKind.REPLY,
                             JOBS.c.status.in_(OPEN_JOB_STATES))


def _failed(session_id: Any) -> sa.Exists:
    return sa.exists().where(JOBS.c.session_id == session_id, JOBS.c.status == JobStatus.FAILED)


def _like(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


def search_condition(text: str) -> sa.ColumnElement[bool]:
    """A name that contains ``text`` (ignoring case), or a chat id that contains its digits."""
    text = text.strip()[:100]
    found = [sa.func.lower(SESSIONS.c.push_name).like(_like(text.lower()), escape="\\")]
    digits = re.sub(r"\D", "", text)
    if digits:
        found.append(SESSIONS.c.chat_id.like(_like(digits), escape="\\"))
    return sa.or_(*found)


def conditions(chats: ChatFilter) -> list[sa.ColumnElement[bool]]:
    """The WHERE of a list of chats (of tenants not removed)."""
    where: list[sa.ColumnElement[bool]] = [TENANTS.c.removed_at.is_(None)]
    if not chats.every_kind:
        where.append(SESSIONS.c.chat_kind.not_in([ev.GROUP, ev.BROADCAST, ev.NEWSLETTER]))
    if chats.instance is not None:
        where.append(TENANTS.c.instance == chats.instance)
    if chats.paused is not None:
        where.append(SESSIONS.c.is_paused == chats.paused)
    if chats.since is not None:
        where.append(SESSIONS.c.last_message_at >= chats.since)
    if chats.search and chats.search.strip():
        where.append(search_condition(chats.search))
    state = chats.state
    if state in (ChatState.PAUSED, ChatState.ACTIVE):
        where.append(SESSIONS.c.is_paused == (state == ChatState.PAUSED))
    elif state == ChatState.WAITING:
        where.append(_waiting(SESSIONS.c.id))
    elif state == ChatState.FAILED:
        where.append(_failed(SESSIONS.c.id))
    return where


def ordering(chats: ChatFilter) -> list[Any]:
    """Most recently active first; with ``paused_first``, the paused chats before the others."""
    order: list[Any] = [SESSIONS.c.is_paused.desc()] if chats.paused_first else []
    return [*order, SESSIONS.c.last_message_at.desc().nulls_last(), SESSIONS.c.id.desc()]


async def extras(conn: AsyncConnection, session_ids: Sequence[int]) -> dict[int, RowExtras]:
    """Per chat of a page: whether a reply waits or failed, and its last message (three queries for the page)."""
    ids = list(session_ids)
    if not ids:
        return {}
    waiting = set((await conn.execute(sa.select(JOBS.c.session_id).where(
        JOBS.c.session_id.in_(ids), JOBS.c.kind == JobKind.REPLY, JOBS.c.status.in_(OPEN_JOB_STATES)))).scalars())
    failed = set((await conn.execute(sa.select(JOBS.c.session_id).where(
        JOBS.c.session_id.in_(ids), JOBS.c.status == JobStatus.FAILED))).scalars())
    latest = sa.select(sa.func.max(MESSAGES.c.id)).where(MESSAGES.c.session_id.in_(ids)).group_by(
        MESSAGES.c.session_id)
    last = {row.session_id: LastMessage(row.direction, row.kind, row.text, row.received_at, row.message_type)
            for row in await conn.execute(sa.select(
                MESSAGES.c.session_id, MESSAGES.c.direction, MESSAGES.c.kind, MESSAGES.c.text,
                MESSAGES.c.received_at, MESSAGES.c.message_type).where(MESSAGES.c.id.in_(latest)))}
    return {sid: RowExtras(sid in waiting, sid in failed, last.get(sid)) for sid in ids}


__all__ = ["ChatFilter", "ChatState", "LastMessage", "RowExtras", "conditions", "extras", "ordering"]
