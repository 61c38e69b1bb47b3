"""In-process counters and a latency histogram, rendered in Prometheus' text format for ``/metrics``."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)  # seconds, webhook received -> reply sent


@dataclass
class Metrics:
    """What this process has seen since it started."""

    webhooks: Counter[str] = field(default_factory=Counter)
    replies: Counter[str] = field(default_factory=Counter)
    latency_buckets: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    latency_sum: float = 0.0
    latency_count: int = 0

    def webhook(self, action: str) -> None:
        self.webhooks[action] += 1

    def reply(self, status: str, latency: float | None = None) -> None:
        self.replies[status] += 1
        if latency is not None:
            self.latency_sum += latency
            self.latency_count += 1
            for i, bound in enumerate(LATENCY_BUCKETS):
                if latency <= bound:
                    self.latency_buckets[i] += 1

    def render(self, queue_depth: dict[str, int]) -> str:
        """The Prometheus exposition text."""
        lines = ["# HELP hybridflow_webhooks_total Webhooks answered, by action.",
                 "# TYPE hybridflow_webhooks_total counter"]
        lines += [f'hybridflow_webhooks_total{{action="{a}"}} {n}' for a, n in sorted(self.webhooks.items())]
        lines += ["# HELP hybridflow_replies_total Reply jobs finished by this process, by status.",
                  "# TYPE hybridflow_replies_total counter"]
        lines += [f'hybridflow_replies_total{{status="{s}"}} {n}' for s, n in sorted(self.replies.items())]
        lines += ["# HELP hybridflow_reply_queue_depth Reply jobs waiting or in progress, by status.",
                  "# TYPE hybridflow_reply_queue_depth gauge"]
        lines += [f'hybridflow_reply_queue_depth{{status="{s}"}} {n}' for s, n in sorted(queue_depth.items())]
        lines += ["# HELP hybridflow_reply_latency_seconds Webhook received to reply sent.",
                  "# TYPE hybridflow_reply_latency_seconds histogram"]
        lines += [f'hybridflow_reply_latency_seconds_bucket{{le="{b:g}"}} {n}'
                  for b, n in zip(LATENCY_BUCKETS, self.latency_buckets, strict=True)]
        lines += [f'hybridflow_reply_latency_seconds_bucket{{le="+Inf"}} {self.latency_count}',
                  f"hybridflow_reply_latency_seconds_sum {self.latency_sum:.6f}",
                  f"hybridflow_reply_latency_seconds_count {self.latency_count}"]
        return "\n".join(lines) + "\n"
