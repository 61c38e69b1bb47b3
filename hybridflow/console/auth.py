"""Signing in to the console: the session cookie, CSRF tokens, who the client is behind a trusted proxy, and the
brake on wrong tokens.

The session cookie is signed, not stored: any ``serve`` with the same admin token accepts it (two of them on one
PostgreSQL), and changing the token signs everyone out. It holds an expiry and a random id, and it is HttpOnly,
SameSite=Strict, and Secure when the console is reached over HTTPS. A form's CSRF token is derived from the
session's id, so it needs no storage either; the sign-in form's own token is a double-submit cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from hybridflow.crypto import same_secret

SESSION_COOKIE = "hf_console"
LOGIN_COOKIE = "hf_login"
SESSION_SECONDS = 12 * 3600.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its random id (which its CSRF token derives from) and when it must sign in again."""

    sid: str
    expires: int


class Signer:
    """Signs and checks session cookies and CSRF tokens with a key derived from the admin token."""

    def __init__(self, admin_token: str, clock: Callable[[], float] = time.time) -> None:
        self._token = admin_token
        self._key = hmac.new(admin_token.encode(), b"hybridflow console session v1", hashlib.sha256).digest()
        self._clock = clock
        self._signed_out: OrderedDict[str, None] = OrderedDict()  # this process's sign-outs, until they expire

    def _mac(self, purpose: str, value: str) -> str:
        return _b64(hmac.new(self._key, f"{purpose}:{value}".encode(), hashlib.sha256).digest())

    def is_token(self, typed: str) -> bool:
        """Whether ``typed`` is the admin token (compared in constant time)."""
        return same_secret(typed, self._token)

    def new_session(self) -> tuple[Session, str]:
        """A new session and its cookie value."""
        session = Session(secrets.token_urlsafe(18), int(self._clock() + SESSION_SECONDS))
        payload = f"{session.expires}.{session.sid}"
        return session, f"{payload}.{self._mac('session', payload)}"

    def session(self, cookie: str | None) -> Session | None:
        """The session a cookie value proves, or None (missing, forged, expired, signed out)."""
        if not cookie or cookie.count(".") != 2:
            return None
        expires, sid, mac = cookie.split(".")
        if not expires.isdigit() or not hmac.compare_digest(mac, self._mac("session", f"{expires}.{sid}")):
            return None
        if int(expires) < self._clock() or sid in self._signed_out:
            return None
        return Session(sid, int(expires))

    def sign_out(self, session: Session) -> None:
        """Refuse this session's cookie from now on in this process (the browser deletes it too)."""
        self._signed_out[session.sid] = None
        while len(self._signed_out) > 10_000:
            self._signed_out.popitem(last=False)

    def csrf(self, session: Session) -> str:
        """The CSRF token of a session's forms."""
        return self._mac("csrf", session.sid)

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(str(given), self.csrf(session))


class Brake:
    """Slows down wrong tokens per client address: after the n-th wrong token in a row, that address waits
    2^(n-1) seconds (up to ``cap``) before its next try; other addresses are not slowed. Forgotten after
    ``forget`` quiet seconds, and at most ``size`` addresses are remembered."""

    def __init__(self, *, cap: float = 60.0, forget: float = 900.0, size: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cap, self.forget, self.size, self.clock = cap, forget, size, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()  # address -> (wrong tokens, last)

    def wait(self, address: str) -> float:
        """Seconds ``address`` must still wait before its next try (0: it may try now)."""
        count, last = self._failures.get(address, (0, 0.0))
        if not count:
            return 0.0
        now = self.clock()
        if now - last > self.forget:
            del self._failures[address]
            return 0.0
        return max(0.0, last + min(2.0 ** (count - 1), self.cap) - now)

    def failed(self, address: str) -> None:
        count, _ = self._failures.pop(address, (0, 0.0))
        self._failures[address] = (count + 1, self.clock())
        while len(self._failures) > self.size:
            self._failures.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


class Proxies:
    """Which peers are trusted reverse proxies, and so what the client's address and scheme really are."""

    def __init__(self, networks: tuple[str, ...] | None) -> None:
        self.networks = tuple(ipaddress.ip_network(n) for n in networks or ())

    def trusted(self, address: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return False
        return any(ip in network for network in self.networks)

    def client(self, request: web.Request) -> str:
        """The client's address: the peer's, or behind trusted proxies the last ``X-Forwarded-For`` hop that is
        not one of them (hops further left could be made up by the client)."""
        peer = request.remote or "unknown"
        if not self.trusted(peer):
            return peer
        hops = [hop.strip() for header in request.headers.getall("X-Forwarded-For", [])
                for hop in header.split(",") if hop.strip()]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop[:64]
        return peer

    def https(self, request: web.Request) -> bool:
        """Whether the browser reached the console over HTTPS: directly, or through a trusted proxy that says so."""
        if request.secure:
            return True
        if not self.trusted(request.remote):
            return False
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        return proto == "https"


def set_cookie(response: web.StreamResponse, name: str, value: str, *, secure: bool, max_age: float) -> None:
    """A console cookie: HttpOnly, SameSite=Strict, under /ui only, Secure over HTTPS."""
    response.set_cookie(name, value, max_age=int(max_age), path="/ui", httponly=True, samesite="Strict",
                        secure=secure)


__all__ = ["Brake", "LOGIN_COOKIE", "Proxies", "SESSION_COOKIE", "Session", "Signer", "set_cookie"]
