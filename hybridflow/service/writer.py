"""One writer task per process: the webhooks that arrive together are committed in one transaction.

Each request awaits its batch's commit, so an answer of 200 means the message is durable. A batch that fails
for a reason other than an outage is retried one item at a time, so one bad item never fails its neighbours.

A *rider* is an item that waits for the next batch instead of starting one: the idle reply worker's claim rides
with the next webhooks, so a reply they queue is claimed in the transaction that stored them (no second
transaction, no wake-up hop before the model is asked).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog
from sqlalchemy.engine import Connection

from hybridflow.errors import HybridFlowError, Unavailable
from hybridflow.store import Store

T = TypeVar("T")
R = TypeVar("R")
log = structlog.get_logger("hybridflow.writer")

# Synchronous Core code: the store runs it for a whole batch in one transaction (on SQLite, on the event loop).
Process = Callable[[Connection, list[T]], list[R]]
GATHER_PASSES = 8  # the most passes of the event loop a forming batch waits for more items


class StoreFailed(HybridFlowError):
    """An item the database refused for a reason a retry will not cure."""

    status = 422
    code = "store_failed"


class Rider(Generic[T, R]):
    """An item made when the next batch forms (``make``), answered like any other through ``future``."""

    __slots__ = ("make", "future")

    def __init__(self, make: Callable[[], T], future: asyncio.Future[R]) -> None:
        self.make = make
        self.future = future


class BatchWriter(Generic[T, R]):
    """Queue items, process them in batches of up to ``max_batch`` in one transaction each."""

    def __init__(self, store: Store, process: Process, *, max_batch: int = 256) -> None:
        self.store = store
        self.process = process
        self.max_batch = max_batch
        self._queue: asyncio.Queue[tuple[T, asyncio.Future[R]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._riders: list[Rider[T, R]] = []

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hybridflow-writer")

    async def stop(self) -> None:
        """Finish what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.join()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for rider in self._riders:  # no batch will form any more
            rider.future.cancel()
        self._riders = []

    async def submit(self, item: T) -> R:
        """Queue one item and wait until its batch is committed."""
        if self._task is None:
            raise RuntimeError("the writer is not started")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put((item, future))
        return await future

    def ride(self, make: Callable[[], T]) -> Rider[T, R]:
        """Add ``make()`` to the next batch that forms (none is started for it); its result comes in
        ``rider.future``. ``withdraw`` takes it back until a batch has taken it."""
        if self._task is None:
            raise RuntimeError("the writer is not started")
        rider: Rider[T, R] = Rider(make, asyncio.get_running_loop().create_future())
        self._riders.append(rider)
        return rider

    @property
    def riding(self) -> int:
        """How many riders wait for the next batch."""
        return len(self._riders)

    def withdraw(self, rider: Rider[T, R]) -> bool:
        """Take back a rider no batch has taken yet (True); False once one has (its result will come)."""
        if rider in self._riders:
            self._riders.remove(rider)
            return True
        return False

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            # Let the webhooks already read reach the queue first (each pass runs what the loop has ready), for as
            # long as that adds to it: on SQLite the batch's statements then hold the loop, which reads no more.
            for _ in range(GATHER_PASSES):
                waiting = self._queue.qsize()
                await asyncio.sleep(0)
                if self._queue.qsize() == waiting:
                    break
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            queued = len(batch)
            riders, self._riders = self._riders, []
            for rider in riders:  # after the batch's own items: they see what those wrote
                try:
                    batch.append((rider.make(), rider.future))
                except Exception as exc:  # noqa: BLE001 - answered to its waiter, never the writer's end
                    _fail(rider.future, exc)
            try:
                await self._commit(batch)
            finally:
                for _ in range(queued):
                    self._queue.task_done()

    async def _commit(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        items = [item for item, _ in batch]
        try:
            results = await self.store.batch(lambda conn: self.process(conn, items), alone=len(items) == 1)
        except Exception as exc:  # noqa: BLE001 - every failure is answered to its waiter
            if isinstance(exc, Unavailable) or len(batch) == 1:
                for _, future in batch:
                    _fail(future, exc)
                return
            log.warning("writer.batch_failed", size=len(batch), error=repr(exc)[:300])
            for pair in batch:
                await self._commit([pair])
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(future: asyncio.Future, exc: Exception) -> None:
    if future.done():
        return
    if not isinstance(exc, HybridFlowError):
        log.error("writer.item_failed", error=repr(exc)[:500])
        exc = StoreFailed(f"the message could not be stored: {type(exc).__name__}")
    future.set_exception(exc)
