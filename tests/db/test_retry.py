"""Retrying a failed reply (issue 14), on both databases: the same job is due again and sent once, through the
service, the CLI (`sessions retry`) and the admin API (`POST /sessions/{instance}/{chat_id}/retry`); a chat with
no failed reply, a paused chat and a chat whose next reply is already waiting are refused with what to do."""

from __future__ import annotations

import json
import subprocess

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from hybridflow.errors import Conflict, NotFound
from hybridflow.models import JOBS
from hybridflow.service import Service
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY
from tests.support.builders import CUSTOMER, run_due, upsert
from tests.support.fakes import FakeEvolution
from tests.support.serve import HYBRIDFLOW, clean_env

AUTH = {"Authorization": "Bearer admin-token"}


async def job_rows(service: Service) -> list:
    async with service.store.read() as conn:
        return (await conn.execute(sa.select(JOBS).order_by(JOBS.c.id))).all()


@pytest.fixture
async def failed_reply(service: Service, tenant, fake_evolution: FakeEvolution) -> int:  # type: ignore[no-untyped-def]
    """A customer's reply that Evolution refused for good (400): the job is failed, its text written."""
    fake_evolution.api_key = EVOLUTION_API_KEY
    await service.ingest(upsert("Tem pão de queijo?"), "{}")
    fake_evolution.fail_next(400)
    assert await run_due(service) == ["failed"]
    (job,) = await job_rows(service)
    assert job.status == "failed" and job.reply_text
    return job.id


async def test_a_retried_reply_is_the_same_job_and_is_sent_once_with_its_text(
        service: Service, failed_reply: int, fake_evolution: FakeEvolution):
    written = (await job_rows(service))[0].reply_text
    retried = await service.retry("test-instance", "11 98765-4321")
    assert (retried.reply_id, retried.chat_id, retried.kind) == (failed_reply, CUSTOMER, "reply")
    (job,) = await job_rows(service)
    assert (job.status, job.attempts) == ("retry", 0)
    assert await run_due(service) == ["sent"]
    assert [t["text"] for t in fake_evolution.sent_texts] == [written]
    assert len(await job_rows(service)) == 1
    with pytest.raises(NotFound, match="no failed reply"):
        await service.retry("test-instance", CUSTOMER)
    with pytest.raises(Conflict, match="is sent, not failed"):
        await service.retry("test-instance", CUSTOMER, reply=failed_reply)


async def test_a_paused_chat_or_a_waiting_reply_refuses_the_retry(service: Service, failed_reply: int):
    await service.pause("test-instance", CUSTOMER, duration=600)
    with pytest.raises(Conflict, match="the chat is paused: resume it first"):
        await service.retry("test-instance", CUSTOMER)
    await service.resume("test-instance", CUSTOMER)
    await service.ingest(upsert("Alô?"), "{}")  # a new reply waits and answers the latest messages
    with pytest.raises(Conflict, match="already waiting"):
        await service.retry("test-instance", CUSTOMER)
    assert [j.status for j in await job_rows(service)] == ["failed", "queued"]


def hybridflow(service: Service, *args: str) -> subprocess.CompletedProcess[str]:
    """`hybridflow ARGS` as another process on the same database."""
    env = clean_env(database_url=service.settings.database_url, secret_key=service.settings.secret_key or "")
    return subprocess.run([*HYBRIDFLOW, *args], env=env, capture_output=True, text=True, timeout=60)


async def test_the_cli_retries_and_says_why_not(service: Service, failed_reply: int):
    done = hybridflow(service, "sessions", "retry", "test-instance", CUSTOMER, "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"instance": "test-instance", "chat_id": CUSTOMER, "reply_id": failed_reply,
                                       "kind": "reply", "status": "retry"}
    again = hybridflow(service, "sessions", "retry", "test-instance", CUSTOMER, "--reply", str(failed_reply))
    assert again.returncode == 1 and "is retry, not failed" in again.stderr and not again.stdout
    missing = hybridflow(service, "sessions", "retry", "test-instance", CUSTOMER, "--reply", "999")
    assert missing.returncode == 1 and "has no reply #999 to retry" in missing.stderr


async def test_the_admin_api_retries(service: Service, failed_reply: int, aiohttp_client):  # type: ignore[no-untyped-def]
    client: TestClient = await aiohttp_client(create_app(service, background=False))
    url = f"/sessions/test-instance/{CUSTOMER}/retry"
    assert (await client.post(url)).status == 401
    bad = await client.post(url + "?reply=abc", headers=AUTH)
    assert bad.status == 400 and "invalid 'reply'" in (await bad.json())["message"]
    done = await client.post(url + f"?reply={failed_reply}", headers=AUTH)
    assert done.status == 200 and (await done.json())["reply_id"] == failed_reply
    twice = await client.post(url, headers=AUTH)
    assert twice.status == 404 and (await twice.json())["error"] == "not_found"
    unknown = await client.post(f"/sessions/test-instance/5511911112222/retry", headers=AUTH)
    assert unknown.status == 404
