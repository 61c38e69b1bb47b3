"""Sessions as operators see them: listing, history, manual pause and resume, and the auto-resume sweep."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hybridflow import events as ev
from hybridflow import jobs
from hybridflow.errors import BadRequest, UnknownSession
from hybridflow.models import EVENTS, MESSAGES, SESSIONS, TENANTS
from hybridflow.service.ingest import AUTO_RESUME, OPERATOR
from hybridflow.service.tenants import TenantConfig
from hybridflow.statements import lock_sessions
from hybridflow.store import Store


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _jsonable(obj: Any) -> dict[str, Any]:
    return {k: _iso(v) if isinstance(v, datetime) else v for k, v in asdict(obj).items()}


@dataclass(frozen=True, slots=True)
class SessionView:
    instance: str
    chat_id: str
    chat_kind: str
    push_name: str | None
    is_paused: bool
    pause_reason: str | None
    paused_by: str | None
    paused_at: datetime | None
    resumes_at: datetime | None
    last_human_at: datetime | None
    last_message_at: datetime | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class SessionEventView:
    at: datetime
    change: str
    reason: str
    actor: str
    message_id: str | None
    resumes_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class MessageView:
    message_id: str
    received_at: datetime
    direction: str
    kind: str
    text: str | None
    action: str

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class ReplyView:
    id: int
    status: str
    attempts: int
    trigger_message_id: str
    reply_text: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class SessionDetail:
    session: SessionView
    events: list[SessionEventView]
    messages: list[MessageView]
    replies: list[ReplyView]

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.session.as_dict(),
            "events": [e.as_dict() for e in self.events],
            "messages": [m.as_dict() for m in self.messages],
            "replies": [r.as_dict() for r in self.replies],
        }


def chat_key(chat: str) -> str:
    """A chat as typed by an operator (full JID or bare phone number) -> the stored chat id."""
    jid = ev.normalize_jid(chat)
    if not jid:
        raise BadRequest(f"not a chat id or phone number: {chat!r}")
    return jid


_VIEW_COLUMNS = [TENANTS.c.instance] + [SESSIONS.c[name] for name in (
    "chat_id", "chat_kind", "push_name", "is_paused", "pause_reason", "paused_by", "paused_at", "resumes_at",
    "last_human_at", "last_message_at", "created_at")]


def _view(row: Any) -> SessionView:
    return SessionView(**{column.name: getattr(row, column.name) for column in _VIEW_COLUMNS})


def _select_views() -> sa.Select:
    return sa.select(*_VIEW_COLUMNS).join(TENANTS, TENANTS.c.id == SESSIONS.c.tenant_id)


class Sessions:
    """Queries and operator actions on sessions."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def list(self, *, instance: str | None = None, paused: bool | None = None, since: datetime | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[SessionView], int]:
        """A page of sessions, most recently active first, and the total that matched."""
        conditions = [TENANTS.c.removed_at.is_(None)]
        if instance is not None:
            conditions.append(TENANTS.c.instance == instance)
        if paused is not None:
            conditions.append(SESSIONS.c.is_paused == paused)
        if since is not None:
            conditions.append(SESSIONS.c.last_message_at >= since)
        query = _select_views().where(*conditions)
        async with self.store.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(query.subquery()))).scalar_one()
            rows = await conn.execute(
                query.order_by(SESSIONS.c.last_message_at.desc().nulls_last(), SESSIONS.c.id.desc())
                .limit(limit).offset(offset)
            )
            return [_view(row) for row in rows], total

    async def get(self, tenant: TenantConfig, chat: str) -> SessionView:
        async with self.store.read() as conn:
            return await self._get(conn, tenant, chat_key(chat))

    async def _get(self, conn: AsyncConnection, tenant: TenantConfig, chat_id: str) -> SessionView:
        row = (await conn.execute(
            _select_views().where(SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == chat_id)
        )).first()
        if row is None:
            raise UnknownSession(f"no session for chat {chat_id} of instance {tenant.instance!r}")
        return _view(row)

    async def detail(self, tenant: TenantConfig, chat: str, *, limit: int = 20) -> SessionDetail:
        """The session with its recent pause/resume history, messages and replies."""
        chat_id = chat_key(chat)
        async with self.store.read() as conn:
            view = await self._get(conn, tenant, chat_id)
            sid = (await conn.execute(sa.select(SESSIONS.c.id).where(
                SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == chat_id))).scalar_one()
            events = await conn.execute(
                sa.select(EVENTS).where(EVENTS.c.session_id == sid).order_by(EVENTS.c.at.desc(), EVENTS.c.id.desc())
                .limit(limit))
            messages = await conn.execute(
                sa.select(MESSAGES).where(MESSAGES.c.session_id == sid)
                .order_by(MESSAGES.c.received_at.desc(), MESSAGES.c.id.desc()).limit(limit))
            replies = await conn.run_sync(jobs.for_session, sid, limit)
            return SessionDetail(
                session=view,
                events=[SessionEventView(r.at, r.change, r.reason, r.actor, r.message_id, r.resumes_at)
                        for r in reversed(events.all())],
                messages=[MessageView(r.message_id, r.received_at, r.direction, r.kind, r.text, r.action)
                          for r in reversed(messages.all())],
                replies=[ReplyView(r.id, r.status, r.attempts, r.trigger_message_id, r.reply_text, r.last_error,
                                   r.created_at, r.sent_at) for r in replies],
            )

    async def pause(self, tenant: TenantConfig, chat: str, now: datetime, *, duration: float | None,
                    actor: str) -> SessionView:
        """Pause a chat by hand, for ``duration`` seconds or until resumed by hand. Creates the session if new."""
        chat_id = chat_key(chat)
        resumes_at = now + timedelta(seconds=duration) if duration else None
        async with self.store.write() as conn:
            key = (tenant.id, chat_id)
            state = (await conn.run_sync(lock_sessions, {key: _kind_of(chat_id)}, now))[key]
            was_paused = state.is_paused
            await conn.execute(sa.update(SESSIONS).where(SESSIONS.c.id == state.id).values(
                is_paused=True, pause_reason=OPERATOR, paused_by=actor, resumes_at=resumes_at, updated_at=now,
                paused_at=now if not was_paused else state.paused_at))
            await conn.execute(sa.insert(EVENTS).values(
                tenant_id=tenant.id, session_id=state.id, at=now, change="paused", reason=OPERATOR, actor=actor,
                resumes_at=resumes_at))
            await conn.run_sync(jobs.skip_queued, [state.id], now, "paused by an operator")
            return await self._get(conn, tenant, chat_id)

    async def resume(self, tenant: TenantConfig, chat: str, now: datetime, *, actor: str) -> SessionView:
        """Resume a chat by hand, effective immediately."""
        chat_id = chat_key(chat)
        async with self.store.write() as conn:
            view = await self._get(conn, tenant, chat_id)
            sid = (await conn.execute(sa.update(SESSIONS).where(
                SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == chat_id).values(
                is_paused=False, pause_reason=None, paused_by=None, paused_at=None, resumes_at=None, updated_at=now,
            ).returning(SESSIONS.c.id))).scalar_one()
            if view.is_paused:
                await conn.execute(sa.insert(EVENTS).values(
                    tenant_id=tenant.id, session_id=sid, at=now, change="resumed", reason=OPERATOR, actor=actor))
            return await self._get(conn, tenant, chat_id)

    async def sweep(self, now: datetime) -> list[SessionView]:
        """Resume every session whose pause has run out. One atomic statement: safe beside other sweepers."""
        async with self.store.write() as conn:
            resumed = (await conn.execute(
                sa.update(SESSIONS)
                .where(SESSIONS.c.is_paused.is_(True), SESSIONS.c.resumes_at.is_not(None), SESSIONS.c.resumes_at <= now)
                .values(is_paused=False, pause_reason=None, paused_by=None, paused_at=None, resumes_at=None,
                        updated_at=now)
                .returning(SESSIONS.c.id, SESSIONS.c.tenant_id)
            )).all()
            if not resumed:
                return []
            await conn.execute(sa.insert(EVENTS), [
                {"tenant_id": r.tenant_id, "session_id": r.id, "at": now, "change": "resumed", "reason": AUTO_RESUME,
                 "actor": "sweep", "message_id": None, "resumes_at": None} for r in resumed])
            rows = await conn.execute(_select_views().where(SESSIONS.c.id.in_([r.id for r in resumed])))
            return [_view(row) for row in rows]


def _kind_of(chat_id: str) -> str:
    if chat_id.endswith("@g.us"):
        return ev.GROUP
    if chat_id.endswith("@lid"):
        return ev.LID
    return ev.USER


__all__ = ["Sessions", "SessionView", "SessionDetail", "chat_key"]
