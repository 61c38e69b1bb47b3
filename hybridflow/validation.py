"""Every check of a webhook body, in one step beside the parser (``events.parse_event`` stays total).

``validate`` raises ``BadRequest`` (400: Evolution drops it, resending would not help) for an envelope that
cannot be used: not a JSON object, no ``event``, no or an implausible ``instance``. A usable envelope comes back as
a ``Webhook``: either a message to store and decide, or an event to answer ``ignored_event`` with a reason (not a
message, or a chat or message id that cannot be stored). The tenant (404) and authentication (401) are checked
between the two, by the service, in that order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hybridflow import events as ev
from hybridflow.errors import BadRequest
from hybridflow.logs import redact

MAX_ID_LENGTH = 200
MAX_TEXT = 64 * 1024
IMPLAUSIBLE_IDS = "implausible chat or message id"
_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+=~")


@dataclass(frozen=True, slots=True)
class Webhook:
    """A webhook body whose envelope is usable: its event, and whether it carries a message we can store."""

    event: ev.Event
    body: dict[str, Any]
    raw: str
    ignored_because: str | None = None  # set when it is answered ``ignored_event`` (``None`` also for no reason)
    is_ignored: bool = False

    @property
    def ids(self) -> tuple[str | None, str | None]:
        """The chat and message ids to answer with (none when they are not plausible)."""
        if self.ignored_because == IMPLAUSIBLE_IDS:
            return None, None
        return self.event.chat_jid, self.event.message_id

    def stored_raw(self) -> str:
        """The raw body to store, without the instance token Evolution puts in every body's ``apikey``."""
        apikey = self.body.get("apikey")
        if not apikey:
            return self.raw
        if isinstance(apikey, str) and len(apikey) >= 16 and set(apikey) <= _TOKEN_CHARS:
            return self.raw.replace(apikey, "[redacted]")  # a plain token appears verbatim in the JSON: fast path
        return json.dumps(redact(self.body), ensure_ascii=False)


def validate(body: object, raw: str) -> Webhook:
    """Parse and check a webhook body; ``BadRequest`` when its envelope cannot be used."""
    event = ev.parse_event(body)
    if not isinstance(body, dict):
        raise BadRequest("the body is not a JSON object")
    if not event.event:
        raise BadRequest("the body has no 'event' field")
    if not event.instance:
        raise BadRequest("the body has no 'instance' field")
    if not plausible(event.instance):
        raise BadRequest("the 'instance' field is not a plausible instance name")
    if not event.is_message or not event.chat_jid:
        return Webhook(event, body, raw, event.reason if not event.supported else None, is_ignored=True)
    if not (plausible(event.chat_jid) and plausible(event.message_id)):
        return Webhook(event, body, raw, IMPLAUSIBLE_IDS, is_ignored=True)
    return Webhook(event, body, raw)


def plausible(value: str | None) -> bool:
    """An id or name we can store and look up on both databases: bounded, printable, valid Unicode."""
    if not value or len(value) > MAX_ID_LENGTH:
        return False
    if value.isascii():  # the usual id: no surrogate can hide in it, and a NUL is not printable
        return value.isprintable()
    return storable_text(value) == value and value.isprintable()


def storable_text(value: str | None, limit: int = MAX_TEXT) -> str | None:
    """Text safe for both databases: no NUL, no lone surrogates, at most ``limit`` characters."""
    if value is None:
        return None
    value = value[:limit]
    if "\x00" in value:
        value = value.replace("\x00", "")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value
