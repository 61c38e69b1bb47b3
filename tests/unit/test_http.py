"""The httpx transport over aiohttp's client, against real servers on 127.0.0.1: what arrives, what comes back,
and each failure as the httpx error that httpx's own transport raises for it."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from aiohttp import web

from hybridflow.http import AiohttpTransport
from tests.support.ports import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def serve(aiohttp_server) -> Callable[[Handler], Awaitable[str]]:
    """Start an aiohttp server answering every path with ``handler``; returns its base URL."""

    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        server = await aiohttp_server(app)
        return str(server.make_url("")).rstrip("/")

    return start


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=5.0, follow_redirects=False) as http:
        yield http


async def raw_server(answer: bytes | None) -> tuple[str, asyncio.Server]:
    """A TCP server that reads the request and writes ``answer`` (or nothing) before closing."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        if answer is not None:
            writer.write(answer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}", server


async def test_a_post_arrives_as_sent_and_its_answer_comes_back_whole(serve, client):
    seen: dict = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(method=request.method, path=request.raw_path, body=await request.read(),
                    apikey=request.headers.get("apikey"), type=request.headers.get("Content-Type"))
        response = web.json_response({"key": {"id": "ABC"}}, status=201, reason="Created Here")
        response.headers.add("X-Twice", "1")
        response.headers.add("X-Twice", "2")
        return response

    base = await serve(handler)
    response = await client.post(f"{base}/message/sendText/inst%20one?x=a%2Fb", json={"text": "Olá"},
                                 headers={"apikey": "secret"})
    assert seen == {"method": "POST", "path": "/message/sendText/inst%20one?x=a%2Fb",
                    "body": '{"text":"Olá"}'.encode(), "apikey": "secret", "type": "application/json"}
    assert response.status_code == 201
    assert response.reason_phrase == "Created Here"
    assert response.json() == {"key": {"id": "ABC"}}
    assert response.headers.get_list("X-Twice") == ["1", "2"]
    assert response.http_version == "HTTP/1.1"


async def test_a_request_without_a_body_gets_no_content_type(serve, client):
    seen: dict = {}

    async def handler(request: web.Request) -> web.Response:
        seen.update(type=request.headers.get("Content-Type"), body=await request.read())
        return web.Response(text="ok")

    base = await serve(handler)
    assert (await client.get(f"{base}/instance/connectionState/x")).text == "ok"
    assert seen == {"type": None, "body": b""}


async def test_a_gzip_body_is_decoded(serve, client):
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=gzip.compress(b'{"ok": true}'),
                            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    base = await serve(handler)
    assert (await client.get(f"{base}/x")).json() == {"ok": True}


async def test_redirects_are_left_to_the_httpx_client(serve):
    async def handler(request: web.Request) -> web.Response:
        if request.path == "/old":
            raise web.HTTPFound("/new")
        return web.Response(text=f"at {request.path}")

    base = await serve(handler)
    async with httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=False) as strict:
        response = await strict.get(f"{base}/old")
        assert (response.status_code, response.headers["Location"]) == (302, "/new")
    async with httpx.AsyncClient(transport=AiohttpTransport(), follow_redirects=True) as following:
        assert (await following.get(f"{base}/old")).text == "at /new"


async def test_a_streamed_body_arrives_in_pieces_and_whole(serve, client):
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(4):
            await response.write(b"x" * 100_000)
        await response.write_eof()
        return response

    base = await serve(handler)
    async with client.stream("GET", f"{base}/big") as response:
        pieces = [piece async for piece in response.aiter_bytes()]
    assert sum(map(len, pieces)) == 400_000


async def test_connections_are_kept_alive_between_requests(serve, client):
    peers: list = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.Response(text="ok")

    base = await serve(handler)
    for _ in range(3):
        await client.get(f"{base}/x")
    assert len(peers) == 3 and len(set(peers)) == 1


async def test_a_refused_connection_is_a_connect_error(client):
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{free_port()}/x")


async def test_a_slow_answer_is_a_read_timeout(serve, client):
    async def handler(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return web.Response(text="late")

    base = await serve(handler)
    with pytest.raises(httpx.ReadTimeout):
        await client.get(f"{base}/slow", timeout=0.2)


async def test_a_server_that_hangs_up_is_a_remote_protocol_error(client):
    url, server = await raw_server(None)
    async with server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{url}/x")


async def test_an_answer_that_is_not_http_is_a_remote_protocol_error(client):
    url, server = await raw_server(b"this is not HTTP at all\r\n\r\n")
    async with server:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(f"{url}/x")


async def test_a_url_that_is_not_http_is_an_unsupported_protocol(client):
    with pytest.raises(httpx.UnsupportedProtocol):
        await client.get("ftp://127.0.0.1/file")


async def test_the_proxy_of_the_environment_is_used_unless_no_proxy_names_the_host(serve, monkeypatch):
    async def target(request: web.Request) -> web.Response:
        return web.Response(text="direct")

    async def proxy(request: web.Request) -> web.Response:
        return web.Response(text=f"proxied {request.url}")

    base, proxy_base = await serve(target), await serve(proxy)
    monkeypatch.setenv("HTTP_PROXY", proxy_base)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        assert (await http.get(f"{base}/x")).text == f"proxied {base}/x"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    async with httpx.AsyncClient(transport=AiohttpTransport()) as http:
        assert (await http.get(f"{base}/x")).text == "direct"
