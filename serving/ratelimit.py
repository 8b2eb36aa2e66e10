"""Per-endpoint rate limits, shared by every route family, worker and instance.

Fixed windows counted with atomic increments: in Redis when REDIS_URL is set (one round trip:
INCR and EXPIRE NX in a pipeline), otherwise in process memory, which is right only for a single
process (the embedded default). The window starts on multiples of the period, so every
process agrees on it without coordination.

When Redis cannot count (unreachable, slower than GATEWAY_RATE_LIMIT_TIMEOUT, an error reply), the
request is served without a limit and a warning is logged, or, with GATEWAY_RATE_LIMIT_FAIL_OPEN
off, refused with a 503: a gateway that stops when its counter store does would make Redis a single
point of failure for every endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from providers.errors import RateLimited, RateLimitUnavailable
from serving.bridge import await_, in_bridge
from serving.resp import AsyncRedis, RedisAddress, RespConnectionError, RespError

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



class CounterUnavailable(Exception):
    """The counters could not be reached or did not answer (the message says why)."""


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


class _RedisCounter:
    """Counters in Redis. Inside the async bridge (the ASGI server) it talks to Redis on the running
    event loop instead of blocking it: through serving.resp (one pipelined connection per loop),
    or redis.asyncio for the URLs that client does not parse (a Unix socket, query options)."""

    def __init__(self, url: str, prefix: str, timeout: float) -> None:
        import redis  # only here: a worker without REDIS_URL never loads redis-py (about 7 MiB each)

        self._failures = (redis.exceptions.RedisError, RespConnectionError, RespError, TimeoutError, OSError)
        self._url = url
        self._timeout = timeout
        self._client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._prefix = prefix
        self._address = RedisAddress.parse(url)
        self._async_client: Any = None
        self._async_loop: asyncio.AbstractEventLoop | None = None

    def incr(self, key: str, ttl: int) -> int:
        key = f"{self._prefix}:{key}"
        try:
            if in_bridge():
                return await_(self._incr_async(key, ttl))
            pipe = self._client.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, ttl, nx=True)
            count, _ = pipe.execute()
            return int(count)
        except self._failures as exc:
            raise CounterUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from exc

    async def _incr_async(self, key: str, ttl: int) -> int:
        loop = asyncio.get_running_loop()
        if self._async_loop is not loop:  # its connections belong to one event loop
            if self._address is not None:
                self._async_client = AsyncRedis(self._address, timeout=self._timeout)
            else:
                import redis.asyncio

                self._async_client = redis.asyncio.Redis.from_url(
                    self._url, socket_timeout=self._timeout, socket_connect_timeout=self._timeout
                )
            self._async_loop = loop
        if isinstance(self._async_client, AsyncRedis):
            count, _ = await self._async_client.execute([("INCR", key), ("EXPIRE", key, ttl, "NX")])
            if isinstance(count, RespError):
                raise count
            return int(count)
        pipe = self._async_client.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, ttl, nx=True)
        count, _ = await pipe.execute()
        return int(count)


class _LocalCounter:
    """In-process windows for the single-process default (a dict and a lock: no pickling, no cache)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def incr(self, key: str, ttl: int) -> int:
        now = time.monotonic()
        with self._lock:
            count, expires = self._counts.get(key, (0, 0.0))
            if expires <= now:
                count, expires = 0, now + ttl
                if len(self._counts) > 10_000:
                    self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
            self._counts[key] = (count + 1, expires)
            return count + 1


_counter: Any = None
_counter_lock = threading.Lock()


def _get_counter() -> Any:
    global _counter
    if _counter is None:
        with _counter_lock:
            if _counter is None:
                location = settings.CACHES["default"]["LOCATION"]
                if settings.CACHES["default"]["BACKEND"].endswith("RedisCache"):
                    prefix = settings.CACHES["default"].get("KEY_PREFIX", "gateway")
                    _counter = _RedisCounter(location, prefix, settings.GATEWAY_RATE_LIMIT_TIMEOUT)
                else:
                    _counter = _LocalCounter()
    return _counter


def reset_counter_backend() -> None:
    """Forget the counter client (tests that change the cache settings)."""
    global _counter
    _counter = None


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
    key = f"ratelimit:{endpoint_name}:{limit.period_seconds}:{window}"
    try:
        count = _get_counter().incr(key, limit.period_seconds + 1)
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
