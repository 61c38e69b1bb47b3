"""The documentation is tested: README.md, hybridflow.toml.example, .ci/run and deploy/ agree with the code.

As in sqlite-utils' tests/test_docs.py: every command is documented, every setting is documented, and the
commands the README tells people to type are the ones the code and CI run.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import typer.main

from hybridflow.cli import app
from hybridflow.config import ENV_PREFIX, FIELDS, Settings, load_settings
from hybridflow.service import ingest
from tests.support.builders import REPO
from tests.support.cli import command_tree

ROOT = REPO
README = (ROOT / "README.md").read_text(encoding="utf-8")
EXAMPLE = ROOT / "hybridflow.toml.example"
CLI = typer.main.get_command(app)


COMMANDS = [(path, command) for path, command in command_tree() if path]  # the root is not a command
GLOBAL_OPTIONS = {opt for param in CLI.params for opt in getattr(param, "opts", [])}


def section(title: str) -> str:
    """The text of the README section ``## title`` up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README + "\n## ", re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


def code_blocks(text: str) -> list[str]:
    return re.findall(r"^```\w*\n(.*?)^```", text, re.S | re.M)


def resolve(words: list[str]) -> tuple[tuple[str, ...], Any]:
    """The deepest command named by the leading ``words``."""
    path: tuple[str, ...] = ()
    command: Any = CLI
    for word in words:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        path, command = (*path, word), sub
    return path, command


# --- commands -----------------------------------------------------------------------------------------------------


def test_the_cli_has_the_commands_of_the_issues():
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"serve", "sweep", "replay", "doctor", "migrate", "keys generate", "tenants add", "tenants list",
            "tenants show", "tenants update", "tenants remove", "sessions list", "sessions show", "sessions pause",
            "sessions resume"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_is_in_the_readme(path):
    assert re.search(rf"hybridflow {re.escape(' '.join(path))}(?![\w-])", README), (
        f"README.md never mentions `hybridflow {' '.join(path)}`")


def documented_invocations() -> list[tuple[str, tuple[str, ...], list[str]]]:
    """Every `hybridflow ...` the README shows (in code blocks and inline code) with the options it uses."""
    spans = [line for block in code_blocks(README) for line in block.replace("\\\n", " ").splitlines()]
    spans += re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", README, flags=re.S | re.M))
    found = []
    for span in dict.fromkeys(spans):
        span = re.sub(r"^hf ", "hybridflow ", span.split("  #", 1)[0])  # the README's `hf` runs hybridflow
        for match in re.finditer(r"(?:^|[\s/(])hybridflow((?: [a-z][\w-]*)+)(.*?)(?=$|[;|&]|\bhybridflow\b)", span):
            before = span[:match.start(1) - len("hybridflow")].split()
            if before and before[-1].startswith("-"):  # `sudo -u hybridflow`, `--owner hybridflow`: a user name
                continue
            words = match.group(1).split()
            path, command = resolve(words)
            rest = words[len(path):]
            if hasattr(command, "commands") and rest:  # a group followed by a word: it must be a subcommand
                path = (*path, rest[0])
            options = re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", match.group(2))
            found.append((span.strip(), path, options))
    return found


INVOCATIONS = documented_invocations()


def test_the_readme_shows_invocations_of_the_commands():
    assert len({path for _, path, _ in INVOCATIONS}) >= 12


@pytest.mark.parametrize(("line", "path", "options"), INVOCATIONS, ids=[line for line, _, _ in INVOCATIONS])
def test_every_option_the_readme_uses_exists(line, path, options):
    found, command = resolve(list(path))
    assert found == path, f"README: `{line}`: there is no command `hybridflow {' '.join(path)}`"
    known = GLOBAL_OPTIONS | {opt for param in command.params
                              for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]}
    unknown = [option for option in options if option not in known]
    assert not unknown, f"README: `{line}` uses {unknown}, which `hybridflow {' '.join(path)}` does not have"


# --- quickstart and CI --------------------------------------------------------------------------------------------


def quickstart_commands() -> list[str]:
    return [block.strip() for block in code_blocks(section("Quickstart"))]


def test_quickstart_has_the_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    assert "hybridflow serve" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command_verbatim():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert quickstart_commands()[1] in [line.strip() for line in ci.splitlines()]
    assert "CI=true" in ci


def test_quickstart_test_command_is_also_the_development_one():
    assert quickstart_commands()[1] in [line.strip() for block in code_blocks(section("Development"))
                                        for line in block.splitlines()]


# --- settings -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", list(FIELDS))
def test_every_setting_is_in_the_readme_table(key):
    rows = [line for line in section("Configuration").splitlines() if line.startswith(f"| `{key}` |")]
    assert len(rows) == 1, f"README's settings table has no row for `{key}`"
    assert f"`{ENV_PREFIX}{key.upper()}`" in rows[0]


@pytest.mark.parametrize("key", list(FIELDS))
def test_every_setting_is_in_the_example_config(key):
    text = EXAMPLE.read_text(encoding="utf-8")
    assert len(re.findall(rf"^#? ?{key} = ", text, re.M)) == 1, f"hybridflow.toml.example has no `{key} = ...` line"
    assert f"Env: {ENV_PREFIX}{key.upper()}" in text


def test_the_readme_table_has_no_setting_that_does_not_exist():
    documented = re.findall(r"^\| `(\w+)` \| `HYBRIDFLOW_", section("Configuration"), re.M)
    assert sorted(documented) == sorted(FIELDS)


def test_the_example_config_is_valid_and_changes_nothing():
    settings = load_settings(EXAMPLE, environ={})
    assert settings == Settings(source=str(EXAMPLE))


def test_the_readme_defaults_are_the_real_ones():
    rows = {m[1]: m[2] for m in re.finditer(r"^\| `(\w+)` \| `\w+` \| ([^|]+) \|", section("Configuration"), re.M)}
    defaults = Settings()
    for key, shown in rows.items():
        shown = shown.strip().strip("`")
        if shown == "not set":
            assert getattr(defaults, key) is None, key
        else:
            assert FIELDS[key](shown) == getattr(defaults, key), (key, shown)


# --- webhook setup, actions, deploy/ ------------------------------------------------------------------------------


def test_the_webhook_set_body_is_valid_json_with_both_events_and_the_auth_header():
    text = section("Pointing Evolution at HybridFlow")
    assert "/webhook/set/" in text
    body: dict[str, Any] = json.loads(re.search(r"-d '(\{.*?\})'\n", text, re.S).group(1))
    webhook = body["webhook"]
    assert webhook["enabled"] is True
    assert webhook["url"].endswith("/webhooks/evolution")
    assert webhook["headers"] == {"Authorization": "Bearer <secret>"}
    assert set(webhook["events"]) == {"MESSAGES_UPSERT", "SEND_MESSAGE"}
    assert webhook["base64"] is False and webhook["byEvents"] is False


def test_every_webhook_action_is_explained():
    actions = {action.value for action in ingest.Action}  # every action the code can answer
    table = re.findall(r"^\| `(\w+)` \|", section("How it decides"), re.M)
    assert table[0] == "action"  # the header
    assert sorted(table[1:]) == sorted(actions)


DEPLOY_REFERENCES = sorted(set(re.findall(r"deploy/[\w.-]*\w", README)))


def test_the_readme_points_to_deploy_files():
    assert {"deploy/hybridflow.service", "deploy/crontab", "deploy/Caddyfile", "deploy/nginx.conf"} <= set(
        DEPLOY_REFERENCES)


@pytest.mark.parametrize("reference", DEPLOY_REFERENCES)
def test_every_deploy_file_the_readme_names_exists(reference):
    assert (ROOT / reference).is_file(), f"README.md points to {reference}, which is not in the repository"


def unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (ROOT / "deploy" / "hybridflow.service").read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def test_the_systemd_unit_matches_the_readme():
    values = unit()
    production = section("Production on a VPS")
    assert values["User"] == ["hybridflow"] and values["Restart"] == ["on-failure"]
    assert values["EnvironmentFile"] == ["/etc/hybridflow/env"]
    assert values["ExecStart"] == ["/opt/hybridflow/.venv/bin/hybridflow serve"]
    assert values["WorkingDirectory"] == ["/var/lib/hybridflow"]
    assert values["ReadWritePaths"] == ["/var/lib/hybridflow"]
    for path in ("/opt/hybridflow/.venv", "/etc/hybridflow/env", "/var/lib/hybridflow", "useradd --system"):
        assert path in production


def test_the_cron_line_runs_sweep_as_the_service_user_with_its_settings():
    lines = [line for line in (ROOT / "deploy" / "crontab").read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#") and "=" not in line.split()[0]]
    assert len(lines) == 1
    fields = lines[0].split(None, 6)
    assert fields[:5] == ["*"] * 5 and fields[5] == "hybridflow"
    assert ". /etc/hybridflow/env" in fields[6] and "/opt/hybridflow/.venv/bin/hybridflow sweep" in fields[6]


@pytest.mark.parametrize(("name", "limit"),
                         [("Caddyfile", "max_size 8MiB"), ("nginx.conf", "client_max_body_size 8m;")])
def test_the_proxies_forward_to_serve_with_the_same_body_limit(name, limit):
    text = (ROOT / "deploy" / name).read_text(encoding="utf-8")
    defaults = Settings()
    assert f"{defaults.host}:{defaults.port}" in text
    assert limit in text
    assert defaults.max_body_size == 8 * 1024 * 1024


def test_every_tenant_option_in_the_readme_table_exists_on_add_and_update():
    text = section("Tenants")
    table = text[text.index("| Option | Meaning |"):].split("\n\n")[0]
    documented = {opt for cell in re.findall(r"^\| ([^|]+?) \|", table, re.M)
                  for opt in re.findall(r"--[a-z][\w-]*", cell)}
    assert len(documented) >= 15, documented
    for path in (("tenants", "add"), ("tenants", "update")):
        _, command = resolve(list(path))
        known = {opt for p in command.params for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}
        assert documented <= known, f"`hybridflow {' '.join(path)}` lacks {documented - known}"
