"""The behaviour of HybridFlow. The web server and the CLI are thin shells over ``Service``.

``Service.open(settings)`` is the one composition root: it builds the store, the Evolution and Ollama clients
and the clock, and both ``serve`` and every command use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
import sqlalchemy as sa
import structlog
from sqlalchemy.engine import Connection

from hybridflow import events as ev
from hybridflow.config import Settings
from hybridflow.crypto import SecretBox, same_secret
from hybridflow.errors import AuthenticationFailed, BadRequest, Unavailable
from hybridflow.evolution import EvolutionClient
from hybridflow.llm import LLMClient, build_messages
from hybridflow.logs import redact
from hybridflow.metrics import Metrics
from hybridflow.models import OPEN_JOB_STATES
from hybridflow.service.ingest import (
    IGNORED_EVENT, JOBS, REPLY_QUEUED, SESSIONS, Inbound, IngestResult, clean_text, store_batch,
)
from hybridflow.service.replies import Replies, WriteOp, conversation
from hybridflow.service.sessions import Sessions, SessionDetail, SessionView
from hybridflow.service.tenants import TenantChanges, TenantConfig, Tenants
from hybridflow.service.writer import BatchWriter
from hybridflow.store import Store

log = structlog.get_logger("hybridflow.service")
Clock = Callable[[], datetime]


MAX_ID_LENGTH = 200


def _plausible(value: str | None) -> bool:
    """An id or name we can store and look up on both databases: bounded, printable, valid Unicode."""
    return bool(value) and len(value) <= MAX_ID_LENGTH and clean_text(value) == value and value.isprintable()


def _without_apikey(body: dict[str, Any], raw: str) -> str:
    """The raw body to store, without the instance token Evolution puts in every body's ``apikey``."""
    apikey = body.get("apikey")
    if not apikey:
        return raw
    if isinstance(apikey, str) and len(apikey) >= 16 and set(apikey) <= _TOKEN_CHARS:
        return raw.replace(apikey, "[redacted]")  # a long plain token appears verbatim in the JSON text: fast path
    return json.dumps(redact(body), ensure_ascii=False)


_TOKEN_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:+=~")


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a webhook request presented: a bearer token and/or an X-Hybridflow-Token header."""

    bearer: str | None = None
    token: str | None = None
    trusted: bool = False  # replay from the operator's own terminal


TRUSTED = Credentials(trusted=True)


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
        self.sessions = Sessions(store)
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.metrics = Metrics()
        self.replies = Replies(
            store, self.tenants, evolution, llm, clock=clock, worker_id=self.worker_id, metrics=self.metrics,
            history_limit=settings.history_limit, lease=settings.reply_lease,
            send_timeout=settings.evolution_timeout, max_attempts=settings.max_attempts,
            submit=self._submit_write)
        self.writer: BatchWriter[Inbound | WriteOp[Any], Any] = BatchWriter(store, self._store_batch)
        self.reply_wakeup = asyncio.Event()

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, evolution: EvolutionClient | None = None, llm: LLMClient | None = None,
                   clock: Clock = utcnow, serving: bool = False, worker_id: str | None = None,
                   create_schema: bool = True) -> AsyncIterator[Service]:
        """Build the service with its database (schema created or migrated) and peer clients; close them after."""
        store = Store(settings.database_url, background_checkpoints=serving)
        evolution = evolution or EvolutionClient(timeout=settings.evolution_timeout)
        llm = llm or LLMClient(host=settings.ollama_host, timeout=settings.ollama_timeout)
        try:
            if create_schema:
                await store.create_schema()
            service = cls(settings, store, evolution, llm, clock=clock, worker_id=worker_id)
            await service.writer.start()
            try:
                yield service
            finally:
                await service.writer.stop()
        finally:
            await evolution.aclose()
            await llm.aclose()
            await store.dispose()

    # -- webhooks ---------------------------------------------------------------------------------------------

    def _store_batch(self, conn: Connection, items: list[Inbound | WriteOp[Any]]) -> list[Any]:
        """One transaction for what arrived together: the webhooks (set-based), then the reply workers' writes
        (after the webhooks, so a pause that arrived in the same batch is seen by the last-moment check)."""
        inbound = [item for item in items if isinstance(item, Inbound)]
        decided = iter(store_batch(conn, inbound, self.clock()) if inbound else [])
        return [next(decided) if isinstance(item, Inbound) else item(conn) for item in items]

    async def _submit_write(self, operation: WriteOp[Any]) -> Any:
        return await self.writer.submit(operation)

    async def ingest(self, body: object, raw: str, credentials: Credentials = TRUSTED) -> IngestResult:
        """Handle one webhook body: store it, decide, answer the action. The one path for webhooks and replay."""
        item = await self._inbound(body, raw, credentials)
        if isinstance(item, IngestResult):
            return item
        result = await self.writer.submit(item)
        self._after(item, result)
        return result

    async def rehearse(self, body: object, raw: str) -> tuple[IngestResult, str | None]:
        """What ``ingest`` would do, and the reply the model would write, with nothing kept (``--dry-run``)."""
        item = await self._inbound(body, raw, TRUSTED)
        if isinstance(item, IngestResult):
            return item, None
        async with self.store.rehearsal() as conn:
            result = (await conn.run_sync(store_batch, [item], self.clock()))[0]
            history = None
            if result.action == REPLY_QUEUED:
                session_id = (await conn.execute(sa.select(SESSIONS.c.id).where(
                    SESSIONS.c.tenant_id == item.tenant.id, SESSIONS.c.chat_id == item.event.chat_jid))).scalar_one()
                history = await conn.run_sync(conversation, session_id, self.settings.history_limit)
        if history is None:
            return result, None
        return result, await self.llm.chat(model=item.tenant.model, messages=build_messages(item.tenant.prompt, history))

    async def _inbound(self, body: object, raw: str, credentials: Credentials) -> Inbound | IngestResult:
        event = ev.parse_event(body)
        if not isinstance(body, dict):
            raise BadRequest("the body is not a JSON object")
        if not event.event:
            raise BadRequest("the body has no 'event' field")
        if not event.instance:
            raise BadRequest("the body has no 'instance' field")
        if not _plausible(event.instance):
            raise BadRequest("the 'instance' field is not a plausible instance name")
        tenant = await self.tenants.get(event.instance)
        self.authenticate(tenant, event, credentials)
        if not event.is_message or not event.chat_jid:
            result = IngestResult(IGNORED_EVENT, tenant.instance, event.chat_jid, event.message_id,
                                  event.reason if not event.supported else None)
            self._log(tenant, event, result)
            return result
        if not (_plausible(event.chat_jid) and _plausible(event.message_id)):
            result = IngestResult(IGNORED_EVENT, tenant.instance, None, None, "implausible chat or message id")
            self._log(tenant, event, result)
            return result
        return Inbound(tenant, event, _without_apikey(body, raw))

    def _after(self, item: Inbound, result: IngestResult) -> None:
        self._log(item.tenant, item.event, result)
        if result.action == REPLY_QUEUED:
            self.reply_wakeup.set()

    def _log(self, tenant: TenantConfig, event: ev.Event, result: IngestResult) -> None:
        self.metrics.webhook(result.action)
        log.info("webhook.received", tenant=tenant.instance, webhook_event=event.event, chat=event.chat_jid,
                 message_id=event.message_id, action=result.action, reason=result.reason)

    def authenticate(self, tenant: TenantConfig, event: ev.Event, credentials: Credentials) -> None:
        """Check a webhook's credentials against the tenant's secret, JWT key and Evolution key."""
        if credentials.trusted:
            return
        if tenant.secret_error and (tenant.has_jwt_key or tenant.has_webhook_secret):
            raise Unavailable(f"cannot check webhooks of {tenant.instance!r}: {tenant.secret_error}")
        if tenant.jwt_key:
            try:
                jwt.decode(credentials.bearer or "", tenant.jwt_key, algorithms=["HS256"],
                           options={"require": ["exp"]})
            except jwt.PyJWTError as exc:
                self._reject(tenant, f"invalid webhook JWT: {exc}")
        elif tenant.webhook_secret:
            if not (same_secret(credentials.bearer, tenant.webhook_secret)
                    or same_secret(credentials.token, tenant.webhook_secret)):
                self._reject(tenant, "missing or wrong webhook secret")
        if tenant.api_key and event.apikey and not same_secret(event.apikey, tenant.api_key):
            self._reject(tenant, "the body's apikey does not match the tenant's Evolution API key")

    @staticmethod
    def _reject(tenant: TenantConfig, reason: str) -> None:
        log.warning("webhook.unauthorized", tenant=tenant.instance, reason=reason)
        raise AuthenticationFailed(reason)

    # -- tenants ----------------------------------------------------------------------------------------------

    async def add_tenant(self, instance: str, changes: TenantChanges, *, update: bool = False) -> TenantConfig:
        tenant = await self.tenants.add(instance, changes, self.clock(), update=update)
        log.info("tenant.saved", tenant=instance, updated=update)
        return tenant

    async def update_tenant(self, instance: str, changes: TenantChanges) -> TenantConfig:
        tenant = await self.tenants.update(instance, changes, self.clock())
        log.info("tenant.updated", tenant=instance)
        return tenant

    async def remove_tenant(self, instance: str, *, history: str | None = None) -> dict[str, int]:
        """Remove a tenant; with history, ``history`` must say "keep" or "delete". Returns the rows deleted."""
        counts = await self.tenants.remove(instance, self.clock(), history=history)
        log.info("tenant.removed", tenant=instance, history=history, **counts)
        return counts

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
        return await self.sessions.detail(await self.tenant(instance), chat, limit=limit)

    async def pause(self, instance: str, chat: str, *, duration: float | None = None, actor: str = "operator") -> SessionView:
        view = await self.sessions.pause(await self.tenant(instance), chat, self.clock(), duration=duration, actor=actor)
        log.info("session.paused", tenant=instance, chat=view.chat_id, reason="operator", actor=actor,
                 resumes_at=view.resumes_at.isoformat() if view.resumes_at else None)
        return view

    async def resume(self, instance: str, chat: str, *, actor: str = "operator") -> SessionView:
        view = await self.sessions.resume(await self.tenant(instance), chat, self.clock(), actor=actor)
        log.info("session.resumed", tenant=instance, chat=view.chat_id, reason="operator", actor=actor)
        return view

    async def sweep(self) -> list[SessionView]:
        """Resume the sessions whose pause has run out."""
        resumed = await self.sessions.sweep(self.clock())
        for view in resumed:
            log.info("session.resumed", tenant=view.instance, chat=view.chat_id, reason="auto_resume", actor="sweep")
        return resumed

    async def queue_depth(self) -> dict[str, int]:
        """Reply jobs not finished yet, by status."""
        async with self.store.read() as conn:
            rows = await conn.execute(sa.select(JOBS.c.status, sa.func.count()).where(
                JOBS.c.status.in_(OPEN_JOB_STATES)).group_by(JOBS.c.status))
            return {status: 0 for status in OPEN_JOB_STATES} | {r[0]: r[1] for r in rows}

    async def health(self) -> dict[str, Any]:
        """Prove the database answers; raises ``Unavailable`` when it does not."""
        await self.store.ping()
        return {"status": "ok", "database": self.store.dialect}


__all__ = ["Service", "Credentials", "TRUSTED", "TenantChanges", "utcnow"]
