"""Tenants: one per Evolution instance, with secrets encrypted at rest and a short-lived lookup cache."""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import functools
import json
import re
import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hybridflow.config import (DEFAULT_REPLY_CAP, Settings, format_duration, format_retention, parse_message_retention,
                               parse_reply_cap, parse_retention)
from hybridflow.crypto import SecretBox
from hybridflow.errors import BadRequest, Conflict, HybridFlowError, UnknownInstance
from hybridflow import handoff, jobs, numbers
from hybridflow.hours import DEFAULT_LOCALE, HoursMode, InvalidHours, Schedule, check_locale, should_answer
from hybridflow.commands import DEFAULT_WORD
from hybridflow.models import (ALIASES, CHAT_LABELS, CONTACTS, EVENTS, JOBS, LABELS, MESSAGES, SESSIONS, TENANTS,
                               TOMBSTONES)
from hybridflow.store import Store

HISTORY = (JOBS, EVENTS, MESSAGES, SESSIONS)  # a tenant's rows, in an order that deletes them safely
# What else refers to a tenant: deleted with its history (labels and aliases are about its chats; tombstones of
# its deleted messages would otherwise be inherited by a new tenant that gets the same id).
BESIDE_HISTORY = (CHAT_LABELS, LABELS, ALIASES, TOMBSTONES)
CACHE_SECONDS = 5.0
REFRESH_AHEAD = 1.0  # in the last second of a cached tenant, one request starts reading it again in the background
API_VERSIONS = ("v1", "v2")
MIN_JWT_KEY_BYTES = 32
IGNORE, ALLOW = "ignore", "allow"  # the audience lists
OWNER_LIDS = "owner_lids"
DEFAULT_TIME_PER_CHAR = 50  # ms of "typing" per character of a paced part, as Evolution's own bots
MAX_TIME_PER_CHAR = 1000
DEFAULT_MAX_REPLY_DELAY = 600.0  # a reply held up by failures is not sent more than 10 min after the message
MIN_REPLY_DELAY = 60.0
MIN_NOTIFY_SECRET = 16
MIN_REPLY_CHARS = 20  # a shorter limit would cut every answer to nothing useful
NEXT_OPEN = "{next_open}"  # the away message's placeholder
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


@dataclass(frozen=True, slots=True)
class TenantConfig:
    """A tenant with its effective settings (the configuration fills what the tenant leaves empty)."""

    id: int
    instance: str
    prompt: str
    evolution_url: str
    model: str
    resume_after: float
    debounce: float
    api_version: str
    allow_groups: bool
    send_presence: bool
    mark_read: bool
    created_at: datetime
    has_api_key: bool
    has_webhook_secret: bool
    has_jwt_key: bool
    api_key: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    jwt_key: str | None = field(default=None, repr=False)
    secret_error: str | None = None
    reply_cap: tuple[int, float] = DEFAULT_REPLY_CAP  # (replies, window in seconds); (0, 0) when off
    max_reply_chars: int | None = None  # longer model answers are cut at a sentence
    schedule: Schedule | None = None  # business hours, in the tenant's zone
    hours_mode: HoursMode = HoursMode.ALWAYS
    away_message: str | None = None  # sent once per chat per local day while closed (mode inside)
    locale: str = DEFAULT_LOCALE  # the language of dates in the away message and the model's clock line
    country: str = numbers.DEFAULT_REGION  # the region of numbers typed without a country code
    daily_tokens: int | None = None  # the model's tokens per local day; None: no budget
    retain_raw: float | None = None  # seconds raw payloads are kept; None: forever
    retain_messages: float | None = None  # seconds messages are kept; None: forever
    paused_at: datetime | None = None  # the whole tenant is paused ("bot off all") since then
    paused_until: datetime | None = None  # None while paused: until resumed
    paused_by: str | None = None
    pause_label: str | None = None  # the WhatsApp Business label that pauses a chat while it is on it
    owner_jid: str | None = None  # the instance's own number, learned from Evolution or set with --owner-number
    owner_source: str | None = None  # instance | operator
    command_word: str = DEFAULT_WORD  # how commands in "Message yourself" start
    owner_lids: frozenset[str] = frozenset()  # the owner's @lid ids, seen with the number in one message
    handoff_phrases: tuple[str, ...] = handoff.DEFAULT_PHRASES  # a customer who writes one is handed to a person
    handoff_pause: float = handoff.DEFAULT_PAUSE  # how long a handoff pauses the chat
    handoff_message: str | None = None  # what the customer is told then, once
    notify_number: str | None = None  # where notifications go instead of the owner's own chat
    handoff_tool: bool = False  # the model may call handoff_to_human(reason)
    notify_url: str | None = None  # notifications are also POSTed there, signed with notify_secret
    notify_secret: str | None = field(default=None, repr=False)
    split_replies: bool = False  # a long answer goes out in parts, each "typed" first
    time_per_char: int = DEFAULT_TIME_PER_CHAR  # ms of "typing" per character of a part
    max_reply_delay: float | None = DEFAULT_MAX_REPLY_DELAY  # a retried reply older than this expires; None: never
    ignored: frozenset[str] = frozenset()  # chat ids never answered
    allowed: frozenset[str] = frozenset()  # when not empty, the only chat ids answered (pilot mode)

    def answers_now(self, now: datetime) -> bool:
        """Whether business hours let the bot answer at ``now`` (always, outside them, or inside them)."""
        if self.schedule is None or self.hours_mode == HoursMode.ALWAYS:
            return True
        return should_answer(self.hours_mode, self.schedule.is_open(now))

    def owns(self, chat_id: str | None) -> bool:
        """Whether ``chat_id`` is the owner's own "Message yourself" chat (by number or by a learned @lid)."""
        return chat_id is not None and (chat_id == self.owner_jid or chat_id in self.owner_lids)

    @property
    def takes_commands(self) -> bool:
        """Commands need to know the owner, and webhooks that prove they come from Evolution."""
        return self.owner_jid is not None and (self.has_webhook_secret or self.has_jwt_key)

    @property
    def notify_chat(self) -> str | None:
        """Where the owner is notified on WhatsApp: the notify number, else the owner's own chat; None if unknown."""
        return self.notify_number or self.owner_jid

    def paused_now(self, now: datetime) -> bool:
        """Whether the whole tenant is paused at ``now``."""
        return self.paused_at is not None and (self.paused_until is None or self.paused_until > now)

    def away_text(self, now: datetime) -> str | None:
        """The away message to send a customer who writes at ``now``, its ``{next_open}`` filled in; None when
        the tenant sends none now (no message, not mode inside, or open)."""
        if not self.away_message or self.schedule is None or self.hours_mode != HoursMode.INSIDE:
            return None
        if self.schedule.is_open(now):
            return None
        opening = self.schedule.format_next_open(now, self.locale) or ""
        return self.away_message.replace(NEXT_OPEN, opening).strip()

    @property
    def zone(self) -> tzinfo:
        """The tenant's time zone: its business hours' zone, else the server's."""
        return self.schedule.tzinfo if self.schedule is not None else datetime.now().astimezone().tzinfo  # type: ignore[return-value]

    def day_start(self, now: datetime) -> datetime:
        """The start of ``now``'s local day in the tenant's zone (when the daily token budget begins)."""
        local = now.astimezone(self.zone)
        return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)

    def gaps(self) -> list[str]:
        """What is missing for the tenant to work safely; said when it is saved, not refused."""
        found = []
        if not self.has_api_key:
            found.append(f"no Evolution API key: replies cannot be sent until you add one "
                         f"(hybridflow tenants update {shlex.quote(self.instance)} --api-key KEY)")
        if not (self.has_webhook_secret or self.has_jwt_key):
            found.append("no webhook authentication: any request that names this instance is accepted "
                         "(set --webhook-secret, or --jwt-key with Evolution 2.3+)" if self.api_version != "v1" else
                         "no webhook authentication (Evolution 1.x cannot send one): keep serve reachable from "
                         "Evolution only")
        if self.away_message and self.hours_mode != HoursMode.INSIDE:
            found.append(f"the away message is only sent with --hours-mode inside (this tenant's mode is "
                         f"{self.hours_mode}): it is kept but not sent")
        return found

    def public(self) -> dict[str, Any]:
        """What an operator may see: everything but the secrets themselves, named as the options that set them."""
        return {
            "instance": self.instance,
            "prompt": self.prompt,
            "evolution_url": self.evolution_url,
            "model": self.model,
            "resume_after": self.resume_after,
            "debounce": self.debounce,
            "api_version": self.api_version,
            "allow_groups": self.allow_groups,
            "typing": self.send_presence,  # named as its option, --typing
            "mark_read": self.mark_read,
            "reply_cap": f"{self.reply_cap[0]}/{format_duration(self.reply_cap[1])}" if self.reply_cap[0] else "off",
            "max_reply_chars": self.max_reply_chars or "no limit",
            "hours": self.schedule.to_text() if self.schedule else "none",
            "timezone": self.schedule.zone if self.schedule else "the server's",
            "closed": [d.isoformat() for d in self.schedule.closed] if self.schedule else [],
            "special": [str(d) for d in self.schedule.special] if self.schedule else [],
            "hours_mode": self.hours_mode,
            "away_message": self.away_message or "none",
            "locale": self.locale,
            "country": self.country,
            "daily_tokens": self.daily_tokens or "no budget",
            "retain_raw": format_retention(self.retain_raw),
            "retain_messages": format_retention(self.retain_messages),
            "pause_label": self.pause_label or "none",
            "owner_number": (f"{self.owner_jid} ({'learned from Evolution' if self.owner_source == 'instance' else 'set'})"
                             if self.owner_jid else "not known yet (learned when the instance connects, or "
                             "--owner-number)"),
            "command_word": self.command_word,
            "handoff_phrases": ", ".join(self.handoff_phrases) or "off",
            "handoff_pause": format_duration(self.handoff_pause),
            "handoff_message": self.handoff_message or "none",
            "notify": self.notify_chat or "nowhere yet (the owner's number is not known)",
            "handoff_tool": self.handoff_tool,
            "notify_url": (f"{self.notify_url} (signed)" if self.notify_url else "none"),
            "split_replies": self.split_replies,
            "time_per_char": f"{self.time_per_char} ms",
            "max_reply_delay": format_duration(self.max_reply_delay) if self.max_reply_delay else "no limit",
            "paused": ("no" if self.paused_at is None or not self.paused_now(datetime.now(UTC)) else
                       f"since {self.paused_at.isoformat()} by {self.paused_by}, "
                       + (f"until {self.paused_until.isoformat()}" if self.paused_until else "until resumed")),
            "ignore": sorted(self.ignored),
            "allow": sorted(self.allowed),
            "api_key": "set" if self.has_api_key else "not set",
            "webhook_auth": "jwt" if self.has_jwt_key else "secret" if self.has_webhook_secret else "none",
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class TenantChanges:
    """Fields given to ``tenants add``/``update``; None means "not given"."""

    prompt: str | None = None
    evolution_url: str | None = None
    api_key: str | None = None
    webhook_secret: str | None = None
    jwt_key: str | None = None
    model: str | None = None
    resume_after: float | None = None
    debounce: float | None = None
    api_version: str | None = None
    allow_groups: bool | None = None
    send_presence: bool | None = None
    mark_read: bool | None = None
    reply_cap: str | None = None  # "20/10m" or "off"
    max_reply_chars: int | None = None  # 0 clears the limit
    hours: str | None = None  # "mon-fri 08:00-18:00, sat 08:00-12:00"; "" clears the schedule
    timezone: str | None = None  # IANA name; "" means the server's zone
    closed: tuple[str, ...] | None = None  # dates added to the closed days
    special: tuple[str, ...] | None = None  # "2026-12-24 08:00-12:00" added to the special days
    clear_closed: bool | None = None
    clear_special: bool | None = None
    hours_mode: str | None = None  # always | outside | inside
    away_message: str | None = None  # "" clears it
    locale: str | None = None  # pt_BR, en, ...
    country: str | None = None  # ISO 3166 code, BR
    daily_tokens: int | None = None  # 0 clears the budget
    retain_raw: str | None = None  # "30d" or "forever"
    retain_messages: str | None = None  # "365d" (at least 2d) or "forever"
    pause_label: str | None = None  # "" clears it
    owner_number: str | None = None  # the instance's own number as typed; "" forgets it (learned again)
    command_word: str | None = None
    handoff_phrases: str | None = None  # "atendente, falar com uma pessoa"; "off" disables; "" the defaults again
    handoff_pause: float | None = None  # seconds
    handoff_message: str | None = None  # "" removes it
    notify_number: str | None = None  # typed; "" back to the owner's own chat
    handoff_tool: bool | None = None
    notify_url: str | None = None  # "" stops the POSTs
    notify_secret: str | None = None  # "" clears it
    split_replies: bool | None = None
    time_per_char: int | None = None  # ms per character
    max_reply_delay: float | None = None  # seconds; 0: no limit

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self))


@dataclass(frozen=True, slots=True)
class SavedTenant:
    """The outcome of ``tenants add``: the tenant, whether it is new, and the kept history that came back."""

    tenant: TenantConfig
    created: bool
    restored: dict[str, int] | None = None  # chats and messages of a tenant removed with its history kept


# The settings columns of a tenant and their defaults: a tenant added again starts from these, not its old ones.
SETTING_DEFAULTS: dict[str, Any] = {
    "prompt": None, "evolution_url": None, "api_key_enc": None, "webhook_secret_enc": None, "jwt_key_enc": None,
    "model": None, "resume_after": None, "debounce": None, "api_version": "v2", "allow_groups": False,
    "send_presence": False, "mark_read": False, "reply_cap_count": None, "reply_cap_window": None,
    "max_reply_chars": None, "hours": None, "hours_mode": "always", "away_message": None, "locale": None,
    "country": None, "daily_tokens": None, "retain_raw": None, "retain_messages": None, "pause_label": None,
    "owner_jid": None, "owner_source": None, "command_word": None, "handoff_phrases": None, "handoff_pause": None,
    "handoff_message": None, "notify_number": None, "handoff_tool": None, "notify_url": None,
    "notify_secret_enc": None, "split_replies": None, "time_per_char": None, "max_reply_delay": None, "paused_at": None, "paused_until": None, "paused_by": None,
}


def stored_retention(typed: str, option: str, parse: Any) -> float:
    """A retention option as the tenants table keeps it: seconds, or 0 for forever (None is "the setting's")."""
    try:
        seconds = parse(typed)
    except ValueError as exc:
        raise BadRequest(f"invalid {option}: {exc}") from None
    return 0.0 if seconds is None else seconds


def effective_retention(stored: float | None, default: float | None) -> float | None:
    """A tenant's retention in seconds (None: forever) from its column and the global setting."""
    if stored is None:
        return default
    return None if stored == 0 else stored


def _check_auth(*, secret: bool, jwt_key: bool, api_version: str) -> None:
    """Refuse combinations that cannot work, instead of letting one silently win."""
    if secret and jwt_key:
        raise BadRequest("give a webhook secret or a JWT key, not both (clear one with --webhook-secret '' or "
                         "--jwt-key '')")
    if api_version == "v1" and (secret or jwt_key):
        raise BadRequest("Evolution 1.x (--api-version v1) sends no custom headers, so it cannot send a webhook "
                         "secret or a JWT: remove them, or use --api-version v2")


_HOURS_FIELDS = ("hours", "timezone", "closed", "special", "clear_closed", "clear_special", "hours_mode")


def _touches_hours(changes: TenantChanges) -> bool:
    return any(getattr(changes, name) is not None for name in _HOURS_FIELDS)


def _hours_values(changes: TenantChanges, row: Any) -> dict[str, Any]:
    """The business-hours columns after ``changes``: closed and special dates are added to the ones stored
    (``clear_*`` first empties them), the zone and the weekly hours replace theirs; ``hours=""`` removes it all."""
    if not _touches_hours(changes):
        return {}
    out: dict[str, Any] = {}
    mode = changes.hours_mode if changes.hours_mode is not None else (row.hours_mode if row is not None else "always")
    try:
        mode = HoursMode(mode)
    except ValueError:
        raise BadRequest(f"--hours-mode must be always, outside or inside, not {mode!r}") from None
    out["hours_mode"] = mode
    stored = json.loads(row.hours) if row is not None and _schedule(row.hours) is not None else {}
    hours = changes.hours if changes.hours is not None else stored.get("hours")
    if hours == "":
        out["hours"] = None
    elif hours is None:
        if any(getattr(changes, name) is not None for name in _HOURS_FIELDS[1:6]):
            raise BadRequest("this tenant has no business hours yet: give --hours too "
                             "(e.g. --hours \"mon-fri 08:00-18:00, sat 08:00-12:00\")")
    else:
        closed = ([] if changes.clear_closed else stored.get("closed", [])) + list(changes.closed or ())
        special = ([] if changes.clear_special else stored.get("special", [])) + list(changes.special or ())
        zone = changes.timezone if changes.timezone is not None else stored.get("timezone")
        out["hours"] = Schedule.parse(hours, closed=closed, special=special, timezone=zone or None).to_json()
    if mode != HoursMode.ALWAYS and out.get("hours", stored or None) is None:
        raise BadRequest(f"--hours-mode {mode} needs business hours: give --hours too")
    return out


def _schedule(stored: str | None) -> Schedule | None:
    if not stored:
        return None
    try:
        return Schedule.from_json(stored)
    except InvalidHours:  # written by a newer release, or by hand: answer as if there were no hours
        return None


def _notify_url(text: str) -> str | None:
    """``--notify-url`` as stored: None to stop the POSTs; refused unless it is an absolute http(s) URL."""
    text = text.strip()
    if not text:
        return None
    parsed = urlsplit(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or any(c.isspace() for c in text):
        raise BadRequest(f"invalid --notify-url: give an http:// or https:// URL, e.g. "
                         f"https://n8n.example.com/webhook/hybridflow; got {text!r}")
    return text


def _away_message(text: str) -> str | None:
    """An away message as stored: None to clear it; refused when it has a placeholder other than {next_open}."""
    if not text.strip():
        return None
    unknown = sorted(set(_PLACEHOLDER.findall(text)) - {NEXT_OPEN})
    if unknown:
        raise BadRequest(f"invalid --away-message: unknown placeholder {unknown[0]}: the one it can have is "
                         f"{NEXT_OPEN} (the next opening, e.g. \"segunda-feira, 08:00\")")
    return text.strip()


def _phone_jid(typed: str, option: str, what: str, region: str) -> str | None:
    """The WhatsApp id of a phone number typed for an option; None for "" (clear it); ``BadRequest`` naming the
    option for anything that is not a complete phone number."""
    if not typed.strip():
        return None
    chat = numbers.parse_chat(typed, region)
    if not chat.complete or not chat.jids[0].endswith("@s.whatsapp.net"):
        raise BadRequest(f"invalid {option}: {chat.problem or 'not a phone number'}; give {what}, "
                         "e.g. +55 11 98765-4321")
    return chat.jids[0]


def _rule(rule: str) -> str:
    if rule not in (IGNORE, ALLOW):
        raise BadRequest(f"an audience list is 'ignore' or 'allow', not {rule!r}")
    return rule


@dataclass(frozen=True, slots=True)
class _Entry:
    typed: str
    label: str
    jids: tuple[str, ...]


def _audience_entry(typed: str, region: str) -> _Entry:
    """A number for a list must be complete: '+55 11 98765-4321' is every chat id that number can have."""
    chat = numbers.parse_chat(typed, region)
    if not chat.complete:
        raise BadRequest(f"{chat.problem}; give the full number, e.g. +55 11 98765-4321")
    first = chat.jids[0]
    label = first if chat.is_jid else "+" + first.partition("@")[0]
    return _Entry(typed, label, chat.jids)


class Tenants:
    """Tenant storage and lookup."""

    def __init__(self, store: Store, settings: Settings, secrets: SecretBox) -> None:
        self.store = store
        self.settings = settings
        self.secrets = secrets
        self._cache: dict[str, tuple[float, TenantConfig]] = {}
        self._by_id: dict[int, tuple[float, TenantConfig]] = {}
        self._names: tuple[float, list[str]] | None = None
        # One read per instance at a time (under load, every webhook of an expired tenant would read it at once),
        # and the refresh-ahead reads in flight; a change made here makes the reads started before it stale.
        self._loading: dict[str, asyncio.Future[TenantConfig]] = {}
        self._generation = 0
        # ``serve`` reads tenants with the batching writer's transactions (its ``submit``); elsewhere, a read.
        self.reads_with: Callable[[Callable[[Connection], Any]], Awaitable[Any]] | None = None

    def _decrypt(self, token: str | None) -> tuple[str | None, str | None]:
        if not token:
            return None, None
        try:
            return self.secrets.decrypt(token), None
        except HybridFlowError as exc:
            return None, exc.message

    def _config(self, row: Any, lists: dict[str, frozenset[str]] | None = None) -> TenantConfig:
        s = self.settings
        api_key, err1 = self._decrypt(row.api_key_enc)
        secret, err2 = self._decrypt(row.webhook_secret_enc)
        jwt_key, err3 = self._decrypt(row.jwt_key_enc)
        notify_secret, err4 = self._decrypt(row.notify_secret_enc)
        return TenantConfig(
            id=row.id,
            instance=row.instance,
            prompt=row.prompt,
            evolution_url=row.evolution_url or s.evolution_url,
            model=row.model or s.ollama_model,
            resume_after=row.resume_after if row.resume_after is not None else s.resume_after,
            debounce=row.debounce if row.debounce is not None else s.debounce,
            api_version=row.api_version,
            allow_groups=row.allow_groups,
            send_presence=row.send_presence,
            mark_read=row.mark_read,
            reply_cap=DEFAULT_REPLY_CAP if row.reply_cap_count is None else (row.reply_cap_count,
                                                                             row.reply_cap_window or 0.0),
            max_reply_chars=row.max_reply_chars,
            schedule=_schedule(row.hours),
            hours_mode=HoursMode(row.hours_mode),
            away_message=row.away_message,
            locale=row.locale or DEFAULT_LOCALE,
            country=row.country or numbers.DEFAULT_REGION,
            daily_tokens=row.daily_tokens,
            retain_raw=effective_retention(row.retain_raw, s.retain_raw),
            retain_messages=effective_retention(row.retain_messages, s.retain_messages),
            paused_at=row.paused_at,
            paused_until=row.paused_until,
            paused_by=row.paused_by,
            pause_label=row.pause_label,
            owner_jid=row.owner_jid,
            owner_source=row.owner_source,
            command_word=row.command_word or DEFAULT_WORD,
            owner_lids=(lists or {}).get(OWNER_LIDS, frozenset()),
            handoff_phrases=(handoff.DEFAULT_PHRASES if row.handoff_phrases is None
                             else handoff.parse_phrases(row.handoff_phrases)),
            handoff_pause=row.handoff_pause if row.handoff_pause is not None else handoff.DEFAULT_PAUSE,
            handoff_message=row.handoff_message,
            notify_number=row.notify_number,
            handoff_tool=bool(row.handoff_tool),
            notify_url=row.notify_url,
            notify_secret=notify_secret,
            split_replies=bool(row.split_replies),
            time_per_char=row.time_per_char if row.time_per_char is not None else DEFAULT_TIME_PER_CHAR,
            max_reply_delay=(DEFAULT_MAX_REPLY_DELAY if row.max_reply_delay is None else row.max_reply_delay or None),
            created_at=row.created_at,
            has_api_key=bool(row.api_key_enc),
            has_webhook_secret=bool(row.webhook_secret_enc),
            has_jwt_key=bool(row.jwt_key_enc),
            api_key=api_key,
            webhook_secret=secret,
            jwt_key=jwt_key,
            secret_error=err1 or err2 or err3 or err4,
            ignored=(lists or {}).get(IGNORE, frozenset()),
            allowed=(lists or {}).get(ALLOW, frozenset()),
        )

    async def _load(self, query: sa.Select) -> list[TenantConfig]:
        """Tenants with their audience lists, read in one transaction (in ``serve``, with the next batch the
        writer commits: no connection and thread hops of their own)."""
        if self.reads_with is not None:
            rows, lists = await self.reads_with(functools.partial(_read_tenants, query=query))
        else:
            async with self.store.read() as conn:
                rows, lists = await conn.run_sync(_read_tenants, query)
        return [self._config(row, {rule: frozenset(ids) for rule, ids in lists.get(row.id, {}).items()})
                for row in rows]

    async def get(self, instance: str, *, cached: bool = True, removed_too: bool = False) -> TenantConfig:
        """The tenant of an Evolution instance; ``UnknownInstance`` when there is none. ``removed_too`` also finds
        a tenant removed with its history kept (to read that history).

        Cached for ``CACHE_SECONDS`` (a change made by another process is seen within that time); a busy tenant is
        read again shortly before it expires, in the background, so no webhook waits for it."""
        if removed_too:  # never cached: webhooks of a removed tenant must keep answering 404
            return await self._read(instance, removed_too=True)
        if not cached:  # read now (a read already under way may have begun before a change being asked about)
            return await asyncio.shield(self._start_load(instance))
        now = time.monotonic()
        hit = self._cache.get(instance)
        if hit and hit[0] > now:
            if hit[0] - now < REFRESH_AHEAD and instance not in self._loading:
                self._start_load(instance)
            return hit[1]
        return await asyncio.shield(self._loading.get(instance) or self._start_load(instance))

    def _start_load(self, instance: str) -> asyncio.Future[TenantConfig]:
        """Read the tenant once for everybody who asks meanwhile, and cache it (unless a change made here since
        the read began makes it stale)."""
        generation = self._generation

        async def load() -> TenantConfig:
            try:
                config = await self._read(instance)
            except UnknownInstance:
                if generation == self._generation:
                    self._cache.pop(instance, None)
                raise
            finally:
                if self._loading.get(instance) is future:
                    del self._loading[instance]
            if generation == self._generation:
                self._cache[instance] = (time.monotonic() + CACHE_SECONDS, config)
            return config

        future = self._loading[instance] = asyncio.ensure_future(load())
        future.add_done_callback(_consume)
        return future

    async def _read(self, instance: str, *, removed_too: bool = False) -> TenantConfig:
        query = sa.select(TENANTS).where(TENANTS.c.instance == instance)
        found = await self._load(query if removed_too else query.where(TENANTS.c.removed_at.is_(None)))
        if not found:
            raise UnknownInstance(
                f"unknown instance {instance!r}: add it with `hybridflow tenants add {shlex.quote(instance)}`")
        return found[0]

    def _forget(self, instance: str) -> None:
        self._generation += 1
        self._cache.pop(instance, None)
        self._loading.pop(instance, None)  # a read begun before the change must not answer after it
        self._by_id.clear()
        self._names = None

    async def get_by_id(self, tenant_id: int) -> TenantConfig:
        """A tenant by its id (removed ones too: their replies in flight still finish), cached like ``get``."""
        now = time.monotonic()
        hit = self._by_id.get(tenant_id)
        if hit and hit[0] > now:
            return hit[1]
        found = await self._load(sa.select(TENANTS).where(TENANTS.c.id == tenant_id))
        if not found:
            raise UnknownInstance(f"tenant {tenant_id} no longer exists")
        config = found[0]
        self._by_id[tenant_id] = (now + CACHE_SECONDS, config)
        return config

    async def instances(self) -> list[str]:
        """The active tenants' instance names, cached like a tenant (cheap enough for every rejected webhook)."""
        now = time.monotonic()
        if self._names is None or self._names[0] <= now:
            async with self.store.read() as conn:
                names = list((await conn.execute(sa.select(TENANTS.c.instance).where(
                    TENANTS.c.removed_at.is_(None)))).scalars())
            self._names = (now + CACHE_SECONDS, names)
        return self._names[1]

    @staticmethod
    def closest(instance: str, known: list[str]) -> str | None:
        """The known instance a mistyped one was meant to be: the same but for case, or a small typo."""
        folded = {name.casefold(): name for name in known}
        if instance.casefold() in folded:
            return folded[instance.casefold()]
        close = difflib.get_close_matches(instance, known, n=1, cutoff=0.8)
        return close[0] if close else None

    async def list(self) -> list[TenantConfig]:
        return await self._load(sa.select(TENANTS).where(TENANTS.c.removed_at.is_(None)).order_by(TENANTS.c.instance))

    async def audience(self, instance: str, rule: str) -> list[tuple[str, list[str]]]:
        """A tenant's ignore or allow list: each entry as given (normalized) with the chat ids it matches."""
        tenant = await self.get(instance, cached=False)
        async with self.store.read() as conn:
            rows = await conn.execute(sa.select(CONTACTS.c.label, CONTACTS.c.chat_id).where(
                CONTACTS.c.tenant_id == tenant.id, CONTACTS.c.rule == _rule(rule)).order_by(CONTACTS.c.id))
            entries: dict[str, list[str]] = {}
            for label, chat_id in rows:
                entries.setdefault(label, []).append(chat_id)
        return list(entries.items())

    async def change_audience(self, instance: str, rule: str, typed: list[str], now: datetime, *,
                              add: bool) -> list[str]:
        """Add numbers (or chat ids) to a list, or remove them; all or nothing. Returns the entries changed."""
        tenant = await self.get(instance, cached=False)
        if not typed:
            raise BadRequest("give at least one number or chat id")
        parsed = [(entry.typed, entry.label, entry.jids) for entry in (_audience_entry(t, tenant.country) for t in typed)]
        changed = []
        async with self.store.write() as conn:
            for _typed, label, jids in parsed:
                where = sa.and_(CONTACTS.c.tenant_id == tenant.id, CONTACTS.c.rule == _rule(rule),
                                CONTACTS.c.chat_id.in_(jids))
                present = set((await conn.execute(sa.select(CONTACTS.c.chat_id).where(where))).scalars())
                if add and present != set(jids):
                    await conn.execute(sa.insert(CONTACTS), [
                        {"tenant_id": tenant.id, "rule": _rule(rule), "chat_id": jid, "label": label, "created_at": now}
                        for jid in jids if jid not in present])
                    changed.append(label)
                elif not add and present:
                    await conn.execute(sa.delete(CONTACTS).where(where))
                    changed.append(label)
        self._forget(instance)
        return changed

    def _values(self, changes: TenantChanges) -> dict[str, Any]:
        if changes.api_version is not None and changes.api_version not in API_VERSIONS:
            raise BadRequest(f"api version must be v1 or v2, got {changes.api_version!r}")
        if changes.prompt is not None and not changes.prompt.strip():
            raise BadRequest("the prompt cannot be empty")
        if changes.jwt_key and len(changes.jwt_key.encode("utf-8")) < MIN_JWT_KEY_BYTES:
            # PyJWT warns on every webhook for a shorter HS256 key (RFC 7518: the key must be as long as the hash).
            raise BadRequest(f"the JWT key must be at least {MIN_JWT_KEY_BYTES} bytes long for HS256; "
                             "make one with `openssl rand -hex 32` and set the same in Evolution's jwt_key")
        values: dict[str, Any] = {}
        for name in ("prompt", "evolution_url", "model", "resume_after", "debounce", "api_version",
                     "allow_groups", "send_presence", "mark_read", "handoff_tool", "split_replies"):
            value = getattr(changes, name)
            if value is not None:
                values[name] = value
        for name in ("api_key", "webhook_secret", "jwt_key", "notify_secret"):
            value = getattr(changes, name)
            if value is not None:
                values[f"{name}_enc"] = self.secrets.encrypt(value) if value else None
        if changes.notify_url is not None:
            values["notify_url"] = _notify_url(changes.notify_url)
        if changes.max_reply_delay is not None:
            if changes.max_reply_delay < 0 or 0 < changes.max_reply_delay < MIN_REPLY_DELAY:
                raise BadRequest(f"invalid --max-reply-delay: give at least {format_duration(MIN_REPLY_DELAY)} "
                                 "(e.g. 10m), or 0 / off for no limit")
            values["max_reply_delay"] = changes.max_reply_delay
        if changes.time_per_char is not None:
            if not 0 <= changes.time_per_char <= MAX_TIME_PER_CHAR:
                raise BadRequest(f"invalid --time-per-char: give milliseconds per character from 0 to "
                                 f"{MAX_TIME_PER_CHAR}, e.g. 50; got {changes.time_per_char}")
            values["time_per_char"] = changes.time_per_char
        if changes.max_reply_chars is not None:
            if changes.max_reply_chars < 0 or 0 < changes.max_reply_chars < MIN_REPLY_CHARS:
                raise BadRequest(f"invalid --max-reply-chars: give at least {MIN_REPLY_CHARS} characters, or 0 for "
                                 f"no limit; got {changes.max_reply_chars}")
            values["max_reply_chars"] = changes.max_reply_chars or None
        if changes.away_message is not None:
            values["away_message"] = _away_message(changes.away_message)
        if changes.locale is not None:
            try:
                values["locale"] = check_locale(changes.locale)
            except InvalidHours as exc:
                raise BadRequest(f"invalid --locale: {exc.message}") from None
        if changes.country is not None:
            try:
                values["country"] = numbers.region_code(changes.country)
            except ValueError as exc:
                raise BadRequest(f"invalid --country: {exc}") from None
        if changes.handoff_phrases is not None:
            text = changes.handoff_phrases
            values["handoff_phrases"] = None if not text.strip() else ",".join(handoff.parse_phrases(text)) or "off"
        if changes.handoff_pause is not None:
            if changes.handoff_pause <= 0:
                raise BadRequest("invalid --handoff-pause: give a duration longer than 0, e.g. 24h")
            values["handoff_pause"] = changes.handoff_pause
        if changes.handoff_message is not None:
            values["handoff_message"] = changes.handoff_message.strip() or None
        if changes.command_word is not None:
            word = changes.command_word.strip()
            if word and (len(word.split()) != 1 or len(word) > 30):
                raise BadRequest(f"invalid --command-word: one word of at most 30 characters, got {word!r}")
            values["command_word"] = word or None
        if changes.pause_label is not None:
            values["pause_label"] = " ".join(changes.pause_label.split())[:100] or None
        if changes.daily_tokens is not None:
            if changes.daily_tokens < 0:
                raise BadRequest(f"invalid --daily-tokens: give a number of tokens, or 0 for no budget; got "
                                 f"{changes.daily_tokens}")
            values["daily_tokens"] = changes.daily_tokens or None
        if changes.retain_raw is not None:
            values["retain_raw"] = stored_retention(changes.retain_raw, "--retain-raw", parse_retention)
        if changes.retain_messages is not None:
            values["retain_messages"] = stored_retention(changes.retain_messages, "--retain-messages",
                                                         parse_message_retention)
        if changes.reply_cap is not None:
            try:
                values["reply_cap_count"], values["reply_cap_window"] = parse_reply_cap(changes.reply_cap)
            except ValueError as exc:
                raise BadRequest(f"invalid --reply-cap: {exc}") from None
        return values

    async def add(self, instance: str, changes: TenantChanges, now: datetime, *, update: bool = False) -> SavedTenant:
        """Create a tenant; an existing instance is a ``Conflict`` unless ``update`` is set.

        A tenant removed with its history kept comes back with its chats, pauses and messages, but with the
        settings given now and defaults for the rest (not the settings it had when it was removed).
        """
        instance = instance.strip()
        if not instance:
            raise BadRequest("the instance name cannot be empty")
        values = self._values(changes)
        restored: dict[str, int] | None = None
        async with self.store.write() as conn:
            found = (await conn.execute(sa.select(TENANTS).where(TENANTS.c.instance == instance))).first()
            values |= _hours_values(changes, found if found is not None and found.removed_at is None else None)
            if found is not None and found.removed_at is None:
                if not update:
                    raise Conflict(f"tenant {instance!r} already exists (use `tenants update` or --update to change it)")
                if changes.is_empty():
                    raise BadRequest(f"nothing to change for tenant {instance!r}: give at least one option "
                                     "(hybridflow tenants update --help)")
                if any(getattr(changes, name) is not None for name in ("webhook_secret", "jwt_key", "api_version",
                                                                       "notify_url", "notify_secret")):
                    self._check(changes, found)  # an older tenant's contradiction does not block other changes
                await conn.execute(sa.update(TENANTS).where(TENANTS.c.id == found.id).values(
                    updated_at=now, **values | self._numbers(changes, found)))
            else:
                if changes.prompt is None:
                    again = " (it was removed: its old settings are not restored)" if found is not None else ""
                    raise BadRequest(f"a new tenant needs a prompt (--prompt TEXT or --prompt-file PATH){again}")
                self._check(changes, None)
                if found is None:
                    await conn.execute(sa.insert(TENANTS).values(instance=instance, created_at=now, updated_at=now,
                                                                 **values | self._numbers(changes, None)))
                else:
                    await conn.execute(sa.update(TENANTS).where(TENANTS.c.id == found.id).values(
                        **(SETTING_DEFAULTS | values | self._numbers(changes, None)),
                        updated_at=now, removed_at=None))
                    restored = {table.name: (await conn.execute(sa.select(sa.func.count()).select_from(table).where(
                        table.c.tenant_id == found.id))).scalar_one() for table in (SESSIONS, MESSAGES)}
        self._forget(instance)
        tenant = await self.get(instance, cached=False)
        return SavedTenant(tenant, created=found is None or restored is not None, restored=restored)

    @staticmethod
    def _check(changes: TenantChanges, row: Any) -> None:
        """The tenant as it will be after ``changes`` must make sense (``row``: as it is now, if it exists)."""

        def will_have(name: str) -> bool:
            given = getattr(changes, name)
            return bool(given) if given is not None else bool(row is not None and getattr(row, f"{name}_enc"))

        _check_auth(secret=will_have("webhook_secret"), jwt_key=will_have("jwt_key"),
                    api_version=changes.api_version or (row.api_version if row is not None else "v2"))
        if changes.notify_secret and len(changes.notify_secret) < MIN_NOTIFY_SECRET:
            raise BadRequest(f"--notify-secret must be at least {MIN_NOTIFY_SECRET} characters: make one with "
                             "`openssl rand -hex 32`")
        url = changes.notify_url if changes.notify_url is not None else (row.notify_url if row is not None else None)
        if url and not will_have("notify_secret"):
            raise BadRequest("--notify-url needs --notify-secret too: its POSTs are signed with it, so that the "
                             "receiver can tell them from anyone else's (e.g. --notify-secret \"$(openssl rand -hex 32)\")")

    async def update(self, instance: str, changes: TenantChanges, now: datetime) -> TenantConfig:
        """Change some fields of an existing tenant."""
        await self.get(instance, cached=False)
        return (await self.add(instance, changes, now, update=True)).tenant

    @staticmethod
    def _numbers(changes: TenantChanges, row: Any) -> dict[str, Any]:
        """The columns of the numbers typed for a tenant: ``--owner-number`` (set by the operator, or "" forgotten
        to be learned again) and ``--notify-number`` (where notifications go instead; "" back to the owner's chat)."""
        region = (row.country if row is not None else None) or changes.country or numbers.DEFAULT_REGION
        out: dict[str, Any] = {}
        if changes.owner_number is not None:
            jid = _phone_jid(changes.owner_number, "--owner-number", "the instance's full number", region)
            out |= {"owner_jid": jid, "owner_source": "operator" if jid else None}
        if changes.notify_number is not None:
            out["notify_number"] = _phone_jid(changes.notify_number, "--notify-number", "a full number", region)
        return out

    async def learn_owner(self, tenant: TenantConfig, jid: str, now: datetime) -> bool:
        """The instance's own number as Evolution reported it (``connection.update``'s ``wuid``); a number set with
        --owner-number wins. Returns whether it changed."""
        if tenant.owner_source == "operator" or tenant.owner_jid == jid:
            return False
        async with self.store.write() as conn:
            changed = (await conn.execute(sa.update(TENANTS).where(
                TENANTS.c.id == tenant.id, sa.or_(TENANTS.c.owner_source.is_(None), TENANTS.c.owner_source != "operator"))
                .values(owner_jid=jid, owner_source="instance", updated_at=now))).rowcount
        self._forget(tenant.instance)
        return bool(changed)

    async def pause(self, instance: str, now: datetime, *, until: datetime | None, actor: str) -> tuple[TenantConfig, int]:
        """Pause the whole tenant ("bot off all", a holiday, a busy afternoon) until ``until`` or until resumed:
        no chat is answered and the replies waiting are dropped; the chats' own pauses stay as they are. Returns
        the tenant and how many waiting replies were dropped."""
        tenant = await self.get(instance, cached=False)
        if until is not None and until <= now:
            raise BadRequest("a pause must end after now (without an end it lasts until resumed)")
        async with self.store.write() as conn:
            await conn.execute(sa.update(TENANTS).where(TENANTS.c.id == tenant.id).values(
                paused_at=now, paused_until=until, paused_by=actor, updated_at=now))
            dropped = await conn.run_sync(jobs.skip_tenant_queued, tenant.id, now, "the whole tenant was paused")
        self._forget(instance)
        return await self.get(instance, cached=False), dropped

    async def resume(self, instance: str, now: datetime, *, actor: str) -> TenantConfig:
        """Lift the tenant-wide pause (chats paused one by one stay paused)."""
        tenant = await self.get(instance, cached=False)
        async with self.store.write() as conn:
            await conn.execute(sa.update(TENANTS).where(TENANTS.c.id == tenant.id).values(
                paused_at=None, paused_until=None, paused_by=None, updated_at=now))
        self._forget(instance)
        return await self.get(instance, cached=False)

    async def remove(self, instance: str, now: datetime, *, history: str | None) -> dict[str, int]:
        """Remove a tenant. A tenant with history needs an explicit choice: ``history`` = "keep" or "delete".

        Kept history stays in the database (the tenant row is marked removed, its webhooks answer 404, its waiting
        replies are cancelled); adding the instance again brings it back with its sessions and messages.
        """
        tenant = await self.get(instance, cached=False)
        counts: dict[str, int] = {}
        async with self.store.write() as conn:
            for table in HISTORY:
                total = (await conn.execute(
                    sa.select(sa.func.count()).select_from(table).where(table.c.tenant_id == tenant.id)
                )).scalar_one()
                counts[table.name] = total
            if any(counts.values()) and history not in ("keep", "delete"):
                raise Conflict(
                    f"tenant {instance!r} has history ({counts['messages']} messages, {counts['sessions']} sessions); "
                    "pass --keep-history or --delete-history"
                )
            await conn.execute(sa.delete(CONTACTS).where(CONTACTS.c.tenant_id == tenant.id))  # settings, not history
            if history == "keep":
                await conn.run_sync(jobs.cancel_for_tenant, tenant.id, now, "the tenant was removed")
                await conn.execute(sa.update(TENANTS).where(TENANTS.c.id == tenant.id).values(removed_at=now))
                self._forget(instance)
                return {name: 0 for name in counts}
            for table in (*HISTORY, *BESIDE_HISTORY):
                await conn.execute(sa.delete(table).where(table.c.tenant_id == tenant.id))
            await conn.execute(sa.delete(TENANTS).where(TENANTS.c.id == tenant.id))
        self._forget(instance)
        return counts


def _read_tenants(conn: Connection, query: sa.Select) -> tuple[list[Any], dict[int, dict[str, set[str]]]]:
    """The rows of ``query`` (tenants) and their lists: audience rules, and the owner's @lid aliases."""
    rows = conn.execute(query).all()
    lists: dict[int, dict[str, set[str]]] = {}
    if rows:
        found = conn.execute(sa.select(CONTACTS.c.tenant_id, CONTACTS.c.rule, CONTACTS.c.chat_id).where(
            CONTACTS.c.tenant_id.in_([row.id for row in rows])))
        for tenant_id, rule, chat_id in found:
            lists.setdefault(tenant_id, {}).setdefault(rule, set()).add(chat_id)
        owners = [(row.id, row.owner_jid) for row in rows if row.owner_jid]
        if owners:
            lids = conn.execute(sa.select(ALIASES.c.tenant_id, ALIASES.c.lid).where(
                sa.or_(*(sa.and_(ALIASES.c.tenant_id == t, ALIASES.c.chat_id == jid) for t, jid in owners))))
            for tenant_id, lid in lids:
                lists.setdefault(tenant_id, {}).setdefault(OWNER_LIDS, set()).add(lid)
    return rows, lists


def _consume(future: asyncio.Future[Any]) -> None:
    """A read nobody waits for any more (a refresh-ahead, say) that failed leaves the cached tenant to expire: the
    next webhook reads it again and is answered why."""
    if not future.cancelled():
        future.exception()
