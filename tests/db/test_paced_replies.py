"""Paced replies (issue 12, part 5), on both databases: a long answer goes out in parts, each after its own
"typing…" (a sendPresence Evolution holds for the part's length), the pause re-checked before every part; every
part's echo is ours; a part is never sent twice, and after one whose outcome is unknown nothing more is sent."""

from __future__ import annotations

import asyncio

import pytest

from hybridflow.service import Service, TenantChanges
from hybridflow.service.replies import split_parts, typing_ms
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, eventually, owner, raw, run_due, said, upsert
from tests.support.cli import failed, ok
from tests.support.fakes import FakeEvolution, FakeOllama

INSTANCE = "test-instance"
ANSWER = "Olá, Maria!\n\nTemos pão de queijo saindo às 16h.\n\nQuer que eu separe uma dúzia?"
PARTS = ["Olá, Maria!", "Temos pão de queijo saindo às 16h.", "Quer que eu separe uma dúzia?"]


def test_an_answer_is_split_at_blank_lines_into_at_most_five_parts():
    assert split_parts(ANSWER) == tuple(PARTS)
    assert split_parts("Uma linha só.\nE outra colada.") is None  # one part: sent as one message
    assert split_parts("a\n \nb\n\n\n\nc") == ("a", "b", "c")
    assert split_parts("\n\n".join(str(i) for i in range(8))) == ("0", "1", "2", "3", "4\n\n5\n\n6\n\n7")


def test_typing_lasts_time_per_char_bounded_to_one_to_twenty_seconds():
    assert typing_ms("x" * 40, 50) == 2000
    assert typing_ms("ok", 50) == 1000
    assert typing_ms("x" * 1000, 50) == 20000
    assert typing_ms("x" * 40, 0) == 1000


@pytest.fixture
async def paced(service: Service, tenant, fake_ollama: FakeOllama) -> Service:  # type: ignore[no-untyped-def]
    await service.update_tenant(INSTANCE, TenantChanges(split_replies=True, time_per_char=30))
    fake_ollama.reply = ANSWER
    return service


async def part_one_sent(service: Service, fake_evolution: FakeEvolution) -> asyncio.Task[str]:
    """The customer asks; the paced reply runs in a task until its first part is out, each "typing…" lasting a
    fifth of its delay (long enough for the test to act before the next part)."""
    fake_evolution.delay_scale = 0.2
    await said(service, "Tem pão de queijo?")
    [job] = await service.replies.claim(10)
    task = asyncio.create_task(service.replies.run(job))
    await eventually(lambda: len(fake_evolution.sent_texts) == 1, what="part 1 sent")
    return task


def calls(fake_evolution: FakeEvolution) -> list[tuple[str, object]]:
    """What reached Evolution, in order: each presence with its delay, each text."""
    out: list[tuple[str, object]] = []
    for r in fake_evolution.requests:
        if "/sendPresence/" in r.path:
            out.append(("typing", r.json["delay"]))
        elif "/sendText/" in r.path:
            out.append(("text", r.json["text"]))
    return out


async def test_each_part_is_typed_then_sent_and_kept_in_the_transcript(
        paced: Service, fake_evolution: FakeEvolution):
    service = paced
    assert await said(service, "Tem pão de queijo?") == ("reply_queued", None)
    assert await run_due(service) == ["sent"]
    assert calls(fake_evolution) == [("typing", typing_ms(p, 30)) for p in PARTS[:1]] + [("text", PARTS[0])] + [
        ("typing", typing_ms(PARTS[1], 30)), ("text", PARTS[1]), ("typing", typing_ms(PARTS[2], 30)),
        ("text", PARTS[2])]
    assert all("delay" not in t for t in fake_evolution.sent_texts)  # the wait is before the pause check
    detail = await service.session_detail(INSTANCE, CUSTOMER)
    assert [m.text for m in detail.messages if m.direction == "bot"] == PARTS
    [reply] = detail.replies
    assert (reply.status, reply.reply_text, reply.parts, reply.parts_sent) == ("sent", ANSWER, 3, 3)


async def test_the_echo_of_every_part_is_ours_and_mutes_nothing(paced: Service, fake_evolution: FakeEvolution):
    service = paced
    await said(service, "Tem pão de queijo?")
    [job] = await service.replies.claim(10)
    task = asyncio.create_task(service.replies.run(job))
    # Evolution's echoes as they come while the parts go out: by id for the ones it answered, by text otherwise.
    for part in PARTS:
        await eventually(lambda: part in [t["text"] for t in fake_evolution.sent_texts], what=part)
        echo = upsert(part, from_me=True, event="send.message")
        assert (await service.ingest(echo, raw(echo))).action == "own_message"
        sent = next(m for m in fake_evolution.sent_messages if m["message"]["conversation"] == part)
        again = upsert(part, from_me=True, event="send.message", message_id=sent["key"]["id"])
        assert (await service.ingest(again, raw(again))).action in ("own_message", "duplicate")
    assert await task == "sent"
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused
    assert [t["text"] for t in fake_evolution.sent_texts] == PARTS


async def test_the_owner_typing_while_part_two_is_typed_stops_parts_two_and_three(
        paced: Service, fake_evolution: FakeEvolution):
    service = paced
    fake_evolution.delay_scale = 0.2  # Evolution holds each "typing…" for a fifth of its delay
    await said(service, "Tem pão de queijo?")
    [job] = await service.replies.claim(10)
    task = asyncio.create_task(service.replies.run(job))
    await eventually(lambda: len([c for c in calls(fake_evolution) if c[0] == "typing"]) == 2, what="typing part 2")
    body = owner("Oi Maria, deixa que eu respondo")
    assert (await service.ingest(body, raw(body))).action == "paused"
    assert await task == "skipped_paused"
    assert [t["text"] for t in fake_evolution.sent_texts] == PARTS[:1]  # parts 2 and 3 never go out
    [reply] = (await service.session_detail(INSTANCE, CUSTOMER)).replies
    assert (reply.status, reply.parts_sent) == ("skipped_paused", 1)
    assert reply.last_error == "the chat was paused before part 2 of 3 (the parts before it were sent)"
    assert await run_due(service) == []


async def test_a_part_that_failed_is_retried_from_that_part_and_never_resends_the_ones_before(
        paced: Service, clock: FakeClock, fake_evolution: FakeEvolution):
    service = paced
    task = await part_one_sent(service, fake_evolution)
    fake_evolution.fail_next(500)  # part 2's sendText
    assert await task == "retry"
    [reply] = (await service.session_detail(INSTANCE, CUSTOMER)).replies
    assert (reply.status, reply.parts_sent) == ("retry", 1)
    fake_evolution.delay_scale = 0.0
    clock.advance(seconds=10)
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == PARTS  # part 1 once, then parts 2 and 3


async def test_a_worker_that_dies_sending_part_two_leaves_it_unknown_and_sends_nothing_after_it(
        paced: Service, clock: FakeClock, fake_evolution: FakeEvolution):
    service = paced
    task = await part_one_sent(service, fake_evolution)
    fake_evolution.hold(only="/sendText/")  # part 2 reaches Evolution and hangs there
    await eventually(lambda: sum("/sendText/" in r.path for r in fake_evolution.requests) == 2, what="part 2 sent")
    task.cancel()  # the worker is gone mid-send (as after kill -9: nothing more runs in it)
    with pytest.raises(asyncio.CancelledError):
        await task
    clock.advance(hours=1)
    assert len(await service.replies.recover_stale()) == 1
    [reply] = (await service.session_detail(INSTANCE, CUSTOMER)).replies
    assert reply.status == "unknown" and reply.parts_sent == 1
    assert "part 2 of 3" in (reply.last_error or "") and "nor are the parts after it" in (reply.last_error or "")
    fake_evolution.release()
    await eventually(lambda: len(fake_evolution.sent_texts) == 2, what="Evolution finished part 2")
    assert await run_due(service) == []
    assert [t["text"] for t in fake_evolution.sent_texts] == PARTS[:2]  # part 3 is never sent


async def test_a_worker_that_dies_between_parts_goes_on_with_the_next_part_after_the_restart(
        paced: Service, clock: FakeClock, fake_evolution: FakeEvolution):
    service = paced
    fake_evolution.delay_scale = 1.0  # "typing…" part 2 takes over a second: the worker dies meanwhile
    await said(service, "Tem pão de queijo?")
    [job] = await service.replies.claim(10)
    task = asyncio.create_task(service.replies.run(job))
    await eventually(lambda: len([c for c in calls(fake_evolution) if c[0] == "typing"]) == 2, what="typing part 2")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    fake_evolution.delay_scale = 0.0
    clock.advance(hours=1)
    assert await service.replies.recover_stale() == []  # nothing was in flight: no unknown outcome
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == PARTS  # part 1 once, parts 2 and 3 after the restart


async def test_without_split_replies_the_answer_is_one_message(service: Service, tenant, fake_ollama: FakeOllama,
                                                              fake_evolution: FakeEvolution):
    fake_ollama.reply = ANSWER
    await said(service, "Tem pão de queijo?")
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == [ANSWER]


def test_paced_reply_options_from_the_command_line(hf):  # type: ignore[no-untyped-def]
    ok(hf("tenants", "add", INSTANCE, "--prompt", "Olá"))
    shown = ok(hf("tenants", "update", INSTANCE, "--split-replies", "--time-per-char", "40")).stdout
    assert "split-replies" in shown and "40 ms" in shown
    assert "invalid --time-per-char" in failed(hf("tenants", "update", INSTANCE, "--time-per-char", "9000"), 2)
    assert "invalid value for --time-per-char" in failed(hf("tenants", "update", INSTANCE, "--time-per-char", "x"), 2)


async def test_a_part_that_failed_but_reached_whatsapp_is_not_sent_again_and_the_rest_follows(
        paced: Service, clock: FakeClock, fake_evolution: FakeEvolution):
    service = paced
    task = await part_one_sent(service, fake_evolution)
    fake_evolution.fail_next(500)  # part 2's sendText answers 500 ...
    assert await task == "retry"
    echo = upsert(PARTS[1], from_me=True, event="send.message")  # ... but WhatsApp got it: its echo arrives
    assert (await service.ingest(echo, raw(echo))).action == "own_message"
    fake_evolution.delay_scale = 0.0
    clock.advance(seconds=10)
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == [PARTS[0], PARTS[2]]  # part 2 not sent twice
    [reply] = (await service.session_detail(INSTANCE, CUSTOMER)).replies
    assert (reply.status, reply.parts_sent) == ("sent", 3)
    assert not (await service.session(INSTANCE, CUSTOMER)).is_paused


async def test_a_message_during_a_paced_reply_is_answered_after_it_not_between_its_parts(
        paced: Service, fake_evolution: FakeEvolution, fake_ollama: FakeOllama):
    service = paced
    task = await part_one_sent(service, fake_evolution)
    fake_ollama.reply = "Separo, sim!"
    assert await said(service, "E tem broa?") == ("reply_queued", None)
    assert await service.replies.claim(10) == []  # the chat's paced reply is still going out
    assert await task == "sent"
    fake_evolution.delay_scale = 0.0
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == [*PARTS, "Separo, sim!"]
