"""Signing in to the web console from a test's HTTP client, and reading what its pages show."""

from __future__ import annotations

import html
import re
from typing import Any

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    """The CSRF token of a page's forms."""
    match = CSRF.search(page)
    assert match, "the page has no form with a CSRF token"
    return match.group(1)


def text_of(page: str) -> str:
    """A page's visible text, roughly: tags dropped, entities decoded, spaces collapsed (what a user reads)."""
    body = re.sub(r"(?s)<(script|style|head)\b.*?</\1>", " ", page)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body))).strip()


async def sign_in(client: Any, token: str = "admin-token", headers: dict[str, str] | None = None) -> Any:
    """Sign in through the form as a browser does (the form's CSRF cookie, then POST ``token``); the answer."""
    form = await client.get("/ui/login", headers=headers or {})
    assert form.status == 200, await form.text()
    # Sent by hand: over HTTPS behind a proxy the cookie is Secure, which a client on plain HTTP keeps to itself.
    cookie = {"Cookie": f"hf_login={form.cookies['hf_login'].value}"}
    return await client.post("/ui/login", data={"token": token, "csrf": csrf_of(await form.text())},
                             headers={**(headers or {}), **cookie}, allow_redirects=False)
