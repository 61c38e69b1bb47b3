"""deploy/Dockerfile, deploy/compose.yaml and README.md "Running with Docker Compose" agree with the systemd unit.

No container engine runs here, so nothing is built: the files are parsed (a small Dockerfile parser, and a parser of
the YAML subset compose.yaml is written in, checked against PyYAML when it happens to be installed) and compared
with deploy/hybridflow.service, the README and the CLI. No database, no process: the CLI runs in-process and the
health check's code runs against a local HTTP server thread.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import re
import shlex
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from hybridflow.cli import app
from hybridflow.config import ENV_PREFIX, FIELDS, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
README = (ROOT / "README.md").read_text(encoding="utf-8")
CLI = typer.main.get_command(app)


# --- readers ------------------------------------------------------------------------------------------------------


def section(title: str) -> str:
    """The text of the README section ``## title`` up to the next ``## ``."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README + "\n## ", re.S | re.M)
    assert match, f"README.md has no '## {title}' section"
    return match.group(1)


DOCKER_SECTION = section("Running with Docker Compose")


def code_blocks(text: str, lang: str = r"\w*") -> list[str]:
    """Fenced blocks, also those indented inside a list item (their indentation removed)."""
    blocks = []
    for indent, body in re.findall(rf"^( *)```{lang}\n(.*?)^\1```", text, re.S | re.M):
        blocks.append("\n".join(line[len(indent):] for line in body.splitlines()))
    return blocks


def unit() -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in (DEPLOY / "hybridflow.service").read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values.setdefault(key.strip(), []).append(value.strip())
    return values


UNIT = unit()
EXEC_START = UNIT["ExecStart"][0].split()  # ["/opt/hybridflow/.venv/bin/hybridflow", "serve"]


# Dockerfile: one (INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped.

INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):  # also comment lines inside a continuation, as Docker does
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        line, pending = pending + stripped, ""
        word, _, args = line.partition(" ")
        assert word.upper() in INSTRUCTIONS and word == word.upper(), f"Dockerfile: unknown instruction in {line!r}"
        instructions.append((word, args.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


def exec_form(args: str) -> list[str]:
    """The JSON-array (exec) form of CMD/ENTRYPOINT/HEALTHCHECK CMD: a list of strings, no shell involved."""
    value = json.loads(args)
    assert isinstance(value, list) and value and all(isinstance(v, str) for v in value), args
    return value


DOCKERFILE = parse_dockerfile((DEPLOY / "Dockerfile").read_text(encoding="utf-8"))


def instructions(name: str) -> list[str]:
    return [args for word, args in DOCKERFILE if word == name]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in instructions("ENV"):
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            assert sep, f"ENV {args!r}: write ENV KEY=value"
            env[key] = value.replace("$PATH", "/usr/local/bin:/usr/bin:/bin")
    return env


# compose.yaml: the YAML subset it is written in (block mappings and sequences, scalars, flow sequences, comments).


def _scalar(text: str) -> Any:
    text = text.strip()
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        assert text.endswith("'"), text
        return text[1:-1].replace("''", "'")
    if text.startswith("["):
        assert text.endswith("]"), text
        inner = text[1:-1].strip()
        return [_scalar(item) for item in re.findall(r'"(?:[^"\\]|\\.)*"|\'[^\']*\'|[^,]+', inner)] if inner else []
    assert not text.startswith(("{", "&", "*", "!", "|", ">")), f"outside the YAML subset: {text!r}"
    if text in ("", "~", "null"):
        return None
    if text in ("true", "false"):
        return text == "true"
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def _strip_comment(line: str) -> str:
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.rstrip()


def parse_yaml(text: str) -> Any:
    assert "\t" not in text, "tabs in YAML"
    lines = [(len(line) - len(line.lstrip(" ")), line.strip())
             for line in (_strip_comment(raw) for raw in text.splitlines()) if line.strip()]

    def block(i: int, indent: int) -> tuple[Any, int]:
        if lines[i][1].startswith("- ") or lines[i][1] == "-":
            items: list[Any] = []
            while i < len(lines) and lines[i][0] == indent and lines[i][1].startswith("-"):
                rest = lines[i][1][1:].strip()
                assert rest and not re.match(r"^[\w.-]+:( |$)", rest), f"outside the YAML subset: {lines[i][1]!r}"
                items.append(_scalar(rest))
                i += 1
            return items, i
        mapping: dict[str, Any] = {}
        while i < len(lines) and lines[i][0] == indent:
            match = re.fullmatch(r"([\w.-]+):(?: (.*))?", lines[i][1])
            assert match, f"outside the YAML subset: {lines[i][1]!r}"
            key, value = match.groups()
            assert key not in mapping, f"duplicate key {key!r}"
            i += 1
            if value is None and i < len(lines) and lines[i][0] > indent:
                mapping[key], i = block(i, lines[i][0])
            else:
                mapping[key] = _scalar(value or "")
        assert i == len(lines) or lines[i][0] < indent, f"bad indentation at {lines[i][1]!r}"
        return mapping, i

    value, end = block(0, lines[0][0])
    assert end == len(lines), f"unparsed YAML from {lines[end][1]!r}"
    return value


COMPOSE_TEXT = (DEPLOY / "compose.yaml").read_text(encoding="utf-8")
COMPOSE = parse_yaml(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
HF = SERVICES["hybridflow"]


# --- the Dockerfile -----------------------------------------------------------------------------------------------


def test_the_dockerfile_parses_and_starts_from_python_311_slim():
    assert DOCKERFILE[0] == ("FROM", "python:3.11-slim")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]
    assert requires == ">=3.11"
    assert [word for word, _ in DOCKERFILE].count("FROM") == 1


def test_the_entry_point_is_hybridflow_serve_like_the_units_exec_start():
    entrypoint = [exec_form(args) for args in instructions("ENTRYPOINT")]
    cmd = [exec_form(args) for args in instructions("CMD")]
    assert len(entrypoint) == 1 and len(cmd) <= 1
    argv = entrypoint[0] + (cmd[0] if cmd else [])
    program = argv[0]
    if "/" not in program:  # found on the image's PATH
        directories = image_env()["PATH"].split(":")
        assert directories[0] == str(Path(EXEC_START[0]).parent), "the virtualenv's bin must come first on PATH"
        program = f"{directories[0]}/{program}"
    assert [program, *argv[1:]] == EXEC_START == ["/opt/hybridflow/.venv/bin/hybridflow", "serve"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert Path(program).name in scripts
    assert CliRunner().invoke(app, [*argv[1:], "--help"]).exit_code == 0


def test_the_image_uses_the_units_user_and_paths():
    assert instructions("USER") == UNIT["User"] == ["hybridflow"]
    assert instructions("WORKDIR") == UNIT["WorkingDirectory"] == ["/var/lib/hybridflow"]
    volumes = [v for args in instructions("VOLUME") for v in (exec_form(args) if args.startswith("[") else args.split())]
    assert volumes == UNIT["ReadWritePaths"] == ["/var/lib/hybridflow"]
    words = [word for word, _ in DOCKERFILE]
    assert words.index("USER") > max(i for i, w in enumerate(words) if w in ("RUN", "COPY"))  # root only to install
    assert words.index("VOLUME") > words.index("USER")  # a new volume takes the ownership the image gives it


def test_the_image_installs_like_the_readme():
    production = section("Production on a VPS")
    readme_lines = {re.sub(r"^sudo ", "", line.split("  #", 1)[0]).strip()
                    for block in code_blocks(production) for line in block.splitlines()}
    commands = [part.strip() for args in instructions("RUN") for part in args.split("&&")]
    assert "useradd --system --home-dir /var/lib/hybridflow --create-home --shell /usr/sbin/nologin hybridflow" in (
        set(commands) & readme_lines)
    assert "/opt/hybridflow/.venv/bin/pip install '/opt/hybridflow/src[postgres]'" in set(commands) & readme_lines
    assert "python3 -m venv /opt/hybridflow/.venv" in set(commands) & readme_lines
    assert instructions("COPY") == [". /opt/hybridflow/src"]


def test_the_image_settings_are_real_settings_and_listen_on_every_address(tmp_path, monkeypatch):
    env = {key: value for key, value in image_env().items() if key.startswith(ENV_PREFIX)}
    assert env["HYBRIDFLOW_HOST"] == "0.0.0.0"
    assert {key[len(ENV_PREFIX):].lower() for key in env} <= set(FIELDS)
    monkeypatch.chdir(tmp_path)  # no ./hybridflow.toml: the image's environment alone
    settings = load_settings(None, environ=env)
    assert settings.host == "0.0.0.0" and settings.port == Settings().port
    # the database the VPS settings use, inside the state volume
    assert f"HYBRIDFLOW_DATABASE_URL={env['HYBRIDFLOW_DATABASE_URL']}" in section("Production on a VPS")
    assert env["HYBRIDFLOW_DATABASE_URL"].startswith("sqlite:///" + UNIT["ReadWritePaths"][0] + "/")


@pytest.fixture
def health_server():
    """A local HTTP server answering ``status`` on every path, recording the paths asked for."""
    state: dict[str, Any] = {"status": 200, "paths": []}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            state["paths"].append(self.path)
            self.send_response(state["status"])
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["port"] = server.server_address[1]
    yield state
    server.shutdown()
    server.server_close()


def test_the_healthcheck_asks_health_with_urllib_and_fails_on_503(health_server, monkeypatch):
    (args,) = instructions("HEALTHCHECK")
    options, _, command = args.partition("CMD ")
    assert all(re.fullmatch(r"--[a-z-]+=\w+", option) for option in options.split()), options
    argv = exec_form(command)
    assert argv[0] in ("python3", "python") and argv[1] == "-c"  # no curl in slim images
    code = argv[2]
    assert "urllib" in code and "/health" in code
    monkeypatch.setenv("HYBRIDFLOW_PORT", str(health_server["port"]))
    exec(compile(code, "HEALTHCHECK", "exec"), {})  # noqa: S102 - the image's own check, run in-process
    assert health_server["paths"] == ["/health"]
    health_server["status"] = 503  # /health when the database does not answer
    with pytest.raises(Exception):
        exec(compile(code, "HEALTHCHECK", "exec"), {})  # noqa: S102


def test_the_dockerignore_keeps_what_pip_needs_and_drops_state_and_secrets():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
                if line.strip() and not line.startswith("#")]
    assert not any(p.startswith("!") for p in patterns)

    def ignored(path: str) -> bool:  # Docker's rules, simplified: `**/x` at any depth, `x` from the root
        parts = path.split("/")
        for pattern in patterns:
            if pattern.startswith("**/"):
                if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                    return True
            elif fnmatch.fnmatchcase(parts[0], pattern):
                return True
        return False

    needed = ["pyproject.toml", "README.md", "deploy/Dockerfile"]
    needed += [str(p.relative_to(ROOT)) for p in (ROOT / "hybridflow").rglob("*.py") if "__pycache__" not in p.parts]
    assert [path for path in needed if ignored(path)] == []
    for path in (".git/config", ".venv/bin/python", "hybridflow.db", "sub/hybridflow.db-wal", "captured.jsonl",
                 "hybridflow.toml", ".env", "hybridflow/__pycache__/web.cpython-311.pyc", "hybridflow.egg-info/PKG-INFO"):
        assert ignored(path), path


# --- compose.yaml -------------------------------------------------------------------------------------------------


def test_the_compose_file_parses():
    assert set(COMPOSE) == {"services", "volumes"}
    assert {"evolution-api", "hybridflow"} <= set(SERVICES)
    try:
        import yaml
    except ImportError:
        return
    assert yaml.safe_load(COMPOSE_TEXT) == COMPOSE


def test_evolution_uses_its_own_image():
    assert SERVICES["evolution-api"]["image"].split(":")[0] in ("evoapicloud/evolution-api", "atendai/evolution-api")


def test_the_hybridflow_service_publishes_no_port():
    assert "ports" not in HF and "network_mode" not in HF
    assert HF["environment"]["HYBRIDFLOW_HOST"] == "0.0.0.0"


def test_the_hybridflow_service_builds_this_dockerfile_from_the_readme_checkout():
    context, dockerfile = HF["build"]["context"], HF["build"]["dockerfile"]
    assert "sudo git clone <this repository> /opt/hybridflow/src" in section("Production on a VPS")
    assert context == "/opt/hybridflow/src" and (ROOT / dockerfile).resolve() == DEPLOY / "Dockerfile"
    build = [line for block in code_blocks(DOCKER_SECTION) for line in block.splitlines()
             if line.startswith("sudo docker build ")]
    assert build == [f"sudo docker build -f {context}/{dockerfile} -t {HF['image']} {context}"]


def test_the_hybridflow_service_uses_the_units_settings_and_state():
    assert HF["env_file"] == UNIT["EnvironmentFile"][0]
    (mount,) = HF["volumes"]
    volume, target = mount.split(":")
    assert target == UNIT["ReadWritePaths"][0] == instructions("VOLUME")[0]
    assert volume in COMPOSE["volumes"]
    assert HF["read_only"] is True and "ALL" in HF["cap_drop"]


def test_every_named_volume_and_dependency_is_declared():
    for name, service in SERVICES.items():
        for dependency in service.get("depends_on", []):
            assert dependency in SERVICES, (name, dependency)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            assert source.startswith(("/", ".")) or source in COMPOSE["volumes"], (name, mount)


def test_the_settings_in_compose_name_its_services():
    env_block = next(block for block in code_blocks(DOCKER_SECTION) if "HYBRIDFLOW_EVOLUTION_URL=" in block)
    env = dict(line.split("=", 1) for line in env_block.splitlines() if line.startswith(ENV_PREFIX))
    assert {key[len(ENV_PREFIX):].lower() for key in env} <= set(FIELDS)
    assert re.fullmatch(r"http://evolution-api:8080", env["HYBRIDFLOW_EVOLUTION_URL"])
    assert env["HYBRIDFLOW_OLLAMA_HOST"].split("//")[1].split(":")[0] in SERVICES
    assert env["HYBRIDFLOW_DATABASE_URL"] == image_env()["HYBRIDFLOW_DATABASE_URL"]


# --- the README section -------------------------------------------------------------------------------------------


def test_the_readme_section_follows_production_on_a_vps():
    titles = re.findall(r"^## (.+)$", README, re.M)
    assert titles[titles.index("Production on a VPS") + 1] == "Running with Docker Compose"


def test_the_readme_says_the_image_is_built_by_the_user():
    assert "No HybridFlow image is published" in DOCKER_SECTION and "build it yourself" in DOCKER_SECTION
    assert "deploy/Dockerfile" in DOCKER_SECTION and "deploy/compose.yaml" in DOCKER_SECTION


def test_the_readme_gives_both_webhook_urls_on_the_serve_port():
    port = Settings().port
    assert image_env()["HYBRIDFLOW_PORT"] == str(port)
    assert f"`http://hybridflow:{port}/webhooks/evolution`" in DOCKER_SECTION
    assert f"`http://host.docker.internal:{port}/webhooks/evolution`" in DOCKER_SECTION
    assert f"http://hybridflow:{port}/webhooks/evolution" in COMPOSE_TEXT


def test_the_host_layout_uses_the_host_gateway_and_keeps_the_secrets():
    (snippet,) = code_blocks(DOCKER_SECTION, "yaml")
    assert parse_yaml(snippet) == {"extra_hosts": ["host.docker.internal:host-gateway"]}
    assert "20.10" in DOCKER_SECTION
    assert "HYBRIDFLOW_HOST=172.17.0.1" in DOCKER_SECTION and "HYBRIDFLOW_HOST=0.0.0.0" in DOCKER_SECTION
    assert "HYBRIDFLOW_ADMIN_TOKEN" in DOCKER_SECTION and "--webhook-secret" in DOCKER_SECTION


def hybridflow_command_lines() -> list[tuple[str, list[str]]]:
    """Every HybridFlow command the section shows, as (line, arguments after the program)."""
    spans = [line for block in code_blocks(DOCKER_SECTION) for line in block.splitlines()]
    prose = re.sub(r"^( *)```.*?^\1```", "", DOCKER_SECTION, flags=re.S | re.M)
    spans += re.findall(r"`([^`\n]+)`", prose)
    found = []
    for span in spans:
        line = span.split("  #", 1)[0].strip()
        command = re.search(r"\$\((sudo docker run [^)]*)\)", line)
        if not (command or line.startswith(("hf", "sudo docker run "))):
            continue
        words = shlex.split(command.group(1) if command else line)
        if words[:1] == ["hf"]:
            found.append((line, words[1:]))
        elif words[:4] == ["sudo", "docker", "run", "--rm"] and words[4] == HF["image"]:
            found.append((line, words[5:]))  # the image's ENTRYPOINT is `hybridflow`
        elif words[:2] == ["hf()", "{"]:
            assert words[2:8] == ["sudo", "docker", "compose", "exec", "hybridflow", EXEC_START[0]], line
    return found


COMMAND_LINES = hybridflow_command_lines()


def test_the_readme_section_runs_commands_like_the_unit():
    assert "hf() { sudo docker compose exec hybridflow /opt/hybridflow/.venv/bin/hybridflow \"$@\"; }" in (
        DOCKER_SECTION)
    assert len(COMMAND_LINES) >= 4


@pytest.mark.parametrize(("line", "args"), COMMAND_LINES, ids=[line for line, _ in COMMAND_LINES])
def test_every_hybridflow_command_in_the_section_exists(line, args):
    command: Any = CLI
    path: list[str] = []
    for word in args:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, path = sub, [*path, word]
    assert path and not hasattr(command, "commands"), f"`{line}` names no command"
    result = CliRunner().invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    known = {opt for param in [*CLI.params, *command.params]
             for opt in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]}
    options = [word for word in args[len(path):] if word.startswith("-")]
    assert set(options) <= known, f"`{line}` uses options that `hybridflow {' '.join(path)}` does not have"
