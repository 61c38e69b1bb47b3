"""``hybridflow tenants``: one tenant per Evolution instance."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from hybridflow.cli.app import (App, clock, confirm, fail, json_option, keep_whole, may_wrap, out, print_json,
                                print_table, run, warn, yes_no)
from hybridflow.config import format_duration, parse_duration

if TYPE_CHECKING:
    from hybridflow.service import Service, TenantChanges
    from hybridflow.service.tenants import TenantConfig

app = App(help="Add, list, show, update and remove tenants (one per Evolution instance).",
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
    from hybridflow.service.tenants import TenantChanges

    if evolution_url is not None and not evolution_url.startswith(("http://", "https://")):
        raise fail(f"--evolution-url must start with http:// or https://, got {evolution_url!r}", 2)
    return TenantChanges(
        prompt=_prompt(prompt, prompt_file), evolution_url=evolution_url.rstrip("/") if evolution_url else None,
        api_key=api_key, model=model, resume_after=_duration(resume_after, "--resume-after"),
        debounce=_duration(debounce, "--debounce"), webhook_secret=webhook_secret, jwt_key=jwt_key,
        api_version=api_version, allow_groups=allow_groups, send_presence=send_presence, mark_read=mark_read)


PROMPT = typer.Option(None, "--prompt", metavar="TEXT", help="The system prompt: who the assistant is and how it answers.")
PROMPT_FILE = typer.Option(None, "--prompt-file", metavar="PATH", help="Read the prompt from this file.")
EVOLUTION_URL = typer.Option(None, "--evolution-url", metavar="URL", help="Base URL of the Evolution API (default from config).")
API_KEY = typer.Option(None, "--api-key", metavar="KEY", help="The instance's Evolution API key (stored encrypted).")
MODEL = typer.Option(None, "--model", metavar="NAME", help="Ollama model for this tenant (default from config).")
RESUME_AFTER = typer.Option(None, "--resume-after", metavar="DURATION", help="Auto-resume this long after the last human message, e.g. 2h.")
DEBOUNCE = typer.Option(None, "--debounce", metavar="DURATION", help="Answer messages sent within this window together, e.g. 3s; 0 disables.")
WEBHOOK_SECRET = typer.Option(None, "--webhook-secret", metavar="SECRET", help="Shared secret Evolution sends as Authorization: Bearer or X-Hybridflow-Token.")
JWT_KEY = typer.Option(None, "--jwt-key", metavar="KEY", help="Evolution 2.3 jwt_key: verify webhooks as HS256 JWTs signed with it.")
API_VERSION = typer.Option(None, "--api-version", metavar="v1|v2", help="v2 (default) or v1 for old Evolution servers.")
GROUPS = typer.Option(None, "--allow-groups/--no-groups", help="Also answer in group chats (off by default).")
PRESENCE = typer.Option(None, "--typing/--no-typing", help="Show 'typing…' while the model answers.")
MARK_READ = typer.Option(None, "--mark-read/--no-mark-read", help="Mark the customer's message as read.")
REPLY_CAP = typer.Option(None, "--reply-cap", metavar="N/WINDOW",
                         help="At most N model replies per chat in any WINDOW (default 20/10m); off disables. "
                              "Reply N+1 pauses the chat instead (a loop with another bot stops).")
MAX_REPLY = typer.Option(None, "--max-reply-chars", metavar="N", help="Cut longer answers at a sentence; 0: no limit.")
HOURS = typer.Option(None, "--hours", metavar="SCHEDULE",
                     help='Business hours, e.g. "mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00"; "" removes them.')
TIMEZONE = typer.Option(None, "--timezone", metavar="ZONE", help="IANA zone of the hours, e.g. America/Sao_Paulo "
                        "(default: the server's).")
CLOSED = typer.Option(None, "--closed", metavar="DATE", help="Closed all day, e.g. 2026-12-25 (repeatable; added).")
SPECIAL = typer.Option(None, "--special", metavar="'DATE HOURS'",
                       help='Other hours that day, e.g. "2026-12-24 08:00-12:00" (repeatable; added).')
NO_CLOSED = typer.Option(None, "--no-closed", help="Forget the closed dates (before adding --closed ones).")
NO_SPECIAL = typer.Option(None, "--no-special", help="Forget the special days (before adding --special ones).")
HOURS_MODE = typer.Option(None, "--hours-mode", metavar="always|outside|inside",
                          help="always (default); outside: answer only while closed; inside: only while open.")
AWAY = typer.Option(None, "--away-message", metavar="TEXT",
                    help="With --hours-mode inside: sent once per chat per day to customers who write while closed; "
                         '{next_open} becomes the next opening, e.g. "segunda-feira, 08:00". "" removes it.')
LOCALE = typer.Option(None, "--locale", metavar="LOCALE", help="Language of dates in the away message and the "
                      "model's clock: pt_BR (default), pt_PT, en, en_US.")
COUNTRY = typer.Option(None, "--country", metavar="CODE", help="Country of numbers typed without +code, e.g. BR "
                       "(default), PT, US.")
PAUSE_LABEL = typer.Option(None, "--pause-label", metavar="NAME",
                           help='A WhatsApp Business label, e.g. "Bot off": a chat is paused while it carries it. '
                                '"" removes it.')
OWNER_NUMBER = typer.Option(None, "--owner-number", metavar="NUMBER",
                            help="The instance's own WhatsApp number, whose \"Message yourself\" chat takes commands "
                                 "(learned when the instance connects; \"\" forgets a number set here).")
COMMAND_WORD = typer.Option(None, "--command-word", metavar="WORD",
                            help='How commands in "Message yourself" start (default: bot).')
HANDOFF_PHRASES = typer.Option(None, "--handoff-phrases", metavar="'P1, P2'",
                               help="What a customer writes to ask for a person, comma-separated (default: atendente, "
                                    "falar com uma pessoa, human, ...); off disables; \"\" restores the defaults.")
HANDOFF_PAUSE = typer.Option(None, "--handoff-pause", metavar="DURATION",
                             help="How long a handoff pauses the chat (default 24h).")
HANDOFF_MESSAGE = typer.Option(None, "--handoff-message", metavar="TEXT",
                               help="Sent once to the customer on a handoff, e.g. \"Já chamo alguém!\"; \"\" removes it.")
NOTIFY_NUMBER = typer.Option(None, "--notify-number", metavar="NUMBER",
                             help="Send notifications (a handoff, a loop stopped) to this WhatsApp number instead of "
                                  "the owner's own chat; \"\" goes back to it.")
HANDOFF_TOOL = typer.Option(None, "--handoff-tool/--no-handoff-tool",
                            help="Let the model hand a chat to a person itself: it may call handoff_to_human(reason) "
                                 "when your prompt says so (a model without tool support answers as before).")
NOTIFY_URL = typer.Option(None, "--notify-url", metavar="URL",
                          help="Also POST each notification as JSON to this URL (n8n, Slack, a CRM), signed with "
                               "--notify-secret in X-Hybridflow-Signature; \"\" stops it.")
NOTIFY_SECRET = typer.Option(None, "--notify-secret", metavar="SECRET",
                             help="The key of the HMAC-SHA256 signature of --notify-url's POSTs (stored encrypted).")
SPLIT_REPLIES = typer.Option(None, "--split-replies/--no-split-replies",
                             help="Send a long answer in parts (split at blank lines), each after its own "
                                  "\"typing…\"; off by default.")
TIME_PER_CHAR = typer.Option(None, "--time-per-char", metavar="MS",
                             help="With --split-replies: milliseconds of \"typing…\" per character of a part "
                                  "(default 50), 1 to 20 s per part.")
MAX_REPLY_DELAY = typer.Option(None, "--max-reply-delay", metavar="DURATION",
                               help="A reply held up by failures (the model or Evolution down) is not sent later "
                                    "than this after the customer's message, e.g. 10m (default); 0 or off: no limit.")
DAILY_TOKENS = typer.Option(None, "--daily-tokens", metavar="N", help="The model's token budget per local day "
                            "(Ollama's counts); replies are skipped once it is used up. 0: no budget (default).")
RETAIN_RAW = typer.Option(None, "--retain-raw", metavar="DURATION", help="Clear raw webhook bodies older than "
                         "this, e.g. 30d (the parsed messages stay); forever (or off) keeps them. Default: retain_raw.")
RETAIN_MESSAGES = typer.Option(None, "--retain-messages", metavar="DURATION", help="Delete messages older than this, "
                               "with their replies and events, e.g. 365d (at least 2d); forever (or off) keeps them. "
                               "Default: retain_messages.")


def _count(value: str | None, name: str) -> int | None:
    """A whole number typed as people type them: ``300``, ``50000``, ``50_000``, ``50k``, ``2M``."""
    if value is None:
        return None
    text = value.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit():
        raise fail(f"invalid value for {name}: {value!r} is not a whole number (e.g. 300, 50000, 50k)", 2)
    return int(digits) * scale


def _policy(reply_cap: str | None, max_reply_chars: str | None, hours: str | None, timezone: str | None,
            closed: list[str] | None, special: list[str] | None, no_closed: bool | None, no_special: bool | None,
            hours_mode: str | None, away_message: str | None, locale: str | None, country: str | None,
            daily_tokens: str | None, pause_label: str | None = None, owner_number: str | None = None,
            command_word: str | None = None, retain_raw: str | None = None,
            retain_messages: str | None = None, handoff_phrases: str | None = None,
            handoff_pause: str | None = None, handoff_message: str | None = None,
            notify_number: str | None = None) -> dict[str, object]:
    """The who-and-when options as TenantChanges fields (None: not given)."""
    return {"reply_cap": reply_cap, "max_reply_chars": _count(max_reply_chars, "--max-reply-chars"), "hours": hours, "timezone": timezone,
            "closed": tuple(closed) if closed else None, "special": tuple(special) if special else None,
            "clear_closed": no_closed, "clear_special": no_special, "hours_mode": hours_mode,
            "away_message": away_message, "locale": locale, "country": country,
            "daily_tokens": _count(daily_tokens, "--daily-tokens"), "pause_label": pause_label,
            "owner_number": owner_number, "command_word": command_word, "retain_raw": retain_raw,
            "retain_messages": retain_messages, "handoff_phrases": handoff_phrases,
            "handoff_pause": _duration(handoff_pause, "--handoff-pause"), "handoff_message": handoff_message,
            "notify_number": notify_number}


def _phone_control(handoff_tool: bool | None, notify_url: str | None, notify_secret: str | None,
                   split_replies: bool | None, time_per_char: str | None,
                   max_reply_delay: str | None) -> dict[str, object]:
    """The handoff tool, notification URL, paced replies and reply delay options as TenantChanges fields."""
    delay = None if max_reply_delay is None else (
        0.0 if max_reply_delay.strip().lower() in ("off", "none") else _duration(max_reply_delay, "--max-reply-delay"))
    return {"handoff_tool": handoff_tool, "notify_url": notify_url, "notify_secret": notify_secret,
            "split_replies": split_replies, "time_per_char": _count(time_per_char, "--time-per-char"),
            "max_reply_delay": delay}


# `tenants show`: each setting under the option that sets it, in the words users type.
_SHOWN = {"evolution_url": "evolution-url", "resume_after": "resume-after", "api_version": "api-version",
          "allow_groups": "allow-groups", "mark_read": "mark-read", "api_key": "api-key",
          "webhook_auth": "webhook-auth", "created_at": "created", "reply_cap": "reply-cap",
          "max_reply_chars": "max-reply-chars", "hours_mode": "hours-mode", "away_message": "away-message",
          "daily_tokens": "daily-tokens", "pause_label": "pause-label", "owner_number": "owner-number",
          "command_word": "command-word", "retain_raw": "retain-raw", "retain_messages": "retain-messages",
          "handoff_phrases": "handoff-phrases", "handoff_pause": "handoff-pause", "handoff_message": "handoff-message",
          "handoff_tool": "handoff-tool", "notify_url": "notify-url", "split_replies": "split-replies",
          "time_per_char": "time-per-char", "max_reply_delay": "max-reply-delay"}


def shown_settings(tenant: TenantConfig, usage: dict | None = None, stored: dict | None = None) -> dict[str, str]:
    """A tenant as ``tenants show`` prints it: option names, durations as typed (``2h``), yes/no, local times;
    with ``usage``, the tokens used today; with ``stored``, its messages kept and the oldest one's time."""
    shown = {}
    for key, value in tenant.public().items():
        if key in ("resume_after", "debounce"):
            value = format_duration(value)
        elif isinstance(value, bool):
            value = yes_no(value)
        elif key == "created_at":
            value = clock(tenant.created_at)
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        shown[_SHOWN.get(key, key)] = str(value)
    if tenant.schedule is not None:  # open or closed right now, and until when
        shown["now"] = tenant.schedule.describe_now(datetime.now(UTC), "en").partition(": ")[2]  # "Tuesday 08:45, open…"
    if usage is not None:
        budget = f" of {usage['budget']}" if usage["budget"] else ""
        uncounted = f", {usage['uncounted_answers']} answers without a count" if usage["uncounted_answers"] else ""
        shown["tokens-today"] = f"{usage['used']}{budget} (since {usage['since'][:16].replace('T', ' ')}{uncounted})"
    if stored is not None:
        oldest = f" (oldest {clock(stored['oldest'])})" if stored["oldest"] else ""
        shown["messages-stored"] = f"{stored['messages']}{oldest}"
    return shown


def _show(tenant: TenantConfig, usage: dict | None = None, stored: dict | None = None) -> None:
    table = Table(show_header=False, box=None)
    table.add_column(no_wrap=True)
    may_wrap(table, "")
    for key, value in shown_settings(tenant, usage, stored).items():
        table.add_row(f"[bold]{key}[/bold]", escape(value))
    print_table(table)


def _warn_gaps(tenant: TenantConfig) -> None:
    for gap in tenant.gaps():
        warn(gap)


@app.command("add")
def add(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name (the 'instance' field of its webhooks)."),
    prompt: str | None = PROMPT, prompt_file: Path | None = PROMPT_FILE, evolution_url: str | None = EVOLUTION_URL,
    api_key: str | None = API_KEY, model: str | None = MODEL, resume_after: str | None = RESUME_AFTER,
    debounce: str | None = DEBOUNCE, webhook_secret: str | None = WEBHOOK_SECRET, jwt_key: str | None = JWT_KEY,
    api_version: str | None = API_VERSION, allow_groups: bool | None = GROUPS, typing_: bool | None = PRESENCE,
    mark_read: bool | None = MARK_READ, reply_cap: str | None = REPLY_CAP, max_reply_chars: str | None = MAX_REPLY,
    hours: str | None = HOURS, timezone: str | None = TIMEZONE, closed: list[str] | None = CLOSED,
    special: list[str] | None = SPECIAL, no_closed: bool | None = NO_CLOSED, no_special: bool | None = NO_SPECIAL,
    hours_mode: str | None = HOURS_MODE, away_message: str | None = AWAY, locale: str | None = LOCALE,
    country: str | None = COUNTRY, daily_tokens: str | None = DAILY_TOKENS, pause_label: str | None = PAUSE_LABEL,
    owner_number: str | None = OWNER_NUMBER, command_word: str | None = COMMAND_WORD,
    retain_raw: str | None = RETAIN_RAW, retain_messages: str | None = RETAIN_MESSAGES,
    handoff_phrases: str | None = HANDOFF_PHRASES, handoff_pause: str | None = HANDOFF_PAUSE,
    handoff_message: str | None = HANDOFF_MESSAGE, notify_number: str | None = NOTIFY_NUMBER,
    handoff_tool: bool | None = HANDOFF_TOOL, notify_url: str | None = NOTIFY_URL,
    notify_secret: str | None = NOTIFY_SECRET, split_replies: bool | None = SPLIT_REPLIES,
    time_per_char: str | None = TIME_PER_CHAR, max_reply_delay: str | None = MAX_REPLY_DELAY,
    update: bool = typer.Option(False, "--update", help="Update the tenant if it already exists."),
    as_json: bool = json_option("Print the tenant as JSON."),
) -> None:
    """Add a tenant for an Evolution instance. Fails if it exists, unless --update."""
    changes = _changes(prompt, prompt_file, evolution_url, api_key, model, resume_after, debounce, webhook_secret,
                       jwt_key, api_version, allow_groups, typing_, mark_read)
    changes = dataclasses.replace(changes, **_policy(reply_cap, max_reply_chars, hours, timezone, closed, special,
                                                     no_closed, no_special, hours_mode, away_message, locale,
                                                     country, daily_tokens, pause_label, owner_number,
                                                     command_word, retain_raw, retain_messages, handoff_phrases,
                                                     handoff_pause, handoff_message, notify_number),
                                  **_phone_control(handoff_tool, notify_url, notify_secret, split_replies, time_per_char,
                                                   max_reply_delay))
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
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    prompt: str | None = PROMPT, prompt_file: Path | None = PROMPT_FILE, evolution_url: str | None = EVOLUTION_URL,
    api_key: str | None = API_KEY, model: str | None = MODEL, resume_after: str | None = RESUME_AFTER,
    debounce: str | None = DEBOUNCE, webhook_secret: str | None = WEBHOOK_SECRET, jwt_key: str | None = JWT_KEY,
    api_version: str | None = API_VERSION, allow_groups: bool | None = GROUPS, typing_: bool | None = PRESENCE,
    mark_read: bool | None = MARK_READ, reply_cap: str | None = REPLY_CAP, max_reply_chars: str | None = MAX_REPLY,
    hours: str | None = HOURS, timezone: str | None = TIMEZONE, closed: list[str] | None = CLOSED,
    special: list[str] | None = SPECIAL, no_closed: bool | None = NO_CLOSED, no_special: bool | None = NO_SPECIAL,
    hours_mode: str | None = HOURS_MODE, away_message: str | None = AWAY, locale: str | None = LOCALE,
    country: str | None = COUNTRY, daily_tokens: str | None = DAILY_TOKENS, pause_label: str | None = PAUSE_LABEL,
    owner_number: str | None = OWNER_NUMBER, command_word: str | None = COMMAND_WORD,
    retain_raw: str | None = RETAIN_RAW, retain_messages: str | None = RETAIN_MESSAGES,
    handoff_phrases: str | None = HANDOFF_PHRASES, handoff_pause: str | None = HANDOFF_PAUSE,
    handoff_message: str | None = HANDOFF_MESSAGE, notify_number: str | None = NOTIFY_NUMBER,
    handoff_tool: bool | None = HANDOFF_TOOL, notify_url: str | None = NOTIFY_URL,
    notify_secret: str | None = NOTIFY_SECRET, split_replies: bool | None = SPLIT_REPLIES,
    time_per_char: str | None = TIME_PER_CHAR, max_reply_delay: str | None = MAX_REPLY_DELAY,
    as_json: bool = json_option("Print the tenant as JSON."),
) -> None:
    """Change some settings of an existing tenant (an empty string clears a secret)."""
    changes = _changes(prompt, prompt_file, evolution_url, api_key, model, resume_after, debounce, webhook_secret,
                       jwt_key, api_version, allow_groups, typing_, mark_read)
    changes = dataclasses.replace(changes, **_policy(reply_cap, max_reply_chars, hours, timezone, closed, special,
                                                     no_closed, no_special, hours_mode, away_message, locale,
                                                     country, daily_tokens, pause_label, owner_number,
                                                     command_word, retain_raw, retain_messages, handoff_phrases,
                                                     handoff_pause, handoff_message, notify_number),
                                  **_phone_control(handoff_tool, notify_url, notify_secret, split_replies, time_per_char,
                                                   max_reply_delay))
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
def list_(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """List the tenants with their effective settings (secrets are never shown)."""
    tenants, database = run(ctx, _tenants_and_database, readonly=True)
    if as_json:
        print_json({"tenants": [t.public() for t in tenants]})
        return
    if not tenants:
        out.print(f"No tenants yet in {escape(database)}. Add one: hybridflow tenants add INSTANCE --prompt '...'")
        return
    print_table(tenants_table(tenants))


def tenants_table(tenants: list[TenantConfig]) -> Table:
    """Instance names, models and durations stay whole at any width; the URL folds and the rest wrap."""
    rows = [[t.instance, t.model, format_duration(t.resume_after), format_duration(t.debounce), t.evolution_url,
             t.public()["api_key"], t.public()["webhook_auth"]] for t in tenants]
    table = Table()
    for index, header in enumerate(("instance", "model", "resume after", "debounce")):
        keep_whole(table, header, [row[index] for row in rows])
    may_wrap(table, "evolution url", ratio=3)
    may_wrap(table, "api key")
    may_wrap(table, "webhook auth")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))
    return table


@app.command("show")
def show(ctx: typer.Context, instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
         as_json: bool = json_option()) -> None:
    """Show one tenant, its prompt included, and the model tokens it used today."""
    tenant, usage, stored = run(ctx, lambda s: _report(s, instance), readonly=True)
    if as_json:
        print_json(tenant.public() | {"tokens_today": usage, "messages": {
            "stored": stored["messages"], "oldest": stored["oldest"].isoformat() if stored["oldest"] else None}})
    else:
        _show(tenant, usage, stored)


async def _report(service: Service, instance: str) -> tuple[TenantConfig, dict, dict]:
    tenant, usage = await service.tenant_report(instance)
    return tenant, usage, await service.stored_messages(tenant.id)


@app.command("labels")
def labels_(ctx: typer.Context, instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
            as_json: bool = json_option()) -> None:
    """The tenant's WhatsApp Business labels as Evolution reported them, and which one pauses the bot."""
    tenant, found = run(ctx, lambda s: s.labels(instance), readonly=True)
    from hybridflow.labels import same_name

    rows = [{"id": r.label_id, "name": r.name, "deleted": r.deleted, "chats": r.chats,
             "pauses": not r.deleted and same_name(r.name, tenant.pause_label)} for r in found]
    if as_json:
        print_json({"pause_label": tenant.pause_label, "labels": rows})
        return
    if not rows:
        out.print(f"No labels known yet for {escape(instance)}: they arrive with Evolution's LABELS_EDIT webhook "
                  "when one is created or renamed on the phone.")
        return
    table = Table()
    for header in ("id", "name", "chats", "pauses the bot"):
        table.add_column(header)
    for r in rows:
        table.add_row(escape(r["id"]), escape(r["name"]) + (" (deleted)" if r["deleted"] else ""), str(r["chats"]),
                      yes_no(r["pauses"]))
    print_table(table)


@app.command("pause")
def pause(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    length: str | None = typer.Option(None, "--for", metavar="LENGTH",
                                      help="How long: 30m, 2h, 1d, or 'until 18:00' (the tenant's time zone). "
                                           "Without it: until `tenants resume`."),
    as_json: bool = json_option("Print the tenant as JSON."),
) -> None:
    """Pause the bot in every chat of a tenant at once (a holiday, a busy afternoon); chats' own pauses stay."""
    tenant, dropped = run(ctx, lambda s: s.pause_tenant(instance, length=length, actor="cli"))
    if as_json:
        print_json(tenant.public() | {"replies_dropped": dropped})
        return
    until = f"until {clock(tenant.paused_until)}" if tenant.paused_until else "until `hybridflow tenants resume`"
    out.print(f"[yellow]paused[/yellow] every chat of [bold]{escape(instance)}[/bold] {escape(until)}"
              f" ({dropped} waiting replies dropped)")


@app.command("resume")
def resume(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
    as_json: bool = json_option("Print the tenant as JSON."),
) -> None:
    """Lift a tenant-wide pause; chats paused one by one (by you, a label, a handoff) stay paused."""
    tenant = run(ctx, lambda s: s.resume_tenant(instance, actor="cli"))
    if as_json:
        print_json(tenant.public())
        return
    out.print(f"[green]✓[/green] [bold]{escape(instance)}[/bold] answers again (chats paused one by one stay paused)")


@app.command("remove")
def remove(
    ctx: typer.Context,
    instance: str = typer.Argument(..., metavar="INSTANCE", help="The Evolution instance name."),
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
    out.print(f"[green]✓[/green] tenant [bold]{escape(instance)}[/bold] removed{kept} "
              f"({counts['messages']} messages, {counts['sessions']} sessions deleted)")
