"""An httpx transport that sends through aiohttp's client: httpx's API and errors, aiohttp's connection pool.

httpx's own transport (httpcore on anyio, h11) costs about ten times the CPU of aiohttp's client per request
(encode/httpx#3215), and every reply makes two or three such requests (the model, then Evolution). The clients
of ``evolution.py``, ``llm.py`` (through ollama's ``AsyncClient``) and ``hooks.py`` keep speaking httpx; only the
wire goes through aiohttp, which ``serve`` already runs on.

What httpx's transport would do, this one does too:

    timeouts        httpx's connect / read / pool values; pool + connect bound the wait for a connection
    errors          aiohttp's mapped onto httpx's tree: ConnectError, ConnectTimeout, ReadTimeout, ReadError,
                    RemoteProtocolError, UnsupportedProtocol (a URL that is not http or https)
    redirects       never followed here (the httpx client follows them when it is asked to)
    content         the body as received: httpx decodes gzip and deflate itself
    proxies         HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY, read when the transport is made, as httpx's
                    default client reads them when it is made
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator, Iterator

import aiohttp
import httpx
from yarl import URL

_SCHEMES = frozenset({"http", "https"})
_NO_AUTO_HEADERS = frozenset({"Content-Type"})  # httpx names the body's type itself, or means none


class AiohttpTransport(httpx.AsyncBaseTransport):
    """Requests from an ``httpx.AsyncClient``, sent with one ``aiohttp.ClientSession`` (opened on first use)."""

    def __init__(self, *, max_connections: int = 100, keepalive_expiry: float = 5.0) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Read once: aiohttp's trust_env would read the environment and ~/.netrc again on every request.
        self._proxies = urllib.request.getproxies_environment()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.scheme not in _SCHEMES or not request.url.host:
            raise httpx.UnsupportedProtocol(f"{str(request.url)[:200]!r} is not an http:// or https:// URL",
                                            request=request)
        session = self._open()
        timeout = request.extensions.get("timeout", {})
        with _httpx_errors(request):
            response = await session.request(
                request.method, URL(str(request.url), encoded=True),
                headers=[(name.decode("latin-1"), value.decode("latin-1")) for name, value in request.headers.raw],
                data=await request.aread() or None, allow_redirects=False, skip_auto_headers=_NO_AUTO_HEADERS,
                timeout=_client_timeout(timeout), proxy=self._proxy_for(request.url))
        return httpx.Response(
            response.status, headers=list(response.raw_headers), stream=_Body(response, request),
            extensions={"http_version": f"HTTP/{response.version.major}.{response.version.minor}".encode(),
                        "reason_phrase": (response.reason or "").encode("latin-1", "replace")},
            request=request)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _proxy_for(self, url: httpx.URL) -> str | None:
        if not self._proxies:
            return None
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        if proxy is None or urllib.request.proxy_bypass_environment(url.host, self._proxies):
            return None
        return proxy

    def _open(self) -> aiohttp.ClientSession:
        """The session, created in the running loop the first time (and again if that loop has ended)."""
        session, loop = self._session, asyncio.get_running_loop()
        if session is None or session.closed or self._loop is not loop:
            self._loop = loop
            connector = aiohttp.TCPConnector(limit=self._max_connections, keepalive_timeout=self._keepalive_expiry)
            session = self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                            trust_env=False, cookie_jar=aiohttp.DummyCookieJar())
        return session


class _Body(httpx.AsyncByteStream):
    """The response body, read from aiohttp as httpx asks for it; closing it hands the connection back."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _httpx_errors(self._request):
            async for chunk in self._response.content.iter_any():
                yield chunk

    async def aclose(self) -> None:
        self._response.release()


def _client_timeout(timeout: dict[str, float | None]) -> aiohttp.ClientTimeout:
    connect, pool = timeout.get("connect"), timeout.get("pool")
    waiting = None if connect is None or pool is None else connect + pool
    return aiohttp.ClientTimeout(total=None, connect=waiting, sock_connect=connect, sock_read=timeout.get("read"))


@contextlib.contextmanager
def _httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as the httpx exceptions its own transport raises for the same failure."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(_text(exc, "timed out connecting"), request=request) from exc
    except (aiohttp.ServerTimeoutError, asyncio.TimeoutError) as exc:  # sock_read, or a stalled body
        raise httpx.ReadTimeout(_text(exc, "timed out reading the response"), request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS handshake
        raise httpx.ConnectError(_text(exc, "connection failed"), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        raise httpx.RemoteProtocolError(_text(exc, "server disconnected without sending a response"),
                                        request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientOSError) as exc:
        raise httpx.ReadError(_text(exc, "connection lost"), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # a response that is not valid HTTP
        raise httpx.RemoteProtocolError(_text(exc, "invalid HTTP response"), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(_text(exc, "invalid URL"), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(_text(exc, type(exc).__name__), request=request) from exc


def _text(exc: BaseException, fallback: str) -> str:
    return str(exc) or fallback
