"""README's "Production on a VPS", followed for real on PostgreSQL: the documented settings file, `serve` as the
systemd unit runs it, commands through the README's `hf` shell function, a webhook in and a reply out, then
`doctor`, `sweep`, `sessions list --json` and a SIGTERM.

The peers are the fakes (Evolution and Ollama on 127.0.0.1); everything else is the real thing: child processes,
a fresh PostgreSQL database, the environment read from a file the way systemd and `sh` read it.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes import FakeEvolution, FakeOllama
from tests.conftest import drop_postgres_database, fresh_postgres_database
from tests.helpers import CUSTOMER, upsert

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def base_environment() -> dict[str, str]:
    """The machine's environment without any HYBRIDFLOW_* setting: only the settings file may configure it."""
    return {name: value for name, value in os.environ.items() if not name.startswith("HYBRIDFLOW_")}


def read_environment_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines, as systemd's EnvironmentFile= reads them."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def json_documents(text: str) -> list[Any]:
    """The JSON values printed one after the other (`replay --json` prints one per body)."""
    decoder, values, index = json.JSONDecoder(), [], 0
    while (index := len(text) - len(text[index:].lstrip())) < len(text):
        value, index = decoder.raw_decode(text, index)
        values.append(value)
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
        script = f'cd "$1" && shift && set -a && . "$1" && shift && exec "{sys.executable}" -m hybridflow "$@"'
        return await run("sh", "-c", script, "hybridflow", str(self.state), str(self.env_file), *args,
                         env=base_environment(), cwd=self.state)


@pytest.fixture
async def postgres_url(pg_cluster: str | None) -> AsyncIterator[str]:
    """A new, empty PostgreSQL database, as `createdb --owner hybridflow hybridflow` gives."""
    if pg_cluster is None:
        pytest.skip("PostgreSQL binaries not found (install postgresql or set HYBRIDFLOW_TEST_POSTGRES_URL)")
    url, name = await fresh_postgres_database(pg_cluster)
    try:
        yield url
    finally:
        await drop_postgres_database(pg_cluster, name)


@pytest.fixture
async def evolution() -> AsyncIterator[FakeEvolution]:
    fake = FakeEvolution(api_key=INSTANCE_TOKEN, instances={INSTANCE})
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def ollama() -> AsyncIterator[FakeOllama]:
    fake = FakeOllama()
    await fake.start()
    yield fake
    await fake.stop()


async def wait_healthy(url: str, process: asyncio.subprocess.Process, log: Path, timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if process.returncode is not None:
                raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text(errors='replace')}")
            try:
                response = await client.get(f"{url}/health")
                if response.status_code == 200:
                    return response.json()
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"serve not healthy after {timeout}s:\n{log.read_text(errors='replace')}")
            await asyncio.sleep(0.1)


async def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def test_production_on_a_vps_as_the_readme_says(tmp_path, postgres_url, evolution, ollama):
    started = time.monotonic()
    state = tmp_path / "var" / "lib" / "hybridflow"
    state.mkdir(parents=True)
    env_file = tmp_path / "etc" / "hybridflow" / "env"
    env_file.parent.mkdir(parents=True)

    # 2. Settings: the variables the README writes, with this machine's values, plus a free port and JSON logs.
    key = await run(sys.executable, "-m", "hybridflow", "keys", "generate", env=base_environment(), cwd=state)
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
    with open(log, "wb") as journal:
        serve = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hybridflow", "serve", env=base_environment() | read_environment_file(env_file),
            cwd=state, stdin=asyncio.subprocess.DEVNULL, stdout=journal, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True)
    try:
        assert await wait_healthy(base_url, serve, log) == {"status": "ok", "database": "postgresql"}

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

            await wait_for(lambda: evolution.sent_texts, 20.0, "the reply to reach Evolution")
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
        serve.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(serve.wait(), 15.0) == 0, log.read_text(errors="replace")
    finally:
        if serve.returncode is None:
            serve.kill()
            await serve.wait()

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
