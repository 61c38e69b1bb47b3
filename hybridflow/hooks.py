"""Notifications POSTed to a tenant's ``--notify-url`` (n8n, Slack, a CRM): signed JSON, one attempt per call.

Every POST carries ``X-Hybridflow-Signature: sha256=<hex>``, the HMAC-SHA256 of the exact body bytes under the
tenant's ``--notify-secret``, and ``X-Hybridflow-Delivery``, the same id on every retry of one notification, so
the receiver can drop a repeat. Redirects are not followed. Failures become ``SendError``:

    2xx                                  delivered
    408, 429, 5xx, timeout, refused      transient (retried with backoff)
    other 3xx and 4xx, a bad URL         permanent (the notification fails)
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

import httpx
import structlog

from hybridflow import __version__
from hybridflow.errors import SendError
from hybridflow.http import AiohttpTransport

log = structlog.get_logger("hybridflow.hooks")

SIGNATURE_HEADER = "X-Hybridflow-Signature"
DELIVERY_HEADER = "X-Hybridflow-Delivery"
EVENT_HEADER = "X-Hybridflow-Event"
_TRANSIENT = frozenset({408, 425, 429})


def signature(secret: str, body: bytes) -> str:
    """The header value a receiver recomputes: ``sha256=`` and the hex HMAC-SHA256 of ``body`` under ``secret``."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (compared in constant time)."""
    return header is not None and hmac.compare_digest(signature(secret, body), header.strip())


class HookClient:
    """The HTTP client of notification POSTs, opened on first use."""

    def __init__(self, *, timeout: float = 15.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = timeout
        self._transport = transport
        self._http: httpx.AsyncClient | None = None

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def post(self, url: str, body: str, *, secret: str, delivery: str, event: str) -> int:
        """POST ``body`` (JSON text) to ``url``, signed; returns the status; raises SendError."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout, transport=self._transport or AiohttpTransport(),
                                           follow_redirects=False)
        data = body.encode("utf-8")
        headers = {"Content-Type": "application/json", "User-Agent": f"HybridFlow/{__version__}",
                   SIGNATURE_HEADER: signature(secret, data), DELIVERY_HEADER: delivery, EVENT_HEADER: event}
        where = f"the notify URL {_address(url)}"
        started = time.perf_counter()
        try:
            response = await self._http.post(url, content=data, headers=headers)
        except httpx.TimeoutException as exc:
            error = SendError(f"{where}: timeout, no answer within {self._timeout:g}s", transient=True)
            _log(url, event, started, None, error)
            raise error from exc
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            error = SendError(f"invalid --notify-url {_address(url)}: {exc}", transient=False)
            _log(url, event, started, None, error)
            raise error from exc
        except httpx.HTTPError as exc:
            error = SendError(f"{where}: {type(exc).__name__}: {exc or 'connection failed'}", transient=True)
            _log(url, event, started, None, error)
            raise error from exc
        status = response.status_code
        if response.is_success:
            _log(url, event, started, status, None)
            return status
        reason = response.reason_phrase or "no reason given"
        if response.is_redirect:
            reason += f" to {response.headers.get('location', '?')} (redirects are not followed: give the final URL)"
        error = SendError(f"{where} answered HTTP {status} {reason}", transient=status >= 500 or status in _TRANSIENT,
                          http_status=status)
        _log(url, event, started, status, error)
        raise error


def _address(url: str) -> str:
    """scheme://host[:port]/path: no user:password, no query string (either may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _log(url: str, event: str, started: float, status: int | None, error: SendError | None) -> None:
    fields = {"url": _address(url), "notification": event, "status": status,
              "duration_ms": round((time.perf_counter() - started) * 1000, 1)}
    if error is None:
        log.info("notify_url.request", **fields, outcome="ok")
    else:
        log.warning("notify_url.request", **fields, outcome="transient_error" if error.transient else "permanent_error",
                    error=error.message)
