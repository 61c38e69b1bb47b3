"""The rows the hot statements of both dialects give back (attribute access, as SQLAlchemy's rows)."""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple


class SessionRow(NamedTuple):
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
    pauses: str | None
    created_at: datetime | None


class SendRow(NamedTuple):
    id: int
    tenant_id: int
    chat_id: str
    reply_text: str | None
    sent_message_id: str | None
    parts: str | None
    parts_sent: int | None


class ClaimRow(NamedTuple):
    """A job just claimed, with what the claim read of its chat: paused (the chat, the whole tenant) and the
    chat's recent history ((who wrote it, text), oldest first)."""

    id: int
    kind: str
    tenant_id: int
    session_id: int
    chat_id: str
    trigger_message_id: str
    last_message_id: str | None
    attempts: int
    reply_text: str | None
    received_at: datetime
    parts: str | None
    parts_sent: int | None
    last_error: str | None
    session_paused: bool
    tenant_paused: bool
    history: tuple[tuple[str, str], ...]


# What a webhook batch reads once its chats are locked (``hybridflow.jobs.batch_reads``): (tenant, message id) ->
# who wrote it, the recent sends to its chats, and (session_id, created_at, status) of their recent replies.
BatchReads = tuple[dict[tuple[int, str], str], list[SendRow], list[tuple[int, datetime, str]]]
