"""``hybridflow tenants``: one tenant per Evolution instance."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hybridflow.cli.app import confirm, fail, human_seconds, out, print_json, run, settings_of, warn
from hybridflow.config import parse_duration
from hybridflow.service import Service, TenantChanges
from hybridflow.service.tenants import TenantConfig

app = typer.Typer(help="Add, list, show, update and remove tenants (one per Evolution instance).",
                  no_args_is_help=True)


def _duration(value: str | None, name: str) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise fail(f"invalid value for {name}: {exc}", 2) from None


def _prompt(prompt: str | None, prompt_file: Path | None) -> str | None:
    if prompt is not None and prompt_file is not None:
        raise fail("give --prompt or --prompt-file, not both", 2)
    if prompt_file is not None:
        try:
            return prompt_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise fail(f"cannot read --prompt-file: {exc}", 2) from None
    return prompt


def _changes(prompt: str | None, prompt_file: Path | None, evolution_url: str | None, api_key: str | None,
             model: str | None, resume_after: str | None, debounce: str | None, webhook_secret: str | None,
             jwt_key: str | None, api_version: str | None, allow_groups: bool | None, send_presence: bool | None,
             mark_read: bool | None) -> TenantChanges:
    if evolution_url is not None and not evolution_url.startswith(("http://", "https://")):
        raise fail(f"--evolution-url must start with http:// or https://, got {evolution_url!r}", 2)
    return TenantChanges(
        prompt=_prompt(prompt, prompt_file), evolution_url=evolution_url.rstrip("/") if evolution_url else None,
        api_key=api_key, model=model, resume_after=_duration(resume_after, "--resume-after"),
        debounce=_duration(debounce, "--debounce"), webhook_secret=webhook_secret, jwt_key=jwt_key,
        api_version=api_version, allow_groups=allow_groups, send_presence=send_presence, mark_read=mark_read)


PROMPT = typer.Option(None, "--prompt", help="The system prompt: who the assistant is and how it answers.")
PROMPT_FILE = typer.Option(None, "--prompt-file", help="Read the prompt from this file.")
EVOLUTION_URL = typer.Option(None, "--evolution-url", help="Base URL of the Evolution API (default from config).")
API_KEY = typer.Option(None, "--api-key", help="The instance's Evolution API key (stored encrypted).")
MODEL = typer.Option(None, "--model", help="Ollama model for this tenant (default from config).")
RESUME_AFTER = typer.Option(None, "--resume-after", help="Auto-resume this long after the last human message, e.g. 2h.")
DEBOUNCE = typer.Option(None, "--debounce", help="Answer messages sent within this window together, e.g. 3s; 0 disables.")
WEBHOOK_SECRET = typer.Option(None, "--webhook-secret", help="Shared secret Evolution sends as Authorization: Bearer or X-Hybridflow-Token.")
JWT_KEY = typer.Option(None, "--jwt-key", help="Evolution 2.3 jwt_key: verify webhooks as HS256 JWTs signed with it.")
API_VERSION = typer.Option(None, "--api-version", help="v2 (default) or v1 for old Evolution servers.")
GROUPS = typer.Option(None, "--allow-groups/--no-groups", help="Also answer in group chats (off by default).")
PRESENCE = typer.Option(None, "--typing/--no-typing", help="Show 'typing…' while the model answers.")
MARK_READ = typer.Option(None, "--mark-read/--no-mark-read", help="Mark the customer's message as read.")


def _show(tenant: TenantConfig) -> None:
    table = Table(show_header=False, box=None)
    for key, value in tenant.public().items():
        if key in ("resume_after", "debounce"):
            value = human_seconds(value)
        table.add_row(f"[bold]{key}[/bold]", str(value))
    out.print(table)


def _warn_gaps(tenant: TenantConfig) -> None:
    for gap in tenant.gaps():
        warn(gap)


@app.command("add")
def add(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name (the 'instance' field of its webhooks)."),
    prompt: str | None = PROMPT, prompt_file: Path | None = PROMPT_FILE, evolution_url: str | None = EVOLUTION_URL,
    api_key: str | None = API_KEY, model: str | None = MODEL, resume_after: str | None = RESUME_AFTER,
    debounce: str | None = DEBOUNCE, webhook_secret: str | None = WEBHOOK_SECRET, jwt_key: str | None = JWT_KEY,
    api_version: str | None = API_VERSION, allow_groups: bool | None = GROUPS, typing_: bool | None = PRESENCE,
    mark_read: bool | None = MARK_READ,
    update: bool = typer.Option(False, "--update", help="Update the tenant if it already exists."),
    as_json: bool = typer.Option(False, "--json", help="Print the tenant as JSON."),
) -> None:
    """Add a tenant for an Evolution instance. Fails if it exists, unless --update."""
    changes = _changes(prompt, prompt_file, evolution_url, api_key, model, resume_after, debounce, webhook_secret,
                       jwt_key, api_version, allow_groups, typing_, mark_read)
    saved = run(ctx, lambda s: s.save_tenant(instance, changes, update=update))
    tenant = saved.tenant
    if as_json:
        print_json(tenant.public() | ({"restored": saved.restored} if saved.restored is not None else {}))
    else:
        out.print(f"[green]✓[/green] tenant [bold]{escape(tenant.instance)}[/bold] saved")
        if saved.restored is not None:
            out.print(f"its kept history is back: {saved.restored['sessions']} chats, "
                      f"{saved.restored['messages']} messages (settings: the options given now, defaults for the rest)")
        _show(tenant)
    _warn_gaps(tenant)


@app.command("update")
def update(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    prompt: str | None = PROMPT, prompt_file: Path | None = PROMPT_FILE, evolution_url: str | None = EVOLUTION_URL,
    api_key: str | None = API_KEY, model: str | None = MODEL, resume_after: str | None = RESUME_AFTER,
    debounce: str | None = DEBOUNCE, webhook_secret: str | None = WEBHOOK_SECRET, jwt_key: str | None = JWT_KEY,
    api_version: str | None = API_VERSION, allow_groups: bool | None = GROUPS, typing_: bool | None = PRESENCE,
    mark_read: bool | None = MARK_READ,
    as_json: bool = typer.Option(False, "--json", help="Print the tenant as JSON."),
) -> None:
    """Change some settings of an existing tenant (an empty string clears a secret)."""
    changes = _changes(prompt, prompt_file, evolution_url, api_key, model, resume_after, debounce, webhook_secret,
                       jwt_key, api_version, allow_groups, typing_, mark_read)
    tenant = run(ctx, lambda s: s.update_tenant(instance, changes))
    if as_json:
        print_json(tenant.public())
    else:
        out.print(f"[green]✓[/green] tenant [bold]{escape(tenant.instance)}[/bold] updated")
        _show(tenant)
    _warn_gaps(tenant)


async def _tenants_and_database(service: Service) -> tuple[list[TenantConfig], str]:
    return await service.list_tenants(), service.store.describe()


@app.command("list")
def list_(ctx: typer.Context, as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """List the tenants with their effective settings (secrets are never shown)."""
    tenants, database = run(ctx, _tenants_and_database, readonly=True)
    if as_json:
        print_json([t.public() for t in tenants])
        return
    if not tenants:
        out.print(f"No tenants yet in {escape(database)}. Add one: hybridflow tenants add INSTANCE --prompt '...'")
        return
    table = Table("instance", "model", "resume after", "debounce", "evolution url", "api key", "webhook auth")
    for t in tenants:
        p = t.public()
        table.add_row(t.instance, t.model, human_seconds(t.resume_after), human_seconds(t.debounce), t.evolution_url,
                      p["api_key"], p["webhook_auth"])
    out.print(table)


@app.command("show")
def show(ctx: typer.Context, instance: str = typer.Argument(..., help="The Evolution instance name."),
         as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts.")) -> None:
    """Show one tenant, its prompt included."""
    tenant = run(ctx, lambda s: s.tenant(instance), readonly=True)
    if as_json:
        print_json(tenant.public())
    else:
        _show(tenant)


@app.command("remove")
def remove(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    yes: bool = typer.Option(False, "--yes", help="Confirm the removal."),
    keep_history: bool = typer.Option(False, "--keep-history",
                                      help="Keep its sessions and messages; adding the instance again restores them."),
    delete_history: bool = typer.Option(False, "--delete-history",
                                        help="Delete its sessions, messages and replies with it."),
) -> None:
    """Remove a tenant. Needs --yes (or asks, on a terminal); with history also --keep-history or --delete-history."""
    if keep_history and delete_history:
        raise fail("give --keep-history or --delete-history, not both", 2)
    if not yes and not confirm(f"Remove tenant {instance!r}?"):
        raise fail(f"removing tenant {instance!r} needs --yes", 2)
    history = "keep" if keep_history else "delete" if delete_history else None
    counts = run(ctx, lambda s: s.remove_tenant(instance, history=history))
    kept = " (history kept)" if keep_history else ""
    out.print(f"[green]✓[/green] tenant [bold]{instance}[/bold] removed{kept} "
              f"({counts['messages']} messages, {counts['sessions']} sessions deleted)")
