"""SQLModel tables (the schema; its version and migrations are in ``hybridflow.migrations``). Every timestamp is a timezone-aware UTC datetime on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Field, SQLModel

# The version of the schema these tables describe. A change to them is a step in ``hybridflow.migrations``.
SCHEMA_VERSION = 7


class JobStatus(StrEnum):
    """Where a job of the queue is: ``queued`` -> ``running`` (claimed) -> ``sending`` (attempt recorded) -> ``sent``,
    or ``retry`` (due again later), or one of the final states. ``hybridflow.jobs`` holds every transition."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRY = "retry"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    SKIPPED_PAUSED = "skipped_paused"
    UNKNOWN = "unknown"
    CANCELLED = "cancelled"  # its tenant was removed while it waited
    SKIPPED_BUDGET = "skipped_budget"  # the tenant's daily token budget was used up before it was generated
    HANDED_OFF = "handed_off"  # the model called handoff_to_human: the chat went to a person instead of a reply
    EXPIRED = "expired"  # failures delayed it past the tenant's --max-reply-delay: not sent that late


class JobKind(StrEnum):
    """What a job sends. Each kind has its own uniqueness rules (``hybridflow.jobs.RULES``)."""

    REPLY = "reply"  # the model's answer to a customer's turn
    AWAY = "away"  # the tenant's away message, once per chat per local day while the business is closed
    NOTICE = "notice"  # HybridFlow's answer to the owner (a command's result), sent to the owner's own chat
    HANDOFF = "handoff"  # the handoff message to a customer who asked for a person (sent although that pauses)
    NOTIFY = "notify"  # a notification to the owner (a handoff, a loop stopped), never to a customer
    NOTIFY_URL = "notify_url"  # the same notification POSTed to the tenant's --notify-url (signed JSON)


OPEN_JOB_STATES = (JobStatus.QUEUED, JobStatus.RETRY, JobStatus.RUNNING, JobStatus.SENDING)
# The predicate of the partial unique index "one waiting reply per chat", written once: PostgreSQL and SQLite only
# use (and ON CONFLICT only infers) a partial index when a statement repeats its predicate.
QUEUED_REPLY = "status = 'queued' AND kind = 'reply'"
RAW_KEPT = "raw IS NOT NULL"  # the predicate of the partial index of messages whose raw body retention may clear


class UTCDateTime(sa.types.TypeDecorator):
    """A DateTime that always comes back timezone-aware in UTC (SQLite stores no zone of its own)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ts(nullable: bool = True, index: bool = False) -> object:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "hybridflow_schema"

    id: int = Field(default=1, primary_key=True)
    version: int
    updated_at: datetime = _ts(nullable=False)


class Tenant(SQLModel, table=True):
    """One Evolution instance answered by HybridFlow. Empty optional fields follow the configuration."""

    __tablename__ = "tenants"

    id: int | None = Field(default=None, primary_key=True)
    instance: str = Field(sa_column_kwargs={"unique": True}, nullable=False)
    prompt: str = Field(sa_type=sa.Text, nullable=False)
    evolution_url: str | None = None
    api_key_enc: str | None = Field(default=None, sa_type=sa.Text)
    webhook_secret_enc: str | None = Field(default=None, sa_type=sa.Text)
    jwt_key_enc: str | None = Field(default=None, sa_type=sa.Text)
    model: str | None = None
    resume_after: float | None = None
    debounce: float | None = None
    api_version: str = Field(default="v2", max_length=4)
    allow_groups: bool = False
    send_presence: bool = False
    mark_read: bool = False
    reply_cap_count: int | None = None  # None: the default cap; 0: no cap
    reply_cap_window: float | None = None
    max_reply_chars: int | None = None  # None: no limit
    hours: str | None = Field(default=None, sa_type=sa.Text)  # business hours (hours.Schedule.to_json), zone included
    hours_mode: str = Field(default="always", max_length=10,  # always | outside | inside
                            sa_column_kwargs={"server_default": "always"})
    away_message: str | None = Field(default=None, sa_type=sa.Text)  # sent while closed, in mode inside
    locale: str | None = Field(default=None, max_length=20)  # None: pt_BR
    country: str | None = Field(default=None, max_length=2)  # the region of typed numbers; None: BR
    daily_tokens: int | None = None  # the model's token budget per local day; None: no budget
    retain_raw: float | None = None  # seconds raw payloads are kept; None: the setting's; 0: forever
    retain_messages: float | None = None  # seconds messages are kept; None: the setting's; 0: forever
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    removed_at: datetime | None = _ts()  # removed with its history kept; adding the instance again revives it
    paused_at: datetime | None = _ts()  # the whole tenant paused ("bot off all"): no chat is answered
    paused_until: datetime | None = _ts()  # None while paused: until resumed
    paused_by: str | None = None
    pause_label: str | None = None  # the WhatsApp Business label that pauses a chat while it is on it
    owner_jid: str | None = None  # the instance's own number: its "Message yourself" chat takes commands
    owner_source: str | None = Field(default=None, max_length=10)  # instance (learned) | operator (--owner-number)
    command_word: str | None = Field(default=None, max_length=30)  # None: "bot"
    handoff_phrases: str | None = Field(default=None, sa_type=sa.Text)  # comma-separated; None: the defaults
    handoff_pause: float | None = None  # seconds a handoff pauses the chat; None: 24 h
    handoff_message: str | None = Field(default=None, sa_type=sa.Text)  # sent once to the customer on a handoff
    notify_number: str | None = None  # where notifications go instead of the owner's own chat
    handoff_tool: bool | None = None  # the model may call handoff_to_human(reason); None: off
    notify_url: str | None = Field(default=None, sa_type=sa.Text)  # notifications are also POSTed there (JSON)
    notify_secret_enc: str | None = Field(default=None, sa_type=sa.Text)  # signs those POSTs (HMAC-SHA256)
    split_replies: bool | None = None  # a long answer goes out in parts (blank lines), each "typed"; None: off
    time_per_char: int | None = None  # ms of "typing" per character of a part; None: 50
    max_reply_delay: float | None = None  # seconds after the customer's message a retried reply may still go; 0: no limit


class ChatSession(SQLModel, table=True):
    """The state of one chat of one tenant: paused or not, and since when."""

    __tablename__ = "sessions"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "chat_id", name="uq_sessions_tenant_chat"),
        sa.Index("ix_sessions_paused_resumes_at", "is_paused", "resumes_at"),
        sa.Index("ix_sessions_paused_last_human", "is_paused", "last_human_at"),
        sa.Index("ix_sessions_tenant_last_message", "tenant_id", "last_message_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", nullable=False)
    chat_id: str = Field(nullable=False)
    chat_kind: str = Field(default="user", max_length=20)
    push_name: str | None = None
    is_paused: bool = False
    pause_reason: str | None = None
    paused_by: str | None = None
    paused_at: datetime | None = _ts()
    resumes_at: datetime | None = _ts()
    last_human_at: datetime | None = _ts()
    last_message_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    pauses: str | None = Field(default=None, sa_type=sa.Text)  # every reason it is paused for (hybridflow.pauses)


class Message(SQLModel, table=True):
    """Every message-carrying webhook, with its raw body (cleared after ``retain_raw``) and the decision taken."""

    __tablename__ = "messages"
    __table_args__ = (
        sa.UniqueConstraint("tenant_id", "message_id", name="uq_messages_tenant_message"),
        sa.Index("ix_messages_session_received", "session_id", "received_at"),
        # Retention: the oldest messages of a tenant, and (a partial index) those that still have a raw body.
        sa.Index("ix_messages_tenant_received", "tenant_id", "received_at"),
        sa.Index("ix_messages_raw_received", "tenant_id", "received_at",
                 sqlite_where=sa.text(RAW_KEPT), postgresql_where=sa.text(RAW_KEPT)),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", nullable=False)
    session_id: int = Field(foreign_key="sessions.id", nullable=False)
    message_id: str = Field(nullable=False)
    chat_id: str = Field(nullable=False)
    event: str = Field(max_length=60)
    direction: str = Field(max_length=20)  # customer | owner | api | bot
    from_me: bool = False
    kind: str = Field(max_length=20)
    message_type: str | None = None
    text: str | None = Field(default=None, sa_type=sa.Text)
    push_name: str | None = None
    wa_timestamp: datetime | None = _ts()
    received_at: datetime = _ts(nullable=False)
    action: str = Field(max_length=30)
    raw: str | None = Field(default=None, sa_type=sa.Text, nullable=True)  # None once retention cleared it


class MessageTombstone(SQLModel, table=True):
    """The id of a deleted message (retention, or a chat forgotten), so that a retried or replayed webhook of it is
    answered ``duplicate`` instead of being new again. No content and no chat: only what deduplication needs."""

    __tablename__ = "message_tombstones"
    __table_args__ = (sa.Index("ix_message_tombstones_deleted", "deleted_at"),)

    tenant_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    message_id: str = Field(primary_key=True)
    deleted_at: datetime = _ts(nullable=False)


class SessionEvent(SQLModel, table=True):
    """History of pauses and resumes: when, why and by whom."""

    __tablename__ = "session_events"
    __table_args__ = (sa.Index("ix_session_events_session_at", "session_id", "at"),
                      sa.Index("ix_session_events_tenant_at", "tenant_id", "at"))  # retention, oldest first

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", nullable=False)
    session_id: int = Field(foreign_key="sessions.id", nullable=False)
    at: datetime = _ts(nullable=False)
    change: str = Field(max_length=20)  # paused | resumed
    reason: str = Field(max_length=30)  # human_message | api_takeover | auto_resume | operator
    actor: str = Field(max_length=60)
    message_id: str | None = None
    resumes_at: datetime | None = _ts()


class ReplyJob(SQLModel, table=True):
    """A message to produce and send (a reply, later also notices and notifications): the durable queue."""

    __tablename__ = "reply_jobs"
    __table_args__ = (
        # One job of a kind per triggering message: a retried or duplicated webhook never queues a second one.
        sa.UniqueConstraint("tenant_id", "kind", "trigger_message_id", name="uq_reply_jobs_kind_trigger"),
        # One waiting reply per session: later customer messages join it (debounce) instead of adding replies.
        sa.Index(
            "uq_reply_jobs_one_queued_reply",
            "session_id",
            unique=True,
            sqlite_where=sa.text(QUEUED_REPLY),
            postgresql_where=sa.text(QUEUED_REPLY),
        ),
        sa.Index("ix_reply_jobs_status_due", "status", "due_at"),
        sa.Index("ix_reply_jobs_sent_message", "tenant_id", "sent_message_id"),
        sa.Index("ix_reply_jobs_session_created", "session_id", "created_at"),
        sa.Index("ix_reply_jobs_tenant_generated", "tenant_id", "generated_at"),
        sa.Index("ix_reply_jobs_tenant_created", "tenant_id", "created_at"),  # retention, oldest first
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", nullable=False)
    session_id: int = Field(foreign_key="sessions.id", nullable=False)
    chat_id: str = Field(nullable=False)
    kind: str = Field(default=JobKind.REPLY, max_length=20)
    trigger_message_id: str = Field(nullable=False)
    last_message_id: str | None = None
    status: str = Field(default=JobStatus.QUEUED, max_length=20)
    due_at: datetime = _ts(nullable=False)
    attempts: int = 0
    lease_until: datetime | None = _ts()
    claimed_by: str | None = None
    reply_text: str | None = Field(default=None, sa_type=sa.Text)
    sent_message_id: str | None = None
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    received_at: datetime = _ts(nullable=False)
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    attempted_at: datetime | None = _ts()
    sent_at: datetime | None = _ts()
    tokens: int | None = None  # what the model counted for this text (prompt + answer); None: not generated, or unknown
    generated_at: datetime | None = _ts()  # when the model finished its text (the token budget's day counts this)
    parts: str | None = Field(default=None, sa_type=sa.Text)  # a paced reply: its parts (JSON list); None: one text
    parts_sent: int | None = None  # how many of the parts were delivered; None: 0


class TenantContact(SQLModel, table=True):
    """A chat on one of a tenant's audience lists: ``ignore`` (never answered) or ``allow`` (pilot mode: when the
    tenant has any, only those chats are answered). A typed number is stored as each chat id it can be."""

    __tablename__ = "tenant_contacts"
    __table_args__ = (sa.UniqueConstraint("tenant_id", "rule", "chat_id", name="uq_tenant_contacts_rule_chat"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenants.id", nullable=False)
    rule: str = Field(max_length=10)  # ignore | allow
    chat_id: str = Field(nullable=False)
    label: str = Field(nullable=False)  # the number as the operator gave it, normalized (+5511987654321)
    created_at: datetime = _ts(nullable=False)


class TenantLabel(SQLModel, table=True):
    """A WhatsApp Business label of a tenant, as its last ``labels.edit`` said (the name arrives only there)."""

    __tablename__ = "tenant_labels"

    tenant_id: int = Field(foreign_key="tenants.id", primary_key=True, sa_column_kwargs={"autoincrement": False})
    label_id: str = Field(primary_key=True)
    name: str = Field(nullable=False)
    deleted: bool = False
    updated_at: datetime = _ts(nullable=False)


class ChatLabel(SQLModel, table=True):
    """A label that is on a chat (``labels.association``), kept whatever the label is, so that naming a label
    the pause label later pauses the chats that already carry it."""

    __tablename__ = "chat_labels"

    tenant_id: int = Field(foreign_key="tenants.id", primary_key=True, sa_column_kwargs={"autoincrement": False})
    chat_id: str = Field(primary_key=True)
    label_id: str = Field(primary_key=True)
    added_at: datetime = _ts(nullable=False)


class ChatAlias(SQLModel, table=True):
    """A chat's ``@lid`` id, learned from a message that carried both it and the phone number's id: events that
    name the chat by its LID only (a label put on it) find the phone-keyed chat."""

    __tablename__ = "chat_aliases"

    tenant_id: int = Field(foreign_key="tenants.id", primary_key=True, sa_column_kwargs={"autoincrement": False})
    lid: str = Field(primary_key=True)
    chat_id: str = Field(nullable=False)


# The tables as Core objects, for the statements of every module.
TENANTS = Tenant.__table__
SESSIONS = ChatSession.__table__
MESSAGES = Message.__table__
EVENTS = SessionEvent.__table__
JOBS = ReplyJob.__table__
CONTACTS = TenantContact.__table__
TOMBSTONES = MessageTombstone.__table__
LABELS = TenantLabel.__table__
CHAT_LABELS = ChatLabel.__table__
ALIASES = ChatAlias.__table__
