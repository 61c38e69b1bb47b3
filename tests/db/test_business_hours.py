"""Business hours decide whether the bot answers (issue 11), on both databases: `outside` answers only while the
shop is closed (the after-hours assistant), `inside` only while it is open; the moment that counts is when the
message is received, windows are half-open, holidays and special days apply, and nothing is paused."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hybridflow.errors import BadRequest
from hybridflow.service import Service, TenantChanges
from tests.conftest import FakeClock
from tests.support.builders import CUSTOMER, raw, upsert

SAO_PAULO = "America/Sao_Paulo"  # UTC-3 all year


def local(text: str) -> datetime:
    """A São Paulo wall-clock time as the UTC instant HybridFlow receives it at."""
    naive = datetime.fromisoformat(text)
    return naive.replace(tzinfo=UTC) + (datetime(2000, 1, 1, 3, tzinfo=UTC) - datetime(2000, 1, 1, tzinfo=UTC))


async def say(service: Service, clock: FakeClock, at: str, text: str = "Vocês estão abertos?") -> str:
    clock.now = local(at)
    body = upsert(text)
    return (await service.ingest(body, raw(body))).action


async def shop(service: Service, **changes: object) -> None:
    await service.update_tenant("test-instance", TenantChanges(
        hours="mon-fri 08:00-12:00 13:30-18:00, sat 08:00-12:00", timezone=SAO_PAULO, **changes))


async def test_outside_mode_is_silent_while_open_and_answers_from_closing_time(service: Service, tenant,
                                                                               clock: FakeClock):
    await shop(service, hours_mode="outside")
    assert await say(service, clock, "2026-12-01 17:59:59") == "ignored_hours"  # a Tuesday, still open
    assert await say(service, clock, "2026-12-01 18:00:00") == "reply_queued"  # closed: [08:00, 18:00)
    assert await say(service, clock, "2026-12-01 12:30:00", "E no almoço?") == "reply_queued"  # the lunch break
    view = await service.session("test-instance", CUSTOMER)
    assert view.is_paused is False  # hours never pause a chat


async def test_inside_mode_answers_only_while_open(service: Service, tenant, clock: FakeClock):
    await shop(service, hours_mode="inside")
    assert await say(service, clock, "2026-12-05 11:59:00") == "reply_queued"  # Saturday morning
    assert await say(service, clock, "2026-12-05 12:00:00", "Ainda?") == "ignored_hours"
    assert await say(service, clock, "2026-12-06 10:00:00", "Domingo?") == "ignored_hours"


async def test_holidays_and_special_days(service: Service, tenant, clock: FakeClock):
    await shop(service, hours_mode="inside", closed=("2026-12-25",), special=("2026-12-24 08:00-12:00",))
    assert await say(service, clock, "2026-12-25 10:00:00") == "ignored_hours"  # a Friday, but a holiday
    assert await say(service, clock, "2026-12-24 13:45:00", "Véspera?") == "ignored_hours"  # short hours that day
    assert await say(service, clock, "2026-12-24 09:00:00", "Véspera cedo") == "reply_queued"


async def test_dates_are_added_and_cleared_and_the_schedule_can_be_removed(service: Service, tenant):
    await shop(service, hours_mode="inside", closed=("2026-12-25",))
    await service.update_tenant("test-instance", TenantChanges(closed=("2027-01-01",)))
    schedule = (await service.tenant("test-instance")).schedule
    assert [d.isoformat() for d in schedule.closed] == ["2026-12-25", "2027-01-01"]
    await service.update_tenant("test-instance", TenantChanges(clear_closed=True))
    assert (await service.tenant("test-instance")).schedule.closed == ()
    await service.update_tenant("test-instance", TenantChanges(hours="", hours_mode="always"))
    assert (await service.tenant("test-instance")).schedule is None


@pytest.mark.parametrize(("changes", "fragment"), [
    ({"hours": "mon-fri 08:00-25:00", "timezone": SAO_PAULO}, "25:00"),
    ({"hours": "mon-fri 22:00-02:00", "timezone": SAO_PAULO}, "midnight"),
    ({"hours": "mon-fri 08:00-18:00", "timezone": "Mars/Olympus"}, "Mars/Olympus"),
    ({"hours_mode": "outside"}, "--hours"),
    ({"hours": "mon-fri 08:00-18:00", "hours_mode": "sometimes"}, "--hours-mode"),
    ({"closed": ("2026-13-01",)}, "--hours"),
])
async def test_bad_hours_are_refused_and_change_nothing(service: Service, tenant, changes, fragment):
    with pytest.raises(BadRequest) as refused:
        await service.update_tenant("test-instance", TenantChanges(**changes))
    assert fragment in refused.value.message
    config = await service.tenant("test-instance")
    assert (config.schedule, config.hours_mode) == (None, "always")
