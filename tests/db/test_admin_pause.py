"""The admin API's pause and resume say exactly what they did: a body they cannot read is a 400 (not a pause
until further notice), a zero duration is refused, and resuming a chat that was not paused says so."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient

from hybridflow.service import Service
from hybridflow.web import create_app
from tests.support.builders import CUSTOMER, upsert
from tests.support.cli import one_line_error

AUTH = {"Authorization": "Bearer admin-token"}
PAUSE = f"/sessions/test-instance/{CUSTOMER}/pause"


@pytest.fixture
async def client(service: Service, tenant, aiohttp_client) -> TestClient:  # type: ignore[no-untyped-def]
    await service.ingest(upsert("Olá"), "{}")  # the chat exists
    return await aiohttp_client(create_app(service, background=False))


@pytest.mark.parametrize(("body", "content_type"), [
    ("for=30m", "application/x-www-form-urlencoded"),  # what `curl -d 'for=30m'` sends
    ("notjson", "application/json"),
    ('{"duration": "30m"}', "application/json"),
    ('["30m"]', "application/json"),
    ('{"for": "abc"}', "application/json"),
    ('{"for": "0"}', "application/json"),
])
async def test_a_pause_body_that_cannot_be_read_is_refused_and_pauses_nothing(client: TestClient, service: Service,
                                                                             body: str, content_type: str):
    response = await client.post(PAUSE, data=body, headers={**AUTH, "Content-Type": content_type})
    answer = await response.json()
    assert response.status == 400, answer
    assert answer["error"] == "bad_request" and answer["message"]
    assert (await service.session("test-instance", CUSTOMER)).is_paused is False


@pytest.mark.parametrize(("query", "body"), [("?for=30m", None), ("", '{"for": "30m"}'), ("", '{"for": null}')])
async def test_a_pause_given_as_documented_is_applied(client: TestClient, query: str, body: str | None):
    response = await client.post(PAUSE + query, data=body, headers={**AUTH, "Content-Type": "application/json"})
    answer = await response.json()
    assert response.status == 200 and answer["is_paused"] is True
    assert (answer["resumes_at"] is None) == (body == '{"for": null}')


async def test_resuming_a_chat_that_was_not_paused_says_so(client: TestClient):
    response = await client.post(f"/sessions/test-instance/{CUSTOMER}/resume", headers=AUTH)
    answer = await response.json()
    assert response.status == 200 and answer["is_paused"] is False
    assert answer["note"] == "the chat was not paused: nothing changed"


def test_the_cli_refuses_a_zero_pause_and_says_when_a_resume_changed_nothing(hf, tmp_path):  # type: ignore[no-untyped-def]
    assert hf("tenants", "add", "test-instance", "--prompt", "Seja breve.").exit_code == 0
    zero = hf("sessions", "pause", "test-instance", CUSTOMER, "--for", "0")
    assert zero.exit_code == 2 and "longer than 0 s" in one_line_error(zero)
    assert hf("sessions", "pause", "test-instance", CUSTOMER, "--for", "30m").exit_code == 0
    assert "note" not in hf("sessions", "resume", "test-instance", CUSTOMER).stderr
    again = hf("sessions", "resume", "test-instance", CUSTOMER)
    assert again.exit_code == 0 and "note: the chat was not paused: nothing changed" in again.stderr


@pytest.mark.parametrize("value", ["1e999", "NaN", '"99999999999d"', "-5", "true"])
async def test_an_impossible_duration_is_a_400_not_a_crash(client: TestClient, service: Service, value: str):
    response = await client.post(PAUSE, data='{"for": %s}' % value, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status == 400, await response.text()
    assert (await service.session("test-instance", CUSTOMER)).is_paused is False
