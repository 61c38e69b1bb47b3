"""A tenant's day at a glance: today's counts (customer messages, replies sent, pauses, failed replies), its queue,
whether its business hours have it open now, and messages and replies per hour over the last 24 hours.

Every count reads an index that starts with the tenant and a time (``ix_messages_tenant_received``,
``ix_reply_jobs_tenant_created``, ``ix_session_events_tenant_at``), so a busy tenant's day costs a range scan.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from hybridflow.events import Author
from hybridflow.models import EVENTS, JOBS, MESSAGES, OPEN_JOB_STATES, JobKind, JobStatus
from hybridflow.service.tenants import TenantConfig

# The kinds of job that write to a customer (the owner's notices and notifications are not replies).
CUSTOMER_KINDS = (JobKind.REPLY, JobKind.AWAY, JobKind.HANDOFF)
HOURS = 24


@dataclass(frozen=True, slots=True)
class Hour:
    """One hour of the chart: when it starts, and what happened in it."""

    start: datetime
    messages: int
    replies: int


@dataclass(frozen=True, slots=True)
class TenantDay:
    """A tenant's counts since its local midnight, its queue, its hours, and the last 24 hours hour by hour."""

    tenant: TenantConfig
    since: datetime
    messages: int  # from customers
    replies: int  # sent to customers
    pauses: int  # chats that started a pause
    failed: int  # replies that failed for good
    queue: int  # jobs not finished yet
    open_now: bool | None  # None: the tenant has no business hours
    paused: bool  # the whole tenant is paused now
    hours: tuple[Hour, ...]


def _count(table: sa.Table, *where: sa.ColumnElement[bool]) -> sa.Select:
    return sa.select(sa.func.count()).select_from(table).where(*where)


async def tenant_day(conn: AsyncConnection, tenant: TenantConfig, now: datetime) -> TenantDay:
    """What the tenants page shows of one tenant at ``now``."""
    since = tenant.day_start(now)
    lookback = since - timedelta(days=1)  # a reply sent today was queued today or, at most, late yesterday
    customer = MESSAGES.c.direction == Author.CUSTOMER
    to_customers = JOBS.c.kind.in_([str(kind) for kind in CUSTOMER_KINDS])
    counts = [
        _count(MESSAGES, MESSAGES.c.tenant_id == tenant.id, MESSAGES.c.received_at >= since, customer),
        _count(JOBS, JOBS.c.tenant_id == tenant.id, JOBS.c.created_at >= lookback, JOBS.c.status == JobStatus.SENT,
               JOBS.c.sent_at >= since, to_customers),
        _count(EVENTS, EVENTS.c.tenant_id == tenant.id, EVENTS.c.at >= since, EVENTS.c.change == "paused"),
        _count(JOBS, JOBS.c.tenant_id == tenant.id, JOBS.c.created_at >= lookback,
               JOBS.c.status == JobStatus.FAILED, JOBS.c.updated_at >= since),
        _count(JOBS, JOBS.c.tenant_id == tenant.id, JOBS.c.status.in_(OPEN_JOB_STATES)),
    ]
    messages, replies, pauses, failed, queue = [(await conn.execute(query)).scalar_one() for query in counts]
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    received = (await conn.execute(sa.select(MESSAGES.c.received_at).where(
        MESSAGES.c.tenant_id == tenant.id, MESSAGES.c.received_at >= first, customer))).scalars()
    sent = (await conn.execute(sa.select(JOBS.c.sent_at).where(
        JOBS.c.tenant_id == tenant.id, JOBS.c.created_at >= first - timedelta(hours=1),
        JOBS.c.status == JobStatus.SENT, JOBS.c.sent_at >= first, to_customers))).scalars()
    open_now = tenant.schedule.is_open(now) if tenant.schedule is not None else None
    return TenantDay(tenant, since, messages, replies, pauses, failed, queue, open_now, tenant.paused_now(now),
                     _by_hour(first, list(received), list(sent)))


def _by_hour(first: datetime, received: list[datetime], sent: list[datetime]) -> tuple[Hour, ...]:
    def counts(times: list[datetime]) -> list[int]:
        slots = [0] * HOURS
        for at in times:
            index = int((at - first).total_seconds() // 3600)
            if 0 <= index < HOURS:
                slots[index] += 1
        return slots

    messages, replies = counts(received), counts(sent)
    return tuple(Hour(first + timedelta(hours=n), messages[n], replies[n]) for n in range(HOURS))


__all__ = ["Hour", "TenantDay", "tenant_day"]
