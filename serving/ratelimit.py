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
import reprlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.conf import settings

from providers.errors import RateLimited, RateLimitUnavailable
from serving import budgets, counters
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
            f"renewal_period {reprlib.repr(text)} is not a period: use second, minute, hour, day, month or year, "
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


class RateState(NamedTuple):  # a tuple: made on every call, at a fraction of a frozen dataclass's cost
    limit: int
    remaining: int
    reset_seconds: int

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_seconds),
        }


@dataclass(frozen=True)
class TokenLimit:
    tokens: int
    period_seconds: int
    description: str  # "1000 tokens per 1 minute"


def call_limit(calls: int, renewal_period: str) -> RateLimit:
    return RateLimit(calls, period_seconds(renewal_period), describe(calls, renewal_period))


def token_limit(tokens: int, renewal_period: str) -> TokenLimit:
    multiples, granularity = parse_period(renewal_period)
    return TokenLimit(tokens, period_seconds(renewal_period), f"{tokens} tokens per {multiples} {granularity}")


def _reset(period: int, window: int, now: float) -> int:
    """The seconds until the window after `window` starts."""
    return max(1, math.ceil((window + 1) * period - now))


class Admitted(NamedTuple):
    """What the checks before a call found: the tightest call window (for the X-RateLimit-* headers), the
    token windows to add the call's tokens to, and the budget windows to add its cost to, once it has
    answered."""

    rate: RateState | None
    token_keys: tuple[tuple[str, int], ...]  # (key, ttl)
    budget_windows: tuple[budgets.Window, ...] = ()
    reads: Sequence[Any] = ()  # the replies to the caller's extra reads


NOTHING_COUNTED = Admitted(None, ())


def admit(calls: list[tuple[str, RateLimit]], tokens: list[tuple[str, TokenLimit]],
          spending: Sequence[tuple[str, budgets.Budget]] = (),
          reads: Sequence[tuple[str, ...]] = ()) -> Admitted:
    """Count one call in each call window, read each token window and each budget's spend, in one round
    trip to the counters; raise RateLimited (429, Retry-After, X-RateLimit-*) for the first limit that is
    reached, or (code budget_exceeded) for a `reject` budget that is spent.

    `calls`, `tokens` and `spending` pair a scope ("e:<endpoint>", "c:<consumer>") with its limit or
    budget; `reads` are other commands whose replies the caller wants in the same trip (a route's
    circuits). When the counters cannot be reached nothing applies (a warning is logged), or
    RateLimitUnavailable (503) is raised with GATEWAY_RATE_LIMIT_FAIL_OPEN off."""
    now = time.time()
    commands: list[tuple[str | int, ...]] = []
    call_windows = []
    for scope, limit in calls:
        period = limit.period_seconds
        window = int(now // period)
        if limit.calls == 0:
            raise _limited(limit.calls, limit.description, _reset(period, window, now))
        key = counters.window_key("ratelimit", scope, period, window)
        commands += counters.add_to_window(key, period + 1, 1)
        call_windows.append((limit, window))
    token_windows = []
    for scope, token_limit_ in tokens:
        period = token_limit_.period_seconds
        window = int(now // period)
        key = counters.window_key("tokens", scope, period, window)
        commands.append(("GET", key))
        token_windows.append((token_limit_, _reset(period, window, now), key))
    budget_windows = [budgets.window(scope, budget, now) for scope, budget in spending]
    commands += [("GET", win.key) for win in budget_windows]
    commands += reads
    if not commands:
        return NOTHING_COUNTED
    try:
        replies = counters.execute(commands)
    except CounterUnavailable as exc:
        _cannot_count(", ".join(scope for scope, _ in [*calls, *tokens, *spending]), str(exc))
        return NOTHING_COUNTED
    tightest: RateState | None = None
    for index, (limit, window) in enumerate(call_windows):
        count = int(replies[2 * index + 1])
        reset = _reset(limit.period_seconds, window, now)
        if count > limit.calls:
            raise _limited(limit.calls, limit.description, reset)
        if tightest is None or limit.calls - count < tightest.remaining:
            tightest = RateState(limit.calls, limit.calls - count, reset)
    offset = 2 * len(call_windows)
    for index, (token_limit_, reset, _) in enumerate(token_windows):
        used = int(replies[offset + index] or 0)
        if used >= token_limit_.tokens:
            raise _limited(token_limit_.tokens, token_limit_.description, reset, kind="Token limit")
    offset += len(token_windows)
    for index, win in enumerate(budget_windows):
        spent = int(replies[offset + index] or 0)
        if spent >= win.budget.picousd and win.budget.action == "reject":
            raise budgets.exceeded(win, spent, now)
    return Admitted(tightest, tuple((key, limit.period_seconds + 1) for limit, _, key in token_windows),
                    tuple(budget_windows), replies[offset + len(budget_windows):])


def token_commands(admitted: Admitted, count: int) -> list[tuple[str | int, ...]]:
    """After an answer: the commands that add its tokens to the caller's token windows."""
    commands: list[tuple[str | int, ...]] = []
    if count > 0:
        for key, ttl in admitted.token_keys:
            commands += counters.add_to_window(key, ttl, count)
    return commands


def hit(endpoint_name: str, limit: RateLimit) -> RateState | None:
    """Count one call of an endpoint against its limit (admit() with that one window)."""
    return admit([(f"e:{endpoint_name}", limit)], []).rate


_WARN_EVERY_SECONDS = 10.0
_last_warning = 0.0


def _limited(allowed: int, description: str, reset: int, kind: str = "Rate limit") -> RateLimited:
    error = RateLimited(f"{kind} exceeded: {description}", retry_after=reset)
    error.headers = {
        "X-RateLimit-Limit": str(allowed),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
    }
    return error


def _cannot_count(scopes: str, reason: str) -> None:
    global _last_warning
    if not settings.GATEWAY_RATE_LIMIT_FAIL_OPEN:
        logger.warning("rate limit of %s refused the call: the counters cannot be reached (%s)", scopes, reason)
        raise RateLimitUnavailable(
            "The rate-limit counters cannot be reached, so calls to limited endpoints are refused "
            "(GATEWAY_RATE_LIMIT_FAIL_OPEN is off)."
        )
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_SECONDS:  # one line per interval, not one per request
        _last_warning = now
        logger.warning("rate limits are not applied: the counters cannot be reached (%s); calls limited by %s "
                       "and others are served without a limit", reason, scopes)
