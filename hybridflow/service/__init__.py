"""The behaviour of HybridFlow. The web server and the CLI are thin shells over ``Service``.

``Service.open(settings)`` is the one composition root: it builds the store, the Evolution and Ollama clients
and the clock, and both ``serve`` and every command use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import socket
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import structlog

from hybridflow import events as ev
from hybridflow import commands, jobs, labels, pauses
from hybridflow.config import Settings
from hybridflow.crypto import SecretBox, keyed_reference
from hybridflow.errors import BadRequest, HybridFlowError, UnknownInstance, Unavailable
from hybridflow.evolution import EvolutionClient
from hybridflow.llm import LLMClient
from hybridflow.logs import Throttle
from hybridflow.labels import LABEL_EVENTS
from hybridflow.metrics import Metrics
from hybridflow.models import MESSAGES, SESSIONS, JobKind
from hybridflow.service import changes, dashboard
from hybridflow.service import label_pauses as label_service
from hybridflow.service import owner_commands
from hybridflow.service.auth import TRUSTED, Credentials, authenticate
from hybridflow.service.ingest import (COMMAND, IGNORED_EVENT, REPLY_QUEUED, Inbound, IngestResult, process_batch,
                                       store_batch)
from hybridflow.service.replies import Replies, compose
from hybridflow.service.retention import Forgotten, Retention, RetentionReport
from hybridflow.service.changes import Cursor
from hybridflow.service.chat_list import ChatFilter, ChatState, RowExtras
from hybridflow.service.dashboard import TenantDay
from hybridflow.service.sessions import Retried, Sessions, SessionDetail, SessionView
from hybridflow.service.tenants import SavedTenant, TenantChanges, TenantConfig, Tenants
from hybridflow.service.writer import BatchWriter
from hybridflow.statements import recent_texts
from hybridflow.store import Store
from hybridflow.validation import Webhook, validate

log = structlog.get_logger("hybridflow.service")
Clock = Callable[[], datetime]
CONNECTION_UPDATE = "connection.update"  # its data.wuid says which number the instance is
# A new key cannot decrypt what an old one stored: generating one is the wrong fix for a serve that cannot read.
SAME_KEY = ("restart `serve` with the same HYBRIDFLOW_SECRET_KEY that `tenants add` used "
            "(a newly generated key cannot decrypt the stored secrets)")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Service:
    """Ingest webhooks, keep sessions, produce replies; everything the shells expose."""

    def __init__(self, settings: Settings, store: Store, evolution: EvolutionClient, llm: LLMClient, *,
                 clock: Clock = utcnow, worker_id: str | None = None) -> None:
        self.settings = settings
        self.store = store
        self.evolution = evolution
        self.llm = llm
        self.clock = clock
        self.secrets = SecretBox(settings.secret_key)
        self.tenants = Tenants(store, settings, self.secrets)
        self.sessions = Sessions(store, clock)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = Metrics()
        self.writer: BatchWriter[Inbound | jobs.WriteOp[Any], Any] = BatchWriter(
            store, functools.partial(process_batch, clock=clock))
        self.replies = Replies(
            store, self.tenants, evolution, llm, clock=clock, worker_id=self.worker_id, metrics=self.metrics,
            history_limit=settings.history_limit, lease=settings.reply_lease,
            send_timeout=settings.evolution_timeout, max_attempts=settings.max_attempts,
            submit=self.writer.submit, writer=self.writer)
        self.retention = Retention(store, settings, self.writer.submit, clock)
        self.reply_wakeup = asyncio.Event()
        self.log_throttle = Throttle(60.0)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, evolution: EvolutionClient | None = None, llm: LLMClient | None = None,
                   clock: Clock = utcnow, serving: bool = False, worker_id: str | None = None,
                   create_schema: bool = True, create: bool = True) -> AsyncIterator[Service]:
        """Build the service with its database (schema created or migrated) and peer clients; close them after.

        ``create=False`` (commands that only read): a database that does not exist yet is not created; with
        ``create_schema`` (migrate what exists), ``DatabaseMissing`` then says which database was looked for.
        """
        store = Store(settings.database_url, background_checkpoints=serving, create=create,
                      synchronous=settings.sqlite_synchronous)
        evolution = evolution or EvolutionClient(timeout=settings.evolution_timeout)
        llm = llm or LLMClient(host=settings.ollama_host, timeout=settings.ollama_timeout)
        try:
            service = cls(settings, store, evolution, llm, clock=clock, worker_id=worker_id)  # checks the settings
            if serving:  # tenants are read with the writer's batches: cheaper than a read of their own
                service.tenants.reads_with = service.writer.submit
            if create_schema:
                if not create:
                    await store.require_schema()
                await store.create_schema()
            await service.writer.start()
            try:
                yield service
            finally:
                await service.writer.stop()
                await service.replies.aclose()
        finally:
            await evolution.aclose()
            await llm.aclose()
            await store.dispose()

    # -- webhooks ---------------------------------------------------------------------------------------------

    async def ingest(self, body: object, raw: str, credentials: Credentials = TRUSTED) -> IngestResult:
        """Handle one webhook body: store it, decide, answer the action. The one path for webhooks and replay:
        parse and validate (400), the tenant (404), authenticate (401), then the batching writer."""
        try:
            webhook = validate(body, raw)
        except BadRequest as exc:
            instance = body.get("instance") if isinstance(body, dict) else None
            if not credentials.trusted:  # replay reports its own errors line by line
                await self.note_rejected(exc, instance=instance if isinstance(instance, str) else None)
            raise
        try:
            tenant = await self.tenants.get(webhook.event.instance or "")
        except UnknownInstance as exc:
            if not credentials.trusted:
                await self.note_rejected(exc, instance=webhook.event.instance)
            raise
        try:
            authenticate(tenant, webhook.event, credentials)
        except Unavailable:
            self._unreadable_secrets(tenant)
            raise
        verified = not credentials.trusted and (tenant.has_webhook_secret or tenant.has_jwt_key)
        if webhook.event.event in LABEL_EVENTS:
            return await self._label(tenant, webhook)
        if webhook.event.event == CONNECTION_UPDATE and verified:
            await self._learn_owner(tenant, webhook.body.get("data"))
        if webhook.is_ignored:
            return self._ignored(tenant, webhook)
        item = Inbound(tenant, webhook.event, webhook.stored_raw(), commands=verified)
        result = await self.writer.submit(item)
        self._log(tenant, item.event, result)
        if result.action == COMMAND:
            await self._answer_owner(tenant, item.event, result)
        if result.action == REPLY_QUEUED:
            self.reply_wakeup.set()
        return result

    async def _answer_owner(self, tenant: TenantConfig, event: ev.Event, result: IngestResult) -> None:
        """Carry out the owner's command and queue the answer to their own chat (a ``notice``, sent once: its key is
        the command's message id, and a retried webhook of the command is a duplicate, carried out no more)."""
        command = commands.parse(event.text or "", tenant.command_word)
        answer = await owner_commands.carry_out(self, tenant, command)
        log.info("owner.command", tenant=tenant.instance, verb=command.verb, everyone=command.everyone,
                 problem=command.problem)
        await self.writer.submit(functools.partial(
            jobs.enqueue_notification, kind=JobKind.NOTICE, tenant_id=tenant.id,
            chat_id=tenant.owner_jid or result.chat_id or "",  # the owner's number, also for a command via the LID
            key=f"answer:{event.message_id}", message_id=event.message_id or "", text=answer, now=self.clock()))
        self.reply_wakeup.set()

    async def _learn_owner(self, tenant: TenantConfig, data: object) -> None:
        """``connection.update`` says which number the instance is (``wuid``) when it opens."""
        wuid = data.get("wuid") if isinstance(data, dict) else None
        jid = ev.normalize_jid(wuid) if isinstance(wuid, str) else None
        if jid and jid.endswith("@s.whatsapp.net") and await self.tenants.learn_owner(tenant, jid, self.clock()):
            log.info("tenant.owner_learned", tenant=tenant.instance, owner=jid)

    async def rehearse(self, body: object, raw: str) -> tuple[IngestResult, str | None]:
        """What ``ingest`` would do, and the reply the model would write, with nothing kept (``--dry-run``)."""
        webhook = validate(body, raw)
        tenant = await self.tenants.get(webhook.event.instance or "")
        if webhook.is_ignored:
            return self._ignored(tenant, webhook), None
        item = Inbound(tenant, webhook.event, webhook.stored_raw())
        async with self.store.rehearsal() as conn:
            result = (await conn.run_sync(store_batch, [item], self.clock()))[0]
            history = None
            if result.action == REPLY_QUEUED:
                session_id = (await conn.execute(sa.select(SESSIONS.c.id).where(
                    SESSIONS.c.tenant_id == tenant.id, SESSIONS.c.chat_id == item.event.chat_jid))).scalar_one()
                history = await conn.run_sync(recent_texts, session_id, self.settings.history_limit)
        if history is None:
            return result, None
        return result, (await compose(self.llm, tenant, history, self.clock())).text

    async def note_rejected(self, exc: HybridFlowError, *, instance: str | None = None) -> None:
        """Log a webhook answered 400, 404 or 413, at most once a minute per cause and instance. An unknown
        instance close to a known one gets "did you mean" (in the log only: an unauthenticated caller must not
        learn tenant names from the answer)."""
        instance = instance[:100] if instance else None
        cause = exc.message.partition(":")[0][:80]  # "the body is not valid JSON", without the parser's details
        held = self.log_throttle.allow(("rejected", cause, instance))
        if held is None:
            return
        fields: dict[str, Any] = {"status": exc.status, "cause": exc.code, "reason": exc.message,
                                  "instance": instance}
        if held:
            fields["repeated"] = held
        if isinstance(exc, UnknownInstance) and instance:
            with contextlib.suppress(HybridFlowError):
                close = self.tenants.closest(instance, await self.tenants.instances())
                if close:
                    fields["did_you_mean"] = close
        log.warning("webhook.rejected", **fields)

    def _unreadable_secrets(self, tenant: TenantConfig) -> None:
        held = self.log_throttle.allow(("secrets", tenant.instance))
        if held is not None:
            log.error("webhook.secret_unreadable", tenant=tenant.instance, reason=tenant.secret_error, fix=SAME_KEY,
                      **({"repeated": held} if held else {}))

    async def startup_report(self) -> dict[str, Any]:
        """What `serve` tells the operator when it starts: tenants, and the ones whose secrets it cannot read."""
        tenants = await self.tenants.list()
        unreadable = [t.instance for t in tenants if t.secret_error]
        return {"tenants": len(tenants), "unreadable_secrets": unreadable,
                "secret_error": next((t.secret_error for t in tenants if t.secret_error), None)}

    async def foresee(self, bodies: list[tuple[object, str]]) -> list[IngestResult]:
        """What ``ingest`` would decide for these bodies one after the other, with nothing kept and no model asked.

        Bodies ``ingest`` would refuse (not valid, unknown instance) and events it ignores are left out.
        """
        items = []
        for body, raw in bodies:
            try:
                webhook = validate(body, raw)
                tenant = await self.tenants.get(webhook.event.instance or "")
            except HybridFlowError:
                continue
            if not webhook.is_ignored:
                items.append(Inbound(tenant, webhook.event, webhook.stored_raw()))
        if not items:
            return []
        async with self.store.rehearsal() as conn:
            return await conn.run_sync(store_batch, items, self.clock())

    async def rehearse_stored(self, instance: str, chat: str, message_id: str, *, scan: int = 1000) -> str | None:
        """The reply the model would write now to a stored customer message that was answered, from the chat as
        it was up to that message (``--dry-run`` of a message already stored); None when it was not answered or
        is older than the chat's last ``scan`` messages."""
        messages = (await self.session_detail(instance, chat, limit=scan)).messages
        upto = next((n for n, m in enumerate(messages) if m.message_id == message_id), None)
        if upto is None or messages[upto].action != REPLY_QUEUED:
            return None
        history = [(m.direction, m.text) for m in messages[: upto + 1] if m.text is not None]
        return (await compose(self.llm, await self.tenant(instance), history[-self.settings.history_limit:],
                              self.clock())).text

    async def _label(self, tenant: TenantConfig, webhook: Webhook) -> IngestResult:
        """A label created, renamed or deleted on the phone, or put on or taken off a chat."""
        change = labels.parse(webhook.event.event, webhook.body.get("data"))
        if change is None:
            result = IngestResult(IGNORED_EVENT, tenant.instance, reason="not a label change HybridFlow can read")
        else:
            result = await self.writer.submit(functools.partial(label_service.apply, tenant=tenant, change=change,
                                                                now=self.clock()))
        self._log(tenant, webhook.event, result)
        return result

    def _ignored(self, tenant: TenantConfig, webhook: Webhook) -> IngestResult:
        event = webhook.event
        result = IngestResult(IGNORED_EVENT, tenant.instance, *webhook.ids, webhook.ignored_because)
        self._log(tenant, event, result)
        return result

    def _log(self, tenant: TenantConfig, event: ev.Event, result: IngestResult) -> None:
        self.metrics.webhook(result.action, result.reason)
        log.info("webhook.received", tenant=tenant.instance, webhook_event=event.event, chat=event.chat_jid,
                 message_id=event.message_id, action=result.action, reason=result.reason)

    # -- tenants ----------------------------------------------------------------------------------------------

    async def add_tenant(self, instance: str, changes: TenantChanges, *, update: bool = False) -> TenantConfig:
        return (await self.save_tenant(instance, changes, update=update)).tenant

    async def save_tenant(self, instance: str, changes: TenantChanges, *, update: bool = False) -> SavedTenant:
        """Add (or with ``update``, change) a tenant; says whether it is new and what kept history came back."""
        saved = await self.tenants.add(instance, changes, self.clock(), update=update)
        log.info("tenant.saved", tenant=instance, created=saved.created, restored=saved.restored)
        await self._resync_labels(saved.tenant, changes)
        return saved

    async def update_tenant(self, instance: str, changes: TenantChanges) -> TenantConfig:
        tenant = await self.tenants.update(instance, changes, self.clock())
        log.info("tenant.updated", tenant=instance)
        await self._resync_labels(tenant, changes)
        return tenant

    async def _resync_labels(self, tenant: TenantConfig, changes: TenantChanges) -> None:
        """A new pause label applies to the chats that already carry it (and no longer to the old one's)."""
        if changes.pause_label is None:
            return
        async with self.store.write() as conn:
            changed = await conn.run_sync(label_service.resync, tenant, self.clock())
        log.info("tenant.pause_label", tenant=tenant.instance, label=tenant.pause_label, chats_changed=changed)

    async def labels(self, instance: str) -> tuple[TenantConfig, list[Any]]:
        """A tenant and its WhatsApp Business labels as last reported, with how many chats carry each."""
        tenant = await self.tenants.get(instance, cached=False)
        async with self.store.read() as conn:
            return tenant, await conn.run_sync(label_service.known, tenant.id)

    async def pause_tenant(self, instance: str, *, length: str | None = None, actor: str = "operator"
                           ) -> tuple[TenantConfig, int]:
        """Pause every chat of a tenant at once, for ``length`` (``2h``, ``until 18:00`` in the tenant's zone) or
        until resumed; returns the tenant and the waiting replies dropped."""
        now = self.clock()
        tenant = await self.tenant(instance)
        until = pauses.end_of(length, now, tenant.zone)
        tenant, dropped = await self.tenants.pause(instance, now, until=until, actor=actor)
        log.info("tenant.paused", tenant=instance, actor=actor, until=until.isoformat() if until else None,
                 replies_dropped=dropped)
        return tenant, dropped

    async def resume_tenant(self, instance: str, *, actor: str = "operator") -> TenantConfig:
        """Lift a tenant-wide pause; chats paused one by one stay paused."""
        tenant = await self.tenants.resume(instance, self.clock(), actor=actor)
        log.info("tenant.resumed", tenant=instance, actor=actor)
        return tenant

    async def remove_tenant(self, instance: str, *, history: str | None = None) -> dict[str, int]:
        """Remove a tenant; with history, ``history`` must say "keep" or "delete". Returns the rows deleted."""
        counts = await self.tenants.remove(instance, self.clock(), history=history)
        log.info("tenant.removed", tenant=instance, history=history, **counts)
        return counts

    async def audience(self, instance: str, rule: str) -> list[tuple[str, list[str]]]:
        """The tenant's ``ignore`` or ``allow`` list: each number as given, with the chat ids it matches."""
        return await self.tenants.audience(instance, rule)

    async def change_audience(self, instance: str, rule: str, typed: list[str], *, add: bool) -> list[str]:
        """Add numbers to (or remove them from) the tenant's ``ignore`` or ``allow`` list; returns what changed.
        A running ``serve`` applies it within the tenant cache's few seconds."""
        changed = await self.tenants.change_audience(instance, rule, typed, self.clock(), add=add)
        log.info("tenant.audience_changed", tenant=instance, rule=rule, added=add, entries=len(changed))
        return changed

    async def tenant(self, instance: str) -> TenantConfig:
        return await self.tenants.get(instance, cached=False)

    async def list_tenants(self) -> list[TenantConfig]:
        return await self.tenants.list()

    # -- sessions ---------------------------------------------------------------------------------------------

    async def list_sessions(self, **filters: Any) -> tuple[list[SessionView], int]:
        return await self.sessions.list(**filters)

    async def session(self, instance: str, chat: str) -> SessionView:
        return await self.sessions.get(await self.tenant(instance), chat)

    async def session_detail(self, instance: str, chat: str, *, limit: int = 20) -> SessionDetail:
        """A chat's state and history; also of a tenant removed with its history kept."""
        return (await self.chat_detail(instance, chat, limit=limit))[1]

    async def chat_detail(self, instance: str, chat: str, *, limit: int = 20) -> tuple[TenantConfig, SessionDetail]:
        """``session_detail`` with the chat's tenant (its zone, its model, whether it is paused as a whole)."""
        tenant = await self.tenants.get(instance, cached=False, removed_too=True)
        return tenant, await self.sessions.detail(tenant, chat, limit=limit)

    async def pause(self, instance: str, chat: str, *, duration: float | None = None, actor: str = "operator") -> SessionView:
        view = await self.sessions.pause(await self.tenant(instance), chat, self.clock(), duration=duration, actor=actor)
        log.info("session.paused", tenant=instance, chat=view.chat_id, reason="operator", actor=actor,
                 resumes_at=view.resumes_at.isoformat() if view.resumes_at else None)
        return view

    async def resume(self, instance: str, chat: str, *, actor: str = "operator") -> SessionView:
        view = await self.sessions.resume(await self.tenant(instance), chat, self.clock(), actor=actor)
        log.info("session.resumed", tenant=instance, chat=view.chat_id, reason="operator", actor=actor)
        return view

    async def chat_overview(self, chats: ChatFilter, *, limit: int = 50, offset: int = 0
                            ) -> tuple[list[tuple[SessionView, RowExtras]], int]:
        """A page of chats as the console lists them: each session with a reply waiting or failed and its last
        message, and the total that matched."""
        return await self.sessions.overview(chats, limit=limit, offset=offset)

    async def retry(self, instance: str, chat: str, *, reply: int | None = None, actor: str = "operator") -> Retried:
        """Send a chat's failed reply again (``reply``: its id; else the latest failed one), reusing its job."""
        retried = await self.sessions.retry(await self.tenant(instance), chat, self.clock(), reply=reply)
        log.info("reply.retried", tenant=instance, chat=retried.chat_id, job_id=retried.reply_id, kind=retried.kind,
                 actor=actor)
        self.reply_wakeup.set()
        return retried

    async def sweep(self) -> list[SessionView]:
        """Resume the sessions whose pause has run out."""
        resumed = await self.sessions.sweep(self.clock())
        for view in resumed:
            log.info("session.resumed", tenant=view.instance, chat=view.chat_id, reason="auto_resume", actor="sweep")
        return resumed

    # -- the data lifecycle -----------------------------------------------------------------------------------

    async def enforce_retention(self) -> RetentionReport:
        """Clear raw payloads and delete messages (with their replies and events) past each tenant's retention."""
        report = await self.retention.enforce()
        self.metrics.retained(report.counts())
        return report

    async def forget(self, instance: str, chat: str) -> Forgotten:
        """Erase everything HybridFlow keeps about one chat (also of a tenant removed with its history kept); its
        message ids stay as tombstones, so the chat is a new customer when it writes again."""
        tenant = await self.tenants.get(instance, cached=False, removed_too=True)
        chat_id = (await self.sessions.match(tenant, chat)).existing()
        forgotten = await self.retention.forget(tenant.id, tenant.instance, chat_id,
                                                settle=self.settings.evolution_timeout + 5.0)
        # The chat only as a keyed HMAC: the log must not say whose data was erased (a plain hash of a number is
        # reversible by trying every number).
        log.info("session.forgotten", tenant=tenant.instance,
                 chat_hmac=keyed_reference(self.settings.secret_key, "forgotten-chat", chat_id),
                 messages=forgotten.messages, replies=forgotten.replies, events=forgotten.events,
                 sessions=forgotten.sessions, waited_s=forgotten.waited)
        return forgotten

    async def stored_messages(self, tenant_id: int | None = None) -> dict[str, Any]:
        """How many messages are stored (of one tenant, or all) and when the oldest of them was received."""
        query = sa.select(sa.func.count(), sa.func.min(MESSAGES.c.received_at)).select_from(MESSAGES)
        if tenant_id is not None:
            query = query.where(MESSAGES.c.tenant_id == tenant_id)
        async with self.store.read() as conn:
            count, oldest = (await conn.execute(query)).one()
        if isinstance(oldest, str):  # SQLite's min() of a column loses its type: read it back as the column does
            oldest = datetime.fromisoformat(oldest).replace(tzinfo=UTC)
        return {"messages": int(count), "oldest": oldest}

    async def vacuum(self) -> dict[str, Any]:
        """Compact the database (``hybridflow vacuum``): its size before and after, and how long it took."""
        before = await self.store.size()
        started = time.monotonic()
        try:
            await self.store.vacuum()
        except sqlite3.OperationalError as exc:
            raise Unavailable(f"VACUUM failed: {exc} (another process held the database for too long; "
                              "run it again)") from None
        after = await self.store.size()
        return {"database": self.store.describe(), "backend": self.store.dialect, "before": before, "after": after,
                "seconds": round(time.monotonic() - started, 3)}

    async def queue_depth(self) -> dict[str, int]:
        """Jobs not finished yet, by status."""
        async with self.store.read() as conn:
            return await conn.run_sync(jobs.depth)

    async def tokens_today(self, tenant: TenantConfig) -> dict[str, Any]:
        """The model tokens a tenant used since its local midnight, against its daily budget."""
        since = tenant.day_start(self.clock())
        async with self.store.read() as conn:
            used, uncounted = await conn.run_sync(jobs.tokens_since, tenant.id, since)
        return {"used": used, "budget": tenant.daily_tokens, "uncounted_answers": uncounted,
                "since": since.astimezone(tenant.zone).isoformat()}

    async def tenant_report(self, instance: str) -> tuple[TenantConfig, dict[str, Any]]:
        """A tenant, and its tokens used today (``tenants show``)."""
        tenant = await self.tenant(instance)
        return tenant, await self.tokens_today(tenant)

    async def tenant_days(self, instance: str | None = None) -> list[TenantDay]:
        """Every tenant's day (or one tenant's): today's counts, queue, hours and the last 24 hours by hour."""
        tenants = [await self.tenant(instance)] if instance is not None else await self.tenants.list()
        now = self.clock()
        async with self.store.read() as conn:
            return [await dashboard.tenant_day(conn, tenant, now) for tenant in tenants]

    async def cursor(self) -> changes.Cursor:
        """Where the database is now, for ``changes`` later (see ``service.changes``)."""
        async with self.store.read() as conn:
            return await changes.read(conn)

    async def changes(self, previous: changes.Cursor | str) -> changes.Changes:
        """What changed since a cursor (or its token), made by this process or any other; a token that is not one
        counts as "anything may have changed"."""
        cursor = Cursor.parse(previous) if isinstance(previous, str) else previous
        async with self.store.read() as conn:
            if cursor is None:
                return changes.Changes(await changes.read(conn), None, True)
            return await changes.since(conn, cursor)

    async def metrics_text(self) -> str:
        """The /metrics exposition: this process' counters, the queue depth and every tenant's tokens today."""
        today = {t.instance: (await self.tokens_today(t))["used"] for t in await self.tenants.list()}
        return self.metrics.render(await self.queue_depth(), today, database_size=await self.store.size())

    async def health(self) -> dict[str, Any]:
        """Prove the database answers; raises ``Unavailable`` when it does not."""
        await self.store.ping()
        return {"status": "ok", "database": self.store.dialect}


__all__ = ["ChatFilter", "ChatState", "Service", "Credentials", "TRUSTED", "TenantChanges", "utcnow"]
