"""`tenants add/update/remove` do what the user meant or say why not: contradictions refused, gaps warned about,
nothing-to-change said, a tenant added again after `--keep-history` starts from the options given."""

from __future__ import annotations

import json
from pathlib import Path

import sqlalchemy as sa

from hybridflow.models import TENANTS
from hybridflow.service import TenantChanges
from tests.support.builders import CUSTOMER, owner, upsert
from tests.support.cli import as_json, ok, one_line_error

INSTANCE = "test-instance"  # the instance of the webhook builders
PROMPT = "Você atende a Padaria Boa. Responda curto."
JWT = "k" * 40


def add(hf, *args: str):  # type: ignore[no-untyped-def]
    return hf("tenants", "add", INSTANCE, "--prompt", PROMPT, *args)


def replay(hf, tmp_path: Path, *bodies: dict):  # type: ignore[no-untyped-def]
    path = tmp_path / "bodies.jsonl"
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return ok(hf("replay", str(path)))


def test_update_without_an_option_says_there_is_nothing_to_change(hf):  # type: ignore[no-untyped-def]
    ok(add(hf, "--api-key", "k", "--webhook-secret", "s"))
    result = hf("tenants", "update", INSTANCE)
    assert result.exit_code == 2 and "nothing to change" in one_line_error(result)
    assert "updated" not in result.stdout


def test_a_secret_and_a_jwt_key_together_are_refused_not_one_silently_chosen(hf):  # type: ignore[no-untyped-def]
    both = add(hf, "--webhook-secret", "s3cret", "--jwt-key", JWT)
    assert both.exit_code == 2 and "not both" in one_line_error(both)
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}  # nothing half-applied
    ok(add(hf, "--webhook-secret", "s3cret"))
    refused = hf("tenants", "update", INSTANCE, "--jwt-key", JWT)  # the stored secret would still be there
    assert refused.exit_code == 2 and "--webhook-secret ''" in one_line_error(refused)
    switched = ok(hf("tenants", "update", INSTANCE, "--webhook-secret", "", "--jwt-key", JWT, "--json"))
    assert as_json(switched)["webhook_auth"] == "jwt"


def test_webhook_authentication_with_evolution_1_is_refused_because_v1_sends_no_headers(hf):  # type: ignore[no-untyped-def]
    for option, value in (("--jwt-key", JWT), ("--webhook-secret", "s3cret")):
        result = add(hf, "--api-version", "v1", option, value)
        assert result.exit_code == 2 and "sends no custom headers" in one_line_error(result)
    ok(add(hf, "--api-version", "v1"))
    later = hf("tenants", "update", INSTANCE, "--webhook-secret", "s3cret")
    assert later.exit_code == 2 and "v1" in one_line_error(later)


def test_a_tenant_saved_with_gaps_says_what_will_not_work(hf):  # type: ignore[no-untyped-def]
    result = ok(add(hf))
    assert f"tenant {INSTANCE} saved" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, result.stderr
    assert "replies cannot be sent" in warnings[0] and "--api-key" in warnings[0]
    assert "any request that names this instance is accepted" in warnings[1]
    complete = ok(hf("tenants", "update", INSTANCE, "--api-key", "k", "--webhook-secret", "s3cret"))
    assert "warning" not in complete.stderr


def test_adding_a_removed_tenant_again_restores_its_history_but_not_its_old_settings(hf, tmp_path):  # type: ignore[no-untyped-def]
    ok(add(hf, "--model", "old-model:7b", "--allow-groups", "--debounce", "1h", "--resume-after", "5m"))
    replay(hf, tmp_path, upsert("Olá"), owner("Oi, aqui é o João"), upsert("Tem pão?", chat="5511911112222"))
    ok(hf("tenants", "remove", INSTANCE, "--yes", "--keep-history"))

    kept = as_json(hf("sessions", "show", INSTANCE, "5511911112222", "--json"))  # still readable after removal
    assert [r["status"] for r in kept["replies"]] == ["cancelled"]  # what the README says they become
    assert [m["text"] for m in kept["messages"]] == ["Tem pão?"]

    again = ok(hf("tenants", "add", INSTANCE, "--prompt", "Novo prompt."))
    assert "its kept history is back: 2 chats, 3 messages" in again.stdout
    tenant = as_json(hf("tenants", "show", INSTANCE, "--json"))
    assert (tenant["prompt"], tenant["allow_groups"], tenant["debounce"], tenant["resume_after"]) == (
        "Novo prompt.", False, 3.0, 7200.0)  # the option given, then the defaults (3 s debounce, 2 h resume)
    assert tenant["model"] != "old-model:7b"
    paused = as_json(hf("sessions", "show", INSTANCE, CUSTOMER, "--json"))
    assert paused["is_paused"] is True  # the owner's takeover came back with the chat


def test_a_removed_tenant_cannot_come_back_without_a_prompt(hf, tmp_path):  # type: ignore[no-untyped-def]
    ok(add(hf))
    replay(hf, tmp_path, upsert("Olá"))
    ok(hf("tenants", "remove", INSTANCE, "--yes", "--keep-history"))
    result = hf("tenants", "add", INSTANCE, "--model", "qwen2.5:7b")
    assert result.exit_code == 2 and "old settings are not restored" in one_line_error(result)


async def test_an_older_tenant_with_both_secrets_can_still_change_other_settings(service):  # type: ignore[no-untyped-def]
    await service.add_tenant(INSTANCE, TenantChanges(prompt=PROMPT, webhook_secret="s3cret"))
    async with service.store.write() as conn:  # as a release before the rule stored it
        await conn.execute(sa.update(TENANTS).values(jwt_key_enc=service.secrets.encrypt("j" * 40)))
    assert (await service.update_tenant(INSTANCE, TenantChanges(model="qwen2.5:7b"))).model == "qwen2.5:7b"
