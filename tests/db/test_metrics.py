"""GET /metrics as Prometheus reads it: parsed with prometheus_client's own parser after real webhooks and replies."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hybridflow.config import Settings
from hybridflow.jobs import OPEN_JOB_STATES
from hybridflow.metrics import Metrics
from hybridflow.service import Service
from hybridflow.web import create_app
from tests.conftest import EVOLUTION_API_KEY
from tests.support.builders import eventually, owner, posted, raw, upsert
from tests.support.fakes import FakeEvolution

ADMIN = {"Authorization": "Bearer admin-token"}
OTHER_CHAT = "5511911112222@s.whatsapp.net"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """Each family's type by name, and every sample's value by (sample name, sorted labels)."""
    families = list(text_string_to_metric_families(text))
    types = {family.name: family.type for family in families}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}
    return types, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def scrape(client: TestClient) -> tuple[dict[str, str], Samples]:
    response = await client.get("/metrics", headers=ADMIN)
    assert response.status == 200, await response.text()
    return parse(await response.text())



@pytest.fixture
def metered_settings(settings: Settings) -> Settings:
    return replace(settings, metrics=True)


@pytest.fixture
async def metered(metered_settings: Settings, tenant) -> AsyncIterator[Service]:  # type: ignore[no-untyped-def]
    """A service with metrics on, over the database where ``tenant`` exists, on the real clock."""
    async with Service.open(metered_settings) as svc:
        yield svc


async def test_webhooks_by_action_and_queue_depth_by_status(metered: Service, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(metered, background=False))
    assert await posted(client, upsert("Oi")) == "reply_queued"
    assert await posted(client, owner("Eu respondo", chat=OTHER_CHAT)) == "paused"

    response = await client.get("/metrics", headers=ADMIN)
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    types, samples = parse(await response.text())

    assert types["hybridflow_webhooks"] == "counter" and types["hybridflow_replies"] == "counter"
    assert types["hybridflow_reply_queue_depth"] == "gauge"
    assert types["hybridflow_reply_latency_seconds"] == "histogram"
    assert value(samples, "hybridflow_webhooks_total", action="reply_queued", reason="") == 1
    assert value(samples, "hybridflow_webhooks_total", action="paused", reason="human_message") == 1
    depth = {status: value(samples, "hybridflow_reply_queue_depth", status=status) for status in OPEN_JOB_STATES}
    assert depth == {status: (1 if status == "queued" else 0) for status in OPEN_JOB_STATES}
    assert value(samples, "hybridflow_reply_latency_seconds_count") == 0
    assert not any(name == "hybridflow_replies_total" for name, _ in samples)


async def test_a_sent_reply_is_counted_with_its_latency(metered: Service, fake_evolution: FakeEvolution,
                                                       aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    fake_evolution.api_key = EVOLUTION_API_KEY
    fake_evolution.instances = {"test-instance"}
    client = await aiohttp_client(create_app(metered))
    fake_evolution.echo_webhook_url = str(client.make_url("/webhooks/evolution"))
    assert await posted(client, upsert("Vocês abrem domingo?")) == "reply_queued"
    await eventually(lambda: len(fake_evolution.sent_texts) == 1, what="the reply reached Evolution")

    async def counted() -> bool:
        _, samples = await scrape(client)
        return value(samples, "hybridflow_replies_total", status="sent") == 1

    await eventually(counted, what="replies_total{status=sent} is 1")
    _, samples = await scrape(client)
    assert value(samples, "hybridflow_reply_latency_seconds_count") == 1
    assert value(samples, "hybridflow_reply_latency_seconds_bucket", le="+Inf") == 1
    assert 0 <= value(samples, "hybridflow_reply_latency_seconds_sum") < 60  # type: ignore[operator]
    assert value(samples, "hybridflow_reply_queue_depth", status="queued") == 0


async def test_two_services_count_apart(metered_settings: Settings, tenant, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    async with Service.open(metered_settings) as first, Service.open(metered_settings) as second:
        assert first.metrics.registry is not second.metrics.registry
        one = await aiohttp_client(create_app(first, background=False))
        two = await aiohttp_client(create_app(second, background=False))
        await posted(one, upsert("Oi"))
        _, samples_one = await scrape(one)
        _, samples_two = await scrape(two)
    assert value(samples_one, "hybridflow_webhooks_total", action="reply_queued", reason="") == 1
    assert not any(name == "hybridflow_webhooks_total" for name, _ in samples_two)
    # The depth is the database's, which both share.
    assert value(samples_two, "hybridflow_reply_queue_depth", status="queued") == 1
    assert b"hybridflow_" not in generate_latest(REGISTRY)  # nothing went to prometheus_client's global registry


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prometheus_client reads process metrics in /proc")
async def test_process_metrics_come_with_the_service(metered: Service, aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(metered, background=False))
    types, samples = await scrape(client)
    names = {name for name, _ in samples}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds"} <= names
    assert value(samples, "process_open_fds")  # type: ignore[operator]
    assert value(samples, "process_resident_memory_bytes") > 0  # type: ignore[operator]
    assert "python_info" in types and "python_gc_objects_collected" in types


async def test_label_values_with_quotes_backslashes_and_newlines_are_escaped(metered: Service,
                                                                             aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    odd = 'say "hi"\\ then\nleave'
    metered.metrics.webhook(odd, odd)
    metered.metrics.reply('we"ird\\', latency=0.7)
    client = await aiohttp_client(create_app(metered, background=False))
    _, samples = await scrape(client)
    assert value(samples, "hybridflow_webhooks_total", action=odd, reason=odd) == 1
    assert value(samples, "hybridflow_replies_total", status='we"ird\\') == 1
    assert value(samples, "hybridflow_reply_latency_seconds_bucket", le="0.5") == 0
    assert value(samples, "hybridflow_reply_latency_seconds_bucket", le="1.0") == 1


async def test_admin_token_guards_metrics_and_the_setting_turns_them_on(settings: Settings, metered: Service,
                                                                       aiohttp_client) -> None:  # type: ignore[no-untyped-def]
    client = await aiohttp_client(create_app(metered, background=False))
    assert (await client.get("/metrics")).status == 401
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong"})).status == 401
    metered.settings = replace(metered.settings, admin_token=None)
    assert (await client.get("/metrics", headers=ADMIN)).status == 403
    async with Service.open(settings) as off:
        unmetered = await aiohttp_client(create_app(off, background=False))
        assert (await unmetered.get("/metrics", headers=ADMIN)).status == 404


def test_a_status_gone_from_the_queue_reads_zero() -> None:
    metrics = Metrics()
    metrics.render({"queued": 2, "legacy": 3})
    _, samples = parse(metrics.render({"queued": 1}))
    assert value(samples, "hybridflow_reply_queue_depth", status="queued") == 1
    assert value(samples, "hybridflow_reply_queue_depth", status="legacy") == 0
