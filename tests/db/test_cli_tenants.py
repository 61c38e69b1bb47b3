"""The command line on both backends: `tenants`, `keys generate`, an unreachable database, the database URL."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from hybridflow.cli import app
from hybridflow.crypto import SecretBox
from tests.support.cli import as_json, failed, invoke, ok, table_rows
from tests.support.ports import closed_port_url

PROMPT = "Você é a assistente da Padaria Boa. Responda em poucas palavras."


pytestmark = pytest.mark.usefixtures("isolated")  # conftest: no HYBRIDFLOW_* from the shell, empty cwd


def shown(hf, instance: str, **settings: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    return as_json(hf("tenants", "show", instance, "--json", **settings))


# --- tenants add --------------------------------------------------------------------------------------------------


def test_add_with_prompt_then_show(hf):
    result = ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--model", "qwen2.5:7b",
                   "--evolution-url", "https://evo.example.com/", "--resume-after", "45m"))
    assert "padaria" in result.stdout
    tenant = shown(hf, "padaria")
    assert tenant["prompt"] == PROMPT
    assert tenant["model"] == "qwen2.5:7b"
    assert tenant["evolution_url"] == "https://evo.example.com"
    assert tenant["resume_after"] == 2700
    assert tenant["api_key"] == "not set"


def test_add_with_prompt_file_keeps_it_exactly(hf, tmp_path):
    text = "Linha um.\nLinha dois — com acentos: ção, é.\n\n  Recuada.\n"
    (tmp_path / "prompt.txt").write_text(text, encoding="utf-8")
    ok(hf("tenants", "add", "padaria", "--prompt-file", str(tmp_path / "prompt.txt")))
    assert shown(hf, "padaria")["prompt"] == text


def test_add_with_api_key_shows_it_is_set(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--api-key", "evo-key-1"))
    assert shown(hf, "padaria")["api_key"] == "set"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "prompt"),
        (["--prompt", "a", "--prompt-file", "p.txt"], "not both"),
        (["--prompt-file", "does-not-exist.txt"], "--prompt-file"),
        (["--prompt", "   "], "prompt"),
        (["--prompt", "a", "--resume-after", "soon"], "--resume-after"),
        (["--prompt", "a", "--evolution-url", "evo.example.com"], "--evolution-url"),
        (["--prompt", "a", "--api-version", "v9"], "v1 or v2"),
    ],
    ids=["no prompt", "both prompts", "missing prompt file", "blank prompt", "bad duration", "bad url", "bad api"],
)
def test_add_refuses_bad_input_with_exit_2_and_stores_nothing(hf, tmp_path, args, fragment):
    (tmp_path / "p.txt").write_text("x", encoding="utf-8")
    assert fragment in failed(hf("tenants", "add", "padaria", *args), code=2)
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}


def test_add_existing_fails_clearly_and_changes_nothing(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    error = failed(hf("tenants", "add", "padaria", "--prompt", "Something else"))
    assert "already exists" in error and "--update" in error
    assert shown(hf, "padaria")["prompt"] == PROMPT


def test_add_existing_with_update_changes_only_what_is_given(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--model", "qwen2.5:7b"))
    ok(hf("tenants", "add", "padaria", "--prompt", "New prompt", "--update"))
    tenant = shown(hf, "padaria")
    assert (tenant["prompt"], tenant["model"]) == ("New prompt", "qwen2.5:7b")
    assert len(as_json(hf("tenants", "list", "--json"))["tenants"]) == 1


def test_add_with_update_creates_a_new_tenant_too(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--update"))
    assert shown(hf, "padaria")["prompt"] == PROMPT


# --- tenants list -------------------------------------------------------------------------------------------------


def test_list_empty_says_how_to_add_one(hf):
    assert "tenants add" in ok(hf("tenants", "list")).stdout
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}


def test_list_table_and_json(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--api-key", "k1", "--resume-after", "90m"))
    ok(hf("tenants", "add", "açougue", "--prompt", PROMPT, "--model", "qwen2.5:7b"))

    rows = table_rows(ok(hf("tenants", "list")).stdout)
    assert set(rows) == {"padaria", "açougue"}
    assert (rows["padaria"]["resume after"], rows["padaria"]["api key"]) == ("90m", "set")  # as --resume-after takes it
    assert (rows["açougue"]["model"], rows["açougue"]["api key"]) == ("qwen2.5:7b", "not set")

    listed = {t["instance"]: t for t in as_json(hf("tenants", "list", "--json"))["tenants"]}
    assert set(listed) == {"padaria", "açougue"}
    assert listed["padaria"]["resume_after"] == 5400 and listed["padaria"]["api_key"] == "set"
    assert listed["açougue"]["model"] == "qwen2.5:7b" and listed["açougue"]["prompt"] == PROMPT


def test_defaults_shown_come_from_the_configuration(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    configured = {"resume_after": "30m", "ollama_model": "mistral:7b", "evolution_url": "http://evo.internal:8080"}

    tenant = as_json(hf("tenants", "list", "--json", **configured))["tenants"][0]
    assert (tenant["resume_after"], tenant["model"], tenant["evolution_url"]) == (
        1800, "mistral:7b", "http://evo.internal:8080")
    row = table_rows(ok(hf("tenants", "list", **configured)).stdout)["padaria"]
    assert (row["resume after"], row["model"], row["evolution url"]) == ("30m", "mistral:7b", "http://evo.internal:8080")

    default = as_json(hf("tenants", "list", "--json"))["tenants"][0]  # the tenant follows the configuration, not a copy of it
    assert default["resume_after"] == 7200


def test_a_tenant_setting_beats_the_configured_default(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--resume-after", "45m"))
    assert as_json(hf("tenants", "list", "--json", resume_after="30m"))["tenants"][0]["resume_after"] == 2700


# --- tenants show / update / remove -------------------------------------------------------------------------------


def test_show_table_includes_the_prompt(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    output = ok(hf("tenants", "show", "padaria")).stdout
    assert PROMPT in " ".join(output.split()) and "2h" in output


def test_show_unknown_instance_fails_and_says_how_to_add_it(hf):
    assert "tenants add" in failed(hf("tenants", "show", "ghost"))


def test_update_changes_the_given_fields_only(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--api-key", "k1"))
    ok(hf("tenants", "update", "padaria", "--model", "qwen2.5:7b", "--resume-after", "10m"))
    tenant = shown(hf, "padaria")
    assert (tenant["model"], tenant["resume_after"], tenant["prompt"], tenant["api_key"]) == (
        "qwen2.5:7b", 600, PROMPT, "set")


def test_update_with_an_empty_api_key_clears_it(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT, "--api-key", "k1"))
    ok(hf("tenants", "update", "padaria", "--api-key", ""))
    assert shown(hf, "padaria")["api_key"] == "not set"


def test_update_unknown_instance_fails_and_creates_nothing(hf):
    failed(hf("tenants", "update", "ghost", "--prompt", PROMPT))
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}


def test_remove_needs_yes(hf):
    ok(hf("tenants", "add", "padaria", "--prompt", PROMPT))
    assert "--yes" in failed(hf("tenants", "remove", "padaria"), code=2)
    assert [t["instance"] for t in as_json(hf("tenants", "list", "--json"))["tenants"]] == ["padaria"]

    ok(hf("tenants", "remove", "padaria", "--yes"))
    assert as_json(hf("tenants", "list", "--json")) == {"tenants": []}
    failed(hf("tenants", "show", "padaria"))


def test_remove_unknown_instance_fails(hf):
    failed(hf("tenants", "remove", "ghost", "--yes"))


# --- keys ---------------------------------------------------------------------------------------------------------


def test_keys_generate_prints_a_new_usable_key():
    first = ok(CliRunner().invoke(app, ["keys", "generate"])).stdout.strip()
    second = ok(CliRunner().invoke(app, ["keys", "generate"])).stdout.strip()
    assert first != second and len(first.splitlines()) == 1
    box = SecretBox(first)
    assert box.decrypt(box.encrypt("evo-key")) == "evo-key"


def test_a_generated_key_lets_tenants_add_store_an_api_key(database_url):
    key = ok(CliRunner().invoke(app, ["keys", "generate"])).stdout.strip()
    env = {"HYBRIDFLOW_DATABASE_URL": database_url, "HYBRIDFLOW_SECRET_KEY": key}
    ok(CliRunner(env=env).invoke(app, ["tenants", "add", "padaria", "--prompt", PROMPT, "--api-key", "evo-key"]))


# --- an unreachable database --------------------------------------------------------------------------------------


def assert_one_line_failure(result: Result) -> None:
    """Exit code 1 with one line on stderr, not an exception escaping the command."""
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    assert not crashed, f"the command crashed: {result.exception!r}"
    assert result.exit_code == 1, result.exit_code
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_postgres_server_down_fails_with_one_line():
    port = closed_port_url().rsplit(":", 1)[1]
    result = CliRunner().invoke(app, ["--database-url", f"postgresql://hf:pw@127.0.0.1:{port}/hf", "tenants", "list"])
    assert_one_line_failure(result)
    assert "database unavailable" in result.stderr


def test_postgres_database_that_does_not_exist_fails_with_one_line(pg_server):
    missing = pg_server.rsplit("/", 1)[0] + "/hf_does_not_exist"
    result = CliRunner().invoke(app, ["--database-url", missing, "tenants", "list"])
    assert_one_line_failure(result)
    assert "hf_does_not_exist" in result.stderr


# --- where the database URL comes from -----------------------------------------------------------------------------


def test_cli_database_url_follows_file_then_environment_then_flag(tmp_path):
    """Where `tenants add` writes shows which layer won."""
    databases = {name: tmp_path / f"{name}.db" for name in ("file", "env", "flag")}
    config = tmp_path / "hf.toml"
    config.write_text(f'database_url = "sqlite:///{databases["file"]}"\n', encoding="utf-8")
    env = {"HYBRIDFLOW_DATABASE_URL": f"sqlite:///{databases['env']}"}

    assert invoke("--config", str(config), "tenants", "add", "a", "--prompt", "p").exit_code == 0
    assert invoke("--config", str(config), "tenants", "add", "b", "--prompt", "p", env=env).exit_code == 0
    result = invoke("--config", str(config), "--database-url", f"sqlite:///{databases['flag']}",
                    "tenants", "add", "c", "--prompt", "p", env=env)
    assert result.exit_code == 0, result.stderr

    for name, instance in (("file", "a"), ("env", "b"), ("flag", "c")):
        listed = invoke("--database-url", f"sqlite:///{databases[name]}", "tenants", "list", "--json")
        assert [t["instance"] for t in json.loads(listed.stdout)["tenants"]] == [instance]
