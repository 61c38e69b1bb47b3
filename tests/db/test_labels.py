"""Labels on the phone (issue 12, part 1), on both databases: the owner puts the tenant's pause label on a chat in
WhatsApp Business and the bot stays out of it until the label comes off; a removed label lifts only its own pause;
labels are known by the names ``labels.edit`` brought; a LID ``chatId`` finds the chat."""

from __future__ import annotations

import pytest

from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, owner, raw, upsert
from tests.support.cli import as_json, ok

INSTANCE = "test-instance"
LID = "123456789012345@lid"


def label_edit(label_id: str, name: str, *, deleted: bool = False) -> dict:
    """``labels.edit`` as Evolution 2.3 sends it (the Baileys label, flat, with the instance)."""
    return {"event": "labels.edit", "instance": INSTANCE, "date_time": "2026-12-01T10:00:00.000Z",
            "sender": "5511955550000@s.whatsapp.net", "server_url": "http://localhost:8080", "apikey": None,
            "data": {"id": label_id, "name": name, "color": 3, "deleted": deleted, "predefinedId": None,
                     "instance": INSTANCE}}


def label_on(label_id: str, chat: str = CUSTOMER, *, added: bool = True) -> dict:
    """``labels.association``: flat data, no association type (Evolution drops it)."""
    return {"event": "labels.association", "instance": INSTANCE, "date_time": "2026-12-01T10:00:00.000Z",
            "sender": "5511955550000@s.whatsapp.net", "server_url": "http://localhost:8080", "apikey": None,
            "data": {"instance": INSTANCE, "type": "add" if added else "remove", "chatId": chat, "labelId": label_id}}


async def send(service: Service, body: dict) -> tuple[str, str | None]:
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


@pytest.fixture
async def labelled(service: Service, tenant):  # type: ignore[no-untyped-def]
    await service.update_tenant(INSTANCE, TenantChanges(pause_label="Bot off"))
    assert await send(service, label_edit("7", "Bot off")) == ("label_stored", "known")
    assert await send(service, label_edit("8", "Cliente VIP")) == ("label_stored", "known")
    return service


async def test_the_pause_label_pauses_a_chat_until_it_comes_off(labelled: Service):
    service = labelled
    assert await send(service, label_on("7")) == ("label_paused", "label")
    view = await service.session(INSTANCE, CUSTOMER)
    assert view.is_paused and view.resumes_at is None and [p.reason for p in view.pauses] == ["label"]
    assert await send(service, upsert("Oi?")) == ("ignored_paused", "label")
    assert await send(service, label_on("7", added=False)) == ("label_resumed", "label")
    assert await send(service, upsert("Oi de novo")) == ("reply_queued", None)


async def test_another_label_changes_nothing(labelled: Service):
    assert await send(labelled, label_on("8")) == ("label_stored", "other_label")
    assert await send(labelled, upsert("Oi")) == ("reply_queued", None)


async def test_removing_the_label_does_not_resume_a_chat_the_owner_just_typed_in(labelled: Service, clock: FakeClock):
    service = labelled
    await send(service, label_on("7"))
    assert await send(service, owner("Já te respondo, Maria")) == ("paused", "human_message")
    assert await send(service, label_on("7", added=False)) == ("label_resumed", "label")
    view = await service.session(INSTANCE, CUSTOMER)
    assert view.is_paused and [p.reason for p in view.pauses] == ["human_message"]
    assert await send(service, upsert("Oi?")) == ("ignored_paused", "human_message")
    changes = [(e.change, e.reason) for e in (await service.session_detail(INSTANCE, CUSTOMER)).events]
    assert changes == [("paused", "label"), ("paused", "human_message"), ("lifted", "label")]


async def test_names_match_ignoring_case_accents_and_spaces_and_a_rename_applies(service: Service, tenant):
    await service.update_tenant(INSTANCE, TenantChanges(pause_label="Atendimento humano"))
    await send(service, label_edit("3", "Novo cliente"))
    assert await send(service, label_on("3")) == ("label_stored", "other_label")
    # Renamed on the phone to the pause label, written another way: the chat that carries it is paused now.
    assert await send(service, label_edit("3", "  ATENDIMENTO  Humano ")) == ("label_paused", "renamed")
    assert (await service.session(INSTANCE, CUSTOMER)).pause_reason == "label"
    assert await send(service, label_edit("3", "Antigo")) == ("label_resumed", "renamed")
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused


async def test_a_label_deleted_on_the_phone_lifts_its_pauses(labelled: Service):
    await send(labelled, label_on("7"))
    assert await send(labelled, label_edit("7", "Bot off", deleted=True)) == ("label_resumed", "deleted")
    assert await send(labelled, label_edit("7", "Bot off", deleted=True)) == ("label_stored", "deleted")  # sent twice
    assert not (await labelled.session(INSTANCE, CUSTOMER)).is_paused


async def test_an_association_before_the_labels_name_is_kept_and_applies_when_the_name_arrives(
        service: Service, tenant):
    await service.update_tenant(INSTANCE, TenantChanges(pause_label="Bot off"))
    assert await send(service, label_on("9")) == ("label_stored", "unknown_label")
    assert await send(service, label_edit("9", "bot off")) == ("label_paused", "known")
    assert (await service.session(INSTANCE, CUSTOMER)).is_paused


async def test_a_lid_chat_id_finds_the_phone_keyed_chat(labelled: Service):
    service = labelled
    body = upsert("Oi", remoteJidAlt=LID)  # v2.3 with LID addressing: both ids in one message
    body["data"]["key"]["remoteJid"], body["data"]["key"]["remoteJidAlt"] = LID, CUSTOMER
    assert await send(service, body) == ("reply_queued", None)
    assert await send(service, label_on("7", chat=LID)) == ("label_paused", "label")
    assert (await service.session(INSTANCE, CUSTOMER)).pause_reason == "label"


async def test_setting_the_pause_label_applies_to_chats_that_already_carry_it(service: Service, tenant):
    await send(service, upsert("Oi"))
    await send(service, label_edit("5", "Pausar bot"))
    await send(service, label_on("5"))
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused
    await service.update_tenant(INSTANCE, TenantChanges(pause_label="pausar bot"))
    assert (await service.session(INSTANCE, CUSTOMER)).pause_reason == "label"
    await service.update_tenant(INSTANCE, TenantChanges(pause_label=""))
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused


async def test_an_operator_resume_lifts_the_label_pause_and_says_the_label_is_still_on(labelled: Service):
    await send(labelled, label_on("7"))
    view = await labelled.resume(INSTANCE, CUSTOMER)
    assert not view.is_paused and "label is still on the chat" in view.note


async def test_a_label_body_without_the_fields_is_an_ignored_event(labelled: Service):
    body = label_on("7")
    del body["data"]["labelId"]
    assert (await send(labelled, body))[0] == "ignored_event"


def test_tenants_labels_lists_what_arrived(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Você atende a Padaria Boa.", "--pause-label", "Bot off"))
    listed = as_json(hf("tenants", "labels", INSTANCE, "--json"))
    assert listed == {"pause_label": "Bot off", "labels": []}
    assert "No labels known yet" in ok(hf("tenants", "labels", INSTANCE)).stdout
    assert as_json(hf("tenants", "show", INSTANCE, "--json"))["pause_label"] == "Bot off"


async def test_a_tenant_with_labels_and_aliases_is_removed_with_its_history(labelled: Service):
    body = upsert("Oi", remoteJidAlt=LID)
    await send(labelled, body)
    await send(labelled, label_on("7"))
    counts = await labelled.remove_tenant(INSTANCE, history="delete")
    assert counts["messages"] == 1
    with pytest.raises(Exception) as gone:
        await labelled.tenant(INSTANCE)
    assert getattr(gone.value, "status", None) == 404


async def test_a_lid_chat_id_finds_a_chat_whose_alias_was_never_kept(labelled: Service):
    service = labelled
    body = upsert("Oi")
    body["data"]["key"]["remoteJid"], body["data"]["key"]["remoteJidAlt"] = LID, CUSTOMER
    await send(service, body)
    async with service.store.write() as conn:  # as a database from before aliases were kept
        from hybridflow.models import ALIASES
        await conn.execute(ALIASES.delete())
    assert await send(service, label_on("7", chat=LID)) == ("label_paused", "label")
    assert (await service.session(INSTANCE, CUSTOMER)).pause_reason == "label"
    assert await send(service, upsert("Oi?")) == ("ignored_paused", "label")
