"""Evolution API webhook body -> one normalized, typed :class:`Event`.

Pure functions, no I/O: :func:`parse_event` accepts any JSON value (v1 or v2 envelope, any event) and never
raises. Anything it cannot use comes back as ``supported=False`` with a short machine-friendly ``reason``.
Facts behind the rules (LID addressing, wrappers, Long timestamps, ...) are in the Evolution reference notes,
sections 1-3.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, TypeGuard

# message kinds
TEXT = "text"
MEDIA = "media"
REACTION = "reaction"
PROTOCOL = "protocol"
EDIT = "edit"
OTHER = "other"

# chat kinds
USER = "user"
GROUP = "group"
BROADCAST = "broadcast"
NEWSLETTER = "newsletter"
LID = "lid"
UNKNOWN = "unknown"

MAX_TEXT_BYTES = 64 * 1024
MAX_WRAPPER_DEPTH = 5
MESSAGE_EVENTS = frozenset({"messages.upsert", "send.message"})

# Every `event` value Evolution v1/v2 emits (reference §2). Needed because the byEvents URL suffix and the
# UPPER_SNAKE config names lost the difference between "." and "-".
KNOWN_EVENTS = (
    "application.startup", "instance.create", "instance.delete", "qrcode.updated", "connection.update",
    "status.instance", "messages.set", "messages.upsert", "messages.edited", "messages.update",
    "messages.delete", "send.message", "send.message.update", "contacts.set", "contacts.upsert",
    "contacts.update", "presence.update", "chats.set", "chats.upsert", "chats.update", "chats.delete",
    "groups.upsert", "groups.update", "group-participants.update", "call", "typebot.start",
    "typebot.change-status", "labels.edit", "labels.association", "remove.instance", "logout.instance",
    "messaging-history.set", "chama-ai.action", "creds.update", "error",
)  # fmt: skip
_EVENT_BY_FOLDED = {re.sub(r"[.\-]", "_", name): name for name in KNOWN_EVENTS}

# Wrappers whose `.message` holds the real content (Baileys normalizeMessageContent, plus editedMessage).
WRAPPERS = (
    "ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension",
    "documentWithCaptionMessage", "editedMessage",
)  # fmt: skip
MEDIA_TYPES = frozenset(
    {"imageMessage", "videoMessage", "audioMessage", "documentMessage", "stickerMessage", "ptvMessage"}
)
# Content keys probed in this order; `message` field order is not stable, so never "the first key".
# senderKeyDistributionMessage rides along with group content and is never the content itself.
CONTENT_TYPES = (
    "conversation", "extendedTextMessage", "imageMessage", "videoMessage", "audioMessage",
    "documentMessage", "stickerMessage", "ptvMessage", "reactionMessage", "protocolMessage",
    "locationMessage", "liveLocationMessage", "contactMessage", "contactsArrayMessage",
    "buttonsResponseMessage", "listResponseMessage", "templateButtonReplyMessage",
    "interactiveResponseMessage", "pollCreationMessage", "pollCreationMessageV2", "pollCreationMessageV3",
    "pollUpdateMessage", "buttonsMessage", "listMessage", "templateMessage", "interactiveMessage",
    "eventMessage", "groupInviteMessage", "orderMessage", "productMessage", "keepInChatMessage",
    "pinInChatMessage", "requestPhoneNumberMessage", "albumMessage", "secretEncryptedMessage",
)  # fmt: skip

_PHONE_DOMAIN = "s.whatsapp.net"
_DOMAIN_KINDS = {_PHONE_DOMAIN: USER, "g.us": GROUP, "broadcast": BROADCAST, "newsletter": NEWSLETTER, "lid": LID}
_JID_RE = re.compile(r"([^@\s:]+)(?::[0-9]+)?@([a-z0-9.\-]+)")
_BARE_PHONE_RE = re.compile(r"\+?[0-9 ().\-]+")
_NUMERIC_RE = re.compile(r"\s*[0-9]{1,20}(?:\.[0-9]*)?\s*")
_MIN_TS, _MAX_TS = 1_000_000_000, 4_102_444_800  # 2001-09-09 .. 2100-01-01


class Author(StrEnum):
    """Who wrote a message."""

    CUSTOMER = "customer"  # the other side of the chat
    OWNER = "owner"  # the business, typing on its phone or a linked device (fromMe in messages.upsert)
    API = "api"  # another client of the instance's API (send.message that HybridFlow did not send)
    BOT = "bot"  # HybridFlow's own reply


@dataclass(frozen=True, slots=True)
class Event:
    """One webhook body, normalized.

    ``chat_jid`` is the conversation key (phone JID when known, else the @lid, else the group/broadcast/newsletter
    JID); ``lid_jid`` the @lid seen for a 1:1 chat; ``participant`` the group sender. ``kind`` is one of TEXT,
    MEDIA, REACTION, PROTOCOL, EDIT, OTHER; ``chat_kind`` one of USER, GROUP, BROADCAST, NEWSLETTER, LID, UNKNOWN.
    ``timestamp`` comes from ``data.messageTimestamp`` (never ``date_time``, which is local time marked Z).
    ``is_message`` is true for messages.upsert / send.message bodies with a key and an id; ``supported`` is false
    when the body cannot be used, with ``reason`` saying why (``reason`` may also flag a notable supported case).
    """

    event: str
    instance: str | None
    chat_jid: str | None
    lid_jid: str | None
    chat_kind: str
    message_id: str | None
    from_me: bool
    participant: str | None
    push_name: str | None
    text: str | None
    message_type: str | None
    kind: str
    timestamp: datetime | None
    source: str | None
    status: str | None
    apikey: str | None
    is_message: bool
    supported: bool
    reason: str | None
    owner_jid: str | None = None  # the instance's own number (the envelope's ``sender``), when Evolution sent it

    @property
    def sent_by_instance(self) -> bool:
        """Written from the instance's own number: by the owner, another API client, or (an echo) by us."""
        return self.from_me or self.event == "send.message"

    @property
    def author(self) -> Author:
        """Who wrote it, unless it is the echo of our own reply (only the database can tell that)."""
        if self.event == "send.message":
            return Author.API
        return Author.OWNER if self.from_me else Author.CUSTOMER


@dataclass(frozen=True, slots=True)
class _Content:
    """What the `message` object says once wrappers are peeled off."""

    message_type: str | None
    text: str | None
    kind: str


@dataclass(frozen=True, slots=True)
class _Chat:
    chat_jid: str | None
    lid_jid: str | None
    chat_kind: str
    participant: str | None


# ---------------------------------------------------------------------------------------------------------------
# public helpers


def event_from_suffix(suffix: str) -> str:
    """Map a byEvents URL suffix ("send-message-update") back to the dotted event name ("send.message.update")."""
    if not isinstance(suffix, str):
        return ""
    folded = re.sub(r"[.\-_/\s]+", "_", suffix.strip().lower()).strip("_")
    return _EVENT_BY_FOLDED.get(folded, folded.replace("_", "."))


def normalize_jid(value: str) -> str | None:
    """Canonical JID: lowercase, device suffix stripped; a bare phone number becomes `<digits>@s.whatsapp.net`."""
    if not isinstance(value, str):
        return None
    return _normalized(value) if len(value) <= _CACHED_JID_LENGTH else _normalize(value)


_CACHED_JID_LENGTH = 120  # longer strings are no JID a chat has: normalized (refused) without filling the cache


def _normalize(value: str) -> str | None:
    candidate = value.strip().lower()
    if "@" in candidate:
        match = _JID_RE.fullmatch(candidate)
        return f"{match[1]}@{match[2]}" if match else None
    if not _BARE_PHONE_RE.fullmatch(candidate):
        return None
    digits = re.sub(r"[^0-9]", "", candidate)
    return f"{digits}@{_PHONE_DOMAIN}" if 5 <= len(digits) <= 15 else None


# The same chats write again and again: every webhook names a few JIDs, and most were seen a moment ago.
_normalized = functools.lru_cache(maxsize=16_384)(_normalize)


def parse_event(body: object) -> Event:
    """Normalize any parsed webhook body into an :class:`Event`; never raises."""
    if not isinstance(body, dict):
        return _unsupported("", None, None, "not a JSON object")
    name = _event_name(body.get("event"))
    data = body.get("data")
    instance = _instance(body.get("instance"), data)
    apikey = _apikey(body.get("apikey"))
    if not name:
        return _unsupported(name, instance, apikey, "missing event")
    if name in MESSAGE_EVENTS:
        owner = _jid(body.get("sender"))
        return _message_event(name, instance, apikey, data, owner if owner and _domain(owner) == _PHONE_DOMAIN else None)
    return _other_event(name, instance, apikey, data)


# ---------------------------------------------------------------------------------------------------------------
# envelope


def _event_name(value: object) -> str:
    # "MESSAGES_UPSERT" (config spelling some senders use) and "messages-upsert" both mean "messages.upsert".
    if not isinstance(value, str) or not value.strip():
        return ""
    cleaned = value.strip()
    if "." in cleaned and "_" not in cleaned:
        return cleaned.lower()
    return event_from_suffix(cleaned)


def _instance(value: object, data: object) -> str | None:
    if isinstance(value, dict):
        value = value.get("instanceName")
    if _nonblank(value):
        return value
    if isinstance(data, dict):  # v1 carried the instance name in data.owner
        owner = data.get("owner")
        return owner if _nonblank(owner) else None
    return None


def _apikey(value: object) -> str | None:
    return value if _nonblank(value) and value != "Apikey not found" else None


def _unsupported(name: str, instance: str | None, apikey: str | None, reason: str) -> Event:
    return Event(
        event=name, instance=instance, chat_jid=None, lid_jid=None, chat_kind=UNKNOWN, message_id=None,
        from_me=False, participant=None, push_name=None, text=None, message_type=None, kind=OTHER,
        timestamp=None, source=None, status=None, apikey=apikey, is_message=False, supported=False,
        reason=reason,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# events


def _message_event(name: str, instance: str | None, apikey: str | None, data: object,
                   owner_jid: str | None = None) -> Event:
    if not isinstance(data, dict):
        reason = "missing data" if data is None else "data is not an object"
        return _unsupported(name, instance, apikey, reason)
    key = data.get("key")
    if not isinstance(key, dict):
        return _unsupported(name, instance, apikey, "missing key" if key is None else "key is not an object")
    message_id = key.get("id")
    if not _nonblank(message_id):
        reason = "key.id is not a string" if message_id is not None and not isinstance(message_id, str) else ""
        return _unsupported(name, instance, apikey, reason or "missing key.id")
    message = data.get("message")
    content = _content(message) if isinstance(message, dict) else _Content(None, None, OTHER)
    chat = _chat(key)
    reason = _first_problem(instance, chat, message)
    return Event(
        event=name, instance=instance, chat_jid=chat.chat_jid, lid_jid=chat.lid_jid, chat_kind=chat.chat_kind,
        message_id=message_id, from_me=_truthy(key.get("fromMe")), participant=chat.participant,
        push_name=_str_or_none(data.get("pushName")), text=content.text,
        message_type=content.message_type or _str_or_none(data.get("messageType")), kind=content.kind,
        timestamp=_timestamp(data.get("messageTimestamp")), source=_str_or_none(data.get("source")),
        status=_str_or_none(data.get("status")), apikey=apikey, is_message=True,
        supported=reason in (None, "no message content"), reason=reason, owner_jid=owner_jid,
    )  # fmt: skip


def _first_problem(instance: str | None, chat: _Chat, message: object) -> str | None:
    if instance is None:
        return "missing instance"
    if chat.chat_jid is None:
        return "missing remoteJid"
    if not isinstance(message, dict):
        return "no message content"
    return None


def _other_event(name: str, instance: str | None, apikey: str | None, data: object) -> Event:
    # Receipts, deletes, edits, contacts, connection...: keep what identifies the chat/message, nothing more.
    fields: dict[Any, Any] = data if isinstance(data, dict) else {}
    key: dict[Any, Any] = fields["key"] if isinstance(fields.get("key"), dict) else fields
    chat = _chat(key)
    content = _Content(None, None, OTHER)
    if name == "messages.edited" and isinstance(data, dict):  # data is the raw protocolMessage (edit or revoke)
        content = _protocol_content(data, depth=0)
    message_id = key.get("keyId")
    if not _nonblank(message_id) and name.startswith(("messages.", "send.message")):
        message_id = key.get("id")
    timestamp = _timestamp(fields.get("messageTimestamp"))
    return Event(
        event=name, instance=instance, chat_jid=chat.chat_jid, lid_jid=chat.lid_jid, chat_kind=chat.chat_kind,
        message_id=message_id if _nonblank(message_id) else None,
        from_me=_truthy(key.get("fromMe")), participant=chat.participant,
        push_name=_str_or_none(fields.get("pushName")), text=content.text, message_type=content.message_type,
        kind=content.kind, timestamp=timestamp or _timestamp(fields.get("timestampMs")),
        source=_str_or_none(fields.get("source")), status=_str_or_none(fields.get("status")), apikey=apikey,
        is_message=False, supported=instance is not None,
        reason=None if instance is not None else "missing instance",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# addressing


def _chat(key: dict) -> _Chat:
    """Conversation key per reference §3.3: phone JID first, else @lid, else the group/broadcast/newsletter JID."""
    remote = _jid(key.get("remoteJid"))
    if remote is not None and _domain(remote) in ("g.us", "broadcast", "newsletter"):
        return _Chat(remote, None, _DOMAIN_KINDS[_domain(remote)], _participant(key))
    alt = _jid(key.get("remoteJidAlt"))
    phone = next((jid for jid in (alt, remote, _jid(key.get("senderPn"))) if jid and _domain(jid) == _PHONE_DOMAIN),
                 None)
    lid = next((jid for jid in (remote, alt, _jid(key.get("senderLid"))) if jid and _domain(jid) == "lid"), None)
    chat_jid = phone or lid or remote
    kind = _DOMAIN_KINDS.get(_domain(chat_jid), UNKNOWN) if chat_jid else UNKNOWN
    return _Chat(chat_jid, lid, kind, None)


def _participant(key: dict) -> str | None:
    candidates = [_jid(key.get(name)) for name in ("participantAlt", "participant", "participantPn")]
    phone = next((jid for jid in candidates if jid and _domain(jid) == _PHONE_DOMAIN), None)
    return phone or next((jid for jid in candidates if jid), None)


def _jid(value: object) -> str | None:
    return normalize_jid(value) if isinstance(value, str) else None


def _domain(jid: str | None) -> str:
    return jid.rpartition("@")[2] if jid else ""


# ---------------------------------------------------------------------------------------------------------------
# content


def _content(message: dict, depth: int = 0, edited: bool = False) -> _Content:
    """Peel wrappers (bounded) and classify the content; `edited` once inside an editedMessage."""
    content_type = next((name for name in CONTENT_TYPES if name in message), None)
    if content_type is None and depth < MAX_WRAPPER_DEPTH:
        for wrapper in WRAPPERS:
            inner = _get(message, wrapper, "message")
            if isinstance(inner, dict):
                return _content(inner, depth + 1, edited or wrapper == "editedMessage")
    if content_type == "protocolMessage" and isinstance(message.get("protocolMessage"), dict):
        return _protocol_content(message["protocolMessage"], depth + 1)
    text = _text_of(content_type, message.get(content_type)) if content_type else None
    return _Content(content_type, text, EDIT if edited else _kind_of(content_type, text))


def _protocol_content(protocol: dict, depth: int) -> _Content:
    new_content = protocol.get("editedMessage")
    if isinstance(new_content, dict) and depth < MAX_WRAPPER_DEPTH:
        inner = _content(new_content, depth + 1, edited=True)
        return _Content(inner.message_type or "protocolMessage", inner.text, EDIT)
    return _Content("protocolMessage", None, PROTOCOL)


def _kind_of(content_type: str | None, text: str | None) -> str:
    if content_type in MEDIA_TYPES:
        return MEDIA
    if content_type == "reactionMessage":
        return REACTION
    if content_type == "protocolMessage":
        return PROTOCOL
    return TEXT if text is not None else OTHER


# Where each content type keeps its human-readable text; the first non-blank path wins.
_TEXT_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "extendedTextMessage": (("text",),),
    "imageMessage": (("caption",),),
    "videoMessage": (("caption",),),
    "documentMessage": (("caption",),),
    "ptvMessage": (("caption",),),
    "reactionMessage": (("text",),),
    "contactMessage": (("displayName",),),
    "buttonsResponseMessage": (("selectedDisplayText",), ("selectedButtonId",)),
    "listResponseMessage": (("title",), ("singleSelectReply", "selectedRowId")),
    "templateButtonReplyMessage": (("selectedDisplayText",), ("selectedId",)),
    "interactiveResponseMessage": (("body", "text"),),
}


def _text_of(content_type: str, body: object) -> str | None:
    """The text a human would read in this content, or None."""
    if content_type == "conversation":
        return _message_text(body)
    if not isinstance(body, dict):
        return None
    if content_type in ("locationMessage", "liveLocationMessage"):
        parts = [_message_text(body.get(name)) for name in ("name", "address", "caption")]
        return _message_text("\n".join(part for part in parts if part))
    if content_type == "contactsArrayMessage":
        contacts = body.get("contacts")
        names = [_message_text(_get(c, "displayName")) for c in contacts] if isinstance(contacts, list) else []
        return _message_text(body.get("displayName")) or _message_text(", ".join(n for n in names if n))
    for path in _TEXT_PATHS.get(content_type, ()):
        text = _message_text(_get(body, *path))
        if text is not None:
            return text
    return None


def _message_text(value: object) -> str | None:
    """A message's text as the parser keeps it: a non-blank string, cut to MAX_TEXT_BYTES of UTF-8."""
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) <= MAX_TEXT_BYTES // 4:  # cannot exceed the cap even at 4 bytes per character
        return value
    encoded = value.encode("utf-8", "surrogatepass")[:MAX_TEXT_BYTES]
    return encoded.decode("utf-8", "ignore")


# ---------------------------------------------------------------------------------------------------------------
# scalars


def _timestamp(value: object) -> datetime | None:
    """Unix seconds (int, float, numeric string, protobuf Long `{low, high}`, or milliseconds) -> aware UTC."""
    seconds = _number(value)
    if seconds is None or not math.isfinite(seconds):
        return None
    if seconds > 1e12:
        seconds /= 1000
    if not _MIN_TS <= seconds < _MAX_TS:
        return None
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value) if abs(value) < 10**18 else None
    if isinstance(value, float):
        return value
    if isinstance(value, str) and _NUMERIC_RE.fullmatch(value):
        return float(value)
    if isinstance(value, dict):
        low, high = value.get("low"), value.get("high")
        if _plain_int(low) and _plain_int(high) and abs(high) < 2**31:
            return float(high * 2**32 + (low & 0xFFFFFFFF))
    return None


def _plain_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _truthy(value: object) -> bool:
    return value is True or value == "true"


def _nonblank(value: object) -> TypeGuard[str]:
    return isinstance(value, str) and bool(value.strip())


def _str_or_none(value: object) -> str | None:
    return value if _nonblank(value) else None


def _get(value: object, *path: str) -> object:
    for name in path:
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value
