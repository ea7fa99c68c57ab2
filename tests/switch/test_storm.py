"""Storm control's token bucket, on a fake clock."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vnet.switch.storm import HOLD_SECONDS, StormControl


def test_a_burst_then_the_rate() -> None:
    storm = StormControl(100)  # bursts of 10
    assert [storm.allow(0.0) for _ in range(12)] == [True] * 10 + [False] * 2
    assert storm.storming(0.0)
    assert storm.allow(0.01) and not storm.allow(0.01)  # one token in 10 ms
    assert storm.storming(0.01 + HOLD_SECONDS - 0.001)
    assert not storm.storming(0.01 + HOLD_SECONDS)
    assert sum(storm.allow(5.0) for _ in range(50)) == 10  # refilled to the burst, no more


@given(st.floats(1, 1e6), st.lists(st.floats(0, 0.05), min_size=1, max_size=300))
def test_never_more_than_the_rate_allows(rate: float, gaps: list[float]) -> None:
    storm = StormControl(rate)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        allowed += storm.allow(now)
    assert allowed <= storm.burst + rate * now + 1e-6
