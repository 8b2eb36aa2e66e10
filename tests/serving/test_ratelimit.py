"""Rate-limit periods and fixed-window counting."""

from __future__ import annotations

import asyncio

import pytest

from providers.errors import RateLimited
from serving.bridge import run_sync
from serving.ratelimit import RateLimit, RateState, describe, hit, parse_period, period_seconds


@pytest.mark.parametrize(
    ("text", "expected_seconds", "expected_words"),
    [
        ("second", 1, "1 second"),
        ("minute", 60, "1 minute"),
        ("minutes", 60, "1 minute"),
        ("5 minutes", 300, "5 minute"),
        ("Hour", 3600, "1 hour"),
        ("2 days", 172800, "2 day"),
        ("month", 30 * 86400, "1 month"),
        ("year", 360 * 86400, "1 year"),
    ],
)
def test_it_reads_mlflow_periods(text: str, expected_seconds: int, expected_words: str) -> None:
    assert period_seconds(text) == expected_seconds
    assert describe(7, text) == f"7 per {expected_words}"


@pytest.mark.parametrize("text", ["", "fortnight", "0 minutes", "-1 minute", "minute 5", "5minutes", None, 60])
def test_it_refuses_other_periods(text: object) -> None:
    with pytest.raises(ValueError, match="renewal_period"):
        parse_period(text)


def counted(endpoint_name: str, limit: RateLimit) -> RateState:
    state = hit(endpoint_name, limit)
    assert state is not None, "the counters were not reached"
    return state


def test_it_counts_calls_in_a_window_and_then_refuses_with_retry_after() -> None:
    limit = RateLimit(calls=2, period_seconds=3600, description="2 per 1 hour")
    first = counted("unit-endpoint", limit)
    assert (first.limit, first.remaining) == (2, 1)
    assert 0 < first.reset_seconds <= 3600
    assert counted("unit-endpoint", limit).remaining == 0
    with pytest.raises(RateLimited) as raised:
        hit("unit-endpoint", limit)
    assert raised.value.message == "Rate limit exceeded: 2 per 1 hour"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 3600
    assert raised.value.headers["X-RateLimit-Remaining"] == "0"


def test_counters_are_per_endpoint() -> None:
    limit = RateLimit(calls=1, period_seconds=60, description="1 per 1 minute")
    hit("endpoint-a", limit)
    assert counted("endpoint-b", limit).remaining == 0


def test_calls_on_the_event_loop_share_the_counter_with_synchronous_ones() -> None:
    """Under the ASGI server `hit` runs in the async bridge (Redis through serving.resp when
    REDIS_URL is set, never blocking the loop); the window is the same one."""
    limit = RateLimit(calls=3, period_seconds=3600, description="3 per 1 hour")
    assert counted("shared-endpoint", limit).remaining == 2

    async def two_on_the_loop() -> list[int]:
        return [(await run_sync(counted, "shared-endpoint", limit)).remaining for _ in range(2)]

    assert asyncio.run(two_on_the_loop()) == [1, 0]
    with pytest.raises(RateLimited):
        hit("shared-endpoint", limit)
