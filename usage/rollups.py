"""Writing batches of usage records, and the rollups they add to.

Raw records go in with PostgreSQL's COPY (or one multi-row insert on SQLite); each rollup row is one
`INSERT ... ON CONFLICT (bucket, consumer, endpoint, model) DO UPDATE SET col = col + excluded.col`,
so batches from any number of workers and instances add up without reading first. Everything is in
plain columns (counts, token sums, cost in pico-dollars, errors by kind, a latency histogram) so that
the addition happens in the database.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import connection

from usage.models import (
    ERROR_KINDS,
    LATENCY_BOUNDS_MS,
    UsageDay,
    UsageDayTotal,
    UsageHour,
    UsageHourTotal,
    UsageMinute,
    UsageRecord,
)

if TYPE_CHECKING:
    from usage.ledger import Entry

RECORD_COLUMNS = ("time", "request_id", "family", "consumer", "key_prefix", "name", "route", "endpoint", "provider",
                  "model", "stream", "status", "error_kind", "error_code", "prompt_tokens", "completion_tokens",
                  "total_tokens", "latency_ms", "ttfb_ms", "cost_picousd", "retries", "fallbacks")
KEY_COLUMNS = ("bucket", "consumer", "endpoint", "model")
SUM_COLUMNS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_picousd",
               "latency_ms_sum", *(f"err_{kind}" for kind in ERROR_KINDS),
               *(f"lat_{index}" for index in range(len(LATENCY_BOUNDS_MS) + 1)))
GRANULARITIES = ((60, UsageMinute), (3600, UsageHour), (86400, UsageDay))
TOTALS = {3600: UsageHourTotal, 86400: UsageDayTotal}  # the same sums without consumer, endpoint and model
_ERROR_INDEX = {kind: 7 + index for index, kind in enumerate(ERROR_KINDS)}
_LATENCY_START = 7 + len(ERROR_KINDS)


def _when(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


_SECONDS: dict[int, str] = {}  # "YYYY-MM-DD HH:MM:SS" of recent epoch seconds


def _sqlite_when(epoch: float) -> str:
    """What Django's SQLite backend stores for _when(epoch) (its adapt_datetimefield_value: the UTC time,
    naive, as str() prints it), without its checks, and with the date and time of day formatted once a
    second: a fifth of the cost of formatting each, on every record."""
    moment = datetime.fromtimestamp(epoch, UTC)
    micro = moment.microsecond
    if not micro:  # str() prints no fraction then (and the rounding may have carried into the next second)
        return moment.isoformat(" ")[:-6]  # without its "+00:00"
    second = int(epoch)  # moment's own second: a carry leaves no microseconds
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 4096:
            _SECONDS.clear()
        prefix = _SECONDS[second] = datetime.fromtimestamp(second, UTC).isoformat(" ")[:-6]
    return f"{prefix}.{micro:06d}"


def _time_adapter() -> Any:
    if connection.vendor == "sqlite" and connection.timezone_name == "UTC":
        return _sqlite_when
    adapt = connection.ops.adapt_datetimefield_value
    return lambda epoch: adapt(_when(epoch))


_ROWS_PER_INSERT = 128  # 2,816 parameters (SQLite 3.32 and later take up to 32,766)


def insert_records(entries: Sequence[Entry]) -> None:
    table = connection.ops.quote_name(UsageRecord._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in RECORD_COLUMNS)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # psycopg's COPY, under Django's error mapping (a refused row is an IntegrityError, as elsewhere).
            with connection.wrap_database_errors, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for entry in entries:
                    copy.write_row((_when(entry[0]), *entry[1:]))
            return
        # Many rows to a statement: executemany() steps SQLite once per row, and lets go of the GIL around
        # each step; taking it back from a busy event loop costs a thread switch each time (measured: the
        # writer thread used five times the CPU when its worker was saturated).
        # The chunks have a few fixed sizes (128, then the powers of two of the rest), so that SQLite's cache of
        # prepared statements (128 per connection) holds a few of them, not one per batch size: each one of
        # thousands of parameters weighs hundreds of kilobytes.
        adapt = _time_adapter()
        row = "(" + ", ".join(["?"] * len(RECORD_COLUMNS)) + ")"
        start = 0
        while start < len(entries):
            size = min(_ROWS_PER_INSERT, 1 << ((len(entries) - start).bit_length() - 1))
            values: list[Any] = []
            for entry in entries[start:start + size]:
                values.append(adapt(entry[0]))
                values.extend(entry[1:])
            _sqlite_execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * size)}", values)
            start += size


def _sqlite_execute(sql: str, params: Sequence[Any], many: bool = False) -> None:
    """A statement with `?` placeholders on the sqlite3 connection itself, under Django's error mapping:
    Django's cursor rewrites every `%s` of the SQL text with a regular expression on each call (a fifth of
    the ledger's CPU with 2,816 placeholders a statement)."""
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.connection.cursor()
        try:
            if many:
                cursor.executemany(sql, params)
            else:
                cursor.execute(sql, params)
        finally:
            cursor.close()


def aggregate(entries: Sequence[Entry], seconds: int = 60) -> dict[tuple[float, str, str, str], list[float]]:
    """The batch's sums per (bucket start, consumer, endpoint, model), in SUM_COLUMNS order."""
    groups: dict[tuple[float, str, str, str], list[float]] = {}
    width = len(SUM_COLUMNS)
    for entry in entries:
        key = (entry.time - entry.time % seconds, entry.consumer, entry.endpoint or entry.name, entry.model)
        sums = groups.get(key)
        if sums is None:
            sums = groups[key] = [0] * width
        sums[0] += 1
        if entry.status >= 400:
            sums[1] += 1
            kind = _ERROR_INDEX.get(entry.error_kind)
            if kind is not None:
                sums[kind] += 1
        sums[2] += entry.prompt_tokens or 0
        sums[3] += entry.completion_tokens or 0
        sums[4] += entry.total_tokens or 0
        sums[5] += entry.cost_picousd
        sums[6] += entry.latency_ms
        sums[_LATENCY_START + bisect.bisect_left(LATENCY_BOUNDS_MS, entry.latency_ms)] += 1
    return groups


def coarsen(groups: dict[tuple[float, str, str, str], list[float]], seconds: int, *,
            dimensions: bool = True) -> dict[tuple[float, str, str, str], list[float]]:
    """Finer groups (aggregate's) added up into buckets of `seconds`, a multiple of theirs; without
    `dimensions`, over every consumer, endpoint and model too (the totals' rows)."""
    coarse: dict[tuple[float, str, str, str], list[float]] = {}
    for (bucket, consumer, endpoint, model), sums in groups.items():
        key = (bucket - bucket % seconds, consumer, endpoint, model) if dimensions else \
            (bucket - bucket % seconds, "", "", "")
        total = coarse.get(key)
        if total is None:
            coarse[key] = list(sums)
        else:
            for index, value in enumerate(sums):
                total[index] += value
    return coarse


def add_to_rollups(entries: Sequence[Entry]) -> None:
    groups = aggregate(entries, GRANULARITIES[0][0])  # each record read once; hours and days from minutes
    adapt = _time_adapter()
    for seconds, model in GRANULARITIES:
        groups = coarsen(groups, seconds)
        _add(model._meta.db_table, groups, adapt)
        if seconds in TOTALS:
            _add(TOTALS[seconds]._meta.db_table, coarsen(groups, seconds, dimensions=False), adapt)


def _add(db_table: str, groups: dict[tuple[float, str, str, str], list[float]], adapt: Any) -> None:
    table = connection.ops.quote_name(db_table)
    names = [connection.ops.quote_name(c) for c in (*KEY_COLUMNS, *SUM_COLUMNS)]
    updates = ", ".join(f"{name} = {table}.{name} + excluded.{name}" for name in names[len(KEY_COLUMNS):])
    sqlite = connection.vendor == "sqlite"
    placeholders = ", ".join(["?" if sqlite else "%s"] * len(names))
    sql = (f"INSERT INTO {table} ({', '.join(names)}) VALUES ({placeholders}) "
           f"ON CONFLICT ({', '.join(names[:len(KEY_COLUMNS)])}) DO UPDATE SET {updates}")
    rows: list[tuple[Any, ...]] = [(adapt(bucket), consumer, endpoint, model_name, *sums)
                                   for (bucket, consumer, endpoint, model_name), sums in groups.items()]
    if sqlite:
        _sqlite_execute(sql, rows, many=True)
        return
    with connection.cursor() as cursor:
        cursor.executemany(sql, rows)
