"""Sessions as operators see them: listing, history, manual pause and resume, and the auto-resume sweep."""

from __future__ import annotations

import difflib
import shlex
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hybridflow import events as ev
from hybridflow import jobs, pauses
from hybridflow.errors import AmbiguousChat, BadRequest, Conflict, NotFound, UnknownInstance, UnknownSession
from hybridflow.models import EVENTS, MESSAGES, SESSIONS, TENANTS, JobKind
from hybridflow.numbers import TypedChat, parse_chat
from hybridflow.service import chat_list
from hybridflow.service.chat_list import ChatFilter, ChatState, RowExtras
from hybridflow.service.ingest import AUTO_RESUME, OPERATOR, SessionState, write_sessions
from hybridflow.service.tenants import TenantConfig
from hybridflow.statements import alias_of, chats_naming_lid, lock_sessions
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
    pauses: tuple[pauses.Pause, ...] = ()  # every reason the chat is paused for, the longest first
    note: str | None = None  # what an operator action says besides the session, e.g. that it created the chat

    def as_dict(self) -> dict[str, Any]:
        data = _jsonable(replace(self, pauses=()))
        data["pauses"] = [p.as_dict() for p in self.pauses]
        if data["note"] is None:
            del data["note"]
        return data


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
    message_type: str | None = None  # WhatsApp's type: imageMessage, audioMessage, ... (the kind says media)

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class ReplyView:
    id: int
    kind: str  # reply (the model's) or away (the away message)
    status: str
    attempts: int
    trigger_message_id: str
    reply_text: str | None
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None
    tokens: int | None = None  # the model's count for its text; None: not generated, or not counted
    parts: int | None = None  # a paced reply: how many messages its text was split into; None: one
    parts_sent: int = 0  # how many of them were delivered

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


@dataclass(frozen=True, slots=True)
class Retried:
    """A failed reply due again."""

    instance: str
    chat_id: str
    reply_id: int
    kind: str

    def as_dict(self) -> dict[str, Any]:
        return {"instance": self.instance, "chat_id": self.chat_id, "reply_id": self.reply_id, "kind": self.kind,
                "status": str(jobs.RETRY)}


@dataclass(frozen=True, slots=True)
class KnownChat:
    """An existing chat a typed number matched."""

    chat_id: str
    push_name: str | None

    def label(self) -> str:
        return f"{self.chat_id} ({self.push_name})" if self.push_name else self.chat_id


@dataclass(frozen=True, slots=True)
class Match:
    """A typed chat against one tenant's existing chats: what it was read as, and the chats it matched."""

    instance: str
    typed: TypedChat
    found: tuple[KnownChat, ...]

    def existing(self) -> str:
        """The one existing chat; ``UnknownSession`` when none matched, ``AmbiguousChat`` when several did."""
        if len(self.found) > 1:
            chats = ", ".join(chat.label() for chat in self.found)
            raise AmbiguousChat(f"{self.typed.typed!r} matches {len(self.found)} chats of instance "
                                f"{self.instance!r}: {chats}; give the full chat id")
        if not self.found:
            looked_for = f" (looked for {', '.join(self.typed.jids)})" if self.typed.jids else ""
            problem = f"; {self.typed.problem}" if self.typed.problem else ""
            raise UnknownSession(f"no session for chat {self.typed.typed!r} of instance {self.instance!r}"
                                 f"{looked_for}{problem}")
        return self.found[0].chat_id

    def existing_or_new(self) -> tuple[str, str | None]:
        """The one existing chat, else the chat a complete number creates, with a note saying so."""
        if self.found:
            return self.existing(), None
        if not self.typed.complete:
            raise BadRequest(f"no chat of instance {self.instance!r} matches {self.typed.typed!r}, and it is not a "
                             f"complete number to start one: {self.typed.problem}")
        chat_id = self.typed.jids[0]
        what = "id" if self.typed.is_jid else "number"
        return chat_id, f"no chat with this {what} yet: created {chat_id}"


async def resolve_chat(conn: AsyncConnection, tenant: TenantConfig, typed: str,
                       region: str | None = None) -> Match:
    """Match a chat as a person typed it (phone number in any format, or a full JID) to the tenant's chats.

    A full JID matches exactly; a ``@lid`` JID no chat has also matches the phone-keyed chat whose messages carried
    it (Evolution sent both). A phone number matches each id it may mean (the Brazilian ninth digit both ways).
    """
    chat = parse_chat(typed, region or tenant.country)  # a number without its country code: the tenant's
    found = await _chats_with_ids(conn, tenant.id, chat.jids)
    if not found and chat.is_jid and chat.jids[0].endswith("@lid"):
        found = await _chats_by_lid(conn, tenant.id, chat.jids[0])
    return Match(tenant.instance, chat, found)


async def _chats_with_ids(conn: AsyncConnection, tenant_id: int, chat_ids: tuple[str, ...]) -> tuple[KnownChat, ...]:
    if not chat_ids:
        return ()
    rows = await conn.execute(sa.select(SESSIONS.c.chat_id, SESSIONS.c.push_name).where(
        SESSIONS.c.tenant_id == tenant_id, SESSIONS.c.chat_id.in_(chat_ids)))
    by_id = {row.chat_id: KnownChat(row.chat_id, row.push_name) for row in rows}
    return tuple(by_id[chat_id] for chat_id in chat_ids if chat_id in by_id)  # in the order the ids were given


async def _chats_by_lid(conn: AsyncConnection, tenant_id: int, lid: str) -> tuple[KnownChat, ...]:
    """The chat whose messages named ``lid`` as its LID: from the aliases learned since they are kept, else from
    the stored raw bodies of older messages."""
    alias = await conn.run_sync(alias_of, tenant_id, lid)
    chat_ids = (alias,) if alias is not None else await conn.run_sync(chats_naming_lid, tenant_id, lid)
    return await _chats_with_ids(conn, tenant_id, chat_ids)


_VIEW_COLUMNS = [TENANTS.c.instance] + [SESSIONS.c[name] for name in (
    "chat_id", "chat_kind", "push_name", "is_paused", "pause_reason", "paused_by", "paused_at", "resumes_at",
    "last_human_at", "last_message_at", "created_at")]
_STATE_COLUMNS = [SESSIONS.c[name] for name in ("id", "tenant_id", "pauses", "updated_at")]


def _view(row: Any, now: datetime) -> SessionView:
    state = SessionState.from_row(row)  # the pauses, also of a row written before they were stored
    held = pauses.holding(state.held, now) if state.is_paused else []
    return SessionView(**{column.name: getattr(row, column.name) for column in _VIEW_COLUMNS},
                       pauses=tuple(held))


def _select_views() -> sa.Select:
    return sa.select(*_VIEW_COLUMNS, *_STATE_COLUMNS).join(TENANTS, TENANTS.c.id == SESSIONS.c.tenant_id)


class Sessions:
    """Queries and operator actions on sessions."""

    def __init__(self, store: Store, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.store = store
        self.clock = clock

    async def list(self, *, instance: str | None = None, paused: bool | None = None, since: datetime | None = None,
                   limit: int = 50, offset: int = 0, every_kind: bool = False, state: ChatState | None = None,
                   search: str | None = None, paused_first: bool = False) -> tuple[list[SessionView], int]:
        """A page of sessions, most recently active first (paused ones first with ``paused_first``), and the total
        that matched. Groups, status broadcasts and newsletters are not people's chats: listed only with
        ``every_kind``. ``state`` and ``search`` narrow it as ``chat_list.ChatFilter`` says."""
        chats = ChatFilter(instance, paused, state, search, since, every_kind, paused_first)
        rows, total = await self._page(chats, limit, offset)
        return [view for view, _ in rows], total

    async def overview(self, chats: ChatFilter, *, limit: int = 50, offset: int = 0
                       ) -> tuple[list[tuple[SessionView, RowExtras]], int]:
        """``list`` with what a list row shows beside each session (a reply waiting or failed, the last message)."""
        return await self._page(chats, limit, offset, with_extras=True)

    async def _page(self, chats: ChatFilter, limit: int, offset: int, *, with_extras: bool = False
                    ) -> tuple[list[tuple[SessionView, RowExtras]], int]:
        query = _select_views().where(*chat_list.conditions(chats))
        async with self.store.read() as conn:
            total = (await conn.execute(sa.select(sa.func.count()).select_from(query.subquery()))).scalar_one()
            if not total and chats.instance is not None:
                await _known_instance(conn, chats.instance)
            rows = (await conn.execute(query.order_by(*chat_list.ordering(chats)).limit(limit).offset(offset))).all()
            more = await chat_list.extras(conn, [row.id for row in rows]) if with_extras else {}
            now = self.clock()
            return [(_view(row, now), more.get(row.id, RowExtras())) for row in rows], total

    async def match(self, tenant: TenantConfig, chat: str) -> Match:
        """The tenant's chats a typed chat (phone number or JID) matches."""
        async with self.store.read() as conn:
            return await resolve_chat(conn, tenant, chat)

    async def get(self, tenant: TenantConfig, chat: str) -> SessionView:
        """The one session a typed chat matches."""
        async with self.store.read() as conn:
            return await self._get(conn, tenant, (await resolve_chat(conn, tenant, chat)).existing())

    async def _get(self, conn: AsyncConnection, tenant: TenantConfig, chat_id: str) -> SessionView:
        row = (await conn.execute(
            _select_views().where(SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == chat_id)
        )).first()
        if row is None:
            raise UnknownSession(f"no session for chat {chat_id} of instance {tenant.instance!r}")
        return _view(row, self.clock())

    async def detail(self, tenant: TenantConfig, chat: str, *, limit: int = 20) -> SessionDetail:
        """The session with its recent pause/resume history, messages and replies."""
        async with self.store.read() as conn:
            chat_id = (await resolve_chat(conn, tenant, chat)).existing()
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
                messages=[MessageView(r.message_id, r.received_at, r.direction, r.kind, r.text, r.action,
                                      r.message_type)
                          for r in reversed(messages.all())],
                replies=[ReplyView(r.id, r.kind, r.status, r.attempts, r.trigger_message_id, r.reply_text,
                                   r.last_error, r.created_at, r.sent_at, r.tokens,
                                   len(jobs.load_parts(r.parts) or ()) or None, r.parts_sent or 0)
                         for r in replies],
            )

    async def pause(self, tenant: TenantConfig, chat: str, now: datetime, *, duration: float | None,
                    actor: str) -> SessionView:
        """Pause a chat by hand, for ``duration`` seconds or until resumed by hand (replacing an earlier pause by
        hand; the chat's other pauses stay).

        A complete number or JID no chat has yet creates the session; the view's ``note`` says so.
        """
        if duration is not None and duration <= 0:
            raise BadRequest("a pause must last longer than 0 s (without a duration it lasts until resumed)")
        resumes_at = now + timedelta(seconds=duration) if duration is not None else None
        async with self.store.write() as conn:
            chat_id, note = (await resolve_chat(conn, tenant, chat)).existing_or_new()
            state = await _locked(conn, tenant, chat_id, now)
            state.pause(OPERATOR, actor, now, resumes_at, None, extend=False)
            await conn.run_sync(write_sessions, [state], now)
            return replace(await self._get(conn, tenant, chat_id), note=note)

    async def resume(self, tenant: TenantConfig, chat: str, now: datetime, *, actor: str) -> SessionView:
        """Resume a chat by hand, effective immediately: every pause of the chat is lifted."""
        async with self.store.write() as conn:
            chat_id = (await resolve_chat(conn, tenant, chat)).existing()
            await self._get(conn, tenant, chat_id)  # UnknownSession before anything is written
            state = await _locked(conn, tenant, chat_id, now)
            if not state.is_paused:
                return replace(await self._get(conn, tenant, chat_id), note="the chat was not paused: nothing changed")
            labelled = any(p.reason == pauses.LABEL for p in pauses.holding(state.held, now))
            state.resume(OPERATOR, actor, now)
            await conn.run_sync(write_sessions, [state], now)
            note = ("its pause label is still on the chat in WhatsApp Business: remove it there too, or the next "
                    "label change pauses it again") if labelled else None
            return replace(await self._get(conn, tenant, chat_id), note=note)

    async def retry(self, tenant: TenantConfig, chat: str, now: datetime, *, reply: int | None = None) -> Retried:
        """Send a failed reply of the chat again: ``reply`` (its id), else the chat's latest failed one. The same job
        is due again now (``jobs.retry_failed``): a text already written goes out as it was, and no second reply
        joins one that is waiting. Refused (409) while the chat or the tenant is paused, or a reply is waiting."""
        async with self.store.write() as conn:
            chat_id = (await resolve_chat(conn, tenant, chat)).existing()
            state = await _locked(conn, tenant, chat_id, now)  # a decision for the chat waits for this transaction
            job = await conn.run_sync(jobs.failed_of_session, state.id, reply)
            if job is None:
                what = f"no reply #{reply}" if reply is not None else "no failed reply"
                raise NotFound(f"chat {chat_id} of instance {tenant.instance!r} has {what} to retry")
            if job.status != jobs.FAILED:
                raise Conflict(f"reply #{job.id} is {job.status}, not failed: only a failed reply is retried")
            rule = jobs.RULES[JobKind(job.kind)]
            if rule.skipped_when_paused and (state.is_paused or tenant.paused_now(now)):
                what = "the chat" if state.is_paused else "the whole tenant"
                raise Conflict(f"{what} is paused: resume it first, or the retried reply is skipped at once")
            if rule.debounced and await conn.run_sync(jobs.open_of_kind, state.id, JobKind(job.kind)):
                raise Conflict("a reply to this chat is already waiting or being sent; it answers the latest "
                               "messages, so this one is not sent again")
            await conn.run_sync(jobs.retry_failed, job.id, now)
            return Retried(tenant.instance, chat_id, job.id, job.kind)

    async def sweep(self, now: datetime) -> list[SessionView]:
        """Resume every session whose pause has run out. One atomic statement: safe beside other sweepers."""
        async with self.store.write() as conn:
            resumed = (await conn.execute(
                sa.update(SESSIONS)
                .where(SESSIONS.c.is_paused.is_(True), SESSIONS.c.resumes_at.is_not(None), SESSIONS.c.resumes_at <= now)
                .values(is_paused=False, pause_reason=None, paused_by=None, paused_at=None, resumes_at=None,
                        pauses=None, updated_at=now)  # resumes_at is when the last timed pause ends: all have
                .returning(SESSIONS.c.id, SESSIONS.c.tenant_id)
            )).all()
            if not resumed:
                return []
            await conn.execute(sa.insert(EVENTS), [
                {"tenant_id": r.tenant_id, "session_id": r.id, "at": now, "change": "resumed", "reason": AUTO_RESUME,
                 "actor": "sweep", "message_id": None, "resumes_at": None} for r in resumed])
            rows = await conn.execute(_select_views().where(SESSIONS.c.id.in_([r.id for r in resumed])))
            return [_view(row, now) for row in rows]


async def _known_instance(conn: AsyncConnection, instance: str) -> None:
    """``UnknownInstance`` naming a filter's instance that no tenant has (and the closest one that does)."""
    rows = (await conn.execute(sa.select(TENANTS.c.instance, TENANTS.c.removed_at))).all()
    if any(row.instance == instance and row.removed_at is None for row in rows):
        return
    if any(row.instance == instance for row in rows):
        raise UnknownInstance(f"instance {instance!r} was removed; its kept history is read with "
                              f"`hybridflow sessions show {shlex.quote(instance)} CHAT`")
    close = difflib.get_close_matches(instance, [row.instance for row in rows if row.removed_at is None], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UnknownInstance(f"unknown instance {instance!r}{hint}: `hybridflow tenants list` shows the tenants")


async def _locked(conn: AsyncConnection, tenant: TenantConfig, chat_id: str, now: datetime) -> SessionState:
    """The chat's session, created if needed and locked for this transaction, as the decisions see it."""
    key = (tenant.id, chat_id)
    return SessionState.from_row((await conn.run_sync(lock_sessions, {key: kind_of(chat_id)}, now))[key])


def kind_of(chat_id: str) -> str:
    if chat_id.endswith("@g.us"):
        return ev.GROUP
    if chat_id.endswith("@lid"):
        return ev.LID
    return ev.USER


__all__ = ["KnownChat", "Match", "Retried", "Sessions", "SessionView", "SessionDetail", "resolve_chat"]
