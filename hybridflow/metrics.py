"""Prometheus metrics of one `Service`: its counters, the reply queue depth and latency, and the process' own.

Each `Metrics` has its own registry (never prometheus_client's global one), so several services in one process,
as tests build them, count apart. prometheus_client writes the exposition format and escapes label values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)  # seconds, webhook received -> reply sent
CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The Content-Type of `Metrics.render`'s text, charset included."""

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics"]


class Metrics:
    """What this service has seen since it started, plus the process' CPU, memory, open files and GC."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self._webhooks = Counter("hybridflow_webhooks", "Webhooks answered, by action and reason.",
                                 ["action", "reason"], registry=self.registry)
        self._replies = Counter("hybridflow_replies", "Reply jobs finished by this process, by status.",
                                ["status"], registry=self.registry)
        self._queue_depth = Gauge("hybridflow_reply_queue_depth", "Reply jobs waiting or in progress, by status.",
                                  ["status"], registry=self.registry)
        self._latency = Histogram("hybridflow_reply_latency_seconds", "Webhook received to reply sent.",
                                  buckets=LATENCY_BUCKETS, registry=self.registry)
        self._tokens = Counter("hybridflow_llm_tokens", "Model tokens (prompt + answer, as Ollama counts them) of "
                               "the texts this process generated, by tenant.", ["tenant"], registry=self.registry)
        self._uncounted = Counter("hybridflow_llm_uncounted_answers", "Answers Ollama gave without a token count "
                                  "(unknown, not zero), by tenant.", ["tenant"], registry=self.registry)
        self._tokens_today = Gauge("hybridflow_tokens_today", "Model tokens a tenant used since its local midnight "
                                   "(what its daily budget counts), all processes together.", ["tenant"],
                                   registry=self.registry)
        self._database_size = Gauge("hybridflow_database_size_bytes", "Size of the database on disk (SQLite: the "
                                    "file and its -wal; PostgreSQL: pg_database_size), read at each scrape.",
                                    registry=self.registry)
        self._retained = Counter("hybridflow_retention_rows", "Rows cleared by retention in this process, by what was "
                                 "done (raw_cleared, messages_deleted, jobs_deleted, events_deleted, "
                                 "tombstones_pruned).", ["kind"], registry=self.registry)
        for kind in ("raw_cleared", "messages_deleted", "jobs_deleted", "events_deleted", "tombstones_pruned"):
            self._retained.labels(kind=kind)  # every kind reads 0 before the first pass
        self._depth_statuses: set[str] = set()
        self._webhook_children: dict[tuple[str, str | None], Any] = {}

    def webhook(self, action: str, reason: str | None = None) -> None:
        """Count one answered webhook under its action and reason (empty when the action needs none)."""
        key = (action, reason)
        child = self._webhook_children.get(key)
        if child is None:  # labels() costs more than the count: each (action, reason) is looked up once
            child = self._webhooks.labels(action=action, reason=(reason or "")[:60])
            if len(self._webhook_children) < 1_000:
                self._webhook_children[key] = child
        child.inc()

    def reply(self, status: str, latency: float | None = None) -> None:
        """Count one reply job outcome; ``latency`` (seconds, webhook received to sent) goes to the histogram."""
        self._replies.labels(status=status).inc()
        if latency is not None:
            self._latency.observe(latency)

    def tokens(self, tenant: str, count: int | None) -> None:
        """Count the tokens of one generated answer; None (Ollama gave no count) is counted as uncounted."""
        if count is None:
            self._uncounted.labels(tenant=tenant).inc()
        else:
            self._tokens.labels(tenant=tenant).inc(count)

    def retained(self, counts: Mapping[str, int]) -> None:
        """Count the rows one retention pass cleared, by kind."""
        for kind, count in counts.items():
            if count:
                self._retained.labels(kind=kind).inc(count)

    def render(self, queue_depth: Mapping[str, int], tokens_today: Mapping[str, int] | None = None, *,
               database_size: int | None = None) -> str:
        """The exposition text, with the queue depth gauge set from ``queue_depth`` at this moment, and each
        tenant's tokens of today from ``tokens_today``.

        A status reported once and missing now reads 0 rather than vanishing, so a graph or an alert on it sees
        the queue empty instead of a gap.
        """
        for status in self._depth_statuses - queue_depth.keys():
            self._queue_depth.labels(status=status).set(0)
        for status, count in queue_depth.items():
            self._queue_depth.labels(status=status).set(count)
        self._depth_statuses.update(queue_depth)
        if database_size is not None:
            self._database_size.set(database_size)
        for tenant, used in (tokens_today or {}).items():
            self._tokens_today.labels(tenant=tenant).set(used)
        return generate_latest(self.registry).decode("utf-8")
