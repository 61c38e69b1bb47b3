"""Replies: generate a claimed job's text with the tenant's model and deliver it through Evolution, exactly once.

The job's state changes (claim, the attempt record that re-checks the pause, sent, retry, failed, unknown) are
``hybridflow.jobs``; this module decides which one follows from what the model and Evolution answered, and how
long a transient failure waits (``backoff``). Each change is submitted to the process's batching writer.
A send that failed with an answer from Evolution (5xx) or a timeout is retried with backoff, reusing the same
text, unless its echo has arrived meanwhile.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from hybridflow import jobs
from hybridflow.errors import HybridFlowError, LLMError, SendError
from hybridflow.evolution import EvolutionClient
from hybridflow.events import Author
from hybridflow.jobs import (CANCELLED, FAILED, RETRY, RUNNING, SENDING, SENT, SKIPPED_BUDGET, SKIPPED_PAUSED, Job,
                             JobKind, JobStatus, WriteOp)
from hybridflow.llm import Answer, LLMClient, Turn, build_messages, cut_at_sentence
from hybridflow.metrics import Metrics
from hybridflow.service import owner_commands
from hybridflow.service.tenants import Tenants, TenantConfig
from hybridflow.store import Store

log = structlog.get_logger("hybridflow.replies")
MAX_BACKOFF = 300.0


def backoff(attempts: int, base: float = 5.0) -> float:
    """Seconds to wait before attempt ``attempts + 1``: 5, 10, 20, ... capped at five minutes."""
    return min(base * 2 ** max(attempts - 1, 0), MAX_BACKOFF)


def turns(history: Sequence[tuple[str, str]]) -> list[Turn]:
    """A chat's recent messages as the model sees them: the customer speaks as the user, everyone else (the
    owner, other API clients, the bot) as the assistant."""
    return [Turn("user" if author == Author.CUSTOMER else "assistant", text) for author, text in history]


def shape(tenant: TenantConfig, answer: str) -> str:
    """The model's answer as the tenant sends it: cut at a sentence when it is longer than its limit."""
    return cut_at_sentence(answer, tenant.max_reply_chars) if tenant.max_reply_chars else answer


def system_prompt(tenant: TenantConfig, now: datetime) -> str:
    """The tenant's prompt; with business hours, followed by them and the local clock ("now: Tuesday 14:05, open
    until 18:00"), so the model's answers about opening times are right."""
    if tenant.schedule is None:
        return tenant.prompt
    return f"{tenant.prompt.rstrip()}\n\n{tenant.schedule.brief(now, tenant.locale)}"


async def compose(llm: LLMClient, tenant: TenantConfig, history: Sequence[tuple[str, str]], now: datetime) -> Answer:
    """The reply the tenant's model writes at ``now`` to a chat's history, as the tenant sends it, with the
    model's token counts; raises LLMError."""
    answer = await llm.chat(model=tenant.model, messages=build_messages(system_prompt(tenant, now), turns(history)))
    return dataclasses.replace(answer, text=shape(tenant, answer.text))


class Replies:
    """Produces and delivers replies; several workers (and processes) may run this at once."""

    def __init__(self, store: Store, tenants: Tenants, evolution: EvolutionClient, llm: LLMClient, *,
                 clock: Callable[[], datetime], worker_id: str, history_limit: int, lease: float,
                 send_timeout: float, max_attempts: int, submit: Callable[[WriteOp[Any]], Awaitable[Any]],
                 metrics: Metrics | None = None) -> None:
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
        """Atomically take up to ``limit`` due jobs, with their chat's state and history."""
        return await self.submit(functools.partial(
            jobs.claim, now=self.clock(), worker_id=self.worker_id, lease=self.lease, limit=limit,
            history_limit=self.history_limit))

    async def release(self, claimed: list[Job]) -> None:
        """Hand jobs claimed but not started (a stopping worker's) back to the queue."""
        await self.submit(functools.partial(jobs.release, job_ids=[j.id for j in claimed], now=self.clock()))
        log.info("reply.released", jobs=[j.id for j in claimed])

    async def recover_stale(self) -> list[int]:
        """Take back jobs of workers that died: before sending they are queued again; mid-send they become
        ``sent`` if the echo came back, else ``unknown`` (never resent)."""
        unknown = await self.submit(functools.partial(jobs.recover_stale, now=self.clock()))
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
        text, answer = job.reply_text, None
        if text is None:
            if job.kind == JobKind.REPLY and tenant.daily_tokens:
                spent = await self._over_budget(tenant)
                if spent is not None:
                    return await self._finish(job, SKIPPED_BUDGET, bound, error=spent)
            if tenant.send_presence:
                self._side_task(self._presence(tenant, job, bound))
            try:
                answer = await compose(self.llm, tenant, job.history, self.clock())
            except LLMError as exc:
                return await self._failed_attempt(job, exc, bound, status_from=RUNNING)
            text = answer.text
            self.metrics.tokens(tenant.instance, answer.tokens)
        outcome = await self._attempt(job, text, answer)
        if outcome == SKIPPED_PAUSED:
            bound.info("reply.skipped_paused", reason="the chat was paused while the model was answering")
        elif outcome == CANCELLED:
            bound.info("reply.cancelled", reason="the chat was forgotten while the model was answering")
        if outcome != SENDING:
            self.metrics.reply(outcome)
            return outcome
        return await self._send(tenant, job, text, bound)

    def _side_task(self, coro: Any) -> None:
        """Fire-and-forget niceties (typing, read receipts), kept referenced until done."""
        task = asyncio.create_task(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _over_budget(self, tenant: TenantConfig) -> str | None:
        """Why no reply may be generated now because the tenant's daily tokens are spent; None while some are left."""
        now = self.clock()
        since = tenant.day_start(now)
        async with self.store.read() as conn:
            used, _unknown = await conn.run_sync(jobs.tokens_since, tenant.id, since)
        if tenant.daily_tokens is None or used < tenant.daily_tokens:
            return None
        return (f"the daily token budget is used up ({used} of {tenant.daily_tokens} tokens since "
                f"{since.astimezone(tenant.zone):%Y-%m-%d %H:%M %Z}); replies start again at local midnight")

    async def _attempt(self, job: Job, text: str, answer: Answer | None = None) -> JobStatus:
        """The last-moment pause check and the record of the attempt, in one transaction: ``sending`` (go ahead),
        ``skipped_paused`` or ``cancelled`` (the chat was forgotten)."""
        outcome = await self.submit(functools.partial(
            jobs.record_attempt, job=job, worker_id=self.worker_id, text=text, now=self.clock(),
            send_lease=self.send_lease, generated=answer is not None,
            tokens=answer.tokens if answer is not None else None))
        if outcome == RUNNING:
            raise _LostLease(job.id)
        return outcome

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
            return await conn.run_sync(jobs.echo_seen, job.id)

    async def _mark_sent(self, job: Job, text: str, message_id: str | None, bound: Any) -> str:
        now = self.clock()
        mid = await self.submit(functools.partial(jobs.mark_sent, job=job, text=text, message_id=message_id, now=now))
        latency_ms = (now - job.received_at).total_seconds() * 1000
        self.metrics.reply(SENT, latency_ms / 1000)
        bound.info("reply.sent", sent_message_id=mid, latency_ms=round(latency_ms, 1), text_length=len(text))
        return SENT

    async def _failed_attempt(self, job: Job, exc: LLMError | SendError, bound: Any, *,
                              status_from: JobStatus) -> str:
        if exc.transient and job.attempts < self.max_attempts:
            delay = backoff(job.attempts)
            now = self.clock()
            await self.submit(functools.partial(jobs.retry_later, job_id=job.id, from_status=status_from,
                                                due_at=now + timedelta(seconds=delay), error=exc.message, now=now))
            bound.warning("reply.retry", error=exc.message, retry_in_s=delay, kind=type(exc).__name__)
            self.metrics.reply(RETRY)
            return RETRY
        return await self._finish(job, FAILED, bound, error=exc.message, status_from=status_from)

    async def _finish(self, job: Job, status: JobStatus, bound: Any, *, error: str,
                      status_from: JobStatus = RUNNING) -> str:
        await self.submit(functools.partial(jobs.finish, job_id=job.id, from_status=status_from, status=status,
                                            error=error, now=self.clock()))
        (bound.error if status == FAILED else bound.info)(f"reply.{status}", error=error, kind=job.kind)
        self.metrics.reply(status)
        if job.kind == JobKind.REPLY and status in (FAILED, SKIPPED_BUDGET):
            await self._notify_owner(job, status, error)
        return status

    async def _notify_owner(self, job: Job, status: JobStatus, error: str) -> None:
        """Tell the owner once: of each reply that failed for good, and of the first reply of the day the budget
        stopped."""
        tenant = await self.tenants.get_by_id(job.tenant_id)
        if tenant.notify_chat is None:
            return
        now = self.clock()
        key = (f"failed:{job.id}" if status == FAILED
               else f"budget:{now.astimezone(tenant.zone).date().isoformat()}")
        text = owner_commands.problem(tenant, status, job.chat_id, error)
        await self.submit(functools.partial(jobs.enqueue_notification, tenant_id=tenant.id, chat_id=tenant.notify_chat,
                                            key=key, message_id=job.trigger_message_id, text=text, now=now))

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
