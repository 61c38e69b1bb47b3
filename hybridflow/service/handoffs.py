"""The model hands a chat to a person (its ``handoff_to_human`` tool): the same effect as a customer's handoff
phrase, decided in one transaction of the reply job that was being written.

The chat is paused (reason ``customer_request``, for the tenant's ``--handoff-pause``), its waiting replies are
dropped, the ``--handoff-message`` is queued for the customer once, the owner is notified with the model's reason,
and the reply job ends ``handed_off`` (nothing of the model's own text is sent). A chat paused meanwhile by a
person is left to them: the job ends ``skipped_paused`` as any reply would.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from hybridflow import jobs
from hybridflow.jobs import CANCELLED, HANDED_OFF, RUNNING, SKIPPED_PAUSED, Job, JobKind, JobStatus
from hybridflow.models import JOBS, SESSIONS
from hybridflow.service import notifications
from hybridflow.service.ingest import CUSTOMER_REQUEST, SessionState, write_sessions
from hybridflow.service.tenants import TenantConfig

TOOL_NAME = "handoff_to_human"
TOOL = {
    "type": "function",
    "function": {
        "name": TOOL_NAME,
        "description": ("Hand this conversation over to a person of the business. Call it when the customer asks "
                        "for a human, or when you cannot help them. The customer is then answered by a person and "
                        "you stop answering this chat."),
        "parameters": {
            "type": "object",
            "properties": {"reason": {"type": "string",
                                      "description": "Why the chat needs a person, in a few words, for the owner."}},
            "required": ["reason"],
        },
    },
}
ACTOR = "model"


def reason_of(arguments: dict) -> str:
    """The reason the model gave, as one short line (it may give none, or not a string)."""
    reason = arguments.get("reason")
    text = " ".join(str(reason).split()) if reason is not None else ""
    return text[:300] or "the model asked for a person (no reason given)"


def by_model(conn: Connection, *, tenant: TenantConfig, job: Job, reason: str, worker_id: str, now: datetime,
             tokens: int | None) -> JobStatus:
    """Hand the job's chat to a person; returns ``handed_off``, ``skipped_paused`` (a pause came first),
    ``cancelled`` (the chat was forgotten) or ``running`` (this worker no longer holds the job)."""
    mine = sa.and_(JOBS.c.id == job.id, JOBS.c.status == RUNNING, JOBS.c.claimed_by == worker_id)
    spent = {"tokens": tokens, "generated_at": now, "updated_at": now}
    session = sa.select(SESSIONS).where(SESSIONS.c.id == job.session_id)
    if conn.dialect.name == "postgresql":
        session = session.with_for_update()  # before the job, as a forget takes them; a forget waits, or came first
    row = conn.execute(session).first()
    if row is None or conn.execute(sa.select(JOBS.c.id).where(JOBS.c.id == job.id)).first() is None:
        return CANCELLED  # the chat was forgotten while the model was answering: its jobs went with it
    state = SessionState.from_row(row)
    if state.is_paused or jobs.tenants_paused(conn, {tenant.id}, now, lock=True):
        moved = conn.execute(sa.update(JOBS).where(mine).values(
            status=SKIPPED_PAUSED, last_error="the chat was paused while the model was answering (it asked to "
                                              f"hand the chat to a person: {reason})", **spent))
        return SKIPPED_PAUSED if moved.rowcount else RUNNING
    moved = conn.execute(sa.update(JOBS).where(mine).values(
        status=HANDED_OFF, last_error=f"the model handed the chat to a person: {reason}", **spent))
    if not moved.rowcount:
        return RUNNING
    until = now + timedelta(seconds=tenant.handoff_pause)
    state.pause(CUSTOMER_REQUEST, ACTOR, now, until, job.last_message_id or job.trigger_message_id)
    write_sessions(conn, [state], now)
    if tenant.handoff_message:
        jobs.enqueue_notices(conn, [jobs.Notice(JobKind.HANDOFF, tenant.id, state.id, state.chat_id,
                                                f"handoff:{job.trigger_message_id}", job.trigger_message_id,
                                                tenant.handoff_message, due_at=now)], now)
    notifications.queue_for_job(conn, tenant, job, notifications.HANDOFF, f"notify:{job.trigger_message_id}", now,
                                detail=reason, until=until)
    return HANDED_OFF


__all__ = ["TOOL", "TOOL_NAME", "by_model", "reason_of"]
