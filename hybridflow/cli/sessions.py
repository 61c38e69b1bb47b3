"""``hybridflow sessions``: see and control the AI's state per chat."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import typer
from rich.table import Table

from hybridflow.cli.app import ago, err, fail, out, print_json, run
from hybridflow.config import parse_duration
from hybridflow.service.sessions import SessionDetail, SessionView

app = typer.Typer(help="List sessions, show their history, pause or resume the AI for a chat.", no_args_is_help=True)


def _state(view: SessionView) -> str:
    if not view.is_paused:
        return "[green]active[/green]"
    until = f"resumes {ago(view.resumes_at)}" if view.resumes_at else "until resumed by hand"
    return f"[yellow]paused[/yellow] ({view.pause_reason}, {until})"


@app.command("list")
def list_(
    ctx: typer.Context,
    instance: str | None = typer.Option(None, "--instance", "-i", help="Only this Evolution instance."),
    paused: bool = typer.Option(False, "--paused", help="Only paused sessions."),
    since: str | None = typer.Option(None, "--since", help="Only sessions active within this long, e.g. 24h."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, help="Rows per page."),
    page: int = typer.Option(1, "--page", min=1, help="Page number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """List chats, most recently active first."""
    cutoff = None
    if since is not None:
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise fail(f"invalid value for --since: {exc}", 2) from None
    views, total = run(ctx, lambda s: s.list_sessions(instance=instance, paused=True if paused else None,
                                                      since=cutoff, limit=limit, offset=(page - 1) * limit),
                       readonly=True)
    if as_json:
        print_json({"total": total, "page": page, "limit": limit, "sessions": [v.as_dict() for v in views]})
        return
    if not views:
        filtered = instance is not None or paused or since is not None or page > 1
        out.print("No sessions match." if filtered else "No sessions yet: they appear with the first webhook.")
        return
    table = Table("instance")
    table.add_column("chat", no_wrap=True)  # ids are copied into other commands: never cut them
    for header in ("customer", "state", "reason", "resumes in", "last message"):
        table.add_column(header)
    for v in views:
        resumes = "-" if not v.is_paused else (ago(v.resumes_at).removeprefix("in ") if v.resumes_at else "manual")
        table.add_row(v.instance, v.chat_id, v.push_name or "", "paused" if v.is_paused else "active",
                      v.pause_reason or "", resumes, ago(v.last_message_at))
    out.print(table)
    pages = (total + limit - 1) // limit
    out.print(f"{len(views)} of {total} sessions (page {page} of {pages})")


def _print_detail(d: SessionDetail) -> None:
    v = d.session
    out.print(f"[bold]{v.instance}[/bold] · {v.chat_id}" + (f" · {v.push_name}" if v.push_name else ""))
    out.print(f"state: {_state(v)}")
    out.print(f"last human message: {ago(v.last_human_at)} · last message: {ago(v.last_message_at)}")
    if d.events:
        out.print("\n[bold]pause / resume history[/bold]")
        for e in d.events:
            out.print(f"  {e.at:%Y-%m-%d %H:%M:%S} {e.change:8} {e.reason:14} by {e.actor}")
    if d.messages:
        out.print("\n[bold]transcript[/bold]")
        for m in d.messages:
            text = m.text.replace("\n", " ⏎ ") if m.text is not None else f"<{m.kind}>"
            out.print(f"  {m.received_at:%H:%M:%S} {m.direction:>8}: {text}  [dim]({m.action})[/dim]")
    if d.replies:
        out.print("\n[bold]replies[/bold]")
        for r in d.replies:
            error = f" — {r.last_error}" if r.last_error else ""
            out.print(f"  #{r.id} {r.status} (attempts {r.attempts}){error}")


@app.command("show")
def show(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    chat: str = typer.Argument(..., help="The chat: a full JID or a phone number."),
    limit: int = typer.Option(20, "--limit", min=1, help="How many messages, events and replies to show."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Show one chat: its state, pause/resume history, transcript and replies."""
    detail = run(ctx, lambda s: s.session_detail(instance, chat, limit=limit), readonly=True)
    if as_json:
        print_json(detail.as_dict())
    else:
        _print_detail(detail)


@app.command("pause")
def pause(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    chat: str = typer.Argument(..., help="The chat: a full JID or a phone number."),
    for_: str | None = typer.Option(None, "--for", help="Resume automatically after this long, e.g. 30m. "
                                    "Without it the chat stays paused until resumed by hand."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Pause the AI for a chat now (works before the chat's first message too)."""
    try:
        duration = parse_duration(for_) if for_ is not None else None
    except ValueError as exc:
        raise fail(f"invalid value for --for: {exc}", 2) from None
    view = run(ctx, lambda s: s.pause(instance, chat, duration=duration, actor="cli"))
    if as_json:
        print_json(view.as_dict())
    else:
        out.print(f"[yellow]⏸[/yellow] {view.instance} · {view.chat_id}: {_state(view)}")
        if view.note:
            err.print(f"note: {view.note}", markup=False)


@app.command("resume")
def resume(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    chat: str = typer.Argument(..., help="The chat: a full JID or a phone number."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Resume the AI for a chat now."""
    view = run(ctx, lambda s: s.resume(instance, chat, actor="cli"))
    if as_json:
        print_json(view.as_dict())
    else:
        out.print(f"[green]▶[/green] {view.instance} · {view.chat_id}: {_state(view)}")
        if view.note:
            err.print(f"note: {view.note}", markup=False)
