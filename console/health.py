"""What an endpoint, a traffic route or a consumer is doing now: the figures on their admin pages.

- the last hour, from the per-minute rollups (requests, errors, latency percentiles);
- the last errors, from the ledger's records (the (endpoint, time) index, bounded to the last day);
- the current rate-limit window and budget period, read from the shared counters (serving.counters:
  Redis, the server's shared store, or this process) under the keys serving.ratelimit and
  serving.budgets count them in, in one round trip;
- spend this day, week and month, from the per-day rollups.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Q, Sum
from django.utils import timezone

from console.dashboard import LATENCY_COLUMNS
from endpoints_app.models import Budgeted, Endpoint
from serving import budgets, circuit, counters
from serving.budgets import Budget
from serving.ratelimit import call_limit
from usage.models import UsageDay, UsageMinute, UsageRecord, usd
from usage.reports import ledger_spend, percentile

RECENT_ERRORS = 5
ERRORS_LOOKBACK = timedelta(days=1)


@dataclass(frozen=True)
class Health:
    name: str
    requests: int
    errors: int
    histogram: tuple[int, ...]

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    @property
    def p95(self) -> float | None:
        return percentile(list(self.histogram), 0.95)


def last_hour(names: list[str], now: datetime | None = None) -> dict[str, Health]:
    """One query: the last 60 minutes' sums per endpoint (rollups count a call under the endpoint that
    served it, or the name called when none did: a route's refused calls count under the route)."""
    now = now or timezone.now()
    epoch = now.timestamp()
    since = datetime.fromtimestamp(epoch - epoch % 60 - 59 * 60, now.tzinfo)
    rows = (UsageMinute.objects.filter(bucket__gte=since, endpoint__in=names).values("endpoint")
            .annotate(n_requests=Sum("requests"), n_errors=Sum("errors"),
                      **{f"n_{column}": Sum(column) for column in LATENCY_COLUMNS}))
    found: dict[str, Any] = {row["endpoint"]: row for row in rows}
    out = {}
    for name in names:
        row = found.get(name, {})
        out[name] = Health(name, int(row.get("n_requests") or 0), int(row.get("n_errors") or 0),
                           tuple(int(row.get(f"n_{column}") or 0) for column in LATENCY_COLUMNS))
    return out


def recent_errors(*, endpoints: list[str], called: str, route: str = "", limit: int = RECENT_ERRORS,
                  now: datetime | None = None) -> list[UsageRecord]:
    """The newest failed calls served by `endpoints`, or refused before any endpoint was chosen while
    calling the name `called`; within the last day (so the index scan stays short)."""
    since = (now or timezone.now()) - ERRORS_LOOKBACK
    served = Q(endpoint__in=endpoints)
    if route:
        served &= Q(route=route)
    rows = UsageRecord.objects.filter(served | Q(endpoint="", name=called), time__gte=since, status__gte=400)
    return list(rows.order_by("-time")[:limit])


@dataclass(frozen=True)
class LimitState:
    scope: str  # "e:<endpoint>" or "c:<consumer>"
    calls: int
    description: str  # "600 per 1 minute"
    key: str
    reset_seconds: int
    used: int | None = None  # None: not read (the counters could not be reached)

    @property
    def remaining(self) -> int | None:
        return None if self.used is None else max(0, self.calls - self.used)


@dataclass(frozen=True)
class BudgetState:
    scope: str
    window: budgets.Window
    counted: int | None = None  # pico-dollars in the counter; None: not counting yet, or not read
    ledger: int = 0  # pico-dollars in the rollups for the same period

    @property
    def budget(self) -> Budget:
        return self.window.budget

    @property
    def period_words(self) -> str:
        return {"day": "today", "week": "this week"}.get(self.budget.period, "this month")

    @property
    def spent(self) -> int:
        """What the gateway enforces: the counter, or the ledger when the counter is not counting."""
        return self.counted if self.counted is not None else self.ledger

    @property
    def spent_usd(self) -> Decimal:
        return usd(self.spent)

    @property
    def ledger_usd(self) -> Decimal:
        return usd(self.ledger)

    @property
    def percent(self) -> float | None:
        return 100 * self.spent / self.budget.picousd if self.budget.picousd else None

    @property
    def exceeded(self) -> bool:
        return self.spent >= self.budget.picousd


def limit_state(scope: str, calls: int, renewal_period: str, now: float) -> LimitState:
    """The current fixed window of a call limit, keyed as serving.ratelimit counts it."""
    limit = call_limit(calls, renewal_period)
    window = int(now // limit.period_seconds)
    reset = max(1, math.ceil((window + 1) * limit.period_seconds - now))
    return LimitState(scope, calls, limit.description,
                      counters.key("ratelimit", scope, limit.period_seconds, window), reset)


def budget_window(scope: str, row: Budgeted, now: float) -> budgets.Window | None:
    if not row.has_budget or row.budget_usd is None:
        return None
    return budgets.window(scope, Budget.of(row.budget_usd, row.budget_period, row.budget_action or "reject"), now)


@dataclass
class Counted:
    """The counters' answers for a page: limits and budgets, or why they could not be read."""

    limits: list[LimitState]
    budgets: list[BudgetState]
    unavailable: str = ""
    where: str = ""


def read_counters(limits: list[LimitState], windows: list[budgets.Window]) -> Counted:
    """One round trip to the counters (GET of every key), and one query for the budgets' ledger spend."""
    ledger = ledger_spend(windows) if windows else {}
    keys = [state.key for state in limits] + [win.key for win in windows]
    result = Counted(limits, [BudgetState(win.scope, win, None, ledger.get(win.key, 0)) for win in windows],
                     where=counters.where())
    if not keys:
        return result
    try:
        replies = counters.execute_blocking([("GET", key) for key in keys])
    except counters.CounterUnavailable as exc:
        result.unavailable = str(exc)
        return result
    values = [int(reply) if reply is not None else None for reply in replies]
    result.limits = [LimitState(s.scope, s.calls, s.description, s.key, s.reset_seconds, values[i] or 0)
                     for i, s in enumerate(limits)]
    offset = len(limits)
    result.budgets = [BudgetState(b.scope, b.window, values[offset + i], b.ledger)
                      for i, b in enumerate(result.budgets)]
    return result


def endpoint_counters(endpoints: list[Endpoint]) -> Counted:
    now = time.time()
    limits = [limit_state(f"e:{e.name}", e.limit_calls, e.limit_renewal_period, now)
              for e in endpoints if e.has_limit and e.limit_calls is not None]
    windows = [win for e in endpoints if (win := budget_window(f"e:{e.name}", e, now)) is not None]
    return read_counters(limits, windows)


def consumer_counters(consumer: Any) -> Counted:
    now = time.time()
    limits = ([limit_state(f"c:{consumer.name}", consumer.limit_calls, consumer.limit_renewal_period, now)]
              if consumer.has_limit and consumer.limit_calls is not None else [])
    win = budget_window(f"c:{consumer.name}", consumer, now)
    return read_counters(limits, [win] if win is not None else [])


def circuits(names: list[str]) -> dict[str, circuit.Snapshot] | str:
    """Each endpoint's circuit as a route destination (one round trip), or why it cannot be read."""
    try:
        return circuit.snapshot(names)
    except counters.CounterUnavailable as exc:
        return str(exc)


@dataclass(frozen=True)
class PeriodSpend:
    day: int
    week: int
    month: int

    def as_usd(self) -> dict[str, Decimal]:
        return {"day": usd(self.day), "week": usd(self.week), "month": usd(self.month)}


def period_spend(*, consumer: str = "", endpoint: str = "", now: datetime | None = None) -> PeriodSpend:
    """One query: spend this UTC day, ISO week and calendar month (budgets' periods), from the daily rollups."""
    now = now or timezone.now()
    starts = {period: budgets.period_bounds(period, now)[0] for period in ("day", "week", "month")}
    rows = UsageDay.objects.filter(bucket__gte=min(starts.values()))
    if consumer:
        rows = rows.filter(consumer=consumer)
    if endpoint:
        rows = rows.filter(endpoint=endpoint)
    sums = rows.aggregate(**{period: Sum("cost_picousd", filter=Q(bucket__gte=start))
                             for period, start in starts.items()})
    return PeriodSpend(*(int(sums[period] or 0) for period in ("day", "week", "month")))
