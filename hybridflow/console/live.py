"""Live pages: server-sent events from ``serve``. One feed per process asks the database's change cursor
(``service.changes``) every ``interval`` while any browser listens, and tells every open stream what changed, so
changes of other processes (a CLI command on the same SQLite file, another ``serve`` on PostgreSQL) arrive like its
own. A browser that reconnects sends the last cursor it saw (``Last-Event-ID``) and is told what it missed.
At a graceful stop the streams end, so that SIGTERM still stops ``serve`` within its grace time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from hybridflow.service import Service
from hybridflow.service.changes import Changes, Cursor

log = structlog.get_logger("hybridflow.console")
KEEPALIVE = 15.0  # a comment line this often keeps proxies from closing an idle stream


class ChangeFeed:
    """Polls the change cursor while someone listens; fans each change out to the listeners' queues."""

    def __init__(self, service: Service, *, interval: float = 1.0) -> None:
        self.service = service
        self.interval = interval
        self._listeners: set[asyncio.Queue[Changes | None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()
        self.stopping = asyncio.Event()

    @contextlib.asynccontextmanager
    async def listen(self) -> AsyncIterator[asyncio.Queue[Changes | None]]:
        """A queue of the changes from now on (None: the feed is closing)."""
        queue: asyncio.Queue[Changes | None] = asyncio.Queue(maxsize=100)
        async with self._starting:
            self._listeners.add(queue)
            if self._task is None or self._task.done():
                # The feed's first cursor is read before the listener catches up: what happens after that
                # catch-up's cursor is after this one, so the feed tells of it.
                start = await self.service.cursor()
                self._task = asyncio.create_task(self._poll(start), name="hybridflow-console-feed")
        try:
            yield queue
        finally:
            self._listeners.discard(queue)

    async def _poll(self, cursor: Cursor) -> None:
        while self._listeners and not self.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.interval)
            if self.stopping.is_set():
                return
            try:
                changes = await self.service.changes(cursor)
                cursor = changes.cursor
                if changes:
                    self._tell(changes)
            except Exception as exc:  # noqa: BLE001 - an outage: the streams stay open, the feed tries again
                log.warning("console.feed_error", error=repr(exc)[:300])

    def _tell(self, changes: Changes | None) -> None:
        for queue in list(self._listeners):
            item = changes
            if queue.full():  # a listener that does not keep up hears "anything may have changed" instead
                while not queue.empty():
                    queue.get_nowait()
                if item is not None:
                    item = Changes(item.cursor, None, True)
            queue.put_nowait(item)

    async def close(self) -> None:
        """End every stream and the polling (``on_shutdown``)."""
        self.stopping.set()
        self._tell(None)
        if self._task is not None:
            with contextlib.suppress(Exception):
                await self._task


def _event(changes: Changes) -> bytes:
    return f"id: {changes.cursor.token}\nevent: change\ndata: {json.dumps(changes.as_dict())}\n\n".encode()


async def stream(request: web.Request, feed: ChangeFeed) -> web.StreamResponse:
    """``text/event-stream`` of ``change`` events (their id is the cursor) until the browser leaves or serve
    stops; first what changed since the cursor the browser gives (``Last-Event-ID``, else ``?since=``)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store",
                                           "X-Accel-Buffering": "no"})
    since = request.headers.get("Last-Event-ID") or request.query.get("since")
    async with feed.listen() as queue:  # listening before catching up: nothing falls between the two
        missed = await feed.service.changes(since[:200]) if since else None
        await response.prepare(request)  # the browser is told it is connected once it has caught up
        with contextlib.suppress(ConnectionResetError):
            await response.write(b"retry: 2000\n\n" + (_event(missed) if missed else b""))
        with contextlib.suppress(ConnectionResetError):  # the browser left: the stream just ends
            await _relay(response, queue, feed)
    return response


async def _relay(response: web.StreamResponse, queue: asyncio.Queue[Changes | None], feed: ChangeFeed) -> None:
    while not feed.stopping.is_set():
        try:
            changes = await asyncio.wait_for(queue.get(), KEEPALIVE)
        except TimeoutError:
            await response.write(b": keepalive\n\n")
            continue
        if changes is None:
            return
        await response.write(_event(changes))


__all__ = ["ChangeFeed", "stream"]
