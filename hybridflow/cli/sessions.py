"""``hybridflow sessions``: see and control the AI's state per chat."""

from __future__ import annotations

import math
import shlex
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from hybridflow.cli.app import (App, clock, confirm, err, fail, json_option, keep_whole, may_wrap, out, print_json,
                                print_table, relative, run, span, when)
from hybridflow.config import parse_duration

if TYPE_CHECKING:
    from hybridflow.service.sessions import SessionDetail, SessionView

app = App(help="List sessions, show or export their history, pause or resume the AI for a chat, retry a failed "
               "reply, forget a chat.",
          no_args_is_help=True)


def resumes(view: SessionView, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    """When a paused chat resumes: 'resumes 2026-12-01 09:30 -03:00 (in 1 h 12 min)'."""
    if view.resumes_at is None:
        return "until resumed by hand"
    if view.resumes_at <= (now or datetime.now(UTC)):
        return "resumes at the next sweep"
    return f"resumes {when(view.resumes_at, now, zone)}"


def _state(view: SessionView, now: datetime | None = None, zone: tzinfo | None = None) -> str:
    if not view.is_paused:
        return "[green]active[/green]"
    reasons = ", ".join(dict.fromkeys(p.reason for p in view.pauses)) or view.pause_reason
    return f"[yellow]paused[/yellow] ({reasons}) · {resumes(view, now, zone)}"


def pause_lines(view: SessionView, now: datetime, zone: tzinfo | None = None) -> list[str]:
    """Each reason the chat is paused for, by whom and until when."""
    lines = []
    for p in view.pauses:
        until = "until lifted" if p.until is None else f"until {when(p.until, now, zone)}"
        lines.append(f"  {p.reason:16} by {escape(p.actor)} since {clock(p.since, zone, seconds=True)} · {until}")
    return lines


def _resumes_in(view: SessionView, now: datetime) -> str:
    """The list's short form: '1 h 59 min', 'next sweep', 'manual', or '-' for an active chat."""
    if not view.is_paused:
        return "-"
    if view.resumes_at is None:
        return "manual"
    return "next sweep" if view.resumes_at <= now else span(math.ceil((view.resumes_at - now).total_seconds()))


def sessions_table(views: list[SessionView], now: datetime) -> Table:
    """Instances, chat ids and times stay whole at any width; the customer's name, the state and the reason wrap."""
    rows = [[v.instance, v.chat_id, v.push_name or "", "paused" if v.is_paused else "active", v.pause_reason or "",
             _resumes_in(v, now), relative(v.last_message_at, now)] for v in views]
    table = Table()
    for index, header in enumerate(("instance", "chat")):
        keep_whole(table, header, [row[index] for row in rows])
    may_wrap(table, "customer", ratio=2)
    may_wrap(table, "state")
    may_wrap(table, "reason")
    for index, header in ((5, "resumes in"), (6, "last message")):
        keep_whole(table, header, [row[index] for row in rows])
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


def _no_rows(instance: str | None, paused: bool, since: str | None, page: int, limit: int, total: int,
             state: str | None = None, search: str | None = None) -> str:
    """What an empty page says: past the end, no match for the filters as typed, or nothing stored yet."""
    if total and page > 1:
        pages = (total + limit - 1) // limit
        return (f"Page {page} is past the end: {total} sessions make {pages} page{'s' if pages != 1 else ''} "
                f"of {limit} (the last is --page {pages}).")
    filters = [f"--instance {shlex.quote(instance)}"] * (instance is not None) + ["--paused"] * paused
    filters += [f"--since {since}"] * (since is not None) + [f"--state {state}"] * (state is not None)
    filters += [f"--search {shlex.quote(search)}"] * (search is not None)
    if filters:
        return f"No sessions match {' '.join(filters)}."
    return "No sessions yet: they appear with the first webhook."


@app.command("list")
def list_(
    ctx: typer.Context,
    instance: str | None = typer.Option(None, "--instance", "-i", metavar="INSTANCE",
                                        help="Only this Evolution instance."),
    paused: bool = typer.Option(False, "--paused", help="Only paused sessions."),
    since: str | None = typer.Option(None, "--since", metavar="DURATION",
                                     help="Only sessions active within this long, e.g. 24h."),
    limit: int = typer.Option(50, "--limit", min=1, max=10000, metavar="N", help="Rows per page."),
    page: int = typer.Option(1, "--page", min=1, metavar="N", help="Page number."),
    every_kind: bool = typer.Option(False, "--all", help="Also groups, status broadcasts and newsletters."),
    state: str | None = typer.Option(None, "--state", metavar="STATE",
                                     help="Only chats that are paused, active, waiting (for a reply) or failed "
                                          "(a reply failed)."),
    search: str | None = typer.Option(None, "--search", metavar="TEXT",
                                      help="Only chats whose customer's name or number contains this."),
    as_json: bool = json_option(),
) -> None:
    """List chats with people, most recently active first (--all: groups and broadcasts too)."""
    from hybridflow.service.chat_list import ChatState

    try:
        chat_state = ChatState(state) if state is not None else None
    except ValueError:
        raise fail(f"invalid value for --state: {state!r} (give paused, active, waiting or failed)", 2) from None
    cutoff = None
    if since is not None:
        try:
            cutoff = datetime.now(UTC) - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise fail(f"invalid value for --since: {exc}", 2) from None
    views, total = run(ctx, lambda s: s.list_sessions(instance=instance, paused=True if paused else None,
                                                      since=cutoff, limit=limit, offset=(page - 1) * limit,
                                                      every_kind=every_kind, state=chat_state, search=search),
                       readonly=True)
    pages = (total + limit - 1) // limit
    if as_json:
        print_json({"sessions": [v.as_dict() for v in views], "total": total, "page": page, "pages": pages,
                    "limit": limit})
        return
    if not views:
        out.print(escape(_no_rows(instance, paused, since, page, limit, total, state, search)))
        return
    print_table(sessions_table(views, datetime.now(UTC)))
    out.print(f"{len(views)} of {total} sessions (page {page} of {pages})")


def detail_lines(d: SessionDetail, now: datetime, zone: tzinfo | None = None) -> list[str]:
    """``sessions show`` as lines of rich markup; every time local, with its offset (and how long ago)."""
    v = d.session
    name = f" · {escape(v.push_name)}" if v.push_name else ""
    lines = [f"[bold]{escape(v.instance)}[/bold] · {escape(v.chat_id)}{name}",
             f"state: {_state(v, now, zone)}",
             f"last human message: {when(v.last_human_at, now, zone)} · "
             f"last message: {when(v.last_message_at, now, zone)}"]
    if v.pauses:
        lines += ["\n[bold]paused for[/bold]", *pause_lines(v, now, zone)]
    if d.events:
        lines.append("\n[bold]pause / resume history[/bold]")
        for e in d.events:
            lines.append(f"  {clock(e.at, zone, seconds=True)} {e.change:8} {e.reason:14} by {escape(e.actor)}"
                         f"  [dim]({relative(e.at, now)})[/dim]")
    if d.messages:
        lines.append("\n[bold]transcript[/bold]")
        for m in d.messages:
            text = escape(m.text.replace("\n", " ⏎ ")) if m.text is not None else escape(f"<{m.kind}>")
            lines.append(f"  {clock(m.received_at, zone, seconds=True)} {m.direction:>8}: {text}  "
                         f"[dim]({m.action})[/dim]")
    if d.replies:
        lines.append("\n[bold]replies[/bold]")
        for r in d.replies:
            sent = f" · sent {when(r.sent_at, now, zone)}" if r.sent_at else ""
            error = f" — {escape(r.last_error)}" if r.last_error else ""
            kind = "" if r.kind == "reply" else f"{r.kind} "
            tokens = f" · {r.tokens} tokens" if r.tokens is not None else ""
            parts = f" · parts {r.parts_sent}/{r.parts} sent" if r.parts else ""
            lines.append(f"  #{r.id} {kind}{r.status} (attempts {r.attempts}) · queued {when(r.created_at, now, zone)}"
                         f"{sent}{tokens}{parts}{error}")
    return lines


def _print_detail(d: SessionDetail) -> None:
    for line in detail_lines(d, datetime.now(UTC)):
        out.print(line)


@app.command("show")
def show(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    chat: str = typer.Argument(..., metavar="CHAT", help="The chat: a full JID or a phone number."),
    limit: int = typer.Option(20, "--limit", min=1, metavar="N", help="How many messages, events and replies to show."),
    as_json: bool = json_option(),
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


@app.command("retry")
def retry(
    ctx: typer.Context,
    instance: str = typer.Argument(..., help="The Evolution instance name."),
    chat: str = typer.Argument(..., help="The chat: a full JID or a phone number."),
    reply: int | None = typer.Option(None, "--reply", metavar="ID",
                                     help="The failed reply's id (sessions show lists them as #ID); "
                                          "default: the chat's latest failed reply."),
    as_json: bool = json_option(),
) -> None:
    """Send a failed reply of a chat again (the same reply, due now; a running serve sends it)."""
    retried = run(ctx, lambda s: s.retry(instance, chat, reply=reply, actor="cli"))
    if as_json:
        print_json(retried.as_dict())
    else:
        out.print(f"[green]↻[/green] {escape(retried.instance)} · {escape(retried.chat_id)}: reply "
                  f"#{retried.reply_id} is due again; a running serve sends it")


def not_erased(capture_path: str | None) -> list[str]:
    """What ``forget`` cannot reach: copies of the chat outside HybridFlow's database."""
    capture = (f"webhook bodies captured for replay in {capture_path} (capture_path): delete them there"
               if capture_path else "webhook bodies captured for replay (capture is off now; files of an earlier "
               "capture_path are not touched)")
    return [capture,
            "backups of the database made before now (hybridflow backup, pg_dump): they still hold the chat",
            "Evolution's own copy of the chat (its database, and the phone's WhatsApp): delete it there"]


@app.command("forget")
def forget(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    chat: str = typer.Argument(..., metavar="CHAT", help="The chat: a full JID or a phone number."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask (needed without a terminal)."),
    as_json: bool = json_option(),
) -> None:
    """Erase everything HybridFlow keeps about one chat (messages, replies, pause history, the session); it
    cannot be undone. Afterwards the chat is a new customer."""
    if not yes and not confirm(f"Erase everything HybridFlow keeps about chat {chat!r} of {instance!r}? "
                               "This cannot be undone."):
        raise fail(f"forgetting chat {chat!r} of {instance!r} needs --yes", 2)
    forgotten, capture = run(ctx, lambda s: _forget(s, instance, chat))
    outside = not_erased(capture)
    if as_json:
        print_json(forgotten.as_dict() | {"not_erased": outside})
        return
    waited = f" (after waiting {forgotten.waited:.1f} s for a reply being sent)" if forgotten.waited >= 0.5 else ""
    out.print(f"[green]✓[/green] forgot {escape(forgotten.instance)} · {escape(forgotten.chat_id)}{waited}: "
              f"{_count(forgotten.messages, 'message')}, {_count(forgotten.replies, 'reply', 'replies')}, "
              f"{_count(forgotten.events, 'pause/resume event')}"
              f"{', ' + _count(forgotten.labels, 'label') if forgotten.labels else ''} and the session erased")
    out.print("its message ids stay 7 days as tombstones (ids only, no content), so Evolution's retries are "
              "answered duplicate; the next message starts a new chat")
    out.print("not erased, outside HybridFlow's database:")
    for line in outside:
        out.print(f"  - {escape(line)}")


def _count(number: int, one: str, many: str | None = None) -> str:
    return f"{number} {one if number == 1 else many or one + 's'}"


async def _forget(service, instance: str, chat: str):  # type: ignore[no-untyped-def]
    return await service.forget(instance, chat), service.settings.capture_path
