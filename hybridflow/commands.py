"""Commands the owner types in WhatsApp's "Message yourself" chat: ``bot status``, ``bot off NUMBER [30m|2h|until
18:00]``, ``bot on NUMBER``, ``bot off all [...]``, ``bot on all``, ``bot help``.

Only a message that starts with the tenant's command word (``bot`` by default; case and accents ignored) is a
command: the owner also keeps notes there. Portuguese words work too (``bot pausar``, ``bot ligar``, ``bot
todos``, ``bot ajuda``). Pure parsing; the service carries commands out.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

DEFAULT_WORD = "bot"
STATUS, OFF, ON, HELP = "status", "off", "on", "help"
_VERBS = {
    "status": STATUS, "estado": STATUS, "situacao": STATUS,
    "off": OFF, "pause": OFF, "pausar": OFF, "desligar": OFF, "parar": OFF,
    "on": ON, "resume": ON, "ligar": ON, "voltar": ON, "retomar": ON,
    "help": HELP, "ajuda": HELP, "?": HELP,
}
_ALL = frozenset({"all", "todos", "todas", "tudo"})
_UNTIL = frozenset({"until", "ate"})


@dataclass(frozen=True, slots=True)
class Command:
    """What the owner asked: a verb, whom (a number as typed, ``None`` for the whole tenant), for how long."""

    verb: str
    target: str | None = None
    everyone: bool = False
    length: str | None = None  # "30m", "2h", "until 18:00"; None: until lifted
    problem: str | None = None  # why it cannot be carried out, said back in one line


def fold(text: str) -> str:
    """Lower case without accents: how command words are compared."""
    text = unicodedata.normalize("NFKD", text)
    return "".join(c for c in text if not unicodedata.combining(c)).casefold()


def is_command(text: str | None, word: str = DEFAULT_WORD) -> bool:
    """Whether a note in the owner's chat is addressed to HybridFlow: its first word is the command word."""
    if not text:
        return False
    first = text.strip().split(None, 1)
    return bool(first) and fold(first[0]).rstrip(":,.!") == fold(word)


def parse(text: str, word: str = DEFAULT_WORD) -> Command:
    """The command in ``text`` (which ``is_command``); an unknown or incomplete one has a ``problem``."""
    words = text.strip().split()[1:]
    if not words:
        return Command(HELP)
    verb = _VERBS.get(fold(words[0]))
    rest = words[1:]
    if verb is None:
        return Command(HELP, problem=f"I don't know {words[0]!r}")
    if verb in (STATUS, HELP):
        return Command(verb)
    if not rest:
        return Command(verb, problem=f"say which chat: {word} {words[0]} NUMBER, or {word} {words[0]} all")
    everyone = fold(rest[0]) in _ALL
    target_words, length = _split_length(rest[1:] if everyone else rest)
    if verb == ON and length is not None:
        return Command(verb, problem="a resume takes no length")
    target = None if everyone else " ".join(target_words)
    if not everyone and not target:
        return Command(verb, problem="say which chat: a phone number as you type it")
    return Command(verb, target, everyone, length)


def _split_length(words: list[str]) -> tuple[list[str], str | None]:
    """The number's words and the pause length at the end: ``30m``, ``2h``, ``until 18:00`` / ``até 18h``."""
    if len(words) >= 2 and fold(words[-2]) in _UNTIL:
        return words[:-2], f"until {words[-1]}"
    if words and words[-1][:1].isdigit() and words[-1][-1:].isalpha() and words[-1][-1:].lower() in "smhd" \
            and words[-1][:-1].replace(".", "").isdigit():
        return words[:-1], words[-1]
    return words, None


__all__ = ["Command", "DEFAULT_WORD", "HELP", "OFF", "ON", "STATUS", "fold", "is_command", "parse"]
