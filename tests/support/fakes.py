"""Fake peers that speak the real protocols over real HTTP on 127.0.0.1: Evolution API v2 and Ollama.

Both are small aiohttp servers that record what they receive (bedevere's FakeGH does the same for GitHub).
They depend on nothing from pytest, so a benchmark script can run them too::

    evolution = FakeEvolution(api_key="secret")
    base_url = await evolution.start()        # http://127.0.0.1:<free port>
    ...
    await evolution.stop()

The pytest fixtures at the bottom (``fake_evolution``, ``fake_ollama``) start one per test and stop it after.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Self

import aiohttp
from aiohttp import web

LICENSE_REQUIRED_BODY = {
    "error": "service not activated",
    "code": "LICENSE_REQUIRED",
    "message": "This Evolution API instance must be activated; open /manager to activate it.",
}
"""What Evolution 2.4.0 answers (HTTP 503) on business endpoints until its licence is activated."""

README_WEBHOOK: Any = object()
"""FakeEvolution.webhook's default: answer the webhook the README sets (see ``FakeEvolution``)."""

_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
_PRESENCES = ("unavailable", "available", "composing", "recording", "paused")

Handler = Callable[[web.Request, dict[str, str], Any], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request a fake received; header names are lower-cased, ``json`` is None when the body was not JSON."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


@dataclass(slots=True)
class _Fault:
    status: int | None  # None: hang instead of answering
    body: Any = None
    seconds: float = 0.0


class _FakeServer:
    """Start/stop on a free port of 127.0.0.1, with waits that end at once when the server stops."""

    def __init__(self) -> None:
        self.url: str | None = None
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1:<port> (default: a free one); returns the base URL.

        A given port is taken even while the last server on it is in TIME_WAIT: a peer that comes back at the
        address it had.
        """
        app = web.Application(client_max_size=16 * 1024**2)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._stopping = asyncio.Event()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True if port else None)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self.url

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop listening; requests still hanging or sleeping return immediately."""
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless the server stops first; True when the sleep ran its course."""
        if seconds <= 0:
            return not self._stopping.is_set()
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError


async def _read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------------------------
# Evolution API v2


class FakeEvolution(_FakeServer):
    """Speaks Evolution v2's send endpoints. Records every request.

    Checks run in Evolution's order: route (404 ``Cannot POST /x``), ``apikey`` (401), instance (404),
    body schema (400, nested array), number on WhatsApp (400), then the send. Attributes to steer it:

    * ``api_key``: when set, the ``apikey`` header must equal it.
    * ``instances``: when set, other instance names answer 404; ``states`` gives connectionState per instance
      ("open" by default; a sendText to a non-open instance fails 400 "Connection Closed").
    * ``not_on_whatsapp``: numbers (digits) answered with 400 ``[{"jid", "exists": false, "number"}]``.
    * ``delay``: latency added to every request; ``delay_scale`` × the body's ``delay`` (ms) is how long a send
      or presence call blocks, as Evolution does while it shows "typing" (0 by default to keep tests fast).
    * ``hold()`` / ``release()``: requests that arrive while held wait (recorded already) until ``release()``, so a
      test decides when in-flight sends finish instead of guessing a delay.
    * ``echo_webhook_url``: the ``send.message`` webhook is POSTed (with ``echo_headers``) and awaited before
      the sendText answer, reproducing the echo that arrives before the send call returns.
    * ``webhook``: what ``GET /webhook/find/{instance}`` answers. By default (``README_WEBHOOK``) the README's
      settings in v2's stored names, pointing at ``echo_webhook_url`` with ``echo_headers``; a dict is answered as
      it is (a v1 shape too); ``None`` answers ``null``, as v2 does when no webhook is set. ``webhook_status``
      other than 200 answers that status with Evolution's error body instead.
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        instances: set[str] | None = None,
        owner_jid: str = "5511900000000@s.whatsapp.net",
    ) -> None:
        super().__init__()
        self.requests: list[RecordedRequest] = []
        self.api_key = api_key
        self.instances = instances
        self.states: dict[str, str] = {}
        self.not_on_whatsapp: set[str] = set()
        self.delay = 0.0
        self.delay_scale = 0.0
        self._released = asyncio.Event()
        self._released.set()
        self._held_path: str | None = None
        self.echo_webhook_url: str | None = None
        self.echo_headers: dict[str, str] = {}
        self.echo_apikey: str | None = None  # the envelope's "apikey" (Evolution puts the instance token there)
        self.echo_statuses: list[int] = []
        self.echo_errors: list[str] = []
        self.owner_jid = owner_jid
        self.tz_offset_hours = -3.0  # date_time is Sao Paulo wall time with a "Z", as the official image sends
        self.sent_messages: list[dict] = []  # response bodies of successful sendText calls
        self.presences: list[dict] = []
        self.read_receipts: list[dict] = []
        self._sent_texts: list[dict] = []
        self._faults: list[_Fault] = []
        self._session: aiohttp.ClientSession | None = None
        self.webhook: Any = README_WEBHOOK
        self.webhook_status = 200
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"^/message/sendText/(?P<instance>[^/]+)$"), self._send_text),
            ("POST", re.compile(r"^/chat/sendPresence/(?P<instance>[^/]+)$"), self._send_presence),
            ("POST", re.compile(r"^/chat/markMessageAsRead/(?P<instance>[^/]+)$"), self._mark_read),
            ("GET", re.compile(r"^/instance/connectionState/(?P<instance>[^/]+)$"), self._connection_state),
            ("GET", re.compile(r"^/webhook/find/(?P<instance>[^/]+)$"), self._find_webhook),
        ]

    @property
    def sent_texts(self) -> list[dict]:
        """Request bodies of the sendText calls that succeeded, in order."""
        return list(self._sent_texts)

    def fail_next(self, status: int, times: int = 1, body: dict | None = None) -> None:
        """The next ``times`` sendText calls answer ``status`` with ``body`` (default: Evolution's error shape)."""
        for _ in range(times):
            self._faults.append(_Fault(status=status, body=body))

    def timeout_next(self, times: int = 1, seconds: float = 60.0) -> None:
        """The next ``times`` sendText calls hang ``seconds`` first; then, like Evolution, they still send."""
        for _ in range(times):
            self._faults.append(_Fault(status=None, seconds=seconds))

    def hold(self, only: str | None = None) -> None:
        """From now on, requests wait (after being recorded) until ``release()``; ``only``: just the requests whose
        path contains it (e.g. "/sendText/": presences still answer)."""
        self._held_path = only
        self._released.clear()

    def release(self) -> None:
        """Let the held requests, and every later one, go on."""
        self._released.set()

    def clear(self) -> None:
        """Forget recorded requests, sends and pending faults."""
        for records in (self.requests, self.sent_messages, self.presences, self.read_receipts, self._sent_texts):
            records.clear()
        self._faults.clear()
        self.echo_statuses.clear()
        self.echo_errors.clear()

    async def start(self, port: int = 0) -> str:
        url = await super().start(port)
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return url

    async def stop(self) -> None:
        self._stopping.set()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.requests.append(RecordedRequest(request.method, request.path, headers, body))
        if not self._released.is_set() and (self._held_path is None or self._held_path in request.path):
            waiting = asyncio.ensure_future(self._released.wait())
            stopping = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
            for task in (waiting, stopping):
                task.cancel()
            if self._stopping.is_set():
                return web.Response(status=503)
        if self.delay and not await self._sleep(self.delay):
            return web.Response(status=503)
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if match and request.method == method:
                break
        else:
            return _evolution_error(404, [f"Cannot {request.method} {request.path}"])
        if self.api_key is not None and headers.get("apikey") != self.api_key:
            return _evolution_error(401, "Unauthorized")
        instance = match["instance"]
        if self.instances is not None and instance not in self.instances:
            return _evolution_error(404, [f'The "{instance}" instance does not exist'])
        return await handler(request, {"instance": instance}, body)

    async def _send_text(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        if self._faults:
            fault = self._faults.pop(0)
            if fault.status is not None:
                reason = _REASONS.get(fault.status, "Error")
                return _evolution_error(fault.status, [f"{reason} (injected by FakeEvolution)"], fault.body)
            if not await self._sleep(fault.seconds):
                return web.Response(status=503)
        errors = _text_schema_errors(body)
        if errors:
            return _evolution_error(400, [errors])
        instance = params["instance"]
        jid = create_jid(body["number"])
        user = jid.partition("@")[0]
        if not jid.endswith("@g.us") and user in self.not_on_whatsapp:
            return _evolution_error(400, [{"jid": jid, "exists": False, "number": user}])
        if self.states.get(instance, "open") != "open":
            return _evolution_error(400, ["Error: Connection Closed"])
        if not await self._sleep(self.delay_scale * body.get("delay", 0) / 1000):
            return web.Response(status=503)
        message = self._prepared_message(instance, jid, body)
        if self.echo_webhook_url:
            await self._echo(instance, message)
        self._sent_texts.append(body)
        self.sent_messages.append(message)
        return web.json_response(message, status=201)

    def _prepared_message(self, instance: str, jid: str, body: dict) -> dict:
        """The message as Evolution 2.3.6+ answers it (and sends it as the ``send.message`` webhook data)."""
        context: dict[str, Any] = {
            "mentionedJid": [],
            "groupMentions": [],
            "ephemeralSettingTimestamp": {"low": 0, "high": 0, "unsigned": False},
            "disappearingMode": {"initiator": 0},
        }
        quoted = body.get("quoted")
        if isinstance(quoted, dict) and isinstance(quoted.get("key"), dict):
            context["stanzaId"] = quoted["key"].get("id")
            context["participant"] = jid
            context["quotedMessage"] = quoted.get("message") or {"conversation": ""}
        return {
            "key": {"remoteJid": jid, "fromMe": True, "id": "3EB0" + secrets.token_hex(9).upper()},
            "pushName": "Você",
            "status": "PENDING",
            "message": {"conversation": body["text"]},
            "contextInfo": context,
            "messageType": "conversation",
            "messageTimestamp": int(time.time()),
            "instanceId": str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-evolution/{instance}")),
            "source": "web",
        }

    async def _echo(self, instance: str, message: dict) -> None:
        assert self._session is not None and self.echo_webhook_url is not None
        local_now = datetime.now(UTC) + timedelta(hours=self.tz_offset_hours)
        envelope = {
            "event": "send.message",
            "instance": instance,
            "data": message,
            "destination": self.echo_webhook_url,
            "date_time": local_now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sender": self.owner_jid,
            "server_url": self.url,
            "apikey": self.echo_apikey,
        }
        try:
            async with self._session.post(
                self.echo_webhook_url, json=envelope, headers={"User-Agent": "axios/1.7.9", **self.echo_headers}
            ) as response:
                await response.read()
                self.echo_statuses.append(response.status)
        except (aiohttp.ClientError, TimeoutError) as exc:  # Evolution logs a failed webhook and sends anyway
            self.echo_errors.append(f"{type(exc).__name__}: {exc}")

    async def _send_presence(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        errors = _presence_schema_errors(body)
        if errors:
            return _evolution_error(400, [errors])
        if not await self._sleep(self.delay_scale * body["delay"] / 1000):
            return web.Response(status=503)
        self.presences.append(body)
        return web.json_response({"presence": body["presence"]}, status=201)

    async def _mark_read(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        errors = _read_schema_errors(body)
        if errors:
            return _evolution_error(400, [errors])
        self.read_receipts.append(body)
        return web.json_response({"message": "Read messages", "read": "success"}, status=201)

    async def _connection_state(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        instance = params["instance"]
        state = self.states.get(instance, "open")
        return web.json_response({"instance": {"instanceName": instance, "state": state}})

    async def _find_webhook(self, request: web.Request, params: dict[str, str], body: Any) -> web.StreamResponse:
        if self.webhook_status != 200:
            return _evolution_error(self.webhook_status, [_REASONS.get(self.webhook_status, "Error")])
        if self.webhook is not README_WEBHOOK:
            return web.json_response(self.webhook)
        instance_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"fake-evolution/{params['instance']}"))
        return web.json_response({  # the row Evolution 2.3 stores for the README's `POST /webhook/set`
            "id": "cm" + secrets.token_hex(11),
            "url": self.echo_webhook_url or "http://127.0.0.1:8000/webhooks/evolution",
            "headers": dict(self.echo_headers),
            "enabled": True,
            "events": ["MESSAGES_UPSERT", "SEND_MESSAGE"],
            "webhookByEvents": False,
            "webhookBase64": False,
            "createdAt": "2025-11-20T12:00:00.000Z",
            "updatedAt": "2025-11-20T12:00:00.000Z",
            "instanceId": instance_id,
        })


class NotifyReceiver(_FakeServer):
    """What a ``--notify-url`` points at (an n8n webhook, a CRM): records each POST with its headers and raw body.
    ``fail_next(status)`` answers the next POSTs with that status instead of 200."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[RecordedRequest] = []
        self.bodies: list[bytes] = []
        self.statuses: list[int] = []
        self._faults: list[int] = []

    def fail_next(self, status: int, times: int = 1) -> None:
        self._faults.extend([status] * times)

    @property
    def hook_url(self) -> str:
        assert self.url is not None
        return f"{self.url}/webhook/hybridflow"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        self.received.append(RecordedRequest(request.method, request.path, headers, parsed))
        self.bodies.append(raw)
        status = self._faults.pop(0) if self._faults else 200
        self.statuses.append(status)
        return web.json_response({"ok": status < 400}, status=status)


def create_jid(number: str) -> str:
    """Evolution's ``createJid``: JIDs pass through; digits (``+``, spaces, parentheses dropped) get a server."""
    if "@" in number:
        return number
    digits = re.sub(r"[\s+()]", "", number)
    if "-" in digits or len(digits) >= 18:
        return f"{digits}@g.us"
    return f"{digits}@s.whatsapp.net"


def _evolution_error(status: int, message: Any, body: Any = None) -> web.Response:
    """Evolution's error body: ``{"status", "error", "response": {"message"}}``."""
    if body is None:
        body = {"status": status, "error": _REASONS.get(status, "Error"), "response": {"message": message}}
    return web.json_response(body, status=status)


def _schema_error(prop: str, value: Any, kind: type | tuple[type, ...], type_name: str) -> str | None:
    # bool is an int in Python but not an integer in JSON schema
    if not isinstance(value, kind) or (type_name == "integer" and isinstance(value, bool)):
        return f"{prop} is not of a type(s) {type_name}"
    return None


def _required(body: dict, props: tuple[str, ...]) -> list[str]:
    return [f'instance requires property "{prop}"' for prop in props if prop not in body]


def _text_schema_errors(body: Any) -> list[str]:
    """Messages of Evolution's textMessageSchema (jsonschema stack with "instance." removed)."""
    if not isinstance(body, dict):
        return ["instance is not of a type(s) object"]
    errors = _required(body, ("number", "text"))
    checks = (
        ("number", str, "string"),
        ("text", str, "string"),
        ("delay", int, "integer"),
        ("linkPreview", bool, "boolean"),
        ("quoted", dict, "object"),
    )
    for prop, kind, type_name in checks:
        if prop in body:
            errors.extend(filter(None, [_schema_error(prop, body[prop], kind, type_name)]))
    for prop in ("number", "text"):
        if body.get(prop) == "":
            errors.append(f'The "{prop}" cannot be empty')
    return errors


def _presence_schema_errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["instance is not of a type(s) object"]
    errors = _required(body, ("number", "delay", "presence"))
    if "delay" in body:
        errors.extend(filter(None, [_schema_error("delay", body["delay"], int, "integer")]))
    if "presence" in body and body["presence"] not in _PRESENCES:
        errors.append(f"presence is not one of enum values: {','.join(_PRESENCES)}")
    return errors


def _read_schema_errors(body: Any) -> list[str]:
    if not isinstance(body, dict):
        return ["instance is not of a type(s) object"]
    errors = _required(body, ("readMessages",))
    keys = body.get("readMessages", [])
    if not isinstance(keys, list):
        return [*errors, "readMessages is not of a type(s) array"]
    for index, key in enumerate(keys):
        for prop in ("id", "fromMe", "remoteJid"):
            if not isinstance(key, dict) or prop not in key:
                errors.append(f'readMessages[{index}] requires property "{prop}"')
    return errors


# --------------------------------------------------------------------------------------------------------------
# Ollama


def canonical_model(name: str) -> str:
    """Ollama's name resolution: no tag means ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def _ollama_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _echo_last_user(body: dict) -> str:
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    users = [m.get("content", "") for m in messages if m.get("role") == "user"]
    return f"Echo: {users[-1] if users else ''}"


class FakeOllama(_FakeServer):
    """Speaks Ollama's /api/chat (stream false and stream true NDJSON), /api/tags, /api/show, /api/version.

    ``models`` are the pulled models (``llama3.2`` matches ``llama3.2:latest``); ``reply`` is the answer, a
    string or a function of the request body; ``delay`` is how long the model "thinks" before answering.
    """

    version = "0.12.6"

    def __init__(self, *, models: set[str] | None = None, reply: str | Callable[[dict], str] | None = None) -> None:
        super().__init__()
        self.requests: list[dict] = []  # /api/chat bodies
        self.models: set[str] = set(models) if models is not None else {"llama3.2"}
        self.delay = 0.0
        self.reply: str | Callable[[dict], str] = reply if reply is not None else _echo_last_user
        # The counts of a final chunk: prompt_eval_count as given (Ollama leaves it out when the whole prompt was
        # cached: None here), eval_count as given or, when None, the answer's words.
        self.prompt_tokens: int | None = 10
        self.answer_tokens: int | None = None
        self.counts = True  # False: no counts at all, as some Ollama versions and proxies answer
        # Tool calling: models whose template has no tools answer a request with tools 400 "does not support
        # tools", as Ollama does; ``tool_call(body)`` returns {"name", "arguments"} for the model to call one of
        # the tools the request offers instead of answering (None: it answers).
        self.no_tools: set[str] = set()
        self.tool_call: Callable[[dict], dict | None] | None = None
        self._faults: list[_Fault] = []

    def fail_next(self, status: int, times: int = 1, error: str | None = None) -> None:
        """The next ``times`` chat calls answer ``status`` with ``{"error": ...}``."""
        for _ in range(times):
            self._faults.append(_Fault(status=status, body={"error": error or _ollama_error_text(status)}))

    def clear(self) -> None:
        self.requests.clear()
        self._faults.clear()

    def _has(self, model: str) -> bool:
        return canonical_model(model) in {canonical_model(m) for m in self.models}

    def _no_tools(self) -> set[str]:
        return {canonical_model(m) for m in self.no_tools}

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        route = (request.method, request.path)
        if route == ("POST", "/api/chat"):
            return await self._chat(request)
        if route == ("GET", "/api/tags"):
            return web.json_response({"models": [_model_entry(m) for m in sorted(self.models)]})
        if route == ("POST", "/api/show"):
            return await self._show(request)
        if route == ("GET", "/api/version"):
            return web.json_response({"version": self.version})
        if request.path == "/" and request.method in ("GET", "HEAD"):
            return web.Response(text="Ollama is running")
        return web.Response(status=404, text="404 page not found")

    async def _show(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request) or {}
        name = body.get("model") or body.get("name") or ""
        if not self._has(name):
            return web.json_response({"error": f"model '{name}' not found"}, status=404)
        return web.json_response({
            "license": "",
            "modelfile": f"FROM {canonical_model(name)}\n",
            "parameters": 'stop "<|eot_id|>"',
            "template": "{{ .Prompt }}",
            "details": _details(),
            "model_info": {"general.architecture": "llama", "general.parameter_count": 3212749888},
            "capabilities": ["completion"] if canonical_model(name) in self._no_tools() else ["completion", "tools"],
            "modified_at": _ollama_now(),
        })

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await _read_json(request)
        if not isinstance(body, dict):
            return web.json_response({"error": "invalid JSON body"}, status=400)
        self.requests.append(body)
        model = body.get("model") or ""
        if not model:
            return web.json_response({"error": "model is required"}, status=400)
        if not self._has(model):
            return web.json_response({"error": f'model "{model}" not found, try pulling it first'}, status=404)
        if self._faults:
            fault = self._faults.pop(0)
            return web.json_response(fault.body, status=fault.status or 500)
        if not body.get("messages"):  # Ollama only loads the model and answers an empty message
            return web.json_response(self._chunk(model, "", done=True, done_reason="load"))
        tools = body.get("tools") or []
        if tools and canonical_model(model) in self._no_tools():
            return web.json_response({"error": f"registry.ollama.ai/library/{canonical_model(model)} does not support "
                                               "tools"}, status=400)
        if not await self._sleep(self.delay):
            return web.Response(status=503)
        offered = {t.get("function", {}).get("name") for t in tools if isinstance(t, dict)}
        call = self.tool_call(body) if self.tool_call is not None and tools else None
        if call is not None and call["name"] in offered:
            chunk = self._chunk(model, "", done=True)
            chunk["message"]["tool_calls"] = [{"function": {"name": call["name"], "arguments": call["arguments"]}}]
            return web.json_response(self._counted(chunk, 12))
        text = self.reply(body) if callable(self.reply) else self.reply
        if body.get("stream", True) is False:  # Ollama streams unless told not to
            return web.json_response(self._counted(self._chunk(model, text, done=True)))
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        for piece in re.findall(r"\S+\s*|\s+", text):
            await response.write(json.dumps(self._chunk(model, piece, done=False)).encode() + b"\n")
        last = self._counted(self._chunk(model, "", done=True), len(text.split()))
        await response.write(json.dumps(last).encode() + b"\n")
        await response.write_eof()
        return response

    def _counted(self, chunk: dict, words: int | None = None) -> dict:
        """A final chunk with the token counts this fake is set to report."""
        if not self.counts:
            chunk.pop("prompt_eval_count", None)
            chunk.pop("eval_count", None)
            return chunk
        if self.prompt_tokens is None:
            chunk.pop("prompt_eval_count", None)
        else:
            chunk["prompt_eval_count"] = self.prompt_tokens
        if self.answer_tokens is not None:
            chunk["eval_count"] = self.answer_tokens
        elif words is not None:
            chunk["eval_count"] = words
        return chunk

    @staticmethod
    def _chunk(model: str, content: str, *, done: bool, done_reason: str = "stop") -> dict:
        chunk: dict[str, Any] = {
            "model": model,
            "created_at": _ollama_now(),
            "message": {"role": "assistant", "content": content},
            "done": done,
        }
        if done:
            chunk.update(
                done_reason=done_reason,
                total_duration=1_000_000,
                load_duration=100_000,
                prompt_eval_count=10,
                prompt_eval_duration=200_000,
                eval_count=len(content.split()),
                eval_duration=500_000,
            )
        return chunk


def _ollama_error_text(status: int) -> str:
    if status == 503:
        return "server busy, please try again.  maximum pending requests exceeded"
    if status >= 500:
        return "llama runner process has terminated: exit status 2"
    return _REASONS.get(status, "error").lower()


def _details() -> dict:
    return {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "3.2B",
        "quantization_level": "Q4_K_M",
    }


def _model_entry(name: str) -> dict:
    full = canonical_model(name)
    return {
        "name": full,
        "model": full,
        "modified_at": _ollama_now(),
        "size": 2019393189,
        "digest": secrets.token_hex(32),
        "details": _details(),
    }


# --------------------------------------------------------------------------------------------------------------
# pytest fixtures (import them from conftest.py); the classes above work without pytest.

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - a benchmark run without the test extras
    pytest_asyncio = None

if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def fake_evolution() -> AsyncIterator[FakeEvolution]:
        """A started FakeEvolution; its base URL is ``fake_evolution.url``."""
        async with FakeEvolution() as fake:
            yield fake

    @pytest_asyncio.fixture
    async def fake_ollama() -> AsyncIterator[FakeOllama]:
        """A started FakeOllama with model llama3.2; its base URL is ``fake_ollama.url``."""
        async with FakeOllama() as fake:
            yield fake

    @pytest_asyncio.fixture
    async def notify_receiver() -> AsyncIterator[NotifyReceiver]:
        """A started NotifyReceiver; point a tenant's --notify-url at ``notify_receiver.hook_url``."""
        async with NotifyReceiver() as fake:
            yield fake
