"""The aiohttp application: routes, middlewares, lifecycle. Handlers translate HTTP <-> service calls only."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import structlog
from aiohttp import web

from hybridflow.capture import Capture
from hybridflow.config import parse_duration
from hybridflow.console import create_console
from hybridflow.crypto import same_secret
from hybridflow.errors import AuthenticationFailed, BadRequest, Forbidden, HybridFlowError, PayloadTooLarge
from hybridflow.metrics import CONTENT_TYPE
from hybridflow.service import Credentials, Service
from hybridflow.worker import ReplyWorker, maintenance

log = structlog.get_logger("hybridflow.web")

SERVICE = web.AppKey("service", Service)
WORKER = web.AppKey("worker", ReplyWorker)
CAPTURE = web.AppKey("capture", Capture)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """HybridFlow errors become their JSON status; nothing becomes a 500 (an unknown failure is a retryable 503)."""
    try:
        return await handler(request)
    except HybridFlowError as exc:
        return _error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status == 413:
            return _error(413, "payload_too_large", f"the body exceeds {request.app._client_max_size} bytes")
        if exc.status >= 400:
            return _error(exc.status, "http_error", exc.reason)
        raise
    except asyncio.CancelledError:
        raise
    except Exception:  # noqa: BLE001
        log.exception("web.unexpected_error", path=request.path)
        return _error(503, "internal_error", "an unexpected error occurred; retry later")


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def _read_json(request: web.Request) -> tuple[object, str]:
    """The body as JSON and as text; ``PayloadTooLarge`` (413) or ``BadRequest`` (400) when it cannot be."""
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise PayloadTooLarge(f"the body exceeds {request.app._client_max_size} bytes") from None
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. a body that does not match its Content-Encoding
        raise BadRequest(f"the body could not be read: {type(exc).__name__}: {str(exc)[:120]}") from None
    try:
        text = raw.decode("utf-8")
        return json.loads(text), text
    except (ValueError, RecursionError) as exc:  # also integers beyond Python's digit limit
        raise BadRequest(f"the body is not valid JSON: {type(exc).__name__}: {str(exc)[:120]}") from None


async def webhook(request: web.Request) -> web.Response:
    """POST /webhooks/evolution[/{suffix}]: Evolution's webhook, in either of its URL modes."""
    service = request.app[SERVICE]
    try:
        body, text = await _read_json(request)
    except (BadRequest, PayloadTooLarge) as exc:
        await service.note_rejected(exc)
        raise
    if CAPTURE in request.app:
        request.app[CAPTURE].write(body)
    credentials = Credentials(bearer=_bearer(request), token=request.headers.get("X-Hybridflow-Token"))
    result = await service.ingest(body, text, credentials)
    return web.json_response(result.as_dict())


async def health(request: web.Request) -> web.Response:
    """GET /health: 200 when the database answered, 503 when it did not."""
    return web.json_response(await request.app[SERVICE].health())


def _require_admin(request: web.Request) -> None:
    token = request.app[SERVICE].settings.admin_token
    if not token:
        raise Forbidden("the admin API is disabled: set HYBRIDFLOW_ADMIN_TOKEN to enable it")
    if not same_secret(_bearer(request), token):
        raise AuthenticationFailed("missing or wrong admin token (Authorization: Bearer <HYBRIDFLOW_ADMIN_TOKEN>)")


async def session_show(request: web.Request) -> web.Response:
    """GET /sessions/{instance}/{chat_id}"""
    _require_admin(request)
    view = await request.app[SERVICE].session(request.match_info["instance"], request.match_info["chat_id"])
    return web.json_response(view.as_dict())


async def _pause_for(request: web.Request) -> object:
    """The pause's duration: ``?for=30m`` or a JSON body ``{"for": "30m"}``; None (until resumed) when neither.
    A body that says something else is refused rather than read as "until resumed"."""
    duration: object = request.query.get("for")
    raw = (await request.read()).strip()
    if not raw:
        return duration
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadRequest('the body must be JSON such as {"for": "30m"} (with Content-Type: application/json), '
                         f"or no body and ?for=30m; got {raw[:40]!r}") from None
    if not isinstance(body, dict) or set(body) - {"for"}:
        raise BadRequest('the body must be {"for": "<duration>"} (the only field), e.g. {"for": "30m"}')
    return body["for"] if body.get("for") is not None else duration


async def session_pause(request: web.Request) -> web.Response:
    """POST /sessions/{instance}/{chat_id}/pause, optionally {"for": "30m"} or ?for=30m."""
    _require_admin(request)
    duration = await _pause_for(request)
    try:
        seconds = parse_duration(duration) if duration is not None else None
    except ValueError as exc:
        raise BadRequest(f"invalid 'for': {exc}") from None
    view = await request.app[SERVICE].pause(request.match_info["instance"], request.match_info["chat_id"],
                                            duration=seconds, actor="http")
    return web.json_response(view.as_dict())


async def session_resume(request: web.Request) -> web.Response:
    """POST /sessions/{instance}/{chat_id}/resume"""
    _require_admin(request)
    view = await request.app[SERVICE].resume(request.match_info["instance"], request.match_info["chat_id"],
                                             actor="http")
    return web.json_response(view.as_dict())


async def session_retry(request: web.Request) -> web.Response:
    """POST /sessions/{instance}/{chat_id}/retry[?reply=ID]: send the chat's failed reply (that one) again."""
    _require_admin(request)
    reply = request.query.get("reply")
    if reply is not None and not (reply.isdigit() and len(reply) < 19):
        raise BadRequest(f"invalid 'reply': expected a reply's id such as 42, got {reply[:40]!r}")
    retried = await request.app[SERVICE].retry(request.match_info["instance"], request.match_info["chat_id"],
                                               reply=int(reply) if reply is not None else None, actor="http")
    return web.json_response(retried.as_dict())


async def session_forget(request: web.Request) -> web.Response:
    """DELETE /sessions/{instance}/{chat_id}: erase everything kept about the chat; answers what was erased."""
    _require_admin(request)
    forgotten = await request.app[SERVICE].forget(request.match_info["instance"], request.match_info["chat_id"])
    return web.json_response(forgotten.as_dict())


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format; enabled by the ``metrics`` setting, protected like the admin API."""
    _require_admin(request)
    service = request.app[SERVICE]
    text = await service.metrics_text()
    # CONTENT_TYPE carries its charset, which aiohttp's content_type= refuses: it goes in as the header.
    return web.Response(body=text.encode("utf-8"),
                        headers={"Content-Type": CONTENT_TYPE, "X-Content-Type-Options": "nosniff"})


async def _background(app: web.Application) -> AsyncIterator[None]:
    service = app[SERVICE]
    worker = ReplyWorker(service)
    app[WORKER] = worker
    tasks = [
        asyncio.create_task(worker.run(), name="hybridflow-replies"),
        asyncio.create_task(maintenance(service, sweep_interval=service.settings.sweep_interval),
                            name="hybridflow-maintenance"),
    ]
    yield
    await worker.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def create_app(service: Service, *, background: bool = True) -> web.Application:
    """Build the web application around a service; ``background`` runs the reply worker and the sweep."""
    app = web.Application(middlewares=[errors_middleware], client_max_size=service.settings.max_body_size)
    app[SERVICE] = service
    app.router.add_get("/health", health)
    app.router.add_post("/webhooks/evolution", webhook)
    app.router.add_post("/webhooks/evolution/{suffix:.+}", webhook)
    app.router.add_get("/sessions/{instance}/{chat_id}", session_show)
    app.router.add_delete("/sessions/{instance}/{chat_id}", session_forget)
    app.router.add_post("/sessions/{instance}/{chat_id}/pause", session_pause)
    app.router.add_post("/sessions/{instance}/{chat_id}/resume", session_resume)
    app.router.add_post("/sessions/{instance}/{chat_id}/retry", session_retry)
    if service.settings.metrics:
        app.router.add_get("/metrics", metrics)
    if service.settings.admin_token:  # the operator console signs in with it; without it /ui is 404
        app.add_subapp("/ui", create_console(service))
    if service.settings.capture_path:
        app[CAPTURE] = Capture(service.settings.capture_path)
    if background:
        app.cleanup_ctx.append(_background)
    return app
