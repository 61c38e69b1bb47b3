"""Webhook authentication: the tenant's shared secret or Evolution's JWT, and the body's ``apikey``."""

from __future__ import annotations

from dataclasses import dataclass

import jwt
import structlog

from hybridflow import events as ev
from hybridflow.crypto import same_secret
from hybridflow.errors import AuthenticationFailed, Unavailable
from hybridflow.service.tenants import TenantConfig

log = structlog.get_logger("hybridflow.service")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What a webhook request presented: a bearer token and/or an X-Hybridflow-Token header."""

    bearer: str | None = None
    token: str | None = None
    trusted: bool = False  # replay from the operator's own terminal


TRUSTED = Credentials(trusted=True)


def authenticate(tenant: TenantConfig, event: ev.Event, credentials: Credentials) -> None:
    """Check a webhook's credentials against the tenant's secret, JWT key and Evolution key (constant time)."""
    if credentials.trusted:
        return
    if tenant.secret_error and (tenant.has_jwt_key or tenant.has_webhook_secret):
        raise Unavailable(f"cannot check webhooks of {tenant.instance!r}: {tenant.secret_error}")
    if tenant.jwt_key:
        try:
            jwt.decode(credentials.bearer or "", tenant.jwt_key, algorithms=["HS256"], options={"require": ["exp"]})
        except jwt.PyJWTError as exc:
            _reject(tenant, f"invalid webhook JWT: {exc}")
    elif tenant.webhook_secret:
        if not (same_secret(credentials.bearer, tenant.webhook_secret)
                or same_secret(credentials.token, tenant.webhook_secret)):
            _reject(tenant, "missing or wrong webhook secret")
    if tenant.api_key and event.apikey and not same_secret(event.apikey, tenant.api_key):
        _reject(tenant, "the body's apikey does not match the tenant's Evolution API key")


def _reject(tenant: TenantConfig, reason: str) -> None:
    log.warning("webhook.unauthorized", tenant=tenant.instance, reason=reason)
    raise AuthenticationFailed(reason)
