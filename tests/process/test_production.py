"""README's "Production on a VPS", followed for real on PostgreSQL: the documented settings file, `serve` as the
systemd unit runs it, commands through the README's `hf` shell function, a webhook in and a reply out, then
`doctor`, `sweep`, `sessions list --json` and a SIGTERM.

The peers are the fakes (Evolution and Ollama on 127.0.0.1); everything else is the real thing: child processes,
a fresh PostgreSQL database, the environment read from a file the way systemd and `sh` read it.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.builders import CUSTOMER, REPO, eventually, upsert
from tests.support.cli import json_documents
from tests.support.fakes import FakeEvolution
from tests.support.ports import free_port
from tests.support.serve import HYBRIDFLOW, ServeProcess, clean_env

README = (REPO / "README.md").read_text(encoding="utf-8")
INSTANCE = "padaria"
INSTANCE_TOKEN = "instance-token-" + secrets.token_hex(8)
WEBHOOK_SECRET = secrets.token_hex(24)
PROMPT = "You are the assistant of Padaria Boa. Answer briefly and kindly."
COMMAND_TIMEOUT = 30.0


def production_section() -> str:
    return README.split("## Production on a VPS", 1)[1].split("\n## ", 1)[0]


def documented_settings() -> list[str]:
    """The variables the README writes to /etc/hybridflow/env (its `tee ... <<EOF` block)."""
    block = re.search(r"tee /etc/hybridflow/env >/dev/null <<EOF\n(.*?)\nEOF\n", production_section(), re.S)
    assert block, "README's production section no longer writes /etc/hybridflow/env with a heredoc"
    return [line.split("=", 1)[0] for line in block.group(1).splitlines() if "=" in line]


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@dataclass
class Done:
    code: int
    stdout: str
    stderr: str


async def run(*args: str, env: dict[str, str], cwd: Path) -> Done:
    process = await asyncio.create_subprocess_exec(
        *args, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Done(process.returncode or 0, stdout.decode(), stderr.decode())


@dataclass
class Machine:
    """The VPS: its state directory, its settings file, and the README's `hf` function to run commands."""

    state: Path
    env_file: Path

    async def hf(self, *args: str) -> Done:
        """`hf() { sudo -u hybridflow sh -c 'cd /var/lib/hybridflow && set -a && . /etc/hybridflow/env && exec
        .../hybridflow "$@"' hybridflow "$@"; }`, without sudo."""
        script = f'cd "$1" && shift && set -a && . "$1" && shift && exec {shlex.join(HYBRIDFLOW)} "$@"'
        return await run("sh", "-c", script, "hybridflow", str(self.state), str(self.env_file), *args,
                         env=clean_env(), cwd=self.state)


@pytest.fixture
def evolution(fake_evolution: FakeEvolution) -> FakeEvolution:
    """The fake Evolution, checking the instance token and the instance as the real one does."""
    fake_evolution.api_key = INSTANCE_TOKEN
    fake_evolution.instances = {INSTANCE}
    return fake_evolution


async def test_production_on_a_vps_as_the_readme_says(tmp_path, postgres_url, evolution, fake_ollama):
    ollama = fake_ollama
    started = time.monotonic()
    state = tmp_path / "var" / "lib" / "hybridflow"
    state.mkdir(parents=True)
    env_file = tmp_path / "etc" / "hybridflow" / "env"
    env_file.parent.mkdir(parents=True)

    # 2. Settings: the variables the README writes, with this machine's values, plus a free port and JSON logs.
    key = await run(*HYBRIDFLOW, "keys", "generate", env=clean_env(), cwd=state)
    assert key.code == 0, key.stderr
    admin_token = secrets.token_hex(32)
    values = {
        "HYBRIDFLOW_DATABASE_URL": postgres_url,
        "HYBRIDFLOW_SECRET_KEY": key.stdout.strip(),
        "HYBRIDFLOW_ADMIN_TOKEN": admin_token,
        "HYBRIDFLOW_EVOLUTION_URL": evolution.url,
        "HYBRIDFLOW_OLLAMA_HOST": ollama.url,
    }
    assert documented_settings() == list(values), "README's settings file changed: follow it here too"
    port = free_port()
    captured = state / "captured.jsonl"  # README: HYBRIDFLOW_CAPTURE_PATH=/var/lib/hybridflow/captured.jsonl
    values |= {"HYBRIDFLOW_PORT": str(port), "HYBRIDFLOW_LOG_FORMAT": "json", "HYBRIDFLOW_CAPTURE_PATH": str(captured)}
    env_file.write_text("".join(f"{name}={value}\n" for name, value in values.items()), encoding="utf-8")
    env_file.chmod(0o640)
    machine = Machine(state, env_file)
    base_url = f"http://127.0.0.1:{port}"
    secrets_in_play = [values["HYBRIDFLOW_SECRET_KEY"], admin_token, WEBHOOK_SECRET, INSTANCE_TOKEN]

    # 3. The service, as deploy/hybridflow.service starts it: EnvironmentFile=, WorkingDirectory=, `serve`.
    log = tmp_path / "journal.log"
    serve = ServeProcess(clean_env() | read_environment_file(env_file), log, cwd=state)
    serve.start()
    try:
        assert await serve.wait_healthy() == {"status": "ok", "database": "postgresql"}
        assert serve.url == base_url

        # Running commands: `hf tenants add ...`, then `hf doctor`.
        added = await machine.hf("tenants", "add", INSTANCE, "--prompt", PROMPT, "--evolution-url", evolution.url,
                                 "--api-key", INSTANCE_TOKEN, "--webhook-secret", WEBHOOK_SECRET)
        assert added.code == 0, added.stderr
        # Evolution sends the echo of every message sent through its API (SEND_MESSAGE) with the same header.
        evolution.echo_webhook_url = f"{base_url}/webhooks/evolution"
        evolution.echo_headers = {"Authorization": f"Bearer {WEBHOOK_SECRET}"}
        evolution.echo_apikey = INSTANCE_TOKEN

        # Evolution posts a customer's message with the header set by `POST /webhook/set/{instance}`.
        body = upsert("Bom dia! Vocês abrem domingo?", instance=INSTANCE, message_id="PROD-1")
        body["apikey"] = INSTANCE_TOKEN  # Evolution puts the instance token in every body when it exposes it
        async with httpx.AsyncClient(timeout=5.0) as client:
            stranger = await client.post(f"{base_url}/webhooks/evolution", json=body)
            assert stranger.status_code == 401, stranger.text
            accepted = await client.post(f"{base_url}/webhooks/evolution", json=body,
                                         headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
            assert accepted.status_code == 200, accepted.text
            assert accepted.json()["action"] == "reply_queued"

            await eventually(lambda: evolution.sent_texts, timeout=20.0, what="the reply to reach Evolution")
            assert [(t["number"], t["text"]) for t in evolution.sent_texts] == [
                ("5511987654321", "Echo: Bom dia! Vocês abrem domingo?")]
            sends = [r for r in evolution.requests if r.path == f"/message/sendText/{INSTANCE}"]
            assert sends[0].headers["apikey"] == INSTANCE_TOKEN
            assert evolution.echo_statuses == [200]  # the echo of our own reply was accepted (and pauses nothing)

            session = await client.get(f"{base_url}/sessions/{INSTANCE}/5511987654321",
                                       headers={"Authorization": f"Bearer {admin_token}"})
            assert session.status_code == 200 and session.json()["chat_id"] == CUSTOMER

        doctor = await machine.hf("doctor")
        assert doctor.code == 0, doctor.stdout + doctor.stderr
        checks = doctor.stdout.strip().splitlines()
        assert checks and all(line.startswith("✓ ") for line in checks), doctor.stdout
        assert any(line.startswith(f"✓ tenant {INSTANCE}:") for line in checks)
        assert any("postgresql answered" in line for line in checks)

        sweep = await machine.hf("sweep")  # what deploy/crontab runs every minute
        assert (sweep.code, sweep.stdout) == (0, ""), sweep.stderr

        listed = await machine.hf("sessions", "list", "--json")
        assert listed.code == 0, listed.stderr
        sessions = json.loads(listed.stdout)
        assert sessions["total"] == 1
        assert [(s["instance"], s["chat_id"], s["is_paused"], s["push_name"]) for s in sessions["sessions"]] == [
            (INSTANCE, CUSTOMER, False, "Maria")]
        shown = json.loads((await machine.hf("sessions", "show", INSTANCE, CUSTOMER, "--json")).stdout)
        assert [r["status"] for r in shown["replies"]] == ["sent"]
        assert [(m["direction"], m["text"]) for m in shown["messages"]] == [
            ("customer", "Bom dia! Vocês abrem domingo?"), ("bot", "Echo: Bom dia! Vocês abrem domingo?")]
        assert shown["events"] == []

        # What serve captured replays through the same pipeline: the same messages, so nothing new happens.
        assert not [line for line in captured.read_text().splitlines() if INSTANCE_TOKEN in line]
        replayed = await machine.hf("replay", str(captured), "--json")
        assert replayed.code == 0, replayed.stdout + replayed.stderr
        assert [r["action"] for r in json_documents(replayed.stdout)] == ["duplicate", "duplicate", "own_message"]

        # `systemctl stop`: SIGTERM, and serve exits 0 well within TimeoutStopSec.
        assert await asyncio.to_thread(serve.stop, 15.0) == 0, serve.output()
    finally:
        serve.kill()

    # journalctl -u hybridflow: one JSON object per line, the story of the run, no secret anywhere.
    lines = log.read_text(errors="replace").splitlines()
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON (a traceback, a print)
    names = [e.get("event") for e in events]
    for expected in ("serve.started", "webhook.received", "reply.sent", "serve.stopped"):
        assert expected in names, (expected, names)
    received = [e for e in events if e.get("event") == "webhook.received"]
    assert [e.get("action") for e in received] == ["reply_queued", "own_message"]
    assert any(e.get("event") == "webhook.unauthorized" for e in events)
    for secret in secrets_in_play:
        assert not [line for line in lines if secret in line], "a secret reached the log"
    assert time.monotonic() - started < 60
