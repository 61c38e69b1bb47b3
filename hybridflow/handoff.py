"""The customer asks for a person: the phrases that say so, in Portuguese and English, matched as whole words or
phrases ignoring case, accents and punctuation ("Quero falar com um ATENDENTE!" matches "atendente"). Pure."""

from __future__ import annotations

import re
import unicodedata

DEFAULT_PHRASES = (
    "atendente", "atendimento humano", "falar com uma pessoa", "falar com alguem", "falar com um humano",
    "pessoa de verdade", "human", "human agent", "talk to a person", "speak to a person", "real person",
)
DEFAULT_PAUSE = 24 * 3600.0
_NOT_WORD = re.compile(r"[^0-9a-z]+")


def normalized(text: str) -> str:
    """Lower case, no accents, words separated by one space: what phrases are compared on."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def parse_phrases(text: str) -> tuple[str, ...]:
    """``--handoff-phrases "atendente, falar com uma pessoa"``: the phrases, normalized; ``off`` (or "") none."""
    if text.strip().lower() in ("", "off", "none"):
        return ()
    phrases = tuple(dict.fromkeys(p for p in (normalized(part) for part in text.split(",")) if p))
    return phrases


def asks_for_person(text: str | None, phrases: tuple[str, ...]) -> str | None:
    """The phrase of ``phrases`` that ``text`` contains as whole words, if any."""
    if not text or not phrases:
        return None
    padded = f" {normalized(text)} "
    return next((p for p in phrases if f" {p} " in padded), None)


__all__ = ["DEFAULT_PAUSE", "DEFAULT_PHRASES", "asks_for_person", "normalized", "parse_phrases"]
