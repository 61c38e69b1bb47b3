"""The web console over HTTP (issue 14), on both databases: off without an admin token, signing in (cookie flags,
CSRF, wrong tokens slowed down per client address, behind a trusted proxy or not), every page and action with its
status code, hostile customer text shown as text under a CSP without inline scripts, Portuguese or English, and
the live stream with its catch-up."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from hybridflow.config import Settings
from hybridflow.models import JOBS
from hybridflow.service import Service
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY, with_settings
from tests.support.builders import CUSTOMER, owner, run_due, upsert
from tests.support.console import csrf_of, sign_in, text_of
from tests.support.fakes import FakeEvolution

XSS_TEXT = "<script>alert(1)</script>"
XSS_NAME = '"><img src=x onerror=alert(2)>'
OTHER = "5511922223333@s.whatsapp.net"
CHAT_URL = f"/ui/chats/test-instance/{CUSTOMER}"


@pytest.fixture
async def client(service: Service, tenant, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    """The app with the console (the admin token is set), without the background worker."""
    return await aiohttp_client(create_app(service, background=False))


@pytest.fixture
async def signed_in(client: TestClient) -> TestClient:
    response = await sign_in(client)
    assert response.status == 303 and response.headers["Location"] == "/ui"
    return client


@pytest.fixture
async def proxied(settings: Settings, clock, tenant, aiohttp_client) -> AsyncIterator[TestClient]:  # type: ignore[no-untyped-def]
    """The console behind a reverse proxy on 127.0.0.1 that the settings trust."""
    async with Service.open(with_settings(settings, trusted_proxies=("127.0.0.1/32",)), clock=clock) as service:
        yield await aiohttp_client(create_app(service, background=False))


async def test_the_console_is_404_without_an_admin_token(settings: Settings, clock, aiohttp_client):  # type: ignore[no-untyped-def]
    async with Service.open(with_settings(settings, admin_token=None), clock=clock) as service:
        client = await aiohttp_client(create_app(service, background=False))
        for path in ("/ui", "/ui/login", CHAT_URL, "/ui/static/console.css"):
            assert (await client.get(path, allow_redirects=False)).status == 404, path


async def test_without_a_session_pages_go_to_the_sign_in_and_actions_are_refused(client: TestClient,
                                                                                 service: Service):
    await service.ingest(upsert("Olá"), "{}")
    for path in ("/ui", "/ui/", "/ui/tenants", CHAT_URL, "/ui/chats/nope/123"):
        response = await client.get(path, allow_redirects=False)
        assert (response.status, response.headers.get("Location")) == (303, "/ui/login"), path
    for action in ("pause", "resume", "retry"):
        assert (await client.post(f"{CHAT_URL}/{action}", data={"csrf": "x"})).status == 403
    assert (await client.get("/ui/events")).status == 401
    assert not (await service.session("test-instance", CUSTOMER)).is_paused
    form = await client.get("/ui/login")
    page = await form.text()
    assert form.status == 200 and 'method="post" action="/ui/login"' in page and 'name="token"' in page


async def test_signing_in_sets_a_strict_http_only_cookie_and_signing_out_ends_it(client: TestClient):
    wrong = await sign_in(client, "not-the-token")
    assert wrong.status == 401 and "That token is not right." in text_of(await wrong.text())
    assert "hf_console" not in wrong.cookies
    await asyncio.sleep(1.05)  # the brake's first wait (a second) after one wrong token
    right = await sign_in(client)
    assert right.status == 303 and right.headers["Location"] == "/ui"
    cookie = next(v for v in right.headers.getall("Set-Cookie") if v.startswith("hf_console="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP, no trusted proxy
    home = await client.get("/ui")
    assert home.status == 200 and "Sign out" in text_of(await home.text())
    out = await client.post("/ui/logout", data={"csrf": csrf_of(await home.text())}, allow_redirects=False)
    assert (out.status, out.headers["Location"]) == (303, "/ui/login")
    client.session.cookie_jar.update_cookies({"hf_console": cookie.split(";")[0].split("=", 1)[1]})
    again = await client.get("/ui", allow_redirects=False)  # the old cookie, sent again, is refused
    assert again.status == 303


async def test_a_sign_in_without_its_form_token_is_refused(client: TestClient):
    response = await client.post("/ui/login", data={"token": "admin-token"}, allow_redirects=False)
    assert response.status == 403 and "This form expired" in text_of(await response.text())


async def test_the_token_never_appears_in_a_log_line_or_a_url(client: TestClient):
    with capture_logs() as logs:
        await sign_in(client, "wrong-secret-typed")
        await asyncio.sleep(1.05)
        response = await sign_in(client)
    assert response.status == 303
    assert not any("admin-token" in repr(line) or "wrong-secret-typed" in repr(line) for line in logs), logs
    assert {line["event"] for line in logs} >= {"console.sign_in_failed", "console.signed_in"}


async def test_wrong_tokens_slow_down_that_client_only(proxied: TestClient):
    attacker, neighbour = {"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "198.51.100.2, 203.0.113.8"}
    assert (await sign_in(proxied, "guess-1", attacker)).status == 401
    slowed = await sign_in(proxied, "admin-token", attacker)  # even the right token waits its turn
    assert slowed.status == 429 and int(slowed.headers["Retry-After"]) >= 1
    assert "Too many wrong tokens" in text_of(await slowed.text())
    assert (await sign_in(proxied, "admin-token", neighbour)).status == 303  # another address is not slowed


async def test_an_untrusted_peer_cannot_pick_its_address_or_claim_https(client: TestClient):
    assert (await sign_in(client, "guess", {"X-Forwarded-For": "203.0.113.7"})).status == 401
    assert (await sign_in(client, "admin-token", {"X-Forwarded-For": "203.0.113.99"})).status == 429
    await asyncio.sleep(1.05)
    right = await sign_in(client, headers={"X-Forwarded-Proto": "https"})
    cookie = next(v for v in right.headers.getall("Set-Cookie") if v.startswith("hf_console="))
    assert "Secure" not in cookie


async def test_behind_a_trusted_proxy_over_https_the_cookie_is_secure(proxied: TestClient):
    right = await sign_in(proxied, headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.5"})
    cookie = next(v for v in right.headers.getall("Set-Cookie") if v.startswith("hf_console="))
    assert right.status == 303 and "Secure" in cookie and "HttpOnly" in cookie


async def test_hostile_customer_text_is_shown_as_text_under_a_strict_csp(signed_in: TestClient, service: Service):
    await service.ingest(upsert(XSS_TEXT, push_name=XSS_NAME), "{}")
    for path in ("/ui", CHAT_URL):
        response = await signed_in.get(path)
        page = await response.text()
        assert response.status == 200
        assert "<script>alert" not in page and "<img src=x" not in page
        assert XSS_TEXT in text_of(page) and XSS_NAME in text_of(page)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
        assert not re.search(r"<script(?![^>]*\bsrc=)", page), "an inline script"
        assert not re.search(r"<[^>]+\son\w+\s*=", page), "an event handler attribute"


async def test_the_list_puts_paused_chats_first_with_their_reason_and_filters_and_searches(
        signed_in: TestClient, service: Service, clock):
    await service.ingest(upsert("Oi", chat=OTHER, push_name="Joana"), "{}")
    clock.advance(minutes=1)
    await service.ingest(upsert("Olá", push_name="Maria"), "{}")  # the most recent
    await service.pause("test-instance", OTHER, duration=72 * 60)
    page = text_of(await (await signed_in.get("/ui")).text())
    assert page.index("Joana") < page.index("Maria")  # paused first
    assert "Paused operator resumes in 1 h 12 min" in page and "Bot answering" in page
    paused = text_of(await (await signed_in.get("/ui?state=paused")).text())
    assert "Joana" in paused and "Maria" not in paused
    active = text_of(await (await signed_in.get("/ui?state=active")).text())
    assert "Maria" in active and "Joana" not in active
    waiting = text_of(await (await signed_in.get("/ui?state=waiting")).text())
    assert "Maria" in waiting and "reply on its way" in waiting and "Joana" not in waiting
    assert "No chats match." in text_of(await (await signed_in.get("/ui?state=failed")).text())
    by_name = text_of(await (await signed_in.get("/ui?q=joa")).text())
    by_number = text_of(await (await signed_in.get("/ui?q=98765-4321")).text())
    assert "Joana" in by_name and "Maria" not in by_name and "Maria" in by_number and "Joana" not in by_number
    mine = text_of(await (await signed_in.get("/ui?instance=test-instance")).text())
    assert "Joana" in mine and "Maria" in mine


async def test_the_list_has_pages(signed_in: TestClient, service: Service):
    for n in range(26):
        await service.ingest(upsert(f"Mensagem {n}", chat=f"55119100000{n:02d}@s.whatsapp.net",
                                    push_name=f"Cliente {n:02d}"), "{}")
    first = text_of(await (await signed_in.get("/ui")).text())
    second = text_of(await (await signed_in.get("/ui?page=2")).text())
    assert "Page 1 of 2 · 26 chats" in first and "Next" in first
    assert "Page 2 of 2 · 26 chats" in second and "Cliente 00" in second and "Cliente 00" not in first


@pytest.mark.parametrize(("path", "status"), [("/ui?state=sleeping", 400), ("/ui?page=0", 400),
                                              ("/ui?page=abc", 400), ("/ui?instance=nope", 404),
                                              ("/ui/chats/test-instance/5511911112222", 404),
                                              ("/ui/chats/nope/5511911112222", 404), ("/ui/nothing", 404)])
async def test_bad_input_is_a_precise_error_page(signed_in: TestClient, path: str, status: int):
    response = await signed_in.get(path)
    assert response.status == status
    assert response.content_type == "text/html" and "Content-Security-Policy" in response.headers


async def test_a_chat_shows_its_transcript_authors_media_history_and_replies(
        signed_in: TestClient, service: Service, fake_evolution: FakeEvolution):
    fake_evolution.api_key = EVOLUTION_API_KEY
    await service.ingest(upsert("Tem pão?"), "{}")
    await service.ingest(upsert(None), "{}")  # a voice message
    await service.ingest(upsert("Veja", imageMessage=None), "{}")
    await run_due(service)
    await service.ingest(owner("Oi Maria, aqui é o João!"), "{}")
    page = text_of(await (await signed_in.get(CHAT_URL)).text())
    assert "Customer" in page and "Owner" in page and "Bot" in page
    assert "voice message" in page and "Tem pão?" in page and "Oi Maria, aqui é o João!" in page
    assert "Paused owner typed" in page and "paused · owner typed by" in page
    assert "sent #1 · reply · 1 attempt ·" in page


async def test_pause_resume_and_retry_are_the_services_calls_and_need_the_csrf_token(
        signed_in: TestClient, service: Service, fake_evolution: FakeEvolution):
    fake_evolution.api_key = EVOLUTION_API_KEY
    await service.ingest(upsert("Tem pão?"), "{}")
    fake_evolution.fail_next(400)
    assert await run_due(service) == ["failed"]
    page = await (await signed_in.get(CHAT_URL)).text()
    csrf = csrf_of(page)
    assert "Retry" in text_of(page)

    assert (await signed_in.post(f"{CHAT_URL}/pause", data={"for": "30m"})).status == 403
    assert (await signed_in.post(f"{CHAT_URL}/pause", data={"for": "30m", "csrf": "forged"})).status == 403
    assert not (await service.session("test-instance", CUSTOMER)).is_paused
    bad = await signed_in.post(f"{CHAT_URL}/pause", data={"for": "soon", "csrf": csrf})
    assert bad.status == 400 and "invalid pause length" in text_of(await bad.text())

    paused = await signed_in.post(f"{CHAT_URL}/pause", data={"for": "30m", "csrf": csrf}, allow_redirects=False)
    assert (paused.status, paused.headers["Location"]) == (303, f"{CHAT_URL}?done=paused")
    view = await service.session("test-instance", CUSTOMER)
    assert view.is_paused and view.paused_by == "console" and view.resumes_at is not None
    refused = await signed_in.post(f"{CHAT_URL}/retry", data={"reply": "1", "csrf": csrf})
    assert refused.status == 409 and "resume it first" in text_of(await refused.text())
    resumed = await signed_in.post(f"{CHAT_URL}/resume", data={"csrf": csrf})
    assert resumed.status == 200 and "Resumed: the bot answers the next message." in text_of(await resumed.text())
    assert not (await service.session("test-instance", CUSTOMER)).is_paused

    retried = await signed_in.post(f"{CHAT_URL}/retry", data={"reply": "1", "csrf": csrf}, allow_redirects=False)
    assert retried.status == 303
    async with service.store.read() as conn:
        assert (await conn.execute(sa.select(JOBS.c.status))).scalars().all() == ["retry"]
    assert (await signed_in.post(f"{CHAT_URL}/retry", data={"reply": "x", "csrf": csrf})).status == 400
    forever = await signed_in.post(f"{CHAT_URL}/pause", data={"for": "", "csrf": csrf})
    assert forever.status == 200 and (await service.session("test-instance", CUSTOMER)).resumes_at is None


async def test_the_tenants_page_counts_today_and_draws_the_last_24_hours(signed_in: TestClient, service: Service,
                                                                         fake_evolution: FakeEvolution):
    fake_evolution.api_key = EVOLUTION_API_KEY
    await service.ingest(upsert("Tem pão?"), "{}")
    await run_due(service)
    await service.ingest(upsert("Oi", chat=OTHER), "{}")
    await service.pause("test-instance", OTHER)
    page = await (await signed_in.get("/ui/tenants")).text()
    text = text_of(page)
    assert "test-instance" in text and "llama3.2" in text and "always answering" in text
    assert re.search(r"2 Customer messages 1 Replies sent 1 Pauses 0 Failed 0 In the queue", text), text
    assert page.count('class="bar messages"') == 1 and page.count('class="bar replies"') == 1
    assert 'aria-label="Last 24 hours: 2 messages, 1 replies"' in page


async def test_the_console_speaks_portuguese_to_a_portuguese_browser(signed_in: TestClient, service: Service):
    await service.ingest(upsert("Olá"), "{}")
    await service.pause("test-instance", CUSTOMER, duration=3600)
    pt = text_of(await (await signed_in.get("/ui", headers={"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"})).text())
    assert "Conversas" in pt and "Pausada" in pt and "volta em 1 h" in pt and "Sair" in pt
    en = text_of(await (await signed_in.get("/ui", headers={"Accept-Language": "en-US,en;q=0.9"})).text())
    assert "Chats" in en and "resumes in 1 h" in en


async def _events(response, count: int) -> list[dict]:  # type: ignore[no-untyped-def]
    """The next ``count`` change events of a stream (their data), within a few seconds."""
    found: list[dict] = []
    async with asyncio.timeout(10):
        while len(found) < count:
            line = (await response.content.readline()).decode()
            if line.startswith("data: "):
                found.append(json.loads(line[6:]))
    return found


async def test_the_live_stream_tells_of_changes_and_a_reconnect_catches_up(signed_in: TestClient, service: Service):
    await service.ingest(upsert("Olá"), "{}")
    cursor = re.search(r'data-cursor="([^"]+)"', await (await signed_in.get("/ui")).text()).group(1)
    stream = await signed_in.get(f"/ui/events?since={cursor}")
    assert stream.status == 200 and stream.content_type == "text/event-stream"
    await service.ingest(upsert("Alguém aí?", chat=OTHER), "{}")
    (change,) = await _events(stream, 1)
    assert change["chats"] == [f"test-instance/{OTHER}"]
    await service.pause("test-instance", CUSTOMER)  # a pause, as another process would write it
    (paused,) = await _events(stream, 1)
    assert paused["chats"] == [f"test-instance/{CUSTOMER}"]
    stream.close()
    # The browser was away while the chat resumed: its reconnect (Last-Event-ID) hears of it at once.
    await service.resume("test-instance", CUSTOMER)
    again = await signed_in.get("/ui/events", headers={"Last-Event-ID": paused["cursor"]})
    (missed,) = await _events(again, 1)
    assert missed["chats"] == [f"test-instance/{CUSTOMER}"]
    again.close()
    made_up = await signed_in.get("/ui/events", headers={"Last-Event-ID": "not-a-cursor"})
    assert (await _events(made_up, 1))[0]["chats"] is None  # anything may have changed: the page reloads
    made_up.close()
