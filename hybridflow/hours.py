"""Business hours: what a person writes (``mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00``) -> a ``Schedule``
that answers "open now?", "when does that change?" and says so in Portuguese or English.

Pure functions, no I/O: every instant is passed in (aware; results are aware UTC). Refusals are ``InvalidHours``,
a ``ValueError`` (and a ``BadRequest``, so the CLI exits 2), naming what is wrong and what is accepted.

The written form, as decided:
- Comma-separated parts; a part is days, then windows ``HH:MM-HH:MM`` (``H:MM``, ``8h`` and ``8h30`` are read too)
  or ``closed``/``fechado``. Days: ``mon tue wed thu fri sat sun``, ``seg ter qua qui sex sab dom`` (``sáb``), the
  full English or Portuguese names (``monday``, ``segunda``), any case. ``mon-fri`` is a range, ``fri-mon`` wraps
  (fri sat sun mon); ``mon,wed,fri 09:00-12:00`` lists (a part with days only joins the next part), and a part
  with windows only adds them to the part before (``mon 08:00-12:00, 13:00-18:00``). Days not named are closed;
  a day named twice is refused.
- Windows are half-open [start, end): ``08:00-18:00`` is open at 17:59:59, closed at 18:00. ``24:00`` only ends a
  window; a window crossing midnight is refused (write two), so are empty and overlapping ones. Touching
  windows (``08:00-12:00 12:00-18:00``) are merged into one.
- ``closed`` dates (``2026-12-25``) and ``special`` dates (``2026-12-24 08:00-12:00``, or ``2026-12-24 closed``,
  which is a closed date) replace the weekday's hours for that local date. A date given twice is refused.
- Windows are wall-clock times in the zone. A time skipped by a DST jump means the first instant after the jump
  (02:30 on a spring-forward day is 03:00); a repeated time means its first occurrence (fold=0), so a window
  ending at 01:30 on a fall-back day ends before the clock goes back.
- Zones are IANA names (``tzdata`` is a dependency, for hosts without zone files), ``UTC`` or ``UTC-03:00``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, timezone, tzinfo
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_skeleton

from hybridflow.errors import BadRequest

DEFAULT_LOCALE = "pt_BR"
EXAMPLE = "mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00"
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # Monday first, as date.weekday()
_DAY_NAMES = {
    **{name: i for i, name in enumerate(DAYS)},
    **{name: i for i, name in enumerate(("seg", "ter", "qua", "qui", "sex", "sab", "dom"))},
    **{name: i for i, name in enumerate(("monday", "tuesday", "wednesday", "thursday", "friday", "saturday",
                                         "sunday"))},
    **{name: i for i, name in enumerate(("segunda", "terca", "quarta", "quinta", "sexta", "sabado", "domingo"))},
}
_CLOSED_WORDS = ("closed", "fechado")
_ACCEPTED_DAYS = "mon tue wed thu fri sat sun (or seg ter qua qui sex sab dom), ranges like mon-fri"
_TIME = re.compile(r"([0-9]{1,2})(?::([0-9]{2})|h([0-9]{2})?)", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_OFFSET_ZONE = re.compile(r"UTC([+-])([0-9]{2}):([0-9]{2})", re.ASCII)
_DAY_MINUTES = 24 * 60
_HORIZON = timedelta(days=371)  # a year and a week: every weekday and a yearly holiday are seen
_YEARS = range(2000, 3000)
_PHRASES = {  # the words around Babel's day names and times; (open, closed) with and without a next change
    "pt": {"now": "agora", "open": ("aberto até {}", "aberto"), "closed": ("fechado até {}", "fechado"),
           "hours": "horário de atendimento", "zone": "fuso"},
    "en": {"now": "now", "open": ("open until {}", "open"), "closed": ("closed until {}", "closed"),
           "hours": "business hours", "zone": "time zone"},
}


class InvalidHours(BadRequest, ValueError):
    """Business hours, a date or a time zone that cannot be read."""

    code = "invalid_hours"


class HoursMode(StrEnum):
    """When the AI answers: always, only outside business hours, or only inside them."""

    ALWAYS = "always"
    OUTSIDE = "outside"
    INSIDE = "inside"


def should_answer(mode: HoursMode | str, open_now: bool) -> bool:
    """Whether the AI answers now, in ``mode``, with the business open or not."""
    try:
        mode = HoursMode(mode)
    except ValueError:
        raise InvalidHours(f"unknown hours mode {mode!r}: use always, outside or inside") from None
    return mode is HoursMode.ALWAYS or (mode is HoursMode.INSIDE) == open_now


@dataclass(frozen=True, slots=True, order=True)
class Window:
    """Open from ``start`` to ``end`` (minutes after local midnight, ``end`` excluded, 1440 is 24:00)."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{_hhmm(self.start)}-{_hhmm(self.end)}"


@dataclass(frozen=True, slots=True)
class SpecialDay:
    """Other hours on one local date."""

    day: date
    windows: tuple[Window, ...]

    def __str__(self) -> str:
        return f"{self.day.isoformat()} {' '.join(map(str, self.windows))}"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly windows (Monday first), closed dates and special dates, in the time zone ``zone``."""

    weekly: tuple[tuple[Window, ...], ...]
    closed: tuple[date, ...] = ()
    special: tuple[SpecialDay, ...] = ()
    zone: str = "UTC"

    @classmethod
    def parse(cls, hours: str, *, closed: Iterable[str] = (), special: Iterable[str] = (),
              timezone: str | None = None, local_zone: tzinfo | None = None) -> Schedule:
        """Read ``--hours``, ``--closed`` and ``--special``. ``timezone=None``: ``local_zone``, by default the
        server's (``datetime.now().astimezone().tzinfo``; a fixed offset then, without DST: prefer a name)."""
        weekly = parse_hours(hours)
        closed_days = [parse_date(text, "closed date") for text in _texts(closed)]
        special_days = [parse_special(text) for text in _texts(special)]
        closed_days += [s.day for s in special_days if not s.windows]
        special_days = [s for s in special_days if s.windows]
        seen: set[date] = set()
        for day in [*closed_days, *(s.day for s in special_days)]:
            if day in seen:
                raise InvalidHours(f"{day.isoformat()} is given twice: give each closed or special date once")
            seen.add(day)
        if timezone is None:
            timezone = zone_name(local_zone if local_zone is not None else datetime.now().astimezone().tzinfo)
        get_zone(timezone)
        return cls(weekly, tuple(sorted(closed_days)), tuple(sorted(special_days, key=lambda s: s.day)), timezone)

    @property
    def tzinfo(self) -> tzinfo:
        """The schedule's time zone."""
        return get_zone(self.zone)

    def to_text(self) -> str:
        """The weekly hours in the canonical written form (every day named), which ``parse_hours`` reads back."""
        parts, first = [], 0
        for i in range(1, 8):
            if i == 7 or self.weekly[i] != self.weekly[first]:
                days = DAYS[first] if i - 1 == first else f"{DAYS[first]}-{DAYS[i - 1]}"
                windows = " ".join(map(str, self.weekly[first])) or "closed"
                parts.append(f"{days} {windows}")
                first = i
        return ", ".join(parts)

    def to_json(self) -> str:
        """The whole schedule as JSON, in the written forms (``from_json`` reads it back)."""
        return json.dumps({"hours": self.to_text(), "closed": [d.isoformat() for d in self.closed],
                           "special": [str(s) for s in self.special], "timezone": self.zone}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Schedule:
        """A schedule stored by ``to_json``; ``InvalidHours`` if it is not one."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError, RecursionError):
            raise InvalidHours("stored business hours are not JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("hours"), str) or not isinstance(
                data.get("timezone"), str) or not all(
                isinstance(data.get(key, []), list) and all(isinstance(v, str) for v in data.get(key, []))
                for key in ("closed", "special")):
            raise InvalidHours('stored business hours need {"hours": str, "timezone": str, "closed": [str], '
                               '"special": [str]}')
        return cls.parse(data["hours"], closed=data.get("closed", []), special=data.get("special", []),
                         timezone=data["timezone"])

    def windows_on(self, day: date) -> tuple[Window, ...]:
        """The windows of one local date: none when closed, its special hours, else its weekday's."""
        if day in self.closed:
            return ()
        return next((s.windows for s in self.special if s.day == day), self.weekly[day.weekday()])

    def is_open(self, at: datetime) -> bool:
        """Whether the business is open at the instant ``at``."""
        at = _utc(at)
        today = at.astimezone(self.tzinfo).date()
        return any(start <= at and (end is None or at < end)
                   for start, end in self._periods(today - timedelta(days=1), today + timedelta(days=1)))

    def next_change(self, at: datetime) -> datetime | None:
        """The first instant after ``at`` when it opens or closes (UTC); None if that never happens."""
        at = _utc(at)
        today = at.astimezone(self.tzinfo).date()
        dates = [*self.closed, *(s.day for s in self.special)]
        last = max([today + _HORIZON, *(day + timedelta(days=8) for day in dates)])
        for start, end in self._periods(today - timedelta(days=1), last):
            if at < start:
                return start
            if end is None:
                return None
            if at < end:
                return end
        return None

    def next_open(self, at: datetime) -> datetime | None:
        """The first instant from ``at`` on when it is open: ``at`` itself when open; None if it never opens."""
        return _utc(at) if self.is_open(at) else self.next_change(at)

    def describe_now(self, at: datetime, locale: str = DEFAULT_LOCALE) -> str:
        """Now and the state, for the model: "now: Tuesday 14:05, open until 18:00" (in the locale's language)."""
        loc, phrases = _locale(locale)
        now = _utc(at).astimezone(self.tzinfo)
        change = self.next_change(at)
        until, bare = phrases["open" if self.is_open(at) else "closed"]
        state = bare if change is None else until.format(_when(change.astimezone(self.tzinfo), now, loc, " "))
        return f"{phrases['now']}: {_weekday(now, loc)} {_time(now, loc)}, {state}"

    def brief(self, at: datetime, locale: str = DEFAULT_LOCALE) -> str:
        """What the model is told: the weekly hours and zone, then ``describe_now``, in the locale's language:
        "business hours (time zone America/Sao_Paulo): mon-fri 08:00-18:00, sat-sun closed. now: Tuesday 14:05,
        open until 18:00"."""
        _, phrases = _locale(locale)
        return f"{phrases['hours']} ({phrases['zone']} {self.zone}): {self.to_text()}. {self.describe_now(at, locale)}"

    def format_next_open(self, at: datetime, locale: str = DEFAULT_LOCALE) -> str | None:
        """The next opening for an away message's ``{next_open}``: "segunda-feira, 08:00"; None if it never opens."""
        loc, _ = _locale(locale)
        opening = self.next_open(at)
        if opening is None:
            return None
        now = _utc(at).astimezone(self.tzinfo)
        return _when(opening.astimezone(self.tzinfo), now, loc, ", ", weekday_today=True)

    def _periods(self, first: date, last: date) -> Iterator[tuple[datetime, datetime | None]]:
        """Open periods (UTC) of the local dates ``first``..``last``, merged across midnight, in order; an end of
        None: still open when ``last`` ends."""
        zone, current = self.tzinfo, None
        for n in range((last - first).days + 1):
            day = first + timedelta(days=n)
            for window in self.windows_on(day):
                start, end = _instant(day, window.start, zone), _instant(day, window.end, zone)
                if start >= end:  # the whole window is in a skipped hour
                    continue
                if current is not None and start <= current[1]:
                    current = (current[0], max(current[1], end))
                    continue
                if current is not None:
                    yield current
                current = (start, end)
        if current is not None:
            yield current[0], None if current[1] >= _instant(last + timedelta(days=1), 0, zone) else current[1]


# --- reading ---------------------------------------------------------------------------------------------------


def parse_hours(text: str) -> tuple[tuple[Window, ...], ...]:
    """Read the weekly hours: seven tuples of windows, Monday first."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidHours(f"no business hours given: write days and hours, e.g. {EXAMPLE!r}")
    weekly: list[tuple[Window, ...] | None] = [None] * 7
    groups: list[tuple[list[int], list[str]]] = []  # (days, window tokens)
    pending: list[int] = []  # days of parts without windows, waiting for the next part's windows
    for part in _normalize(text).split(","):
        tokens = part.split()
        if not tokens:
            raise InvalidHours(f"an empty part between commas in {text.strip()!r}: write e.g. {EXAMPLE!r}")
        days: list[int] = []
        while tokens and _is_days(tokens[0]):
            days += _days(tokens.pop(0))
        if not days and not pending:
            if not groups:
                _refuse_unknown_day(tokens[0])
                raise InvalidHours(f"{part.strip()!r} does not start with days: write e.g. {EXAMPLE!r}")
            groups[-1][1].extend(tokens)
        elif not tokens:
            pending += days
        else:
            groups.append((pending + days, tokens))
            pending = []
    if pending:
        raise InvalidHours(f"no hours for {', '.join(DAYS[d] for d in pending)}: write e.g. 'sat 08:00-12:00' "
                           "or 'sat closed'")
    for days, tokens in groups:
        windows = parse_windows(tokens, " ".join(DAYS[d] for d in days))
        for day in days:
            if weekly[day] is not None:
                raise InvalidHours(f"{DAYS[day]} is named twice: name each day once")
            weekly[day] = windows
    return tuple(w or () for w in weekly)


def parse_windows(tokens: list[str], where: str) -> tuple[Window, ...]:
    """Read the windows of one day (``closed`` for none), sorted, touching ones merged; ``where`` names the day."""
    if any(t in _CLOSED_WORDS for t in tokens):
        if len(tokens) > 1:
            raise InvalidHours(f"{where}: 'closed' cannot be mixed with hours ({' '.join(tokens)!r})")
        return ()
    windows = sorted(_window(token, where) for token in tokens)
    merged: list[Window] = []
    for window in windows:
        if merged and window.start < merged[-1].end:
            raise InvalidHours(f"{where}: {merged[-1]} and {window} overlap: windows of one day must not overlap")
        if merged and window.start == merged[-1].end:
            merged[-1] = Window(merged[-1].start, window.end)
        else:
            merged.append(window)
    return tuple(merged)


def parse_date(text: str, what: str = "date") -> date:
    """Read a date written YYYY-MM-DD."""
    text = text.strip() if isinstance(text, str) else ""
    try:
        day = date.fromisoformat(text) if _DATE.fullmatch(text) else None
    except ValueError:
        day = None
    if day is None or day.year not in _YEARS:
        raise InvalidHours(f"{what} {text!r} is not a date: write YYYY-MM-DD (years {_YEARS[0]}-{_YEARS[-1]}), "
                           "e.g. 2026-12-25")
    return day


def parse_special(text: str) -> SpecialDay:
    """Read ``--special``: a date, then its windows or ``closed`` (no windows)."""
    parts = _normalize(text).split() if isinstance(text, str) else []
    if len(parts) < 2:
        raise InvalidHours(f"special hours {text!r} need a date and hours: write e.g. '2026-12-24 08:00-12:00' "
                           "or '2026-12-24 closed'")
    day = parse_date(parts[0], "special date")
    return SpecialDay(day, parse_windows(parts[1:], day.isoformat()))


def next_wall_time(text: str, at: datetime, zone: tzinfo) -> datetime:
    """The first instant after ``at`` when the clock in ``zone`` reads ``text`` (``18:00``, ``18h``): today's, or
    tomorrow's when today's has passed. ``InvalidHours`` for what is not a time of day."""
    if not _TIME.fullmatch(text.strip()):
        raise InvalidHours(f"{text!r} is not a time of day: write HH:MM, e.g. 18:00")
    minute = _minutes(text.strip(), "until")
    today = _utc(at).astimezone(zone).date()
    for day in (today, today + timedelta(days=1)):
        instant = _instant(day, minute, zone)
        if instant > _utc(at):
            return instant
    return _instant(today + timedelta(days=2), minute, zone)


def get_zone(name: str) -> tzinfo:
    """The time zone of an IANA name, ``UTC`` or ``UTC±HH:MM``; ``InvalidHours`` naming an unknown one."""
    offset = _OFFSET_ZONE.fullmatch(name) if isinstance(name, str) else None
    if offset and int(offset[2]) < 24 and int(offset[3]) < 60:
        sign = -1 if offset[1] == "-" else 1
        return timezone(sign * timedelta(hours=int(offset[2]), minutes=int(offset[3])), name)
    try:
        if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*", name, re.ASCII):
            return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    raise InvalidHours(f"unknown time zone {name!r}: give an IANA name such as America/Sao_Paulo or Europe/Lisbon "
                       "(or UTC, UTC-03:00)")


def zone_name(zone: tzinfo | None) -> str:
    """The name ``get_zone`` reads back for a tzinfo: a ZoneInfo's key, or ``UTC±HH:MM`` for a fixed offset."""
    if isinstance(zone, ZoneInfo):
        return zone.key
    offset = zone.utcoffset(None) if isinstance(zone, timezone) else None
    if offset is None:
        raise InvalidHours(f"cannot name the time zone {zone!r}: give one, e.g. America/Sao_Paulo")
    if not offset:
        return "UTC"
    minutes = int(abs(offset).total_seconds()) // 60
    return f"UTC{'-' if offset < timedelta(0) else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


def _texts(values: Iterable[str]) -> list[str]:
    return [values] if isinstance(values, str) else list(values)


def _normalize(text: str) -> str:
    """Lower case, accents dropped (sáb, terça), dashes as '-', no spaces around them."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"\s*[-\u2010-\u2015]\s*", "-", text)


def _is_days(token: str) -> bool:
    return all(name in _DAY_NAMES for name in token.split("-"))


def _days(token: str) -> list[int]:
    """The weekdays of ``mon``, ``mon-fri`` or a wrapping ``fri-mon``."""
    names = token.split("-")
    if len(names) == 1:
        return [_DAY_NAMES[names[0]]]
    if len(names) != 2:
        raise InvalidHours(f"{token!r} is not a day range: write two days, e.g. mon-fri")
    first, last = _DAY_NAMES[names[0]], _DAY_NAMES[names[1]]
    if first == last:
        raise InvalidHours(f"{token!r} starts and ends on the same day: write {DAYS[first]} or a range like mon-fri")
    return [(first + i) % 7 for i in range((last - first) % 7 + 1)]


def _window(token: str, where: str) -> Window:
    bounds = token.split("-")
    if _is_days(token):
        raise InvalidHours(f"{where}: {token!r} comes after hours: write the days first, e.g. {EXAMPLE!r}")
    if len(bounds) != 2 or not all(_TIME.fullmatch(b) for b in bounds):
        _refuse_unknown_day(token)
        raise InvalidHours(f"{where}: {token!r} is not a window: write HH:MM-HH:MM, e.g. 08:00-12:00")
    start, end = (_minutes(b, where) for b in bounds)
    if start == _DAY_MINUTES:
        raise InvalidHours(f"{where}: {token!r} starts at 24:00: 24:00 can only end a window")
    if start == end:
        raise InvalidHours(f"{where}: the window {token!r} is empty: its end must come after its start")
    if end < start:
        raise InvalidHours(f"{where}: the window {token!r} crosses midnight: write two windows: "
                           f"{_hhmm(start)}-24:00 and 00:00-{_hhmm(end)} (the second on the next day)")
    return Window(start, end)


def _refuse_unknown_day(token: str) -> None:
    """Name the unknown day when ``token`` is letters (``xyz``, ``mon-xyz``), not a mistyped window."""
    unknown = [name for name in token.split("-") if name not in _DAY_NAMES]
    if unknown and not any(c.isdigit() or c == ":" for c in token) and any(c.isalpha() for c in token):
        raise InvalidHours(f"unknown day {unknown[0]!r}: write {_ACCEPTED_DAYS}")


def _minutes(text: str, where: str) -> int:
    match = _TIME.fullmatch(text)
    assert match is not None
    hour, minute = int(match[1]), int(match[2] or match[3] or 0)
    if minute > 59 or hour > 24 or (hour == 24 and minute):
        raise InvalidHours(f"{where}: {text!r} is not a time: hours go from 00 to 23 (24:00 only ends a window), "
                           "minutes from 00 to 59")
    return hour * 60 + minute


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


# --- instants and words ----------------------------------------------------------------------------------------


def _utc(at: datetime) -> datetime:
    if not isinstance(at, datetime) or at.utcoffset() is None:
        raise ValueError(f"an aware datetime is needed, not {at!r}")
    return at.astimezone(UTC)


def _instant(day: date, minute: int, zone: tzinfo) -> datetime:
    """The UTC instant of a wall-clock time of ``day``: a repeated one's first occurrence (fold=0), a skipped one's
    first instant after the jump."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    first = wall.replace(tzinfo=zone).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == wall:
        return first
    # Skipped: fold=0 reads it with the offset before the jump (an instant after it), fold=1 with the offset after
    # (an instant before it). The jump is the first second between them whose wall clock reaches ``wall``.
    low, high = int(wall.replace(tzinfo=zone, fold=1).timestamp()), int(first.timestamp())
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.fromtimestamp(middle, zone).replace(tzinfo=None) >= wall:
            high = middle
        else:
            low = middle
    return datetime.fromtimestamp(high, UTC)


def check_locale(name: str) -> str:
    """A supported locale's canonical name (``pt-br`` -> ``pt_BR``); ``InvalidHours`` naming an unsupported one."""
    return str(_locale(name)[0])


def _locale(name: str) -> tuple[Locale, dict]:
    try:
        locale = Locale.parse(name.replace("-", "_") if isinstance(name, str) else name)
    except (UnknownLocaleError, ValueError, TypeError):
        locale = None
    if locale is None or locale.language not in _PHRASES:
        raise InvalidHours(f"unsupported locale {name!r}: use pt_BR, pt_PT, en or en_US")
    return locale, _PHRASES[locale.language]


def _weekday(moment: datetime, locale: Locale) -> str:
    return format_date(moment, "EEEE", locale=locale)


def _time(moment: datetime, locale: Locale) -> str:
    return format_skeleton("Hm", moment, locale=locale)


def _when(moment: datetime, now: datetime, locale: Locale, sep: str, weekday_today: bool = False) -> str:
    """``moment`` (local) said from ``now``: the time today, the weekday and time within 6 days, else with the date."""
    days = (moment.date() - now.date()).days
    if days == 0 and not weekday_today:
        return _time(moment, locale)
    if days < 7:
        return f"{_weekday(moment, locale)}{sep}{_time(moment, locale)}"
    return f"{_weekday(moment, locale)}, {format_skeleton('MMMMd', moment, locale=locale)}, {_time(moment, locale)}"
