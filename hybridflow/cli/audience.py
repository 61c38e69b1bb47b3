"""``hybridflow tenants ignore|allow add|remove|list``: who the bot never answers, and pilot mode's only chats."""

from __future__ import annotations

import typer
from rich.markup import escape
from rich.table import Table

from hybridflow.cli.app import App, out, print_json, run

EXPLAIN = {
    "ignore": "Chats the bot never answers (family, friends, suppliers): their messages are stored, nothing pauses.",
    "allow": "Pilot mode: when the list is not empty, the bot answers only these chats (test with your own "
             "second phone first).",
}


def _app(rule: str) -> typer.Typer:
    app = App(help=EXPLAIN[rule], no_args_is_help=True)

    @app.command("add")
    def add(ctx: typer.Context, instance: str = typer.Argument(..., metavar="INSTANCE", help="The tenant."),
            numbers: list[str] = typer.Argument(..., metavar="NUMBER...",
                                                help="Numbers as people type them (+55 11 98765-4321) or chat ids.")
            ) -> None:
        """Add numbers to the list (a number stands for both forms of a Brazilian mobile)."""
        changed = run(ctx, lambda s: s.change_audience(instance, rule, numbers, add=True))
        out.print(f"{rule} list of {escape(instance)}: added {', '.join(changed) or 'nothing new'}")

    @app.command("remove")
    def remove(ctx: typer.Context, instance: str = typer.Argument(..., metavar="INSTANCE", help="The tenant."),
               numbers: list[str] = typer.Argument(..., metavar="NUMBER...", help="Numbers or chat ids to remove.")
               ) -> None:
        """Remove numbers from the list."""
        changed = run(ctx, lambda s: s.change_audience(instance, rule, numbers, add=False))
        out.print(f"{rule} list of {escape(instance)}: removed {', '.join(changed) or 'nothing (not on it)'}")

    @app.command("list")
    def list_(ctx: typer.Context, instance: str = typer.Argument(..., metavar="INSTANCE", help="The tenant."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
        """Show the list, each number with the chat ids it matches."""
        entries = run(ctx, lambda s: s.audience(instance, rule), readonly=True)
        if as_json:
            print_json({rule: [{"number": label, "chat_ids": ids} for label, ids in entries]})
            return
        if not entries:
            out.print(f"The {rule} list of {escape(instance)} is empty.")
            return
        table = Table("number", "chat ids")
        for label, ids in entries:
            table.add_row(label, "\n".join(ids))
        out.print(table)

    return app


ignore_app = _app("ignore")
allow_app = _app("allow")
