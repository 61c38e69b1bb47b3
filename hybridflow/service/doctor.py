"""``hybridflow doctor``: check the configuration, the database, Ollama and every tenant's Evolution instance,
webhook settings included (what ``GET /webhook/find/{instance}`` answers, in Evolution v2's or v1's names)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from hybridflow.config import format_retention
from hybridflow.crypto import same_secret
from hybridflow.errors import HybridFlowError
from hybridflow.models import SCHEMA_VERSION

if TYPE_CHECKING:
    from hybridflow.service import Service
    from hybridflow.service.tenants import TenantConfig

WEBHOOK_PATH = "/webhooks/evolution"
# The events HybridFlow acts on; a tenant with a pause label also needs its labels' events.
NEEDED_EVENTS = ("MESSAGES_UPSERT", "SEND_MESSAGE")
LABEL_EVENTS = ("LABELS_EDIT", "LABELS_ASSOCIATION")


def needed_events(tenant: TenantConfig) -> tuple[str, ...]:
    """The webhook events this tenant's settings need."""
    return NEEDED_EVENTS + LABEL_EVENTS if tenant.pause_label else NEEDED_EVENTS
# /webhooks/evolution, or /webhooks/evolution/<suffix> (routed to the same handler), behind any proxy prefix.
_WEBHOOK_PATH = re.compile(r"/webhooks/evolution(/[^/].*)?$")


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist; a ``warning`` passes but says something worth changing."""

    name: str
    ok: bool
    detail: str
    warning: bool = False

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def _database(service: Service) -> Check:
    missing = service.store.missing()
    if missing is not None:  # asking SQLite would create the file
        return Check("database", False, missing)
    try:
        await service.store.ping()
        version = await service.store.schema_version()
    except HybridFlowError as exc:
        return Check("database", False, exc.message)
    where = f"{service.store.dialect} answered"
    if version is None:
        return Check("database", False, f"{where}, but it has no HybridFlow schema: `hybridflow serve` creates it")
    if version < SCHEMA_VERSION:
        return Check("database", True, f"{where}; schema version {version} will be migrated to {SCHEMA_VERSION} "
                                       "on the next start")
    if version > SCHEMA_VERSION:
        return Check("database", False, f"{where}; schema version {version} is newer than this HybridFlow")
    return Check("database", True, f"{where}; schema version {version}")


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


async def _storage(service: Service) -> Check:
    """What the database keeps and for how long: messages stored, the oldest, retention, size on disk."""
    try:
        stored = await service.stored_messages()
        size = await service.store.size()
    except HybridFlowError as exc:
        return Check("storage", False, exc.message)
    oldest = f", the oldest received {stored['oldest'].astimezone():%Y-%m-%d %H:%M %z}" if stored["oldest"] else ""
    settings = service.settings
    return Check("storage", True, f"{stored['messages']} messages stored{oldest}; retention: raw payloads "
                                  f"{format_retention(settings.retain_raw)}, messages "
                                  f"{format_retention(settings.retain_messages)} (tenants may override); "
                                  f"database {_size(size)}")


async def _model(service: Service, model: str, used_by: str) -> Check:
    name = f"ollama model {model}"
    try:
        found = await service.llm.model_exists(model)
    except HybridFlowError as exc:
        return Check(name, False, exc.message)
    if not found:
        return Check(name, False, f"not pulled on {service.settings.ollama_host} (used by {used_by}): "
                                  f"run `ollama pull {model}`")
    return Check(name, True, f"available on {service.settings.ollama_host} (used by {used_by})")


async def _evolution(service: Service, tenant: TenantConfig) -> tuple[Check, bool]:
    """The instance's connection check, and whether Evolution answered for it (then its webhook can be read)."""
    name = f"tenant {tenant.instance}"
    if tenant.secret_error:
        return Check(name, False, tenant.secret_error), False
    if not tenant.api_key:
        return Check(name, False, "no Evolution API key: replies cannot be sent "
                                  f"(hybridflow tenants update {tenant.instance} --api-key KEY)"), False
    try:
        state = await service.evolution.check_instance(
            base_url=tenant.evolution_url, instance=tenant.instance, api_key=tenant.api_key)
    except HybridFlowError as exc:
        return Check(name, False, exc.message), False
    if state != "open":
        return Check(name, False, f"Evolution at {tenant.evolution_url} reports the instance {state!r}, not "
                                  "'open': reconnect the phone"), True
    auth = "jwt" if tenant.has_jwt_key else "shared secret" if tenant.has_webhook_secret else "none (recommended: "\
        "--webhook-secret)"
    detail = f"Evolution at {tenant.evolution_url}: connected, key accepted; webhook auth: {auth}"
    return Check(name, True, detail), True


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """An instance webhook under one set of names, whichever Evolution answered (v2 or v1)."""

    url: str
    enabled: bool
    events: tuple[str, ...]
    by_events: bool
    base64: bool
    headers: dict[str, str] = field(repr=False)
    shape: str  # "v2" or "v1": the names Evolution used

    @classmethod
    def parse(cls, body: dict[str, Any]) -> WebhookSettings | None:
        """v2's stored row (``webhookByEvents``, ``webhookBase64``, ``headers``) or v1's answer (``webhook_by_events``,
        ``webhook_base64``); None when no webhook is set (v2 ``null``, v1 ``{"enabled": false, "url": ""}``)."""
        if not body:
            return None
        v1 = "webhook_by_events" in body or "webhook_base64" in body
        url = body.get("url") if isinstance(body.get("url"), str) else ""
        enabled = body.get("enabled") is True  # Evolution posts only when it is true (null is off)
        if not url and not enabled:
            return None
        events = body.get("events") if isinstance(body.get("events"), list) else []
        headers = body.get("headers") if isinstance(body.get("headers"), dict) else {}
        by_events = body.get("webhook_by_events") if v1 else body.get("webhookByEvents", body.get("byEvents"))
        base64 = body.get("webhook_base64") if v1 else body.get("webhookBase64", body.get("base64"))
        return cls(url=url, enabled=enabled, events=tuple(e for e in events if isinstance(e, str)),
                   by_events=by_events is True, base64=base64 is True,
                   headers={str(k): str(v) for k, v in headers.items()}, shape="v1" if v1 else "v2")


def _printable(url: str) -> str:
    """The URL without credentials, query or fragment: what may be printed."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "<not a URL>"


def _expected_url(public_url: str | None) -> str | None:
    """The webhook URL ``public_url`` (the address Evolution reaches ``serve`` at) makes, when it is set."""
    return _printable(public_url.rstrip("/") + WEBHOOK_PATH) if public_url else None


def _suggested_url(settings: WebhookSettings | None, public_url: str | None = None) -> str:
    """Where the webhook should point: ``public_url``'s, else the current URL when its path is right, else its host
    with our path."""
    if (expected := _expected_url(public_url)) is not None:
        return expected
    if settings is not None:
        parts = urlsplit(settings.url)
        if parts.scheme in ("http", "https") and parts.hostname:
            if _WEBHOOK_PATH.search(parts.path):
                return _printable(settings.url)
            return _printable(f"{parts.scheme}://{parts.netloc}{WEBHOOK_PATH}")
    return f"https://<your-host>{WEBHOOK_PATH}"


def set_webhook_command(tenant: TenantConfig, settings: WebhookSettings | None = None,
                        public_url: str | None = None) -> str:
    """README's ``curl .../webhook/set/{instance}`` for this tenant, with placeholders instead of secrets."""
    url = _suggested_url(settings, public_url)
    by_events = settings.by_events if settings is not None else False
    body: dict[str, Any]
    if tenant.api_version == "v1":
        body = {"enabled": True, "url": url, "webhook_by_events": by_events, "webhook_base64": False,
                "events": list(needed_events(tenant))}
    else:
        hook: dict[str, Any] = {"enabled": True, "url": url}
        if tenant.has_jwt_key:
            hook["headers"] = {"jwt_key": "<jwt-key>"}
        elif tenant.has_webhook_secret:
            hook["headers"] = {"Authorization": "Bearer <secret>"}
        body = {"webhook": {**hook, "byEvents": by_events, "base64": False,
                            "events": list(needed_events(tenant))}}
    target = f"{tenant.evolution_url.rstrip('/')}/webhook/set/{quote(tenant.instance, safe='')}"
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return (f'curl -X POST "{target}" -H "apikey: $EVOLUTION_API_KEY" -H "Content-Type: application/json" '
            f"-d '{data}'")


def _bearer(value: str | None) -> str | None:
    scheme, _, token = (value or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _auth_problem(tenant: TenantConfig, settings: WebhookSettings) -> str | None:
    """What keeps the webhook's headers from authenticating as this tenant (secrets compared, never shown)."""
    by_name = {name.lower(): value for name, value in settings.headers.items()}
    if tenant.jwt_key:
        given = settings.headers.get("jwt_key")  # Evolution looks for exactly this name
        if given is None:
            return "its headers carry no jwt_key, so Evolution sends no JWT (needs Evolution 2.3.0 or newer)"
        if not same_secret(given, tenant.jwt_key):
            return "its jwt_key is not the tenant's JWT key"
        return None
    if tenant.webhook_secret:
        # With a jwt_key among the headers, Evolution replaces Authorization with its own JWT.
        bearer = None if "jwt_key" in settings.headers else _bearer(by_name.get("authorization"))
        if same_secret(bearer, tenant.webhook_secret) or same_secret(by_name.get("x-hybridflow-token"),
                                                                      tenant.webhook_secret):
            return None
        return "its headers carry neither Authorization: Bearer <secret> nor X-Hybridflow-Token with the tenant's " \
               "webhook secret"
    return None


def _webhook_problems(tenant: TenantConfig, settings: WebhookSettings,
                      public_url: str | None) -> tuple[list[str], list[str]]:
    """What is wrong, as (fixed by setting the webhook again, fixed by changing the tenant)."""
    hook: list[str] = []
    tenant_side: list[str] = []
    shown = _printable(settings.url)
    expected = _expected_url(public_url)
    if not re.match(r"https?://", settings.url):
        hook.append(f"its URL {shown!r} is not http(s), so Evolution posts nothing")
    elif expected is not None and not (shown == expected or shown.startswith(expected + "/")):
        hook.append(f"its URL {shown} is not {expected} (from public_url)")
    elif not _WEBHOOK_PATH.search(urlsplit(settings.url).path):
        hook.append(f"its URL {shown} does not point at HybridFlow's {WEBHOOK_PATH}")
    if not settings.enabled:
        hook.append("it is disabled")
    missing = [e for e in needed_events(tenant) if e not in settings.events]
    if settings.enabled and missing:
        hook.append(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} off")
    if settings.base64:
        hook.append("base64 is on (media bodies grow large and can exceed max_body_size)")
    if settings.shape == "v1" and (tenant.jwt_key or tenant.webhook_secret):
        what = "JWT key" if tenant.jwt_key else "webhook secret"
        option = "--jwt-key" if tenant.jwt_key else "--webhook-secret"
        version = "" if tenant.api_version == "v1" else " --api-version v1"
        tenant_side.append(f"Evolution answers in v1 names, and v1 sends no custom headers, so the tenant's {what} "
                           f"never arrives and every webhook is refused: hybridflow tenants update "
                           f"{tenant.instance} {option} ''{version}")
        return hook, tenant_side
    if settings.shape != tenant.api_version:
        tenant_side.append(f"Evolution answered in its {settings.shape} names but the tenant is registered as "
                           f"{tenant.api_version}: hybridflow tenants update {tenant.instance} "
                           f"--api-version {settings.shape}")
    if (auth := _auth_problem(tenant, settings)) is not None:
        hook.append(auth)
    return hook, tenant_side


def webhook_check(tenant: TenantConfig, settings: WebhookSettings | None, public_url: str | None = None) -> Check:
    """Judge an instance's webhook settings against what this tenant needs; failures end with what to do."""
    name = f"webhook {tenant.instance}"
    if settings is None:
        return Check(name, False, f"no webhook is set: set it with {set_webhook_command(tenant, None, public_url)}")
    hook, tenant_side = _webhook_problems(tenant, settings, public_url)
    if hook or tenant_side:
        command = set_webhook_command(tenant, settings, public_url)
        parts = [f"{'; '.join(hook)}: set it again with {command}"] if hook else []
        return Check(name, False, "; ".join([*parts, *tenant_side]))
    mode = " by event" if settings.by_events else ""
    summary = f"{_printable(settings.url)} gets {', '.join(needed_events(tenant))}{mode}, base64 off"
    if tenant.jwt_key:
        return Check(name, True, f"{summary}; auth: jwt_key matches")
    if tenant.webhook_secret:
        return Check(name, True, f"{summary}; auth: the webhook secret matches")
    if settings.shape == "v1":
        return Check(name, True, f"{summary}; warning: webhooks are unauthenticated (Evolution v1 cannot send a "
                                 "secret): keep the URL unguessable and reachable only from Evolution", warning=True)
    return Check(name, True, f"{summary}; warning: webhooks are unauthenticated, anyone who can reach the URL can "
                             f"post as {tenant.instance}: hybridflow tenants update {tenant.instance} "
                             "--webhook-secret <secret> and set the webhook's headers to "
                             '{"Authorization":"Bearer <secret>"}', warning=True)


async def _webhook(service: Service, tenant: TenantConfig) -> Check:
    assert tenant.api_key is not None
    try:
        body = await service.evolution.find_webhook(base_url=tenant.evolution_url, instance=tenant.instance,
                                                    api_key=tenant.api_key, api_version=tenant.api_version)
    except HybridFlowError as exc:
        return Check(f"webhook {tenant.instance}", False,
                     f"{exc.message}: check GET /webhook/find/{tenant.instance} on Evolution by hand")
    return webhook_check(tenant, WebhookSettings.parse(body), service.settings.public_url)


async def diagnose(service: Service) -> list[Check]:
    """Every check, in order; none raises."""
    settings = service.settings
    checks = [Check("config", True, f"loaded from {settings.source or 'defaults and environment'}")]
    checks.append(Check("secret key", service.secrets.available,
                        "set" if service.secrets.available else "not set: API keys cannot be stored or read "
                        "(hybridflow keys generate)"))
    database = await _database(service)
    checks.append(database)
    if database.ok:
        checks.append(await _storage(service))
    tenants = []
    if database.ok:
        try:
            tenants = await service.list_tenants()
        except HybridFlowError as exc:
            checks.append(Check("tenants", False, exc.message))
    if database.ok and not tenants:
        checks.append(Check("tenants", False, f"none yet in {service.store.describe()}: "
                                              "hybridflow tenants add INSTANCE --prompt ..."))
    models: dict[str, list[str]] = {}
    for tenant in tenants:
        models.setdefault(tenant.model, []).append(tenant.instance)
    for model, users in (models or {settings.ollama_model: ["the default"]}).items():
        checks.append(await _model(service, model, ", ".join(users)))
    for tenant in tenants:
        check, answered = await _evolution(service, tenant)
        checks.append(check)
        if answered:  # otherwise the same failure would only be repeated
            checks.append(await _webhook(service, tenant))
        checks.append(commands_check(tenant))
    return checks


def commands_check(tenant: TenantConfig) -> Check:
    """Whether the owner's commands in "Message yourself" are taken, and what is missing if not (a warning)."""
    name = f"phone commands {tenant.instance}"
    if not (tenant.has_webhook_secret or tenant.has_jwt_key):
        return Check(name, True, "off: the tenant has no webhook authentication, so a forged webhook could "
                                 "command the bot; set --webhook-secret (or --jwt-key) to turn them on", warning=True)
    if tenant.owner_jid is None:
        return Check(name, True, "off until the owner's number is known: it is learned when the instance connects "
                                 "(CONNECTION_UPDATE), or set it with hybridflow tenants update "
                                 f"{tenant.instance} --owner-number NUMBER", warning=True)
    return Check(name, True, f"on: write \"{tenant.command_word} help\" in the \"Message yourself\" chat of "
                             f"{tenant.owner_jid.partition('@')[0]}")
