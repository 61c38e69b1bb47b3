"""The web console end to end in a real Chromium (issue 14), driving a running `serve` with the fake Evolution and
Ollama, on both databases: sign in, a chat arrives live, the owner's message pauses it, resume is pressed, the next
customer message is answered; a pause from a CLI process (and, on PostgreSQL, a message through another `serve`)
shows without a reload; hostile text stays text; a phone-sized screen; SIGTERM still stops `serve` at once with
streams open. Screenshots of the main pages at desktop and phone size are left for a reviewer."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Page, async_playwright, expect

from tests.support.browser import Screenshots, open_browser
from tests.support.builders import eventually, owner, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.serve import ServeProcess, cli, serve_env, serving

TOKEN = "console-e2e-token-0123456789"
INSTANCE = "padaria"
MARIA = "5511987654321@s.whatsapp.net"
XSS_CHAT = "5511944445555@s.whatsapp.net"
XSS_TEXT = "<script>alert(1)</script>"
XSS_NAME = '"><img src=x onerror=alert(2)>'
TIMEOUT = 15_000  # ms: the feed polls every second; a reply takes a few
_ids = count(1)


def answer(body: dict) -> str:
    """The fake model's answer, as a bakery's assistant would put it."""
    last = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
    if "domingo" in last.lower():
        return "Olá! Aos domingos abrimos das 7h às 13h. Posso separar algo para você?"
    return "Claro! Temos pão francês saindo agora e bolo de fubá. Quer que eu reserve?"


@pytest.fixture
async def running(database_url: str, tmp_path: Path, fake_evolution: FakeEvolution,
                  fake_ollama: FakeOllama) -> AsyncIterator[tuple[ServeProcess, dict[str, str]]]:
    fake_ollama.reply = answer
    fake_evolution.api_key = "instance-key"
    env = serve_env(database_url, evolution_url=fake_evolution.url, ollama_host=fake_ollama.url, admin_token=TOKEN,
                    resume_after="2h")
    cli(env, "tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--api-key", "instance-key",
        "--hours", "mon-sat 07:00-19:00, sun 07:00-13:00", "--timezone", "America/Sao_Paulo")
    async with serving(env, tmp_path / "serve.log") as server:
        fake_evolution.echo_webhook_url = server.webhook_url  # Evolution sends our replies back, as it does
        yield server, env


async def post(server: ServeProcess, body: dict) -> str:
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(server.webhook_url, json=body)
    assert response.status_code == 200, response.text
    return response.json()["action"]


def customer(text: str, chat: str = MARIA, name: str = "Maria Souza") -> dict:
    return upsert(text, instance=INSTANCE, chat=chat, push_name=name, message_id=f"E2E{next(_ids):06d}",
                  timestamp=int(time.time()))


class Watch:
    """What a page did that it must not: JavaScript errors, CSP refusals, alert() dialogs, reloads."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda error: self.problems.append(f"error: {error}"))
        page.on("console", lambda msg: self.problems.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()


async def sign_in(page: Page, base: str) -> None:
    await page.goto(f"{base}/ui")
    await expect(page).to_have_url(f"{base}/ui/login")
    await page.fill("#token", TOKEN)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{base}/ui")


async def mark(page: Page) -> None:
    """A flag in the page's JavaScript world: still there later means no reload happened meanwhile."""
    await page.evaluate("window.__noReload = true")


async def not_reloaded(page: Page) -> None:
    assert await page.evaluate("window.__noReload === true"), "the page was reloaded"


async def test_the_console_end_to_end_in_chromium(running, chromium_path: str, tmp_path: Path, database_url: str,
                                                  fake_evolution: FakeEvolution):
    server, env = running
    shots = Screenshots(tmp_path / "screenshots")
    async with async_playwright() as playwright:
        desktop = await open_browser(playwright, chromium_path, tmp_path / "desktop")
        phone = await open_browser(playwright, chromium_path, tmp_path / "phone", phone=True, locale="pt-BR")
        page, small = desktop.pages[0], phone.pages[0]
        watches = [Watch(page), Watch(small)]

        await page.goto(f"{server.url}/ui/login")
        await shots.take(page, "login-desktop")
        await sign_in(page, server.url)
        await sign_in(small, server.url)  # two browsers at once, each with its stream
        await expect(page.locator("#live")).to_contain_text("No chats yet")

        # A chat arrives live, and its answer.
        await mark(page)
        assert await post(server, customer("Bom dia! Vocês abrem domingo?")) == "reply_queued"
        row = page.locator(f'.chat-row[data-chat="{INSTANCE}/{MARIA}"]')
        await expect(row).to_contain_text("Maria Souza", timeout=TIMEOUT)
        await expect(small.locator(f'.chat-row[data-chat="{INSTANCE}/{MARIA}"]')).to_be_visible(timeout=TIMEOUT)
        await not_reloaded(page)
        await expect(row).to_contain_text("Aos domingos abrimos", timeout=TIMEOUT)  # the bot's reply is the last

        await row.locator("a").click()
        await expect(page.locator("h1")).to_have_text("Maria Souza")
        transcript = page.locator(".transcript")
        await expect(transcript.locator(".from-bot")).to_contain_text("Aos domingos abrimos")

        # The owner types on the phone: the chat pauses, live.
        await mark(page)
        assert await post(server, owner("Oi Maria! Aqui é o João, já te atendo.", instance=INSTANCE, chat=MARIA,
                                        message_id=f"E2E{next(_ids):06d}", timestamp=int(time.time()))) == "paused"
        state = page.locator(".chat-head .chat-state")
        await expect(state).to_contain_text("owner typed", timeout=TIMEOUT)
        await expect(state).to_contain_text(re.compile(r"resumes in (2 h|1 h 59 min)"))
        await expect(transcript.locator(".from-owner")).to_contain_text("já te atendo")
        await not_reloaded(page)

        # Resume, and the next customer message is answered.
        await page.click("#resume")
        await expect(page.locator(".notice.ok")).to_contain_text("Resumed")
        await expect(state).to_contain_text("Bot answering")
        assert await post(server, customer("Tem pão francês agora?")) == "reply_queued"
        await expect(transcript.locator(".from-bot").last).to_contain_text("pão francês saindo agora",
                                                                            timeout=TIMEOUT)
        await eventually(lambda: len(fake_evolution.sent_texts) == 2, what="the second reply sent")

        # A pause by another process (the CLI, on the same database) shows without a reload.
        await mark(page)
        cli(env, "sessions", "pause", INSTANCE, MARIA, "--for", "30m")
        await expect(state).to_contain_text("operator", timeout=TIMEOUT)
        await expect(state).to_contain_text(re.compile(r"resumes in (30|29) min"))
        await not_reloaded(page)

        if database_url.startswith("postgres"):  # another serve on the same PostgreSQL
            other_env = {**env, "HYBRIDFLOW_PORT": str(_free_port())}
            async with serving(other_env, tmp_path / "serve-b.log") as other:
                await page.goto(f"{server.url}/ui")
                await mark(page)
                assert await post(other, customer("Oi, aqui é a Ana", chat="5511933334444@s.whatsapp.net",
                                                  name="Ana Lima")) == "reply_queued"
                await expect(page.locator("#live")).to_contain_text("Ana Lima", timeout=TIMEOUT)
                await not_reloaded(page)

        # Hostile text stays text, on the list and on the chat's page.
        await post(server, customer(XSS_TEXT, chat=XSS_CHAT, name=XSS_NAME))
        await page.goto(f"{server.url}/ui")
        hostile = page.locator(f'.chat-row[data-chat="{INSTANCE}/{XSS_CHAT}"]')
        await expect(hostile).to_contain_text(XSS_NAME)
        await hostile.locator("a").click()
        await expect(page.locator("h1")).to_have_text(XSS_NAME)
        await expect(page.locator(".transcript .from-customer").first).to_contain_text(XSS_TEXT)
        assert await page.locator("img[src=x]").count() == 0

        await _screenshots(page, small, server, fake_evolution, shots)
        for watch in watches:
            assert watch.problems == [], watch.problems
        await desktop.close()
        await phone.close()
    assert TOKEN not in server.output()  # never in a log line (nor a URL: the form POSTs it)


async def _screenshots(page: Page, small: Page, server: ServeProcess, fake_evolution: FakeEvolution,
                       shots: Screenshots) -> None:
    """A few more chats in different states, then the main pages at both sizes; the phone must not scroll
    sideways."""
    for text, chat, name in (("Vocês entregam no Centro?", "5511955556666@s.whatsapp.net", "Carlos Mendes"),
                             ("Quero falar com um atendente, por favor", "5511966667777@s.whatsapp.net",
                              "Beatriz Rocha"),
                             ("Qual o preço do bolo de cenoura?", "5511977778888@s.whatsapp.net", "Rafael Costa")):
        if name == "Rafael Costa":
            fake_evolution.fail_next(400)  # this reply fails: the list flags it, the chat offers a retry
        await post(server, customer(text, chat=chat, name=name))
    await page.goto(f"{server.url}/ui")
    await expect(page.locator(".flag.failed").first).to_be_visible(timeout=TIMEOUT)
    await shots.take(page, "chats-desktop")
    await page.locator(f'.chat-row[data-chat="{INSTANCE}/{MARIA}"] a').click()
    await shots.take(page, "chat-desktop")
    await page.goto(f"{server.url}/ui/tenants")
    await expect(page.locator(".tenant-card")).to_contain_text("Customer messages")
    await shots.take(page, "tenants-desktop")

    await small.goto(f"{server.url}/ui")
    await expect(small.locator("#live")).to_contain_text("Pausada")  # Portuguese for a Portuguese browser
    await shots.take(small, "chats-phone")
    await small.locator(f'.chat-row[data-chat="{INSTANCE}/{MARIA}"] a').click()
    await shots.take(small, "chat-phone")
    await small.goto(f"{server.url}/ui/tenants")
    await shots.take(small, "tenants-phone")
    for path in ("/ui", f"/ui/chats/{INSTANCE}/{MARIA}", "/ui/tenants"):
        await small.goto(f"{server.url}{path}")
        overflow = await small.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} scrolls sideways on a phone by {overflow}px"


def _free_port() -> int:
    from tests.support.ports import free_port

    return free_port()


async def test_sigterm_stops_serve_at_once_with_streams_open(running, chromium_path: str, tmp_path: Path):
    server, _env = running
    async with async_playwright() as playwright:
        browser = await open_browser(playwright, chromium_path, tmp_path / "profile")
        page = browser.pages[0]
        await sign_in(page, server.url)
        await expect(page.locator("#live-status")).to_have_text("Live", timeout=TIMEOUT)  # its stream is open
        started = time.monotonic()
        assert server.stop(timeout=20) == 0
        assert time.monotonic() - started < 10, "serve waited for the open stream"
        await browser.close()
