"""Pauses that stack: a chat may be paused for several reasons at once, and is paused while any of them holds.

The owner typed (timed, extended by each message), an operator paused it (timed, or until resumed), a label is on
it (until removed), the customer asked for a person (timed), the reply cap was reached (timed). Lifting one reason
lifts only that one; an operator's resume lifts them all.

A chat's pauses are stored with its session row (``sessions.pauses``, JSON), which every decision already reads
and locks, so stacking costs the webhook path no query. The row's ``is_paused``, ``pause_reason``, ``paused_by``,
``paused_at`` and ``resumes_at`` are their summary (what the indexes, the sweep and the last-moment check before a
send read): paused while any pause holds; it resumes when the last timed one ends (``resumes_at``, None while an
untimed one holds); the reason and author shown are those of the pause that holds longest.

Pure functions; every instant is passed in.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from hybridflow.config import parse_duration
from hybridflow.errors import BadRequest
from hybridflow.hours import next_wall_time

# Pause reasons (also the reasons of webhook answers and of session events).
HUMAN_MESSAGE = "human_message"  # the owner typed in the chat
API_TAKEOVER = "api_takeover"  # another API client sent a message
OPERATOR = "operator"  # the CLI, the admin API or a command from the phone
LABEL = "label"  # a WhatsApp Business label named by --pause-label is on the chat
CUSTOMER_REQUEST = "customer_request"  # the customer asked for a person
RATE_LIMITED = "rate_limited"  # the chat's reply cap was reached


@dataclass(frozen=True, slots=True)
class Pause:
    """One reason a chat is paused: by whom, since when, until when (None: until lifted)."""

    reason: str
    actor: str
    since: datetime
    until: datetime | None = None
    key: str = ""  # tells apart two pauses of one reason (the label's id)

    def holds(self, now: datetime) -> bool:
        return self.until is None or self.until > now

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reason": self.reason, "by": self.actor, "since": self.since.isoformat(),
                               "until": self.until.isoformat() if self.until else None}
        if self.key:
            out["key"] = self.key
        return out


@dataclass(frozen=True, slots=True)
class Summary:
    """What a session row says of its pauses."""

    is_paused: bool
    pause_reason: str | None
    paused_by: str | None
    paused_at: datetime | None
    resumes_at: datetime | None


ACTIVE = Summary(False, None, None, None, None)


def load(text: str | None) -> list[Pause]:
    """The pauses stored in ``sessions.pauses``; unreadable JSON is none (the row's summary then stands for one
    pause, see ``SessionState``), never an error."""
    if not text:
        return []
    try:
        return [_pause(item) for item in json.loads(text)]
    except (TypeError, ValueError, KeyError, AttributeError):
        return []


def dump(pauses: Iterable[Pause]) -> str | None:
    """``sessions.pauses`` for these pauses; None when there are none."""
    items = [p.as_dict() for p in pauses]
    return json.dumps(items, separators=(",", ":")) if items else None


def holding(pauses: Iterable[Pause], now: datetime) -> list[Pause]:
    """The pauses that still hold at ``now``, the longest first."""
    return sorted((p for p in pauses if p.holds(now)), key=_length, reverse=True)


def summary(pauses: Iterable[Pause], now: datetime) -> Summary:
    """The session row's summary of ``pauses`` at ``now``."""
    held = holding(pauses, now)
    if not held:
        return ACTIVE
    longest = held[0]
    return Summary(True, longest.reason, longest.actor, min(p.since for p in held),
                   None if longest.until is None else longest.until)


def add(pauses: Iterable[Pause], pause: Pause, now: datetime, *, extend: bool = True) -> list[Pause]:
    """``pauses`` with ``pause`` added. A pause of the same reason (and key) that holds is kept with the later end
    when ``extend`` (an owner typing again), replaced otherwise (an operator giving a new duration); pauses that no
    longer hold are dropped."""
    kept, merged = [], pause
    for old in pauses:
        if not old.holds(now):
            continue
        if (old.reason, old.key) != (pause.reason, pause.key):
            kept.append(old)
            continue
        if extend:
            until = None if old.until is None or pause.until is None else max(old.until, pause.until)
            merged = replace(old, until=until)
    return [*kept, merged]


def lift(pauses: Iterable[Pause], now: datetime, *, reason: str | None = None, key: str | None = None) -> list[Pause]:
    """``pauses`` without those of ``reason`` (and ``key``), or without all of them when ``reason`` is None; pauses
    that no longer hold are dropped too."""
    return [p for p in pauses if p.holds(now) and reason is not None
            and not (p.reason == reason and (key is None or p.key == key))]


def end_of(spec: str | None, now: datetime, zone: tzinfo) -> datetime | None:
    """When a pause asked for as people say it ends: ``30m``, ``2h``, ``1d`` from now, ``until 18:00`` or ``18:00``
    (the next time the clock in ``zone`` reads it); None (until lifted) for no ``spec``. ``BadRequest`` naming
    what is accepted."""
    if spec is None or not spec.strip():
        return None
    text = spec.strip().lower()
    if text.startswith(("until ", "ate ", "até ")):
        return next_wall_time(text.split(None, 1)[1], now, zone)
    if ":" in text:
        return next_wall_time(text, now, zone)
    try:
        seconds = parse_duration(text)
    except ValueError:
        raise BadRequest(f"{spec!r} is not a pause length: write 30m, 2h, 1d or until 18:00") from None
    if seconds <= 0:
        raise BadRequest("a pause must last longer than 0 s (without a length it lasts until resumed)")
    return now + timedelta(seconds=seconds)


def _length(pause: Pause) -> tuple[int, datetime]:
    return (1, pause.since) if pause.until is None else (0, pause.until)


def _pause(item: dict[str, Any]) -> Pause:
    until = item.get("until")
    return Pause(str(item["reason"]), str(item.get("by") or "unknown"), _instant(item["since"]),
                 _instant(until) if until else None, str(item.get("key") or ""))


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


__all__ = ["ACTIVE", "API_TAKEOVER", "CUSTOMER_REQUEST", "HUMAN_MESSAGE", "LABEL", "OPERATOR", "Pause",
           "RATE_LIMITED", "Summary", "add", "dump", "end_of", "holding", "lift", "load", "summary"]
