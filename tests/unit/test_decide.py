"""``ingest.decide``, the state machine of one message: no database, a session and a parsed event built by hand."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hybridflow import events
from hybridflow.service.ingest import (
    DUPLICATE, IGNORED_PAUSED, OWN_MESSAGE, PAUSED, REPLY_QUEUED, STORED, Inbound, SessionState, decide)
from hybridflow.service.tenants import TenantConfig
from tests.support.builders import CUSTOMER, owner, raw, upsert

NOW = datetime(2025, 11, 24, 12, 0, tzinfo=UTC)
RESUME_AFTER = 2 * 3600.0
TENANT = TenantConfig(
    id=1, instance="test-instance", prompt="Be brief.", evolution_url="http://127.0.0.1:8080", model="llama3.2",
    resume_after=RESUME_AFTER, debounce=0.0, api_version="v2", allow_groups=False, send_presence=False,
    mark_read=False, created_at=NOW - timedelta(days=1), has_api_key=True, has_webhook_secret=False,
    has_jwt_key=False)
GROUP = "120363025246125888@g.us"


def inbound(body: dict[str, Any], tenant: TenantConfig = TENANT) -> Inbound:
    return Inbound(tenant=tenant, event=events.parse_event(body), raw=raw(body))


def session(**state: Any) -> SessionState:
    """A session as read from the database: active, unless ``state`` says otherwise."""
    values: dict[str, Any] = {
        "id": 7, "tenant_id": TENANT.id, "chat_id": CUSTOMER, "is_paused": False, "pause_reason": None,
        "paused_by": None, "paused_at": None, "resumes_at": None, "last_human_at": None,
        "last_message_at": NOW - timedelta(hours=3), "push_name": None}
    return SessionState(**(values | state))


def paused(reason: str = "human_message", by: str = "owner", resumes_at: datetime | None = NOW + timedelta(hours=1),
           **state: Any) -> SessionState:
    return session(is_paused=True, pause_reason=reason, paused_by=by, paused_at=NOW - timedelta(hours=1),
                   resumes_at=resumes_at, last_human_at=NOW - timedelta(hours=1), **state)


def run(body: dict[str, Any], state: SessionState | None = None, *, tenant: TenantConfig = TENANT,
        duplicate: bool = False, echo: bool = False) -> tuple[tuple[str, str | None], SessionState]:
    state = state or session()
    return decide(inbound(body, tenant), state, NOW, duplicate=duplicate, echo=echo), state


# --- echo and duplicate: nothing changes -----------------------------------------------------------------------


def test_the_echo_of_our_own_reply_is_own_message_and_changes_nothing():
    before = session()
    (action, reason), after = run(upsert("Abrimos às 8h", from_me=True, event="send.message"), replace(before),
                                  echo=True)
    assert (action, reason) == (OWN_MESSAGE, None)
    assert after == before and not after.dirty and after.changes == []


def test_an_echo_wins_over_duplicate():
    assert run(upsert("Abrimos às 8h", from_me=True, event="send.message"), duplicate=True, echo=True)[0] == (
        OWN_MESSAGE, None)


def test_a_duplicate_is_duplicate_and_changes_nothing_even_in_a_paused_chat():
    before = paused()
    (action, reason), after = run(upsert("Olá de novo"), replace(before), duplicate=True)
    assert (action, reason) == (DUPLICATE, None)
    assert after == before and not after.dirty


def test_a_duplicate_owner_message_does_not_pause():
    (action, _), after = run(owner("Oi"), duplicate=True)
    assert action == DUPLICATE
    assert not after.is_paused and after.changes == []


# --- chats that are never answered -----------------------------------------------------------------------------


@pytest.mark.parametrize(("chat", "kind"), [("status@broadcast", "broadcast"),
                                            ("120363199999999999@newsletter", "newsletter")])
def test_broadcasts_and_newsletters_are_stored_with_their_kind(chat, kind):
    (action, reason), after = run(upsert("Promoção!", chat=chat), session(chat_id=chat))
    assert (action, reason) == (STORED, kind)
    assert after.last_message_at == NOW and after.dirty
    assert not after.is_paused


@pytest.mark.parametrize("writer", ["customer", "owner"])
def test_a_group_is_stored_when_the_tenant_does_not_allow_groups(writer):
    body = upsert("Bom dia, grupo", chat=GROUP, from_me=writer == "owner", participant="5511911112222@s.whatsapp.net")
    (action, reason), after = run(body, session(chat_id=GROUP))
    assert (action, reason) == (STORED, "group")
    assert not after.is_paused and after.last_message_at == NOW  # the owner writing in a group pauses nothing


def test_a_group_is_answered_when_the_tenant_allows_groups():
    body = upsert("Bom dia, grupo", chat=GROUP, participant="5511911112222@s.whatsapp.net")
    assert run(body, session(chat_id=GROUP), tenant=replace(TENANT, allow_groups=True))[0] == (REPLY_QUEUED, None)


def test_an_owner_message_in_an_allowed_group_pauses_it():
    body = upsert("Eu respondo", chat=GROUP, from_me=True)
    (action, reason), after = run(body, session(chat_id=GROUP), tenant=replace(TENANT, allow_groups=True))
    assert (action, reason) == (PAUSED, "human_message")
    assert after.is_paused


# --- a human writes: the chat pauses ---------------------------------------------------------------------------


def test_an_owner_message_pauses_the_chat_for_resume_after():
    (action, reason), after = run(owner("Oi Maria, aqui é o João!", message_id="OWNER-1"))
    assert (action, reason) == (PAUSED, "human_message")
    assert (after.is_paused, after.pause_reason, after.paused_by, after.paused_at) == (
        True, "human_message", "owner", NOW)
    assert after.resumes_at == NOW + timedelta(seconds=RESUME_AFTER)
    assert after.last_human_at == after.last_message_at == NOW
    assert after.dirty
    assert [(c["change"], c["reason"], c["actor"], c["message_id"], c["resumes_at"]) for c in after.changes] == [
        ("paused", "human_message", "owner", "OWNER-1", NOW + timedelta(seconds=RESUME_AFTER))]


def test_a_message_sent_by_another_api_client_is_an_api_takeover():
    (action, reason), after = run(upsert("Aqui é o atendente", from_me=True, event="send.message"))
    assert (action, reason) == (PAUSED, "api_takeover")
    assert (after.pause_reason, after.paused_by) == ("api_takeover", "api")
    assert after.resumes_at == NOW + timedelta(seconds=RESUME_AFTER)


def test_another_owner_message_extends_the_pause_without_a_second_event():
    state = paused(resumes_at=NOW + timedelta(minutes=30))
    (action, reason), after = run(owner("Mais uma coisa"), state)
    assert (action, reason) == (PAUSED, "human_message")
    assert after.resumes_at == NOW + timedelta(seconds=RESUME_AFTER)  # extended from the latest human message
    assert after.paused_at == NOW - timedelta(hours=1)  # the pause itself is the same one
    assert after.changes == []  # only the transition to paused is an event


def test_an_owner_message_never_shortens_a_longer_pause():
    later = NOW + timedelta(hours=5)
    (action, _), after = run(owner("Oi"), paused(reason="operator", by="cli", resumes_at=later))
    assert action == PAUSED
    assert after.resumes_at == later
    assert (after.pause_reason, after.paused_by) == ("operator", "cli")


def test_an_owner_message_keeps_an_operator_pause_until_resumed():
    (action, reason), after = run(owner("Oi"), paused(reason="operator", by="cli", resumes_at=None))
    assert (action, reason) == (PAUSED, "human_message")
    assert after.is_paused and after.resumes_at is None  # "until resumed" is not turned into 2 hours
    assert (after.pause_reason, after.paused_by) == ("operator", "cli")  # the pause that holds longest
    # The owner's pause stacks on the operator's: it is its own reason, with its own end.
    assert [(p.reason, p.until) for p in after.held] == [
        ("operator", None), ("human_message", NOW + timedelta(seconds=RESUME_AFTER))]
    assert [(c["change"], c["reason"]) for c in after.changes] == [("paused", "human_message")]


# --- a customer writes -----------------------------------------------------------------------------------------


def test_a_customer_text_in_an_active_chat_queues_a_reply():
    (action, reason), after = run(upsert("Vocês abrem domingo?", push_name="Maria"))
    assert (action, reason) == (REPLY_QUEUED, None)
    assert after.last_message_at == NOW and after.push_name == "Maria" and after.dirty
    assert not after.is_paused and after.last_human_at is None and after.changes == []


def test_a_customer_media_caption_queues_a_reply():
    body = upsert(None, message={"imageMessage": {"caption": "Quanto custa este?", "mimetype": "image/jpeg"}},
                  messageType="imageMessage")
    assert run(body)[0] == (REPLY_QUEUED, None)


def test_a_customer_message_in_a_paused_chat_is_ignored_with_the_pause_reason():
    state = paused()
    (action, reason), after = run(upsert("Alô?"), state)
    assert (action, reason) == (IGNORED_PAUSED, "human_message")
    assert after.is_paused and after.resumes_at == NOW + timedelta(hours=1)
    assert after.last_message_at == NOW and after.changes == []


def test_a_customer_message_in_an_operator_pause_is_ignored():
    assert run(upsert("Alô?"), paused(reason="operator", by="cli", resumes_at=None))[0] == (
        IGNORED_PAUSED, "operator")


@pytest.mark.parametrize("resumes_at", [NOW, NOW - timedelta(minutes=1)])
def test_a_customer_message_after_the_pause_ran_out_resumes_the_chat_and_is_answered(resumes_at):
    (action, reason), after = run(upsert("Oi de novo", message_id="CUST-9"), paused(resumes_at=resumes_at))
    assert (action, reason) == (REPLY_QUEUED, None)
    assert (after.is_paused, after.pause_reason, after.paused_by, after.paused_at, after.resumes_at) == (
        False, None, None, None, None)
    assert [(c["change"], c["reason"], c["actor"], c["message_id"]) for c in after.changes] == [
        ("resumed", "auto_resume", "webhook", "CUST-9")]


def test_audio_without_text_is_stored_not_answered():
    (action, reason), after = run(upsert(None))  # a voice note
    assert (action, reason) == (STORED, "media_without_text")
    assert after.last_message_at == NOW and not after.is_paused


def test_media_without_caption_is_stored_not_answered():
    body = upsert(None, message={"imageMessage": {"mimetype": "image/jpeg"}}, messageType="imageMessage")
    assert run(body)[0] == (STORED, "media_without_text")


def test_audio_in_an_expired_pause_still_resumes_the_chat():
    (action, _), after = run(upsert(None), paused(resumes_at=NOW - timedelta(minutes=1)))
    assert action == STORED
    assert not after.is_paused
