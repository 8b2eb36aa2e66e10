"""Circuit breaking per destination: stop sending a route's traffic to an endpoint that keeps failing.

Each endpoint has two counters where limits are (serving.counters, so every worker of a server, and
every instance with Redis, sees the same state): its consecutive failures, and an `open` key that
lives for the cool-down. After GATEWAY_CIRCUIT_FAILURES consecutive failures (connection, timeout,
429, 5xx: the same failures a fallback moves on for) the circuit opens: traffic routes skip that
destination (a split route shares its traffic among the others, a fallback route tries the next one)
for GATEWAY_CIRCUIT_COOLDOWN_SECONDS. Then it is half-open: one request, whichever worker claims the
probe first, is let through; a success closes the circuit, a failure opens it again. A success at any
time resets the count.

The state of a route's destinations is read in the same round trip as the limits; a failure or a
success is written without waiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from serving import counters

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"
_PROBE_SECONDS = 30  # how long a half-open probe may take before another worker may probe


def _keys(endpoint: str) -> tuple[str, str, str]:
    return (counters.key("circuit", endpoint, "failures"), counters.key("circuit", endpoint, "open"),
            counters.key("circuit", endpoint, "probe"))


def enabled() -> bool:
    return bool(settings.GATEWAY_CIRCUIT_FAILURES > 0)


def read_commands(endpoints: list[str]) -> list[tuple[str, ...]]:
    """The commands that read the state of these endpoints' circuits (2 replies each)."""
    commands: list[tuple[str, ...]] = []
    for name in endpoints:
        failures, opened, _ = _keys(name)
        commands += [("GET", failures), ("EXISTS", opened)]
    return commands


def states(endpoints: list[str], replies: Sequence[Any]) -> dict[str, tuple[str, int]]:
    """Each endpoint's circuit (its state and its consecutive failures), from read_commands' replies."""
    threshold = settings.GATEWAY_CIRCUIT_FAILURES
    out = {}
    for index, name in enumerate(endpoints):
        failures = int(replies[2 * index] or 0)
        opened = bool(replies[2 * index + 1])
        out[name] = (OPEN if opened else HALF_OPEN if failures >= threshold else CLOSED, failures)
    return out


def claim_probe(endpoint: str) -> bool:
    """In the async bridge: whether this request is the one that probes a half-open circuit."""
    _, _, probe = _keys(endpoint)
    try:
        (claimed,) = counters.execute([("SET", probe, 1, "EX", _PROBE_SECONDS, "NX")])
    except counters.CounterUnavailable:
        return True  # the counters are away: let it through rather than refuse the destination
    return bool(claimed == "OK")


def record(endpoint: str, failed: bool) -> None:
    """After an attempt on a destination, without waiting: count a failure (opening the circuit at the
    threshold) or reset the count on a success."""
    failures, opened, probe = _keys(endpoint)
    if not failed:
        counters.submit([("DEL", failures, opened, probe)])
        return
    cooldown = max(1, round(settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS))
    future = asyncio.ensure_future(counters.execute_async(
        [("INCRBY", failures, 1), ("EXPIRE", failures, cooldown * 10)]))
    counters.track(future)
    future.add_done_callback(lambda done: _maybe_open(done, opened, probe, cooldown))


def _maybe_open(done: asyncio.Future[list[Any]], opened: str, probe: str, cooldown: int) -> None:
    if done.cancelled() or done.exception() is not None:
        return
    if int(done.result()[0]) >= settings.GATEWAY_CIRCUIT_FAILURES:
        counters.submit([("SET", opened, 1, "EX", cooldown), ("DEL", probe)])


@dataclass(frozen=True)
class Snapshot:
    """For the admin and metrics: an endpoint's circuit as the counters hold it now."""

    state: str
    failures: int
    seconds_open: int  # left of the cool-down (0 unless open)


def snapshot(endpoints: list[str], run: Callable[[list[tuple[str, ...]]], list[Any]] | None = None
             ) -> dict[str, Snapshot]:
    """From a thread that may block (the admin); `run=counters.execute` in the async bridge (the metrics
    scrape)."""
    commands: list[tuple[str, ...]] = []
    for name in endpoints:
        failures, opened, _ = _keys(name)
        commands += [("GET", failures), ("TTL", opened)]
    if not commands:
        return {}
    replies = (run or counters.execute_blocking)(commands)
    threshold = settings.GATEWAY_CIRCUIT_FAILURES
    out = {}
    for index, name in enumerate(endpoints):
        count = int(replies[2 * index] or 0)
        ttl = int(replies[2 * index + 1])
        state = OPEN if ttl > 0 else HALF_OPEN if threshold > 0 and count >= threshold else CLOSED
        out[name] = Snapshot(state, count, max(0, ttl))
    return out
