"""What the templates show, computed from the service's views: a chat's state line, the chart's bars. Pure: no
I/O, every instant passed in; the templates only lay it out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from urllib.parse import quote

from hybridflow.console.i18n import countdown
from hybridflow.service.dashboard import Hour
from hybridflow.service.sessions import SessionView

Translate = Callable[..., str]


def path(value: str) -> str:
    """A URL path segment (a chat id keeps its @)."""
    return quote(value, safe="@")


def chat_url(instance: str, chat_id: str) -> str:
    return f"/ui/chats/{path(instance)}/{path(chat_id)}"


def number(chat_id: str) -> str:
    """A chat id as people read it: +5511987654321 for a phone's chat, the id itself otherwise."""
    user, _, domain = chat_id.partition("@")
    return f"+{user}" if domain == "s.whatsapp.net" and user.isdigit() else chat_id


_MEDIA = {"imageMessage": "image", "videoMessage": "video", "ptvMessage": "video", "audioMessage": "audio",
          "documentMessage": "document", "documentWithCaptionMessage": "document", "stickerMessage": "sticker",
          "locationMessage": "location", "liveLocationMessage": "location", "contactMessage": "contact",
          "contactsArrayMessage": "contact"}


def media(kind: str, message_type: str | None) -> str | None:
    """The words' key for a message that is not plain text (``media_image``, ...); None for text."""
    if kind == "text":
        return None
    found = _MEDIA.get(message_type or "")
    return f"media_{found}" if found else f"kind_message_{kind}"


@dataclass(frozen=True, slots=True)
class PauseLine:
    """A paused chat's reasons and, when it resumes by itself, when (``until`` for the live countdown)."""

    reasons: list[str]
    until: datetime | None
    left: str | None  # "1 h 12 min"; None: until resumed by hand, or at the next sweep when it ran out


def pause_line(view: SessionView, now: datetime, t: Translate) -> PauseLine | None:
    """None for a chat the bot answers."""
    if not view.is_paused:
        return None
    reasons = list(dict.fromkeys(p.reason for p in view.pauses)) or [view.pause_reason or "operator"]
    words = [t(f"reason_{reason}") for reason in reasons]
    if view.resumes_at is None:
        return PauseLine(words, None, None)
    return PauseLine(words, view.resumes_at, countdown(view.resumes_at, now) if view.resumes_at > now else None)


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    height: float
    value: int


@dataclass(frozen=True, slots=True)
class Chart:
    """Messages and replies per hour as bars in a ``width`` x ``height`` SVG, with hour labels every 6 hours."""

    width: int
    height: int
    messages: list[Bar]
    replies: list[Bar]
    labels: list[tuple[float, str]]
    top: int  # the largest count, the top of the scale
    bar: float  # each bar's width


def chart(hours: Sequence[Hour], zone: tzinfo, *, width: int = 480, height: int = 120) -> Chart:
    """Two bars an hour (messages, then replies), scaled to the busiest hour; labels in the tenant's local time."""
    base = height - 18  # room for the labels under the bars
    top = max([1, *(h.messages for h in hours), *(h.replies for h in hours)])
    slot = width / max(1, len(hours))
    bar = max(1.0, slot * 0.36)

    def bars(values: list[int], offset: float) -> list[Bar]:
        found = []
        for n, value in enumerate(values):
            size = round(base * value / top, 1) if value else 0.0
            found.append(Bar(round(n * slot + offset, 1), round(base - size, 1), size, value))
        return found

    labels = [(round(n * slot + slot / 2, 1), f"{h.start.astimezone(zone):%H}h") for n, h in enumerate(hours)
              if n % 6 == 0]
    return Chart(width, height, bars([h.messages for h in hours], slot * 0.12),
                 bars([h.replies for h in hours], slot * 0.12 + bar), labels, top, round(bar, 1))


__all__ = ["Chart", "PauseLine", "chart", "chat_url", "media", "number", "path", "pause_line"]
