"""Reading what a person typed for a chat: phone numbers in every format, the Brazilian ninth digit, JIDs."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybridflow.errors import BadRequest
from hybridflow.numbers import DEFAULT_REGION, TypedChat, brazil_forms, chat_jids, parse_chat

WITH_NINE = "5511987654321@s.whatsapp.net"
WITHOUT_NINE = "551187654321@s.whatsapp.net"


def test_the_default_region_is_brazil() -> None:
    assert DEFAULT_REGION == "BR"
    assert parse_chat("11 98765-4321").jids == parse_chat("11 98765-4321", "BR").jids


@pytest.mark.parametrize("typed", [
    "11 98765-4321", "11987654321", "(11) 98765-4321", "+55 11 98765 4321", "+55 (11) 98765-4321",
    "+5511987654321", "5511987654321", "55 11 98765-4321", "0 11 98765-4321", "011 98765-4321",
    "0 21 11 98765-4321", "021 11 98765-4321", "011987654321",
    " 11.98765.4321 ",
])
def test_a_brazilian_mobile_means_both_forms_the_ninth_digit_one_first(typed: str) -> None:
    chat = parse_chat(typed)
    assert chat == TypedChat(typed.strip(), (WITH_NINE, WITHOUT_NINE), complete=True)


@pytest.mark.parametrize("typed", ["(11) 8765-4321", "11 8765-4321", "+55 11 8765-4321", "551187654321",
                                   "1187654321"])
def test_an_old_eight_digit_mobile_also_means_both_forms(typed: str) -> None:
    chat = parse_chat(typed)
    assert chat.jids == (WITH_NINE, WITHOUT_NINE) and chat.complete


def test_a_landline_has_one_form() -> None:
    # (11) 3765-4321 starts with 3: a landline, which never got a ninth digit; (11) 8765-4321 is an old mobile.
    assert parse_chat("(11) 3765-4321") == TypedChat("(11) 3765-4321", ("551137654321@s.whatsapp.net",), True)
    assert len(parse_chat("(11) 8765-4321").jids) == 2


def test_a_mobile_of_ddd_31_and_above_is_created_without_the_nine() -> None:
    # The form Evolution itself addresses (formatBRNumber): DDD >= 31 and a subscriber number starting with 7-9.
    assert parse_chat("+55 34 99685-3220").jids == ("553496853220@s.whatsapp.net", "5534996853220@s.whatsapp.net")
    assert parse_chat("34 9685-3220").jids == ("553496853220@s.whatsapp.net", "5534996853220@s.whatsapp.net")
    assert parse_chat("+55 34 96685-3220").jids[0] == "5534966853220@s.whatsapp.net"  # starts with 6: keeps it
    assert parse_chat("+55 21 99685-3220").jids[0] == "5521996853220@s.whatsapp.net"  # DDD 21: keeps it


def test_brazil_forms() -> None:
    assert brazil_forms("11987654321") == ("5511987654321", "551187654321")
    assert brazil_forms("1187654321") == ("5511987654321", "551187654321")
    assert brazil_forms("1137654321") == ("551137654321",)
    assert brazil_forms("11937654321") == ("5511937654321",)  # 9 then 3: not a mobile range, one form


def test_a_us_number_typed_with_plus_one_in_region_br() -> None:
    assert parse_chat("+1 650 253 0000") == TypedChat("+1 650 253 0000", ("16502530000@s.whatsapp.net",), True)
    assert parse_chat("+1 (650) 253-0000", "BR").jids == ("16502530000@s.whatsapp.net",)


def test_a_us_number_without_plus_in_region_br_is_not_complete_but_still_looked_up_as_typed() -> None:
    chat = parse_chat("16502530000")
    assert not chat.complete and "16502530000" in (chat.problem or "")
    assert "16502530000@s.whatsapp.net" in chat.jids  # an existing chat with these exact digits is still found


def test_the_region_decides_numbers_typed_without_country_code() -> None:
    assert parse_chat("(650) 253-0000", "US").jids == ("16502530000@s.whatsapp.net",)
    assert parse_chat("(650) 253-0000", "us").complete
    assert not parse_chat("(650) 253-0000", "BR").complete
    with pytest.raises(ValueError, match="unknown region"):
        parse_chat("11 98765-4321", "XX")


@pytest.mark.parametrize(("typed", "fragment"), [
    ("11 8765", "too short"),
    ("98765-4321", "area code (DDD)"),
    ("12345", "too short"),
    ("+55 11 98765-43210", "too long"),
    ("5511000000000", "not a valid phone number of BR"),
    ("0", "not a phone number of BR"),
    ("123456789012345678", "not a phone number of BR"),
])
def test_incomplete_or_invalid_numbers_say_so_naming_what_was_typed(typed: str, fragment: str) -> None:
    chat = parse_chat(typed)
    assert not chat.complete
    assert chat.problem is not None and fragment in chat.problem and repr(typed) in chat.problem
    with pytest.raises(BadRequest, match=re.escape(fragment)):
        chat.require_complete()
    with pytest.raises(BadRequest, match=re.escape(fragment)):
        chat_jids(typed)


def test_too_short_asks_for_the_ddd() -> None:
    assert "area code (DDD)" in (parse_chat("8765-4321").problem or "")


def test_an_invalid_number_keeps_the_digits_as_typed_for_lookups() -> None:
    assert parse_chat("5511000000000").jids == ("5511000000000@s.whatsapp.net",)


@pytest.mark.parametrize("typed", ["", "   ", "abc", "not-a-chat", "abc@@x", "+", "11 9876 abc", "@s.whatsapp.net",
                                   "-- ()"])
def test_garbage_is_a_bad_request(typed: str) -> None:
    with pytest.raises(BadRequest, match="not a chat id or phone number"):
        parse_chat(typed)


@pytest.mark.parametrize(("typed", "jid"), [
    ("5511987654321@s.whatsapp.net", "5511987654321@s.whatsapp.net"),
    (" 5511987654321:12@S.WhatsApp.net ", "5511987654321@s.whatsapp.net"),  # device suffix, case
    ("551187654321@s.whatsapp.net", "551187654321@s.whatsapp.net"),  # exact: no ninth-digit variants
    ("123456789012345@lid", "123456789012345@lid"),
    ("123456789012345@LID", "123456789012345@lid"),
    ("120363025246125486@g.us", "120363025246125486@g.us"),
    ("5511987654321-1600000000@g.us", "5511987654321-1600000000@g.us"),  # an old-style group id
    ("status@broadcast", "status@broadcast"),
])
def test_jids_pass_through_normalized(typed: str, jid: str) -> None:
    chat = parse_chat(typed)
    assert (chat.jids, chat.complete, chat.is_jid, chat.problem) == ((jid,), True, True, None)


def test_a_complete_number_gives_the_id_to_create() -> None:
    assert parse_chat("11 98765-4321").require_complete() == WITH_NINE
    assert chat_jids("+55 11 98765-4321") == (WITH_NINE, WITHOUT_NINE)


@given(st.text(max_size=40))
def test_any_text_gives_a_reading_or_a_bad_request(text: str) -> None:
    try:
        chat = parse_chat(text)
    except BadRequest:
        return
    assert chat.complete == (chat.problem is None)
    assert all("@" in jid for jid in chat.jids)
    assert not chat.complete or chat.jids


@given(st.from_regex(r"\+?[0-9 ()\-]{1,25}", fullmatch=True))
def test_any_digits_give_a_reading_or_a_bad_request(text: str) -> None:
    try:
        chat = parse_chat(text)
    except BadRequest:
        return
    assert not chat.complete or chat.jids
