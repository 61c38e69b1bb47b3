"""`hybridflow serve` as a real child process, for process tests and benchmarks: start, wait healthy, stop, kill -9.

This is the one way the tests start `serve`: ``python -m hybridflow serve`` with the Python running them, so no
path of one machine is involved. Nothing here depends on pytest. The server listens on 127.0.0.1 only; its log
lines go to a file that the caller can read (``ServeProcess.log_events()``) or print when a test fails
(``ServeProcess.log_tail()``)::

    env = serve_env(database_url, evolution_url=evolution.url, ollama_host=ollama.url)
    cli(env, "tenants", "add", "test-instance", "--prompt", "Be brief.", "--api-key", "k")
    server = ServeProcess(env, log_path)
    server.start()
    await server.wait_healthy()
    ...
    server.kill()      # SIGKILL: no cleanup runs, exactly like a crash
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from hybridflow.crypto import generate_key
from tests.support.ports import free_port

STARTUP_TIMEOUT = 30.0
HYBRIDFLOW = (sys.executable, "-m", "hybridflow")
"""The command line of `hybridflow` for the Python that runs the tests (its virtualenv, wherever it is)."""


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any HYBRIDFLOW_* variable, plus ``settings`` by lower-case name."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("HYBRIDFLOW_")}
    env.update({f"HYBRIDFLOW_{name.upper()}": value for name, value in settings.items()})
    return env


def serve_env(database_url: str, *, evolution_url: str, ollama_host: str, secret_key: str | None = None,
              **settings: str) -> dict[str, str]:
    """The environment of a `serve` (or CLI) child: database, peers, a free port, JSON logs, no debounce.

    HYBRIDFLOW_* variables of the calling environment are dropped, so only what is given here applies.

    ``settings`` are more HYBRIDFLOW_* values by lower-case name, e.g. ``reply_lease="3s"``.
    """
    values = {
        "database_url": database_url,
        "host": "127.0.0.1",
        "port": str(free_port()),
        "secret_key": secret_key or generate_key(),
        "evolution_url": evolution_url,
        "ollama_host": ollama_host,
        "debounce": "0",
        "sweep_interval": "1s",
        "log_format": "json",
        **settings,
    }
    return clean_env(**values) | {"PYTHONUNBUFFERED": "1"}


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], log_path: Path) -> AsyncIterator[ServeProcess]:
    """A `serve` started and healthy for the block, stopped (SIGTERM) after it, also when the block fails."""
    server = ServeProcess(env, log_path)
    server.start()
    try:
        await server.wait_healthy()
        yield server
    finally:
        server.stop()


async def post_signed(server: ServeProcess, body: dict, secret: str) -> tuple[str, str | None]:
    """POST a webhook body to a running `serve` with the tenant's secret, as Evolution does; its action and reason
    (the answer must be a 200)."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        response = await client.post(server.webhook_url, json=body, headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    answer = response.json()
    return answer["action"], answer.get("reason")


def cli(env: dict[str, str], *args: str, timeout: float = 60.0,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m hybridflow ARGS`` with ``env``; raises with its output when it fails.

    ``cwd`` defaults to the temporary directory, so that no ./hybridflow.toml is read by accident.
    """
    result = subprocess.run([*HYBRIDFLOW, *args], env=env, capture_output=True, text=True,
                            timeout=timeout, cwd=cwd or tempfile.gettempdir())
    if result.returncode != 0:
        raise RuntimeError(f"hybridflow {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


class ServeProcess:
    """One `python -m hybridflow serve` child process with its own log file.

    ``args`` are more arguments of `serve` (``--port 8123``); ``port`` is where it listens (default: the
    ``HYBRIDFLOW_PORT`` of ``env``). ``stderr_path`` keeps stderr apart from the log of stdout. ``command``
    replaces ``python -m hybridflow serve`` (a benchmark of another build, or another server).
    """

    def __init__(self, env: dict[str, str], log_path: Path, *, args: Sequence[str] = (), port: int | None = None,
                 cwd: Path | None = None, stderr_path: Path | None = None,
                 command: Sequence[str] | None = None) -> None:
        self.env = env
        self.log_path = log_path
        self.stderr_path = stderr_path
        self.argv = [*(command or (*HYBRIDFLOW, "serve")), *args]
        self.cwd = cwd or log_path.parent
        self.port = port or int(env["HYBRIDFLOW_PORT"])
        self.url = f"http://127.0.0.1:{self.port}"
        self.webhook_url = f"{self.url}/webhooks/evolution"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start `serve` (again, after a kill: same port, same database); appends to the same log file."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log_path, "ab") as log, open(self.stderr_path or os.devnull, "ab") as errors:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=errors if self.stderr_path else subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self.cwd, start_new_session=True)

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def wait_healthy(self, timeout: float = STARTUP_TIMEOUT) -> Any:
        """Poll GET /health until it answers 200 and return its JSON body; fails early if the process exits."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2.0) as client:
            while True:
                if not self.alive:
                    raise RuntimeError(f"serve exited with {self.process and self.process.returncode}:\n"
                                       f"{self.log_tail()}")
                try:
                    response = await client.get(f"{self.url}/health")
                    if response.status_code == 200:
                        return response.json()
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"serve not healthy after {timeout}s:\n{self.log_tail()}")
                await asyncio.sleep(0.1)

    def wait_healthy_sync(self, timeout: float = STARTUP_TIMEOUT) -> Any:
        """``wait_healthy`` for code without an event loop."""
        return asyncio.run(self.wait_healthy(timeout))

    def wait(self, timeout: float) -> int:
        """Wait for the process to exit by itself; its exit code."""
        assert self.process is not None
        return self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL (kill -9): no shutdown code runs, open transactions and HTTP calls just stop."""
        if self.alive:
            assert self.process is not None
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM (a graceful stop), SIGKILL after ``timeout``; returns the exit code (-9 when it was killed)."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def output(self) -> str:
        """Everything it printed: the log, then stderr when that went to a file of its own."""
        paths = [self.log_path] + ([self.stderr_path] if self.stderr_path else [])
        return "".join(path.read_text(errors="replace") for path in paths if path.exists())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (lines that are not JSON, e.g. a traceback, are skipped)."""
        events = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events
