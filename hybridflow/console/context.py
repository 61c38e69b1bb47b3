"""What every console handler shares: the service, the signer, the brake, the proxies, the live feed (one
``Console`` per application, under ``CONSOLE``), and the values every template gets."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from typing import Any

import structlog
from aiohttp import web

from hybridflow.console import i18n, present
from hybridflow.console.auth import SESSION_COOKIE, Brake, Proxies, Session, Signer
from hybridflow.console.live import ChangeFeed
from hybridflow.service import Service

STATIC_VERSION = "1"  # bump when console.css or console.js change: browsers fetch them again


@dataclass
class Console:
    service: Service
    signer: Signer
    brake: Brake
    proxies: Proxies
    feed: ChangeFeed
    log: Any

    @classmethod
    def create(cls, service: Service, *, feed_interval: float = 1.0) -> Console:
        assert service.settings.admin_token, "the console is only served with an admin token"
        return cls(service, Signer(service.settings.admin_token), Brake(), Proxies(service.settings.trusted_proxies),
                   ChangeFeed(service, interval=feed_interval), structlog.get_logger("hybridflow.console"))

    def session_of(self, request: web.Request) -> Session | None:
        return self.signer.session(request.cookies.get(SESSION_COOKIE))

    @staticmethod
    def new_login_token() -> str:
        return secrets.token_urlsafe(18)

    @staticmethod
    def login_token_ok(cookie: str | None, field: object) -> bool:
        return bool(cookie) and isinstance(field, str) and hmac.compare_digest(cookie, field)  # type: ignore[arg-type]


CONSOLE = web.AppKey("console", Console)


async def page(request: web.Request, session: Session | None = None, **values: Any) -> dict[str, Any]:
    """A template's context: the language and its words, the CSRF token, the clock, the change cursor the page
    was read at (its live stream starts there), and ``values``."""
    console = request.config_dict[CONSOLE]
    language = i18n.choose(request.headers.get("Accept-Language"))
    cursor = (await console.service.cursor()).token if session is not None else ""
    return {"t": i18n.translator(language), "lang": language, "now": console.service.clock(), "session": session,
            "csrf": console.signer.csrf(session) if session is not None else "", "cursor": cursor,
            "static": STATIC_VERSION, "p": present, "i18n": i18n, **values}


__all__ = ["CONSOLE", "Console", "page"]
