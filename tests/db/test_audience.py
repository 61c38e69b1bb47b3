"""Who the bot answers: the ignore list, the allow list (pilot mode) and the instance's own chat, on both
databases, decided in the documented order and named in every answer."""

from __future__ import annotations

import pytest

from hybridflow.errors import BadRequest
from hybridflow.service import Service
from tests.support.builders import CUSTOMER, OWN_NUMBER, owner, raw, upsert

OLD_FORM = "551187654321@s.whatsapp.net"  # the same mobile without its ninth digit, as older accounts have it
SECOND_PHONE = "5511911112222@s.whatsapp.net"
GROUP = "120363025246125888@g.us"


async def action(service: Service, body: dict) -> tuple[str, str | None]:
    result = await service.ingest(body, raw(body))
    return result.action, result.reason


async def test_an_ignored_number_is_stored_never_answered_and_never_paused(service: Service, tenant):
    assert await service.change_audience("test-instance", "ignore", ["(11) 98765-4321"], add=True) == [
        "+5511987654321"]
    assert await service.audience("test-instance", "ignore") == [("+5511987654321", [CUSTOMER, OLD_FORM])]
    assert await action(service, upsert("Oi, é a mãe")) == ("stored", "ignored_contact")
    assert await action(service, upsert("Oi filho", chat=OLD_FORM)) == ("stored", "ignored_contact")
    assert await action(service, owner("Oi mãe")) == ("stored", "ignored_contact")  # the owner's reply pauses nothing
    assert (await service.session("test-instance", CUSTOMER)).is_paused is False
    assert (await service.queue_depth())["queued"] == 0

    assert await service.change_audience("test-instance", "ignore", ["+55 11 98765 4321"], add=False) == [
        "+5511987654321"]
    assert await action(service, upsert("Vocês abrem hoje?")) == ("reply_queued", None)


async def test_pilot_mode_answers_only_the_allowed_chats(service: Service, tenant):
    await service.change_audience("test-instance", "allow", ["+55 11 91111-2222"], add=True)
    assert await action(service, upsert("Teste do dono", chat=SECOND_PHONE)) == ("reply_queued", None)
    assert await action(service, upsert("Olá, cliente real")) == ("stored", "not_allowed")
    assert await action(service, owner("Já te respondo")) == ("paused", "human_message")  # a human still takes over
    await service.change_audience("test-instance", "allow", [SECOND_PHONE], add=False)
    assert await service.audience("test-instance", "allow") == []
    assert await action(service, upsert("Olá de novo", chat="5511933334444@s.whatsapp.net")) == ("reply_queued", None)


async def test_the_ignore_list_wins_over_the_allow_list_and_an_allowed_group_still_needs_groups(service: Service,
                                                                                                tenant):
    await service.change_audience("test-instance", "allow", [CUSTOMER, GROUP], add=True)
    await service.change_audience("test-instance", "ignore", [CUSTOMER], add=True)
    assert await action(service, upsert("Oi")) == ("stored", "ignored_contact")
    group = upsert("Bom dia grupo", chat=GROUP, participant=SECOND_PHONE)
    assert await action(service, group) == ("stored", "group")


async def test_the_instances_own_chat_is_never_answered(service: Service, tenant):
    body = upsert("lembrar: comprar farinha", chat=OWN_NUMBER)  # the envelope's sender
    assert await action(service, body) == ("stored", "own_chat")
    notes = owner("bot status", chat=OWN_NUMBER)
    assert await action(service, notes) == ("stored", "own_chat")  # and the owner's notes pause nothing


@pytest.mark.parametrize("numbers", [["98765-4321"], ["+55 11 98765-4321", "not a number"], []])
async def test_a_list_change_with_a_bad_number_changes_nothing(service: Service, tenant, numbers: list[str]):
    with pytest.raises(BadRequest):
        await service.change_audience("test-instance", "ignore", numbers, add=True)
    assert await service.audience("test-instance", "ignore") == []
