"""Label events as Evolution sends them, read without a database: what counts as the same label name."""

from __future__ import annotations

import pytest

from hybridflow.labels import LabelAssociation, LabelEdit, parse, same_name


@pytest.mark.parametrize(("a", "b"), [("Bot off", " bot OFF "), ("Atendimento humano", "atendimento  HUMANO"),
                                      ("Pausar bôt", "pausar bot"), ("🤖 Bot off", "Bot off")])
def test_names_people_see_as_one_label_are_the_same(a, b):
    assert same_name(a, b)


@pytest.mark.parametrize(("a", "b"), [("Bot off", "Bot on"), ("Bot", "Bot off"), ("", ""), ("Bot off", None),
                                      ("🤖", "😀")])
def test_other_names_are_not(a, b):
    assert not same_name(a, b)


def test_an_association_is_read_flat_and_its_chat_normalized():
    assert parse("labels.association", {"type": "add", "chatId": "5511987654321@S.WHATSAPP.NET", "labelId": "7"}) == \
        LabelAssociation("7", "5511987654321@s.whatsapp.net", True)
    assert parse("labels.association", {"type": "remove", "chatId": "1234@lid", "labelId": 7}) == \
        LabelAssociation("7", "1234@lid", False)


@pytest.mark.parametrize("data", [None, [], {"type": "add", "chatId": "x"}, {"type": "move", "chatId": "1@lid",
                                  "labelId": "1"}, {"type": "add", "chatId": "not a chat", "labelId": "1"}])
def test_an_association_without_what_it_needs_is_none(data):
    assert parse("labels.association", data) is None


def test_an_edit_carries_the_name_and_whether_it_was_deleted():
    assert parse("labels.edit", {"id": "3", "name": " VIP ", "color": 1, "deleted": True}) == LabelEdit("3", "VIP", True)
    assert parse("labels.edit", {"id": "3"}) is None
