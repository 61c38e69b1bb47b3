"""The shared Typer app of the ``hybridflow`` command, its global options, and what every command uses to run the
service and print: one way to open the service, one way to turn a ``HybridFlowError`` into one line on stderr and
an exit code (0 success, 1 an operation failed, 2 a usage or configuration error).
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from hybridflow import __version__
from hybridflow.config import Settings, load_settings
from hybridflow.errors import HybridFlowError
from hybridflow.logs import configure_logging
from hybridflow.service import Service

T = TypeVar("T")

app = typer.Typer(
    name="hybridflow",
    help="HybridFlow answers your WhatsApp customers with an AI model through the Evolution API, "
    "and goes silent the moment you type a reply yourself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


@dataclass
class State:
    """Global options, shared by every command."""

    config: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one line to stderr and return the exit to raise."""
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)  # a message's own [brackets] are text
    return typer.Exit(code)


def warn(message: str) -> None:
    """One warning line on stderr: the command did what was asked, but something needs the user's attention."""
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True)


def interactive() -> bool:
    """Whether a person is at the terminal (stdin and stdout are both terminals) to answer a question."""
    return sys.stdin.isatty() and sys.stdout.isatty()


def confirm(question: str) -> bool:
    """Ask on a terminal; without one, the answer is no (the command then asks for --yes)."""
    return interactive() and typer.confirm(question, default=False)


def settings_of(ctx: typer.Context, **overrides: Any) -> Settings:
    state: State = ctx.ensure_object(State)
    try:
        return load_settings(state.config, overrides={**state.overrides, **overrides})
    except HybridFlowError as exc:
        raise fail(exc.message, exc.exit_code) from None


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end; a ``HybridFlowError`` becomes one line on stderr and its exit code."""
    try:
        return asyncio.run(main())
    except HybridFlowError as exc:
        raise fail(exc.message, exc.exit_code) from None


def run(ctx: typer.Context, action: Callable[[Service], Awaitable[T]], *, settings: Settings | None = None,
        create_schema: bool = True, readonly: bool = False, log_level: str | None = None) -> T:
    """Open the service (the same composition root as ``serve``), run ``action``, map errors to exit codes.

    ``readonly`` commands never create a database: run in the wrong directory, they say which one they looked for.
    Commands log warnings and errors only (to stderr), unless the settings ask for more detail than ``info``.
    """
    settings = settings or settings_of(ctx)
    configure_logging("console" if settings.log_format == "auto" else settings.log_format,
                      log_level or ("warning" if settings.log_level == "info" else settings.log_level),
                      stream=sys.stderr)

    async def main() -> T:
        async with Service.open(settings, create_schema=create_schema, create=not readonly) as service:
            return await action(service)

    return run_async(main)


def print_json(data: Any, *, line: bool = False) -> None:
    """Machine-readable output for scripts; ``line`` prints one compact JSON document per line (JSON lines)."""
    indent = None if line else 2
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


def ago(value: datetime | None, now: datetime | None = None) -> str:
    """'3m ago' / 'in 1h 20m' for humans."""
    if value is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds >= 0:
        return f"{human_seconds(seconds)} ago"
    return f"in {human_seconds(math.ceil(-seconds))}"  # "resumes in 30m" right after pausing for 30m


def human_seconds(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    return f"{hours // 24}d"


def _version(value: bool) -> None:
    if value:
        out.print(f"hybridflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", help="Path to hybridflow.toml (default: $HYBRIDFLOW_CONFIG, else ./hybridflow.toml)."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", help="sqlite:///path.db or postgresql://user:pass@host:port/db (overrides config)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """HybridFlow: WhatsApp AI replies that step aside when a human types."""
    ctx.obj = State(config=config, overrides={"database_url": database_url})
