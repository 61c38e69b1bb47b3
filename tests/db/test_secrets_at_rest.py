"""Secrets at rest: a tenant's API key is never readable in the database, the CLI or the logs (both backends)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from structlog.testing import capture_logs
from sqlmodel import SQLModel
from typer.testing import Result

from hybridflow.crypto import SecretBox, generate_key
from hybridflow.errors import AuthenticationFailed
from hybridflow.service import Credentials, Service, TenantChanges
from hybridflow.service.tenants import TENANTS
from tests.support.builders import FIXTURES
from tests.support.cli import invoke

PLAIN_KEY = "493ED0BEB1A8-47F2-A6EE-731DBFDB99D2"  # the apikey of fixtures/v2-messages-upsert-text-*.json
WEBHOOK_SECRET = "whsec-correct-horse-battery"
JWT_KEY = "jwt-signing-key-staple-42-of-32-bytes"
SECRETS = (PLAIN_KEY, WEBHOOK_SECRET, JWT_KEY)


pytestmark = pytest.mark.usefixtures("isolated")  # conftest: no HYBRIDFLOW_* from the shell, empty cwd


def cli(database_url: str, *args: str, secret_key: str | None, **env: str) -> Result:
    return invoke(*args, env={"HYBRIDFLOW_DATABASE_URL": database_url, "HYBRIDFLOW_SECRET_KEY": secret_key, **env})


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


async def raw_tenant_rows(service: Service) -> list[dict[str, object]]:
    async with service.store.read() as conn:
        return [dict(row._mapping) for row in (await conn.execute(sa.select(TENANTS))).all()]


async def add_tenant_with_secrets(service: Service, instance: str = "caldasIA"):  # type: ignore[no-untyped-def]
    return await service.add_tenant(instance, TenantChanges(
        prompt="You answer for Caldas.", api_key=PLAIN_KEY, webhook_secret=WEBHOOK_SECRET))


# --- through the service ------------------------------------------------------------------------------------------


async def test_database_holds_only_ciphertext(service):
    await add_tenant_with_secrets(service)
    (row,) = await raw_tenant_rows(service)
    assert_no_secret(repr(row))
    box = SecretBox(service.settings.secret_key)
    assert box.decrypt(row["api_key_enc"]) == PLAIN_KEY
    assert box.decrypt(row["webhook_secret_enc"]) == WEBHOOK_SECRET
    # A tenant has a webhook secret or a JWT key, not both: switch to the JWT key and look again.
    await service.update_tenant("caldasIA", TenantChanges(webhook_secret="", jwt_key=JWT_KEY))
    (row,) = await raw_tenant_rows(service)
    assert_no_secret(repr(row))
    assert row["webhook_secret_enc"] is None and box.decrypt(row["jwt_key_enc"]) == JWT_KEY


async def test_service_decrypts_for_its_own_use_but_public_view_hides_secrets(service):
    await add_tenant_with_secrets(service)
    tenant = await service.tenant("caldasIA")
    assert (tenant.api_key, tenant.webhook_secret, tenant.jwt_key) == (PLAIN_KEY, WEBHOOK_SECRET, None)
    assert_no_secret(json.dumps(tenant.public()) + repr(tenant))
    assert tenant.public()["api_key"] == "set"


async def test_updating_the_key_stores_new_ciphertext_only(service):
    await add_tenant_with_secrets(service)
    await service.update_tenant("caldasIA", TenantChanges(api_key="rotated-key-0001"))
    (row,) = await raw_tenant_rows(service)
    assert "rotated-key-0001" not in repr(row)
    assert (await service.tenant("caldasIA")).api_key == "rotated-key-0001"


def webhook(**changes: object) -> tuple[dict, str]:
    """A real Evolution webhook body whose apikey is PLAIN_KEY, and its raw text."""
    body = json.loads((FIXTURES / "v2-messages-upsert-text-conversation-android.json").read_text(encoding="utf-8"))
    body.update(changes)
    return body, json.dumps(body)


async def every_row_of_every_table(service: Service) -> str:
    async with service.store.read() as conn:
        rows = [(await conn.execute(sa.select(table))).all() for table in SQLModel.metadata.sorted_tables]
    return repr(rows)


async def test_no_log_line_holds_a_secret(service):
    with capture_logs() as entries:
        await service.add_tenant("caldasIA", TenantChanges(prompt="p", api_key=PLAIN_KEY, webhook_secret=WEBHOOK_SECRET))
        await service.update_tenant("caldasIA", TenantChanges(api_key=PLAIN_KEY))
        await service.list_tenants()
        await service.ingest(*webhook(), Credentials(bearer=WEBHOOK_SECRET))
        with pytest.raises(AuthenticationFailed):
            await service.ingest(*webhook(apikey="someone-elses-key"), Credentials(token=WEBHOOK_SECRET))
    assert {"tenant.saved", "tenant.updated", "webhook.received", "webhook.unauthorized"} <= {
        entry["event"] for entry in entries}
    assert_no_secret(repr(entries))


async def test_no_table_holds_the_plain_key_after_a_webhook(service):
    await service.add_tenant("caldasIA", TenantChanges(prompt="p", api_key=PLAIN_KEY))
    result = await service.ingest(*webhook())
    assert result.action == "reply_queued"
    assert PLAIN_KEY not in await every_row_of_every_table(service)


# --- through the CLI ----------------------------------------------------------------------------------------------


def test_cli_output_never_shows_the_plain_key(database_url):
    key = generate_key()
    added = cli(database_url, "tenants", "add", "caldasIA", "--prompt", "p", "--api-key", PLAIN_KEY,
                "--webhook-secret", WEBHOOK_SECRET, secret_key=key)
    assert added.exit_code == 0, added.stderr
    outputs = [added]
    for args in (["tenants", "list"], ["tenants", "list", "--json"], ["tenants", "show", "caldasIA"],
                 ["tenants", "show", "caldasIA", "--json"],
                 ["tenants", "update", "caldasIA", "--api-key", PLAIN_KEY, "--json"]):
        result = cli(database_url, *args, secret_key=key, HYBRIDFLOW_LOG_LEVEL="debug")
        assert result.exit_code == 0, (args, result.stderr)
        outputs.append(result)
    for result in outputs:
        assert_no_secret(result.stdout + result.stderr)
    shown = json.loads(cli(database_url, "tenants", "show", "caldasIA", "--json", secret_key=key).stdout)
    assert shown["api_key"] == "set" and shown["webhook_auth"] == "secret"


def test_cli_add_with_api_key_but_no_secret_key_refuses_and_says_how(database_url):
    result = cli(database_url, "tenants", "add", "caldasIA", "--prompt", "p", "--api-key", PLAIN_KEY,
                 secret_key=None)
    assert result.exit_code == 2
    assert "hybridflow keys generate" in result.stderr
    assert "Traceback" not in result.stderr
    assert_no_secret(result.stdout + result.stderr)
    listed = cli(database_url, "tenants", "list", "--json", secret_key=None)
    assert json.loads(listed.stdout) == {"tenants": []}, "nothing may be stored when the key cannot be encrypted"


def test_cli_tenant_without_secrets_needs_no_secret_key(database_url):
    result = cli(database_url, "tenants", "add", "loja", "--prompt", "p", secret_key=None)
    assert result.exit_code == 0, result.stderr


def test_cli_still_lists_tenants_after_the_secret_key_changed(database_url):
    assert cli(database_url, "tenants", "add", "caldasIA", "--prompt", "p", "--api-key", PLAIN_KEY,
               secret_key=generate_key()).exit_code == 0
    for key in (generate_key(), None):
        result = cli(database_url, "tenants", "list", "--json", secret_key=key)
        assert result.exit_code == 0, result.stderr
        assert [t["instance"] for t in json.loads(result.stdout)["tenants"]] == ["caldasIA"]
        assert_no_secret(result.stdout + result.stderr)


def test_cli_invalid_secret_key_is_a_one_line_config_error(database_url):
    result = cli(database_url, "tenants", "list", secret_key="not-a-fernet-key")
    assert result.exit_code == 2
    assert "secret_key" in result.stderr and "Traceback" not in result.stderr
