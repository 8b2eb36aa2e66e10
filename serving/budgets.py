"""Budgets: a ceiling on what a consumer or an endpoint spends per UTC day, week or month.

Spend is counted where limits are (serving.counters: Redis across instances, the server's shared store
across its workers), in integer pico-dollars under a key per scope and period
(`spend:c:<consumer>:month:2026-12`). Before a call, the spend is read in the same round trip as the
rate limits (serving.ratelimit.admit): at or over a `reject` budget the call is refused with 429
`budget_exceeded` and a Retry-After until the period renews. After the call its cost is added with
INCRBY, whose answer tells exactly one worker of one instance that a threshold (50 %, 80 %, 100 %)
was crossed: that one logs it and, with GATEWAY_ALERT_WEBHOOK_URL, POSTs it once. So a budget is
overshot by at most the calls that were already in flight when it was crossed.

A period's counter starts from the ledger (the usage rollups) when the table is built, so a restart
of the counter store does not forget the month.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from django.conf import settings
from django.core.signals import setting_changed

from providers.errors import RateLimited
from serving import counters

logger = logging.getLogger(__name__)

THRESHOLDS = (50, 80, 100)  # percent
_PERIOD_WORDS = {"day": "daily", "week": "weekly", "month": "monthly"}
PICO_PER_USD = 10**12


@dataclass(frozen=True)
class Budget:
    picousd: int
    period: str  # day, week, month
    action: str  # reject, alert
    usd: Decimal

    @classmethod
    def of(cls, usd: Decimal, period: str, action: str) -> Budget:
        return cls(int(usd * PICO_PER_USD), period, action, usd)

    @property
    def usd_text(self) -> str:
        """As written: 0.08, 50 (not 0.080000 or 5E+1)."""
        return format(self.usd.normalize(), "f")

    @property
    def period_word(self) -> str:
        return _PERIOD_WORDS[self.period]


@dataclass(frozen=True)
class Window:
    """One budget's current period: its counter key, when it started and when the next one starts."""

    scope: str  # "c:<consumer>" or "e:<endpoint>"
    budget: Budget
    key: str
    start: datetime
    end: datetime
    ttl: int = 0  # how long the counter lives: the period and a day (worked out by window())

    def retry_after(self, now: float) -> int:
        return max(1, int(self.end.timestamp() - now) + 1)


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """The UTC day, ISO week (from Monday) or calendar month containing `now`: (start, next start)."""
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    return start, (start + timedelta(days=32)).replace(day=1)


def window(scope: str, budget: Budget, now: float) -> Window:
    """The budget's current period; the same object for every call of the period (worked out once)."""
    cache_key = (scope, budget.period, budget.picousd, budget.action)  # hashing the Budget itself hashes a Decimal
    cached = _windows.get(cache_key)
    if cached is not None and cached[1] <= now < cached[2]:
        return cached[0]
    start, end = period_bounds(budget.period, datetime.fromtimestamp(now, UTC))
    period_id = start.strftime("%Y-%m-%d")
    win = Window(scope, budget, counters.key("spend", scope, budget.period, period_id), start, end,
                 int((end - start).total_seconds()) + 86400)
    if len(_windows) > 10_000:  # consumers and endpoints come and go with the config
        _windows.clear()
    _windows[cache_key] = (win, start.timestamp(), end.timestamp())
    return win


_windows: dict[tuple[str, str, int, str], tuple[Window, float, float]] = {}


def _prefix_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "GATEWAY_REDIS_PREFIX":  # tests: the windows' keys under another prefix from now on
        _windows.clear()


setting_changed.connect(_prefix_changed, dispatch_uid="serving.budgets.prefix")


def exceeded(win: Window, spent: int, now: float) -> RateLimited:
    error = RateLimited(
        f"Budget exceeded: {_scope_words(win.scope)} has spent ${_usd(spent)} of its ${win.budget.usd_text} "
        f"{win.budget.period_word} budget; it renews at {win.end:%Y-%m-%d %H:%M} UTC.",
        code="budget_exceeded", retry_after=win.retry_after(now))
    error.headers = {"X-Budget-Limit-USD": win.budget.usd_text, "X-Budget-Spent-USD": _usd(spent),
                     "X-Budget-Reset": str(win.retry_after(now))}
    return error


def spend_commands(windows: tuple[Window, ...], cost: int) -> list[tuple[str | int, ...]]:
    """After a call: the commands that add its cost to each of its budget windows (their replies go to
    spent())."""
    commands: list[tuple[str | int, ...]] = []
    if cost > 0:
        for win in windows:
            commands += counters.add_to_window(win.key, win.ttl, cost)
    return commands


def spent(replies: list[Any], windows: tuple[Window, ...], cost: int) -> None:
    """Report the thresholds that a call's cost made its budget windows cross (the replies of its
    spend_commands)."""
    for index, win in enumerate(windows):
        total = int(replies[2 * index + 1])
        for percent in crossed(total - cost, total, win.budget.picousd):
            _alert(win, percent, total)


def crossed(before: int, after: int, budget: int) -> list[int]:
    """The thresholds (percent) that a spend going from `before` to `after` crosses."""
    if after * 100 < THRESHOLDS[0] * budget:  # most calls: below the first threshold, nothing to look at
        return []
    return [p for p in THRESHOLDS if before * 100 < p * budget <= after * 100]


def _alert(win: Window, percent: int, total: int) -> None:
    body = {"event": "budget.threshold", "scope": "consumer" if win.scope.startswith("c:") else "endpoint",
            "name": win.scope[2:], "threshold_percent": percent, "spent_usd": _usd(total),
            "budget_usd": win.budget.usd_text, "period": win.budget.period, "period_start": win.start.isoformat(),
            "period_end": win.end.isoformat(), "action": win.budget.action, "time": time.time()}
    logger.warning("budget alert: %s has spent $%s, %d%% of its $%s %s budget (action: %s)",
                   _scope_words(win.scope), body["spent_usd"], percent, win.budget.usd_text, win.budget.period_word,
                   win.budget.action)
    url = settings.GATEWAY_ALERT_WEBHOOK_URL
    if url:
        global _last_delivery
        previous = _last_delivery
        future = asyncio.ensure_future(_post(url, body, previous))
        _last_delivery = future
        counters.track(future)


_last_delivery: asyncio.Future[None] | None = None  # a process's alerts leave one after the other, in order


async def _post(url: str, body: dict[str, Any], previous: asyncio.Future[None] | None = None) -> None:
    from serving.upstream import post_notification

    if previous is not None and not previous.done() and previous.get_loop() is asyncio.get_running_loop():
        await asyncio.wait([previous])  # never raises: the 80 % alert is not sent before the 50 % one
    try:
        status = await post_notification(url, orjson.dumps(body))
    except Exception as exc:
        logger.warning("budget alert webhook failed: %s: %s", type(exc).__name__, exc)
        return
    if status >= 300:
        logger.warning("budget alert webhook answered %s", status)


def seed(windows: list[Window], spent: dict[str, int]) -> None:
    """Start each window's counter from what the ledger holds for it, unless it is already counting."""
    commands = [("SET", win.key, spent.get(win.key, 0), "EX", win.ttl, "NX") for win in windows]
    if commands:
        try:
            counters.execute_blocking(commands)
        except counters.CounterUnavailable as exc:
            logger.warning("budget counters could not be seeded from the ledger: %s", exc)


def _usd(picousd: int) -> str:
    return f"{Decimal(picousd) / PICO_PER_USD:.6f}"


def _scope_words(scope: str) -> str:
    return f"consumer '{scope[2:]}'" if scope.startswith("c:") else f"endpoint '{scope[2:]}'"
