"""``serve``, ``sweep``, ``replay`` and ``keys``: running HybridFlow and looking into it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from hybridflow.cli.app import (App, app, fail, json_option, keep_whole, out, print_json, print_table, run,
                                run_async, settings_of)
from hybridflow.errors import HybridFlowError

if TYPE_CHECKING:
    from hybridflow.config import Settings
    from hybridflow.service import Service

# The server, the service and their clients are imported by the commands that run them: `--help` and `--version`
# import none of them.


class CannotListen(HybridFlowError):
    """The address or port of ``serve`` is taken or not ours to use."""


keys_app = App(help="Manage the encryption key for secrets at rest.", no_args_is_help=True)


@keys_app.command("generate")
def keys_generate() -> None:
    """Print a new secret key for HYBRIDFLOW_SECRET_KEY (keep it safe: stored API keys need it)."""
    from hybridflow.crypto import generate_key

    out.print(generate_key())


async def _serve(settings: Settings) -> None:
    from aiohttp import web

    from hybridflow.service import Service
    from hybridflow.web import create_app

    log = _log()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before listening: a stop that comes at once is still graceful
        loop.add_signal_handler(sig, stop.set)
    async with Service.open(settings, serving=True) as service:
        runner = web.AppRunner(create_app(service), handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.host, settings.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()  # the worker stops before the writer: no "writer is not started" on the way out
            raise CannotListen(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc} "
                               f"(is another serve running? choose another port with --port)") from None
        try:
            await _started(service, settings)
            await stop.wait()
            log.info("serve.stopping")
        finally:
            await runner.cleanup()  # stops accepting, then hands back or finishes in-flight replies
        log.info("serve.stopped")


async def _started(service: Service, settings: Settings) -> None:
    """Tell the operator what is running, where to point Evolution, and what is wrong already."""
    from hybridflow.service import SAME_KEY

    log = _log()
    local = f"http://{settings.host}:{settings.port}"
    report = await service.startup_report()
    log.info("serve.started", url=local,
             webhook_url=f"{settings.public_url or local}/webhooks/evolution", database=service.store.describe(),
             admin_api="on" if settings.admin_token else "off", metrics="on" if settings.metrics else "off",
             capture=settings.capture_path or "off", tenants=report["tenants"], worker=service.worker_id)
    if report["unreadable_secrets"]:
        log.error("serve.secrets_unreadable", tenants=report["unreadable_secrets"], reason=report["secret_error"],
                  effect="their webhooks are answered 503 and their replies cannot be sent", fix=SAME_KEY)
    if not report["tenants"]:
        log.warning("serve.no_tenants", effect="every webhook is answered 404",
                    fix="hybridflow tenants add INSTANCE --prompt TEXT --api-key KEY --webhook-secret SECRET")


def _log() -> Any:
    import structlog

    return structlog.get_logger("hybridflow.serve")


@app.command("serve")
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default 127.0.0.1)."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on (default 8000)."),
    log_format: str | None = typer.Option(None, "--log-format", help="json or console (default: json unless a terminal)."),
) -> None:
    """Run the webhook server, the reply worker and the auto-resume sweep."""
    from hybridflow.logs import configure_logging

    settings = settings_of(ctx, host=host, port=port, log_format=log_format)
    configure_logging(settings.log_format, settings.log_level, stream=sys.stdout)
    # The event loop shares the GIL with the database writer thread: hand it over sooner than every 5 ms.
    sys.setswitchinterval(0.001)
    run_async(lambda: _serve(settings))


async def _sweep(service: Service) -> tuple[list[Any], Any]:
    return await service.sweep(), await service.enforce_retention()


@app.command("sweep")
def sweep(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Resume sessions whose pause has run out, and enforce retention (raw payloads, old messages). Quiet when
    there is nothing to do; safe from cron, beside a running serve."""
    resumed, retention = run(ctx, _sweep)
    if as_json:
        print_json({"resumed": [v.as_dict() for v in resumed], "retention": retention.as_dict()})
        return
    for v in resumed:
        out.print(f"resumed {escape(v.instance)} {escape(v.chat_id)}")
    if retention.anything:
        r = retention
        out.print(f"retention: {r.raw_cleared} raw payloads cleared, {r.messages_deleted} messages, "
                  f"{r.jobs_deleted} replies and {r.events_deleted} pause/resume events deleted, "
                  f"{r.tombstones_pruned} tombstones pruned ({r.seconds:.1f} s)")


def _size(size: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


@app.command("vacuum")
def vacuum(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Give the space of deleted rows back: SQLite's VACUUM (safe while serve runs, but it holds the write lock
    while it works); on PostgreSQL, VACUUM (ANALYZE) of HybridFlow's tables (autovacuum does this anyway)."""
    report = run(ctx, lambda s: s.vacuum(), readonly=True)
    if as_json:
        print_json(report)
        return
    if report["backend"] == "sqlite":
        out.print(f"vacuumed {escape(report['database'])}: {_size(report['before'])} -> {_size(report['after'])} "
                  f"({report['seconds']:.1f} s); incremental auto-vacuum is on, so retention now gives space back "
                  "by itself")
    else:
        out.print(f"ran VACUUM (ANALYZE) on {escape(report['database'])} ({report['seconds']:.1f} s): its space is "
                  f"reused by new rows, the files do not shrink (VACUUM FULL would, locking the tables); "
                  f"autovacuum does the same by itself. Database size {_size(report['after'])}")


@dataclass(frozen=True, slots=True)
class Payload:
    origin: str
    body: Any
    raw: str

    def as_instance(self, instance: str | None) -> Any:
        """The body, replayed as ``instance`` when one is given."""
        if instance is not None and isinstance(self.body, dict):
            return {**self.body, "instance": instance}
        return self.body


# What a dry run says each action would do ("error" stays "error").
_WOULD = {
    "reply_queued": "would reply",
    "paused": "would pause",
    "ignored_paused": "would ignore: chat paused",
    "duplicate": "already stored",
    "own_message": "would ignore: own reply",
    "stored": "would store only",
    "ignored_event": "would ignore: event",
}
# How many of a chat's latest messages a dry run looks through for a message already stored.
_STORED_SCAN = 1000


def _payloads(path: Path) -> list[Payload]:
    """Webhook bodies from a JSON file, a JSON-lines file, or a directory of them."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in (".json", ".jsonl", ".ndjson"))
        return [payload for file in files for payload in _payloads(file)]
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"cannot read {path}: {exc}", 2) from None
    try:
        return [Payload(str(path), json.loads(text), text)]
    except json.JSONDecodeError:
        pass
    payloads = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                payloads.append(Payload(f"{path}:{number}", json.loads(line), line))
            except json.JSONDecodeError as exc:
                payloads.append(Payload(f"{path}:{number}", exc, line))
    if not payloads:
        raise fail(f"{path} holds no JSON", 2)
    return payloads


@app.command("replay")
def replay(
    ctx: typer.Context,
    path: Path = typer.Argument(..., exists=True, metavar="PATH",
                                help="A webhook body (.json), a JSON-lines file, or a directory."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show what would happen and the reply; keep nothing."),
    instance: str | None = typer.Option(None, "--instance", metavar="INSTANCE",
                                        help="Replay as this instance instead of the payload's."),
    as_json: bool = json_option("Print JSON lines for scripts: one object per body, as it is replayed."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask before replies go to customers through Evolution."),
) -> None:
    """Push captured webhook bodies through the same pipeline as the webhook and print each action."""
    payloads = _payloads(path)
    if not payloads:
        raise fail(f"{path} holds no webhook bodies (.json, .jsonl or .ndjson files): nothing to replay", 1)

    async def go(service: Service) -> list[dict[str, Any]]:
        from rich.progress import Progress

        if not dry_run and not yes:
            _confirm_replies(await _customer_chats_to_answer(service, payloads, instance))
        results = []
        with Progress(transient=True, disable=len(payloads) < 20 or as_json, console=out) as progress:
            task = progress.add_task("replaying", total=len(payloads))
            for p in payloads:
                results.append(await _replay_one(service, p, instance, dry_run))
                progress.advance(task)
        return results

    results = run(ctx, go)
    if as_json:
        for r in results:
            print_json(r, line=True)
    else:
        for r in results:
            detail = r.get("error") or " ".join(f"{k}={v}" for k, v in r.items()
                                                if k in ("chat_id", "message_id", "reason") and v)
            out.print(f"{escape(r['origin'])}: [bold]{escape(_said(r))}[/bold] {escape(detail)}")
            if r.get("reply"):
                out.print(f"  [cyan]reply:[/cyan] {escape(r['reply'])}")
        counted = Counter(_said(r) for r in results).most_common()
        table = Table()
        keep_whole(table, "action", [action for action, _ in counted])
        keep_whole(table, "count", [str(count) for _, count in counted])
        for action, count in counted:
            table.add_row(escape(action), str(count))
        print_table(table)
    if any(r["action"] == "error" for r in results):
        raise typer.Exit(1)


def _said(result: dict[str, Any]) -> str:
    """The action as printed: what would happen, in a dry run."""
    return _WOULD.get(result["action"], result["action"]) if result.get("dry_run") else result["action"]


def _interactive() -> bool:
    """Whether someone at a terminal can answer a question."""
    return sys.stdin.isatty()


async def _customer_chats_to_answer(service: Service, payloads: list[Payload], instance: str | None) -> int:
    """How many customer chats a real replay would answer through Evolution (tenants with an API key only)."""
    foreseen = await service.foresee([(p.as_instance(instance), p.raw) for p in payloads
                                      if not isinstance(p.body, Exception)])
    can_send: dict[str, bool] = {}
    chats = set()
    for result in foreseen:
        if result.action != "reply_queued" or result.instance is None:
            continue
        if result.instance not in can_send:
            can_send[result.instance] = (await service.tenant(result.instance)).has_api_key
        if can_send[result.instance]:
            chats.add((result.instance, result.chat_id))
    return len(chats)


def _confirm_replies(chats: int) -> None:
    """Ask before a replay messages real people; without a terminal, only --yes lets it."""
    if not chats:
        return
    what = f"{chats} customer chat{'s' if chats != 1 else ''} through Evolution (real messages)"
    if not _interactive():
        raise fail(f"replay would answer {what}: pass --yes to replay anyway, or --dry-run to look first", 2)
    if not typer.confirm(f"Replay will answer {what}. Continue?", default=False, err=True):
        raise fail("replay cancelled: nothing was replayed", 1)


async def _replay_one(service: Service, p: Payload, instance: str | None, dry_run: bool) -> dict[str, Any]:
    if isinstance(p.body, Exception):
        return {"origin": p.origin, "action": "error", "error": f"not valid JSON: {p.body}"}
    body = p.as_instance(instance)
    try:
        if dry_run:
            result, reply = await service.rehearse(body, p.raw)
            if result.action == "duplicate":
                reply = await _stored_reply(service, result.instance, result.chat_id, result.message_id)
            return {"origin": p.origin, **result.as_dict(), "dry_run": True,
                    "would": _WOULD.get(result.action, result.action).removeprefix("would "), "reply": reply}
        return {"origin": p.origin, **(await service.ingest(body, p.raw)).as_dict()}
    except HybridFlowError as exc:
        return {"origin": p.origin, "action": "error", "error": exc.message}


async def _stored_reply(service: Service, instance: str | None, chat: str | None,
                        message_id: str | None) -> str | None:
    """The reply the model would write now to a stored customer message that was answered."""
    if instance is None or chat is None or message_id is None:
        return None
    return await service.rehearse_stored(instance, chat, message_id, scan=_STORED_SCAN)


@app.command("doctor")
def doctor(ctx: typer.Context, as_json: bool = json_option()) -> None:
    """Check config, database and schema, Ollama, and each tenant's Evolution instance and webhook settings; exit 1
    if anything fails."""
    from hybridflow.service.doctor import diagnose

    checks = run(ctx, diagnose, create_schema=False, readonly=True, log_level="error")
    if as_json:
        print_json({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]})
    else:
        for c in checks:
            mark = "[red]✗[/red]" if not c.ok else "[yellow]✓[/yellow]" if c.warning else "[green]✓[/green]"
            out.print(f"{mark} [bold]{escape(c.name)}[/bold]: {escape(c.detail)}")
    if not all(c.ok for c in checks):
        raise typer.Exit(1)


@app.command("migrate")
def migrate(ctx: typer.Context) -> None:
    """Create or upgrade the database schema now (serve also does this on start)."""
    version = run(ctx, lambda s: s.store.schema_version())
    out.print(f"database schema is at version {version}")
