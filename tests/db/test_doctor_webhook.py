"""`doctor` reads each instance's webhook from Evolution (`GET /webhook/find/{instance}`), in v2's and v1's names,
and says what to do about every setting that would lose or refuse webhooks. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import pytest

from hybridflow.errors import SendError
from hybridflow.service import Service, TenantChanges
from hybridflow.service.doctor import Check, diagnose
from tests.db.test_cli_ops import EVOLUTION_KEY, PeersInThread, add_tenant
from tests.support.cli import as_json
from tests.support.fakes import FakeEvolution

SECRET = "whs-3c9b1f0e5a7d4c2b8e6f"
JWT_KEY = "jwt-7a1c9e3b5d0f2e4a6c8b0d2f4e6a8c0e2b4d"
INSTANCE = "test-instance"


def v2_row(url: str = "https://hf.example.com/webhooks/evolution", **changes: Any) -> dict[str, Any]:
    """The webhook row Evolution 2.3 answers on `GET /webhook/find`, set the README's way."""
    row = {"id": "cmhx1", "url": url, "headers": {"Authorization": f"Bearer {SECRET}"}, "enabled": True,
           "events": ["MESSAGES_UPSERT", "SEND_MESSAGE"], "webhookByEvents": False, "webhookBase64": False,
           "createdAt": "2025-11-20T12:00:00.000Z", "updatedAt": "2025-11-20T12:00:00.000Z",
           "instanceId": "6f1e0c9a-1b2c-4d3e-8f9a-0b1c2d3e4f50"}
    return {**row, **changes}


def v1_answer(**changes: Any) -> dict[str, Any]:
    """What Evolution 1.8 answers on `GET /webhook/find`."""
    return {"enabled": True, "url": "https://hf.example.com/webhooks/evolution", "webhook_by_events": False,
            "webhook_base64": False, "events": ["MESSAGES_UPSERT", "SEND_MESSAGE"], **changes}


async def webhook_check(service: Service, instance: str = INSTANCE) -> Check:
    [check] = [c for c in await diagnose(service) if c.name == f"webhook {instance}"]
    assert SECRET not in check.detail and JWT_KEY not in check.detail and EVOLUTION_KEY not in check.detail
    return check


def assert_says_to_set_it_again(check: Check, instance: str = INSTANCE) -> dict[str, Any]:
    """A failed check that ends with README's curl for this instance (placeholders, no secret); returns its body."""
    assert check.ok is False
    match = re.search(r'set it (?:again )?with curl -X POST "([^"]+)" -H "apikey: \$EVOLUTION_API_KEY" '
                      r"-H \"Content-Type: application/json\" -d '([^']+)'$", check.detail)
    assert match, check.detail
    assert match[1].endswith(f"/webhook/set/{instance}")
    return json.loads(match[2])


@pytest.fixture
async def with_secret(service: Service, tenant):  # type: ignore[no-untyped-def]
    return await service.update_tenant(INSTANCE, TenantChanges(webhook_secret=SECRET))


# --- v2 ---------------------------------------------------------------------------------------------------------


async def test_a_webhook_set_as_the_readme_says_passes(service, with_secret, fake_evolution: FakeEvolution):
    fake_evolution.webhook = v2_row()
    check = await webhook_check(service)
    assert (check.ok, check.warning) == (True, False)
    assert "https://hf.example.com/webhooks/evolution gets MESSAGES_UPSERT, SEND_MESSAGE" in check.detail
    assert "secret matches" in check.detail
    asked = [r for r in fake_evolution.requests if r.path == f"/webhook/find/{INSTANCE}"]
    assert asked and asked[-1].method == "GET" and asked[-1].headers["apikey"] == EVOLUTION_KEY


async def test_the_secret_may_come_as_x_hybridflow_token_and_by_events_works(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(headers={"x-hybridflow-token": SECRET}, webhookByEvents=True)
    check = await webhook_check(service)
    assert check.ok and "by event" in check.detail


async def test_a_url_that_is_not_hybridflows_path_fails(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(url="https://user:pw@hf.example.com/n8n/webhook?token=abc")
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert ("its URL https://hf.example.com/n8n/webhook does not point at HybridFlow's /webhooks/evolution"
            in check.detail)
    assert "pw" not in check.detail and "token=abc" not in check.detail
    assert body["webhook"]["url"] == "https://hf.example.com/webhooks/evolution"
    assert body["webhook"]["headers"] == {"Authorization": "Bearer <secret>"}
    assert body["webhook"]["events"] == ["MESSAGES_UPSERT", "SEND_MESSAGE"]


async def test_a_url_other_than_public_url_fails(service, with_secret, fake_evolution):
    service.settings = replace(service.settings, public_url="https://bot.padaria.example")
    fake_evolution.webhook = v2_row(url="https://old-host.example/webhooks/evolution")
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert "is not https://bot.padaria.example/webhooks/evolution (from public_url)" in check.detail
    assert body["webhook"]["url"] == "https://bot.padaria.example/webhooks/evolution"

    fake_evolution.webhook = v2_row(url="https://bot.padaria.example/webhooks/evolution")
    assert (await webhook_check(service)).ok


async def test_send_message_off_fails(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(events=["MESSAGES_UPSERT", "CONNECTION_UPDATE"])
    check = await webhook_check(service)
    assert_says_to_set_it_again(check)
    assert check.detail.startswith("SEND_MESSAGE is off: set it again with curl")


async def test_a_disabled_webhook_fails(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(enabled=False, events=[])  # Evolution empties the events of a disabled one
    check = await webhook_check(service)
    assert_says_to_set_it_again(check)
    assert "it is disabled" in check.detail


async def test_base64_on_fails(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(webhookBase64=True)
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert "base64 is on" in check.detail and body["webhook"]["base64"] is False


@pytest.mark.parametrize("headers", [{"Authorization": "Bearer not-the-secret"}, {}, None,
                                     {"Authorization": f"Bearer {SECRET}", "jwt_key": "other"}],
                         ids=["wrong secret", "no headers", "headers null", "jwt_key replaces Authorization"])
async def test_headers_without_the_tenants_secret_fail(service, with_secret, fake_evolution, headers):
    fake_evolution.webhook = v2_row(headers=headers)
    check = await webhook_check(service)
    assert_says_to_set_it_again(check)
    assert "neither Authorization: Bearer <secret> nor X-Hybridflow-Token" in check.detail


async def test_several_problems_are_listed_before_the_one_fix(service, with_secret, fake_evolution):
    fake_evolution.webhook = v2_row(url="https://hf.example.com/", events=["MESSAGES_UPSERT"], webhookBase64=True,
                                    headers={"Authorization": "Bearer nope"})
    check = await webhook_check(service)
    assert_says_to_set_it_again(check)
    problems = check.detail.split(": set it again with")[0]
    for fragment in ("does not point at", "SEND_MESSAGE is off", "base64 is on", "neither Authorization"):
        assert fragment in problems


@pytest.mark.parametrize("answer", ["null", "404"])
async def test_no_webhook_set_says_so_and_how_to_set_it(service, with_secret, fake_evolution, answer):
    if answer == "null":
        fake_evolution.webhook = None  # Evolution 2.x answers 200 null
    else:
        fake_evolution.webhook_status = 404
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert check.detail.startswith("no webhook is set: set it with curl")
    assert body["webhook"]["url"] == "https://<your-host>/webhooks/evolution"


async def test_an_unknown_instance_is_not_mistaken_for_no_webhook(service, tenant, fake_evolution):
    fake_evolution.instances = {"other"}
    with pytest.raises(SendError, match="does not exist"):
        await service.evolution.find_webhook(base_url=fake_evolution.url, instance=INSTANCE, api_key=EVOLUTION_KEY)
    checks = {c.name: c for c in await diagnose(service)}
    assert "webhook test-instance" not in checks  # the tenant's line already says it; nothing to repeat
    assert "does not exist" in checks[f"tenant {INSTANCE}"].detail


async def test_the_webhook_is_read_while_the_phone_is_disconnected(service, with_secret, fake_evolution):
    fake_evolution.states[INSTANCE] = "close"
    fake_evolution.webhook = v2_row()
    checks = {c.name: c for c in await diagnose(service)}
    assert checks[f"tenant {INSTANCE}"].ok is False and checks[f"webhook {INSTANCE}"].ok is True


async def test_evolution_failing_on_find_is_reported_with_what_to_do(service, tenant, fake_evolution):
    fake_evolution.webhook_status = 500
    check = await webhook_check(service)
    assert check.ok is False
    assert "HTTP 500" in check.detail
    assert check.detail.endswith(f"check GET /webhook/find/{INSTANCE} on Evolution by hand")


async def test_a_jwt_tenant_needs_its_jwt_key_among_the_headers(service, tenant, fake_evolution):
    await service.update_tenant(INSTANCE, TenantChanges(jwt_key=JWT_KEY))
    fake_evolution.webhook = v2_row(headers={"jwt_key": JWT_KEY})
    assert (await webhook_check(service)).ok

    fake_evolution.webhook = v2_row(headers={"jwt_key": "another-key"})
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert "its jwt_key is not the tenant's JWT key" in check.detail
    assert body["webhook"]["headers"] == {"jwt_key": "<jwt-key>"}

    fake_evolution.webhook = v2_row(headers={"Authorization": f"Bearer {SECRET}"})
    assert "carry no jwt_key" in (await webhook_check(service)).detail


async def test_no_webhook_auth_is_a_warning_not_a_failure(service, tenant, fake_evolution):
    fake_evolution.webhook = v2_row(headers={})
    check = await webhook_check(service)
    assert (check.ok, check.warning) == (True, True)
    assert "warning: webhooks are unauthenticated" in check.detail and "--webhook-secret" in check.detail


# --- v1 ---------------------------------------------------------------------------------------------------------


async def test_a_v1_webhook_is_read_in_v1_names(service, tenant, fake_evolution):
    await service.update_tenant(INSTANCE, TenantChanges(api_version="v1"))
    fake_evolution.webhook = v1_answer()
    check = await webhook_check(service)
    assert (check.ok, check.warning) == (True, True)
    assert "Evolution v1 cannot send a secret" in check.detail

    fake_evolution.webhook = v1_answer(webhook_base64=True, events=["MESSAGES_UPSERT"])
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert "SEND_MESSAGE is off" in check.detail and "base64 is on" in check.detail
    assert body == {"enabled": True, "url": "https://hf.example.com/webhooks/evolution", "webhook_by_events": False,
                    "webhook_base64": False, "events": ["MESSAGES_UPSERT", "SEND_MESSAGE"]}


async def test_v1_answers_no_webhook_with_empty_defaults(service, tenant, fake_evolution):
    await service.update_tenant(INSTANCE, TenantChanges(api_version="v1"))
    fake_evolution.webhook = {"enabled": False, "url": "", "events": [], "webhook_by_events": False,
                              "webhook_base64": False}
    check = await webhook_check(service)
    assert check.detail.startswith("no webhook is set: set it with curl")
    assert '"webhook_by_events":false' in check.detail


async def test_a_tenant_with_a_secret_on_a_v1_evolution_is_told_to_drop_it(service, with_secret, fake_evolution):
    fake_evolution.webhook = v1_answer()
    check = await webhook_check(service)
    assert check.ok is False
    assert "v1 sends no custom headers" in check.detail
    assert check.detail.endswith(f"hybridflow tenants update {INSTANCE} --webhook-secret '' --api-version v1")

    await service.update_tenant(INSTANCE, TenantChanges(webhook_secret="", api_version="v1"))  # the fix, as said
    assert (await webhook_check(service)).ok


async def test_a_v2_tenant_answered_in_v1_names_is_told_its_api_version(service, tenant, fake_evolution):
    fake_evolution.webhook = v1_answer()
    check = await webhook_check(service)
    assert check.ok is False
    assert check.detail.endswith(f"hybridflow tenants update {INSTANCE} --api-version v1")


# --- through the CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def peers():  # type: ignore[no-untyped-def]
    with PeersInThread() as running:
        yield running


@pytest.mark.usefixtures("isolated")
def test_doctor_prints_the_webhook_line_and_never_the_secret(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--api-key", EVOLUTION_KEY,
               "--webhook-secret", SECRET)
    peers.evolution.webhook = v2_row()
    good = hf("doctor", ollama_host=peers.ollama.url)
    assert good.exit_code == 0, good.output
    assert "✓ webhook padaria: https://hf.example.com/webhooks/evolution gets" in good.stdout

    peers.evolution.webhook = v2_row(headers={"Authorization": "Bearer wrong"}, webhookBase64=True)
    bad = hf("doctor", ollama_host=peers.ollama.url)
    assert bad.exit_code == 1
    line = next(line for line in bad.stdout.splitlines() if line.startswith("✗ webhook padaria: "))
    assert "base64 is on" in line and "/webhook/set/padaria" in line
    assert SECRET not in bad.output and EVOLUTION_KEY not in bad.output

    report = json.loads(hf("doctor", "--json", ollama_host=peers.ollama.url).stdout)
    [webhook] = [c for c in report["checks"] if c["name"] == "webhook padaria"]
    assert (webhook["ok"], webhook["warning"]) == (False, False)


@pytest.mark.usefixtures("isolated")
def test_doctor_passes_with_a_warning_for_a_tenant_without_webhook_auth(hf, peers):
    add_tenant(hf, "padaria", "--evolution-url", peers.evolution.url, "--api-key", EVOLUTION_KEY)
    peers.evolution.webhook = v2_row(headers={})
    result = hf("doctor", ollama_host=peers.ollama.url)
    assert result.exit_code == 0, result.output
    assert "✓ webhook padaria: " in result.stdout and "unauthenticated" in result.stdout
    report = as_json(hf("doctor", "--json", ollama_host=peers.ollama.url))
    # Without authentication, commands from the phone are off too (a forged webhook could give them).
    assert [c["name"] for c in report["checks"] if c["warning"]] == ["webhook padaria", "phone commands padaria"]


async def test_a_tenant_with_a_pause_label_needs_the_label_events(service, with_secret, fake_evolution):
    await service.update_tenant(INSTANCE, TenantChanges(pause_label="Bot off"))
    fake_evolution.webhook = v2_row()
    check = await webhook_check(service)
    body = assert_says_to_set_it_again(check)
    assert "LABELS_EDIT and LABELS_ASSOCIATION are off" in check.detail
    assert body["webhook"]["events"] == ["MESSAGES_UPSERT", "SEND_MESSAGE", "LABELS_EDIT", "LABELS_ASSOCIATION"]
    fake_evolution.webhook = v2_row(events=body["webhook"]["events"])
    assert (await webhook_check(service)).ok
