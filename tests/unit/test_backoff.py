"""``replies.backoff``: the wait before the next attempt of a failed reply; pure arithmetic."""

from __future__ import annotations

import pytest

from hybridflow.service.replies import backoff


@pytest.mark.parametrize(("attempts", "seconds"), [(0, 5.0), (1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0), (5, 80.0),
                                                   (6, 160.0), (7, 300.0), (8, 300.0), (50, 300.0)])
def test_backoff_doubles_from_5_seconds_up_to_five_minutes(attempts, seconds):
    assert backoff(attempts) == seconds


def test_backoff_scales_with_its_base():
    assert [backoff(n, base=1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff(20, base=1.0) == 300.0


def test_backoff_never_shrinks():
    waits = [backoff(n) for n in range(30)]
    assert waits == sorted(waits) and min(waits) > 0
