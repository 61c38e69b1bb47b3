"""README's backup and restore, for real: `hybridflow backup` while `serve` runs and webhooks keep arriving, then
the restore (stop serve, put the file back, remove the old -wal and -shm, start serve). The restored server knows
the messages it had (Evolution's retry is a `duplicate`), and the pauses and queued replies are back."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import httpx

from tests.support.builders import CUSTOMER, owner, upsert
from tests.support.fakes import FakeEvolution, FakeOllama
from tests.support.serve import HYBRIDFLOW, ServeProcess, cli, serve_env

INSTANCE = "test-instance"
PAUSED_CHAT = "5511912345678@s.whatsapp.net"
BUSY_CHAT = "5511933334444@s.whatsapp.net"
COMMAND_TIMEOUT = 60.0


async def post(client: httpx.AsyncClient, server: ServeProcess, body: dict) -> str:
    response = await client.post(server.webhook_url, json=body)
    assert response.status_code == 200, response.text
    return response.json()["action"]


async def hybridflow(env: dict[str, str], cwd: Path, *args: str) -> dict:
    """`hybridflow ARGS --json` as a child process, without blocking the loop (webhooks go on meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        *HYBRIDFLOW, *args, "--json", env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(process.communicate(), COMMAND_TIMEOUT)
    assert process.returncode == 0, f"hybridflow {' '.join(args)} exited {process.returncode}:\n{stderr.decode()}"
    return json.loads(stdout)


async def test_a_backup_taken_while_serve_runs_restores_the_chats_pauses_and_queued_replies(
        tmp_path: Path, fake_evolution: FakeEvolution, fake_ollama: FakeOllama) -> None:
    database = tmp_path / "hybridflow.db"
    env = serve_env(f"sqlite:///{database}", evolution_url=fake_evolution.url, ollama_host=fake_ollama.url)
    # A long debounce keeps the reply queued for the whole test: the restore must bring a waiting reply back.
    cli(env, "tenants", "add", INSTANCE, "--prompt", "Seja breve.", "--debounce", "1h", cwd=tmp_path)
    server = ServeProcess(env, tmp_path / "serve.log", cwd=tmp_path)
    server.start()
    try:
        await server.wait_healthy()
        question = upsert("Vocês abrem domingo?", message_id="M-QUESTION")
        async with httpx.AsyncClient(timeout=10.0) as client:
            assert await post(client, server, question) == "reply_queued"
            assert await post(client, server, upsert("Oi", chat=PAUSED_CHAT, push_name="João")) == "reply_queued"
            assert await post(client, server, owner("Já te respondo", chat=PAUSED_CHAT)) == "paused"

            backup = asyncio.create_task(hybridflow(env, tmp_path, "backup", str(tmp_path / "backup.db")))
            busy = 0
            while not backup.done():  # the server goes on writing while the copy is taken
                await post(client, server, upsert(f"Mensagem {busy}", chat=BUSY_CHAT, message_id=f"M-BUSY-{busy}"))
                busy += 1
            taken = await backup
            assert taken["integrity"] == "ok" and taken["path"] == str(tmp_path / "backup.db")
            assert busy and 3 <= taken["rows"]["messages"] <= 3 + busy  # the three above, and what came meanwhile

            # Changes after the backup, which the restore must undo.
            cli(env, "sessions", "resume", INSTANCE, PAUSED_CHAT, cwd=tmp_path)
            await post(client, server, upsert("Depois do backup", chat=BUSY_CHAT))

        assert server.stop() == 0

        # README's restore: the old -wal and -shm away (they belong to the database replaced), the backup in place.
        for leftover in (Path(f"{database}-wal"), Path(f"{database}-shm")):
            leftover.unlink(missing_ok=True)
        os.replace(tmp_path / "backup.db", database)

        server.start()
        await server.wait_healthy()
        async with httpx.AsyncClient(timeout=10.0) as client:
            assert await post(client, server, question) == "duplicate"  # Evolution's retry: already stored
        paused = json.loads(cli(env, "sessions", "show", INSTANCE, PAUSED_CHAT, "--json", cwd=tmp_path).stdout)
        assert paused["is_paused"] is True and paused["pause_reason"] == "human_message"
        waiting = json.loads(cli(env, "sessions", "show", INSTANCE, CUSTOMER, "--json", cwd=tmp_path).stdout)
        assert [r["status"] for r in waiting["replies"]] == ["queued"]
        again = await hybridflow(env, tmp_path, "backup", str(tmp_path / "after.db"))
        assert again["rows"] == taken["rows"]  # nothing after the backup, nothing lost of it
        assert server.stop() == 0
    finally:
        server.kill()
    assert "Traceback" not in server.output(), server.log_tail()
