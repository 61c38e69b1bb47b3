"""The console's words in English and Portuguese, chosen by the browser's ``Accept-Language``, and how times and
lengths of time read in each."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, tzinfo

from hybridflow.config import span

LANGUAGES = ("en", "pt")
DEFAULT = "en"

# Each key once, its English and Portuguese. Keys name what the words are for, not where they appear.
TEXTS: dict[str, tuple[str, str]] = {
    "console": ("Operator console", "Console do operador"),
    "chats": ("Chats", "Conversas"),
    "tenants": ("Tenants", "Lojas"),
    "sign_in": ("Sign in", "Entrar"),
    "sign_out": ("Sign out", "Sair"),
    "token": ("Admin token", "Token de administrador"),
    "sign_in_help": ("Use the HYBRIDFLOW_ADMIN_TOKEN of this server.",
                     "Use o HYBRIDFLOW_ADMIN_TOKEN deste servidor."),
    "wrong_token": ("That token is not right.", "Esse token não está certo."),
    "slow_down": ("Too many wrong tokens from your address: try again in {seconds} s.",
                  "Muitos tokens errados do seu endereço: tente de novo em {seconds} s."),
    "form_expired": ("This form expired: reload the page and try again.",
                     "Este formulário expirou: recarregue a página e tente de novo."),
    "live": ("Live", "Ao vivo"),
    "offline": ("Reconnecting…", "Reconectando…"),
    "all_tenants": ("All tenants", "Todas as lojas"),
    "all": ("All", "Todas"),
    "paused": ("Paused", "Pausadas"),
    "active": ("Active", "Ativas"),
    "waiting": ("Waiting for a reply", "Aguardando resposta"),
    "failed": ("Failed replies", "Respostas com falha"),
    "search": ("Search", "Buscar"),
    "search_placeholder": ("Name or number", "Nome ou número"),
    "no_chats": ("No chats match.", "Nenhuma conversa encontrada."),
    "no_chats_yet": ("No chats yet: they appear with the first message.",
                     "Ainda não há conversas: elas aparecem com a primeira mensagem."),
    "page_of": ("Page {page} of {pages} · {total} chats", "Página {page} de {pages} · {total} conversas"),
    "previous": ("Previous", "Anterior"),
    "next": ("Next", "Próxima"),
    "state_paused": ("Paused", "Pausada"),
    "state_active": ("Bot answering", "Bot respondendo"),
    "resumes_in": ("resumes in", "volta em"),
    "resumes_soon": ("resumes at the next sweep", "volta na próxima verificação"),
    "until_resumed": ("until resumed", "até ser retomada"),
    "reply_waiting": ("reply on its way", "resposta a caminho"),
    "reply_failed": ("a reply failed", "uma resposta falhou"),
    "ago": ("{span} ago", "há {span}"),
    "just_now": ("just now", "agora"),
    "attempt": ("attempt", "tentativa"),
    "in": ("in {span}", "em {span}"),
    "never": ("never", "nunca"),
    "pause": ("Pause", "Pausar"),
    "resume": ("Resume the bot", "Retomar o bot"),
    "retry": ("Retry", "Tentar de novo"),
    "for": ("for", "por"),
    "forever": ("until I resume", "até eu retomar"),
    "transcript": ("Conversation", "Conversa"),
    "no_messages": ("No messages kept.", "Nenhuma mensagem guardada."),
    "pauses_now": ("Paused for", "Pausada por"),
    "history": ("Pause and resume history", "Histórico de pausas"),
    "no_history": ("No pause yet.", "Nenhuma pausa ainda."),
    "replies": ("Replies", "Respostas"),
    "no_replies": ("No replies yet.", "Nenhuma resposta ainda."),
    "attempts": ("attempts", "tentativas"),
    "by": ("by", "por"),
    "until": ("until", "até"),
    "since": ("since", "desde"),
    "back": ("All chats", "Todas as conversas"),
    "done_paused": ("Paused: the bot stays out of this chat.", "Pausada: o bot fica fora desta conversa."),
    "done_resumed": ("Resumed: the bot answers the next message.", "Retomada: o bot responde a próxima mensagem."),
    "done_retried": ("The reply is on its way again.", "A resposta está a caminho de novo."),
    "not_paused": ("The chat was not paused: nothing changed.", "A conversa não estava pausada: nada mudou."),
    "today": ("Today", "Hoje"),
    "messages_today": ("Customer messages", "Mensagens de clientes"),
    "replies_today": ("Replies sent", "Respostas enviadas"),
    "pauses_today": ("Pauses", "Pausas"),
    "failed_today": ("Failed", "Falhas"),
    "queue": ("In the queue", "Na fila"),
    "model": ("Model", "Modelo"),
    "hours": ("Hours", "Horário"),
    "always_open": ("always answering", "responde sempre"),
    "open_now": ("open now", "aberta agora"),
    "closed_now": ("closed now", "fechada agora"),
    "tenant_paused": ("bot paused for every chat", "bot pausado em todas as conversas"),
    "last_24h": ("Last 24 hours", "Últimas 24 horas"),
    "peak": ("busiest hour: {count}", "hora mais cheia: {count}"),
    "chart_messages": ("messages", "mensagens"),
    "chart_replies": ("replies", "respostas"),
    "no_tenants": ("No tenants yet: add one with `hybridflow tenants add`.",
                   "Nenhuma loja ainda: adicione com `hybridflow tenants add`."),
    "error": ("Something is not right", "Algo não está certo"),
    "not_found": ("Not found", "Não encontrado"),
    "customer": ("Customer", "Cliente"),
    "owner": ("Owner", "Dono"),
    "bot": ("Bot", "Bot"),
    "api": ("Another API client", "Outro cliente da API"),
    "reason_human_message": ("owner typed", "o dono digitou"),
    "reason_api_takeover": ("API takeover", "outro sistema assumiu"),
    "reason_label": ("label", "etiqueta"),
    "reason_customer_request": ("customer asked for a person", "cliente pediu uma pessoa"),
    "reason_rate_limited": ("rate limited", "limite de respostas"),
    "reason_operator": ("operator", "operador"),
    "reason_auto_resume": ("time was up", "o tempo acabou"),
    "change_paused": ("paused", "pausada"),
    "change_resumed": ("resumed", "retomada"),
    "change_lifted": ("lifted", "retirada"),
    "status_queued": ("queued", "na fila"),
    "status_running": ("being written", "sendo escrita"),
    "status_retry": ("due again", "vai tentar de novo"),
    "status_sending": ("sending", "enviando"),
    "status_sent": ("sent", "enviada"),
    "status_failed": ("failed", "falhou"),
    "status_skipped_paused": ("skipped: paused", "pulada: pausada"),
    "status_unknown": ("outcome unknown", "resultado desconhecido"),
    "status_cancelled": ("cancelled", "cancelada"),
    "status_skipped_budget": ("skipped: token budget", "pulada: limite de tokens"),
    "status_handed_off": ("handed to a person", "passada a uma pessoa"),
    "status_expired": ("expired: too late to send", "expirada: tarde demais"),
    "kind_reply": ("reply", "resposta"),
    "kind_away": ("away message", "mensagem de ausência"),
    "kind_notice": ("answer to the owner", "resposta ao dono"),
    "kind_handoff": ("handoff message", "mensagem de transferência"),
    "kind_notify": ("notification", "notificação"),
    "kind_notify_url": ("notification to the URL", "notificação para a URL"),
    "action_reply_queued": ("the bot answers", "o bot responde"),
    "action_paused": ("paused the bot", "pausou o bot"),
    "action_ignored_paused": ("not answered: paused", "sem resposta: pausada"),
    "action_duplicate": ("duplicate", "duplicada"),
    "action_own_message": ("", ""),
    "action_stored": ("stored only", "só guardada"),
    "action_ignored_event": ("ignored", "ignorada"),
    "action_ignored_hours": ("not answered: outside hours", "sem resposta: fora do horário"),
    "action_command": ("command", "comando"),
    "action_label_paused": ("label paused it", "etiqueta pausou"),
    "action_label_resumed": ("label resumed it", "etiqueta retomou"),
    "action_label_stored": ("label kept", "etiqueta guardada"),
    "media_image": ("photo", "foto"),
    "media_video": ("video", "vídeo"),
    "media_audio": ("voice message", "áudio"),
    "media_document": ("document", "documento"),
    "media_sticker": ("sticker", "figurinha"),
    "media_location": ("location", "localização"),
    "media_contact": ("contact", "contato"),
    "kind_message_media": ("media", "mídia"),
    "kind_message_reaction": ("reaction", "reação"),
    "kind_message_edit": ("edited message", "mensagem editada"),
    "kind_message_protocol": ("message deleted or changed", "mensagem apagada ou alterada"),
    "kind_message_other": ("other message", "outra mensagem"),
}


def choose(accept_language: str | None) -> str:
    """The best of our languages for an ``Accept-Language`` header (``pt-BR,pt;q=0.9,en;q=0.8``)."""
    best, best_q = DEFAULT, -1.0
    for position, item in enumerate((accept_language or "").split(",")[:20]):
        tag, _, params = item.strip().partition(";")
        language = tag.strip().lower().split("-")[0]
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        q -= position * 1e-6  # equal weights: the first listed wins
        if language in LANGUAGES and q > best_q and q > 0:
            best, best_q = language, q
    return best


def translator(language: str) -> Callable[..., str]:
    """``t("key", name=value)``: the words for ``key`` in ``language``, with its fields filled in."""
    index = LANGUAGES.index(language) if language in LANGUAGES else 0

    def t(key: str, **fields: object) -> str:
        found = TEXTS.get(key)
        # A word we have no translation for (a reason or status added later) reads as its code, not as a key.
        words = found[index] if found else key.partition("_")[2].replace("_", " ") or key
        return words.format(**fields) if fields else words

    return t


def countdown(until: datetime, now: datetime) -> str:
    """'1 h 12 min' until ``until`` (units read the same in both languages)."""
    return span(max(0, math.ceil((until - now).total_seconds())))


def relative(t: Callable[..., str], value: datetime | None, now: datetime) -> str:
    """'3 min ago' / 'há 3 min', 'in 30 min' / 'em 30 min'; 'never' for no time."""
    if value is None:
        return t("never")
    seconds = (now - value).total_seconds()
    if 0 <= seconds < 60:
        return t("just_now")
    return t("ago", span=span(seconds)) if seconds >= 0 else t("in", span=span(math.ceil(-seconds)))


def local_time(value: datetime, zone: tzinfo, now: datetime) -> str:
    """'14:05' today, else '28/11 14:05' (the tenant's zone)."""
    local, today = value.astimezone(zone), now.astimezone(zone)
    return f"{local:%H:%M}" if local.date() == today.date() else f"{local:%d/%m %H:%M}"


__all__ = ["choose", "countdown", "local_time", "relative", "translator"]
