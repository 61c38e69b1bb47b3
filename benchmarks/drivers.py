"""The load generators, each a separate process: wrk with a generated Lua script, or benchmarks/loadgen.py.

Both send the mix of ``traffic.py`` and answer one dict: requests, duration_us, socket_errors, status_errors,
p50_us, p95_us, p99_us, max_us.
"""

from __future__ import annotations

import itertools
import json
import shutil
import sys
from pathlib import Path

from harness import run_command
from traffic import TrafficConfig, wrk_script

HERE = Path(__file__).resolve().parent
_run_ids = itertools.count(1)


def next_run_id() -> str:
    """6 hex digits, unique within this run: they keep every load phase's message ids apart."""
    return f"{next(_run_ids):06X}"


class Wrk:
    """wrk with the generated Lua script: one thread, like the reference measurements."""

    def __init__(self, script: Path) -> None:
        self.script = script
        self.label = "wrk"

    async def run(self, url: str, connections: int, seconds: float) -> dict:
        output = await run_command(
            ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
             "-s", str(self.script), url, "--", next_run_id()], timeout=seconds + 60)
        line = next((line for line in output.splitlines() if line.startswith("BENCH ")), None)
        if line is None:
            raise RuntimeError(f"wrk printed no result:\n{output}")
        return json.loads(line.removeprefix("BENCH "))


class PythonLoad:
    """benchmarks/loadgen.py: multiprocess aiohttp clients."""

    def __init__(self, traffic: Path) -> None:
        self.traffic = traffic
        self.label = "python loadgen (aiohttp, 2 processes)"

    async def run(self, url: str, connections: int, seconds: float) -> dict:
        output = await run_command(
            [sys.executable, str(HERE / "loadgen.py"), "load", "--url", url, "--traffic", str(self.traffic),
             "--connections", str(connections), "--duration", str(seconds), "--run", next_run_id()],
            timeout=seconds + 120)
        return json.loads(output)


Driver = Wrk | PythonLoad


def choose_driver(loadgen: str, work: Path, traffic: TrafficConfig, traffic_file: Path) -> Driver:
    """wrk when asked for, or when installed and ``loadgen`` is ``auto``; else the Python load generator."""
    if loadgen == "wrk" or (loadgen == "auto" and shutil.which("wrk")):
        if not shutil.which("wrk"):
            raise SystemExit("error: --loadgen wrk but wrk is not installed (apt-get install wrk)")
        script = work / "webhooks.lua"
        script.write_text(wrk_script(traffic))
        return Wrk(script)
    return PythonLoad(traffic_file)
