"""Background work inside ``serve``: the reply worker, the periodic sweep, stale-job recovery, retention, WAL
checkpoints.
It calls the service and the job queue's functions; it writes no SQL itself.

No loop here ever dies of an error: a database outage is logged and retried after a short pause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from hybridflow.jobs import Job
from hybridflow.service import Service

log = structlog.get_logger("hybridflow.worker")


class ReplyWorker:
    """Claims due reply jobs and runs up to ``concurrency`` of them at once."""

    def __init__(self, service: Service, *, concurrency: int = 8, poll_interval: float = 0.5) -> None:
        self.service = service
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self._running: dict[asyncio.Task[str], Job] = {}
        self._stopping = False
        self._ride_next = False  # the last jobs came with a batch: the next claim rides too

    async def run(self) -> None:
        await _guarded(self.service.replies.recover_stale, "recover")
        while not self._stopping:
            free = self.concurrency - len(self._running)
            jobs = await _guarded(lambda: self._claim(free), "claim") if free > 0 else None
            if jobs and self._stopping:  # stop() came while claiming: hand these back, start nothing
                await self._release(jobs)
                break
            for job in jobs or []:
                task = asyncio.create_task(self.service.replies.run(job), name=f"reply-{job.id}")
                self._running[task] = job
                task.add_done_callback(self._done)
            if jobs is None:
                await self._wait()

    async def _claim(self, free: int) -> list[Job] | None:
        """Due jobs, claimed now or with the batches the writer commits within ``poll_interval`` (a webhook that
        queues a reply then gets it claimed in its own transaction, with the chat's history). [] to claim again at
        once; None to wait for a wake-up first."""
        replies, wakeup = self.service.replies, self.service.reply_wakeup
        if not self._ride_next:
            jobs = await replies.claim(free)
            if jobs:
                return jobs
        self._ride_next = False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.poll_interval
        wakeup.clear()  # what it announced is due now: the claim just made took it
        while not self._stopping and (left := deadline - loop.time()) > 0:
            ridden = await replies.claim_with_next_batch(free, timeout=left, wakeup=wakeup)
            if ridden is None:  # claims cannot ride (no writer, or the model server is down)
                return None
            if ridden:
                self._ride_next = True
                return ridden
            if wakeup.is_set():  # a slot freed, or a job queued by a batch the claim did not ride: claim now
                return []
        return []

    def _done(self, task: asyncio.Task[str]) -> None:
        self._running.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("reply.crashed", error=repr(task.exception())[:500])
        self.service.reply_wakeup.set()  # a free slot: look for more work

    async def _wait(self) -> None:
        wakeup = self.service.reply_wakeup
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wakeup.wait(), self.poll_interval)
        wakeup.clear()

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; let running replies finish for ``grace`` seconds, then hand the rest back to the queue."""
        self._stopping = True
        self.service.reply_wakeup.set()
        if not self._running:
            return
        _, pending = await asyncio.wait(list(self._running), timeout=grace)
        jobs = [self._running[t] for t in pending]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await self._release(jobs)

    async def _release(self, jobs: list[Job]) -> None:
        """Jobs still generating go back to the queue; jobs already sending keep their record (see jobs)."""
        if jobs:
            with contextlib.suppress(Exception):
                await self.service.replies.release(jobs)


async def _guarded(call: Callable[[], Awaitable], what: str):  # type: ignore[no-untyped-def]
    try:
        return await call()
    except Exception as exc:  # noqa: BLE001 - a background loop must outlive outages
        log.warning("worker.error", during=what, error=repr(exc)[:300])
        await asyncio.sleep(1.0)
        return None


# How often `serve` enforces retention. A pass that finds nothing costs a few index lookups per tenant.
RETENTION_INTERVAL = 600.0


async def retention(service: Service, *, interval: float = RETENTION_INTERVAL) -> None:
    """Enforce retention at start and then every ``interval`` (in batches, beside the webhooks: see
    ``service.retention``)."""
    while True:
        await _guarded(service.enforce_retention, "retention")
        await asyncio.sleep(interval)


async def maintenance(service: Service, *, sweep_interval: float, checkpoint_interval: float = 1.0,
                      retention_interval: float = RETENTION_INTERVAL) -> None:
    """Periodic sweep and stale-job recovery, retention (a task of its own, so that a long first pass never
    delays a sweep), plus WAL checkpoints on SQLite."""
    retaining = asyncio.create_task(retention(service, interval=retention_interval), name="hybridflow-retention")
    try:
        await _sweep_and_checkpoint(service, sweep_interval=sweep_interval, checkpoint_interval=checkpoint_interval)
    finally:
        retaining.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await retaining


async def _sweep_and_checkpoint(service: Service, *, sweep_interval: float, checkpoint_interval: float) -> None:
    loop = asyncio.get_running_loop()
    next_sweep = loop.time()
    while True:
        if loop.time() >= next_sweep:
            await _guarded(service.sweep, "sweep")
            await _guarded(service.replies.recover_stale, "recover")
            next_sweep = loop.time() + sweep_interval
        if service.store.background_checkpoints:
            await _guarded(service.store.checkpoint, "checkpoint")
        await asyncio.sleep(checkpoint_interval if service.store.background_checkpoints else sweep_interval)
