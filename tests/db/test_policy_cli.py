"""Who and when, from the command line (issue 11): the ignore and allow lists, the reply cap, the longest reply and
business hours are set with the tenants commands, shown in `tenants show`, and refused with one line when wrong."""

from __future__ import annotations

import pytest

from tests.support.cli import as_json, ok, one_line_error

INSTANCE = "test-instance"


@pytest.fixture
def shop(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--api-key", "k",
          "--webhook-secret", "s3cret"))
    return hf


def test_the_ignore_and_allow_lists_are_managed_with_numbers_as_people_type_them(shop):  # type: ignore[no-untyped-def]
    added = ok(shop("tenants", "ignore", "add", INSTANCE, "(11) 98765-4321", "+55 21 99999-8888"))
    assert "added +5511987654321, +5521999998888" in added.stdout
    listed = as_json(shop("tenants", "ignore", "list", INSTANCE, "--json"))
    assert listed == {"ignore": [
        {"number": "+5511987654321", "chat_ids": ["5511987654321@s.whatsapp.net", "551187654321@s.whatsapp.net"]},
        {"number": "+5521999998888", "chat_ids": ["5521999998888@s.whatsapp.net", "552199998888@s.whatsapp.net"]}]}
    shown = as_json(shop("tenants", "show", INSTANCE, "--json"))
    assert "5511987654321@s.whatsapp.net" in shown["ignore"] and shown["allow"] == []
    assert "removed +5511987654321" in ok(shop("tenants", "ignore", "remove", INSTANCE, "11 98765 4321")).stdout
    assert "nothing (not on it)" in ok(shop("tenants", "ignore", "remove", INSTANCE, "11 98765 4321")).stdout

    ok(shop("tenants", "allow", "add", INSTANCE, "+55 11 91111-2222"))
    assert "+5511911112222" in ok(shop("tenants", "allow", "list", INSTANCE)).stdout
    refused = shop("tenants", "allow", "add", INSTANCE, "98765-4321")  # no DDD
    assert refused.exit_code == 2 and "full number" in one_line_error(refused)


def test_the_reply_cap_the_longest_reply_and_business_hours_are_options(shop):  # type: ignore[no-untyped-def]
    ok(shop("tenants", "update", INSTANCE, "--reply-cap", "5/1h", "--max-reply-chars", "300",
            "--hours", "seg-sex 08:00-18:00, sáb 08:00-12:00", "--timezone", "America/Sao_Paulo",
            "--closed", "2026-12-25", "--special", "2026-12-24 08:00-12:00", "--hours-mode", "outside"))
    tenant = as_json(shop("tenants", "show", INSTANCE, "--json"))
    assert (tenant["reply_cap"], tenant["max_reply_chars"], tenant["hours_mode"]) == ("5/1h", 300, "outside")
    assert tenant["timezone"] == "America/Sao_Paulo" and tenant["closed"] == ["2026-12-25"]
    assert tenant["hours"].startswith("mon-fri 08:00-18:00")
    human = ok(shop("tenants", "show", INSTANCE)).stdout
    assert "reply-cap" in human and "hours-mode" in human and ("open until" in human or "closed until" in human)
    ok(shop("tenants", "update", INSTANCE, "--no-closed", "--reply-cap", "off"))
    tenant = as_json(shop("tenants", "show", INSTANCE, "--json"))
    assert (tenant["closed"], tenant["reply_cap"]) == ([], "off")


def test_the_away_message_locale_country_and_daily_tokens_are_options(shop):  # type: ignore[no-untyped-def]
    ok(shop("tenants", "update", INSTANCE, "--hours", "mon-fri 08:00-18:00", "--timezone", "America/Sao_Paulo",
            "--hours-mode", "inside", "--away-message", "Fechados. Voltamos {next_open}.", "--locale", "pt-pt",
            "--country", "pt", "--daily-tokens", "50k"))
    tenant = as_json(shop("tenants", "show", INSTANCE, "--json"))
    assert (tenant["away_message"], tenant["locale"], tenant["country"], tenant["daily_tokens"]) == (
        "Fechados. Voltamos {next_open}.", "pt_PT", "PT", 50000)
    assert tenant["tokens_today"]["used"] == 0 and tenant["tokens_today"]["budget"] == 50000
    human = ok(shop("tenants", "show", INSTANCE)).stdout
    assert "away-message" in human and "tokens-today" in human and "0 of 50000" in human
    ok(shop("tenants", "update", INSTANCE, "--away-message", "", "--daily-tokens", "0"))
    tenant = as_json(shop("tenants", "show", INSTANCE, "--json"))
    assert (tenant["away_message"], tenant["daily_tokens"]) == ("none", "no budget")


def test_an_away_message_outside_mode_inside_is_kept_with_a_warning(shop):  # type: ignore[no-untyped-def]
    result = ok(shop("tenants", "update", INSTANCE, "--away-message", "Fechados."))
    assert "only sent with --hours-mode inside" in result.stderr


@pytest.mark.parametrize(("args", "fragment"), [
    (["--reply-cap", "twenty"], "--reply-cap"),
    (["--hours", "mon-fri 08:00-25:00"], "25:00"),
    (["--hours", "mon-fri 22:00-02:00"], "midnight"),
    (["--hours", "mon-fri 08:00-18:00", "--timezone", "Mars/Olympus"], "Mars/Olympus"),
    (["--hours-mode", "inside"], "--hours"),
    (["--max-reply-chars", "3"], "--max-reply-chars"),
    (["--away-message", "Voltamos {amanha}"], "{amanha}"),
    (["--locale", "xx_YY"], "--locale"),
    (["--country", "Brasil"], "--country"),
    (["--daily-tokens", "-1"], "--daily-tokens"),
    (["--daily-tokens", "many"], "--daily-tokens"),
    (["--max-reply-chars", "long"], "--max-reply-chars"),
])
def test_bad_who_and_when_options_are_refused_with_one_line(shop, args, fragment):  # type: ignore[no-untyped-def]
    before = as_json(shop("tenants", "show", INSTANCE, "--json"))
    result = shop("tenants", "update", INSTANCE, *args)
    assert result.exit_code == 2 and fragment in one_line_error(result)
    assert as_json(shop("tenants", "show", INSTANCE, "--json")) == before  # nothing half-applied
