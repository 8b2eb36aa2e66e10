"""The usage ledger at scale: 10 million records on PostgreSQL, then how fast it is read.

Builds the data set with the ledger's own pieces (build() says how), in time order as a running gateway
writes it: `--records` invocations over `--days` days, from
`--consumers` consumers (a few large, many small, as in life) on `--endpoints` endpoints, 2 % errors,
latencies from 50 ms to 4 s, costs from the built-in prices. Then it times, each --runs times (median
and max, wall and CPU of this process):

- `usage_report --since 30d --by consumer` (and by endpoint, model and day), in this process;
- the same report through the management API (GET /api/manage/usage/, an operator token);
- the console's dashboard for each window (1h, 24h, 7d, 30d), as a logged-in operator;
- one `manage.py usage_report --since 30d --by consumer` as a fresh process (what an operator types).

    .venv/bin/python bench/usage_dataset.py                       # build 10M records, then measure
    .venv/bin/python bench/usage_dataset.py --reuse               # measure the data set built earlier

The database is --database-url (default: postgres://postgres@127.0.0.1:5432/usage_bench, created if
missing), never the DATABASE_URL of the environment, so a production database is never written to.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/usage_bench"
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-20241022", "text-embedding-3-small", "mistral-small-latest",
          "gemini-1.5-flash")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--consumers", type=int, default=200)
    parser.add_argument("--endpoints", type=int, default=24)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--reuse", action="store_true", help="measure the data set of an earlier run again")
    options = parser.parse_args()

    create_database(options.database_url, fresh=not options.reuse)
    os.environ["DATABASE_URL"] = options.database_url
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("GATEWAY_ALLOW_DEV_SECRET_KEY", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ["GATEWAY_CONFIG_POLL_SECONDS"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if not options.reuse:
        build(options)
    describe()
    measure(options.runs, options.database_url)


def create_database(url: str, *, fresh: bool) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin_url, autocommit=True) as connection:
        exists = connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists and fresh:
            connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            exists = None
        if not exists:
            connection.execute(f'CREATE DATABASE "{name}"')


def build(options: argparse.Namespace) -> None:
    """Hour by hour, in time order: the hour's records go in with the ledger's own COPY
    (rollups.insert_records), and its minute and hour rollup rows, summed by the ledger's own functions
    (rollups.aggregate, rollups.coarsen), with one COPY each, as are the day rows once a day is complete.
    The rows are the ones the writer's upserts would leave (each key is written once, so the upsert's
    additions are not needed), built in minutes instead of hours."""
    from django.db import connection, transaction

    from usage import prices
    from usage.ledger import Entry
    from usage.models import UsageDay, UsageDayTotal, UsageHour, UsageHourTotal, UsageMinute
    from usage.rollups import aggregate, coarsen, insert_records

    rng = random.Random(12)
    hours = options.days * 24
    now = time.time()
    first_hour = int(now // 3600) - hours
    consumers = [f"team-{index:03d}" for index in range(options.consumers)]
    consumer_weights = [1 / (index + 1) ** 1.1 for index in range(options.consumers)]  # Zipf-like
    endpoints = [(f"endpoint-{index:02d}", MODELS[index % len(MODELS)]) for index in range(options.endpoints)]
    endpoint_weights = [1 / (index + 1) for index in range(options.endpoints)]
    price = {model: (prices.picousd_per_token(found[0]), prices.picousd_per_token(found[1]))
             if (found := prices.list_price(model)) is not None else None for model in MODELS}
    latencies = [60.0, 120.0, 240.0, 480.0, 900.0, 1800.0, 3600.0]
    written = 0
    day_groups: dict[tuple[float, str, str, str], list[float]] = {}
    began = time.perf_counter()
    for hour in range(hours):
        count = options.records * (hour + 1) // hours - written
        hour_start = (first_hour + hour) * 3600.0
        picked_consumers = rng.choices(consumers, consumer_weights, k=count)
        picked_endpoints = rng.choices(endpoints, endpoint_weights, k=count)
        batch = []
        for index in range(count):
            consumer = picked_consumers[index]
            endpoint, model = picked_endpoints[index]
            failed = rng.random() < 0.02
            prompt, completion = rng.randrange(20, 2000), (0 if model.startswith("text-") else rng.randrange(5, 800))
            found = price[model]
            cost = 0 if failed or found is None else found[0] * prompt + found[1] * completion
            batch.append(Entry(
                hour_start + 3600.0 * index / count, f"{written + index:024x}", "endpoints", consumer,
                "gwk_" + consumer[-3:].rjust(8, "0"), endpoint, "", endpoint, "openai", model, False,
                503 if failed else 200, "upstream" if failed else "", "upstream_error" if failed else "",
                None if failed else prompt, None if failed else completion, None if failed else prompt + completion,
                rng.choice(latencies) * (0.5 + rng.random()), None, cost, 0, 0))
        minutes = aggregate(batch, 60)
        hourly = coarsen(minutes, 3600)
        with transaction.atomic():
            insert_records(batch)
            copy_rollup(UsageMinute, minutes)
            copy_rollup(UsageHour, hourly)
            copy_rollup(UsageHourTotal, coarsen(hourly, 3600, dimensions=False))
            for key, sums in coarsen(hourly, 86400).items():
                total = day_groups.setdefault(key, [0] * len(sums))
                for position, value in enumerate(sums):
                    total[position] += value
            if (hour_start + 3600) % 86400 == 0 or hour == hours - 1:  # a day complete (or the last hour)
                copy_rollup(UsageDay, day_groups)
                copy_rollup(UsageDayTotal, coarsen(day_groups, 86400, dimensions=False))
                day_groups = {}
        written += count
        if (hour + 1) % 48 == 0 or hour == hours - 1:
            elapsed = time.perf_counter() - began
            print(f"{written:>11,} records written, {written / elapsed:,.0f} records/s", flush=True)
    elapsed = time.perf_counter() - began
    print(f"built {written:,} records in {elapsed:.0f} s ({written / elapsed:,.0f} records/s)", flush=True)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def copy_rollup(model: Any, groups: dict[tuple[float, str, str, str], list[float]]) -> None:
    from datetime import UTC, datetime

    from django.db import connection

    from usage.rollups import KEY_COLUMNS, SUM_COLUMNS

    table = connection.ops.quote_name(model._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(c) for c in (*KEY_COLUMNS, *SUM_COLUMNS))
    with connection.cursor() as cursor, cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for (bucket, consumer, endpoint, model_name), sums in groups.items():
            copy.write_row((datetime.fromtimestamp(bucket, UTC), consumer, endpoint, model_name, *sums))


def describe() -> None:
    from django.db import connection

    from usage.models import UsageDay, UsageDayTotal, UsageHour, UsageHourTotal, UsageMinute, UsageRecord

    with connection.cursor() as cursor:
        sizes = []
        for model in (UsageRecord, UsageMinute, UsageHour, UsageDay, UsageHourTotal, UsageDayTotal):
            table = model._meta.db_table
            cursor.execute("SELECT reltuples::bigint, pg_total_relation_size(oid) FROM pg_class WHERE relname = %s",
                           [table])
            rows, size = cursor.fetchone()
            sizes.append(f"{model.__name__} ~{rows:,} rows ({size / 2**20:,.0f} MiB)")
    print("tables: " + ", ".join(sizes), flush=True)


def timed(label: str, runs: int, call: Callable[[], Any]) -> None:
    call()  # warm
    wall, cpu = [], []
    for _ in range(runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
    print(f"{label:<62} {statistics.median(wall):>9.1f} {max(wall):>9.1f} {statistics.median(cpu):>8.1f}", flush=True)


def measure(runs: int, database_url: str) -> None:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from consumers.services import create_operator_token

    print(f"{'what':<62} {'median ms':>9} {'max ms':>9} {'cpu ms':>8}")
    for by in ("consumer", "endpoint", "model", "day"):
        timed(f"usage_report --since 30d --by {by}", runs,
              lambda by=by: call_command("usage_report", since="30d", by=by, stdout=io.StringIO()))
    timed("usage_report --since 7d --by consumer --format json", runs,
          lambda: call_command("usage_report", since="7d", by="consumer", format="json", stdout=io.StringIO()))
    user = (get_user_model().objects.filter(username="bench").first()
            or get_user_model().objects.create_superuser("bench", password="bench-password"))
    token, _ = create_operator_token(user)
    api = Client(HTTP_AUTHORIZATION=f"Bearer {token}")

    def get_api() -> None:
        response = api.get("/api/manage/usage/", {"since": "30d", "by": "consumer"})
        assert response.status_code == 200, response.content[:200]

    timed("GET /api/manage/usage/?since=30d&by=consumer", runs, get_api)
    console = Client()
    console.force_login(user)
    for window in ("1h", "24h", "7d", "30d"):
        def get_dashboard(window: str = window) -> None:
            response = console.get("/admin/console/", {"window": window})
            assert response.status_code == 200

        timed(f"/admin/console/?window={window}", runs, get_dashboard)

    env = {**os.environ, "DATABASE_URL": database_url}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "manage.py", "usage_report", "--since", "30d", "--by", "consumer"],
                          cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    print(f"{'manage.py usage_report --since 30d --by consumer (new process)':<62} "
          f"{(time.perf_counter() - began) * 1000:>9.1f}   (Django's start-up included; "
          f"{len(done.stdout.splitlines())} lines printed)", flush=True)


if __name__ == "__main__":
    main()
