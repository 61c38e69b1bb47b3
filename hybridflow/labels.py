"""WhatsApp Business labels as Evolution reports them: ``labels.edit`` (a label created, renamed or deleted on the
phone) and ``labels.association`` (a label put on or taken off a chat). Pure parsing, never raises.

Evolution flattens Baileys' association: ``data = {instance, type: "add"|"remove", chatId, labelId}`` (a label on a
single message looks the same: it counts as the chat's). ``labels.edit`` carries ``data = {id, name, color,
deleted, predefinedId?, instance}``; on a delete it is sent twice. The name is the only way to know which label
pauses the bot, and it arrives only in ``labels.edit``: the tenant's labels are stored as they arrive.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any

from hybridflow import events as ev

LABELS_EDIT, LABELS_ASSOCIATION = "labels.edit", "labels.association"
LABEL_EVENTS = frozenset({LABELS_EDIT, LABELS_ASSOCIATION})
MAX_NAME = 100


@dataclass(frozen=True, slots=True)
class LabelEdit:
    """A label as it is now on the phone."""

    label_id: str
    name: str
    deleted: bool


@dataclass(frozen=True, slots=True)
class LabelAssociation:
    """A label put on (``added``) or taken off a chat."""

    label_id: str
    chat_id: str
    added: bool


def parse(event: str, data: Any) -> LabelEdit | LabelAssociation | None:
    """The label change a ``labels.*`` body's ``data`` describes; None when it describes none we can use."""
    if not isinstance(data, dict):
        return None
    if event == LABELS_EDIT:
        label_id, name = _text(data.get("id")), data.get("name")
        if label_id is None or not isinstance(name, str):
            return None
        return LabelEdit(label_id, name.strip()[:MAX_NAME], data.get("deleted") is True)
    if event == LABELS_ASSOCIATION:
        label_id, chat = _text(data.get("labelId")), _text(data.get("chatId"))
        kind = data.get("type")
        if label_id is None or chat is None or kind not in ("add", "remove"):
            return None
        chat_id = ev.normalize_jid(chat)
        return LabelAssociation(label_id, chat_id, kind == "add") if chat_id else None
    return None


def folded(name: str) -> str:
    """A label name as it is compared: case, accents, surrounding and repeated spaces ignored."""
    text = unicodedata.normalize("NFKD", name)
    text = "".join(c for c in text if not unicodedata.combining(c))
    return " ".join(text.casefold().split())


def same_name(a: str | None, b: str | None) -> bool:
    """Whether two label names are the same label for a person: "Bot off", " bot OFF ", "Bôt off"; also when one
    of them lost its non-ASCII characters on the way (Evolution's stored copy strips them)."""
    if not a or not b:
        return False
    fa, fb = folded(a), folded(b)
    return fa == fb or _ascii(fa) == _ascii(fb) != ""


def _ascii(text: str) -> str:
    return " ".join("".join(c for c in text if " " <= c <= "~").split())


def _text(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip()[:200] if isinstance(value, str) and value.strip() else None


__all__ = ["LABELS_ASSOCIATION", "LABELS_EDIT", "LABEL_EVENTS", "LabelAssociation", "LabelEdit", "folded", "parse",
           "same_name"]
