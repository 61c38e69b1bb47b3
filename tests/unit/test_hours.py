"""Business hours: reading what a person writes, open or closed at an instant, the next change across DST, the words."""

from __future__ import annotations

import re

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybridflow.errors import BadRequest
from hybridflow.hours import (
    EXAMPLE,
    HoursMode,
    InvalidHours,
    Schedule,
    SpecialDay,
    Window,
    get_zone,
    parse_hours,
    should_answer,
    zone_name,
)

LISBON = "Europe/Lisbon"
NEW_YORK = "America/New_York"
SHOP = "mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00"
PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def w(text: str) -> Window:
    start, end = (int(t[:2]) * 60 + int(t[3:]) for t in text.split("-"))
    return Window(start, end)


def local(zone: str, *args: int) -> datetime:
    """An instant given as a wall-clock time in ``zone`` (fold=0), as UTC."""
    return datetime(*args, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def shop(**kwargs) -> Schedule:
    return Schedule.parse(SHOP, timezone=kwargs.pop("timezone", LISBON), **kwargs)


# --- reading -----------------------------------------------------------------------------------------------------


def test_the_example_reads_as_written_and_unnamed_days_are_closed() -> None:
    weekly = parse_hours(SHOP)
    assert weekly[:5] == ((w("08:00-12:00"), w("13:30-18:00")),) * 5
    assert weekly[5] == (w("08:00-12:00"),)
    assert weekly[6] == ()
    assert EXAMPLE == SHOP


@pytest.mark.parametrize(("text", "canonical"), [
    ("mon-fri 08:00-18:00", "mon-fri 08:00-18:00, sat-sun closed"),
    ("MON-FRI 08:00-18:00", "mon-fri 08:00-18:00, sat-sun closed"),
    ("mon,wed,fri 09:00-12:00", "mon 09:00-12:00, tue closed, wed 09:00-12:00, thu closed, fri 09:00-12:00, "
                                "sat-sun closed"),
    ("mon, wed, fri 09:00-12:00", "mon 09:00-12:00, tue closed, wed 09:00-12:00, thu closed, fri 09:00-12:00, "
                                  "sat-sun closed"),
    ("mon wed 09:00-12:00", "mon 09:00-12:00, tue closed, wed 09:00-12:00, thu-sun closed"),
    ("fri-mon 10:00-14:00", "mon 10:00-14:00, tue-thu closed, fri-sun 10:00-14:00"),
    ("sat-sun 10:00-14:00", "mon-fri closed, sat-sun 10:00-14:00"),
    ("seg-sex 08:00-18:00, sáb 08:00-12:00, dom fechado", "mon-fri 08:00-18:00, sat 08:00-12:00, sun closed"),
    ("Seg,Qua 8:00-12:00, ter qui 08:00-12:00, sab 9:00-10:00", "mon-thu 08:00-12:00, fri closed, sat 09:00-10:00, "
                                                                "sun closed"),
    ("segunda-sexta 8h-18h, sábado 8h30-12h", "mon-fri 08:00-18:00, sat 08:30-12:00, sun closed"),
    ("monday-friday 08:00-18:00", "mon-fri 08:00-18:00, sat-sun closed"),
    ("mon - fri 08:00 - 18:00", "mon-fri 08:00-18:00, sat-sun closed"),
    ("mon–fri 08:00–18:00", "mon-fri 08:00-18:00, sat-sun closed"),  # en dashes
    ("mon 13:30-18:00 08:00-12:00", "mon 08:00-12:00 13:30-18:00, tue-sun closed"),  # any order
    ("mon 08:00-12:00, 13:30-18:00", "mon 08:00-12:00 13:30-18:00, tue-sun closed"),  # windows continue a part
    ("mon 08:00-12:00 12:00-18:00", "mon 08:00-18:00, tue-sun closed"),  # touching windows merge
    ("mon-sun 00:00-24:00", "mon-sun 00:00-24:00"),
    ("mon 22:00-24:00, tue 00:00-02:00", "mon 22:00-24:00, tue 00:00-02:00, wed-sun closed"),
    ("mon-sun closed", "mon-sun closed"),
])
def test_every_written_form_reads_and_prints_canonically(text: str, canonical: str) -> None:
    schedule = Schedule.parse(text, timezone="UTC")
    assert schedule.to_text() == canonical
    assert Schedule.parse(canonical, timezone="UTC") == schedule


@pytest.mark.parametrize(("text", "message"), [
    ("", "no business hours given: write days and hours, e.g. 'mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00'"),
    ("   ", "no business hours given"),
    ("mon 25:00-26:00", "mon: '25:00' is not a time: hours go from 00 to 23 (24:00 only ends a window), "
                        "minutes from 00 to 59"),
    ("mon 08:60-09:00", "mon: '08:60' is not a time"),
    ("mon 24:30-24:45", "mon: '24:30' is not a time"),
    ("mon 24:00-24:00", "mon: '24:00-24:00' starts at 24:00: 24:00 can only end a window"),
    ("mon 09:00-09:00", "mon: the window '09:00-09:00' is empty: its end must come after its start"),
    ("fri 22:00-02:00", "fri: the window '22:00-02:00' crosses midnight: write two windows: 22:00-24:00 and "
                        "00:00-02:00 (the second on the next day)"),
    ("mon 08:00-12:00 11:00-13:00", "mon: 08:00-12:00 and 11:00-13:00 overlap: windows of one day must not overlap"),
    ("mon-fri 08:00-12:00 08:00-18:00", "mon tue wed thu fri: 08:00-12:00 and 08:00-18:00 overlap"),
    ("xyz 08:00-12:00", "unknown day 'xyz': write mon tue wed thu fri sat sun (or seg ter qua qui sex sab dom), "
                        "ranges like mon-fri"),
    ("mon-xyz 08:00-12:00", "unknown day 'xyz'"),
    ("mon 08:00-12:00, fry 13:00-14:00", "unknown day 'fry'"),
    ("mon-fri 08:00-12:00, fri 13:00-14:00", "fri is named twice: name each day once"),
    ("mon 08:00-12:00, mon 13:00-14:00", "mon is named twice: name each day once"),
    ("garbage", "unknown day 'garbage'"),
    ("!!!", "'!!!' does not start with days: write e.g. 'mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00'"),
    ("08:00-12:00", "'08:00-12:00' does not start with days"),
    ("mon", "no hours for mon: write e.g. 'sat 08:00-12:00' or 'sat closed'"),
    ("mon-fri 08:00-12:00, sat", "no hours for sat"),
    ("mon 08:00", "mon: '08:00' is not a window: write HH:MM-HH:MM, e.g. 08:00-12:00"),
    ("mon 8-12", "mon: '8-12' is not a window"),
    ("mon 08:00-12:00 tue", "mon: 'tue' comes after hours: write the days first"),
    ("mon,,tue 08:00-12:00", "an empty part between commas"),
    ("mon 08:00-12:00,", "an empty part between commas"),
    ("mon-mon 08:00-12:00", "'mon-mon' starts and ends on the same day: write mon or a range like mon-fri"),
    ("mon-wed-fri 08:00-12:00", "'mon-wed-fri' is not a day range: write two days, e.g. mon-fri"),
    ("mon closed 08:00-12:00", "mon: 'closed' cannot be mixed with hours"),
    ("mon ٠٨:٠٠-١٢:٠٠", "mon: '٠٨:٠٠-١٢:٠٠' is not a window"),  # only ASCII digits
])
def test_each_refusal_names_what_is_wrong_and_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(InvalidHours) as caught:
        Schedule.parse(text, timezone="UTC")
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, BadRequest)


def test_closed_and_special_dates_are_read() -> None:
    schedule = shop(closed=["2026-12-25", " 2027-01-01 "], special=["2026-12-24 08:00-12:00 14:00-16:00",
                                                                     "2026-12-31 closed"])
    assert schedule.closed == (date(2026, 12, 25), date(2026, 12, 31), date(2027, 1, 1))
    assert schedule.special == (SpecialDay(date(2026, 12, 24), (w("08:00-12:00"), w("14:00-16:00"))),)
    assert shop(closed="2026-12-25").closed == (date(2026, 12, 25),)  # one string is one date


@pytest.mark.parametrize(("closed", "special", "message"), [
    (["2026-13-01"], [], "closed date '2026-13-01' is not a date: write YYYY-MM-DD (years 2000-2999), e.g. 2026-12-25"),
    (["2026-02-30"], [], "closed date '2026-02-30' is not a date"),
    (["25/12/2026"], [], "closed date '25/12/2026' is not a date"),
    (["20261225"], [], "closed date '20261225' is not a date"),
    (["9999-12-31"], [], "closed date '9999-12-31' is not a date"),
    ([], ["2026-12-24"], "special hours '2026-12-24' need a date and hours: write e.g. '2026-12-24 08:00-12:00' or "
                         "'2026-12-24 closed'"),
    ([], ["2026-12-32 08:00-12:00"], "special date '2026-12-32' is not a date"),
    ([], ["2026-12-24 22:00-02:00"], "2026-12-24: the window '22:00-02:00' crosses midnight"),
    ([], ["2026-12-24 08:00-12:00 11:00-13:00"], "2026-12-24: 08:00-12:00 and 11:00-13:00 overlap"),
    (["2026-12-25", "2026-12-25"], [], "2026-12-25 is given twice: give each closed or special date once"),
    (["2026-12-24"], ["2026-12-24 08:00-12:00"], "2026-12-24 is given twice"),
    ([], ["2026-12-24 08:00-12:00", "2026-12-24 13:00-14:00"], "2026-12-24 is given twice"),
    (["2026-12-24"], ["2026-12-24 closed"], "2026-12-24 is given twice"),
])
def test_bad_dates_are_refused(closed: list[str], special: list[str], message: str) -> None:
    with pytest.raises(InvalidHours, match="^" + re.escape(message)):
        shop(closed=closed, special=special)


@pytest.mark.parametrize("name", ["Mars/Base", "America", "", "../etc/passwd", "UTC+25:00", "leapseconds"])
def test_an_unknown_time_zone_is_refused_naming_it(name: str) -> None:
    message = f"unknown time zone {name!r}: give an IANA name such as America/Sao_Paulo or Europe/Lisbon"
    with pytest.raises(InvalidHours, match="^" + re.escape(message)):
        shop(timezone=name)


def test_no_time_zone_means_the_local_one_given() -> None:
    assert Schedule.parse(SHOP, local_zone=ZoneInfo(LISBON)).zone == LISBON
    assert Schedule.parse(SHOP, local_zone=timezone(timedelta(hours=-3), "-03")).zone == "UTC-03:00"
    assert Schedule.parse(SHOP, local_zone=UTC).zone == "UTC"
    assert zone_name(timezone(timedelta(hours=5, minutes=30))) == "UTC+05:30"
    assert get_zone("UTC+05:30").utcoffset(None) == timedelta(hours=5, minutes=30)
    assert Schedule.parse(SHOP, timezone=None).zone  # the server's, whatever it is


def test_the_stored_form_reads_back_to_the_same_schedule() -> None:
    schedule = shop(closed=["2026-12-25"], special=["2026-12-24 08:00-12:00", "2026-12-31 closed"])
    stored = schedule.to_json()
    assert Schedule.from_json(stored) == schedule
    assert stored == ('{"hours": "mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00, sun closed", '
                      '"closed": ["2026-12-25", "2026-12-31"], "special": ["2026-12-24 08:00-12:00"], '
                      '"timezone": "Europe/Lisbon"}')
    assert Schedule.parse(schedule.to_text(), timezone=LISBON).weekly == schedule.weekly


@pytest.mark.parametrize("stored", ["", "null", "[]", '{"hours": 1, "timezone": "UTC"}', '{"hours": "mon closed"}',
                                    '{"hours": "mon closed", "timezone": "UTC", "closed": "2026-12-25"}',
                                    '{"hours": "mon closed", "timezone": "UTC", "special": [1]}'])
def test_a_stored_form_that_is_not_one_is_refused(stored: str) -> None:
    with pytest.raises(InvalidHours, match="^stored business hours"):
        Schedule.from_json(stored)


# --- open or closed ----------------------------------------------------------------------------------------------


def test_windows_are_half_open_in_local_time() -> None:
    schedule = Schedule.parse("mon-fri 08:00-18:00", timezone=LISBON)  # summer: UTC+1
    assert not schedule.is_open(local(LISBON, 2026, 7, 7, 7, 59, 59))
    assert schedule.is_open(local(LISBON, 2026, 7, 7, 8, 0, 0))
    assert schedule.is_open(local(LISBON, 2026, 7, 7, 17, 59, 59))
    assert not schedule.is_open(local(LISBON, 2026, 7, 7, 18, 0, 0))
    assert schedule.is_open(utc(2026, 7, 7, 16, 59, 59)) and not schedule.is_open(utc(2026, 7, 7, 17))
    assert schedule.next_change(local(LISBON, 2026, 7, 7, 17, 59, 59)) == local(LISBON, 2026, 7, 7, 18)


def test_the_instant_may_be_given_in_any_zone_but_must_be_aware() -> None:
    schedule = Schedule.parse("mon-fri 08:00-18:00", timezone=LISBON)
    assert schedule.is_open(datetime(2026, 7, 7, 9, 0, tzinfo=ZoneInfo("America/Sao_Paulo")))  # 13:00 in Lisbon
    with pytest.raises(ValueError, match="aware"):
        schedule.is_open(datetime(2026, 7, 7, 9, 0))


def test_a_lunch_break_closes_and_reopens() -> None:
    schedule = shop()
    tuesday = (2026, 1, 6)  # winter: Lisbon is UTC
    assert schedule.is_open(utc(*tuesday, 11, 59)) and not schedule.is_open(utc(*tuesday, 12, 0))
    assert not schedule.is_open(utc(*tuesday, 13, 29, 59)) and schedule.is_open(utc(*tuesday, 13, 30))
    assert schedule.next_change(utc(*tuesday, 10)) == utc(*tuesday, 12)
    assert schedule.next_change(utc(*tuesday, 12)) == utc(*tuesday, 13, 30)
    assert schedule.next_open(utc(*tuesday, 12, 10)) == utc(*tuesday, 13, 30)
    assert schedule.next_open(utc(*tuesday, 10)) == utc(*tuesday, 10)  # open now: now


def test_a_holiday_is_closed_all_day() -> None:
    schedule = shop(closed=["2026-12-25"])  # a Friday
    assert shop().is_open(utc(2026, 12, 25, 10)) and not schedule.is_open(utc(2026, 12, 25, 10))
    assert schedule.next_open(utc(2026, 12, 24, 19)) == utc(2026, 12, 26, 8)
    assert schedule.is_open(utc(2026, 12, 24, 10)) and schedule.is_open(utc(2026, 12, 26, 10))


def test_a_special_day_has_its_own_hours() -> None:
    schedule = shop(special=["2026-12-24 09:00-13:00", "2026-12-27 10:00-12:00"])  # a Thursday and a Sunday
    assert schedule.is_open(utc(2026, 12, 24, 12, 30))  # lunch break on other Thursdays
    assert not schedule.is_open(utc(2026, 12, 24, 8, 30)) and not schedule.is_open(utc(2026, 12, 24, 15))
    assert schedule.next_change(utc(2026, 12, 24, 10)) == utc(2026, 12, 24, 13)
    assert schedule.next_open(utc(2026, 12, 26, 13)) == utc(2026, 12, 27, 10)  # a Sunday, open this once


def test_next_open_from_friday_evening_is_monday_morning() -> None:
    schedule = Schedule.parse("mon-fri 08:00-18:00", timezone=LISBON)
    friday = local(LISBON, 2026, 1, 9, 19, 30)
    assert schedule.next_open(friday) == schedule.next_change(friday) == local(LISBON, 2026, 1, 12, 8)
    assert schedule.format_next_open(friday) == "segunda-feira, 08:00"
    assert schedule.format_next_open(friday, "en") == "Monday, 08:00"


def test_an_evening_and_the_next_morning_make_one_open_period() -> None:
    schedule = Schedule.parse("mon 20:00-24:00, tue 00:00-02:00", timezone=LISBON)
    assert schedule.next_change(utc(2026, 1, 5, 21)) == utc(2026, 1, 6, 2)  # not at midnight
    assert schedule.is_open(utc(2026, 1, 6, 0)) and not schedule.is_open(utc(2026, 1, 6, 2))


def test_a_schedule_that_never_opens_or_never_closes_has_no_next_change() -> None:
    never = Schedule.parse("mon-sun closed", timezone=LISBON)
    assert never.next_change(utc(2026, 1, 6)) is None and never.next_open(utc(2026, 1, 6)) is None
    assert never.format_next_open(utc(2026, 1, 6)) is None
    always = Schedule.parse("mon-sun 00:00-24:00", timezone=NEW_YORK)
    assert always.is_open(utc(2026, 3, 8, 7)) and always.next_change(utc(2026, 3, 8, 7)) is None
    holiday = Schedule.parse("mon-sun 00:00-24:00", closed=["2026-12-25"], timezone=LISBON)
    assert holiday.next_change(utc(2026, 1, 6)) == utc(2026, 12, 25)


def test_a_far_special_day_is_found_by_next_open() -> None:
    schedule = Schedule.parse("mon-sun closed", special=["2028-06-01 10:00-11:00"], timezone=LISBON)
    assert schedule.next_open(utc(2026, 1, 6)) == local(LISBON, 2028, 6, 1, 10)


# --- daylight saving time ------------------------------------------------------------------------------------------
# New York, 2026-03-08: at 02:00 EST (07:00 UTC) clocks jump to 03:00 EDT. 2026-11-01: at 02:00 EDT (06:00 UTC) they
# go back to 01:00 EST, so 01:00-02:00 happens twice.


def test_spring_forward_keeps_wall_clock_windows() -> None:
    schedule = Schedule.parse("mon-sun 08:00-18:00", timezone=NEW_YORK)
    assert schedule.next_change(utc(2026, 3, 8, 12)) == utc(2026, 3, 8, 22)  # 18:00 EDT
    assert schedule.next_change(utc(2026, 3, 7, 14)) == utc(2026, 3, 7, 23)  # 18:00 EST the day before
    assert schedule.next_change(utc(2026, 3, 7, 12)) == utc(2026, 3, 7, 13)  # 08:00 EST
    assert schedule.next_change(utc(2026, 3, 8, 0)) == utc(2026, 3, 8, 12)  # 08:00 EDT
    assert schedule.is_open(utc(2026, 3, 8, 12)) and not schedule.is_open(utc(2026, 3, 8, 11, 59))


def test_a_window_starting_in_the_skipped_hour_starts_when_the_clock_jumps() -> None:
    schedule = Schedule.parse("sun 01:00-01:30 02:30-04:00", timezone=NEW_YORK)
    assert not schedule.is_open(utc(2026, 3, 8, 6, 59, 59))  # 01:59:59 EST
    assert schedule.is_open(utc(2026, 3, 8, 7))  # 03:00 EDT, the first instant after 02:30 EST would have been
    assert schedule.next_change(utc(2026, 3, 8, 6, 45)) == utc(2026, 3, 8, 7)
    assert schedule.next_change(utc(2026, 3, 8, 7)) == utc(2026, 3, 8, 8)  # 04:00 EDT
    inside = Schedule.parse("sun 02:10-02:50, mon 08:00-09:00", timezone=NEW_YORK)  # never happens that day
    assert inside.next_open(utc(2026, 3, 8, 6)) == local(NEW_YORK, 2026, 3, 9, 8)


def test_fall_back_reads_a_repeated_time_as_its_first_occurrence() -> None:
    schedule = Schedule.parse("sun 01:00-01:30 02:30-04:00", timezone=NEW_YORK)
    assert schedule.is_open(utc(2026, 11, 1, 5, 15))  # 01:15 EDT
    assert schedule.next_change(utc(2026, 11, 1, 5)) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert not schedule.is_open(utc(2026, 11, 1, 6, 15))  # 01:15 EST, the second time: closed (fold=0)
    assert schedule.next_change(utc(2026, 11, 1, 5, 30)) == utc(2026, 11, 1, 7, 30)  # 02:30 EST
    across = Schedule.parse("sun 00:00-03:00", timezone=NEW_YORK)  # 4 hours long that night
    assert across.next_change(utc(2026, 11, 1, 4)) == utc(2026, 11, 1, 8)
    assert across.is_open(utc(2026, 11, 1, 6, 30))


def test_lisbon_changes_at_one_utc() -> None:
    schedule = Schedule.parse("sun 00:00-01:30 02:00-03:00", timezone=LISBON)
    # 2026-03-29 01:00 WET -> 02:00 WEST: 01:00-01:30 is skipped, so 00:00-01:30 ends at the jump (01:00 UTC), the
    # instant 02:00 WEST starts: one period until 03:00 WEST.
    assert schedule.next_change(utc(2026, 3, 29, 0, 30)) == utc(2026, 3, 29, 2)
    assert schedule.is_open(utc(2026, 3, 29, 1)) and not schedule.is_open(utc(2026, 3, 29, 2))
    # 2026-10-25 02:00 WEST -> 01:00 WET: 02:00-03:00 WET comes an hour after 01:00 WEST.
    assert schedule.next_change(utc(2026, 10, 25, 0, 10)) == utc(2026, 10, 25, 0, 30)  # 01:30 WEST
    assert schedule.next_change(utc(2026, 10, 25, 0, 30)) == utc(2026, 10, 25, 2)  # 02:00 WET


# --- words -------------------------------------------------------------------------------------------------------


def test_describe_now_in_portuguese() -> None:
    schedule = shop(closed=["2026-01-19"])
    assert schedule.describe_now(utc(2026, 1, 6, 14, 5)) == "agora: terça-feira 14:05, aberto até 18:00"
    assert schedule.describe_now(utc(2026, 1, 6, 12, 10)) == "agora: terça-feira 12:10, fechado até 13:30"
    assert schedule.describe_now(utc(2026, 1, 11, 10)) == "agora: domingo 10:00, fechado até segunda-feira 08:00"
    assert schedule.describe_now(utc(2026, 1, 17, 13), "pt_BR") == (
        "agora: sábado 13:00, fechado até terça-feira 08:00")
    never = Schedule.parse("mon-sun closed", timezone=LISBON)
    assert never.describe_now(utc(2026, 1, 6, 14, 5)) == "agora: terça-feira 14:05, fechado"


def test_describe_now_in_english() -> None:
    schedule = shop()
    assert schedule.describe_now(utc(2026, 1, 6, 14, 5), "en") == "now: Tuesday 14:05, open until 18:00"
    assert schedule.describe_now(utc(2026, 1, 11, 10), "en_US") == "now: Sunday 10:00, closed until Monday 08:00"
    always = Schedule.parse("mon-sun 00:00-24:00", timezone=LISBON)
    assert always.describe_now(utc(2026, 1, 6, 14, 5), "en") == "now: Tuesday 14:05, open"


def test_a_far_opening_says_its_date() -> None:
    schedule = shop(closed=[f"2026-08-{day:02d}" for day in range(1, 32)])
    august = local(LISBON, 2026, 7, 31, 19)  # a Friday
    assert schedule.format_next_open(august) == "terça-feira, 1 de setembro, 08:00"
    assert schedule.describe_now(august, "en") == "now: Friday 19:00, closed until Tuesday, September 1, 08:00"


@pytest.mark.parametrize("locale", ["fr", "xx", "", "de_DE"])
def test_an_unsupported_locale_is_refused(locale: str) -> None:
    with pytest.raises(InvalidHours, match="^unsupported locale"):
        shop().describe_now(utc(2026, 1, 6, 14, 5), locale)


def test_pt_pt_and_dashed_locales_work() -> None:
    assert shop().format_next_open(utc(2026, 1, 10, 13), "pt-PT") == "segunda-feira, 08:00"


# --- modes -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "open_now", "answer"), [
    (HoursMode.ALWAYS, True, True), (HoursMode.ALWAYS, False, True),
    (HoursMode.OUTSIDE, True, False), (HoursMode.OUTSIDE, False, True),
    (HoursMode.INSIDE, True, True), (HoursMode.INSIDE, False, False),
    ("outside", False, True),
])
def test_should_answer_follows_the_mode(mode: HoursMode, open_now: bool, answer: bool) -> None:
    assert should_answer(mode, open_now) is answer


def test_an_unknown_mode_is_refused() -> None:
    with pytest.raises(InvalidHours, match="^unknown hours mode 'sometimes': use always, outside or inside"):
        should_answer("sometimes", True)


# --- properties --------------------------------------------------------------------------------------------------

_pieces = st.sampled_from(["mon", "fri", "seg", "sáb", "Dom", "-", ",", " ", "08:00", "12:00", "24:00", "8h",
                           "9:30", "closed", "fechado", "25:00", ":", "h", "0", "2026-12-24", "x"])
_texts = st.one_of(st.text(), st.lists(_pieces, max_size=12).map("".join))


@PROPERTY
@given(_texts)
def test_any_hours_text_reads_or_is_refused_with_a_value_error(text: str) -> None:
    try:
        schedule = Schedule.parse(text, timezone="UTC")
    except ValueError:
        return
    assert Schedule.parse(schedule.to_text(), timezone="UTC") == schedule


@PROPERTY
@given(_texts, _texts, st.one_of(st.text(max_size=30), st.sampled_from(["UTC", LISBON, "UTC-03:00"])))
def test_any_dates_and_zones_read_or_are_refused_with_a_value_error(closed: str, special: str, zone: str) -> None:
    try:
        schedule = Schedule.parse(SHOP, closed=[closed], special=[special], timezone=zone)
    except ValueError:
        return
    assert Schedule.from_json(schedule.to_json()) == schedule


@PROPERTY
@given(st.text())
def test_any_stored_text_reads_or_is_refused_with_a_value_error(text: str) -> None:
    try:
        Schedule.from_json(text)
    except ValueError:
        pass


@PROPERTY
@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 95), st.integers(1, 8)), max_size=6),
       st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)))
def test_next_change_is_where_is_open_flips(windows: list[tuple[int, int, int]], at: datetime) -> None:
    days: dict[int, list[str]] = {}
    for day, start, length in windows:  # quarter hours, overlapping ones dropped
        span = (start * 15, min(start * 15 + length * 15, 1440))
        if all(span[1] <= a or b <= span[0] for a, b in days.get(day, [])):
            days.setdefault(day, []).append(span)
    text = ", ".join(f"{('mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun')[d]} "
                     + " ".join(f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}" for a, b in spans)
                     for d, spans in days.items()) or "mon-sun closed"
    schedule = Schedule.parse(text, timezone=NEW_YORK)
    change = schedule.next_change(at)
    if change is None:  # never opens, or never closes
        assert schedule.is_open(at) is bool(days)
        return
    assert change > at
    assert schedule.is_open(change - timedelta(seconds=1)) is schedule.is_open(at)
    assert schedule.is_open(change) is not schedule.is_open(at)
