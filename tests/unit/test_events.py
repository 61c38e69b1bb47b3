"""hybridflow.events: Evolution webhook bodies -> normalized events (pure parsing, exhaustive tests)."""

from __future__ import annotations

import copy
import re
from datetime import datetime, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridflow import events as ev
from hybridflow.events import Event, event_from_suffix, normalize_jid, parse_event
from tests.support.builders import EXPECTED, FIXTURES, WEBHOOK_FIXTURES, fixture

NOT_WEBHOOKS = set(EXPECTED["_not_webhooks"])
MESSAGE_FIXTURES = [name for name in WEBHOOK_FIXTURES if EXPECTED[name]["action"] != "ignored_event"]
PHONE = "5511987654321@s.whatsapp.net"


def load(name: str) -> Any:
    return fixture(name)[0]


def upsert(message: object = None, *, key: object = None, event: str = "messages.upsert", **data: object) -> dict:
    """A minimal v2 messages.upsert body; ``data`` keys override."""
    body_data: dict = {
        "key": key if key is not None else {"remoteJid": PHONE, "fromMe": False, "id": "ABC123"},
        "pushName": "Ana",
        "status": "DELIVERY_ACK",
        "message": message if message is not None else {"conversation": "oi"},
        "messageType": "conversation",
        "messageTimestamp": 1748517690,
        "source": "android",
    }
    body_data.update(data)
    return {"event": event, "instance": "demo", "data": body_data, "apikey": "TOKEN"}


def parse_message(message: object, **data: object) -> Event:
    return parse_event(upsert(message, **data))


# ---------------------------------------------------------------------------------------------------------------
# fixtures


def test_every_fixture_is_listed_in_expected_json() -> None:
    on_disk = {p.name for p in FIXTURES.glob("*.json")} - {"expected.json"}
    listed = set(EXPECTED) - {"_not_webhooks"}
    assert on_disk == listed | NOT_WEBHOOKS
    assert not listed & NOT_WEBHOOKS


@pytest.mark.parametrize("name", WEBHOOK_FIXTURES)
def test_fixture_parses_to_expected_fields(name: str) -> None:
    body = load(name)
    event = parse_event(body)
    expected = EXPECTED[name]
    assert isinstance(event, Event)
    assert (event.chat_jid, event.from_me, event.kind) == (expected["chat_jid"], expected["from_me"], expected["kind"])
    assert event.event == expected["event"]
    assert event.instance == expected["instance"] == body["instance"]
    assert event.supported, event.reason
    assert event.is_message == (expected["action"] != "ignored_event")


@pytest.mark.parametrize("name", MESSAGE_FIXTURES)
def test_fixture_timestamp_is_utc_and_never_date_time(name: str) -> None:
    body = load(name)
    event = parse_event(body)
    assert event.is_message
    assert event.timestamp is not None and event.timestamp.tzinfo is timezone.utc
    # date_time is server local time with a literal Z (3 h behind on a default install), never used
    assert event.timestamp != datetime.fromisoformat(body["date_time"].replace("Z", "+00:00"))


@pytest.mark.parametrize("name", sorted(NOT_WEBHOOKS))
def test_error_responses_are_not_webhooks(name: str) -> None:
    event = parse_event(load(name))
    assert (event.supported, event.is_message, event.reason) == (False, False, "missing event")


def test_real_v1_send_message_with_long_timestamp() -> None:
    event = parse_event(load("v1-send-message-api-sent-text.json"))
    assert event.timestamp == datetime.fromtimestamp(1705846799, tz=timezone.utc)
    assert (event.text, event.message_type, event.push_name) == ("tes", "extendedTextMessage", None)


def test_real_capture_with_message_context_info_first() -> None:
    event = parse_event(load("v2-messages-upsert-text-conversation-android.json"))
    assert (event.text, event.message_type, event.kind) == ("Oi", "conversation", ev.TEXT)
    assert (event.source, event.status, event.push_name) == ("android", "DELIVERY_ACK", "MATEUS COSTA")
    assert event.apikey == "493ED0BEB1A8-47F2-A6EE-731DBFDB99D2"


# ---------------------------------------------------------------------------------------------------------------
# envelope


def test_non_object_bodies_are_unsupported() -> None:
    for body in (None, [], [{"event": "messages.upsert"}], "messages.upsert", 42, 1.5, True):
        event = parse_event(body)
        assert (event.supported, event.is_message, event.reason) == (False, False, "not a JSON object")


def test_missing_event() -> None:
    for value in (None, "", "  ", 7, ["messages.upsert"]):
        event = parse_event({"event": value, "instance": "demo", "data": {}})
        assert (event.event, event.supported, event.reason) == ("", False, "missing event")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("messages.upsert", "messages.upsert"),
        ("MESSAGES_UPSERT", "messages.upsert"),
        ("Messages.Upsert", "messages.upsert"),
        ("messages-upsert", "messages.upsert"),
        ("SEND_MESSAGE", "send.message"),
        ("GROUP_PARTICIPANTS_UPDATE", "group-participants.update"),
        ("TYPEBOT_CHANGE_STATUS", "typebot.change-status"),
        ("group-participants.update", "group-participants.update"),
        ("SOMETHING_NEW", "something.new"),
    ],
)
def test_event_names_are_normalized(raw: str, name: str) -> None:
    assert parse_event({"event": raw, "instance": "demo", "data": {}}).event == name


def test_uppercase_event_name_still_parses_the_message() -> None:
    event = parse_event(upsert(event="MESSAGES_UPSERT"))
    assert (event.event, event.is_message, event.text) == ("messages.upsert", True, "oi")


def test_instance_forms() -> None:
    assert parse_event({"event": "x", "instance": {"instanceName": "named", "instanceId": "u"}}).instance == "named"
    v1 = upsert()
    del v1["instance"]
    v1["data"]["owner"] = "v1-owner"
    assert parse_event(v1).instance == "v1-owner"
    event = parse_event({"event": "connection.update", "data": {"state": "open"}})
    assert (event.instance, event.supported, event.reason) == (None, False, "missing instance")
    for bad in ("", "   ", 5, {"instanceName": 5}, None):
        assert parse_event({"event": "connection.update", "instance": bad}).instance is None


def test_message_without_instance_is_unsupported_but_parsed() -> None:
    body = upsert()
    body["instance"] = None
    event = parse_event(body)
    assert (event.is_message, event.supported, event.reason, event.text) == (True, False, "missing instance", "oi")


def test_apikey() -> None:
    body = upsert()
    assert parse_event(body).apikey == "TOKEN"
    for value in ("Apikey not found", "", None, 12):
        body["apikey"] = value
        assert parse_event(body).apikey is None


def test_non_message_events_with_list_data_are_supported() -> None:
    for name in ("messages.set", "contacts.update", "chats.upsert"):
        event = parse_event({"event": name, "instance": "demo", "data": [{"id": PHONE}]})
        assert (event.event, event.instance, event.is_message, event.supported) == (name, "demo", False, True)


def test_connection_update() -> None:
    event = parse_event(load("v2-connection-update-open.json"))
    assert (event.event, event.chat_jid, event.chat_kind, event.kind) == ("connection.update", None, ev.UNKNOWN, ev.OTHER)


def test_remove_instance_with_null_data() -> None:
    event = parse_event({"event": "remove.instance", "instance": "demo", "data": None})
    assert (event.supported, event.is_message) == (True, False)


# ---------------------------------------------------------------------------------------------------------------
# message events: required fields


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "missing data"),
        ([{"key": {"id": "x"}}], "data is not an object"),
        ("text", "data is not an object"),
        ({}, "missing key"),
        ({"key": "ABC"}, "key is not an object"),
        ({"key": {"remoteJid": PHONE}}, "missing key.id"),
        ({"key": {"remoteJid": PHONE, "id": ""}}, "missing key.id"),
        ({"key": {"remoteJid": PHONE, "id": 123}}, "key.id is not a string"),
        ({"key": {"remoteJid": PHONE, "id": ["x"]}}, "key.id is not a string"),
    ],
)
@pytest.mark.parametrize("name", ["messages.upsert", "send.message"])
def test_unusable_message_events(name: str, data: object, reason: str) -> None:
    body: dict = {"event": name, "instance": "demo"}
    if data is not None:
        body["data"] = data
    event = parse_event(body)
    assert (event.is_message, event.supported, event.reason) == (False, False, reason)
    assert (event.event, event.instance) == (name, "demo")


def test_message_without_remote_jid_is_unsupported() -> None:
    event = parse_event(upsert(key={"id": "X1", "fromMe": False}))
    assert (event.is_message, event.supported, event.reason, event.chat_jid) == (True, False, "missing remoteJid", None)


def test_message_without_content_is_kept() -> None:
    body = upsert()
    del body["data"]["message"]
    event = parse_event(body)
    assert (event.supported, event.reason, event.kind, event.text) == (True, "no message content", ev.OTHER, None)
    assert event.message_type == "conversation"  # from data.messageType


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), ("true", True), (False, False), ("false", False), (1, False), (None, False), ("yes", False)],
)
def test_from_me_is_strict(value: object, expected: bool) -> None:
    event = parse_event(upsert(key={"remoteJid": PHONE, "fromMe": value, "id": "X"}))
    assert event.from_me is expected


def test_send_message_is_a_message() -> None:
    event = parse_event(load("v2-send-message-api-sent.json"))
    assert (event.is_message, event.from_me, event.status, event.push_name) == (True, True, "PENDING", "Você")
    assert event.source == "web"


# ---------------------------------------------------------------------------------------------------------------
# timestamps


@pytest.mark.parametrize(
    "value",
    [
        1748517690,
        1748517690.0,
        "1748517690",
        " 1748517690 ",
        {"low": 1748517690, "high": 0, "unsigned": True},
        1748517690000,
        "1748517690000",
    ],
)
def test_timestamp_forms(value: object) -> None:
    assert parse_message({"conversation": "x"}, messageTimestamp=value).timestamp == datetime(
        2025, 5, 29, 11, 21, 30, tzinfo=timezone.utc
    )


def test_timestamp_long_with_high_word_and_negative_low() -> None:
    # a signed Long whose low word looks negative: the low 32 bits still count as unsigned
    low = 1748517690 - 2**32
    event = parse_message({"conversation": "x"}, messageTimestamp={"low": low, "high": 0, "unsigned": False})
    assert event.timestamp == datetime.fromtimestamp(1748517690, tz=timezone.utc)
    millis = 1748517690123  # needs the high word
    long_ms = {"low": millis & 0xFFFFFFFF, "high": millis >> 32, "unsigned": True}
    big = parse_message({"conversation": "x"}, messageTimestamp=long_ms)
    assert big.timestamp == datetime.fromtimestamp(1748517690.123, tz=timezone.utc)


@pytest.mark.parametrize(
    "value",
    [
        None, 0, -5, 12, True, float("nan"), float("inf"), 10**30, "abc", "1e9", "-1748517690", "",
        {"low": "1748517690", "high": 0}, {"low": 1748517690}, {"low": 0, "high": 2**40}, {"low": True, "high": 0},
        [1748517690], 99999999999999999999, "１７４８５１７６９０",
    ],
)  # fmt: skip
def test_absurd_timestamps_are_none(value: object) -> None:
    assert parse_message({"conversation": "x"}, messageTimestamp=value).timestamp is None


# ---------------------------------------------------------------------------------------------------------------
# content: types, wrappers, text


def test_message_type_is_probed_not_first_key() -> None:
    message = {"messageContextInfo": {"messageSecret": "x"}, "senderKeyDistributionMessage": {}, "conversation": "a"}
    event = parse_message(message, messageType="senderKeyDistributionMessage")
    assert (event.message_type, event.text, event.kind) == ("conversation", "a", ev.TEXT)


def test_message_type_falls_back_to_data_message_type() -> None:
    event = parse_message({"someFutureMessage": {"x": 1}}, messageType="someFutureMessage")
    assert (event.message_type, event.kind, event.text) == ("someFutureMessage", ev.OTHER, None)


def test_v2_conversation_normalization_and_v1_extended_text() -> None:
    assert parse_message({"conversation": "hello"}).text == "hello"
    event = parse_message({"extendedTextMessage": {"text": "hello", "contextInfo": {"stanzaId": "Q"}}})
    assert (event.text, event.message_type, event.kind) == ("hello", "extendedTextMessage", ev.TEXT)


@pytest.mark.parametrize("wrapper", ["ephemeralMessage", "viewOnceMessage", "viewOnceMessageV2", "viewOnceMessageV2Extension"])
def test_wrappers_are_unwrapped(wrapper: str) -> None:
    event = parse_message({wrapper: {"message": {"imageMessage": {"caption": "look", "mediaKey": {"0": 1}}}}})
    assert (event.message_type, event.text, event.kind) == ("imageMessage", "look", ev.MEDIA)


def test_nested_wrappers_and_depth_bound() -> None:
    nested = {"ephemeralMessage": {"message": {"viewOnceMessageV2": {"message": {"conversation": "deep"}}}}}
    assert parse_message(nested).text == "deep"
    message: dict = {"conversation": "too deep"}
    for _ in range(50):
        message = {"ephemeralMessage": {"message": message}}
    event = parse_message(message, messageType="ephemeralMessage")
    assert (event.text, event.kind, event.message_type) == (None, ev.OTHER, "ephemeralMessage")


def test_document_with_caption_wrapper() -> None:
    event = parse_event(load("v1-messages-upsert-document-with-caption.json"))
    assert (event.message_type, event.text, event.kind) == ("documentMessage", "Segue o orçamento assinado", ev.MEDIA)


@pytest.mark.parametrize("media", ["imageMessage", "videoMessage", "documentMessage"])
def test_captions(media: str) -> None:
    event = parse_message({media: {"caption": "what is this?", "jpegThumbnail": {"0": 255, "1": 216}}})
    assert (event.text, event.kind) == ("what is this?", ev.MEDIA)


@pytest.mark.parametrize("media", ["audioMessage", "stickerMessage", "imageMessage", "ptvMessage", "videoMessage"])
def test_media_without_text(media: str) -> None:
    event = parse_message({media: {"mediaKey": "AAAA", "fileSha256": {"0": 1, "1": 2}}, "messageContextInfo": {}})
    assert (event.text, event.kind, event.message_type) == (None, ev.MEDIA, media)


def test_reaction() -> None:
    event = parse_event(load("v2-messages-upsert-reaction.json"))
    assert (event.kind, event.message_type, event.text) == (ev.REACTION, "reactionMessage", "👍")
    removed = parse_message({"reactionMessage": {"key": {"id": "X"}, "text": ""}})
    assert (removed.kind, removed.text) == (ev.REACTION, None)


def test_protocol_revoke_inside_upsert() -> None:
    event = parse_message({"protocolMessage": {"key": {"id": "X"}, "type": "REVOKE"}})
    assert (event.kind, event.message_type, event.text) == (ev.PROTOCOL, "protocolMessage", None)


def test_edited_message_wrapper() -> None:
    event = parse_event(load("v1-messages-upsert-edited-message.json"))
    assert (event.kind, event.text, event.message_type) == (ev.EDIT, "Na verdade são 3 unidades", "conversation")
    flat = parse_message({"editedMessage": {"message": {"conversation": "fixed"}}})
    assert (flat.kind, flat.text) == (ev.EDIT, "fixed")


def test_protocol_message_carrying_edit() -> None:
    edit = {"protocolMessage": {"type": 14, "editedMessage": {"extendedTextMessage": {"text": "new text"}}}}
    event = parse_message(edit)
    assert (event.kind, event.text, event.message_type) == (ev.EDIT, "new text", "extendedTextMessage")


def test_messages_edited_event() -> None:
    edit = parse_event(load("v2-messages-edited-edit.json"))
    assert (edit.kind, edit.text, edit.is_message, edit.message_id) == (
        ev.EDIT, "Amanhã às 15h, pode ser?", False, "6F708192A3B4C5D6E7F8091A2B3C4D5E",
    )  # fmt: skip
    assert edit.timestamp == datetime.fromtimestamp(1761100300.456, tz=timezone.utc)
    revoke = parse_event(load("v2-messages-edited-revoke.json"))
    assert (revoke.kind, revoke.text, revoke.is_message) == (ev.PROTOCOL, None, False)


@pytest.mark.parametrize(
    ("message", "text"),
    [
        ({"buttonsResponseMessage": {"selectedButtonId": "b1", "selectedDisplayText": "Yes"}}, "Yes"),
        ({"buttonsResponseMessage": {"selectedButtonId": "b1"}}, "b1"),
        ({"listResponseMessage": {"title": "Option A", "singleSelectReply": {"selectedRowId": "r1"}}}, "Option A"),
        ({"listResponseMessage": {"singleSelectReply": {"selectedRowId": "r1"}}}, "r1"),
        ({"templateButtonReplyMessage": {"selectedId": "t1", "selectedDisplayText": "Book"}}, "Book"),
        ({"interactiveResponseMessage": {"body": {"text": "Chosen"}}}, "Chosen"),
        ({"locationMessage": {"degreesLatitude": 1.0, "name": "Shop", "address": "Main St"}}, "Shop\nMain St"),
        ({"contactMessage": {"displayName": "Bob", "vcard": "BEGIN:VCARD"}}, "Bob"),
        ({"contactsArrayMessage": {"contacts": [{"displayName": "A"}, {"displayName": "B"}, 3]}}, "A, B"),
    ],
)
def test_text_of_replies_locations_contacts(message: dict, text: str) -> None:
    event = parse_message(message)
    assert (event.text, event.kind) == (text, ev.TEXT)


@pytest.mark.parametrize("contacts", [5, "abc", None, [None, 1, {"displayName": 2}], {"0": {"displayName": "A"}}])
def test_contacts_array_with_wrong_types(contacts: object) -> None:
    event = parse_message({"contactsArrayMessage": {"contacts": contacts}})
    assert (event.text, event.kind, event.message_type) == (None, ev.OTHER, "contactsArrayMessage")


def test_location_without_name_has_no_text() -> None:
    event = parse_message({"locationMessage": {"degreesLatitude": -23.5, "degreesLongitude": -46.6}})
    assert (event.text, event.kind, event.message_type) == (None, ev.OTHER, "locationMessage")


@pytest.mark.parametrize("value", ["", "   ", "\n\t", None, 5, {"text": "x"}])
def test_blank_or_wrong_text_is_none(value: object) -> None:
    event = parse_message({"conversation": value})
    assert (event.text, event.kind) == (None, ev.OTHER)


def test_text_is_not_stripped() -> None:
    assert parse_message({"conversation": "  hi  \n"}).text == "  hi  \n"


def test_text_is_capped_at_64_kib() -> None:
    assert parse_message({"conversation": "a" * 100_000}).text == "a" * 65536
    text = parse_message({"conversation": "é" * 40_000}).text  # 2 bytes each
    assert text is not None and len(text.encode("utf-8")) <= 65536 and set(text) == {"é"}
    assert parse_message({"conversation": "€" * 16_000}).text == "€" * 16_000  # under the cap: untouched


# ---------------------------------------------------------------------------------------------------------------
# addressing


def chat_of(key: dict) -> Event:
    return parse_event(upsert(key={"fromMe": False, "id": "X", **key}))


def test_phone_chat() -> None:
    event = chat_of({"remoteJid": PHONE, "participant": ""})
    assert (event.chat_jid, event.chat_kind, event.lid_jid, event.participant) == (PHONE, ev.USER, None, None)


def test_lid_only() -> None:
    event = chat_of({"remoteJid": "123@lid"})
    assert (event.chat_jid, event.chat_kind, event.lid_jid) == ("123@lid", ev.LID, "123@lid")


def test_lid_with_remote_jid_alt() -> None:
    event = chat_of({"remoteJid": "123@lid", "remoteJidAlt": PHONE, "addressingMode": "lid"})
    assert (event.chat_jid, event.chat_kind, event.lid_jid) == (PHONE, ev.USER, "123@lid")


def test_lid_swapped_as_in_2_4() -> None:
    event = chat_of({"remoteJid": PHONE, "remoteJidAlt": "123@lid", "addressingMode": "pn"})
    assert (event.chat_jid, event.lid_jid) == (PHONE, "123@lid")


def test_lid_with_sender_pn() -> None:
    event = chat_of({"remoteJid": "123@lid", "senderPn": "5511987654321@s.whatsapp.net"})
    assert (event.chat_jid, event.chat_kind, event.lid_jid) == (PHONE, ev.USER, "123@lid")


def test_device_suffix_and_case() -> None:
    assert chat_of({"remoteJid": "5511987654321:12@S.WhatsApp.Net"}).chat_jid == PHONE
    update = parse_event(load("v2-messages-update-read.json"))
    assert (update.chat_jid, update.message_id, update.status) == (PHONE, "3EB0A9B8C7D6E5F4A3B2C1", "READ")


def test_group_participant_prefers_phone() -> None:
    event = chat_of({"remoteJid": "120363025246125888@g.us", "participant": "987@lid", "participantAlt": PHONE})
    assert (event.chat_jid, event.chat_kind, event.participant, event.lid_jid) == (
        "120363025246125888@g.us", ev.GROUP, PHONE, None,
    )  # fmt: skip
    lid_only = chat_of({"remoteJid": "5511999-1600000000@g.us", "participant": "987:3@lid"})
    assert (lid_only.chat_kind, lid_only.participant) == (ev.GROUP, "987@lid")


def test_broadcast_and_newsletter() -> None:
    status = parse_event(load("v2-messages-upsert-status-broadcast.json"))
    assert (status.chat_jid, status.chat_kind, status.participant) == (
        "status@broadcast", ev.BROADCAST, "5511943210987@s.whatsapp.net",
    )  # fmt: skip
    news = chat_of({"remoteJid": "120363111111111111@newsletter"})
    assert (news.chat_jid, news.chat_kind) == ("120363111111111111@newsletter", ev.NEWSLETTER)


def test_garbage_remote_jid() -> None:
    event = chat_of({"remoteJid": "not a jid", "remoteJidAlt": 5})
    assert (event.chat_jid, event.chat_kind, event.supported) == (None, ev.UNKNOWN, False)


def test_messages_update_v1_shape() -> None:
    data = {"remoteJid": PHONE, "fromMe": True, "id": "BAE5X", "status": "DELIVERY_ACK", "owner": "v1"}
    event = parse_event({"event": "messages.update", "instance": "v1", "data": data})
    assert (event.message_id, event.from_me, event.status, event.is_message) == ("BAE5X", True, "DELIVERY_ACK", False)


# ---------------------------------------------------------------------------------------------------------------
# normalize_jid, event_from_suffix


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("+55 (11) 99999-9999", "5511999999999@s.whatsapp.net"),
        ("5511999999999", "5511999999999@s.whatsapp.net"),
        ("5511999999999@s.whatsapp.net", "5511999999999@s.whatsapp.net"),
        ("5511999999999:12@s.whatsapp.net", "5511999999999@s.whatsapp.net"),
        (" 5511999999999@S.WHATSAPP.NET ", "5511999999999@s.whatsapp.net"),
        ("123456789012345@lid", "123456789012345@lid"),
        ("123456789012345:7@lid", "123456789012345@lid"),
        ("120363025246125888@g.us", "120363025246125888@g.us"),
        ("status@broadcast", "status@broadcast"),
        ("", None),
        ("   ", None),
        ("hello", None),
        ("@s.whatsapp.net", None),
        ("5511@", None),
        ("a@b@c", None),
        ("55 11 abc", None),
        ("123", None),
        ("1" * 30, None),
        ("５５１１９９９９９９９９９", None),
        ("5511999999999:１@s.whatsapp.net", None),
        ("5511\n999999999", None),
    ],
)
def test_normalize_jid(value: str, expected: str | None) -> None:
    assert normalize_jid(value) == expected


def test_normalize_jid_rejects_non_strings() -> None:
    for value in (None, 5511999999999, ["x"], {"a": 1}):
        assert normalize_jid(value) is None  # type: ignore[arg-type]


def evolution_suffix(event: str) -> str:
    """The byEvents suffix exactly as Evolution builds it (reference §1.4)."""
    return re.sub(r"[.-]", "_", event).upper().replace("_", "-").lower()


@pytest.mark.parametrize("name", ev.KNOWN_EVENTS)
def test_event_from_suffix_round_trips_every_known_event(name: str) -> None:
    assert event_from_suffix(evolution_suffix(name)) == name
    assert event_from_suffix("/" + evolution_suffix(name)) == name


@pytest.mark.parametrize(
    ("suffix", "name"),
    [
        ("messages-upsert", "messages.upsert"),
        ("send-message", "send.message"),
        ("send-message-update", "send.message.update"),
        ("group-participants-update", "group-participants.update"),
        ("typebot-change-status", "typebot.change-status"),
        ("connection-update", "connection.update"),
        ("MESSAGES-UPSERT", "messages.upsert"),
        ("brand-new-event", "brand.new.event"),
        ("", ""),
    ],
)
def test_event_from_suffix(suffix: str, name: str) -> None:
    assert event_from_suffix(suffix) == name


# ---------------------------------------------------------------------------------------------------------------
# property-based: any JSON in, an Event out


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=40,
)
ENVELOPE_AND_KEY_FIELDS = [
    "event", "instance", "instanceName", "data", "apikey", "owner", "key", "id", "keyId", "remoteJid",
    "remoteJidAlt", "senderPn", "senderLid", "participant", "participantAlt", "fromMe", "message", "messageType",
    "messageTimestamp", "timestampMs", "low", "high", "pushName", "status", "source", "caption", "text", "title",
    "name", "address", "displayName", "contacts", "singleSelectReply", "selectedRowId", "selectedDisplayText", "body",
]  # fmt: skip
interesting_keys = st.sampled_from(sorted({*ENVELOPE_AND_KEY_FIELDS, *ev.CONTENT_TYPES, *ev.WRAPPERS}))
keyed_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(interesting_keys, children, max_size=6),
    max_leaves=60,
)
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_event(event: object) -> None:
    assert isinstance(event, Event)
    assert event.kind in {ev.TEXT, ev.MEDIA, ev.REACTION, ev.PROTOCOL, ev.EDIT, ev.OTHER}
    assert event.chat_kind in {ev.USER, ev.GROUP, ev.BROADCAST, ev.NEWSLETTER, ev.LID, ev.UNKNOWN}
    assert isinstance(event.from_me, bool) and isinstance(event.event, str)
    assert event.supported or event.reason
    assert event.timestamp is None or event.timestamp.tzinfo is timezone.utc


@PROPERTY
@given(json_values)
def test_any_json_value_parses(body: object) -> None:
    assert_event(parse_event(body))


@PROPERTY
@given(keyed_values)
def test_any_json_with_evolution_keys_parses(body: object) -> None:
    assert_event(parse_event(body))


@PROPERTY
@given(
    st.sampled_from(["messages.upsert", "send.message", "messages.update", "messages.edited", "MESSAGES_UPSERT"]),
    keyed_values,
)
def test_any_data_under_a_known_event_parses(name: str, data: object) -> None:
    assert_event(parse_event({"event": name, "instance": "demo", "data": data}))


def paths_of(value: object, prefix: tuple = ()) -> list[tuple]:
    """Every path to a node of a JSON tree (dict keys and list indexes)."""
    found = [prefix]
    if isinstance(value, dict):
        for name, child in value.items():
            found += paths_of(child, prefix + (name,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


def replaced(tree: object, path: tuple, new: object) -> object:
    if not path:
        return new
    tree = copy.deepcopy(tree)
    node = tree
    for step in path[:-1]:
        try:
            node = node[step]  # type: ignore[index]
        except (KeyError, IndexError, TypeError):
            return tree
    if isinstance(node, (dict, list)):
        try:
            node[path[-1]] = new  # type: ignore[index]
        except (IndexError, TypeError):
            pass
    return tree


VALID_BODIES = [load(name) for name in WEBHOOK_FIXTURES if name.endswith(".json")] + [
    upsert({"ephemeralMessage": {"message": {"editedMessage": {"message": {"protocolMessage": {
        "editedMessage": {"imageMessage": {"caption": "c"}}}}}}}}),
]  # fmt: skip


@PROPERTY
@given(st.data())
def test_fuzzed_valid_bodies_never_raise(data: st.DataObject) -> None:
    body = data.draw(st.sampled_from(VALID_BODIES))
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        path = data.draw(st.sampled_from(paths_of(body)))
        body = replaced(body, path, data.draw(keyed_values))
    assert_event(parse_event(body))
