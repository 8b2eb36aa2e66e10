"""The dashboard's numbers, read only from the usage rollups.

A window's charts read one rollup table: the last hour per minute (UsageMinute), 24 hours and 7 days per
hour, 30 days per day; with no consumer or endpoint to narrow them, from the totals (UsageHourTotal,
UsageDayTotal: one row per bucket), otherwise from UsageHour or UsageDay, summed per bucket in the
database. The rankings (top consumers and endpoints) read the coarsest rollups that fit the window, as
the usage report does (usage.reports.choose_spans: whole days from UsageDay, the edges from UsageHour).
So the page costs a few aggregated queries over few rows, however many records the ledger holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils import timezone

from usage.models import ERROR_KINDS, UsageDay, UsageDayTotal, UsageHour, UsageHourTotal, UsageMinute
from usage.reports import ERROR_COLUMNS, LATENCY_COLUMNS, choose_spans, percentile

RollupTable = type[UsageMinute] | type[UsageHour] | type[UsageDay] | type[UsageHourTotal] | type[UsageDayTotal]
COUNT_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_picousd")
SERIES_COLUMNS = (*COUNT_COLUMNS, *ERROR_COLUMNS, *LATENCY_COLUMNS)
TOP = 10


@dataclass(frozen=True)
class Window:
    key: str  # the `window` GET parameter
    label: str
    length: timedelta
    step: int  # seconds per bucket
    table: RollupTable
    totals: RollupTable | None = None  # the same buckets over every consumer and endpoint

    @property
    def table_name(self) -> str:
        return self.table.__name__

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """[since, until): `length`, ending with the bucket that holds `now`."""
        epoch = now.timestamp()
        until = datetime.fromtimestamp(epoch - epoch % self.step + self.step, UTC)
        return until - self.length, until


WINDOWS = (
    Window("1h", "Last hour", timedelta(hours=1), 60, UsageMinute),
    Window("24h", "Last 24 hours", timedelta(hours=24), 3600, UsageHour, UsageHourTotal),
    Window("7d", "Last 7 days", timedelta(days=7), 3600, UsageHour, UsageHourTotal),
    Window("30d", "Last 30 days", timedelta(days=30), 86400, UsageDay, UsageDayTotal),
)
DEFAULT_WINDOW = "24h"


def window_named(key: str | None) -> Window:
    for window in WINDOWS:
        if window.key == key:
            return window
    return window_named(DEFAULT_WINDOW)


class LatencyPercentiles:
    """p50 and p95 from the latency histogram columns of `latency_sums`."""

    @property
    def latency_sums(self) -> dict[str, int]:
        raise NotImplementedError

    @property
    def histogram(self) -> list[int]:
        return [self.latency_sums[column] for column in LATENCY_COLUMNS]

    @property
    def p50(self) -> float | None:
        return percentile(self.histogram, 0.5)

    @property
    def p95(self) -> float | None:
        return percentile(self.histogram, 0.95)


@dataclass(frozen=True)
class Bucket(LatencyPercentiles):
    start: datetime
    sums: dict[str, int]

    @property
    def latency_sums(self) -> dict[str, int]:
        return self.sums


@dataclass
class Usage(LatencyPercentiles):
    """A window's sums per bucket (every bucket, zeros included), and in total."""

    window: Window
    since: datetime
    until: datetime
    consumer: str
    endpoint: str
    buckets: list[Bucket]
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def latency_sums(self) -> dict[str, int]:
        return self.totals

    @property
    def error_rate(self) -> float | None:
        return self.totals["errors"] / self.totals["requests"] if self.totals["requests"] else None

    def errors_by_kind(self) -> dict[str, int]:
        return {kind: self.totals[f"err_{kind}"] for kind in ERROR_KINDS}


def rollup_rows(table: RollupTable, since: datetime, until: datetime, *, consumer: str = "",
                endpoint: str = "") -> QuerySet[Any]:
    rows: QuerySet[Any] = table.objects.filter(bucket__gte=since, bucket__lt=until)
    if consumer:
        rows = rows.filter(consumer=consumer)
    if endpoint:
        rows = rows.filter(endpoint=endpoint)
    return rows


def usage_over_time(window: Window, *, now: datetime | None = None, consumer: str = "", endpoint: str = "") -> Usage:
    """One query: the window's rollup rows summed per bucket (its totals' rows when nothing narrows it)."""
    since, until = window.bounds(now or timezone.now())
    table = window.totals if window.totals is not None and not consumer and not endpoint else window.table
    sums = (rollup_rows(table, since, until, consumer=consumer, endpoint=endpoint)
            .values("bucket").annotate(**{f"sum_{column}": Sum(column) for column in SERIES_COLUMNS})
            .order_by("bucket"))
    found = {int(row["bucket"].timestamp()): row for row in sums}
    buckets = []
    for start in range(int(since.timestamp()), int(until.timestamp()), window.step):
        row = found.get(start, {})
        buckets.append(Bucket(datetime.fromtimestamp(start, UTC),
                              {column: int(row.get(f"sum_{column}") or 0) for column in SERIES_COLUMNS}))
    totals = {column: sum(bucket.sums[column] for bucket in buckets) for column in SERIES_COLUMNS}
    return Usage(window, since, until, consumer, endpoint, buckets, totals)


@dataclass(frozen=True)
class Ranked:
    name: str
    requests: int
    errors: int
    cost_picousd: int


def groups(window: Window, since: datetime, until: datetime, *, by: str, consumer: str = "",
           endpoint: str = "") -> list[Ranked]:
    """Every consumer or endpoint (`by`) of the window with its sums, costliest first: one grouped query per
    piece of the window (whole days from the day rollups, the edges from the hour ones), added up here. One
    pass serves both rankings (by cost and by errors): there are far fewer groups than rollup rows."""
    assert by in ("consumer", "endpoint")
    sums: dict[str, list[int]] = {}
    for span in choose_spans(since, until):
        rows = (rollup_rows(span.table, span.since, span.until, consumer=consumer, endpoint=endpoint)
                .values(by).annotate(n_requests=Sum("requests"), n_errors=Sum("errors"), n_cost=Sum("cost_picousd"))
                .order_by())
        for row in rows:
            total = sums.setdefault(row[by], [0, 0, 0])
            total[0] += int(row["n_requests"] or 0)
            total[1] += int(row["n_errors"] or 0)
            total[2] += int(row["n_cost"] or 0)
    ranked = [Ranked(name, *total) for name, total in sums.items()]
    return sorted(ranked, key=lambda group: (-group.cost_picousd, group.name))


def top(ranked: list[Ranked], order: str, limit: int = TOP) -> list[Ranked]:
    """The `limit` groups with the highest cost or errors (`order`), leaving out those with none."""
    assert order in ("cost_picousd", "errors")
    chosen = [group for group in ranked if getattr(group, order) > 0]
    return sorted(chosen, key=lambda group: (-getattr(group, order), group.name))[:limit]
