"""The Python load generator: it posts the reply-path probes, and the load itself when wrk is not installed.

    python benchmarks/loadgen.py load --url URL --traffic traffic.json --connections 32 --duration 10 --run 0A1B2C
    python benchmarks/loadgen.py probe --url URL --traffic traffic.json --count 200 --interval 0.1 --run 0A1B2C

Each prints one JSON object on stdout. ``load`` spreads the connections over a few processes (one Python process
cannot keep 32 connections busy against a fast server); it still saturates sooner than wrk does, so the bare
server's figure, and with it every ratio, is lower-bound when this generator is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import aiohttp

from traffic import WEBHOOK_PATH, Generator, TrafficConfig, probe_token

HEADERS = {"Content-Type": "application/json", "User-Agent": "axios/1.7.9"}
TIMEOUT = aiohttp.ClientTimeout(total=10)


@dataclass(slots=True)
class WorkerResult:
    requests: int = 0
    status_errors: int = 0
    socket_errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)


async def _load(url: str, config: TrafficConfig, prefix: str, connections: int, duration: float) -> WorkerResult:
    generator = Generator(config, prefix)
    result = WorkerResult()
    connector = aiohttp.TCPConnector(limit=connections)

    async def connection(session: aiohttp.ClientSession, deadline: float) -> None:
        while time.perf_counter() < deadline:
            body = generator.next()
            started = time.perf_counter()
            try:
                async with session.post(url + WEBHOOK_PATH, data=body, headers=HEADERS) as response:
                    await response.read()
                    if response.status >= 300:
                        result.status_errors += 1
            except (aiohttp.ClientError, TimeoutError):
                result.socket_errors += 1
                continue
            result.latencies.append(time.perf_counter() - started)
            result.requests += 1

    async with aiohttp.ClientSession(connector=connector, timeout=TIMEOUT) as session:
        started = time.perf_counter()
        await asyncio.gather(*(connection(session, started + duration) for _ in range(connections)))
        result.seconds = time.perf_counter() - started
    return result


def _load_process(url: str, traffic: str, prefix: str, connections: int, duration: float) -> WorkerResult:
    return asyncio.run(_load(url, TrafficConfig.load(Path(traffic)), prefix, connections, duration))


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values)) - 1))
    return sorted_values[rank]


def load(args: argparse.Namespace) -> dict:
    """Run ``connections`` keep-alive connections for ``duration`` seconds; counts and latencies in µs."""
    processes = max(1, min(args.processes, args.connections))
    shares = [args.connections // processes + (i < args.connections % processes) for i in range(processes)]
    jobs = [(args.url, args.traffic, f"{args.run}{i:02X}", n, args.duration) for i, n in enumerate(shares)]
    with multiprocessing.Pool(processes) as pool:
        results = pool.starmap(_load_process, jobs)
    latencies = sorted(value for r in results for value in r.latencies)
    requests = sum(r.requests for r in results)
    return {
        "requests": requests,
        "duration_us": round(max(r.seconds for r in results) * 1e6),
        "rps": sum(r.requests / r.seconds for r in results if r.seconds),
        "socket_errors": sum(r.socket_errors for r in results),
        "status_errors": sum(r.status_errors for r in results),
        **{f"p{p}_us": round(percentile(latencies, p) * 1e6) for p in (50, 95, 99)},
        "max_us": round(latencies[-1] * 1e6) if latencies else 0,
    }


@dataclass(frozen=True, slots=True)
class Probe:
    token: str
    posted: float  # time.monotonic(), comparable with the fakes' arrival times in the benchmark process
    acked: float
    status: int


async def _probes(url: str, config: TrafficConfig, run: str, count: int, interval: float) -> list[Probe]:
    generator = Generator(config, f"{run}FF")
    probes: list[Probe] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        start = time.monotonic()
        for index in range(count):
            token = probe_token(run, index)
            chat = f"5521{800000000 + index}@s.whatsapp.net"  # a chat of its own: the prompt holds only the probe
            body = generator.message(index % len(config.tenants), chat, f"{token} quanto custa o bolo de cenoura?",
                                     name="Probe")
            posted = time.monotonic()
            try:
                async with session.post(url + WEBHOOK_PATH, data=body, headers=HEADERS) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0
            probes.append(Probe(token, posted, time.monotonic(), status))
            await asyncio.sleep(max(0.0, start + (index + 1) * interval - time.monotonic()))
    return probes


def probe(args: argparse.Namespace) -> dict:
    """Post ``count`` customer messages with unique tokens, one every ``interval`` seconds."""
    probes = asyncio.run(_probes(args.url, TrafficConfig.load(Path(args.traffic)), args.run, args.count,
                                 args.interval))
    return {"probes": [asdict(p) for p in probes]}


def main() -> None:
    parser = argparse.ArgumentParser(description="HybridFlow benchmark load generator (Python).")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("load", "probe"):
        command = commands.add_parser(name)
        command.add_argument("--url", required=True, help="base URL of the server")
        command.add_argument("--traffic", required=True, help="the TrafficConfig file")
        command.add_argument("--run", required=True, help="6 hex digits that keep this run's message ids unique")
    commands.choices["load"].add_argument("--connections", type=int, default=32)
    commands.choices["load"].add_argument("--duration", type=float, default=10.0)
    commands.choices["load"].add_argument("--processes", type=int, default=min(2, os.cpu_count() or 1))
    commands.choices["probe"].add_argument("--count", type=int, default=200)
    commands.choices["probe"].add_argument("--interval", type=float, default=0.1)
    args = parser.parse_args()
    print(json.dumps(load(args) if args.command == "load" else probe(args)))


if __name__ == "__main__":
    main()
