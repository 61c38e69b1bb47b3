"""The benchmark's figures, the targets of issue 13 (and issue 6's memory target) they are held against, and the
printed report."""

from __future__ import annotations

from dataclasses import dataclass, field

from floors import Floors

# Targets (issue 13, which keeps issue 6's memory target), on the 2-core machine the project runs on.
SQLITE_RATIO_TARGET = 0.40  # SQLite ingest req/s ÷ bare aiohttp req/s, at 32 connections
POSTGRES_RATIO_TARGET = 0.25  # the same for PostgreSQL
P99_TARGET_MS = 25.0  # ack latency at 32 connections, both backends
REPLY_OVERHEAD_TARGET_MS = 5.0  # p50, both backends
CPU_PER_ACK_TARGET_US = 150.0  # serve's CPU per acknowledged webhook at 32 connections
SQLITE_ONE_CONNECTION_CPU_TARGET_US = 400.0  # serve's CPU per webhook, SQLite, one connection
RSS_FLAT_TARGET = 0.10  # ± relative change between the two marks
TARGET_CONNECTIONS = 32


@dataclass(frozen=True, slots=True)
class LoadResult:
    """One load phase against one server: throughput, ack latency, and the CPU the server process used."""

    server: str  # "bare" or a backend name
    connections: int
    requests: int
    seconds: float
    socket_errors: int
    status_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server_cpu: float  # cores (CPU seconds / wall seconds) used by the server process itself

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        """CPU the server spent per request: unlike req/s, barely moved by other processes on the machine."""
        return self.server_cpu * self.seconds / self.requests * 1e6 if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class ReplyResult:
    """The reply path: webhook posted → sendText at the fake Evolution, minus the fake model's fixed delay."""

    probes: int
    delivered: int
    model_delay_ms: float
    overhead_p50_ms: float
    overhead_p95_ms: float
    overhead_p99_ms: float
    ack_p50_ms: float  # posted → HTTP 200 (the message is committed)
    to_model_p50_ms: float  # posted → the model call arrives (ack, wake-up, claim, history read)
    after_model_p50_ms: float  # model answered → sendText arrives (pause re-check, attempt record, send)


@dataclass(frozen=True, slots=True)
class MemoryResult:
    """RSS of ``serve`` at two database sizes, and its peak over the whole run."""

    first_messages: int
    first_rss_mib: float
    last_messages: int
    last_rss_mib: float
    peak_mib: float
    # (messages, RSS MiB) after each fill step: tells steady growth from a plateau
    trajectory: tuple[tuple[int, float], ...] = ()

    @property
    def change(self) -> float:
        return self.last_rss_mib / self.first_rss_mib - 1 if self.first_rss_mib else 0.0


@dataclass(slots=True)
class BackendResult:
    """Everything measured on one database backend (bare-handler phases paired with it included)."""

    backend: str
    loads: list[LoadResult] = field(default_factory=list)
    reply: ReplyResult | None = None
    memory: MemoryResult | None = None
    actions: dict[str, int] = field(default_factory=dict)
    reply_jobs: dict[str, int] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    profile: str | None = None

    def load(self, server: str, connections: int) -> LoadResult | None:
        return next((r for r in self.loads if r.server == server and r.connections == connections), None)

    def ratio(self, connections: int) -> float | None:
        """Req/s of the backend ÷ req/s of the bare handler measured right before it."""
        ours = self.load(self.backend, connections)
        return self.ratio_of(ours) if ours else None

    def ratio_of(self, load: LoadResult) -> float | None:
        bare = self.load("bare", load.connections)
        return load.rps / bare.rps if bare and bare.rps else None


@dataclass(frozen=True, slots=True)
class Check:
    target: str
    figure: str
    passed: bool


def checks(results: list[BackendResult]) -> list[Check]:
    """Each target of issue 13 (and issue 6's memory target) against the figures of this run."""
    found: list[Check] = []
    for result in results:
        name = result.backend
        ratio = result.ratio(TARGET_CONNECTIONS)
        wanted = {"sqlite": ("SQLite", SQLITE_RATIO_TARGET), "postgres": ("PostgreSQL", POSTGRES_RATIO_TARGET)}
        if name in wanted and ratio is not None:
            label, target = wanted[name]
            found.append(Check(f"{label} ingest >= {target:.0%} of bare req/s ({TARGET_CONNECTIONS} conns)",
                               f"{ratio:.0%}", ratio >= target))
        load = result.load(name, TARGET_CONNECTIONS)
        if load is not None:
            found.append(Check(f"{name}: p99 ack < {P99_TARGET_MS:g} ms at {TARGET_CONNECTIONS} connections",
                               f"{load.p99_ms:.1f} ms", load.p99_ms < P99_TARGET_MS))
            found.append(Check(f"{name}: CPU per acked webhook <= {CPU_PER_ACK_TARGET_US:g} µs ({TARGET_CONNECTIONS} "
                               "conns)", f"{load.cpu_us_per_request:,.0f} µs",
                               load.cpu_us_per_request <= CPU_PER_ACK_TARGET_US))
        single = result.load(name, 1)
        if name == "sqlite" and single is not None:
            found.append(Check(f"SQLite, one connection: CPU per webhook <= {SQLITE_ONE_CONNECTION_CPU_TARGET_US:g} µs",
                               f"{single.cpu_us_per_request:,.0f} µs",
                               single.cpu_us_per_request <= SQLITE_ONE_CONNECTION_CPU_TARGET_US))
        if result.reply is not None:
            reply = result.reply
            passed = reply.overhead_p50_ms < REPLY_OVERHEAD_TARGET_MS and reply.delivered == reply.probes
            lost = "" if reply.delivered == reply.probes else f", {reply.probes - reply.delivered} not delivered"
            found.append(Check(f"{name}: reply-path overhead p50 < {REPLY_OVERHEAD_TARGET_MS:g} ms",
                               f"{reply.overhead_p50_ms:.1f} ms{lost}", passed))
        if result.memory is not None:
            memory = result.memory
            found.append(Check(
                f"{name}: RSS flat ±{RSS_FLAT_TARGET:.0%} from {memory.first_messages:,} "
                f"to {memory.last_messages:,} msgs",
                f"{memory.change:+.1%}", abs(memory.change) <= RSS_FLAT_TARGET))
    return found


def _ms(value: float) -> str:
    return f"{value:8.2f}"


def floor_lines(floors: Floors, results: list[BackendResult]) -> list[str]:
    """The machine's floors beside the targets they bound: the bare handler's CPU (in this run's paired phases) and
    durable commits no ``serve`` can do without."""
    lines = ["", "What this machine allows (measured in this run; no server can go below these):", *floors.lines()]
    busy, single = _bare_cpu(results, TARGET_CONNECTIONS), _bare_cpu(results, 1)
    if busy:
        spread = f"{min(busy):,.0f}" + (f"-{max(busy):,.0f}" if len(busy) > 1 else "")
        lines.append(f"  the bare handler's own CPU per request at {TARGET_CONNECTIONS} connections: {spread} µs "
                     f"(target for serve: <= {CPU_PER_ACK_TARGET_US:g} µs)")
    if single:
        least = min(single) + floors.commit_cpu_us
        lines.append(f"  at one connection: {min(single):,.0f} µs (bare) + {floors.commit_cpu_us:,.0f} µs (one commit) "
                     f"= {least:,.0f} µs at least per webhook (target: <= {SQLITE_ONE_CONNECTION_CPU_TARGET_US:g} µs)")
    lines.append(f"  a reply waits for two commits (the webhook's, and its attempt's before the send): "
                 f"{2 * floors.idle_commit_p50_us / 1000:.1f} ms at idle of the {REPLY_OVERHEAD_TARGET_MS:g} ms "
                 "target, before any HTTP")
    return lines


def _bare_cpu(results: list[BackendResult], connections: int) -> list[float]:
    """The bare handler's CPU per request in each of the run's paired phases at ``connections``."""
    return [load.cpu_us_per_request for result in results if (load := result.load("bare", connections))]


def render(header: list[str], results: list[BackendResult], floors: Floors | None = None) -> str:
    """The report as printed at the end of a run."""
    lines = [*header, "", "Webhook ingest: the 200 is sent after the batch holding the message is committed.",
             "  server         conns      req/s   p50 ms   p95 ms   p99 ms   errors  server CPU   CPU/req"
             "  ratio to bare"]
    for result in results:
        for load in result.loads:
            ratio = result.ratio_of(load) if load.server != "bare" else None
            lines.append(
                f"  {load.server:<13} {load.connections:>5} {load.rps:>10,.0f} {_ms(load.p50_ms)} {_ms(load.p95_ms)} "
                f"{_ms(load.p99_ms)} {load.socket_errors + load.status_errors:>8}  {load.server_cpu:>5.2f} cores "
                f"{load.cpu_us_per_request:>6,.0f} µs" + (f"  {ratio:>9.0%}" if ratio is not None else ""))
    replies = [r for r in results if r.reply]
    if replies:
        delay = replies[0].reply.model_delay_ms  # type: ignore[union-attr]
        lines += ["", f"Reply path: webhook posted -> sendText at Evolution, minus the fake model's {delay:g} ms."]
        for result in replies:
            r = result.reply
            assert r is not None
            lines.append(
                f"  {result.backend:<9} overhead p50 {r.overhead_p50_ms:.2f} ms  p95 {r.overhead_p95_ms:.2f} ms  "
                f"p99 {r.overhead_p99_ms:.2f} ms  ({r.delivered}/{r.probes} delivered; p50 of its parts: "
                f"ack {r.ack_p50_ms:.2f}, posted->model {r.to_model_p50_ms:.2f}, model->sendText "
                f"{r.after_model_p50_ms:.2f} ms)")
    memories = [r for r in results if r.memory]
    if memories:
        lines += ["", "Memory of `serve` (RSS; peak is VmHWM over the whole run)."]
        for result in memories:
            m = result.memory
            assert m is not None
            lines.append(f"  {result.backend:<9} {m.first_rss_mib:.1f} MiB at {m.first_messages:,} messages -> "
                         f"{m.last_rss_mib:.1f} MiB at {m.last_messages:,} messages ({m.change:+.1%}); "
                         f"peak {m.peak_mib:.1f} MiB")
            if m.trajectory:
                steps = ", ".join(f"{count / 1000:.0f}k {rss:.0f}" for count, rss in m.trajectory)
                lines.append(f"  {'':<9} along the way (messages, MiB): {steps}")
    lines += ["", "What was stored (messages by action; reply jobs by state) and what serve logged."]
    for result in results:
        actions = ", ".join(f"{k} {v:,}" for k, v in result.actions.items()) or "-"
        jobs = ", ".join(f"{k} {v:,}" for k, v in result.reply_jobs.items()) or "-"
        problems = ", ".join(f"{k} x{v}" for k, v in list(result.problems.items())[:6]) or "no warnings or errors"
        lines += [f"  {result.backend:<9} messages: {actions}", f"  {'':<9} reply jobs: {jobs}",
                  f"  {'':<9} log: {problems}"]
    for result in results:
        if result.profile:
            lines += ["", f"Profile of serve under {TARGET_CONNECTIONS} connections ({result.backend}):",
                      result.profile]
    if floors is not None:
        lines += floor_lines(floors, results)
    lines += ["", "Targets (issue 13; the memory target is issue 6's)"]
    lines += [f"  {'PASS' if c.passed else 'MISS'}  {c.target:<62} {c.figure}" for c in checks(results)]
    return "\n".join(lines)
