"""Carrying out the owner's commands from "Message yourself" (``hybridflow.commands`` reads them) with the same
service calls as the CLI, and the answer HybridFlow sends back to that chat, in the tenant's language.

A command that cannot be carried out (no chat or several match the number, a length that makes no sense) is
answered with why, in one line. Nothing here sends: the answer is queued as a ``notice`` job by the service.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from hybridflow import commands, pauses
from hybridflow.commands import Command
from hybridflow.errors import HybridFlowError
from hybridflow.service.tenants import TenantConfig

if TYPE_CHECKING:
    from hybridflow.service import Service
    from hybridflow.service.sessions import SessionView

_WORDS = {
    "pt": {
        "active": "respondendo", "paused_chats": "pausadas", "none_paused": "nenhuma conversa pausada",
        "tenant_paused": "⏸ o bot está pausado em todas as conversas", "until": "até", "until_lifted": "até retomar",
        "paused": "⏸ pausado", "resumed": "▶ o bot voltou a responder", "not_paused": "▶ o bot já respondia", "in": "em", "all": "todas as conversas",
        "dropped": "respostas na fila descartadas", "kept": "as conversas pausadas uma a uma continuam pausadas",
        "label_on": "o rótulo continua na conversa no WhatsApp", "error": "✗",
        "asked": "🙋 {who} pediu para falar com uma pessoa", "looped": "⚠️ {who} chegou ao limite de respostas do bot "
                 "(talvez outro robô do outro lado)", "wrote": "última mensagem", "why": "motivo", "paused_until": "o bot está pausado "
                 "nessa conversa", "hand_back": "para devolver ao bot", "budget": "⚠️ o orçamento diário de tokens "
                 "acabou: o bot não responde até a meia-noite", "failed": "⚠️ uma resposta para {who} falhou",
        "reasons": {"human_message": "você digitou", "api_takeover": "outro sistema enviou",
                    "operator": "pausada à mão", "label": "rótulo", "customer_request": "cliente pediu atendente",
                    "rate_limited": "limite de respostas"},
        "help": ("Comandos ({w} …):\n{w} status — conversas ativas e pausadas\n{w} off NÚMERO [30m|2h|até 18:00] — "
                 "pausar uma conversa\n{w} on NÚMERO — o bot volta nessa conversa\n{w} off all [2h|até 18:00] — "
                 "pausar todas\n{w} on all — o bot volta em todas\n{w} help — esta ajuda"),
    },
    "en": {
        "active": "answering", "paused_chats": "paused", "none_paused": "no chat is paused",
        "tenant_paused": "⏸ the bot is paused in every chat", "until": "until", "until_lifted": "until resumed",
        "paused": "⏸ paused", "resumed": "▶ the bot answers again", "not_paused": "▶ the bot was answering already", "in": "in", "all": "every chat",
        "dropped": "waiting replies dropped", "kept": "chats paused one by one stay paused",
        "label_on": "the label is still on the chat in WhatsApp", "error": "✗",
        "asked": "🙋 {who} asked for a person", "looped": "⚠️ {who} reached the bot's reply limit (maybe another "
                 "bot on the other side)", "wrote": "last message", "why": "why", "paused_until": "the bot is paused in that chat",
        "hand_back": "to hand it back to the bot", "budget": "⚠️ the daily token budget is used up: the bot does "
                  "not answer until midnight", "failed": "⚠️ a reply to {who} failed",
        "reasons": {"human_message": "you typed", "api_takeover": "another system sent", "operator": "paused by hand",
                    "label": "label", "customer_request": "customer asked for a person",
                    "rate_limited": "reply limit"},
        "help": ("Commands ({w} …):\n{w} status — active and paused chats\n{w} off NUMBER [30m|2h|until 18:00] — "
                 "pause one chat\n{w} on NUMBER — the bot answers that chat again\n{w} off all [2h|until 18:00] — "
                 "pause every chat\n{w} on all — the bot answers every chat again\n{w} help — this help"),
    },
}
STATUS_LIMIT = 20  # paused chats listed by "bot status"


def words(tenant: TenantConfig) -> dict:
    return _WORDS["en" if tenant.locale.startswith("en") else "pt"]


async def carry_out(service: Service, tenant: TenantConfig, command: Command) -> str:
    """Do what the owner asked and say what happened; never raises for what the owner typed."""
    w = words(tenant)
    if command.problem:
        return f"{w['error']} {command.problem}\n\n{w['help'].format(w=tenant.command_word)}"
    try:
        if command.verb == commands.HELP:
            return w["help"].format(w=tenant.command_word)
        if command.verb == commands.STATUS:
            return await _status(service, tenant, w)
        if command.everyone:
            return await _everyone(service, tenant, command, w)
        return await _one(service, tenant, command, w)
    except HybridFlowError as exc:
        return f"{w['error']} {exc.message}"


async def _one(service: Service, tenant: TenantConfig, command: Command, w: dict) -> str:
    assert command.target is not None
    now = service.clock()
    if command.verb == commands.OFF:
        until = pauses.end_of(command.length, now, tenant.zone)
        view = await service.pause(tenant.instance, command.target, actor="owner",
                                   duration=None if until is None else (until - now).total_seconds())
        return f"{w['paused']}: {_who(view)} · {when(until, tenant, w, now)}"
    view = await service.resume(tenant.instance, command.target, actor="owner")
    if view.note and "not paused" in view.note:
        return f"{w['not_paused']}: {_who(view)}"
    extra = f" ({w['label_on']})" if view.note and "label" in view.note else ""
    return f"{w['resumed']}: {_who(view)}{extra}"


async def _everyone(service: Service, tenant: TenantConfig, command: Command, w: dict) -> str:
    if command.verb == commands.OFF:
        paused, dropped = await service.pause_tenant(tenant.instance, length=command.length, actor="owner")
        return f"{w['paused']}: {w['all']} · {when(paused.paused_until, tenant, w, service.clock())} ({dropped} {w['dropped']})"
    await service.resume_tenant(tenant.instance, actor="owner")
    return f"{w['resumed']}: {w['all']} ({w['kept']})"


async def _status(service: Service, tenant: TenantConfig, w: dict) -> str:
    now = service.clock()
    paused, total_paused = await service.list_sessions(instance=tenant.instance, paused=True, limit=STATUS_LIMIT)
    _, total = await service.list_sessions(instance=tenant.instance, limit=1)
    total -= await _has_own_chat(service, tenant)  # "Message yourself" is no customer's chat
    lines = []
    current = await service.tenant(tenant.instance)
    if current.paused_now(now):
        lines.append(f"{w['tenant_paused']} · {when(current.paused_until, tenant, w, now)}")
    lines.append(f"🤖 {w['active']} {total - total_paused} · {w['paused_chats']} {total_paused}")
    if not paused:
        lines.append(w["none_paused"])
    for view in paused:
        reasons = ", ".join(dict.fromkeys(w["reasons"].get(p.reason, p.reason) for p in view.pauses)) or \
            w["reasons"].get(view.pause_reason or "", view.pause_reason or "")
        lines.append(f"• {_who(view)} · {reasons} · {when(view.resumes_at, tenant, w, now)}")
    if total_paused > len(paused):
        lines.append(f"… +{total_paused - len(paused)}")
    return "\n".join(lines)


async def _has_own_chat(service: Service, tenant: TenantConfig) -> int:
    try:
        await service.session(tenant.instance, tenant.owner_jid or "")
    except HybridFlowError:
        return 0
    return 1


def _who(view: SessionView) -> str:
    number = view.chat_id.partition("@")[0]
    shown = f"+{number}" if view.chat_id.endswith("@s.whatsapp.net") else view.chat_id
    return f"{view.push_name} ({shown})" if view.push_name else shown


def when(until: datetime | None, tenant: TenantConfig, w: dict, now: datetime) -> str:
    if until is None:
        return w["until_lifted"]
    local = until.astimezone(tenant.zone)
    today = now.astimezone(tenant.zone).date()
    return f"{w['until']} {local:%H:%M}" if local.date() == today else f"{w['until']} {local:%d/%m %H:%M}"


__all__ = ["carry_out", "when", "words"]
