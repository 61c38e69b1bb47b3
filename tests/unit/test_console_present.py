"""The console's pure parts: the language a browser gets, how times read, a chat's pause line, the chart's bars,
and the change cursor's token (no database, no server)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hybridflow.console import i18n, present
from hybridflow.pauses import Pause
from hybridflow.service.changes import Cursor
from hybridflow.service.dashboard import Hour
from hybridflow.service.sessions import SessionView

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("header", "language"), [
    ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", "pt"), ("en-US,en;q=0.9", "en"), ("fr-FR,fr;q=0.9", "en"),
    ("fr;q=1, pt;q=0.5, en;q=0.4", "pt"), ("en;q=0.2, pt;q=0.8", "pt"), ("pt;q=0", "en"), ("", "en"), (None, "en"),
    ("pt;q=abc", "en"), ("*", "en")])
def test_the_browser_language_picks_ours(header, language):
    assert i18n.choose(header) == language


def test_every_word_has_both_languages_and_an_unknown_code_reads_as_itself():
    assert all(len(words) == 2 and all(isinstance(w, str) for w in words) for words in i18n.TEXTS.values())
    t = i18n.translator("pt")
    assert t("resumes_in") == "volta em" and t("reason_brand_new") == "brand new"
    assert t("page_of", page=1, pages=2, total=30) == "Página 1 de 2 · 30 conversas"


def test_times_read_for_people():
    en, pt = i18n.translator("en"), i18n.translator("pt")
    assert i18n.relative(en, NOW - timedelta(seconds=20), NOW) == "just now"
    assert i18n.relative(pt, NOW - timedelta(minutes=3), NOW) == "há 3 min"
    assert i18n.relative(en, NOW + timedelta(minutes=30), NOW) == "in 30 min"
    assert i18n.relative(en, None, NOW) == "never"
    assert i18n.countdown(NOW + timedelta(minutes=72), NOW) == "1 h 12 min"


def view(paused: bool, until: datetime | None, reasons: tuple[str, ...] = ("human_message",)) -> SessionView:
    held = tuple(Pause(r, "owner", NOW, until) for r in reasons) if paused else ()
    return SessionView("padaria", "5511987654321@s.whatsapp.net", "user", "Maria", paused,
                       reasons[0] if paused else None, "owner" if paused else None, NOW if paused else None, until,
                       None, None, NOW, held)


def test_a_paused_chat_says_why_and_when_it_resumes():
    t = i18n.translator("en")
    assert present.pause_line(view(False, None), NOW, t) is None
    line = present.pause_line(view(True, NOW + timedelta(minutes=72), ("human_message", "label")), NOW, t)
    assert line is not None and line.reasons == ["owner typed", "label"] and line.left == "1 h 12 min"
    assert present.pause_line(view(True, None), NOW, t).left is None
    assert present.pause_line(view(True, NOW - timedelta(seconds=5)), NOW, t).left is None  # the next sweep


def test_the_chart_scales_to_the_busiest_hour():
    hours = [Hour(NOW - timedelta(hours=23 - n), messages=n % 4, replies=1 if n == 23 else 0) for n in range(24)]
    chart = present.chart(hours, UTC)
    assert chart.top == 3 and len(chart.messages) == len(chart.replies) == 24
    tallest = max(chart.messages, key=lambda bar: bar.height)
    assert tallest.value == 3 and tallest.y == 0 and tallest.height == chart.height - 18
    assert [label for _, label in chart.labels] == ["13h", "19h", "01h", "07h"]
    assert chart.messages[0].height == 0


@pytest.mark.parametrize("token", ["", "1.2.3", "a.b.c.d.e", "1.2.3.xyz.abc", "1.2.3.0123456789ab.0123456789AB",
                                   "9" * 40 + ".1.1.0123456789ab.0123456789ab"])
def test_a_cursor_token_that_is_not_one_is_refused(token):
    assert Cursor.parse(token) is None


def test_a_cursor_token_reads_back():
    cursor = Cursor(10, 2, 7, "0123456789ab", "ba9876543210")
    assert Cursor.parse(cursor.token) == cursor


def test_urls_and_numbers():
    assert present.chat_url("padaria boa", "5511987654321@s.whatsapp.net") == \
        "/ui/chats/padaria%20boa/5511987654321@s.whatsapp.net"
    assert present.number("5511987654321@s.whatsapp.net") == "+5511987654321"
    assert present.number("120363000000@g.us") == "120363000000@g.us"
    assert present.media("media", "audioMessage") == "media_audio" and present.media("text", None) is None


def test_every_reply_status_and_kind_has_words_in_both_languages():
    from hybridflow.models import JobKind, JobStatus

    for language in i18n.LANGUAGES:
        t = i18n.translator(language)
        for key in [f"status_{s}" for s in JobStatus] + [f"kind_{k}" for k in JobKind]:
            assert key in i18n.TEXTS, key  # not the code read out as words
            assert t(key) and t(key) != key
