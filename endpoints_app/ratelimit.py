"""Per-endpoint rate limits, shared by every route family, worker and instance.

Fixed windows counted with atomic increments in the shared cache (Redis when REDIS_URL is set; the
in-process cache only for the single-process default). The window starts on multiples of the
period, so every process agrees on it without coordination.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from django.core.cache import cache

from providers.errors import RateLimited


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


def hit(endpoint_name: str, limit: RateLimit) -> RateState:
    """Count one call; raise RateLimited (429, Retry-After) when over the limit."""
    now = time.time()
    window = int(now // limit.period_seconds)
    reset = max(1, math.ceil((window + 1) * limit.period_seconds - now))
    if limit.calls == 0:
        raise _limited(limit, reset)
    key = f"ratelimit:{endpoint_name}:{limit.period_seconds}:{window}"
    if cache.add(key, 1, timeout=limit.period_seconds + 1):
        count = 1
    else:
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=limit.period_seconds + 1)
            count = 1
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
