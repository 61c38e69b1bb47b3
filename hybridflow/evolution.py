"""httpx client for Evolution API's endpoints: sendText, presence, read receipts, connection state, webhook settings.

One ``httpx.AsyncClient`` serves every tenant; each call names its Evolution base URL, instance and API key.
Every failure becomes a ``SendError`` whose ``transient`` flag tells the caller whether a retry can help:

    400 401 403 404 422          permanent (bad number, bad key, unknown instance, schema error)
    503 + code LICENSE_REQUIRED  permanent (Evolution 2.4 waits for its licence to be activated)
    408 429 5xx                  transient
    timeout, refused, reset      transient

Evolution's error body is ``{"status", "error", "response": {"message": <string | array, nested or not>}}``;
its message is flattened into ours so an operator reads the reason without opening Evolution's logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from hybridflow.errors import SendError
from hybridflow.http import AiohttpTransport

log = structlog.get_logger("hybridflow.evolution")

API_VERSIONS = ("v1", "v2")
PRESENCES = ("available", "unavailable", "composing", "recording", "paused")
PERMANENT_STATUSES = frozenset({400, 401, 403, 404, 422})
TRANSIENT_STATUSES = frozenset({408, 429})
_PHONE_SERVERS = ("s.whatsapp.net", "c.us")
_MAX_DETAIL = 500


@dataclass(frozen=True, slots=True)
class SendResult:
    """What Evolution answered to a send: the WhatsApp id to remember and the raw response."""

    message_id: str | None
    status_code: int
    body: dict | None


def evolution_number(jid: str) -> str:
    """The ``number`` Evolution documents: bare digits for a phone JID; groups, LIDs and the rest unchanged."""
    user, at, server = jid.partition("@")
    if at and server in _PHONE_SERVERS:
        return user.split(":", 1)[0]  # a device JID (5511...:12@s.whatsapp.net) names the same chat
    return jid


def text_body(
    *,
    api_version: str,
    number: str,
    text: str,
    delay_ms: int | None = None,
    quoted_id: str | None = None,
    link_preview: bool | None = None,
) -> dict[str, Any]:
    """The JSON body of ``POST /message/sendText`` for Evolution v2 (flat) or v1 (``textMessage`` + ``options``)."""
    _check_version(api_version)
    quoted = {"key": {"id": quoted_id}} if quoted_id else None
    given = {name: value for name, value in (("delay", delay_ms), ("linkPreview", link_preview), ("quoted", quoted))
             if value is not None}
    if api_version == "v1":  # the same options, nested under "options"
        return {"number": number, "textMessage": {"text": text}, "options": {"presence": "composing", **given}}
    return {"number": number, "text": text, **given}


def evolution_error_detail(body: Any) -> str:
    """Evolution's error reason as one line: ``response.message`` flattened, not-on-WhatsApp entries spelled out."""
    if isinstance(body, dict):
        response = body.get("response")
        message = response.get("message") if isinstance(response, dict) else None
        if message is None:
            message = body.get("message") or body.get("error")
    else:
        message = body
    detail = "; ".join(part for part in _flatten(message) if part)
    return detail if len(detail) <= _MAX_DETAIL else detail[: _MAX_DETAIL - 1] + "…"


def _flatten(value: Any) -> Iterator[str]:
    if value is None:
        return
    if isinstance(value, str):
        yield value.strip()
    elif isinstance(value, list):
        for item in value:
            yield from _flatten(item)
    elif isinstance(value, dict) and value.get("exists") is False:
        yield f"number {value.get('number') or value.get('jid')} is not on WhatsApp"
    elif isinstance(value, dict):
        yield json.dumps(value, ensure_ascii=False, sort_keys=True)
    else:
        yield str(value)


def _license_required(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    response = body.get("response")
    codes = (body.get("code"), response.get("code") if isinstance(response, dict) else None)
    return "LICENSE_REQUIRED" in codes or body.get("error") == "service not activated"


def _check_version(api_version: str) -> None:
    if api_version not in API_VERSIONS:
        raise ValueError(f"api_version must be one of {API_VERSIONS}, got {api_version!r}")


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _address(url: str) -> str:
    """host:port of a base URL, without any credentials it may carry."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "<invalid url>"
    return f"{parsed.host}:{parsed.port}" if parsed.port else str(parsed.host)


class EvolutionClient:
    """One httpx.AsyncClient shared by all tenants; each call gets base_url, instance, api_key."""

    def __init__(self, *, timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._timeout = timeout
        self._http = httpx.AsyncClient(timeout=timeout, transport=transport or AiohttpTransport(),
                                       follow_redirects=False)

    async def __aenter__(self) -> EvolutionClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def send_text(
        self,
        *,
        base_url: str,
        instance: str,
        api_key: str,
        number: str,
        text: str,
        api_version: str = "v2",
        delay_ms: int | None = None,
        quoted_id: str | None = None,
        link_preview: bool | None = None,
    ) -> SendResult:
        """Send a text; ``number`` may be digits or a JID. Returns the WhatsApp id Evolution gave the message."""
        body = text_body(
            api_version=api_version,
            number=evolution_number(number),
            text=text,
            delay_ms=delay_ms,
            quoted_id=quoted_id,
            link_preview=link_preview,
        )
        response = await self._request(
            "POST",
            "sendText",
            base_url=base_url,
            path=f"/message/sendText/{quote(instance, safe='')}",
            instance=instance,
            api_key=api_key,
            json_body=body,
            blocks_for_ms=delay_ms,
            log_fields={"text_length": len(text), "api_version": api_version},
        )
        parsed = _json_or_none(response)
        data = parsed if isinstance(parsed, dict) else None
        key = data.get("key") if data else None
        message_id = key.get("id") if isinstance(key, dict) else None
        return SendResult(message_id=message_id, status_code=response.status_code, body=data)

    async def send_presence(
        self,
        *,
        base_url: str,
        instance: str,
        api_key: str,
        number: str,
        presence: str = "composing",
        delay_ms: int = 1200,
        api_version: str = "v2",
    ) -> None:
        """Show "typing…" (or another presence) for ``delay_ms``; Evolution answers only when the delay is over."""
        _check_version(api_version)
        if presence not in PRESENCES:
            raise ValueError(f"presence must be one of {PRESENCES}, got {presence!r}")
        target = evolution_number(number)
        body: dict[str, Any]
        if api_version == "v1":
            body = {"number": target, "options": {"delay": delay_ms, "presence": presence}}
        else:
            body = {"number": target, "delay": delay_ms, "presence": presence}
        await self._request(
            "POST",
            "sendPresence",
            base_url=base_url,
            path=f"/chat/sendPresence/{quote(instance, safe='')}",
            instance=instance,
            api_key=api_key,
            json_body=body,
            blocks_for_ms=delay_ms,
            log_fields={"presence": presence},
        )

    async def mark_read(
        self,
        *,
        base_url: str,
        instance: str,
        api_key: str,
        remote_jid: str,
        message_id: str,
        api_version: str = "v2",
    ) -> None:
        """Send the blue ticks for one inbound message (``remote_jid`` is the full chat JID)."""
        _check_version(api_version)
        keys = [{"remoteJid": remote_jid, "fromMe": False, "id": message_id}]
        path = f"/chat/markMessageAsRead/{quote(instance, safe='')}"
        if api_version == "v1":
            method, body = "PUT", {"read_messages": keys}
        else:
            method, body = "POST", {"readMessages": keys}
        await self._request(
            method,
            "markMessageAsRead",
            base_url=base_url,
            path=path,
            instance=instance,
            api_key=api_key,
            json_body=body,
        )

    async def check_instance(self, *, base_url: str, instance: str, api_key: str) -> str:
        """The instance's connection state ("open", "connecting", "close"); raises SendError when unreachable."""
        response = await self._request(
            "GET",
            "connectionState",
            base_url=base_url,
            path=f"/instance/connectionState/{quote(instance, safe='')}",
            instance=instance,
            api_key=api_key,
        )
        body = _json_or_none(response)
        found = body.get("instance") if isinstance(body, dict) else None
        state = found.get("state") if isinstance(found, dict) else None
        if not isinstance(state, str):
            raise SendError(
                f'Evolution connectionState for instance "{instance}" answered without a state',
                transient=False,
                http_status=response.status_code,
            )
        return state

    async def find_webhook(
        self, *, base_url: str, instance: str, api_key: str, api_version: str = "v2"
    ) -> dict[str, Any]:
        """The instance webhook as Evolution stores it (v2 and v1 name its fields differently); {} when none is set.

        Evolution answers 200 with ``null`` (v2) or ``{"enabled": false, "url": ""}`` (v1) when no webhook is set;
        a 404 that is not about an unknown instance means the same. Other failures raise SendError.
        """
        _check_version(api_version)
        try:
            response = await self._request(
                "GET",
                "webhook/find",
                base_url=base_url,
                path=f"/webhook/find/{quote(instance, safe='')}",
                instance=instance,
                api_key=api_key,
                log_fields={"api_version": api_version},
            )
        except SendError as exc:
            if exc.http_status == 404 and "does not exist" not in exc.message:
                return {}
            raise
        body = _json_or_none(response)
        if body is None or body == {}:
            return {}
        if not isinstance(body, dict):
            raise SendError(
                f'Evolution webhook/find for instance "{instance}" answered {type(body).__name__}, not an object',
                transient=False,
                http_status=response.status_code,
            )
        return body

    async def _request(
        self,
        method: str,
        action: str,
        *,
        base_url: str,
        path: str,
        instance: str,
        api_key: str,
        json_body: dict[str, Any] | None = None,
        blocks_for_ms: int | None = None,
        log_fields: dict[str, Any] | None = None,
    ) -> httpx.Response:
        """One attempt, logged once; any non-2xx or transport failure is raised as SendError."""
        # Evolution holds the response while it shows "typing" for the requested delay, so the wait is on top.
        timeout = self._timeout + (blocks_for_ms or 0) / 1000
        url = base_url.rstrip("/") + path
        fields = {"instance": instance, "method": method, "path": path, **(log_fields or {})}
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, url, json=json_body, headers={"apikey": api_key}, timeout=timeout
            )
        except httpx.HTTPError as exc:
            error = self._transport_error(exc, action, instance, base_url, timeout)
            _log_attempt(fields, started, status=None, error=error)
            raise error from exc
        except httpx.InvalidURL as exc:
            error = SendError(f"invalid Evolution base URL {base_url!r}: {exc}", transient=False)
            _log_attempt(fields, started, status=None, error=error)
            raise error from exc
        if response.is_success:
            _log_attempt(fields, started, status=response.status_code, error=None)
            return response
        error = self._status_error(response, action, instance)
        _log_attempt(fields, started, status=response.status_code, error=error)
        raise error

    @staticmethod
    def _transport_error(
        exc: httpx.HTTPError, action: str, instance: str, base_url: str, timeout: float
    ) -> SendError:
        where = f'Evolution {action} for instance "{instance}" at {_address(base_url)}'
        if isinstance(exc, httpx.TimeoutException):
            return SendError(f"{where}: timeout, no answer within {timeout:g}s", transient=True)
        if isinstance(exc, httpx.UnsupportedProtocol):
            return SendError(f"invalid Evolution base URL {base_url!r}: {exc}", transient=False)
        if isinstance(exc, httpx.ConnectError):
            return SendError(f"{where}: connection refused or host unreachable ({exc})", transient=True)
        return SendError(f"{where}: {type(exc).__name__}: {exc}", transient=True)

    @staticmethod
    def _status_error(response: httpx.Response, action: str, instance: str) -> SendError:
        status = response.status_code
        body = _json_or_none(response)
        if status == 503 and _license_required(body):
            return SendError(
                "Evolution 2.4 licence not activated (503 LICENSE_REQUIRED): activate it in Evolution's /manager",
                transient=False,
                http_status=status,
            )
        detail = evolution_error_detail(body) or response.reason_phrase or "no reason given"
        if status == 401:
            detail = f"the API key was refused ({detail})"
        transient = status >= 500 or status in TRANSIENT_STATUSES
        return SendError(
            f'Evolution {action} for instance "{instance}" failed with HTTP {status}: {detail}',
            transient=transient,
            http_status=status,
        )


def _log_attempt(fields: dict[str, Any], started: float, *, status: int | None, error: SendError | None) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    if error is None:
        log.info("evolution.request", **fields, status=status, duration_ms=duration_ms, outcome="ok")
        return
    outcome = "transient_error" if error.transient else "permanent_error"
    log.warning(
        "evolution.request", **fields, status=status, duration_ms=duration_ms, outcome=outcome, error=error.message
    )
