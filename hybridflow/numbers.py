"""What a person typed for a chat (``11 98765-4321``, ``+55 11 98765 4321``, a JID) -> the WhatsApp ids it may mean.

Pure functions, no I/O. Phone numbers are read by ``phonenumbers`` (the Python port of Google's libphonenumber)
in a default region, so a number typed without its country code gets the region's, and trunk and carrier prefixes
(``0 21 11 ...``) are dropped. A JID (``...@s.whatsapp.net``, ``...@lid``, ``...@g.us``) passes through
:func:`hybridflow.events.normalize_jid` unchanged otherwise.

Brazil: mobiles got a ninth digit in 2012-2016 (DDD + 9 + 8 digits), but WhatsApp kept the old 8-digit form as the
id of many accounts (``551187654321@s.whatsapp.net``). A Brazilian mobile number therefore means two ids, with and
without the 9; which one a chat has is only known from the chats that exist. The rule applies when the 8-digit
subscriber number starts with 6-9 (the mobile ranges); landlines (2-5) have one form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import NumberParseException, ValidationResult

from hybridflow import events as ev
from hybridflow.errors import BadRequest

DEFAULT_REGION = "BR"
PHONE_DOMAIN = "s.whatsapp.net"
BRAZIL = 55

_PHONE_TEXT = re.compile(r"\+?[0-9 ().\-/]+")
_MOBILE_FIRST = "6789"  # first digit of a Brazilian 8-digit mobile subscriber number
_EXAMPLE = "+55 11 98765-4321"


@dataclass(frozen=True, slots=True)
class TypedChat:
    """A chat as typed, read: the ids it may mean (the one to create first), and whether it is a complete number."""

    typed: str
    jids: tuple[str, ...]
    complete: bool  # a full JID or a valid phone number: a not-yet-seen chat may be created as ``jids[0]``
    problem: str | None = None  # why it is not complete, naming what was typed

    @property
    def is_jid(self) -> bool:
        """Typed as a full JID (it is then matched exactly)."""
        return "@" in self.typed

    def require_complete(self) -> str:
        """The id to create a chat with; ``BadRequest`` when the number is incomplete or invalid."""
        if not self.complete:
            raise BadRequest(self.problem or f"not a complete phone number: {self.typed!r}")
        return self.jids[0]


def parse_chat(typed: str, region: str = DEFAULT_REGION) -> TypedChat:
    """Read a typed chat in ``region`` (ISO 3166 code). ``BadRequest`` when it is neither a JID nor a phone number.

    An incomplete or invalid number is not an error here (an existing chat may still have exactly those digits):
    it comes back with ``complete=False`` and a ``problem``.
    """
    text = typed.strip() if isinstance(typed, str) else ""
    region = region_code(region)
    if "@" in text:
        jid = ev.normalize_jid(text)
        if jid is None:
            raise _not_a_chat(typed)
        return TypedChat(text, (jid,), complete=True)
    if not _PHONE_TEXT.fullmatch(text) or not any(c.isdigit() for c in text):
        raise _not_a_chat(typed)
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return _incomplete(text, f"{text!r} is not a phone number of {region} nor one with its country code")
    forms, valid = _forms(number)
    if valid:
        return TypedChat(text, tuple(_jid(digits) for digits in forms), complete=True)
    # Exactly the digits typed, too: an existing chat of another country typed without its "+".
    jids = tuple(dict.fromkeys([*(_jid(digits) for digits in forms), *filter(None, [ev.normalize_jid(text)])]))
    return TypedChat(text, jids, complete=False, problem=_why_invalid(text, number, region))


def chat_jids(typed: str, region: str = DEFAULT_REGION) -> tuple[str, ...]:
    """Every id a typed chat may mean, the one to create first; ``BadRequest`` unless it is a complete number."""
    chat = parse_chat(typed, region)
    chat.require_complete()
    return chat.jids


def brazil_forms(national: str) -> tuple[str, ...]:
    """The WhatsApp digits of a Brazilian national number (DDD + subscriber): both forms of a mobile, the preferred
    first, or the one form of anything else."""
    if len(national) == 10 and national[2] in _MOBILE_FIRST:  # typed without the ninth digit
        return _preferred_first(national[:2], national[2:])
    if len(national) == 11 and national[2] == "9" and national[3] in _MOBILE_FIRST:
        return _preferred_first(national[:2], national[3:])
    return (f"{BRAZIL}{national}",)


# ---------------------------------------------------------------------------------------------------------------


def _forms(number: phonenumbers.PhoneNumber) -> tuple[tuple[str, ...], bool]:
    """The WhatsApp digits a parsed number may be, and whether the number is valid."""
    digits = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164).lstrip("+")
    if number.country_code != BRAZIL:
        return (digits,), phonenumbers.is_valid_number(number)
    national = phonenumbers.national_significant_number(number)
    forms = brazil_forms(national)
    # Validity is checked on the 9-digit form: libphonenumber no longer knows 8-digit mobiles.
    ninth = next((form for form in forms if len(form) == 13), forms[0])
    return forms, phonenumbers.is_valid_number(phonenumbers.parse("+" + ninth))


def _preferred_first(ddd: str, subscriber: str) -> tuple[str, ...]:
    # The form Evolution's createJid addresses (formatBRNumber): the 9 is dropped for DDD 31 and above when the
    # subscriber number starts with 7-9. A chat created before its first message should have the id it will have.
    with_nine, without_nine = f"{BRAZIL}{ddd}9{subscriber}", f"{BRAZIL}{ddd}{subscriber}"
    if int(ddd) >= 31 and subscriber[0] >= "7":
        return without_nine, with_nine
    return with_nine, without_nine


def _why_invalid(text: str, number: phonenumbers.PhoneNumber, region: str) -> str:
    reason = phonenumbers.is_possible_number_with_reason(number)
    area = "area code (DDD)" if number.country_code == BRAZIL else "area code"
    national = phonenumbers.national_significant_number(number)
    local_only = number.country_code == BRAZIL and len(national) in (8, 9)  # a subscriber number, no DDD
    if local_only or reason in (ValidationResult.TOO_SHORT, ValidationResult.IS_POSSIBLE_LOCAL_ONLY):
        what = f"is too short for a phone number: type it with its {area}"
    elif reason == ValidationResult.TOO_LONG:
        what = "is too long for a phone number"
    elif reason == ValidationResult.INVALID_COUNTRY_CODE:
        what = "has an unknown country code"
    else:
        where = phonenumbers.region_code_for_country_code(number.country_code)
        what = f"is not a valid phone number of {where if where != 'ZZ' else region}"
    return f"{text!r} {what}, for example {_EXAMPLE}"


def _incomplete(text: str, problem: str) -> TypedChat:
    jid = ev.normalize_jid(text)
    return TypedChat(text, (jid,) if jid else (), complete=False, problem=f"{problem}, for example {_EXAMPLE}")


def region_code(region: str) -> str:
    """An ISO 3166 region code as phonenumbers knows it (``br`` -> ``BR``); ValueError naming an unknown one."""
    code = region.strip().upper() if isinstance(region, str) else ""
    if code not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"unknown region {region!r}: use an ISO 3166 country code such as BR")
    return code


def _jid(digits: str) -> str:
    return f"{digits}@{PHONE_DOMAIN}"


def _not_a_chat(typed: object) -> BadRequest:
    return BadRequest(f"not a chat id or phone number: {typed!r}")


__all__ = ["DEFAULT_REGION", "TypedChat", "brazil_forms", "chat_jids", "parse_chat", "region_code"]
