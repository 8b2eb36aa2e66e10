"""Rate-limit periods and fixed-window counting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from providers.errors import RateLimited
from serving import counters
from serving.bridge import run_sync
from serving.ratelimit import RateLimit, RateState, describe, hit, parse_period, period_seconds
from tests.asgi import event_loop

T = TypeVar("T")


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


def in_bridge(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` as an invocation runs it: in the async bridge, on an event loop."""
    return asyncio.run_coroutine_threadsafe(run_sync(fn, *args), event_loop()).result(10)


def counted(endpoint_name: str, limit: RateLimit) -> RateState:
    state = in_bridge(hit, endpoint_name, limit)
    assert state is not None, "the counters were not reached"
    return state


def test_it_counts_calls_in_a_window_and_then_refuses_with_retry_after() -> None:
    limit = RateLimit(calls=2, period_seconds=3600, description="2 per 1 hour")
    first = counted("unit-endpoint", limit)
    assert (first.limit, first.remaining) == (2, 1)
    assert 0 < first.reset_seconds <= 3600
    assert counted("unit-endpoint", limit).remaining == 0
    with pytest.raises(RateLimited) as raised:
        in_bridge(hit, "unit-endpoint", limit)
    assert raised.value.message == "Rate limit exceeded: 2 per 1 hour"
    assert raised.value.retry_after is not None and 0 < raised.value.retry_after <= 3600
    assert raised.value.headers["X-RateLimit-Remaining"] == "0"


def test_counters_are_per_endpoint() -> None:
    limit = RateLimit(calls=1, period_seconds=60, description="1 per 1 minute")
    in_bridge(hit, "endpoint-a", limit)
    assert counted("endpoint-b", limit).remaining == 0


def test_a_window_key_expires_one_second_after_its_window() -> None:
    """The first call of a window sets the key's expiry (SET NX EX: Redis 6 and 7 alike); later calls
    keep it."""
    limit = RateLimit(calls=5, period_seconds=60, description="5 per 1 minute")
    counted("expiring", limit)
    counted("expiring", limit)
    window = int(time.time() // 60)
    key = counters.key("ratelimit", "e:expiring", 60, window)
    ttl, value = counters.execute_blocking([("TTL", key), ("GET", key)])
    assert 0 < ttl <= 61
    assert value == b"2"
