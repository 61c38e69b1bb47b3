"""Structured logging: one event per thing that happened, JSON lines in production, readable on a terminal."""

from __future__ import annotations

import logging
import sys
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
