"""``hybridflow doctor``: check the configuration, the database, Ollama and every tenant's Evolution instance."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from hybridflow.errors import HybridFlowError
from hybridflow.models import SCHEMA_VERSION

if TYPE_CHECKING:
    from hybridflow.service import Service


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the checklist."""

    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


async def _database(service: Service) -> Check:
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


async def _evolution(service: Service, tenant) -> Check:  # type: ignore[no-untyped-def]
    name = f"tenant {tenant.instance}"
    if tenant.secret_error:
        return Check(name, False, tenant.secret_error)
    if not tenant.api_key:
        return Check(name, False, "no Evolution API key: replies cannot be sent "
                                  f"(hybridflow tenants update {tenant.instance} --api-key KEY)")
    try:
        state = await service.evolution.check_instance(
            base_url=tenant.evolution_url, instance=tenant.instance, api_key=tenant.api_key)
    except HybridFlowError as exc:
        return Check(name, False, exc.message)
    if state != "open":
        return Check(name, False, f"Evolution at {tenant.evolution_url} reports the instance {state!r}, not "
                                  "'open': reconnect the phone")
    auth = "jwt" if tenant.has_jwt_key else "shared secret" if tenant.has_webhook_secret else "none (recommended: "\
        "--webhook-secret)"
    return Check(name, True, f"Evolution at {tenant.evolution_url}: connected, key accepted; webhook auth: {auth}")


async def diagnose(service: Service) -> list[Check]:
    """Every check, in order; none raises."""
    settings = service.settings
    checks = [Check("config", True, f"loaded from {settings.source or 'defaults and environment'}")]
    checks.append(Check("secret key", service.secrets.available,
                        "set" if service.secrets.available else "not set: API keys cannot be stored or read "
                        "(hybridflow keys generate)"))
    database = await _database(service)
    checks.append(database)
    tenants = []
    if database.ok:
        try:
            tenants = await service.list_tenants()
        except HybridFlowError as exc:
            checks.append(Check("tenants", False, exc.message))
    if database.ok and not tenants:
        checks.append(Check("tenants", False, "none yet: hybridflow tenants add INSTANCE --prompt ..."))
    models: dict[str, list[str]] = {}
    for tenant in tenants:
        models.setdefault(tenant.model, []).append(tenant.instance)
    for model, users in (models or {settings.ollama_model: ["the default"]}).items():
        checks.append(await _model(service, model, ", ".join(users)))
    for tenant in tenants:
        checks.append(await _evolution(service, tenant))
    return checks
