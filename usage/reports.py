"""Reading the ledger: reports grouped by consumer, endpoint, model or day, from the rollups.

A report never scans the raw records: it sums the rollups, each part of the range from the coarsest that
covers it exactly: whole days from the per-day rollups, the whole hours around them from the per-hour ones,
the minutes at either end from the per-minute ones (a range is read to the minute: its start is rounded
down to the minute). So a 30-day report reads about 30 days' worth of day rows and at most two days of hour
rows and two hours of minute rows, whatever the traffic.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from django.db.models import Q, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from usage.models import ERROR_KINDS, LATENCY_BOUNDS_MS, PICO, UsageDay, UsageHour, UsageMinute

if TYPE_CHECKING:
    from serving.budgets import Window

GROUPS = ("consumer", "endpoint", "model", "day")
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_picousd")
_RELATIVE = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class ReportError(ValueError):
    """A report request that cannot be answered; the message says why."""


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """`24h`, `7d`, `90m`, `2w` (that long ago), `2026-12-01` (midnight UTC) or an ISO date-time."""
    now = now or timezone.now()
    match = _RELATIVE.match(text)
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ReportError(f"{text!r} is not a time: write 24h, 7d, 2w, 90m, a date (2026-12-01) or an ISO "
                          "date-time") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Span:
    since: datetime
    until: datetime
    table: type[UsageMinute] | type[UsageHour] | type[UsageDay]


def choose_spans(since: datetime, until: datetime) -> list[Span]:
    """The parts of [since, until) and the rollup each is read from: minutes up to the first whole hour,
    hours up to the first whole day, whole days, then hours and minutes again up to `until`."""
    if until <= since:
        raise ReportError("the report's end must come after its start")
    start, end = _floor(since, 60).timestamp(), until.timestamp()
    first_hour, last_hour = -(-start // 3600) * 3600, end - end % 3600
    first_day, last_day = -(-start // 86400) * 86400, end - end % 86400
    parts: list[tuple[float, float, type[UsageMinute] | type[UsageHour] | type[UsageDay]]]
    if first_hour >= last_hour:
        parts = [(start, end, UsageMinute)]
    elif first_day >= last_day:
        parts = [(start, first_hour, UsageMinute), (first_hour, last_hour, UsageHour), (last_hour, end, UsageMinute)]
    else:
        parts = [(start, first_hour, UsageMinute), (first_hour, first_day, UsageHour), (first_day, last_day, UsageDay),
                 (last_day, last_hour, UsageHour), (last_hour, end, UsageMinute)]
    return [Span(datetime.fromtimestamp(a, UTC), datetime.fromtimestamp(b, UTC), table)
            for a, b, table in parts if a < b]


def _floor(when: datetime, seconds: int) -> datetime:
    epoch = when.timestamp()
    return datetime.fromtimestamp(epoch - epoch % seconds, UTC)


def report(since: datetime, until: datetime, by: str, *, consumer: str | None = None,
           endpoint: str | None = None) -> list[dict[str, Any]]:
    """One object per group, largest cost first: the group's key (consumer, endpoint, model or day),
    requests, errors, prompt_tokens, completion_tokens, total_tokens and cost_usd."""
    if by not in GROUPS:
        raise ReportError(f"--by must be one of {', '.join(GROUPS)}")
    groups: dict[str, list[int]] = {}
    for span in choose_spans(since, until):  # one grouped query per part, added up here
        rows = span.table.objects.filter(bucket__gte=span.since, bucket__lt=span.until)
        if consumer:
            rows = rows.filter(consumer=consumer)
        if endpoint:
            rows = rows.filter(endpoint=endpoint)
        grouped = rows.annotate(day=TruncDate("bucket", tzinfo=UTC)).values("day") if by == "day" else rows.values(by)
        summed: Any = grouped.annotate(**{name: Sum(name) for name in SUMS}).order_by()
        for row in summed:
            key = row["day"].isoformat() if by == "day" else row[by]
            sums = groups.setdefault(key, [0] * len(SUMS))
            for index, name in enumerate(SUMS):
                sums[index] += int(row[name] or 0)
    result = []
    for key, sums in groups.items():
        item: dict[str, Any] = {by: key, **dict(zip(SUMS[:-1], sums, strict=False))}
        item["cost_usd"] = float(Decimal(sums[-1]) * PICO)
        result.append(item)
    if by == "day":
        result.sort(key=lambda item: item["day"])
    else:
        result.sort(key=lambda item: (-item["cost_usd"], str(item[by])))
    return result


def totals(items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: 0 for name in SUMS[:-1]}
    cost = 0.0
    for item in items:
        for name in SUMS[:-1]:
            out[name] += item[name]
        cost += item["cost_usd"]
    out["cost_usd"] = cost
    return out


def percentile(histogram: list[int], fraction: float) -> float | None:
    """An estimate of a latency percentile (ms) from a histogram over LATENCY_BOUNDS_MS: the upper bound
    of the bucket that holds it, interpolated linearly inside the bucket."""
    count = sum(histogram)
    if not count:
        return None
    rank = fraction * count
    seen = 0
    lower = 0.0
    for index, bucket in enumerate(histogram):
        upper = float(LATENCY_BOUNDS_MS[index]) if index < len(LATENCY_BOUNDS_MS) else float(LATENCY_BOUNDS_MS[-1]) * 2
        if bucket and seen + bucket >= rank:
            return lower + (upper - lower) * (rank - seen) / bucket
        seen += bucket
        lower = upper
    return lower


LATENCY_COLUMNS = tuple(f"lat_{index}" for index in range(len(LATENCY_BOUNDS_MS) + 1))
ERROR_COLUMNS = tuple(f"err_{kind}" for kind in ERROR_KINDS)


def ledger_spend(windows: list[Window]) -> dict[str, int]:
    """What the ledger holds as spent in each budget window (pico-dollars), by the window's counter key."""
    spent: dict[str, int] = {}
    for win in windows:
        kind, name = win.scope[:1], win.scope[2:]
        scope = Q(consumer=name) if kind == "c" else Q(endpoint=name)
        total = UsageDay.objects.filter(scope, bucket__gte=win.start, bucket__lt=win.end).aggregate(
            cost=Sum("cost_picousd"))["cost"]
        spent[win.key] = int(total or 0)
    return spent
