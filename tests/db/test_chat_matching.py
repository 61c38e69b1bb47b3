"""A chat typed as a phone number matched to the tenant's existing chats, on SQLite and PostgreSQL.

The ``sessions`` commands and the admin API act on the one chat a number matches (the Brazilian ninth digit both
ways), refuse when several match, create a not-yet-seen chat only from a complete number, and say so.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp.test_utils import TestClient
from typer.testing import Result

from hybridflow.errors import AmbiguousChat, BadRequest, UnknownSession
from hybridflow.service import Service, TenantChanges
from hybridflow.web import create_app
from tests.support.builders import CUSTOMER, raw, upsert
from tests.support.cli import as_json, ok, one_line_error

INSTANCE = "test-instance"
PROMPT = "Você é a assistente da Padaria Boa. Responda em poucas palavras."
OLD_FORM = "551187654321@s.whatsapp.net"  # CUSTOMER's number without the ninth digit, as old accounts have it
NEW_NUMBER = "5511912345678@s.whatsapp.net"
LID = "123456789012345@lid"
ADMIN = {"Authorization": "Bearer admin-token"}
Hf = Callable[..., Result]

pytestmark = pytest.mark.usefixtures("isolated")


# --- the CLI -------------------------------------------------------------------------------------------------------


def add_tenant(hf: Hf) -> None:
    ok(hf("tenants", "add", INSTANCE, "--prompt", PROMPT))


def receive(hf: Hf, tmp_path: Path, *bodies: dict[str, Any]) -> None:
    """Push webhook bodies through the webhook's pipeline (``replay``), as if Evolution had sent them."""
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies), encoding="utf-8")
    ok(hf("replay", str(path)))


def listed(hf: Hf) -> list[tuple[str, bool]]:
    return [(s["chat_id"], s["is_paused"]) for s in as_json(hf("sessions", "list", "--json"))["sessions"]]


def test_pause_show_resume_by_a_number_typed_without_country_code(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    receive(hf, tmp_path, upsert("Olá"))

    paused = ok(hf("sessions", "pause", INSTANCE, "11987654321"))
    assert f"{INSTANCE} · {CUSTOMER}: " in paused.stdout and "paused (operator" in paused.stdout
    assert paused.stderr == ""  # no note: the chat existed
    assert listed(hf) == [(CUSTOMER, True)]  # no second chat "11987654321@s.whatsapp.net"

    shown = as_json(hf("sessions", "show", INSTANCE, "(11) 98765-4321", "--json"))
    assert (shown["chat_id"], shown["is_paused"], shown["push_name"]) == (CUSTOMER, True, "Maria")
    assert "note" not in shown
    assert f"{INSTANCE} · {CUSTOMER} · Maria" in ok(hf("sessions", "show", INSTANCE, "+55 11 98765 4321")).stdout

    resumed = ok(hf("sessions", "resume", INSTANCE, "11 98765-4321"))
    assert f"{INSTANCE} · {CUSTOMER}: active" in resumed.stdout
    assert listed(hf) == [(CUSTOMER, False)]


def test_the_old_twelve_digit_chat_is_the_one_acted_on(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    receive(hf, tmp_path, upsert("Olá", chat=OLD_FORM))

    for typed in ("11987654321", "+55 11 98765-4321", "(11) 8765-4321", "5511987654321"):
        view = as_json(hf("sessions", "pause", INSTANCE, typed, "--json"))
        assert (view["chat_id"], view["is_paused"]) == (OLD_FORM, True), typed
        assert "note" not in view
    assert as_json(hf("sessions", "show", INSTANCE, "11 98765-4321", "--json"))["chat_id"] == OLD_FORM
    assert as_json(hf("sessions", "resume", INSTANCE, "11 8765-4321", "--json"))["chat_id"] == OLD_FORM
    assert listed(hf) == [(OLD_FORM, False)]


def test_both_forms_existing_is_an_error_listing_them(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    receive(hf, tmp_path, upsert("Olá", chat=CUSTOMER, push_name="Maria"),
            upsert("Oi", chat=OLD_FORM, push_name="Maria Antiga"))

    for command in ("pause", "show", "resume"):
        result = hf("sessions", command, INSTANCE, "11 98765-4321")
        assert result.exit_code == 2, (command, result.output)
        error = one_line_error(result)
        assert "'11 98765-4321' matches 2 chats" in error
        assert f"{CUSTOMER} (Maria)" in error and f"{OLD_FORM} (Maria Antiga)" in error
        assert result.stdout == ""
    assert {paused for _, paused in listed(hf)} == {False}
    # the full chat id picks one
    assert as_json(hf("sessions", "pause", INSTANCE, OLD_FORM, "--json"))["chat_id"] == OLD_FORM
    assert dict(listed(hf)) == {CUSTOMER: False, OLD_FORM: True}


def test_pausing_a_new_complete_number_creates_the_chat_with_a_note(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    result = ok(hf("sessions", "pause", INSTANCE, "(11) 91234-5678"))
    assert f"{INSTANCE} · {NEW_NUMBER}: " in result.stdout
    assert result.stderr.strip() == f"note: no chat with this number yet: created {NEW_NUMBER}"
    assert listed(hf) == [(NEW_NUMBER, True)]

    again = as_json(hf("sessions", "pause", INSTANCE, "11 91234-5678", "--json"))
    assert again["chat_id"] == NEW_NUMBER and "note" not in again  # it exists now
    other = as_json(hf("sessions", "pause", INSTANCE, "+55 21 99876-5432", "--json"))
    assert other["note"] == "no chat with this number yet: created 5521998765432@s.whatsapp.net"
    # the customer's first message lands in the paused chat
    path = tmp_path / "first.json"
    path.write_text(json.dumps(upsert("Olá", chat=NEW_NUMBER)), encoding="utf-8")
    assert ": ignored_paused " in ok(hf("replay", str(path))).stdout


def test_an_incomplete_number_is_refused_and_creates_nothing(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    receive(hf, tmp_path, upsert("Olá"))
    for typed, fragment in (("98765-4321", "area code (DDD)"), ("11 8765", "too short"),
                            ("5511000000000", "not a valid phone number")):
        result = hf("sessions", "pause", INSTANCE, typed)
        assert result.exit_code == 2, (typed, result.output)
        error = one_line_error(result)
        assert f"no chat of instance {INSTANCE!r} matches {typed!r}" in error and fragment in error
    assert listed(hf) == [(CUSTOMER, False)]


def test_show_and_resume_of_no_match_say_what_was_looked_for(hf: Hf, tmp_path: Path) -> None:
    add_tenant(hf)
    receive(hf, tmp_path, upsert("Olá"))
    for command in ("show", "resume"):
        result = hf("sessions", command, INSTANCE, "11 91234-5678")
        assert result.exit_code == 1
        error = one_line_error(result)
        assert "no session for chat '11 91234-5678'" in error and NEW_NUMBER in error
    assert listed(hf) == [(CUSTOMER, False)]


# --- the admin API -------------------------------------------------------------------------------------------------


@pytest.fixture
async def client(service: Service, tenant, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(service, background=False))


async def receive_http(client: TestClient, body: dict[str, Any]) -> str:
    response = await client.post("/webhooks/evolution", data=raw(body), headers={"Content-Type": "application/json"})
    assert response.status == 200
    return (await response.json())["action"]


def path(chat: str, action: str = "") -> str:
    return f"/sessions/{INSTANCE}/{quote(chat, safe='')}" + (f"/{action}" if action else "")


async def test_api_acts_on_the_existing_chat_of_a_typed_number(client: TestClient) -> None:
    await receive_http(client, upsert("Olá", chat=OLD_FORM))

    shown = await client.get(path("11987654321"), headers=ADMIN)
    assert shown.status == 200 and (await shown.json())["chat_id"] == OLD_FORM
    paused = await client.post(path("(11) 98765-4321", "pause"), json={"for": "30m"}, headers=ADMIN)
    body = await paused.json()
    assert paused.status == 200 and (body["chat_id"], body["is_paused"]) == (OLD_FORM, True) and "note" not in body
    assert await receive_http(client, upsert("Ainda?", chat=OLD_FORM)) == "ignored_paused"
    resumed = await client.post(path("+55 11 98765-4321", "resume"), headers=ADMIN)
    assert (await resumed.json())["chat_id"] == OLD_FORM and not (await resumed.json())["is_paused"]


async def test_api_several_matches_is_400_listing_them(client: TestClient) -> None:
    await receive_http(client, upsert("Olá", chat=CUSTOMER, push_name="Maria"))
    await receive_http(client, upsert("Oi", chat=OLD_FORM, push_name="Maria Antiga"))
    for response in (await client.get(path("11987654321"), headers=ADMIN),
                     await client.post(path("11987654321", "pause"), headers=ADMIN),
                     await client.post(path("11987654321", "resume"), headers=ADMIN)):
        body = await response.json()
        assert response.status == 400 and body["error"] == "ambiguous_chat"
        assert f"{CUSTOMER} (Maria)" in body["message"] and f"{OLD_FORM} (Maria Antiga)" in body["message"]


async def test_api_pause_of_a_new_complete_number_creates_it_with_a_note(client: TestClient) -> None:
    response = await client.post(path("+55 11 91234-5678", "pause"), headers=ADMIN)
    body = await response.json()
    assert response.status == 200 and body["chat_id"] == NEW_NUMBER and body["is_paused"]
    assert body["note"] == f"no chat with this number yet: created {NEW_NUMBER}"
    assert "note" not in await (await client.get(path(NEW_NUMBER), headers=ADMIN)).json()


async def test_api_refuses_an_incomplete_number_and_404s_no_match(client: TestClient) -> None:
    await receive_http(client, upsert("Olá"))
    refused = await client.post(path("98765-4321", "pause"), headers=ADMIN)
    body = await refused.json()
    assert refused.status == 400 and body["error"] == "bad_request" and "'98765-4321'" in body["message"]
    for response in (await client.get(path("11 91234-5678"), headers=ADMIN),
                     await client.post(path("11 91234-5678", "resume"), headers=ADMIN)):
        body = await response.json()
        assert response.status == 404 and body["error"] == "unknown_session" and NEW_NUMBER in body["message"]
    garbage = await client.get(path("not-a-chat"), headers=ADMIN)
    assert garbage.status == 400 and "not a chat id or phone number" in (await garbage.json())["message"]


# --- the matcher through the service ------------------------------------------------------------------------------


async def ingest(service: Service, body: dict[str, Any]) -> str:
    return (await service.ingest(body, raw(body))).action


def with_key(body: dict[str, Any], **key: str) -> dict[str, Any]:
    body["data"]["key"].update(key)
    return body


async def test_a_lid_finds_the_phone_chat_evolution_sent_it_with(service: Service, tenant) -> None:
    # Evolution 2.3.5-2.3.6: remoteJid is the LID, remoteJidAlt the phone; the chat is keyed by the phone.
    await ingest(service, with_key(upsert("Olá", chat=LID), remoteJidAlt=CUSTOMER, addressingMode="lid"))
    match = await service.sessions.match(tenant, LID)
    assert match.existing() == CUSTOMER
    assert (await service.session(INSTANCE, LID.upper())).chat_id == CUSTOMER
    assert (await service.session(INSTANCE, "11 98765-4321")).chat_id == CUSTOMER
    assert (await service.pause(INSTANCE, LID)).chat_id == CUSTOMER
    with pytest.raises(UnknownSession):
        await service.session(INSTANCE, "999999999999999@lid")


async def test_a_lid_only_chat_is_matched_by_its_lid(service: Service, tenant) -> None:
    await ingest(service, upsert("Olá", chat=LID))  # no phone anywhere (Evolution <= 2.3.0)
    assert (await service.session(INSTANCE, LID)).chat_kind == "lid"
    with pytest.raises(UnknownSession, match="looked for 5511987654321@s.whatsapp.net, 551187654321@s.whatsapp.net"):
        await service.session(INSTANCE, "11987654321")


async def test_groups_and_full_jids_match_exactly(service: Service, tenant) -> None:
    group = "120363025246125486@g.us"
    await service.update_tenant(INSTANCE, TenantChanges(allow_groups=True))
    await ingest(service, with_key(upsert("Bom dia", chat=group), participant=CUSTOMER))
    await ingest(service, upsert("Olá", chat=OLD_FORM))
    assert (await service.session(INSTANCE, group)).chat_kind == "group"
    with pytest.raises(UnknownSession):
        await service.session(INSTANCE, CUSTOMER)  # a full JID has no ninth-digit variants
    assert (await service.session(INSTANCE, OLD_FORM)).chat_id == OLD_FORM


async def test_match_reports_every_outcome(service: Service, tenant) -> None:
    await ingest(service, upsert("Olá", chat=CUSTOMER))
    one = await service.sessions.match(tenant, "11 98765-4321")
    assert one.existing_or_new() == (CUSTOMER, None)
    none = await service.sessions.match(tenant, "+55 11 91234-5678")
    assert none.existing_or_new() == (NEW_NUMBER, f"no chat with this number yet: created {NEW_NUMBER}")
    with pytest.raises(UnknownSession):
        none.existing()
    incomplete = await service.sessions.match(tenant, "8765-4321")
    with pytest.raises(BadRequest, match="area code"):
        incomplete.existing_or_new()
    await ingest(service, upsert("Oi", chat=OLD_FORM))
    with pytest.raises(AmbiguousChat):
        (await service.sessions.match(tenant, "11 98765-4321")).existing()
