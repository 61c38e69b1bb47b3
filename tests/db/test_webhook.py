"""The webhook over HTTP: status codes for Evolution's retry rules, both URL modes, authentication."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest
from aiohttp.test_utils import TestClient

from hybridflow.service import Service, TenantChanges
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY
from tests.support.builders import fixture, raw, upsert


@pytest.fixture
async def client(service: Service, tenant, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    return await aiohttp_client(create_app(service, background=False))


async def post(client: TestClient, body: object, path: str = "/webhooks/evolution", **kwargs):  # type: ignore[no-untyped-def]
    data = body if isinstance(body, (bytes, str)) else raw(body)
    return await client.post(path, data=data, headers={"Content-Type": "application/json", **kwargs.pop("headers", {})})


async def test_accepted_message_answers_200_with_the_action(client: TestClient) -> None:
    response = await post(client, upsert("Oi"))
    assert response.status == 200
    body = await response.json()
    assert body["action"] == "reply_queued" and body["chat_id"] == "5511987654321@s.whatsapp.net"


@pytest.mark.parametrize("suffix", ["messages-upsert", "send-message", "connection-update"])
async def test_webhook_by_events_suffixes_use_the_same_code(client: TestClient, suffix: str) -> None:
    response = await post(client, upsert("Oi"), f"/webhooks/evolution/{suffix}")
    assert response.status == 200
    assert (await response.json())["action"] == "reply_queued"


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "JSON"),
    (b"\xff\xfe\x00garbage", "JSON"),
    (b"[1, 2]", "object"),
    (b'{"instance": "test-instance", "data": {}}', "event"),
    (b'{"event": "messages.upsert", "data": {}}', "instance"),
    (b"[" * 100_000 + b"]" * 100_000, "JSON"),
])
async def test_malformed_bodies_are_400(client: TestClient, body: bytes, reason: str) -> None:
    response = await post(client, body)
    assert response.status == 400
    assert reason in (await response.json())["message"]


async def test_unknown_instance_is_404(client: TestClient) -> None:
    response = await post(client, upsert(instance="someone-else"))
    assert response.status == 404
    assert "someone-else" in (await response.json())["message"]


async def test_oversized_body_is_413(client: TestClient, service: Service) -> None:
    big = upsert("x" * (service.settings.max_body_size + 10))
    response = await post(client, big)
    assert response.status == 413


async def test_odd_message_types_are_acknowledged(client: TestClient) -> None:
    body, text = fixture("v2-messages-upsert-reaction.json")
    body.update(instance="test-instance", apikey=EVOLUTION_API_KEY)
    response = await post(client, body)
    assert response.status == 200 and (await response.json())["action"] == "stored"
    weird = upsert("x")
    weird["data"]["message"] = {"futureMessageTypeV9": {"payload": [1, {"a": None}]}}
    weird["data"]["messageType"] = "futureMessageTypeV9"
    response = await post(client, weird)
    assert response.status == 200 and (await response.json())["action"] == "stored"


async def test_database_outage_is_503_so_evolution_retries(client: TestClient, service: Service) -> None:
    await service.store.dispose()
    service.store.write_engine.url  # noqa: B018 - engine stays usable after dispose; break it for real below
    original = service.store.write_engine
    from sqlalchemy.ext.asyncio import create_async_engine

    dead = create_async_engine("postgresql+asyncpg://nobody@127.0.0.1:9/none")
    service.store.write_engine = service.store.read_engine = dead
    try:
        response = await post(client, upsert("Oi"))
        assert response.status == 503
        health = await client.get("/health")
        assert health.status == 503
    finally:
        service.store.write_engine = service.store.read_engine = original
        await dead.dispose()


# -- authentication ----------------------------------------------------------------------------------------------

async def test_shared_secret_in_bearer_or_token_header(client: TestClient, service: Service) -> None:
    await service.update_tenant("test-instance", TenantChanges(webhook_secret="s3cret"))
    service.tenants._cache.clear()
    assert (await post(client, upsert("a"))).status == 401
    assert (await post(client, upsert("b"), headers={"Authorization": "Bearer wrong"})).status == 401
    assert (await post(client, upsert("c"), headers={"Authorization": "Bearer s3cret"})).status == 200
    assert (await post(client, upsert("d"), headers={"X-Hybridflow-Token": "s3cret"})).status == 200


async def test_a_tenant_changed_by_another_process_applies_within_5_seconds(
        client: TestClient, service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    """As the README says: a running serve picks up tenant changes within 5 seconds. Webhooks keep coming meanwhile
    (the tenant is read again in the background while it is still cached), and each is answered."""
    assert (await post(client, upsert("before"))).status == 200
    async with Service.open(settings) as cli:  # `hybridflow tenants update --webhook-secret` in another process
        await cli.update_tenant("test-instance", TenantChanges(webhook_secret="s3cret"))
    changed = time.monotonic()
    while (await post(client, upsert("meanwhile"))).status == 200:
        assert time.monotonic() - changed < 5.5, "the new webhook secret was not applied within 5 s"
        await asyncio.sleep(0.1)
    assert (await post(client, upsert("after"), headers={"Authorization": "Bearer s3cret"})).status == 200


async def test_evolution_jwt_mode(client: TestClient, service: Service) -> None:
    await service.update_tenant("test-instance", TenantChanges(jwt_key="jwt-signing-key-of-32-bytes-or-more!"))
    service.tenants._cache.clear()
    now = int(time.time())
    good = jwt.encode({"iat": now, "exp": now + 600, "app": "evolution", "action": "webhook"}, "jwt-signing-key-of-32-bytes-or-more!")
    expired = jwt.encode({"iat": now - 1200, "exp": now - 600}, "jwt-signing-key-of-32-bytes-or-more!")
    forged = jwt.encode({"iat": now, "exp": now + 600}, "another-key-that-is-also-32-bytes-long")
    assert (await post(client, upsert("a"), headers={"Authorization": f"Bearer {good}"})).status == 200
    for token in (expired, forged, "not-a-jwt"):
        assert (await post(client, upsert("b"), headers={"Authorization": f"Bearer {token}"})).status == 401


async def test_body_apikey_must_match_the_tenant_key(client: TestClient) -> None:
    wrong = upsert("a")
    wrong["apikey"] = "someone-elses-token"
    right = upsert("b")
    right["apikey"] = EVOLUTION_API_KEY
    assert (await post(client, wrong)).status == 401
    assert (await post(client, right)).status == 200


async def test_failed_authentication_is_logged_without_the_secret(client: TestClient, service: Service) -> None:
    from structlog.testing import capture_logs

    await service.update_tenant("test-instance", TenantChanges(webhook_secret="s3cret-value"))
    service.tenants._cache.clear()
    with capture_logs() as logs:
        response = await post(client, upsert("a"), headers={"Authorization": "Bearer guess-s3cret-value-x"})
    assert response.status == 401
    assert any(entry["event"] == "webhook.unauthorized" for entry in logs)
    assert "s3cret-value" not in repr(logs)


# -- operator API ------------------------------------------------------------------------------------------------

ADMIN = {"Authorization": "Bearer admin-token"}


async def test_session_endpoints_need_the_admin_token(client: TestClient) -> None:
    await post(client, upsert("Oi"))
    assert (await client.get("/sessions/test-instance/5511987654321")).status == 401
    wrong = {"Authorization": "Bearer nope"}
    assert (await client.post("/sessions/test-instance/5511987654321/pause", headers=wrong)).status == 401


async def test_session_endpoints_are_disabled_without_an_admin_token(service: Service, tenant, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    service.settings = replace(service.settings, admin_token=None)
    client = await aiohttp_client(create_app(service, background=False))
    response = await client.get("/sessions/test-instance/5511987654321", headers=ADMIN)
    assert response.status == 403
    assert "HYBRIDFLOW_ADMIN_TOKEN" in (await response.json())["message"]


async def test_pause_and_resume_over_http(client: TestClient) -> None:
    await post(client, upsert("Oi"))
    response = await client.post("/sessions/test-instance/5511987654321/pause", json={"for": "30m"}, headers=ADMIN)
    assert response.status == 200
    paused = await response.json()
    assert paused["is_paused"] and paused["pause_reason"] == "operator" and paused["resumes_at"]
    assert (await (await post(client, upsert("Ainda?"))).json())["action"] == "ignored_paused"
    shown = await (await client.get("/sessions/test-instance/5511987654321@s.whatsapp.net", headers=ADMIN)).json()
    assert shown["is_paused"] is True
    resumed = await (await client.post("/sessions/test-instance/5511987654321/resume", headers=ADMIN)).json()
    assert resumed["is_paused"] is False
    assert (await (await post(client, upsert("E agora?"))).json())["action"] == "reply_queued"


async def test_unknown_session_and_bad_duration(client: TestClient) -> None:
    assert (await client.get("/sessions/test-instance/5599999999999", headers=ADMIN)).status == 404
    assert (await client.get("/sessions/nobody/5599999999999", headers=ADMIN)).status == 404
    bad = await client.post("/sessions/test-instance/5511987654321/pause", json={"for": "soon"}, headers=ADMIN)
    assert bad.status == 400
