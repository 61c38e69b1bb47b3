"""The operator web console: ``serve`` mounts it under /ui when an admin token is set (``create_console``).

Server-rendered pages (Jinja2 through aiohttp-jinja2, autoescaped) with a little JavaScript of our own in
``static/`` (no library, no build step): the chats, a chat, the tenants, and a live stream that refreshes them.
Handlers call the service as the CLI does (``views``). Every answer carries a Content-Security-Policy that allows
no inline script and nothing from elsewhere; errors are pages with their 4xx status, never a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from hybridflow.console import i18n, views
from hybridflow.console.context import CONSOLE, Console, page
from hybridflow.errors import HybridFlowError
from hybridflow.service import Service

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HERE = Path(__file__).parent
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "X-Frame-Options": "DENY"}
# HTTP errors aiohttp raises itself, as the words of the error page.
_REASONS = {403: "form_expired", 404: "not_found"}


@web.middleware
async def console_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Security headers on every answer; a ``HybridFlowError`` or an HTTP error becomes an error page."""
    try:
        response = await handler(request)
    except web.HTTPRedirection as redirect:
        redirect.headers.update(HEADERS)
        raise
    except HybridFlowError as exc:
        response = await _error_page(request, exc.status, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        words = i18n.translator(i18n.choose(request.headers.get("Accept-Language")))
        response = await _error_page(request, exc.status, words(_REASONS.get(exc.status, "error")))
    response.headers.update(HEADERS)
    if not request.path.startswith("/ui/static/"):
        response.headers["Cache-Control"] = "no-store"
    return response


async def _error_page(request: web.Request, status: int, message: str) -> web.StreamResponse:
    console = request.config_dict[CONSOLE]
    context = await page(request, console.session_of(request), status=status, message=message)
    return aiohttp_jinja2.render_template("error.html", request, context, status=status)


def create_console(service: Service, *, feed_interval: float = 1.0) -> web.Application:
    """The console as a sub-application to mount at /ui (``app.add_subapp("/ui", ...)``)."""
    app = web.Application(middlewares=[console_middleware])
    console = Console.create(service, feed_interval=feed_interval)
    app[CONSOLE] = console
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True,
                         undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    views.routes(app)
    app.router.add_static("/static", HERE / "static", append_version=False)

    async def close_streams(_app: web.Application) -> None:
        await console.feed.close()

    app.on_shutdown.append(close_streams)
    return app


__all__ = ["create_console"]
