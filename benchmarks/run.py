"""Benchmark HybridFlow's webhook ingest and reply path, and print the figures of issue 13 against their targets.

    python benchmarks/run.py                       # full run: SQLite, then PostgreSQL (6 to 8 minutes)
    python benchmarks/run.py --quick --backends sqlite

One run starts a bare aiohttp handler (benchmarks/bare.py) and, per backend, ``hybridflow serve`` with fresh
tenants, with the test suite's fake Evolution and fake Ollama running in this process; the load comes from a
separate process (wrk, or benchmarks/loadgen.py without it). See benchmarks/README.md for each figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import floors  # noqa: E402
import harness  # noqa: E402
import sampling  # noqa: E402
from drivers import Driver, choose_driver, next_run_id  # noqa: E402
from harness import CommandFailed, Database, Server, run_command  # noqa: E402
from loadgen import percentile  # noqa: E402
from peers import TimedEvolution, TimedOllama  # noqa: E402
from report import BackendResult, LoadResult, MemoryResult, ReplyResult, render  # noqa: E402
from traffic import TrafficConfig  # noqa: E402

sys.path.insert(0, str(HERE.parent))
from tests.support.ports import free_port  # noqa: E402
from tests.support.serve import HYBRIDFLOW, clean_env  # noqa: E402

API_KEY = "bench-evolution-api-key"
PROMPT = "Você é o atendente da Padaria Boa. Responda em uma ou duas frases."
WARMUP_PROBES = 10
PROFILE_RATE = 250  # py-spy samples per second
_started = time.monotonic()


def say(message: str) -> None:
    """Progress, on stderr (the report goes to stdout)."""
    print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True, slots=True)
class Options:
    """The run's settings, from the command line."""

    backends: tuple[str, ...]
    duration: float
    tenants: int
    chats: int
    probes: int
    marks: tuple[int, int]
    model_delay: float
    load_model_delay: float
    resume_after: str
    loadgen: str
    profile: Path | None
    serve_command: tuple[str, ...]
    json: Path | None


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--quick", action="store_true",
                        help="a short smoke run: 3 s phases, 8 tenants, 40 probes, RSS marks 2k and 20k messages")
    parser.add_argument("--duration", type=float, help="seconds per measured load phase (default 10; quick 3)")
    parser.add_argument("--tenants", type=int, help="tenants created with `hybridflow tenants add` (default 20)")
    parser.add_argument("--chats", type=int, default=250, help="customer chats per tenant (default 250)")
    parser.add_argument("--probes", type=int, help="reply-path probes (default 200; quick 40)")
    parser.add_argument("--rss-marks", help="message counts at which RSS is read (default 10000,100000)")
    parser.add_argument("--model-delay", type=float, default=0.05,
                        help="the fake model's fixed delay while the reply path is probed, in seconds")
    parser.add_argument("--load-model-delay", type=float, default=1.0,
                        help="the fake model's delay during load phases: a real model answers a handful of "
                             "chats per second, so replies must not eat the ingest's CPU (default 1.0)")
    parser.add_argument("--resume-after", default="5s",
                        help="tenants' auto-resume after an owner message; short, so chats keep being answered")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator: wrk when installed (auto), else benchmarks/loadgen.py")
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="also record serve with py-spy during an extra 32-connection phase, into DIR")
    parser.add_argument("--serve-command", metavar="CMD",
                        help="run this instead of `hybridflow serve` (e.g. a patched build); it must read the same "
                             "HYBRIDFLOW_* settings")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write every figure as JSON to PATH")
    args = parser.parse_args(argv)
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown or not backends:
        parser.error(f"--backends takes sqlite and/or postgres, got {args.backends!r}")
    marks = args.rss_marks or ("2000,20000" if args.quick else "10000,100000")
    first, last = (int(m) for m in marks.split(","))
    return Options(
        backends=backends, duration=args.duration or (3.0 if args.quick else 10.0),
        tenants=args.tenants or (8 if args.quick else 20), chats=args.chats,
        probes=args.probes or (40 if args.quick else 200), marks=(first, last), model_delay=args.model_delay,
        load_model_delay=args.load_model_delay, resume_after=args.resume_after, loadgen=args.loadgen,
        profile=args.profile, json=args.json,
        serve_command=tuple(shlex.split(args.serve_command or "")) or (*HYBRIDFLOW, "serve"))


async def measure(driver: Driver, server: Server, name: str, connections: int, seconds: float) -> LoadResult:
    """One load phase, with the CPU the server process used meanwhile."""
    cpu, wall = server.cpu_seconds(), time.monotonic()
    raw = await driver.run(server.url, connections, seconds)
    cpu, wall = server.cpu_seconds() - cpu, time.monotonic() - wall
    result = LoadResult(
        server=name, connections=connections, requests=raw["requests"], seconds=raw["duration_us"] / 1e6,
        socket_errors=raw["socket_errors"], status_errors=raw["status_errors"], p50_ms=raw["p50_us"] / 1000,
        p95_ms=raw["p95_us"] / 1000, p99_ms=raw["p99_us"] / 1000, server_cpu=cpu / wall if wall else 0.0)
    say(f"{name} at {connections} connections: {result.rps:,.0f} req/s, p99 {result.p99_ms:.1f} ms")
    return result


# ---------------------------------------------------------------------------------------------------------------
# the phases run on each backend


@dataclass(frozen=True, slots=True)
class Bench:
    """What every phase needs: options, work directory, the fakes, the load generator and the bare server."""

    options: Options
    work: Path
    traffic: TrafficConfig
    traffic_file: Path
    evolution: TimedEvolution
    ollama: TimedOllama
    driver: Driver
    bare: Server
    env: dict[str, str]


async def add_tenants(bench: Bench, database_url: str) -> None:
    """``hybridflow tenants add`` for every tenant: the first alone (it creates the schema), the rest 4 at a time."""
    slots = asyncio.Semaphore(4)

    async def add(instance: str) -> None:
        async with slots:
            await run_command([*HYBRIDFLOW, "--database-url", database_url, "tenants", "add", instance,
                               "--prompt", PROMPT, "--api-key", API_KEY, "--evolution-url", bench.evolution.url or "",
                               "--debounce", "0", "--resume-after", bench.options.resume_after,
                               # The load repeats chats far faster than people do: the loop guard would pause them.
                               "--reply-cap", "off"],
                              env=bench.env, cwd=bench.work, timeout=120)

    first, *others = bench.traffic.tenants
    await add(first)
    async with asyncio.TaskGroup() as group:
        for instance in others:
            group.create_task(add(instance))


async def measure_replies(bench: Bench, serve: Server) -> ReplyResult:
    """Probes: customer messages with unique tokens, one at a time; each must come back as a sendText."""
    delay = bench.options.model_delay
    bench.ollama.delay = delay
    count = WARMUP_PROBES + bench.options.probes
    run = next_run_id()
    output = await run_command(
        [sys.executable, str(HERE / "loadgen.py"), "probe", "--url", serve.url, "--traffic", str(bench.traffic_file),
         "--count", str(count), "--interval", f"{delay + 0.05:.3f}", "--run", run], timeout=count * (delay + 1) + 60)
    probes = json.loads(output)["probes"][WARMUP_PROBES:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(p["token"] in bench.evolution.send_arrivals for p in probes):
        await asyncio.sleep(0.1)
    sends, calls = bench.evolution.send_arrivals, bench.ollama.calls
    done = [p for p in probes if p["token"] in sends and p["token"] in calls]
    overhead = sorted((sends[p["token"]] - p["posted"] - delay) * 1000 for p in done)
    ack = sorted((p["acked"] - p["posted"]) * 1000 for p in probes)
    to_model = sorted((calls[p["token"]].arrived - p["posted"]) * 1000 for p in done)
    after_model = sorted((sends[p["token"]] - calls[p["token"]].answered) * 1000 for p in done)
    result = ReplyResult(
        probes=len(probes), delivered=len(done), model_delay_ms=delay * 1000,
        overhead_p50_ms=percentile(overhead, 50), overhead_p95_ms=percentile(overhead, 95),
        overhead_p99_ms=percentile(overhead, 99), ack_p50_ms=percentile(ack, 50),
        to_model_p50_ms=percentile(to_model, 50), after_model_p50_ms=percentile(after_model, 50))
    say(f"reply path: {len(done)}/{len(probes)} delivered, overhead p50 {result.overhead_p50_ms:.2f} ms")
    return result


async def fill(bench: Bench, serve: Server, database: Database, target: int,
               trajectory: list[tuple[int, float]]) -> int:
    """Load at 32 connections until the database holds ``target`` messages; returns the count reached.

    Appends (messages, RSS MiB) to ``trajectory`` after each step.
    """
    count = await database.messages()
    rate: float | None = None
    while count < target:
        # Short chunks, each sized from the rate of the one before: the count lands close to the target.
        seconds = 1.0 if rate is None else min(10.0, max(1.0, (target - count) / rate))
        raw = await bench.driver.run(serve.url, 32, seconds)
        now = await database.messages()
        rate = max((now - count) / max(raw["duration_us"] / 1e6, 0.1), 1.0)
        count = now
        trajectory.append((count, serve.memory().rss))
    say(f"database holds {count:,} messages")
    return count


async def settled_memory(serve: Server) -> harness.Memory:
    await asyncio.sleep(2.0)  # in-flight batches and replies finish; both readings are taken the same way
    return serve.memory()


async def run_backend(bench: Bench, backend: str) -> BackendResult:
    """Every phase on one backend, with a fresh database and a fresh ``serve``."""
    options, result = bench.options, BackendResult(backend)
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            database_url = f"sqlite:///{bench.work / 'sqlite' / 'hybridflow.db'}"
        else:
            say("starting a throwaway PostgreSQL server (fsync on)")
            cluster = await stack.enter_async_context(harness.postgres_cluster(bench.work / "postgres"))
            database_url = cluster.url
        say(f"{backend}: adding {len(bench.traffic.tenants)} tenants with `hybridflow tenants add`")
        await add_tenants(bench, database_url)
        port = free_port()
        env = {**bench.env, "HYBRIDFLOW_DATABASE_URL": database_url, "HYBRIDFLOW_PORT": str(port)}
        serve = await stack.enter_async_context(Server(
            f"hybridflow serve ({backend})", options.serve_command, port=port, env=env, cwd=bench.work,
            log=bench.work / f"serve-{backend}.log"))
        bench.evolution.echo_webhook_url = f"{serve.url}/webhooks/evolution"
        stack.callback(setattr, bench.evolution, "echo_webhook_url", None)
        database = Database(database_url)
        say(f"{backend}: serve is up (pid {serve.pid}); probing the reply path")

        if options.profile is not None:
            replies = asyncio.create_task(measure_replies(bench, serve))
            await record(serve, options.profile / f"{backend}-replies.txt",
                                 (WARMUP_PROBES + options.probes) * (options.model_delay + 0.05))
            result.reply = await replies
        else:
            result.reply = await measure_replies(bench, serve)
        bench.ollama.delay = options.load_model_delay
        trajectory: list[tuple[int, float]] = []
        first = await fill(bench, serve, database, options.marks[0], trajectory)
        first_memory = await settled_memory(serve)
        for connections in (1, 32):
            result.loads.append(await measure(bench.driver, bench.bare, "bare", connections, options.duration))
            result.loads.append(await measure(bench.driver, serve, backend, connections, options.duration))
        if options.profile is not None:
            result.profile = await profile(bench, serve, backend)
        last = await fill(bench, serve, database, options.marks[1], trajectory)
        last_memory = await settled_memory(serve)
        result.memory = MemoryResult(first, first_memory.rss, last, last_memory.rss, last_memory.peak,
                                     tuple(trajectory))
        # The same 32-connection phase once more on the bigger database: does ingest slow down as it grows?
        result.loads.append(await measure(bench.driver, serve, f"{backend}@{last // 1000}k", 32, options.duration))
        result.actions, result.reply_jobs = await database.actions(), await database.replies()
        await serve.stop()
        result.problems = dict(serve.logged_problems().most_common())
    return result


async def profile(bench: Bench, serve: Server, backend: str) -> str:
    """An extra 32-connection phase with py-spy attached to serve (its figures are not reported)."""
    assert bench.options.profile is not None
    output = bench.options.profile / f"{backend}-c32.txt"
    load = asyncio.create_task(bench.driver.run(serve.url, 32, bench.options.duration + 2))
    try:
        await asyncio.sleep(1.0)
        await record(serve, output, bench.options.duration)
    finally:
        await load
    return sampling.summarize(output, bench.options.duration, rate=PROFILE_RATE)


async def record(serve: Server, output: Path, seconds: float) -> None:
    """py-spy on serve for ``seconds`` into ``output`` (collapsed stacks)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    say(f"recording serve with py-spy into {output}")
    await sampling.record(serve.pid, seconds, output, rate=PROFILE_RATE)


# ---------------------------------------------------------------------------------------------------------------


async def revision() -> str:
    try:
        output = await run_command(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"], timeout=30)
        return output.strip()
    except (CommandFailed, OSError):
        return "unknown revision"


async def header(options: Options, driver: Driver, traffic: TrafficConfig) -> list[str]:
    load = os.getloadavg()[0]
    return [
        f"HybridFlow benchmark ({await revision()}) - {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load: {driver.label}, "
        f"{len(traffic.tenants)} tenants x {traffic.chats_per_tenant} chats, "
        f"{1 - traffic.owner_share:.0%} customer / {traffic.owner_share:.0%} owner messages, "
        f"{traffic.duplicate_share:.0%} duplicates, {options.duration:g} s per phase"
        + (", SQLite with synchronous=FULL (the default)" if "sqlite" in options.backends else "")
        + (", PostgreSQL with fsync and synchronous_commit on" if "postgres" in options.backends else ""),
        f"Load average when the run started: {load:.2f}"
        + ("  (other processes were busy: absolute figures drift, the paired ratios hold better)"
           if load > 0.5 else ""),
    ]


async def benchmark(options: Options) -> tuple[list[str], list[BackendResult], floors.Floors]:
    results: list[BackendResult] = []
    async with contextlib.AsyncExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hybridflow-bench-")))
        work.chmod(0o755)  # the postgres user needs to reach its cluster's directory inside
        stack.callback(harness.stop_postmasters, work / "postgres")  # runs before the directory is removed
        evolution, ollama = TimedEvolution(api_key=API_KEY), TimedOllama()
        evolution.echo_apikey = API_KEY
        for fake in (evolution, ollama):
            await fake.start()
            stack.push_async_callback(fake.stop)
        traffic = TrafficConfig(tenants=tuple(f"loja-{i:02d}" for i in range(1, options.tenants + 1)),
                                api_key=API_KEY, chats_per_tenant=options.chats)
        traffic_file = traffic.save(work / "traffic.json")
        driver = choose_driver(options.loadgen, work, traffic, traffic_file)
        lines = await header(options, driver, traffic)
        say("measuring the machine's floors (durable commits, thread hops)")
        machine = await floors.measure(work)
        secret_key = (await run_command([*HYBRIDFLOW, "keys", "generate"], cwd=work, timeout=60)).strip()
        env = clean_env(secret_key=secret_key, log_level="warning", log_format="json", host="127.0.0.1",
                        ollama_host=ollama.url or "", evolution_url=evolution.url or "")
        port = free_port()
        bare = await stack.enter_async_context(Server(
            "bare aiohttp", [sys.executable, str(HERE / "bare.py"), "--port", str(port)], port=port,
            log=work / "bare.log"))
        await driver.run(bare.url, 32, 1.0)  # warm-up
        bench = Bench(options, work, traffic, traffic_file, evolution, ollama, driver, bare, env)
        for backend in options.backends:
            results.append(await run_backend(bench, backend))
    return lines, results, machine


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)

    async def run() -> tuple[list[str], list[BackendResult], floors.Floors]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await benchmark(options)

    try:
        lines, results, machine = asyncio.run(run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        say("interrupted; every process and temporary directory was cleaned up")
        return 130
    print(render(lines, results, machine))
    if options.json is not None:
        options.json.write_text(json.dumps({"header": lines, "floors": asdict(machine),
                                            "results": [asdict(r) for r in results]}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
