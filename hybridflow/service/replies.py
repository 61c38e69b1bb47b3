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
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import structlog

from hybridflow import jobs
from hybridflow.errors import HybridFlowError, LLMError, SendError
from hybridflow.evolution import EvolutionClient
from hybridflow.events import Author
from hybridflow.hooks import HookClient
from hybridflow.config import format_duration
from hybridflow.jobs import (CANCELLED, EXPIRED, FAILED, RETRY, RUNNING, SENDING, SENT, SKIPPED_BUDGET,
                             SKIPPED_PAUSED, Job, JobKind, JobStatus, WriteOp)
from hybridflow.llm import Answer, LLMClient, Turn, build_messages, cut_at_sentence
from hybridflow.metrics import Metrics
from hybridflow.service import handoffs, notifications
from hybridflow.service.ingest import RidingClaim
from hybridflow.service.tenants import Tenants, TenantConfig
from hybridflow.service.writer import BatchWriter
from hybridflow.store import Store

log = structlog.get_logger("hybridflow.replies")
MAX_BACKOFF = 300.0
MODEL_PROBE_FIRST, MODEL_PROBE_MAX = 2.0, 60.0  # while the model server is down: probe it after 2 s, 4 s, ... 1 min
MAX_PARTS = 5  # a paced reply has at most this many messages
MIN_TYPING_MS, MAX_TYPING_MS = 1_000, 20_000  # "typing…" before each part, as Evolution's own bots bound it
_BLANK_LINE = re.compile(r"\n[ \t]*\n")


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


def split_parts(text: str, limit: int = MAX_PARTS) -> tuple[str, ...] | None:
    """A paced reply's parts: the text split at blank lines, at most ``limit`` (the rest joins the last one);
    None when it is one part."""
    parts = [part.strip() for part in _BLANK_LINE.split(text) if part.strip()]
    if len(parts) > limit:
        parts[limit - 1:] = ["\n\n".join(parts[limit - 1:])]
    return tuple(parts) if len(parts) > 1 else None


def typing_ms(part: str, time_per_char: int) -> int:
    """How long "typing…" shows before a part: ``time_per_char`` ms per character, from 1 to 20 s."""
    return max(MIN_TYPING_MS, min(len(part) * time_per_char, MAX_TYPING_MS))


async def compose(llm: LLMClient, tenant: TenantConfig, history: Sequence[tuple[str, str]], now: datetime) -> Answer:
    """The reply the tenant's model writes at ``now`` to a chat's history, as the tenant sends it, with the
    model's token counts and, with ``--handoff-tool``, its call of the handoff tool; raises LLMError."""
    answer = await llm.chat(model=tenant.model, messages=build_messages(system_prompt(tenant, now), turns(history)),
                            tools=[handoffs.TOOL] if tenant.handoff_tool else None)
    if answer.call(handoffs.TOOL_NAME) is None and not answer.text:  # another tool called, and nothing said
        raise LLMError(f'model "{tenant.model}" called a tool it does not have and returned no answer',
                       transient=False)
    return dataclasses.replace(answer, text=shape(tenant, answer.text))


class Replies:
    """Produces and delivers replies; several workers (and processes) may run this at once."""

    def __init__(self, store: Store, tenants: Tenants, evolution: EvolutionClient, llm: LLMClient, *,
                 clock: Callable[[], datetime], worker_id: str, history_limit: int, lease: float,
                 send_timeout: float, max_attempts: int, submit: Callable[[WriteOp[Any]], Awaitable[Any]],
                 metrics: Metrics | None = None, writer: BatchWriter[Any, Any] | None = None) -> None:
        """``submit``: the batching writer's; ``writer``: that writer, when claims may ride with its batches."""
        self.store, self.tenants, self.evolution, self.llm = store, tenants, evolution, llm
        self.writer = writer
        self.metrics = metrics or Metrics()
        self.submit = submit
        self._side_tasks: set[asyncio.Task[None]] = set()
        self.clock = clock
        self.worker_id = worker_id
        self.history_limit = history_limit
        self.lease = lease
        self.send_lease = send_timeout * 2 + 30
        self.max_attempts = max_attempts
        self.hooks = HookClient(timeout=send_timeout)
        # The model server refusing connections: no job that needs it is claimed until a probe finds it back.
        self._model_down: str | None = None  # the error it failed with
        self._model_probe_at = 0.0  # monotonic time of the next probe
        self._model_probe_every = MODEL_PROBE_FIRST

    async def aclose(self) -> None:
        """Close the notification POSTs' connections."""
        await self.hooks.aclose()

    async def claim(self, limit: int) -> list[Job]:
        """Atomically take up to ``limit`` due jobs, with their chat's state and history. While the model server
        is down, only jobs that do not need it (texts written already: notices, retried sends)."""
        return await self.submit(functools.partial(
            jobs.claim, now=self.clock(), worker_id=self.worker_id, lease=self.lease, limit=limit,
            history_limit=self.history_limit, model_up=await self._model_up()))

    async def claim_with_next_batch(self, limit: int, *, timeout: float, wakeup: asyncio.Event) -> list[Job] | None:
        """Claim up to ``limit`` due jobs in the next batch the writer commits, after its webhooks (a reply they
        queue is claimed in their own transaction, with the chat's history). [] when that batch found nothing
        due, or no batch took the claim within ``timeout`` or before ``wakeup`` was set; None when claims cannot
        ride (no writer, or the model server is down: its probe comes with the caller's own claim)."""
        writer = self.writer
        if writer is None or self._model_down is not None:
            return None
        history_limit, lease, worker_id, clock = self.history_limit, self.lease, self.worker_id, self.clock
        rider = writer.ride(lambda: RidingClaim(functools.partial(
            _claim_now, clock=clock, worker_id=worker_id, lease=lease, limit=limit, history_limit=history_limit)))
        waiter = asyncio.ensure_future(wakeup.wait())
        try:
            await asyncio.wait([rider.future, waiter], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not rider.future.done() and writer.withdraw(rider):
            return []
        return await rider.future  # a batch took it: its answer comes with that batch's commit

    @property
    def model_down(self) -> str | None:
        """Why the model server is taken as down (None while it answers)."""
        return self._model_down

    async def _model_up(self) -> bool:
        """Whether jobs that need the model may be claimed: yes unless it is down and the next probe (a cheap
        call, backing off to once a minute) does not find it back."""
        if self._model_down is None:
            return True
        if time.monotonic() < self._model_probe_at:
            return False
        if await self.llm.reachable():
            log.info("llm.up", after_error=self._model_down)
            self._model_down, self._model_probe_every = None, MODEL_PROBE_FIRST
            return True
        self._model_probe_every = min(self._model_probe_every * 2, MODEL_PROBE_MAX)
        self._model_probe_at = time.monotonic() + self._model_probe_every
        return False

    async def _hand_back(self, job: Job, error: str, bound: Any) -> str:
        """The model server refuses connections: the job waits for it, its attempt not counted, and no other job
        is sent to it until a probe finds it back (logged once per outage, not once per job)."""
        if self._model_down is None:
            bound.warning("llm.down", error=error, probe_in_s=self._model_probe_every)
            self._model_down = error
            self._model_probe_at = time.monotonic() + self._model_probe_every
        now = self.clock()
        await self.submit(functools.partial(jobs.hand_back, job_id=job.id, worker_id=self.worker_id, due_at=now,
                                            now=now, error=error))
        self.metrics.reply(RETRY)
        return RETRY

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
        if job.kind == JobKind.NOTIFY_URL:  # a POST to the tenant's URL: never a WhatsApp message
            return await self._post(tenant, job, bound)
        if not tenant.api_key:
            reason = tenant.secret_error or "the tenant has no Evolution API key (hybridflow tenants update --api-key)"
            return await self._finish(job, FAILED, bound, error=reason)
        if job.reply_text is not None and job.parts is None and await self._echo_seen(job):
            # A retry after a send that failed or timed out, but whose echo came back meanwhile: it was delivered.
            return await self._mark_sent(job, job.reply_text, None, bound)
        late = self._too_late(tenant, job)
        if late is not None:
            return await self._finish(job, EXPIRED, bound, error=late)
        if tenant.mark_read and job.kind == JobKind.REPLY and job.parts_sent == 0:
            self._side_task(self._mark_read(tenant, job, bound))
        text, answer, parts = job.reply_text, None, job.parts
        if text is None:
            if job.kind == JobKind.REPLY and tenant.daily_tokens:
                spent = await self._over_budget(tenant)
                if spent is not None:
                    return await self._finish(job, SKIPPED_BUDGET, bound, error=spent)
            if self._model_down is not None:  # found down by another job since this one was claimed
                return await self._hand_back(job, self._model_down, bound)
            if tenant.send_presence:
                self._side_task(self._presence(tenant, job, bound))
            try:
                answer = await compose(self.llm, tenant, job.history, self.clock())
            except LLMError as exc:
                if exc.unreachable:
                    return await self._hand_back(job, exc.message, bound)
                return await self._failed_attempt(job, exc, bound, status_from=RUNNING)
            self.metrics.tokens(tenant.instance, answer.tokens)
            call = answer.call(handoffs.TOOL_NAME)
            if call is not None:
                return await self._hand_off(tenant, job, handoffs.reason_of(call.arguments), answer, bound)
            text = answer.text
            parts = split_parts(text) if tenant.split_replies and job.kind == JobKind.REPLY else None
        if parts is not None:
            return await self._send_parts(tenant, job, text, parts, answer, bound)
        outcome = await self._attempt(job, text, answer)
        if outcome == SKIPPED_PAUSED:
            bound.info("reply.skipped_paused", reason="the chat was paused while the model was answering")
        elif outcome == CANCELLED:
            bound.info("reply.cancelled", reason="the chat was forgotten while the model was answering")
        if outcome != SENDING:
            self.metrics.reply(outcome)
            return outcome
        return await self._send(tenant, job, text, bound)

    def _too_late(self, tenant: TenantConfig, job: Job) -> str | None:
        """Why a reply held up by failures is not sent any more: the customer wrote longer ago than the tenant's
        ``--max-reply-delay``. A first attempt always goes (it waited on purpose: debounce, business hours), and so
        does the rest of a paced reply whose first parts went out (the customer has its beginning)."""
        if (job.kind != JobKind.REPLY or not job.held_up or job.parts_sent or job.asked_at is None
                or tenant.max_reply_delay is None):
            return None
        waited = (self.clock() - job.asked_at).total_seconds()
        if waited <= tenant.max_reply_delay:
            return None
        return (f"the customer wrote {waited / 60:.0f} min ago, more than --max-reply-delay "
                f"{format_duration(tenant.max_reply_delay)}: not sent this late (the model or Evolution was failing)")

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

    async def _attempt(self, job: Job, text: str, answer: Answer | None = None,
                       parts: tuple[str, ...] | None = None) -> JobStatus:
        """The last-moment pause check and the record of the attempt, in one transaction: ``sending`` (go ahead),
        ``skipped_paused`` or ``cancelled`` (the chat was forgotten)."""
        outcome = await self.submit(functools.partial(
            jobs.record_attempt, job=job, worker_id=self.worker_id, text=text, now=self.clock(),
            send_lease=self.send_lease, generated=answer is not None,
            tokens=answer.tokens if answer is not None else None, parts=parts))
        if outcome == RUNNING:
            raise _LostLease(job.id)
        return outcome

    async def _send_parts(self, tenant: TenantConfig, job: Job, text: str, parts: tuple[str, ...],
                          answer: Answer | None, bound: Any) -> str:
        """A paced reply: before each part still to send, "typing…" for its length, then the pause re-check and
        the record of that part's attempt, then its sendText. A pause between parts ends the job: the parts after
        it are never sent. A failed part is retried later from that part (the parts before it stay sent)."""
        job = dataclasses.replace(job, reply_text=text, parts=parts)
        for index in range(job.parts_sent, len(parts)):
            part, last = parts[index], index == len(parts) - 1
            pbound = bound.bind(part=index + 1, parts=len(parts))
            delivered = index == job.parts_sent and job.attempts > 1 and await self._echo_seen(job)
            message_id = None
            if not delivered:  # (a retried part whose echo came back meanwhile was delivered: not sent again)
                await self._typing(tenant, job, typing_ms(part, tenant.time_per_char), pbound)
                outcome = await self._attempt(job, text, answer if index == 0 else None, parts)
                if outcome != SENDING:
                    pbound.info(f"reply.{outcome}", reason="the chat was paused before this part"
                                if outcome == SKIPPED_PAUSED else "the chat was forgotten")
                    self.metrics.reply(outcome)
                    return outcome
                try:
                    message_id = await self._send_once(tenant, job, part)
                except SendError as exc:
                    return await self._failed_attempt(job, exc, pbound, status_from=SENDING)
            if last:
                return await self._mark_sent(job, part, message_id, pbound)
            kept = await self.submit(functools.partial(
                jobs.mark_part_sent, job=job, text=part, message_id=message_id, worker_id=self.worker_id,
                now=self.clock(), lease=self.lease))
            if kept is False:
                pbound.info("reply.parts_stopped", reason="the job was taken over or the chat forgotten")
                return CANCELLED
            pbound.info("reply.part_sent", sent_message_id=kept, text_length=len(part))
            job = dataclasses.replace(job, parts_sent=index + 1)
        return SENT

    async def _typing(self, tenant: TenantConfig, job: Job, delay_ms: int, bound: Any) -> None:
        """Show "typing…" for ``delay_ms``: Evolution holds the sendPresence call that long; when the call fails,
        the wait is kept anyway, so the pace does not change."""
        started = time.monotonic()
        if not await self._presence(tenant, job, bound, delay_ms=delay_ms):
            await asyncio.sleep(max(0.0, delay_ms / 1000 - (time.monotonic() - started)))

    async def _hand_off(self, tenant: TenantConfig, job: Job, reason: str, answer: Answer, bound: Any) -> str:
        """The model called handoff_to_human: the chat goes to a person instead of getting a reply."""
        outcome = await self.submit(functools.partial(
            handoffs.by_model, tenant=tenant, job=job, reason=reason, worker_id=self.worker_id, now=self.clock(),
            tokens=answer.tokens))
        if outcome == RUNNING:
            raise _LostLease(job.id)
        self.metrics.reply(outcome)
        bound.info(f"reply.{outcome}", reason=reason)
        return outcome

    async def _post(self, tenant: TenantConfig, job: Job, bound: Any) -> str:
        """A notification job for the tenant's --notify-url: the signed POST of its JSON, exactly once."""
        if not tenant.notify_url or not tenant.notify_secret:
            return await self._finish(job, FAILED, bound, error=tenant.secret_error or
                                      "the tenant has no --notify-url and --notify-secret any more")
        text = job.reply_text or ""
        outcome = await self._attempt(job, text)
        if outcome != SENDING:
            self.metrics.reply(outcome)
            return outcome
        try:
            await self.hooks.post(tenant.notify_url, text, secret=tenant.notify_secret,
                                  delivery=f"{tenant.instance}/{job.trigger_message_id}",
                                  event=notifications.event_of(text))
        except SendError as exc:
            return await self._failed_attempt(job, exc, bound, status_from=SENDING)
        return await self._mark_sent(job, text, None, bound)

    async def _send(self, tenant: TenantConfig, job: Job, text: str, bound: Any) -> str:
        try:
            message_id = await self._send_once(tenant, job, text)
        except SendError as exc:
            return await self._failed_attempt(job, exc, bound, status_from=SENDING)
        return await self._mark_sent(job, text, message_id, bound)

    async def _send_once(self, tenant: TenantConfig, job: Job, text: str) -> str | None:
        """One sendText of the text the job is sending (its whole text, or a part); the WhatsApp id Evolution
        gave, None when a send that failed transiently was delivered all the same (its echo came back). Raises
        the SendError of a send that was not delivered."""
        try:
            result = await self.evolution.send_text(
                base_url=tenant.evolution_url, instance=tenant.instance, api_key=tenant.api_key or "",
                number=job.chat_id, text=text, api_version=tenant.api_version)
        except SendError as exc:
            if exc.transient and await self._echo_seen(job):
                return None
            raise
        return result.message_id

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
        moved = await self.submit(functools.partial(jobs.finish, job_id=job.id, from_status=status_from,
                                                    status=status, error=error, now=self.clock()))
        (bound.error if status == FAILED else bound.info)(f"reply.{status}", error=error, kind=job.kind)
        self.metrics.reply(status)
        if moved and job.kind == JobKind.REPLY and status in (FAILED, SKIPPED_BUDGET, EXPIRED):
            await self._notify_owner(job, status, error)
        return status

    async def _notify_owner(self, job: Job, status: JobStatus, error: str) -> None:
        """Tell the owner once: of each reply that failed for good or expired (the customer is still waiting), and
        of the first reply of the day the budget stopped."""
        tenant = await self.tenants.get_by_id(job.tenant_id)
        if tenant.notify_chat is None and tenant.notify_url is None:
            return
        now = self.clock()
        event, key = ((notifications.BUDGET, f"budget:{now.astimezone(tenant.zone).date().isoformat()}")
                      if status == SKIPPED_BUDGET else (notifications.FAILED, f"failed:{job.id}"))
        await self.submit(functools.partial(notifications.queue_for_job, tenant=tenant, job=job, event=event, key=key,
                                            now=now, detail=error))

    async def _presence(self, tenant: TenantConfig, job: Job, bound: Any, *, delay_ms: int | None = None) -> bool:
        """Show "typing…" (for ``delay_ms``, else Evolution's client default); whether Evolution took it."""
        try:
            await self.evolution.send_presence(base_url=tenant.evolution_url, instance=tenant.instance,
                                               api_key=tenant.api_key or "", number=job.chat_id,
                                               api_version=tenant.api_version,
                                               **({"delay_ms": delay_ms} if delay_ms is not None else {}))
        except SendError as exc:
            bound.info("reply.presence_failed", error=exc.message)
            return False
        return True

    async def _mark_read(self, tenant: TenantConfig, job: Job, bound: Any) -> None:
        try:
            await self.evolution.mark_read(base_url=tenant.evolution_url, instance=tenant.instance,
                                           api_key=tenant.api_key or "", remote_jid=job.chat_id,
                                           message_id=job.last_message_id or job.trigger_message_id,
                                           api_version=tenant.api_version)
        except SendError as exc:
            bound.info("reply.mark_read_failed", error=exc.message)


def _claim_now(conn: Any, *, clock: Callable[[], datetime], worker_id: str, lease: float, limit: int,
               history_limit: int) -> list[Job]:
    """``jobs.claim`` at the moment the batch runs (after its webhooks: a reply they queued is due)."""
    return jobs.claim(conn, now=clock(), worker_id=worker_id, lease=lease, limit=limit, history_limit=history_limit)


class _LostLease(HybridFlowError):
    """Another worker took this job over (our lease ran out); we must not send it."""

    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} was taken over by another worker")
