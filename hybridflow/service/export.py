"""``hybridflow sessions export``: everything HybridFlow keeps about one chat, for the person it is about.

What a shop hands a customer who asks for their data (LGPD art. 18): every message with who wrote it and when,
the pause/resume history, and the replies with their status. ``export_chat`` reads it; ``render`` writes it as
JSON (the shape of ``--json``: times in UTC with their offset), CSV (one row per message) or text for people (both
in the zone given, with the offset of every time).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from datetime import datetime, tzinfo
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from hybridflow import jobs
from hybridflow.events import Author
from hybridflow.models import EVENTS, MESSAGES, SESSIONS
from hybridflow.service.sessions import SessionEventView, SessionView

if TYPE_CHECKING:
    from hybridflow.service import Service

# What an export reads of each message: not its raw webhook body, the bulk of the table.
MESSAGE_COLUMNS = [MESSAGES.c[name] for name in (
    "message_id", "received_at", "wa_timestamp", "direction", "push_name", "kind", "text", "action")]


def _jsonable(obj: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(obj).items()}


class ExportFormat(StrEnum):
    """The documents ``render`` writes."""

    JSON = "json"
    CSV = "csv"
    TXT = "txt"


# Who wrote a message, as the person reading the export would say it.
AUTHORS: dict[str, str] = {
    Author.CUSTOMER: "customer",
    Author.OWNER: "business (a person)",
    Author.API: "business (another API client)",
    Author.BOT: "business (automatic AI reply)",
}


@dataclass(frozen=True, slots=True)
class ExportedMessage:
    message_id: str
    received_at: datetime  # when HybridFlow received it
    whatsapp_timestamp: datetime | None  # the message's own time, as WhatsApp gave it
    direction: str  # customer | owner | api | bot
    author: str  # ``direction`` in words, with the sender's WhatsApp name for a customer
    push_name: str | None
    kind: str
    text: str | None  # the text, or a media message's caption
    action: str  # what HybridFlow did with it

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class ExportedReply:
    id: int
    kind: str
    status: str
    attempts: int
    trigger_message_id: str
    reply_text: str | None
    last_error: str | None
    created_at: datetime
    attempted_at: datetime | None
    sent_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        return _jsonable(self)


@dataclass(frozen=True, slots=True)
class Transcript:
    """One chat's whole history."""

    chat: SessionView
    exported_at: datetime
    messages: list[ExportedMessage]
    events: list[SessionEventView]
    replies: list[ExportedReply]

    def as_dict(self) -> dict[str, Any]:
        return {"chat": self.chat.as_dict(), "exported_at": self.exported_at.isoformat(),
                "messages": [m.as_dict() for m in self.messages], "events": [e.as_dict() for e in self.events],
                "replies": [r.as_dict() for r in self.replies]}

    def summary(self) -> str:
        """'12 messages, 2 pause/resume events and 3 replies'."""
        return (f"{_count(len(self.messages), 'message')}, {_count(len(self.events), 'pause/resume event')} and "
                f"{_count(len(self.replies), 'reply', 'replies')}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def author_of(direction: str, push_name: str | None) -> str:
    """'Maria (customer)', 'business (a person)', ..."""
    said = AUTHORS.get(direction, direction)
    return f"{push_name} ({said})" if direction == Author.CUSTOMER and push_name else said


async def export_chat(service: Service, instance: str, chat: str) -> Transcript:
    """Every message, pause/resume event and reply of one chat (also of a tenant removed with its history kept),
    found the way ``sessions show`` finds it: a typed phone number or a chat id."""
    tenant = await service.tenants.get(instance, cached=False, removed_too=True)
    view = await service.sessions.get(tenant, chat)
    async with service.store.read() as conn:
        sid = (await conn.execute(sa.select(SESSIONS.c.id).where(
            SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == view.chat_id))).scalar_one()
        messages = await conn.execute(sa.select(*MESSAGE_COLUMNS).where(MESSAGES.c.session_id == sid)
                                      .order_by(MESSAGES.c.received_at, MESSAGES.c.id))
        events = await conn.execute(sa.select(EVENTS).where(EVENTS.c.session_id == sid)
                                    .order_by(EVENTS.c.at, EVENTS.c.id))
        replies = await conn.run_sync(jobs.for_session, sid, None)  # every job of the chat
        return Transcript(
            chat=view, exported_at=service.clock(),
            messages=[ExportedMessage(r.message_id, r.received_at, r.wa_timestamp, r.direction,
                                      author_of(r.direction, r.push_name), r.push_name, r.kind, r.text, r.action)
                      for r in messages],
            events=[SessionEventView(r.at, r.change, r.reason, r.actor, r.message_id, r.resumes_at) for r in events],
            replies=[ExportedReply(r.id, r.kind, r.status, r.attempts, r.trigger_message_id, r.reply_text,
                                   r.last_error, r.created_at, r.attempted_at, r.sent_at) for r in replies])


# --- renderings ----------------------------------------------------------------------------------------------------

CSV_COLUMNS = ("received_at", "whatsapp_timestamp", "direction", "author", "push_name", "kind", "text",
               "message_id", "action")


def render(transcript: Transcript, form: str, zone: tzinfo) -> str:
    """The transcript as a document: ``json``, ``csv`` or ``txt`` (an ``ExportFormat``)."""
    form = ExportFormat(form)
    if form == ExportFormat.JSON:
        return json.dumps(transcript.as_dict(), indent=2, ensure_ascii=False) + "\n"
    if form == ExportFormat.CSV:
        return as_csv(transcript, zone)
    return as_text(transcript, zone)


def _iso(value: datetime | None, zone: tzinfo) -> str:
    return value.astimezone(zone).isoformat(timespec="seconds") if value else ""


def as_csv(transcript: Transcript, zone: tzinfo) -> str:
    """One row per message, with a header; times ISO 8601 in ``zone`` with their offset."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for m in transcript.messages:
        writer.writerow([_iso(m.received_at, zone), _iso(m.whatsapp_timestamp, zone), m.direction, m.author,
                         m.push_name or "", m.kind, m.text or "", m.message_id, m.action])
    return buffer.getvalue()


def _clock(value: datetime, zone: tzinfo) -> str:
    """'2026-12-01 09:30:00 -03:00'."""
    local = value.astimezone(zone)
    offset = local.strftime("%z")
    return f"{local:%Y-%m-%d %H:%M:%S} {offset[:3]}:{offset[3:5]}"


def _indented(text: str, width: int) -> str:
    """Later lines of a multi-line text under its first one."""
    return text.replace("\n", "\n" + " " * width)


def as_text(transcript: Transcript, zone: tzinfo) -> str:
    """The transcript for people: each time local to ``zone`` with its offset, who wrote each message, and what
    HybridFlow did (pauses and replies)."""
    c = transcript.chat
    name = f" ({c.push_name})" if c.push_name else ""
    zone_name = getattr(zone, "key", None) or _clock(transcript.exported_at, zone)[-6:]
    lines = [f"Chat {c.chat_id}{name} with {c.instance}",
             f"Exported {_clock(transcript.exported_at, zone)}: {transcript.summary()}.",
             f"Times are in {zone_name}, each with its offset from UTC.", "", "Messages"]
    for m in transcript.messages:
        stamp = _clock(m.received_at, zone)
        text = m.text if m.text is not None else f"<{m.kind}>"
        lines.append(f"{stamp}  {m.author}: {_indented(text, len(stamp) + 2)}")
    if not transcript.messages:
        lines.append("(none)")
    lines += ["", "Pause / resume history"]
    for e in transcript.events:
        until = f", until {_clock(e.resumes_at, zone)}" if e.resumes_at else ""
        lines.append(f"{_clock(e.at, zone)}  {e.change} ({e.reason}) by {e.actor}{until}")
    if not transcript.events:
        lines.append("(none)")
    lines += ["", "Replies"]
    for r in transcript.replies:
        stamp = _clock(r.created_at, zone)
        sent = f", sent {_clock(r.sent_at, zone)}" if r.sent_at else ""
        error = f", last error: {r.last_error}" if r.last_error else ""
        text = f": {_indented(r.reply_text, len(stamp) + 2)}" if r.reply_text else ""
        lines.append(f"{stamp}  #{r.id} {r.kind} {r.status}, {_count(r.attempts, 'attempt')}{sent}{error}{text}")
    if not transcript.replies:
        lines.append("(none)")
    return "\n".join(lines) + "\n"


__all__ = ["AUTHORS", "CSV_COLUMNS", "ExportFormat", "Transcript", "author_of", "export_chat", "render"]
