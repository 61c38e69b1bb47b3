"""The shared Typer app of the ``hybridflow`` command, its global options, and what every command uses to run the
service and print: one way to open the service, one way to turn a ``HybridFlowError`` into one line on stderr and
an exit code (0 success, 1 an operation failed, 2 a usage or configuration error), and one way to show tables,
times and JSON.

Nothing here imports the service, the database or the HTTP clients at import time: ``--version`` and ``--help``
stay fast, and each command imports what it runs when it runs.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer
import typer.core
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hybridflow import __version__
from hybridflow.config import span  # noqa: F401  (the CLI's helpers: sessions and tenants use it from here)
from hybridflow.errors import HybridFlowError

if TYPE_CHECKING:
    from hybridflow.config import Settings
    from hybridflow.service import Service

T = TypeVar("T")


# --- help: real metavars -------------------------------------------------------------------------------------------


def _with_metavars(params: list[Any]) -> list[Any]:
    """Show what to type: an option's metavar (its name in capitals unless given), nothing after a flag (no
    ``<bool>``), and an argument's metavar without a ``<str>`` beside it."""
    for param in params:
        if isinstance(param, typer.core.TyperOption) and param.metavar is None:
            long = max(param.opts, key=len).lstrip("-")
            param.metavar = "" if param.is_flag else long.upper().replace("-", "_")
        elif isinstance(param, typer.core.TyperArgument):
            if param.metavar is None:
                param.metavar = param.name.upper()
            param.display_type_rich = lambda ctx: None  # the metavar says what it is
    return params


class Command(typer.core.TyperCommand):
    def get_params(self, ctx: Any) -> list[Any]:
        return _with_metavars(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    def get_params(self, ctx: Any) -> list[Any]:
        return _with_metavars(super().get_params(ctx))


class App(typer.Typer):
    """A Typer app whose commands and groups show real metavars in their help."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args: Any, cls: Any = Command, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls, **kwargs)


app = App(
    name="hybridflow",
    help="HybridFlow answers your WhatsApp customers with an AI model through the Evolution API, "
    "and goes silent the moment you type a reply yourself.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def json_option(help: str = "Print JSON for scripts.") -> Any:
    """The ``--json`` flag of a command (its shapes are in README.md, "Output for scripts")."""
    return typer.Option(False, "--json", help=help)


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
    from hybridflow.config import load_settings

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
    from hybridflow.logs import configure_logging
    from hybridflow.service import Service

    settings = settings or settings_of(ctx)
    configure_logging("console" if settings.log_format == "auto" else settings.log_format,
                      log_level or ("warning" if settings.log_level == "info" else settings.log_level),
                      stream=sys.stderr)

    async def main() -> T:
        async with Service.open(settings, create_schema=create_schema, create=not readonly) as service:
            return await action(service)

    return run_async(main)


# --- output --------------------------------------------------------------------------------------------------------


def print_json(data: Any, *, line: bool = False) -> None:
    """Machine-readable output for scripts; ``line`` prints one compact JSON document per line (JSON lines)."""
    indent = None if line else 2
    sys.stdout.write(json.dumps(data, indent=indent, ensure_ascii=False, default=str) + "\n")


# Wide enough for any value: piped output is read by scripts and pagers, never cut to a terminal's width.
PIPED_WIDTH = 100_000


def print_table(table: Table) -> None:
    """A table fitted to the terminal (see ``keep_whole``), or with every value in full when output is not one."""
    if not out.is_terminal:
        Console(file=out.file, width=PIPED_WIDTH, highlight=False, color_system=None).print(table)
        return
    needed = _fit(table, out.width)
    if needed <= out.width:
        out.print(table)
    else:  # the whole columns alone are wider than the terminal: let it wrap the lines rather than cut them
        Console(file=out.file, width=needed, highlight=False, force_terminal=True,
                color_system=out.color_system).print(table)  # type: ignore[arg-type]


def keep_whole(table: Table, header: str, values: list[str]) -> None:
    """A column that never shrinks (ids, instance names, numbers): as wide as its longest value."""
    table.add_column(header, no_wrap=True, overflow="fold")


def may_wrap(table: Table, header: str, *, ratio: int = 1) -> None:
    """A column that gives way when the terminal is narrow: its words wrap, a long URL folds (nothing is cut)."""
    table.add_column(header, overflow="fold", ratio=ratio)


_WORD = 10  # a wrapping column is at least this wide (or its longest word) when there is room


def _fit(table: Table, width: int) -> int:
    """Set the columns' widths for a terminal ``width`` wide; returns the width the table then needs.

    Whole (``no_wrap``) columns keep their longest value, their header wrapping at its words; the others share
    what is left by ratio, each at least its longest word (up to ``_WORD``) when there is room.
    """
    def texts(column: Any) -> list[str]:
        return [out.render_str(str(cell)).plain for cell in column.cells]

    def longest(items: list[str]) -> int:
        return max((len(line) for item in items for line in item.splitlines()), default=0)

    def longest_word(items: list[str]) -> int:
        return longest([word for item in items for word in item.split()])

    chrome = 3 * len(table.columns) + 1
    natural = [longest([*texts(c), str(c.header)]) for c in table.columns]
    if sum(natural) + chrome <= width:
        return sum(natural) + chrome
    whole = {i: max(longest(texts(c)), longest_word([str(c.header)])) for i, c in enumerate(table.columns)
             if c.no_wrap}
    wrap = [i for i in range(len(table.columns)) if i not in whole]
    left = width - chrome - sum(whole.values())
    floor = {i: min(_WORD, max(1, longest_word([*texts(table.columns[i]), str(table.columns[i].header)])))
             for i in wrap}
    if sum(floor.values()) > left:
        floor = {i: max(2, left * f // max(1, sum(floor.values()))) for i, f in floor.items()}
    widths = dict(whole) | floor
    spare = left - sum(floor.values())
    growing = [i for i in wrap if widths[i] < natural[i]]
    while spare > 0 and growing:  # hand out the rest by ratio, never past a column's natural width
        ratios = sum(table.columns[i].ratio or 1 for i in growing)
        share = {i: max(1, spare * (table.columns[i].ratio or 1) // ratios) for i in growing}
        for i in growing:
            give = min(share[i], natural[i] - widths[i], spare)
            widths[i] += give
            spare -= give
        growing = [i for i in growing if widths[i] < natural[i]]
    for i, column in enumerate(table.columns):
        column.width, column.no_wrap = widths[i], False  # fixed widths; whole values fit, headers wrap
    return sum(widths.values()) + chrome


# --- times: local, with the offset, and how far from now -----------------------------------------------------------


def local_zone() -> tzinfo:
    """The zone people read times in: ``$TZ`` when it names a zone, else the machine's (tenants have no zone yet)."""
    name = os.environ.get("TZ", "").removeprefix(":")
    if name:
        from zoneinfo import ZoneInfo

        try:
            return ZoneInfo(name)
        except (ValueError, OSError):  # a POSIX rule such as "UTC+3", or an unknown name: the machine knows
            pass
    return datetime.now().astimezone().tzinfo or UTC


def clock(value: datetime, zone: tzinfo | None = None, *, seconds: bool = False) -> str:
    """'2026-12-01 09:30 -03:00': the local time with its offset."""
    local = value.astimezone(zone or local_zone())
    offset = local.strftime("%z")  # -0300
    return f"{local:%Y-%m-%d %H:%M{':%S' if seconds else ''}} {offset[:3]}:{offset[3:5]}"


def relative(value: datetime | None, now: datetime | None = None) -> str:
    """'3 min ago' or 'in 1 h 12 min'."""
    if value is None:
        return "-"
    seconds = ((now or datetime.now(UTC)) - value).total_seconds()
    if seconds >= 0:
        return f"{span(seconds)} ago"
    return f"in {span(math.ceil(-seconds))}"  # "in 30 min" right after pausing for 30 min


def when(value: datetime | None, now: datetime | None = None, zone: tzinfo | None = None, *,
         seconds: bool = False) -> str:
    """'2026-12-01 09:30 -03:00 (in 1 h 12 min)'; '-' for no time."""
    if value is None:
        return "-"
    return f"{clock(value, zone, seconds=seconds)} ({relative(value, now)})"


ago = relative  # the former name


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


# --- the root command ----------------------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        out.print(f"hybridflow {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    ctx: typer.Context,
    config: Path | None = typer.Option(
        None, "--config", "-c", metavar="PATH",
        help="Path to hybridflow.toml (default: $HYBRIDFLOW_CONFIG, else ./hybridflow.toml)."
    ),
    database_url: str | None = typer.Option(
        None, "--database-url", metavar="URL",
        help="sqlite:///path.db or postgresql://user:pass@host:port/db (overrides config)."
    ),
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """HybridFlow: WhatsApp AI replies that step aside when a human types."""
    ctx.obj = State(config=config, overrides={"database_url": database_url})
