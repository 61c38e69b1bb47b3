"""What the operator sees when a setup mistake meets real traffic: every rejected webhook leaves one log line (not
thousands), a mistyped instance gets "did you mean" in the log only, secrets `serve` cannot read say how to fix it,
and commands refuse what cannot work with one line."""

from __future__ import annotations

import dataclasses
import sys

import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from hybridflow.config import Settings
from hybridflow.crypto import generate_key
from hybridflow.service import Service, TenantChanges
from hybridflow.web import create_app
from tests.support.builders import raw, upsert
from tests.support.cli import invoke, one_line_error


@pytest.fixture
async def client(service: Service, tenant, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(service, background=False))


async def post(client: TestClient, data: bytes | str) -> int:
    response = await client.post("/webhooks/evolution", data=data, headers={"Content-Type": "application/json"})
    await response.read()
    return response.status


def rejected(logs: list[dict]) -> list[dict]:
    return [line for line in logs if line["event"] == "webhook.rejected"]


async def test_each_kind_of_rejected_webhook_is_logged_once_a_minute(client: TestClient):
    with capture_logs() as logs:
        assert [await post(client, b"{not json") for _ in range(3)] == [400, 400, 400]
        assert await post(client, raw({"event": "messages.upsert"})) == 400  # no instance: another cause
        assert await post(client, raw(upsert(instance="nobody-here"))) == 404
        assert await post(client, b"[" + b" " * (9 * 1024 * 1024) + b"]") == 413
    lines = rejected(logs)
    assert [(line["status"], line["log_level"]) for line in lines] == [
        (400, "warning"), (400, "warning"), (404, "warning"), (413, "warning")]
    assert "not valid JSON" in lines[0]["reason"] and "instance" in lines[1]["reason"]
    assert lines[2]["instance"] == "nobody-here" and "did_you_mean" not in lines[2]


async def test_a_mistyped_instance_gets_did_you_mean_in_the_log_but_not_in_the_answer(client: TestClient):
    with capture_logs() as logs:
        response = await client.post("/webhooks/evolution", data=raw(upsert(instance="Test-Instance")),
                                     headers={"Content-Type": "application/json"})
        body = await response.text()
    assert response.status == 404
    assert "test-instance" not in body  # an unauthenticated caller learns no tenant name
    [line] = rejected(logs)
    assert line["did_you_mean"] == "test-instance" and line["instance"] == "Test-Instance"


async def test_secrets_serve_cannot_read_answer_503_and_say_to_restart_with_the_same_key(
        settings: Settings, clock, aiohttp_client):  # type: ignore[no-untyped-def]
    async with Service.open(settings, clock=clock) as service:
        await service.add_tenant("test-instance", TenantChanges(prompt="Seja breve.", webhook_secret="s3cret-shop"))
    without_key = dataclasses.replace(settings, secret_key=None)
    async with Service.open(without_key, clock=clock) as service:
        assert (await service.startup_report())["unreadable_secrets"] == ["test-instance"]
        client = await aiohttp_client(create_app(service, background=False))
        with capture_logs() as logs:
            statuses = [await post(client, raw(upsert("Oi"))) for _ in range(3)]
    assert statuses == [503, 503, 503]
    [line] = [line for line in logs if line["event"] == "webhook.secret_unreadable"]  # once, not three times
    assert line["log_level"] == "error" and "same HYBRIDFLOW_SECRET_KEY" in line["fix"]
    assert "keys generate" not in line["fix"]


def test_a_short_jwt_key_is_refused_with_how_to_make_a_good_one(hf):  # type: ignore[no-untyped-def]
    result = hf("tenants", "add", "padaria", "--prompt", "Seja breve.", "--jwt-key", "short-key",
                secret_key=generate_key())
    assert result.exit_code == 2
    assert "32 bytes" in one_line_error(result) and "openssl rand -hex 32" in result.stderr
    assert hf("tenants", "list", "--json").exit_code == 0 and "padaria" not in hf("tenants", "list").stdout


def test_a_postgresql_url_without_the_driver_says_which_extra_to_install(isolated, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if `pip install hybridflow` without [postgres]
    result = invoke("--database-url", "postgresql://hf@127.0.0.1:1/hf", "tenants", "list")
    assert result.exit_code == 2
    assert "pip install 'hybridflow[postgres]'" in one_line_error(result)
