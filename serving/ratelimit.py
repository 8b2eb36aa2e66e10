"""Rate limits: MLflow's periods, and fixed windows counted where every worker and instance agrees.

A window starts on a multiple of its period, so every process agrees on it without coordination.
A call is one round trip to the counters (serving.counters: Redis, the server's shared store, or this
process): `SET key 0 EX ttl NX` then `INCRBY key 1`, pipelined. The first starts the window's key
with its expiry, the second counts; both exist since Redis 2.6, so the same commands work on Redis 6
and 7 (EXPIRE's NX flag is 7.0 only: Redis 6 refuses it).

When the counters cannot count (unreachable, slower than GATEWAY_RATE_LIMIT_TIMEOUT, an error reply),
the request is served without a limit and a warning is logged, or, with GATEWAY_RATE_LIMIT_FAIL_OPEN
off, refused with a 503: a gateway that stops when its counter store does would make Redis a single
point of failure for every endpoint.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

from django.conf import settings

from providers.errors import RateLimited, RateLimitUnavailable
from serving import counters
from serving.counters import CounterUnavailable

logger = logging.getLogger(__name__)

# Seconds per granularity, as the `limits` library counts them (month = 30 days, year = 360 days).
GRANULARITIES = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 30 * 86400, "year": 360 * 86400}
_PERIOD = re.compile(r"^\s*(?:(\d+)\s+)?(second|minute|hour|day|month|year)s?\s*$", re.IGNORECASE)


def parse_period(text: object) -> tuple[int, str]:
    """`"5 minutes"` → (5, "minute"). Raises ValueError with a message that names the accepted words."""
    match = _PERIOD.match(text) if isinstance(text, str) else None
    if not match or (match.group(1) is not None and int(match.group(1)) < 1):
        raise ValueError(
            f"renewal_period {text!r} is not a period: use second, minute, hour, day, month or year, "
            "optionally plural and with a count, e.g. '5 minutes'"
        )
    return int(match.group(1) or 1), match.group(2).lower()


def period_seconds(text: str) -> int:
    multiples, granularity = parse_period(text)
    return multiples * GRANULARITIES[granularity]


def describe(calls: int, text: str) -> str:
    """MLflow's wording in the 429 body: '2 per 1 minute'."""
    multiples, granularity = parse_period(text)
    return f"{calls} per {multiples} {granularity}"



@dataclass(frozen=True)
class RateLimit:
    calls: int
    period_seconds: int
    description: str  # "2 per 1 minute" (MLflow's wording)


@dataclass(frozen=True)
class RateState:
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


_WARN_EVERY_SECONDS = 10.0
_last_warning = 0.0


def hit(endpoint_name: str, limit: RateLimit) -> RateState | None:
    """Count one call; raise RateLimited (429, Retry-After) when over the limit.

    None when the counters could not be reached and the limit is not applied (see the module's
    docstring); RateLimitUnavailable (503) instead when GATEWAY_RATE_LIMIT_FAIL_OPEN is off."""
    now = time.time()
    window = int(now // limit.period_seconds)
    reset = max(1, math.ceil((window + 1) * limit.period_seconds - now))
    if limit.calls == 0:
        raise _limited(limit, reset)
    key = counters.key("ratelimit", endpoint_name, limit.period_seconds, window)
    try:
        _, count = counters.execute([("SET", key, 0, "EX", limit.period_seconds + 1, "NX"), ("INCRBY", key, 1)])
    except CounterUnavailable as exc:
        _cannot_count(endpoint_name, str(exc))
        return None
    if count > limit.calls:
        raise _limited(limit, reset)
    return RateState(limit=limit.calls, remaining=limit.calls - count, reset_seconds=reset)


def _limited(limit: RateLimit, reset: int) -> RateLimited:
    error = RateLimited(f"Rate limit exceeded: {limit.description}", retry_after=reset)
    error.headers = {
        "X-RateLimit-Limit": str(limit.calls),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    return error


def _cannot_count(endpoint_name: str, reason: str) -> None:
    global _last_warning
    if not settings.GATEWAY_RATE_LIMIT_FAIL_OPEN:
        logger.warning("rate limit of %s refused the call: the counters cannot be reached (%s)", endpoint_name, reason)
        raise RateLimitUnavailable(
            "The rate-limit counters cannot be reached, so calls to limited endpoints are refused "
            "(GATEWAY_RATE_LIMIT_FAIL_OPEN is off)."
        )
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_SECONDS:  # one line per interval, not one per request
        _last_warning = now
        logger.warning("rate limits are not applied: the counters cannot be reached (%s); calls to %s and "
                       "other limited endpoints are served without a limit", reason, endpoint_name)
