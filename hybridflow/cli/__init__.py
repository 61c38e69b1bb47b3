"""The ``hybridflow`` command: Typer commands that parse flags, call the service, and print with rich.

The shared app and helpers are in ``hybridflow.cli.app``; each module here adds its commands to it.
"""

from __future__ import annotations

from hybridflow.cli import audience, ops, sessions, tenants
from hybridflow.cli import data  # noqa: F401  (its commands: `backup` after ops' `migrate`, `sessions export`)
from hybridflow.cli.app import app

tenants.app.add_typer(audience.ignore_app, name="ignore")
tenants.app.add_typer(audience.allow_app, name="allow")
app.add_typer(tenants.app, name="tenants")
app.add_typer(sessions.app, name="sessions")
app.add_typer(ops.keys_app, name="keys")


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
