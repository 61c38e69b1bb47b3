"""Telling the owner that a chat needs a person: a handoff, a loop stopped by the reply cap, a reply that failed for
good, the daily budget used up.

Each one is queued once per key, in the transaction that decided it, on every channel the tenant has: a WhatsApp
text to the owner's own chat (or ``--notify-number``), and a signed JSON POST to ``--notify-url``. Both are jobs of
the queue (``notify`` and ``notify_url``) with its exactly-once and retry rules; neither ever goes to a customer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hybridflow import jobs
from hybridflow.events import Author
from hybridflow.models import SESSIONS
from hybridflow.jobs import JobKind
from hybridflow.service.owner_commands import when, words
from hybridflow.service.tenants import TenantConfig

HANDOFF, RATE_LIMITED, FAILED, BUDGET = "handoff", "rate_limited", "failed", "budget"
EVENTS = (HANDOFF, RATE_LIMITED, FAILED, BUDGET)
_HEADS = {HANDOFF: "asked", RATE_LIMITED: "looped", FAILED: "failed", BUDGET: "budget"}


@dataclass(frozen=True, slots=True)
class Alert:
    """What happened in one chat that the owner must hear about."""

    event: str  # handoff | rate_limited | failed | budget
    key: str  # once per key, e.g. "notify:<message id>", "failed:<job id>", "budget:<local date>"
    message_id: str  # the customer message behind it
    chat_id: str  # the customer's chat
    push_name: str | None = None
    last_text: str | None = None  # the customer's last message
    until: datetime | None = None  # the chat is paused until then (handoff, rate_limited)
    detail: str | None = None  # the model's reason for a handoff, the error of a failed reply, the budget's figures


def queue(conn: Connection, tenant: TenantConfig, alert: Alert, now: datetime) -> int:
    """Queue ``alert`` on each of the tenant's channels; returns how many (0: the owner cannot be reached yet)."""
    text = owner_text(tenant, alert, now)
    channels = 0
    if tenant.notify_chat is not None:
        jobs.enqueue_notification(conn, tenant_id=tenant.id, chat_id=tenant.notify_chat, key=alert.key,
                                  message_id=alert.message_id, text=text, now=now)
        channels += 1
    # Filed with the customer's chat (forgetting it erases it too); never for a chat that is gone.
    if tenant.notify_url is not None and jobs.enqueue_notification(
            conn, tenant_id=tenant.id, chat_id=alert.chat_id, key=alert.key, message_id=alert.message_id,
            text=body(tenant, alert, text, now), now=now, kind=JobKind.NOTIFY_URL, create=False):
        channels += 1
    return channels


def queue_for_job(conn: Connection, tenant: TenantConfig, job: jobs.Job, event: str, key: str, now: datetime, *,
                  detail: str | None = None, until: datetime | None = None) -> int:
    """``queue`` for what happened to a reply job: its customer's name and last message come from the chat."""
    push_name = conn.execute(sa.select(SESSIONS.c.push_name).where(SESSIONS.c.id == job.session_id)).scalar()
    last_text = next((text for author, text in reversed(job.history) if author == Author.CUSTOMER), None)
    return queue(conn, tenant, Alert(event, key, job.trigger_message_id, job.chat_id, push_name, last_text, until,
                                     detail), now)


def event_of(document: str) -> str:
    """The event a notification's JSON names (its ``X-Hybridflow-Event`` header)."""
    try:
        return str(json.loads(document).get("event", "notification"))
    except (ValueError, AttributeError):
        return "notification"


def owner_text(tenant: TenantConfig, alert: Alert, now: datetime) -> str:
    """The WhatsApp text, in the tenant's language: who, why, the last message, until when the bot keeps out, and
    the command that hands the chat back."""
    w = words(tenant)
    number = alert.chat_id.partition("@")[0]
    who = f"{alert.push_name} (+{number})" if alert.push_name else f"+{number}"
    lines = [w[_HEADS[alert.event]].format(who=who)]
    if alert.detail:
        lines.append(f"{w['why']}: {alert.detail[:300]}")
    if alert.last_text:
        lines.append(f"{w['wrote']}: \"{alert.last_text[:300]}\"")
    if alert.event in (HANDOFF, RATE_LIMITED):
        lines.append(f"{w['paused_until']} {when(alert.until, tenant, w, now)}")
        lines.append(f"{w['hand_back']}: {tenant.command_word} on {number}")
    return "\n".join(lines)


def body(tenant: TenantConfig, alert: Alert, text: str, now: datetime) -> str:
    """The JSON document POSTed to ``--notify-url`` (its exact bytes are signed)."""
    number = alert.chat_id.partition("@")[0]
    document: dict[str, Any] = {
        "event": alert.event,
        "instance": tenant.instance,
        "customer": {"name": alert.push_name, "number": f"+{number}" if alert.chat_id.endswith("@s.whatsapp.net")
                     else None, "chat_id": alert.chat_id},
        "reason": alert.detail,
        "last_message": alert.last_text,
        "paused_until": alert.until.isoformat() if alert.until else None,
        "hand_back": f"{tenant.command_word} on {number}" if alert.event in (HANDOFF, RATE_LIMITED) else None,
        "text": text,
        "key": alert.key,
        "at": now.isoformat(),
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


__all__ = ["Alert", "BUDGET", "EVENTS", "FAILED", "HANDOFF", "RATE_LIMITED", "body", "event_of", "owner_text", "queue", "queue_for_job"]
