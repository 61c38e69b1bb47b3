"""Opt-in extras of `serve`: Prometheus metrics behind the admin token, and capturing raw bodies for replay."""

from __future__ import annotations

import json
from dataclasses import replace

from hybridflow.service import Service
from hybridflow.web import create_app
from tests.support.builders import owner, raw, upsert

ADMIN = {"Authorization": "Bearer admin-token"}


async def _client(service: Service, aiohttp_client, **settings):  # type: ignore[no-untyped-def]
    service.settings = replace(service.settings, **settings)
    return await aiohttp_client(create_app(service, background=False))


async def test_metrics_are_off_by_default(service: Service, tenant, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await _client(service, aiohttp_client)
    assert (await client.get("/metrics", headers=ADMIN)).status == 404


async def test_metrics_count_webhooks_by_action_and_queue_depth(service: Service, tenant, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await _client(service, aiohttp_client, metrics=True)
    for body in (upsert("Oi"), owner("Eu respondo", chat="5511911112222@s.whatsapp.net")):
        await client.post("/webhooks/evolution", data=raw(body))
    assert (await client.get("/metrics")).status == 401
    response = await client.get("/metrics", headers=ADMIN)
    text = await response.text()
    assert response.status == 200 and response.content_type == "text/plain"
    assert 'hybridflow_webhooks_total{action="reply_queued",reason=""} 1' in text
    assert 'hybridflow_webhooks_total{action="paused",reason="human_message"} 1' in text
    assert 'hybridflow_reply_queue_depth{status="queued"} 1' in text
    assert "hybridflow_reply_latency_seconds_count 0" in text


async def test_capture_writes_what_serve_saw_with_secrets_redacted(service: Service, tenant, aiohttp_client,
                                                                    tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "captured.jsonl"
    client = await _client(service, aiohttp_client, capture_path=str(path))
    body = upsert("Oi")
    body["apikey"] = "instance-token-123"
    await client.post("/webhooks/evolution", data=raw(body))
    await client.post("/webhooks/evolution", data=raw({"event": "connection.update", "instance": "test-instance"}))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["messages.upsert", "connection.update"]
    assert lines[0]["apikey"] == "[redacted]" and "instance-token-123" not in path.read_text()
    assert lines[0]["data"] == body["data"]


async def test_capture_to_a_directory_replays(service: Service, tenant, aiohttp_client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    client = await _client(service, aiohttp_client, capture_path=str(tmp_path / "bodies"))
    await client.post("/webhooks/evolution", data=raw(upsert("Oi")))
    [captured] = list((tmp_path / "bodies").glob("*.json"))
    body = json.loads(captured.read_text())
    assert (await service.ingest(body, captured.read_text())).action == "duplicate"
