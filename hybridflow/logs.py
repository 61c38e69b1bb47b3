"""Structured logging: one event per thing that happened, JSON lines in production, readable on a terminal."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Hashable
from typing import Any

import structlog

SECRET_FIELDS = {"api_key", "apikey", "secret", "token", "authorization", "password", "jwt_key", "secret_key"}


def redact(value: Any) -> Any:
    """A copy of a JSON value with every secret-looking field replaced."""
    if isinstance(value, dict):
        return {k: "[redacted]" if isinstance(k, str) and k.lower() in SECRET_FIELDS and v is not None
                else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def redact_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a field that holds a secret reach a log line."""
    for key in list(event_dict):
        if key.lower() in SECRET_FIELDS and event_dict[key] is not None:
            event_dict[key] = "[redacted]"
    return event_dict


class _StandardStream:
    """``sys.stdout``/``sys.stderr`` looked up at each write, so a replaced (or closed and restored) stream is
    never written to after it is gone."""

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()

    def isatty(self) -> bool:
        return getattr(sys, self.name).isatty()


class Throttle:
    """At most one log line per key and ``interval`` seconds: a misconfiguration that fails every webhook is
    reported, not repeated thousands of times. ``allow`` also says how many were held back since the last one."""

    def __init__(self, interval: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._next: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None when this line must be held back; else the number of lines held back before it."""
        now = self.clock()
        if now < self._next.get(key, 0.0):
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._next) > 10_000:  # hostile callers inventing instance names: forget, do not grow
            self._next.clear()
            self._held.clear()
        self._next[key] = now + self.interval
        return self._held.pop(key, 0)


def _warning_to_log(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                    file: Any = None, line: str | None = None) -> None:
    """Python warnings (a library's deprecation, PyJWT's short-key warning) as structured log lines."""
    structlog.get_logger("hybridflow.python").warning(
        "python.warning", category=category.__name__, message=str(message), where=f"{filename}:{lineno}")


def configure_logging(log_format: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up structlog; ``auto`` means JSON when the stream is not a terminal."""
    if stream is None or stream is sys.stderr:
        stream = _StandardStream("stderr")
    elif stream is sys.stdout:
        stream = _StandardStream("stdout")
    if log_format == "auto":
        log_format = "console" if stream.isatty() else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.format_exc_info if log_format == "json" else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    warnings.showwarning = _warning_to_log
