"""Ingestion: the decision for each message, and the batch that stores messages, sessions and decisions at once.

``decide`` is the state machine (pure: it mutates only the in-memory session it is given). ``process_batch`` is
the batching writer's work: it runs ``decide`` for every message of a batch inside one transaction (synchronous
Core code: the store runs a whole batch in one hop to the database thread, see ``Store.batch``), then the reply
workers' writes of the moment. Sessions are created and locked (``FOR UPDATE`` on PostgreSQL, the single
``BEGIN IMMEDIATE`` writer on SQLite) before duplicates are checked, so two processes that receive the same message
at once serialize on the session row and exactly one stores it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hybridflow import events as ev
from hybridflow import handoff, jobs, pauses
from hybridflow.commands import is_command
from hybridflow.events import Author
from hybridflow.models import ALIASES, EVENTS, JOBS, MESSAGES, SESSIONS, JobKind
from hybridflow.pauses import Pause
from hybridflow.service import notifications
from hybridflow.service.tenants import TenantConfig
from hybridflow.sql import hot
from hybridflow.statements import dialect_insert, echo_key, lock_sessions, pairs_in
from hybridflow.validation import storable_text


class Action(StrEnum):
    """What happened to a webhook, as answered to Evolution and logged."""

    REPLY_QUEUED = "reply_queued"
    PAUSED = "paused"
    IGNORED_PAUSED = "ignored_paused"
    DUPLICATE = "duplicate"
    OWN_MESSAGE = "own_message"
    STORED = "stored"
    IGNORED_EVENT = "ignored_event"
    IGNORED_HOURS = "ignored_hours"  # business hours say the bot is silent now
    COMMAND = "command"  # the owner's command in "Message yourself", carried out and answered there
    LABEL_PAUSED = "label_paused"  # the pause label was put on a chat (or a label became the pause label)
    LABEL_RESUMED = "label_resumed"  # the pause label came off a chat (or was renamed or deleted)
    LABEL_STORED = "label_stored"  # a label change that pauses nothing, kept for later


class Reason(StrEnum):
    """Why a session was paused or resumed."""

    HUMAN_MESSAGE = "human_message"
    API_TAKEOVER = "api_takeover"
    AUTO_RESUME = "auto_resume"
    OPERATOR = "operator"
    RATE_LIMITED = "rate_limited"  # the chat's reply cap was reached
    CUSTOMER_REQUEST = "customer_request"  # the customer asked for a person (a handoff phrase)


REPLY_QUEUED, PAUSED, IGNORED_PAUSED = Action.REPLY_QUEUED, Action.PAUSED, Action.IGNORED_PAUSED
DUPLICATE, OWN_MESSAGE, STORED, IGNORED_EVENT = Action.DUPLICATE, Action.OWN_MESSAGE, Action.STORED, Action.IGNORED_EVENT
IGNORED_HOURS, COMMAND = Action.IGNORED_HOURS, Action.COMMAND
CUSTOMER, OWNER, API, BOT = Author.CUSTOMER, Author.OWNER, Author.API, Author.BOT
HUMAN_MESSAGE, API_TAKEOVER, AUTO_RESUME, OPERATOR = (Reason.HUMAN_MESSAGE, Reason.API_TAKEOVER, Reason.AUTO_RESUME,
                                                      Reason.OPERATOR)
RATE_LIMITED, CUSTOMER_REQUEST = Reason.RATE_LIMITED, Reason.CUSTOMER_REQUEST

TENANT_PAUSED = "tenant_paused"  # why a customer is not answered while the whole tenant is paused

# Why a message is only stored.
IGNORED_CONTACT, NOT_ALLOWED, OWN_CHAT = "ignored_contact", "not_allowed", "own_chat"
NOTE = "note"  # a note of the owner's in "Message yourself" that is not a command

# An echo of our own reply is recognised by its id, or by chat + text within this window (the echo can arrive
# before the send call has returned the id).
ECHO_WINDOW = timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message-carrying webhook of a known tenant, parsed, with its raw body."""

    tenant: TenantConfig
    event: ev.Event
    raw: str
    commands: bool = False  # it passed the tenant's webhook authentication: the owner's commands are taken


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
    """A session row being decided on, with its pauses (``hybridflow.pauses``); ``dirty`` when it must be written
    back, ``paused_changed`` when that includes its pauses (else only its activity: last message, push name). The
    summary columns always describe ``held``."""

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
    held: list[Pause] = field(default_factory=list)
    dirty: bool = False
    paused_changed: bool = False
    changes: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.is_paused and not self.held:  # a summary without its pauses: the one pause it describes
            self.held = [Pause(self.pause_reason or OPERATOR, self.paused_by or "unknown",
                               self.paused_at or self.last_human_at or datetime.now(UTC), self.resumes_at)]

    @classmethod
    def from_row(cls, row: Any) -> SessionState:
        return cls(
            id=row.id, tenant_id=row.tenant_id, chat_id=row.chat_id, is_paused=row.is_paused,
            pause_reason=row.pause_reason, paused_by=row.paused_by, paused_at=row.paused_at,
            resumes_at=row.resumes_at, last_human_at=row.last_human_at, last_message_at=row.last_message_at,
            push_name=row.push_name, held=pauses.load(row.pauses),
        )

    def pause(self, reason: str, actor: str, now: datetime, resumes_at: datetime | None, message_id: str | None,
              *, key: str = "", extend: bool = True) -> None:
        """Add a pause for ``reason`` (or extend the one it has: each owner message moves its end). A reason the
        chat was not paused for is recorded as an event."""
        new = all((p.reason, p.key) != (reason, key) for p in pauses.holding(self.held, now))
        self.held = pauses.add(self.held, Pause(reason, actor, now, resumes_at, key), now, extend=extend)
        self._summarize(now)
        if new or not extend:  # a pause given again by hand is an act of its own, in the history too
            self.changes.append(_change("paused", reason, actor, now, message_id, resumes_at))

    def resume(self, reason: str, actor: str, now: datetime, message_id: str | None = None) -> None:
        """Lift every pause (an operator's resume, or the last timed pause that ran out)."""
        if self.is_paused:
            self.changes.append(_change("resumed", reason, actor, now, message_id, None))
        self.held = []
        self._summarize(now)

    def lift(self, reason: str, actor: str, now: datetime, *, key: str | None = None,
             message_id: str | None = None) -> None:
        """Lift the pauses of one reason only (a label removed); the chat resumes if no other pause holds."""
        before = self.is_paused
        self.held = pauses.lift(self.held, now, reason=reason, key=key)
        self._summarize(now)
        if before and not self.is_paused:
            self.changes.append(_change("resumed", reason, actor, now, message_id, None))
        elif before:
            self.changes.append(_change("lifted", reason, actor, now, message_id, None))

    def _summarize(self, now: datetime) -> None:
        state = pauses.summary(self.held, now)
        self.is_paused, self.pause_reason, self.paused_by = state.is_paused, state.pause_reason, state.paused_by
        self.paused_at, self.resumes_at = state.paused_at, state.resumes_at
        self.dirty = self.paused_changed = True


def _change(change: str, reason: str, actor: str, at: datetime, message_id: str | None,
            resumes_at: datetime | None) -> dict[str, Any]:
    return {"change": change, "reason": reason, "actor": actor, "at": at, "message_id": message_id,
            "resumes_at": resumes_at}


def decide(item: Inbound, session: SessionState, now: datetime, *, duplicate: bool, echo: bool,
           recent_replies: int = 0, reply_waiting: bool = False, owner_chat: bool = False,
           tenant_paused: bool | None = None) -> tuple[str, str | None]:
    """The action for one message, applying its effect to ``session``. Returns (action, reason).

    ``recent_replies``: model replies the chat got within the tenant's reply-cap window; ``reply_waiting``: a
    reply is queued for it already (the message joins it, so it starts no new reply); ``owner_chat``: the chat is
    the owner's own by an @lid learned after the tenant was read; ``tenant_paused``: whether the whole tenant is
    paused as the database says now (None: as the tenant read a few seconds ago says).
    """
    event, tenant = item.event, item.tenant
    if echo:
        return OWN_MESSAGE, None
    if duplicate:
        return DUPLICATE, None
    session.last_message_at = now
    session.dirty = True
    if owner_chat or tenant.owns(event.chat_jid):  # "Message yourself": commands or notes, whatever fromMe says
        if item.commands and tenant.takes_commands and is_command(event.text, tenant.command_word):
            return COMMAND, None
        return STORED, NOTE if event.text else OWN_CHAT
    # Audience rules come first: in an ignored chat not even the owner's messages pause anything.
    if event.chat_jid in tenant.ignored:
        return STORED, IGNORED_CONTACT
    if tenant.allowed and event.author == CUSTOMER and event.chat_jid not in tenant.allowed:
        return STORED, NOT_ALLOWED
    if event.chat_jid == event.owner_jid:  # "Message yourself": the owner's own notes are never answered
        return STORED, OWN_CHAT
    if event.chat_kind in (ev.BROADCAST, ev.NEWSLETTER):
        return STORED, event.chat_kind
    if event.chat_kind == ev.GROUP and not tenant.allow_groups:
        return STORED, "group"
    if event.author != CUSTOMER:
        session.last_human_at = now  # written with the pause that follows
        reason = API_TAKEOVER if event.author == API else HUMAN_MESSAGE
        session.pause(reason, event.author, now, now + timedelta(seconds=tenant.resume_after), event.message_id)
        return PAUSED, reason
    if event.push_name:
        session.push_name = storable_text(event.push_name, 200)
    if session.is_paused and session.resumes_at is not None and session.resumes_at <= now:
        session.resume(AUTO_RESUME, "webhook", now, event.message_id)
    if session.is_paused:
        return IGNORED_PAUSED, session.pause_reason
    if tenant.paused_now(now) if tenant_paused is None else tenant_paused:  # "bot off all": the whole tenant
        return IGNORED_PAUSED, TENANT_PAUSED
    if event.kind not in (ev.TEXT, ev.MEDIA) or not event.text:
        return STORED, event.kind if event.kind != ev.MEDIA else "media_without_text"
    if handoff.asks_for_person(event.text, tenant.handoff_phrases):  # "quero falar com um atendente"
        session.pause(CUSTOMER_REQUEST, "customer", now, now + timedelta(seconds=tenant.handoff_pause),
                      event.message_id)
        return PAUSED, CUSTOMER_REQUEST
    if not tenant.answers_now(now):  # the moment that counts is when the message is received
        return IGNORED_HOURS, None
    cap, _window = tenant.reply_cap
    if cap and not reply_waiting and recent_replies >= cap:
        # Another bot (an auto-responder) on the other side: stop the loop as if the owner had taken over.
        session.pause(RATE_LIMITED, "guard", now, now + timedelta(seconds=tenant.resume_after), event.message_id)
        return PAUSED, RATE_LIMITED
    return REPLY_QUEUED, None


@functools.cache
def _statements(dialect: str) -> dict[str, Any]:
    """The batch's statements, built once per dialect (building an upsert costs more than running it)."""
    return {
        "new_messages": dialect_insert(dialect, MESSAGES).on_conflict_do_nothing(
            index_elements=["tenant_id", "message_id"]),
        "new_aliases": dialect_insert(dialect, ALIASES).on_conflict_do_nothing(index_elements=["tenant_id", "lid"]),
        "update_sessions": sa.update(SESSIONS).where(SESSIONS.c.id == sa.bindparam("b_id")).values(
            updated_at=sa.bindparam("b_updated_at"), pauses=sa.bindparam("b_pauses"),
            **{c: sa.bindparam(f"b_{c}") for c in SESSION_COLUMNS}),
    }


SESSION_COLUMNS = ("is_paused", "pause_reason", "paused_by", "paused_at", "resumes_at", "last_human_at",
                   "last_message_at", "push_name")  # and "pauses", written from ``SessionState.held``


def process_batch(conn: Connection, items: list[Inbound | jobs.WriteOp[Any]], *,
                  clock: Callable[[], datetime]) -> list[Any]:
    """The batching writer's transaction for what arrived together: the webhooks (set-based), then the reply
    workers' writes (after the webhooks, so a pause that arrived in the same batch is seen by the last-moment
    check before a send)."""
    inbound = [item for item in items if isinstance(item, Inbound)]
    results = store_batch(conn, inbound, clock()) if inbound else []
    queued = any(_may_queue(result) for result in results)
    decided = iter(results)
    return [next(decided) if isinstance(item, Inbound) else
            [] if isinstance(item, RidingClaim) and not queued else item(conn) for item in items]


class RidingClaim:
    """The idle reply worker's claim, riding with a batch (see ``BatchWriter.ride``): it claims only when the
    batch's webhooks queued something (jobs due at other times are the worker's own poll's)."""

    __slots__ = ("claim",)

    def __init__(self, claim: Callable[[Connection], list[Any]]) -> None:
        self.claim = claim

    def __call__(self, conn: Connection) -> list[Any]:
        return self.claim(conn)


def _may_queue(result: IngestResult) -> bool:
    """Whether this decision may have queued a job due now: a reply, an away message, a handoff's message."""
    return result.action in (REPLY_QUEUED, IGNORED_HOURS) or (
        result.action == PAUSED and result.reason in (CUSTOMER_REQUEST, RATE_LIMITED))


@dataclass(slots=True)
class _OwnSends:
    by_id: dict[tuple[int, str], int]
    # (tenant, chat, text) -> the jobs that sent that text whose echo has not been seen yet, oldest first, each
    # with whether the text is what the job is sending now (its whole text, or the current part of a paced reply)
    by_text: dict[tuple[int, str, str], list[tuple[int, bool]]]


def own_sends(rows: list[Any]) -> _OwnSends:
    """Replies HybridFlow sent or is sending to the chats of the batch's messages written from the instance, from
    ``jobs.recent_sends``' rows."""
    found = _OwnSends({}, {})
    # Older echoes find the reply's own message row instead.
    for row in rows:
        if row.sent_message_id:
            found.by_id[(row.tenant_id, row.sent_message_id)] = row.id
        parts = jobs.load_parts(row.parts)
        if parts is not None:  # a paced reply: each part echoes on its own (sent ones are kept by their id)
            current = row.parts_sent or 0
            for index, part in enumerate(parts[:current + 1]):  # the parts after the current one were not sent
                if index != current or not row.sent_message_id:
                    found.by_text.setdefault((row.tenant_id, row.chat_id, part.strip()), []).append(
                        (row.id, index == current))
        elif row.reply_text and not row.sent_message_id:
            found.by_text.setdefault((row.tenant_id, row.chat_id, row.reply_text.strip()), []).append((row.id, True))
    return found


def _is_echo(item: Inbound, sends: _OwnSends, matched: dict[int, str]) -> bool:
    event = item.event
    if not event.sent_by_instance:
        return False
    if (item.tenant.id, event.message_id) in sends.by_id:
        return True
    waiting = sends.by_text.get((item.tenant.id, event.chat_jid, (event.text or "").strip()))
    if not waiting or not event.text:
        return False
    job_id, current = waiting.pop(0)  # the same text sent twice: each echo settles one send
    if current:
        matched[job_id] = event.message_id  # remember the id: the echo proves the send reached WhatsApp
    sends.by_id[(item.tenant.id, event.message_id)] = job_id
    return True


def _reads(conn: Connection, items: list[Inbound], sessions: dict[tuple[int, str], SessionState], now: datetime,
           echoes: dict[int, tuple[int, str]]) -> tuple[dict[tuple[int, str], str], _OwnSends,
                                                        dict[int, tuple[list[datetime], bool]]]:
    """What the batch's decisions read once its chats are locked (on PostgreSQL, one round trip): the message ids
    already stored (and the tombstones of echoes), our sends to the chats of messages written from the instance,
    and what the reply cap needs for the chats of customer messages (tenants with a cap only)."""
    capped = [i for i in items if i.tenant.reply_cap[0] and i.event.author == CUSTOMER]
    longest = max((i.tenant.reply_cap[1] for i in capped), default=0.0)
    stored, sends, replies = jobs.batch_reads(
        conn, {(i.tenant.id, i.event.message_id) for i in items} | set(echoes.values()),
        {sessions[(i.tenant.id, i.event.chat_jid)].id for i in items if i.event.sent_by_instance}, now - ECHO_WINDOW,
        {sessions[(i.tenant.id, i.event.chat_jid)].id for i in capped}, now - timedelta(seconds=longest))
    return stored, own_sends(sends), jobs.replies_started(replies)


def _message_row(item: Inbound, session: SessionState, now: datetime, action: str, author: Author) -> dict[str, Any]:
    event = item.event
    return {
        "tenant_id": item.tenant.id, "session_id": session.id, "message_id": event.message_id,
        "chat_id": event.chat_jid, "event": event.event, "direction": author,
        "from_me": event.from_me, "kind": event.kind, "message_type": storable_text(event.message_type, 100),
        "text": storable_text(event.text), "push_name": storable_text(event.push_name, 200),
        "wa_timestamp": event.timestamp, "received_at": now, "action": action, "raw": storable_text(item.raw, 10**9),
    }


def store_batch(conn: Connection, items: list[Inbound], now: datetime) -> list[IngestResult]:
    """Store and decide a batch of message webhooks inside the caller's transaction."""
    keys = {(i.tenant.id, i.event.chat_jid): i.event.chat_kind for i in items}
    locked = lock_sessions(conn, keys, now)
    sessions = {key: SessionState.from_row(row) for key, row in locked.items()}
    # Our replies to a chat forgotten while they were in flight leave a tombstone of their text: a late echo is
    # a duplicate, and recreates no chat.
    echoes = {id(i): (i.tenant.id, echo_key(i.event.chat_jid, i.event.text)) for i in items
              if i.event.sent_by_instance and i.event.text}
    stored, sends, started = _reads(conn, items, sessions, now, echoes)
    owner_lids = _owner_lids(conn, items)
    # A tenant read as paused may have been resumed since (by another process): the database says.
    still_paused = jobs.tenants_paused(conn, {i.tenant.id for i in items if i.tenant.paused_now(now)}, now)
    matched_echoes: dict[int, str] = {}
    results, messages, replies, notices, alerts = [], [], [], [], []
    for item in items:
        event, session = item.event, sessions[(item.tenant.id, item.event.chat_jid)]
        key = (item.tenant.id, event.message_id)
        duplicate = key in stored or echoes.get(id(item)) in stored
        # Our own reply is stored when it is sent: a late (or repeated) echo of it finds that row.
        echo = stored.get(key) == BOT or _is_echo(item, sends, matched_echoes)
        times, waiting = started.get(session.id, ([], False))
        since = now - timedelta(seconds=item.tenant.reply_cap[1])
        action, reason = decide(item, session, now, duplicate=duplicate, echo=echo,
                                recent_replies=sum(1 for t in times if t >= since), reply_waiting=waiting,
                                owner_chat=(item.tenant.id, event.chat_jid) in owner_lids,
                                tenant_paused=item.tenant.id in still_paused if item.tenant.paused_now(now) else None)
        if action == REPLY_QUEUED and not waiting:
            started[session.id] = ([*times, now], True)  # later messages of this batch join this reply
        if not duplicate:
            stored[key] = author = BOT if echo else event.author
            messages.append(_message_row(item, session, now, action, author))
        if action == REPLY_QUEUED:
            replies.append(jobs.Reply(item.tenant.id, session.id, session.chat_id, event.message_id,
                                      due_at=now + timedelta(seconds=item.tenant.debounce)))
        elif action == IGNORED_HOURS and (away := item.tenant.away_text(now)):
            notices.append(_away_notice(item, session, now, away))
        elif action == PAUSED and reason in (CUSTOMER_REQUEST, RATE_LIMITED):
            if reason == CUSTOMER_REQUEST and item.tenant.handoff_message:
                notices.append(jobs.Notice(JobKind.HANDOFF, item.tenant.id, session.id, session.chat_id,
                                           f"handoff:{event.message_id}", event.message_id,
                                           item.tenant.handoff_message, due_at=now))
            alerts.append((item.tenant, notifications.Alert(
                notifications.HANDOFF if reason == CUSTOMER_REQUEST else notifications.RATE_LIMITED,
                f"notify:{event.message_id}", event.message_id, session.chat_id, session.push_name, event.text,
                session.resumes_at)))
        results.append(IngestResult(action, item.tenant.instance, event.chat_jid, event.message_id, reason,
                                    session.is_paused, session.resumes_at))
    new_ids = {(m["tenant_id"], m["message_id"]) for m in messages if m["direction"] != BOT}
    _remember_aliases(conn, [i for i in items if (i.tenant.id, i.event.message_id) in new_ids])
    # A chat created by this batch that kept nothing (only ids of a forgotten chat, answered duplicate) is not kept.
    kept = {m["session_id"] for m in messages}
    _drop_sessions(conn, [s.id for key, s in sessions.items()
                          if locked[key].created_at == now and s.id not in kept and not s.is_paused])
    dirty = [s for s in sessions.values() if s.dirty]
    fast = hot(conn)
    if fast is not None:  # the batch's writes together (on PostgreSQL, one round trip)
        _skip_for_pauses(conn, dirty, now)
        ts = fast.sql.ts
        fast.sql.write_batch(fast.raw, messages=_message_tuples(messages, ts), sessions=_session_tuples(dirty, now, ts),
                             active=_activity_tuples(dirty, now, ts), events=_event_tuples(dirty, ts),
                             replies=jobs.reply_rows(replies, now, ts))
    else:
        if messages:
            conn.execute(_statements(conn.dialect.name)["new_messages"], messages)
        write_sessions(conn, dirty, now)
        jobs.enqueue_replies(conn, replies, now)
    jobs.enqueue_notices(conn, notices, now)
    for tenant, alert in alerts:
        notifications.queue(conn, tenant, alert, now)
    jobs.settle_echoes(conn, matched_echoes, now)
    return results


def _message_tuples(messages: list[dict[str, Any]], ts: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    """Message rows for the driver's statements (``hybridflow.sql``), timestamps bound by the dialect's ``ts``."""
    return [(m["tenant_id"], m["session_id"], m["message_id"], m["chat_id"], m["event"], str(m["direction"]),
             m["from_me"], m["kind"], m["message_type"], m["text"], m["push_name"], ts(m["wa_timestamp"]),
             ts(m["received_at"]), str(m["action"]), m["raw"]) for m in messages]


def _session_tuples(dirty: list[SessionState], now: datetime, ts: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    """The sessions whose pauses changed, every column written back."""
    return [(ts(now), pauses.dump(s.held), s.is_paused, s.pause_reason, s.paused_by, ts(s.paused_at),
             ts(s.resumes_at), ts(s.last_human_at), ts(s.last_message_at), s.push_name, s.id)
            for s in dirty if s.paused_changed]


def _activity_tuples(dirty: list[SessionState], now: datetime, ts: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    """The sessions that only got a message: their activity columns alone, so that the pause indexes are not
    rewritten (on SQLite an UPDATE rewrites the entries of every index on a column it sets, same value or not)."""
    return [(ts(now), ts(s.last_message_at), s.push_name, s.id) for s in dirty if not s.paused_changed]


def _event_tuples(dirty: list[SessionState], ts: Callable[[Any], Any]) -> list[tuple[Any, ...]]:
    return [(s.tenant_id, s.id, ts(c["at"]), c["change"], str(c["reason"]), str(c["actor"]), c["message_id"],
             ts(c["resumes_at"])) for s in dirty for c in s.changes]


def _owner_lids(conn: Connection, items: list[Inbound]) -> set[tuple[int, str]]:
    """The batch's @lid chats that are their tenant's owner (an alias learned since the tenant was read)."""
    asked = {(i.tenant.id, i.event.chat_jid): i.tenant.owner_jid for i in items
             if i.tenant.owner_jid and i.event.chat_jid and i.event.chat_jid.endswith("@lid")
             and i.event.chat_jid not in i.tenant.owner_lids}
    if not asked:
        return set()
    rows = conn.execute(sa.select(ALIASES.c.tenant_id, ALIASES.c.lid, ALIASES.c.chat_id).where(
        pairs_in(ALIASES.c.tenant_id, ALIASES.c.lid, asked)))
    return {(r.tenant_id, r.lid) for r in rows if asked.get((r.tenant_id, r.lid)) == r.chat_id}


def _remember_aliases(conn: Connection, items: list[Inbound]) -> None:
    """Keep the @lid of each chat that a message named by both ids (``remoteJidAlt``), once: label events and
    commands that give only the LID find the chat by it."""
    pairs = {(i.tenant.id, i.event.lid_jid): i.event.chat_jid for i in items
             if i.event.lid_jid and i.event.chat_jid and i.event.chat_jid != i.event.lid_jid}
    fast = hot(conn) if pairs else None
    if fast is not None:
        fast.sql.insert_aliases(fast.raw, [(t, lid, chat) for (t, lid), chat in sorted(pairs.items())])
    elif pairs:
        conn.execute(_statements(conn.dialect.name)["new_aliases"],
                     [{"tenant_id": t, "lid": lid, "chat_id": chat} for (t, lid), chat in sorted(pairs.items())])


def _away_notice(item: Inbound, session: SessionState, now: datetime, text: str) -> jobs.Notice:
    """The away message for a customer who wrote while closed: its key is the chat and the tenant's local date,
    so the chat gets it once that day whatever the number of messages, webhooks and processes."""
    day = now.astimezone(item.tenant.zone).date().isoformat()
    return jobs.Notice(JobKind.AWAY, item.tenant.id, session.id, session.chat_id, f"away:{day}:{session.chat_id}",
                       item.event.message_id, text, due_at=now + timedelta(seconds=item.tenant.debounce))


def _drop_sessions(conn: Connection, candidates: list[int]) -> None:
    """Delete the sessions among ``candidates`` that nothing refers to (no message, job or event)."""
    if not candidates:
        return
    used: set[int] = set()
    for table in (MESSAGES, JOBS, EVENTS):
        used |= set(conn.execute(sa.select(table.c.session_id).where(table.c.session_id.in_(candidates))
                                 .distinct()).scalars())
    empty = [sid for sid in candidates if sid not in used]
    if empty:
        conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.id.in_(empty)))


def write_sessions(conn: Connection, dirty: list[SessionState], now: datetime) -> None:
    """Write back changed sessions with their pause events; a chat just paused loses its waiting jobs."""
    if not dirty:
        return
    fast = hot(conn)
    if fast is not None:
        fast.sql.write_batch(fast.raw, messages=(), sessions=_session_tuples(dirty, now, fast.sql.ts),
                             active=_activity_tuples(dirty, now, fast.sql.ts), events=_event_tuples(dirty, fast.sql.ts),
                             replies=())
    else:
        conn.execute(_statements(conn.dialect.name)["update_sessions"],
                     [{"b_id": s.id, "b_updated_at": now, "b_pauses": pauses.dump(s.held),
                       **{f"b_{c}": getattr(s, c) for c in SESSION_COLUMNS}} for s in dirty])
        changes = [{"tenant_id": s.tenant_id, "session_id": s.id, **c} for s in dirty for c in s.changes]
        if changes:
            conn.execute(sa.insert(EVENTS), changes)
    _skip_for_pauses(conn, dirty, now)


def _skip_for_pauses(conn: Connection, dirty: list[SessionState], now: datetime) -> None:
    """Replies still waiting for a chat that a human just took over are dropped at once."""
    jobs.skip_queued(conn, [s.id for s in dirty if any(c["change"] == "paused" for c in s.changes)], now,
                     "paused before the reply was generated")
