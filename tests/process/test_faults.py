"""Fault tests: `hybridflow serve` as a real process, killed, cut off from its peers and its database, flooded.

Each test runs `python -m hybridflow serve` as a child process on 127.0.0.1 against the fake Evolution and fake
Ollama of this process, and judges the outcome the way a user would: what the fake Evolution delivered to
WhatsApp (each customer gets one reply, never two), what the webhook answered Evolution (200, or a 5xx that
Evolution retries), and what an operator reads in the database (``reply_jobs.status``, ``messages``).

Time is bounded everywhere: every wait has a timeout, the fakes answer in a few seconds at most, and the outages
last no longer than the first retry of the product's backoff (5 s).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from hybridflow.config import Settings
from hybridflow.evolution import evolution_number
from hybridflow.models import OPEN_JOB_STATES, Message, ReplyJob
from hybridflow.service import Service, TenantChanges
from hybridflow.store import Store
from tests.support.builders import eventually, settled, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.pg import Cluster, drop_database, fresh_database
from tests.support.ports import closed_port_url, free_port
from tests.support.serve import ServeProcess, cli, serve_env

INSTANCE = "test-instance"
API_KEY = "instance-token-123"
PROMPT = "You are the assistant of Padaria Boa. Answer briefly."
JOBS = ReplyJob.__table__
MESSAGES = Message.__table__
FINAL = {"sent", "failed", "skipped_paused", "unknown"}
JSON_HEADERS = {"Content-Type": "application/json"}


def chat(i: int) -> str:
    """The JID of the i-th customer (one chat per customer keeps "one reply per chat" exact)."""
    return f"5511{i:09d}@s.whatsapp.net"


# -- helpers ------------------------------------------------------------------------------------------------------

class Database:
    """Read what an operator would read, from outside the server process."""

    def __init__(self, url: str) -> None:
        self.url = url

    @contextlib.asynccontextmanager
    async def _store(self) -> AsyncIterator[Store]:
        store = Store(self.url)
        try:
            yield store
        finally:
            await store.dispose()

    async def jobs(self) -> list[Any]:
        async with self._store() as store, store.read() as conn:
            return (await conn.execute(sa.select(JOBS).order_by(JOBS.c.id))).all()

    async def open_jobs(self) -> int:
        """Reply jobs a worker may still act on (queued, retry, running, sending)."""
        async with self._store() as store, store.read() as conn:
            return (await conn.execute(sa.select(sa.func.count()).select_from(JOBS).where(
                JOBS.c.status.in_(OPEN_JOB_STATES)))).scalar_one()

    async def wait_idle(self, timeout: float = 20.0) -> None:
        """The barrier before checking that something did NOT happen: no reply job is left for a worker."""
        await eventually(lambda: self._no_open_jobs(), timeout=timeout, what="no reply job left open")

    async def _no_open_jobs(self) -> bool:
        return await self.open_jobs() == 0

    async def statuses(self) -> dict[str, str]:
        """Reply job status by chat."""
        return {job.chat_id: job.status for job in await self.jobs()}

    async def customer_message_counts(self) -> Counter[str]:
        """How many ``messages`` rows each customer message id has."""
        async with self._store() as store, store.read() as conn:
            rows = (await conn.execute(
                sa.select(MESSAGES.c.message_id).where(MESSAGES.c.direction == "customer"))).all()
        return Counter(row.message_id for row in rows)

    async def expire_send_leases(self, job_ids: list[int] | None = None) -> list[int]:
        """Let the send lease of ``sending`` jobs run out now; returns their ids.

        The send lease is 2 × evolution_timeout + 30 s, so that a slow but live send is never declared lost;
        waiting it out would make a test last a minute. Moving ``lease_until`` into the past is the same as
        waiting: the server's own recovery then settles the job.
        """
        now = datetime.now(UTC)
        query = sa.update(JOBS).where(JOBS.c.status == "sending").values(lease_until=now - timedelta(seconds=1))
        if job_ids is not None:
            query = query.where(JOBS.c.id.in_(job_ids))
        async with self._store() as store, store.write() as conn:
            return [row.id for row in (await conn.execute(query.returning(JOBS.c.id))).all()]


async def post(session: aiohttp.ClientSession, url: str, body: Any) -> tuple[int, dict | None]:
    """POST a webhook body; returns the status and the JSON answer (None when not JSON)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(url, data=data, headers=JSON_HEADERS) as response:
        text = await response.text()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, None


async def post_all(url: str, bodies: list[dict], concurrency: int = 8) -> list[str]:
    """POST every body (a few at a time); asserts each is answered 200 and returns the actions."""
    gate = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async def one(body: dict) -> str:
            async with gate:
                status, answer = await post(session, url, body)
            assert status == 200, (status, answer)
            assert answer is not None
            return answer["action"]
        return list(await asyncio.gather(*(one(body) for body in bodies)))


def sent_numbers(evolution: FakeEvolution) -> Counter[str]:
    """How many replies each WhatsApp number received."""
    return Counter(body["number"] for body in evolution.sent_texts)


def send_attempts(evolution: FakeEvolution) -> Counter[str]:
    """How many sendText calls reached the fake Evolution for each number (including failed ones)."""
    return Counter(r.json["number"] for r in evolution.requests
                   if r.path.startswith("/message/sendText/") and isinstance(r.json, dict))


class Servers:
    """Starts `serve` processes for one test and kills whatever is left at the end."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[ServeProcess] = []

    def env(self, database_url: str, evolution: FakeEvolution, ollama_host: str, **settings: str) -> dict[str, str]:
        assert evolution.url is not None
        return serve_env(database_url, evolution_url=evolution.url, ollama_host=ollama_host, **settings)

    async def add_tenant(self, env: dict[str, str]) -> None:
        """The tenant, through the Service API on the database and with the secret key `serve` will use."""
        settings = Settings(database_url=env["HYBRIDFLOW_DATABASE_URL"], secret_key=env["HYBRIDFLOW_SECRET_KEY"])
        async with Service.open(settings) as service:
            await service.add_tenant(INSTANCE, TenantChanges(prompt=PROMPT, api_key=API_KEY))

    async def start(self, env: dict[str, str]) -> ServeProcess:
        server = ServeProcess(env, self.directory / f"serve-{len(self.started)}.log")
        self.started.append(server)
        server.start()
        await server.wait_healthy()
        return server

    async def serve(self, database_url: str, evolution: FakeEvolution, ollama_host: str,
                    **settings: str) -> ServeProcess:
        """A tenant for the fakes and one running `serve`; Evolution's echo goes back to it."""
        env = self.env(database_url, evolution, ollama_host, **settings)
        await self.add_tenant(env)
        server = await self.start(env)
        evolution.echo_webhook_url = server.webhook_url
        return server

    def close(self) -> None:
        for server in self.started:
            server.kill()
            print(f"--- {server.log_path.name} (last lines)\n{server.log_tail(20)}")  # shown when a test fails


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    yield started
    started.close()


@pytest.fixture
def evolution(fake_evolution: FakeEvolution) -> FakeEvolution:
    """The fake Evolution, checking the tenant's API key and instance as the real one does."""
    fake_evolution.api_key = API_KEY
    fake_evolution.instances = {INSTANCE}
    return fake_evolution


@pytest.fixture
def db(database_url: str) -> Database:
    return Database(database_url)


# -- 1. kill -9 while replies are in flight -----------------------------------------------------------------------

async def test_kill_9_while_models_answer_then_restart_sends_every_reply_exactly_once(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama,
        servers: Servers) -> None:
    fake_ollama.delay = 2.0  # a slow model: replies are being generated when the kill lands
    server = await servers.serve(database_url, evolution, fake_ollama.url, reply_lease="3s")
    bodies = [upsert(f"pergunta {i}", chat=chat(i)) for i in range(20)]
    assert await post_all(server.webhook_url, bodies) == ["reply_queued"] * 20

    # The first replies went out and the next ones are with the model: kill -9 now.
    await eventually(lambda: len(fake_ollama.requests) > 8, timeout=20, what="a second round of generations")
    await eventually(lambda: _has_status(db, "running"), timeout=10, what="generations recorded as running")
    server.kill()
    before = await db.statuses()
    assert "running" in before.values(), before  # the kill interrupted generations
    assert sum(sent_numbers(evolution).values()) < 20
    await db.expire_send_leases()  # a send cut by the kill is settled at once rather than in 30 s

    server.start()
    await server.wait_healthy()
    await eventually(lambda: _all_final(db, 20), timeout=30, what="every reply job finished after the restart")
    await db.wait_idle()  # nothing is left for a worker: nothing more can be sent
    _assert_exactly_once(await db.statuses(), evolution, expected_chats=20)


async def _has_status(db: Database, status: str) -> bool:
    return status in (await db.statuses()).values()


async def _all_final(db: Database, count: int) -> bool:
    statuses = await db.statuses()
    return len(statuses) == count and set(statuses.values()) <= FINAL


def _assert_exactly_once(statuses: dict[str, str], evolution: FakeEvolution, *, expected_chats: int) -> None:
    """Every job is ``sent`` (delivered once) or ``unknown`` (delivered at most once); nobody got two replies."""
    numbers = sent_numbers(evolution)
    assert len(statuses) == expected_chats
    assert set(statuses.values()) <= {"sent", "unknown"}, Counter(statuses.values())
    doubled = {n: c for n, c in numbers.items() if c > 1}
    assert not doubled, f"replies sent twice: {doubled}"
    for chat_id, status in statuses.items():
        delivered = numbers[evolution_number(chat_id)]
        if status == "sent":
            assert delivered == 1, (chat_id, status, delivered)
        else:
            assert delivered <= 1, (chat_id, status, delivered)


@pytest.mark.parametrize("echo", ["echo_lost", "echo_after_restart"])
async def test_kill_9_mid_send_is_never_resent(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama, servers: Servers,
        echo: str) -> None:
    """sendText calls are in flight at the fake Evolution (held there) when `serve` dies.

    Evolution still delivers them. Their jobs were recorded as ``sending`` before the call, so after the restart
    they are never sent again: ``unknown`` when their echo was lost with the dead process, ``sent`` when the echo
    reached the restarted one. The other replies go out once each.
    """
    evolution.hold()  # sendText calls reach Evolution and wait there until the test releases them
    server = await servers.serve(database_url, evolution, fake_ollama.url, reply_lease="3s")
    bodies = [upsert(f"pergunta {i}", chat=chat(i)) for i in range(20)]
    assert await post_all(server.webhook_url, bodies) == ["reply_queued"] * 20
    await eventually(lambda: sum(send_attempts(evolution).values()) >= 4, timeout=20, what="sendText calls in flight")
    server.kill()
    # The calls it wrote just before dying still reach the fake Evolution (the loop was blocked by the kill).
    await settled(lambda: len(evolution.requests))
    in_flight = set(send_attempts(evolution))
    assert evolution.sent_texts == []  # the fake Evolution has not finished any of them yet
    sending = {job.id: evolution_number(job.chat_id) for job in await db.jobs() if job.status == "sending"}
    assert in_flight <= set(sending.values())  # every call that reached Evolution was recorded before it was made
    reached = sorted(job_id for job_id, number in sending.items() if number in in_flight)

    if echo == "echo_lost":
        # Evolution finishes the sends while `serve` is down: their echoes hit a closed port.
        evolution.release()
        await eventually(lambda: len(evolution.sent_texts) == len(in_flight), timeout=10, what="in-flight sends done")
        assert len(evolution.echo_errors) == len(in_flight)
        assert sorted(await db.expire_send_leases(list(sending))) == sorted(sending)
        server.start()
        await server.wait_healthy()
        expected = "unknown"
    else:
        server.start()
        await server.wait_healthy()
        # Evolution finishes the sends after the restart (whenever that is): the echoes reach the new process.
        evolution.release()
        await eventually(lambda: in_flight <= set(sent_numbers(evolution)), timeout=15, what="in-flight sends done")
        assert evolution.echo_errors == []
        assert sorted(await db.expire_send_leases(list(sending))) == sorted(sending)
        expected = "sent"

    await eventually(lambda: _all_final(db, 20), timeout=30, what="every reply job finished after the restart")
    await db.wait_idle()
    statuses = await db.statuses()
    _assert_exactly_once(statuses, evolution, expected_chats=20)
    jobs = {job.id: job for job in await db.jobs()}
    assert {jobs[i].status for i in reached} == {expected}
    # A job recorded as sending whose call never left the dead process is reported, not sent: unknown as well.
    assert all(jobs[i].status == "unknown" for i in sending if i not in reached)
    assert all("not sent again" in jobs[i].last_error for i in sending if jobs[i].status == "unknown")
    others = [status for chat_id, status in statuses.items() if evolution_number(chat_id) not in sending.values()]
    assert others == ["sent"] * (20 - len(sending))
    assert sent_numbers(evolution) == Counter({evolution_number(chat(i)): 1 for i in range(20)
                                               if evolution_number(chat(i)) not in set(sending.values()) - in_flight})


# -- 2. Evolution and Ollama failing for a while ------------------------------------------------------------------

async def test_evolution_500_then_recovery_delivers_each_reply_once_after_backoff(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama,
        servers: Servers) -> None:
    evolution.fail_next(500, times=10)  # every first attempt fails; the retries (5 s later) succeed
    server = await servers.serve(database_url, evolution, fake_ollama.url)
    started = time.monotonic()
    bodies = [upsert(f"pergunta {i}", chat=chat(i)) for i in range(10)]
    assert await post_all(server.webhook_url, bodies) == ["reply_queued"] * 10
    await eventually(lambda: _statuses_are(db, {"retry"}, 10), timeout=10, what="every reply waiting for a retry")
    assert all("500" in job.last_error for job in await db.jobs())

    await eventually(lambda: _statuses_are(db, {"sent"}, 10), timeout=20, what="every reply sent after recovery")
    assert time.monotonic() - started >= 4.5  # the retry waited for the backoff
    await db.wait_idle()
    assert sent_numbers(evolution) == Counter({evolution_number(chat(i)): 1 for i in range(10)})
    assert set(send_attempts(evolution).values()) == {2}
    assert {job.attempts for job in await db.jobs()} == {2}
    retries = [e for e in server.log_events() if e.get("event") == "reply.retry"]
    assert len(retries) == 10 and {e["retry_in_s"] for e in retries} == {5.0}


async def _all_sent(db: Database, count: int) -> bool:
    jobs = await db.jobs()
    return len(jobs) == count and {job.status for job in jobs} == {"sent"}


async def _statuses_are(db: Database, expected: set[str], count: int) -> bool:
    statuses = await db.statuses()
    return len(statuses) == count and set(statuses.values()) == expected


async def test_evolution_timeouts_then_recovery_deliver_each_reply_once(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama,
        servers: Servers) -> None:
    """Evolution answers too late (HybridFlow gives up after 1 s) but, as the real one does, still sends.

    Its ``send.message`` echo reaches HybridFlow before the retry is due, so the retry must not send again.
    """
    evolution.timeout_next(times=10, seconds=2.0)
    server = await servers.serve(database_url, evolution, fake_ollama.url, evolution_timeout="1s")
    bodies = [upsert(f"pergunta {i}", chat=chat(i)) for i in range(10)]
    assert await post_all(server.webhook_url, bodies) == ["reply_queued"] * 10
    await eventually(lambda: _statuses_are(db, {"retry"}, 10), timeout=10, what="every reply waiting for a retry")
    assert all("timeout" in job.last_error for job in await db.jobs())
    await eventually(lambda: len(evolution.echo_statuses) == 10, timeout=10, what="the late sends echoed back")

    await eventually(lambda: _all_final(db, 10), timeout=25, what="every reply settled after recovery")
    await db.wait_idle()
    assert set((await db.statuses()).values()) == {"sent"}
    doubled = {n: c for n, c in sent_numbers(evolution).items() if c > 1}
    assert not doubled, f"replies delivered twice: {doubled}"
    assert sent_numbers(evolution) == Counter({evolution_number(chat(i)): 1 for i in range(10)})


async def test_ollama_down_webhooks_ack_fast_and_replies_wait_then_go_out_once(
        database_url: str, db: Database, evolution: FakeEvolution, servers: Servers) -> None:
    port = free_port()
    ollama = FakeOllama()  # not started: nothing listens on its port yet
    server = await servers.serve(database_url, evolution, f"http://127.0.0.1:{port}")
    try:
        gate = asyncio.Semaphore(4)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            async def timed(body: dict) -> tuple[int, str, float]:
                async with gate:
                    started = time.perf_counter()
                    status, answer = await post(session, server.webhook_url, body)
                    return status, (answer or {}).get("action", ""), time.perf_counter() - started
            acks = await asyncio.gather(*(timed(upsert(f"pergunta {i}", chat=chat(i))) for i in range(10)))
        assert [(status, action) for status, action, _ in acks] == [(200, "reply_queued")] * 10
        assert max(seconds for *_, seconds in acks) < 1.0, acks

        # The replies that were claimed found Ollama down and wait for it (their attempt not counted); the rest
        # are not claimed while it is down: they wait queued. Nothing is being generated any more.
        async def waiting() -> bool:
            statuses = await db.statuses()
            return len(statuses) == 10 and set(statuses.values()) <= {"retry", "queued"} and "retry" in statuses.values()

        await eventually(waiting, timeout=10, what="replies waiting for Ollama")
        jobs = [job for job in await db.jobs() if job.status == "retry"]
        assert all("waiting for the model server: cannot connect" in job.last_error for job in jobs), \
            [job.last_error for job in jobs]
        assert evolution.sent_texts == []
        assert server.output().count('"llm.down"') == 1  # one line for the outage, not one per reply

        await ollama.start(port)  # Ollama is back, before the first retry (5 s) is due
        await eventually(lambda: _statuses_are(db, {"sent"}, 10), timeout=20, what="replies sent once Ollama is back")
        await db.wait_idle()
        assert sent_numbers(evolution) == Counter({evolution_number(chat(i)): 1 for i in range(10)})
        assert server.alive
    finally:
        await ollama.stop()


# -- 3. the database briefly unavailable --------------------------------------------------------------------------

class Customer:
    """Evolution's side of the webhook: posts new messages and retries those answered 5xx, as Evolution does."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.statuses: Counter[int] = Counter()
        self.accepted: set[str] = set()  # message ids answered 200
        self.pending: list[dict] = []  # bodies answered 5xx or not at all, to retry
        self.count = 0

    async def send(self, session: aiohttp.ClientSession, body: dict) -> int:
        try:
            status, answer = await post(session, self.url, body)
        except (aiohttp.ClientError, TimeoutError):
            status, answer = 0, None
        self.statuses[status] += 1
        if status == 200:
            assert answer and answer["action"] in {"reply_queued", "duplicate"}, answer
            self.accepted.add(body["data"]["key"]["id"])
        else:
            self.pending.append(body)
        return status

    async def stream(self, stop: asyncio.Event) -> None:
        """New customer messages every 50 ms until ``stop``."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not stop.is_set():
                await self.send(session, upsert(f"mensagem {self.count}", chat=chat(self.count)))
                self.count += 1
                await asyncio.sleep(0.05)  # the scenario: a steady stream of customers, one every 50 ms

    async def retry_pending(self, timeout: float) -> None:
        """Redeliver what was not accepted, as Evolution retries a 5xx, until all is answered 200."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while self.pending:
                assert time.monotonic() < deadline, f"{len(self.pending)} webhooks still refused"
                body = self.pending.pop(0)
                if await self.send(session, body) != 200:
                    await asyncio.sleep(0.2)  # the scenario: Evolution waits before it retries a refused webhook


async def test_database_outage_answers_503_loses_nothing_and_the_server_stays_up(
        own_pg_cluster: Cluster, evolution: FakeEvolution, fake_ollama: FakeOllama, servers: Servers) -> None:
    database_url = own_pg_cluster.url
    db = Database(database_url)
    server = await servers.serve(database_url, evolution, fake_ollama.url, reply_lease="3s")
    pid = server.pid
    customer = Customer(server.webhook_url)
    stop = asyncio.Event()
    stream = asyncio.create_task(customer.stream(stop))
    try:
        await eventually(lambda: len(customer.accepted) >= 10, timeout=10, what="messages accepted before the outage")

        await asyncio.to_thread(own_pg_cluster.stop)  # pg_ctl stop -m fast: connections are cut
        async with httpx.AsyncClient(timeout=5.0) as client:
            for k in range(10):  # about 2 s of outage
                health = await client.get(f"{server.url}/health")
                assert health.status_code == 503, health.text
                body = upsert(f"durante a queda {k}", chat=chat(10_000 + k))
                webhook = await client.post(server.webhook_url, content=json.dumps(body), headers=JSON_HEADERS)
                assert webhook.status_code == 503, webhook.text
                assert webhook.json()["error"] == "unavailable"
                customer.pending.append(body)
                await asyncio.sleep(0.2)  # the scenario: the outage lasts about 2 s
        assert server.alive
        await asyncio.to_thread(own_pg_cluster.start)

        await eventually(lambda: _health(server, 200), timeout=15, what="/health 200 after the restart")
        accepted_after = len(customer.accepted)
        await eventually(lambda: len(customer.accepted) >= accepted_after + 10, timeout=10,
                         what="messages accepted after the outage")
    finally:
        stop.set()
        await asyncio.wait_for(stream, 15)
    await customer.retry_pending(timeout=15)

    assert set(customer.statuses) <= {200, 503}, customer.statuses  # 503 (Evolution retries), never 500
    assert customer.statuses[503] >= 10
    stored = await db.customer_message_counts()
    assert customer.accepted <= set(stored), f"accepted but lost: {sorted(customer.accepted - set(stored))[:10]}"
    assert set(stored.values()) == {1}
    assert server.alive and server.pid == pid  # one process all along: it did not crash and restart
    # The replies of the accepted messages: none sent twice; each delivered, or cut mid-send by the outage.
    await eventually(lambda: _settled_or_sending(db), timeout=20, what="reply jobs settled after the outage")
    statuses = await db.statuses()
    assert len(statuses) == len(stored)
    assert set(statuses.values()) <= {"sent", "sending", "unknown"}, Counter(statuses.values())
    numbers = sent_numbers(evolution)
    assert max(numbers.values()) == 1, {n: c for n, c in numbers.items() if c > 1}
    assert all(numbers[evolution_number(c)] == 1 for c, s in statuses.items() if s == "sent")


async def _health(server: ServeProcess, status: int) -> bool:
    async with httpx.AsyncClient(timeout=2.0) as client:
        try:
            return (await client.get(f"{server.url}/health")).status_code == status
        except httpx.HTTPError:
            return False


async def _settled_or_sending(db: Database) -> bool:
    """Every job finished, or cut mid-send (``sending`` until its 30 s send lease runs out, then ``unknown``)."""
    return set((await db.statuses()).values()) <= FINAL | {"sending"}


# -- 4. two servers on one PostgreSQL database --------------------------------------------------------------------

@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
async def test_two_servers_one_database_1000_webhooks_with_duplicates(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama,
        servers: Servers) -> None:
    first_env = servers.env(database_url, evolution, fake_ollama.url)
    second_env = {**first_env, "HYBRIDFLOW_PORT": str(free_port())}
    await servers.add_tenant(first_env)
    first, second = await asyncio.gather(servers.start(first_env), servers.start(second_env))
    evolution.echo_webhook_url = first.webhook_url
    rng = random.Random(20251125)
    answers: dict[str, list[tuple[int, str | None]]] = {}
    gate = asyncio.Semaphore(32)

    async def deliver(session: aiohttp.ClientSession, server: ServeProcess, body: dict) -> None:
        async with gate:
            status, answer = await post(session, server.webhook_url, body)
        answers[body["data"]["key"]["id"]].append((status, (answer or {}).get("action")))

    async def message(session: aiohttp.ClientSession, i: int) -> None:
        body = upsert(f"pergunta {i}", chat=chat(i), message_id=f"MSG{i:05d}")
        answers[body["data"]["key"]["id"]] = []
        here, there = (first, second) if rng.random() < 0.5 else (second, first)
        roll = rng.random()
        if roll < 0.05:  # the same message to both servers at the same moment
            await asyncio.gather(deliver(session, here, body), deliver(session, there, body))
        else:
            await deliver(session, here, body)
            if roll < 0.10:  # Evolution's retry reached the other server
                await deliver(session, there, body)

    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30), connector=connector) as session:
        await asyncio.gather(*(message(session, i) for i in range(1000)))

    assert all(status == 200 for replies in answers.values() for status, _ in replies)
    for message_id, replies in answers.items():
        actions = sorted(action for _, action in replies)
        assert actions in (["reply_queued"], ["duplicate", "reply_queued"]), (message_id, replies)
    assert 60 <= sum(len(replies) == 2 for replies in answers.values()) <= 140
    stored = await db.customer_message_counts()
    assert set(stored) == set(answers) and set(stored.values()) == {1}

    await eventually(lambda: len(evolution.sent_texts) >= 1000, timeout=45, what="1000 replies sent")
    await db.wait_idle()
    numbers = sent_numbers(evolution)
    assert len(numbers) == 1000 and set(numbers.values()) == {1}
    jobs = await db.jobs()
    assert len(jobs) == 1000 and {job.status for job in jobs} == {"sent"}
    assert len({job.claimed_by for job in jobs}) == 2  # both servers' workers shared the queue
    assert first.alive and second.alive


# -- 5. hostile input ---------------------------------------------------------------------------------------------

class Hostile:
    """A running `serve` for the hostile-input tests of one backend, and an HTTP client for it."""

    def __init__(self, server: ServeProcess, backend: str) -> None:
        self.server = server
        self.backend = backend
        self.client = httpx.Client(base_url=server.url, timeout=30.0)

    def post(self, content: bytes, headers: dict[str, str] | None = None, *, fresh: bool = False) -> int:
        """POST to the webhook; asserts the answer is not a 5xx (the database is up: nothing to retry).

        ``fresh`` uses a connection of its own: after some malformed requests the server closes the connection.
        """
        headers = JSON_HEADERS if headers is None else headers
        if fresh:
            response = httpx.post(self.server.webhook_url, content=content, headers=headers, timeout=30.0)
        else:
            response = self.client.post("/webhooks/evolution", content=content, headers=headers)
        assert response.status_code < 500, (response.status_code, response.text[:300], content[:200])
        return response.status_code

    def post_json(self, body: Any) -> int:
        return self.post(json.dumps(body).encode())

    def assert_up(self) -> None:
        assert self.server.alive, self.server.log_tail()
        assert self.client.get("/health").status_code == 200


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def hostile(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    """One `serve` per backend for the whole module; its peers are closed ports (replies just wait)."""
    directory = tmp_path_factory.mktemp("hostile")
    drop: Callable[[], None] | None = None
    if request.param == "sqlite":
        database_url = f"sqlite:///{directory / 'hybridflow.db'}"
    else:
        server_url = request.getfixturevalue("pg_server")  # skips without PostgreSQL, fails so under CI=true
        database_url, name = asyncio.run(fresh_database(server_url))
        drop = lambda: asyncio.run(drop_database(server_url, name))  # noqa: E731
    env = serve_env(database_url, evolution_url=closed_port_url(), ollama_host=closed_port_url())
    cli(env, "tenants", "add", INSTANCE, "--prompt", PROMPT, "--api-key", API_KEY)
    server = ServeProcess(env, directory / "serve.log")
    server.start()
    try:
        server.wait_healthy_sync()
        target = Hostile(server, request.param)
        yield target
        target.client.close()
    finally:
        server.kill()
        if drop is not None:
            drop()


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=20), children, max_size=5),
    max_leaves=30,
)
EVENT_NAMES = st.sampled_from(["messages.upsert", "send.message", "MESSAGES_UPSERT", "messages-upsert",
                               "connection.update", "messages.update", "messages.edited", ""])
HYPOTHESIS = hypothesis_settings(max_examples=150, deadline=None,
                                 suppress_health_check=[HealthCheck.function_scoped_fixture])


def _valid_body() -> dict:
    return upsert("Oi, tudo bem?", chat=chat(1), quoted={"key": {"id": "X"}}, contextInfo={"mentionedJid": []})


def _paths(value: Any, prefix: tuple = ()) -> Iterator[tuple]:
    """Every path to a node of a JSON document (the root excluded)."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else []
    for key, child in items:
        yield (*prefix, key)
        yield from _paths(child, (*prefix, key))


def _replaced(body: Any, path: tuple, new: Any) -> Any:
    body = json.loads(json.dumps(body))
    node = body
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = new
    return body


VALID_PATHS = list(_paths(_valid_body()))
WRONG_TYPES = [None, True, 0, -1, 2**63, 1.5, "", "x", "\u0000", "\ud800", [], [[]], {}, {"a": {"b": None}}]


@HYPOTHESIS
@given(body=JSON_VALUES)
def test_any_json_value_is_answered_2xx_or_4xx(hostile: Hostile, body: Any) -> None:
    hostile.post_json(body)


@HYPOTHESIS
@given(event=EVENT_NAMES, data=JSON_VALUES, message_id=st.text(max_size=40), text=st.text(max_size=200))
def test_generated_envelopes_are_answered_2xx_or_4xx(hostile: Hostile, event: str, data: Any, message_id: str,
                                                     text: str) -> None:
    hostile.post_json({"event": event, "instance": INSTANCE, "data": data})
    body = _valid_body()
    body["event"] = event
    body["data"]["key"]["id"] = message_id
    body["data"]["message"] = {"conversation": text}
    hostile.post_json(body)


@HYPOTHESIS
@given(path=st.sampled_from(VALID_PATHS), value=JSON_VALUES)
def test_a_generated_value_anywhere_in_a_valid_message_is_answered_2xx_or_4xx(
        hostile: Hostile, path: tuple, value: Any) -> None:
    hostile.post_json(_replaced(_valid_body(), path, value))


def test_every_wrong_type_at_every_level_of_a_valid_message(hostile: Hostile) -> None:
    statuses = Counter(hostile.post_json(_replaced(_valid_body(), path, value))
                       for path in VALID_PATHS for value in WRONG_TYPES)
    assert statuses[200] > 0  # most fields are optional: the message is still stored
    hostile.assert_up()


def test_truncated_json_is_400(hostile: Hostile) -> None:
    text = json.dumps(_valid_body()).encode()
    for end in range(0, len(text) - 1, 7):
        assert hostile.post(text[:end]) == 400
    hostile.assert_up()


def _long(field: str, size: int) -> dict:
    """A valid message with one field ``size`` characters long (random digits: PostgreSQL cannot compress them)."""
    junk = "".join(random.Random(size).choices("0123456789", k=size))
    body = _valid_body()
    if field == "message id":
        body["data"]["key"]["id"] = junk
    elif field == "chat":
        body["data"]["key"]["remoteJid"] = f"{junk}@s.whatsapp.net"
    elif field == "instance":
        body["instance"] = junk
    elif field == "push name":
        body["data"]["pushName"] = junk
    elif field == "message type":
        body["data"]["message"] = {junk: {}}
        body["data"]["messageType"] = junk
    return body


def _with(path: tuple, value: Any, *, escape: bool = True) -> bytes:
    """A valid message with ``value`` at ``path``, as bytes (``escape``: non-ASCII as \\u escapes)."""
    return json.dumps(_replaced(_valid_body(), path, value), ensure_ascii=escape).encode()


ENVELOPE = b'{"event": "messages.upsert", "instance": "test-instance", "data": '
MALFORMED: dict[str, tuple[bytes, dict[str, str]]] = {
    "empty body": (b"", JSON_HEADERS),
    "whitespace": (b"  \n ", JSON_HEADERS),
    "invalid UTF-8": (b'{"event": "messages.upsert", "instance": "\xff\xfe"}', JSON_HEADERS),
    "UTF-16": (json.dumps(_valid_body()).encode("utf-16"), JSON_HEADERS),
    "NaN and Infinity": (ENVELOPE + b'{"key": NaN, "messageTimestamp": Infinity}}', JSON_HEADERS),
    "deep nesting 100k": (b"[" * 100_000 + b"]" * 100_000, JSON_HEADERS),
    "deep nesting 100k in data": (ENVELOPE + b'{"a": ' * 100_000 + b"1" + b"}" * 100_001, JSON_HEADERS),
    "deep nesting 900 in the message": (_with(("data", "message"), json.loads(
        '{"ephemeralMessage": {"message": ' * 450 + "{}" + "}}" * 450)), JSON_HEADERS),
    "integer of 5000 digits": (ENVELOPE + b"1" * 5000 + b"}", JSON_HEADERS),
    "form body": (b"event=messages.upsert&instance=test-instance",
                  {"Content-Type": "application/x-www-form-urlencoded"}),
    "text/plain JSON": (json.dumps(_valid_body()).encode(), {"Content-Type": "text/plain"}),
    "no content type": (json.dumps(_valid_body()).encode(), {}),
    "not gzip": (b"definitely not gzip", {**JSON_HEADERS, "Content-Encoding": "gzip"}),
    "gzip bomb": (gzip.compress(ENVELOPE + b'"' + b"x" * 50_000_000 + b'"}'),
                  {**JSON_HEADERS, "Content-Encoding": "gzip"}),
    "duplicate keys": (ENVELOPE.replace(b'"instance"', b'"event": 1, "instance"') + b"null}", JSON_HEADERS),
    "NUL in the message id": (_with(("data", "key", "id"), "A\u0000B"), JSON_HEADERS),
    "NUL in the text": (_with(("data", "message", "conversation"), "A\u0000B"), JSON_HEADERS),
    "lone surrogate in the message id": (_with(("data", "key", "id"), "A\ud800"), JSON_HEADERS),
    "lone surrogate in the chat": (_with(("data", "key", "remoteJid"), "\ud800@s.whatsapp.net"), JSON_HEADERS),
    "lone surrogate in the push name": (_with(("data", "pushName"), "\udfff"), JSON_HEADERS),
    "lone surrogate in the instance": (_with(("instance",), "test-\ud800"), JSON_HEADERS),
    "lone surrogate in the apikey": (_with(("apikey",), "\ud800"), JSON_HEADERS),
    "NUL in the instance": (_with(("instance",), "test-\u0000"), JSON_HEADERS),
    "10 MB body": (ENVELOPE + b'"' + b"x" * 10_000_000 + b'"}', JSON_HEADERS),
    "7 MB text in a valid message": (_with(("data", "message", "conversation"), "ã" * 3_500_000, escape=False),
                                     JSON_HEADERS),
    **{f"100 kB {field}": (json.dumps(_long(field, 100_000)).encode(), JSON_HEADERS)
       for field in ("message id", "chat", "instance", "push name", "message type")},
}

# What the server answers each malformed body (README's status table): 400 when the body is unreadable, not JSON,
# or has no usable event/instance (an implausible instance name counts as none), 401 when its apikey is not the
# tenant's, 413 when it is too large, and 200 when it is a readable body of a known tenant (a message it cannot
# use is answered 200 ``ignored_event``, so Evolution does not retry it).
EXPECTED_STATUS = {
    "empty body": 400, "whitespace": 400, "invalid UTF-8": 400, "UTF-16": 400, "deep nesting 100k": 400,
    "deep nesting 100k in data": 400, "form body": 400, "not gzip": 400, "duplicate keys": 400,
    "integer of 5000 digits": 400, "NUL in the instance": 400, "lone surrogate in the instance": 400,
    "100 kB instance": 400,
    "lone surrogate in the apikey": 401,
    "10 MB body": 413, "gzip bomb": 413,
    "NaN and Infinity": 200, "deep nesting 900 in the message": 200, "text/plain JSON": 200,
    "no content type": 200, "NUL in the message id": 200, "NUL in the text": 200,
    "lone surrogate in the message id": 200, "lone surrogate in the chat": 200,
    "lone surrogate in the push name": 200, "7 MB text in a valid message": 200, "100 kB message id": 200,
    "100 kB chat": 200, "100 kB push name": 200, "100 kB message type": 200,
}


def test_every_malformed_body_has_its_expected_status() -> None:
    assert set(EXPECTED_STATUS) == set(MALFORMED)


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_body_is_answered_with_its_status(hostile: Hostile, name: str) -> None:
    content, headers = MALFORMED[name]
    status = hostile.post(content, headers, fresh=True)
    assert status == EXPECTED_STATUS[name], (name, status)
    hostile.assert_up()


def test_the_server_is_still_up_after_the_hostile_pass(hostile: Hostile) -> None:
    hostile.assert_up()


# -- found while writing the tests above ---------------------------------------------------------------------------

async def test_the_same_reply_twice_in_a_chat_is_recognised_as_our_own_echo(
        database_url: str, db: Database, evolution: FakeEvolution, fake_ollama: FakeOllama,
        servers: Servers) -> None:
    """A model often gives the same short answer twice in one chat; the echo of each is still ours.

    The two replies overlap (slow model, slow Evolution): the first one's send finishes, and its row is written,
    after the second one was recorded and before the second one's echo arrives.
    """
    fake_ollama.reply = "Claro! Posso ajudar em algo mais?"
    server = await servers.serve(database_url, evolution, fake_ollama.url)
    fake_ollama.delay = evolution.delay = 1.0
    assert await post_all(server.webhook_url, [upsert("pergunta 0", chat=chat(0))]) == ["reply_queued"]
    await eventually(lambda: len(fake_ollama.requests) == 1, timeout=10, what="first reply generating")
    await asyncio.sleep(0.3)  # the scenario: the second question arrives 0.3 s into the first 1 s generation
    assert await post_all(server.webhook_url, [upsert("pergunta 1", chat=chat(0))]) == ["reply_queued"]
    await eventually(lambda: _all_sent(db, 2), timeout=15, what="both replies sent")
    echoes = [e["action"] for e in server.log_events()
              if e.get("event") == "webhook.received" and e.get("webhook_event") == "send.message"]
    assert echoes == ["own_message", "own_message"]  # not "paused": HybridFlow did not silence itself
    assert await post_all(server.webhook_url, [upsert("pergunta 2", chat=chat(0))]) == ["reply_queued"]
