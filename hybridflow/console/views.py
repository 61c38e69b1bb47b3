"""The console's handlers: each reads the request, calls the service (the same calls as the CLI's commands), and
renders a template or redirects. No rule of the bot lives here."""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import urlencode

import aiohttp_jinja2
from aiohttp import web

from hybridflow.config import parse_duration
from hybridflow.console import present
from hybridflow.console.auth import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS, Session, set_cookie
from hybridflow.console.context import CONSOLE, Console, page
from hybridflow.console.live import stream
from hybridflow.errors import BadRequest
from hybridflow.service import ChatFilter, ChatState

PAGE_SIZE = 25
ACTOR = "console"
DURATIONS = ("30m", "1h", "2h", "4h", "1d")  # the pause form's choices; "" is until resumed
DONE = {"paused": "done_paused", "resumed": "done_resumed", "retried": "done_retried", "not_paused": "not_paused"}


def _console(request: web.Request) -> Console:
    return request.config_dict[CONSOLE]


# -- signing in -------------------------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    """GET /ui/login: the form; its CSRF token is a cookie of its own (a double submit)."""
    console = _console(request)
    if console.session_of(request) is not None:
        raise web.HTTPSeeOther("/ui")
    return await _login_page(request, console, status=200)


async def _login_page(request: web.Request, console: Console, *, status: int, problem: str | None = None,
                      retry_after: int | None = None) -> web.StreamResponse:
    token = console.new_login_token()
    response = aiohttp_jinja2.render_template("login.html", request, await page(request, problem=problem, csrf=token, retry_after=retry_after),
                                              status=status)
    set_cookie(response, LOGIN_COOKIE, token, secure=console.proxies.https(request), max_age=3600)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    """POST /ui/login (field ``token``): the session cookie, or 401; 429 while this address must wait."""
    console = _console(request)
    form = await request.post()
    if not console.login_token_ok(request.cookies.get(LOGIN_COOKIE), form.get("csrf")):
        return await _login_page(request, console, status=403, problem="form_expired")
    client = console.proxies.client(request)
    wait = console.brake.wait(client)
    if wait > 0:
        seconds = math.ceil(wait)
        return await _login_page(request, console, status=429, problem="slow_down", retry_after=seconds)
    typed = form.get("token")
    if not isinstance(typed, str) or not console.signer.is_token(typed.strip()):
        console.brake.failed(client)
        console.log.warning("console.sign_in_failed", client=client)
        return await _login_page(request, console, status=401, problem="wrong_token")
    console.brake.succeeded(client)
    _session, cookie = console.signer.new_session()
    console.log.info("console.signed_in", client=client)
    response = web.HTTPSeeOther("/ui")
    set_cookie(response, SESSION_COOKIE, cookie, secure=console.proxies.https(request), max_age=SESSION_SECONDS)
    response.del_cookie(LOGIN_COOKIE, path="/ui")
    raise response


async def logout(request: web.Request) -> web.StreamResponse:
    """POST /ui/logout: the session ends (its cookie is refused and deleted)."""
    console = _console(request)
    session = await _form_session(request)
    console.signer.sign_out(session)
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(SESSION_COOKIE, path="/ui")
    raise response


def _session(request: web.Request) -> Session:
    """The signed-in session; a page asked without one goes to the sign-in form."""
    session = _console(request).session_of(request)
    if session is None:
        raise web.HTTPSeeOther("/ui/login")
    return session


async def _form_session(request: web.Request) -> Session:
    """The session of a form POST, whose CSRF token must match it (403 otherwise: nothing is done)."""
    console = _console(request)
    session = console.session_of(request)
    form = await request.post()
    if session is None or not console.signer.csrf_ok(session, form.get("csrf")):  # type: ignore[arg-type]
        raise web.HTTPForbidden(reason="form_expired")
    return session


# -- pages ------------------------------------------------------------------------------------------------------


def _page_number(value: str | None) -> int:
    if value is None or value == "":
        return 1
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise BadRequest(f"page must be a number from 1, got {value[:20]!r}")
    return int(value)


def _state(value: str | None) -> ChatState | None:
    if not value:
        return None
    try:
        return ChatState(value)
    except ValueError:
        raise BadRequest(f"unknown filter {value[:20]!r}: paused, active, waiting or failed") from None


async def chats(request: web.Request) -> web.StreamResponse:
    """GET /ui: chats of every tenant (or ``?instance=``), paused first; ``?state=``, ``?q=``, ``?page=``."""
    session = _session(request)
    context = await page(request, session)  # the cursor before the data: a change after it reaches the page live
    service = _console(request).service
    query = request.query
    instance = query.get("instance") or None
    search = (query.get("q") or "").strip()[:100] or None
    state, number = _state(query.get("state")), _page_number(query.get("page"))
    rows, total = await service.chat_overview(
        ChatFilter(instance=instance, state=state, search=search, paused_first=True),
        limit=PAGE_SIZE, offset=(number - 1) * PAGE_SIZE)
    tenants = {t.instance: t for t in await service.list_tenants()}
    pages = max(1, math.ceil(total / PAGE_SIZE))
    kept = {k: v for k, v in (("instance", instance), ("state", state and str(state)), ("q", search)) if v}
    return aiohttp_jinja2.render_template("chats.html", request, context | dict(
        rows=rows, total=total, page_number=number, pages=pages, tenants=tenants,
        instance=instance, state=state and str(state), search=search or "", live="list", section="chats",
        filtered=bool(kept), link=lambda **change: "/ui?" + urlencode({**kept, **change})))


async def chat(request: web.Request) -> web.StreamResponse:
    """GET /ui/chats/{instance}/{chat_id}: transcript, pauses, history and replies, with the buttons."""
    context = await page(request, _session(request))
    instance, chat_id = request.match_info["instance"], request.match_info["chat_id"]
    tenant, detail = await _console(request).service.chat_detail(instance, chat_id, limit=100)
    done = DONE.get(request.query.get("done", ""))
    return aiohttp_jinja2.render_template("chat.html", request, context | dict(
        tenant=tenant, detail=detail, view=detail.session, done=done, durations=DURATIONS,
        live=f"chat:{detail.session.instance}/{detail.session.chat_id}", section="chats"))


async def tenants(request: web.Request) -> web.StreamResponse:
    """GET /ui/tenants: each tenant's day, queue, hours and the last 24 hours."""
    context = await page(request, _session(request))
    days = await _console(request).service.tenant_days()
    return aiohttp_jinja2.render_template("tenants.html", request, context | dict(
        days=days, charts={d.tenant.instance: present.chart(d.hours, d.tenant.zone) for d in days},
        live="tenants", section="tenants"))


async def events(request: web.Request) -> web.StreamResponse:
    """GET /ui/events: the live stream (server-sent events) of a signed-in browser."""
    console = _console(request)
    if console.session_of(request) is None:
        raise web.HTTPUnauthorized(reason="not signed in")
    return await stream(request, console.feed)


# -- actions: the CLI's service calls -------------------------------------------------------------------------


def _back(request: web.Request, instance: str, chat_id: str, done: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(f"{present.chat_url(instance, chat_id)}?done={done}")


async def pause(request: web.Request) -> web.StreamResponse:
    """POST .../pause (``for``: a duration such as 2h; empty: until resumed)."""
    await _form_session(request)
    typed = (await request.post()).get("for") or ""
    try:
        seconds = parse_duration(typed) if isinstance(typed, str) and typed.strip() else None
    except ValueError as exc:
        raise BadRequest(f"invalid pause length: {exc}") from None
    view = await _console(request).service.pause(request.match_info["instance"], request.match_info["chat_id"],
                                                 duration=seconds, actor=ACTOR)
    raise _back(request, view.instance, view.chat_id, "paused")


async def resume(request: web.Request) -> web.StreamResponse:
    """POST .../resume: every pause of the chat is lifted."""
    await _form_session(request)
    view = await _console(request).service.resume(request.match_info["instance"], request.match_info["chat_id"],
                                                  actor=ACTOR)
    raise _back(request, view.instance, view.chat_id, "not_paused" if view.note and "not paused" in view.note
                else "resumed")


async def retry(request: web.Request) -> web.StreamResponse:
    """POST .../retry (``reply``: the failed reply's id)."""
    await _form_session(request)
    typed = (await request.post()).get("reply")
    if not isinstance(typed, str) or not typed.isdigit() or len(typed) > 18:
        raise BadRequest("the form must name the reply to retry")
    retried = await _console(request).service.retry(request.match_info["instance"], request.match_info["chat_id"],
                                                    reply=int(typed), actor=ACTOR)
    raise _back(request, retried.instance, retried.chat_id, "retried")


def routes(app: web.Application) -> None:
    """Every route of the console, under the sub-application's /ui."""
    app.router.add_get("", chats)
    app.router.add_get("/", chats)
    app.router.add_get("/login", login_form)
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout)
    app.router.add_get("/tenants", tenants)
    app.router.add_get("/events", events)
    app.router.add_get("/chats/{instance}/{chat_id}", chat)
    for action in (pause, resume, retry):
        app.router.add_post(f"/chats/{{instance}}/{{chat_id}}/{action.__name__}", action)


__all__: list[Any] = ["routes"]
