"""Structured logging: one event per thing that happened, JSON lines in production, readable on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

SECRET_FIELDS = {"api_key", "apikey", "secret", "token", "authorization", "password", "jwt_key", "secret_key"}


def redact_secrets(_logger: Any, _name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Never let a field that holds a secret reach a log line."""
    for key in list(event_dict):
        if key.lower() in SECRET_FIELDS and event_dict[key] is not None:
            event_dict[key] = "[redacted]"
    return event_dict


def configure_logging(log_format: str = "auto", level: str = "info", stream: Any = None) -> None:
    """Set up structlog; ``auto`` means JSON when the stream is not a terminal."""
    stream = stream or sys.stderr
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
