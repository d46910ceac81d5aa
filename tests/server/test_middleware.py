"""The request middleware's pace for request bodies (server.middleware.BodyPace): how long
it waits for the next part of a body, and whether a stall or the minimum rate sets it."""

from __future__ import annotations

import pytest

from server.middleware import BodyPace


def test_without_a_minimum_rate_the_wait_is_the_stall_timeout() -> None:
    assert BodyPace(30.0).wait(started=0.0, received=0, now=1000.0) == (30.0, False)


@pytest.mark.parametrize(
    ("received", "now", "expected"),
    [
        (0, 0.0, (5.0, True)),  # nothing yet: the grace, then the rate fails at once
        (240, 0.0, (6.0, True)),  # 240 bytes buy one second beyond the grace
        (2400, 3.0, (12.0, True)),  # fails at 5 + 10 s, 12 s from now
        (240 * 100, 0.0, (30.0, False)),  # far ahead of the rate: a stall is what ends it
        (0, 7.5, (0.0, True)),  # already below the rate: no wait at all
    ],
)
def test_with_a_minimum_rate_the_body_must_keep_up_after_the_grace(
    received: int, now: float, expected: tuple[float, bool]
) -> None:
    """Nothing more arriving, `received` bytes fall below 240 bytes/s (after a 5 s grace)
    at 5 + received / 240 s after the body's reading began."""
    pace = BodyPace(30.0, min_rate=240.0, grace_s=5.0)
    assert pace.wait(started=0.0, received=received, now=now) == pytest.approx(expected)
