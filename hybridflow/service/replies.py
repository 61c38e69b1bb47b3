"""The reply queue: claim due jobs, generate with the tenant's model, re-check the pause, send exactly once.

Exactly once, and what we chose when it cannot be known: the attempt is recorded (status ``sending``, with the
text) in the same transaction that re-checks the pause, *before* Evolution is called. A worker that dies after
that point leaves a ``sending`` job; when its lease runs out the job becomes ``sent`` if the echo of our text came
back through the webhook, and ``unknown`` otherwise — reported, never sent a second time. A send that failed with
an answer from Evolution (5xx) or a timeout is retried with backoff, reusing the same text, unless its echo has
arrived meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from hybridflow.errors import HybridFlowError, LLMError, SendError
from hybridflow.evolution import EvolutionClient
from hybridflow.llm import LLMClient, Turn, build_messages
from hybridflow.metrics import Metrics
from hybridflow.models import FAILED, QUEUED, RETRY, RUNNING, SENDING, SENT, SKIPPED_PAUSED, UNKNOWN
from hybridflow.service.ingest import BOT, CUSTOMER, JOBS, MESSAGES, OWN_MESSAGE, SESSIONS, insert_for
from hybridflow.service.tenants import Tenants, TenantConfig
from hybridflow.store import Store

log = structlog.get_logger("hybridflow.replies")
T = TypeVar("T")
WriteOp = Callable[[Connection], T]  # synchronous Core code, run inside the writer's batch transaction
MAX_BACKOFF = 300.0


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed reply job."""

    id: int
    tenant_id: int
    session_id: int
    chat_id: str
    trigger_message_id: str
    last_message_id: str | None
    attempts: int
    reply_text: str | None
    received_at: datetime
    paused: bool = False  # the chat's state when the job was claimed
    history: tuple[Turn, ...] = ()  # the conversation when the job was claimed, oldest first


def backoff(attempts: int, base: float = 5.0) -> float:
    """Seconds to wait before attempt ``attempts + 1``: 5, 10, 20, ... capped at five minutes."""
    return min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def conversation(conn: Connection, session_id: int, limit: int) -> list[Turn]:
    """The last ``limit`` messages with text of a chat, oldest first; the customer speaks as the user."""
    rows = (conn.execute(
        sa.select(MESSAGES.c.direction, MESSAGES.c.text)
        .where(MESSAGES.c.session_id == session_id, MESSAGES.c.text.is_not(None))
        .order_by(MESSAGES.c.received_at.desc(), MESSAGES.c.id.desc()).limit(limit)
    )).all()
    return [Turn("user" if r.direction == CUSTOMER else "assistant", r.text) for r in reversed(rows)]


class Replies:
    """Produces and delivers replies; several workers (and processes) may run this at once."""

    def __init__(self, store: Store, tenants: Tenants, evolution: EvolutionClient, llm: LLMClient, *,
                 clock: Callable[[], datetime], worker_id: str, history_limit: int, lease: float,
                 send_timeout: float, max_attempts: int, metrics: Metrics | None = None,
                 submit: Callable[[WriteOp[Any]], Awaitable[Any]] | None = None) -> None:
        self.store, self.tenants, self.evolution, self.llm = store, tenants, evolution, llm
        self.metrics = metrics or Metrics()
        self.submit = submit
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.clock = clock
        self.worker_id = worker_id
        self.history_limit = history_limit
        self.lease = lease
        self.send_lease = send_timeout * 2 + 30
        self.max_attempts = max_attempts

    async def claim(self, limit: int) -> list[Job]:
        """Atomically take up to ``limit`` due jobs (and jobs whose worker died before sending)."""
        now = self.clock()
        pick = (sa.select(JOBS.c.id).where(JOBS.c.status.in_([QUEUED, RETRY]), JOBS.c.due_at <= now)
                .order_by(JOBS.c.due_at).limit(limit))
        if self.store.is_postgres:
            pick = pick.with_for_update(skip_locked=True)

        def take(conn: Connection) -> list[Job]:
            rows = conn.execute(
                sa.update(JOBS).where(JOBS.c.id.in_(pick.scalar_subquery()))
                .values(status=RUNNING, attempts=JOBS.c.attempts + 1, claimed_by=self.worker_id,
                        lease_until=now + timedelta(seconds=self.lease), updated_at=now)
                .returning(JOBS.c.id, JOBS.c.tenant_id, JOBS.c.session_id, JOBS.c.chat_id, JOBS.c.trigger_message_id,
                           JOBS.c.last_message_id, JOBS.c.attempts, JOBS.c.reply_text, JOBS.c.received_at)).all()
            # What generation needs is read in the same transaction (and, on SQLite, the same hop).
            paused = {r.id: r.is_paused for r in conn.execute(sa.select(SESSIONS.c.id, SESSIONS.c.is_paused).where(
                SESSIONS.c.id.in_({row.session_id for row in rows})))} if rows else {}
            return [Job(**row._mapping, paused=paused.get(row.session_id, False),
                        history=tuple(conversation(conn, row.session_id, self.history_limit))) for row in rows]

        return await self._write(take)

    async def _write(self, operation: WriteOp[T]) -> T:
        """Run a write in the process's batching writer (with the webhooks of the moment), or on its own."""
        if self.submit is not None:
            return await self.submit(operation)
        return await self.store.batch(operation)

    async def recover_stale(self) -> list[int]:
        """Take back jobs of workers that died: before sending they are queued again; mid-send they become
        ``sent`` if the echo came back, else ``unknown`` (never resent)."""
        now = self.clock()
        stale = sa.and_(JOBS.c.status == SENDING, JOBS.c.lease_until < now)
        async with self.store.write() as conn:
            await conn.execute(sa.update(JOBS).where(JOBS.c.status == RUNNING, JOBS.c.lease_until < now)
                               .values(status=RETRY, due_at=now, claimed_by=None, updated_at=now))
            await conn.execute(sa.update(JOBS).where(stale, JOBS.c.sent_message_id.is_not(None))
                               .values(status=SENT, sent_at=now, updated_at=now))
            unknown = (await conn.execute(
                sa.update(JOBS).where(stale).values(
                    status=UNKNOWN, updated_at=now,
                    last_error="the worker stopped while sending; the reply may or may not have been delivered "
                               "and is not sent again")
                .returning(JOBS.c.id, JOBS.c.chat_id)
            )).all()
        for row in unknown:
            log.warning("reply.unknown_outcome", job_id=row.id, chat=row.chat_id)
        return [row.id for row in unknown]

    async def run(self, job: Job) -> str:
        """Generate and send one claimed job; returns its final (or next) status. Never raises for peer errors."""
        bound = log.bind(job_id=job.id, chat=job.chat_id, message_id=job.trigger_message_id, attempt=job.attempts)
        try:
            return await self._run(job, bound)
        except HybridFlowError as exc:  # database outage: the lease will expire and the job is taken again
            bound.warning("reply.interrupted", error=exc.message)
            return RUNNING

    async def _run(self, job: Job, bound: Any) -> str:
        tenant = await self.tenants.get_by_id(job.tenant_id)
        bound = bound.bind(tenant=tenant.instance)
        if job.paused:
            return await self._finish(job, SKIPPED_PAUSED, bound, error="the chat was paused before generation")
        if not tenant.api_key:
            reason = tenant.secret_error or "the tenant has no Evolution API key (hybridflow tenants update --api-key)"
            return await self._finish(job, FAILED, bound, error=reason)
        if job.reply_text is not None and await self._echo_seen(job):
            # A retry after a send that failed or timed out, but whose echo came back meanwhile: it was delivered.
            return await self._mark_sent(job, job.reply_text, None, bound)
        if tenant.mark_read:
            self._side_task(self._mark_read(tenant, job, bound))
        text = job.reply_text
        if text is None:
            if tenant.send_presence:
                self._side_task(self._presence(tenant, job, bound))
            try:
                text = await self.llm.chat(model=tenant.model, messages=build_messages(tenant.prompt, job.history))
            except LLMError as exc:
                return await self._failed_attempt(job, exc, bound, status_from=RUNNING)
        if not await self._record_attempt(job, text):
            bound.info("reply.skipped_paused", reason="the owner took over while the model was answering")
            self.metrics.reply(SKIPPED_PAUSED)
            return SKIPPED_PAUSED
        return await self._send(tenant, job, text, bound)

    def _side_task(self, coro: Any) -> None:
        """Fire-and-forget niceties (typing, read receipts), kept referenced until done."""
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _record_attempt(self, job: Job, text: str) -> bool:
        """The last-moment pause check and the record of the attempt, in one transaction. False if paused."""
        now = self.clock()
        query = sa.select(SESSIONS.c.is_paused).where(SESSIONS.c.id == job.session_id)
        if self.store.is_postgres:
            query = query.with_for_update()
        mine = sa.and_(JOBS.c.id == job.id, JOBS.c.status == RUNNING, JOBS.c.claimed_by == self.worker_id)

        def record(conn: Connection) -> str:
            if conn.execute(query).scalar():
                conn.execute(sa.update(JOBS).where(mine).values(
                    status=SKIPPED_PAUSED, reply_text=text, updated_at=now,
                    last_error="the owner took over while the reply was being generated"))
                return SKIPPED_PAUSED
            claimed = conn.execute(
                sa.update(JOBS).where(mine)
                .values(status=SENDING, reply_text=text, attempted_at=now, updated_at=now,
                        lease_until=now + timedelta(seconds=self.send_lease)))
            return SENDING if claimed.rowcount == 1 else RUNNING

        outcome = await self._write(record)
        if outcome == RUNNING:
            raise _LostLease(job.id)
        return outcome == SENDING

    async def _send(self, tenant: TenantConfig, job: Job, text: str, bound: Any) -> str:
        try:
            result = await self.evolution.send_text(
                base_url=tenant.evolution_url, instance=tenant.instance, api_key=tenant.api_key or "",
                number=job.chat_id, text=text, api_version=tenant.api_version)
        except SendError as exc:
            if exc.transient and await self._echo_seen(job):
                return await self._mark_sent(job, text, None, bound)
            return await self._failed_attempt(job, exc, bound, status_from=SENDING)
        return await self._mark_sent(job, text, result.message_id, bound)

    async def _echo_seen(self, job: Job) -> bool:
        async with self.store.read() as conn:
            return bool((await conn.execute(sa.select(JOBS.c.sent_message_id).where(JOBS.c.id == job.id))).scalar())

    async def _mark_sent(self, job: Job, text: str, message_id: str | None, bound: Any) -> str:
        now = self.clock()

        def settle(conn: Connection) -> str | None:
            mid = (conn.execute(
                sa.update(JOBS).where(JOBS.c.id == job.id).values(
                    status=SENT, sent_at=now, updated_at=now, last_error=None,
                    sent_message_id=sa.func.coalesce(JOBS.c.sent_message_id, message_id))
                .returning(JOBS.c.sent_message_id))).scalar()
            if mid:  # the reply joins the transcript (and a late echo of it is recognised as ours)
                conn.execute(insert_for(conn, MESSAGES).on_conflict_do_nothing(
                    index_elements=["tenant_id", "message_id"]).values(
                    tenant_id=job.tenant_id, session_id=job.session_id, message_id=mid, chat_id=job.chat_id,
                    event="reply", direction=BOT, from_me=True, kind="text", message_type="conversation", text=text,
                    received_at=now, action=OWN_MESSAGE, raw="{}"))
            return mid

        mid = await self._write(settle)
        latency_ms = (now - job.received_at).total_seconds() * 1000
        self.metrics.reply(SENT, latency_ms / 1000)
        bound.info("reply.sent", sent_message_id=mid, latency_ms=round(latency_ms, 1), text_length=len(text))
        return SENT

    async def _failed_attempt(self, job: Job, exc: LLMError | SendError, bound: Any, *, status_from: str) -> str:
        if exc.transient and job.attempts < self.max_attempts:
            delay = backoff(job.attempts)
            now = self.clock()
            await self._update(job, status_from, status=RETRY, due_at=now + timedelta(seconds=delay),
                               last_error=exc.message, updated_at=now)
            bound.warning("reply.retry", error=exc.message, retry_in_s=delay, kind=type(exc).__name__)
            self.metrics.reply(RETRY)
            return RETRY
        return await self._finish(job, FAILED, bound, error=exc.message, status_from=status_from)

    async def _finish(self, job: Job, status: str, bound: Any, *, error: str, status_from: str = RUNNING) -> str:
        await self._update(job, status_from, status=status, last_error=error, updated_at=self.clock())
        (bound.error if status == FAILED else bound.info)(f"reply.{status}", error=error)
        self.metrics.reply(status)
        return status

    async def _update(self, job: Job, status_from: str, **values: Any) -> None:
        """Move a job on from ``status_from`` (a job that moved on meanwhile is left alone)."""
        statement = sa.update(JOBS).where(JOBS.c.id == job.id, JOBS.c.status == status_from).values(**values)

        def update(conn: Connection) -> None:
            conn.execute(statement)

        await self._write(update)

    async def _presence(self, tenant: TenantConfig, job: Job, bound: Any) -> None:
        try:
            await self.evolution.send_presence(base_url=tenant.evolution_url, instance=tenant.instance,
                                               api_key=tenant.api_key or "", number=job.chat_id,
                                               api_version=tenant.api_version)
        except SendError as exc:
            bound.info("reply.presence_failed", error=exc.message)

    async def _mark_read(self, tenant: TenantConfig, job: Job, bound: Any) -> None:
        try:
            await self.evolution.mark_read(base_url=tenant.evolution_url, instance=tenant.instance,
                                           api_key=tenant.api_key or "", remote_jid=job.chat_id,
                                           message_id=job.last_message_id or job.trigger_message_id,
                                           api_version=tenant.api_version)
        except SendError as exc:
            bound.info("reply.mark_read_failed", error=exc.message)


class _LostLease(HybridFlowError):
    """Another worker took this job over (our lease ran out); we must not send it."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} was taken over by another worker")
