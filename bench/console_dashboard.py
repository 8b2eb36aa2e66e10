"""How long the console's dashboard takes on a large ledger (server time, in-process, on SQLite).

The dashboard reads only the usage rollups, so the raw records do not matter to it: this script simulates
`--records` invocations spread over 30 days (consumers x endpoints, 2 % errors, a latency spread) and
writes the per-minute, per-hour and per-day rollup rows those records would make, in bulk, into a fresh
SQLite file. Then it renders the dashboard for each window through Django's test client as a logged-in
operator and reports the median time and the number of queries.

    .venv/bin/python bench/console_dashboard.py [--records 1000000] [--consumers 40] [--endpoints 12]

The database is a file under var/ (or --database), never a DATABASE_URL from the environment.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--consumers", type=int, default=40)
    parser.add_argument("--endpoints", type=int, default=12)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--database", default=str(ROOT / "var" / "console-bench.sqlite3"))
    parser.add_argument("--reuse", action="store_true", help="measure the database of an earlier run again")
    options = parser.parse_args()

    database = Path(options.database)
    database.parent.mkdir(parents=True, exist_ok=True)
    if not options.reuse:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{database}{suffix}").unlink(missing_ok=True)
    os.environ["DATABASE_URL"] = f"sqlite:///{database}"
    os.environ.setdefault("GATEWAY_ALLOW_DEV_SECRET_KEY", "true")
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")
    os.environ["GATEWAY_CONFIG_POLL_SECONDS"] = "0"
    os.environ["ALLOWED_HOSTS"] = "testserver"

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    if options.reuse:
        from usage.models import UsageDay, UsageHour, UsageMinute

        rows = {model.__name__: model.objects.count() for model in (UsageMinute, UsageHour, UsageDay)}
        print("rollup rows: " + ", ".join(f"{name} {count:,}" for name, count in rows.items()), flush=True)
    else:
        rows = seed(options.records, options.consumers, options.endpoints)
        print(f"{options.records:,} simulated records over 30 days -> rollup rows: "
              + ", ".join(f"{name} {count:,}" for name, count in rows.items()), flush=True)
    measure(options.runs)


def seed(records: int, consumers: int, endpoints: int) -> dict[str, int]:
    from django.db import connection, transaction

    from usage.models import UsageDay, UsageHour, UsageMinute
    from usage.rollups import KEY_COLUMNS, SUM_COLUMNS

    rng = random.Random(7)
    now = int(time.time())
    start = now - 30 * 86400
    # Each record: a time, and a (consumer, endpoint) pair with a skew (a few big consumers, as in life).
    weights = [1 / (index + 1) for index in range(consumers)]
    minute_counts: Counter[tuple[int, int, int]] = Counter()
    for _ in range(records):
        when = rng.randrange(start, now)
        consumer = rng.choices(range(consumers), weights)[0]
        endpoint = rng.randrange(endpoints)
        minute_counts[(when - when % 60, consumer, endpoint)] += 1

    def sums(count: int, salt: int) -> list[float]:
        errors = count // 50 + (1 if salt % 50 == 0 else 0)
        errors = min(errors, count)
        prompt, completion = 120 * count, 40 * count
        histogram = [0] * 14
        for index in range(count):
            histogram[4 + (salt + index) % 5] += 1  # 50 ms to 2.5 s
        kinds = [0] * 6
        for index in range(errors):
            kinds[(salt + index) % 6] += 1
        return [count, errors, prompt, completion, prompt + completion, count * 450_000_000, 300.0 * count,
                *kinds, *histogram]

    tables = {}
    for seconds, model in ((60, UsageMinute), (3600, UsageHour), (86400, UsageDay)):
        grouped: dict[tuple[int, int, int], list[float]] = {}
        for (minute, consumer, endpoint), count in minute_counts.items():
            key = (minute - minute % seconds, consumer, endpoint)
            row = sums(count, minute + consumer + endpoint)
            if key in grouped:
                grouped[key] = [a + b for a, b in zip(grouped[key], row, strict=True)]
            else:
                grouped[key] = row
        table = connection.ops.quote_name(model._meta.db_table)
        names = ", ".join(connection.ops.quote_name(c) for c in (*KEY_COLUMNS, *SUM_COLUMNS))
        sql = f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * (len(KEY_COLUMNS) + len(SUM_COLUMNS)))})"
        adapt = connection.ops.adapt_datetimefield_value
        # In time order, as the ledger's writer adds them while time passes.
        values = [(adapt(datetime.fromtimestamp(bucket, UTC)), f"consumer-{consumer}", f"endpoint-{endpoint}",
                   f"model-{endpoint}", *row) for (bucket, consumer, endpoint), row in sorted(grouped.items())]
        with transaction.atomic(), connection.cursor() as cursor:
            for offset in range(0, len(values), 20_000):
                cursor.executemany(sql, values[offset:offset + 20_000])
        tables[model.__name__] = len(values)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return tables


def measure(runs: int) -> None:
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    user = (get_user_model().objects.filter(username="bench").first()
            or get_user_model().objects.create_superuser("bench", password="bench-password"))
    client = Client()
    client.force_login(user)
    cases = [{"window": key} for key in ("1h", "24h", "7d", "30d")]
    cases += [{"window": "30d", "consumer": "consumer-0"}, {"window": "7d", "endpoint": "endpoint-3"}]
    # Wall time is what the server takes; CPU time is what it would take on an idle machine (this one is shared).
    print(f"{'page':<46} {'median ms':>10} {'max ms':>8} {'cpu ms':>8} {'queries':>8}")
    for params in cases:
        client.get("/admin/console/", params)  # warm: templates, the session
        timings = []
        cpu = []
        queries = 0
        for _ in range(runs):
            with CaptureQueriesContext(connection) as captured:
                began, began_cpu = time.perf_counter(), time.process_time()
                response = client.get("/admin/console/", params)
                timings.append((time.perf_counter() - began) * 1000)
                cpu.append((time.process_time() - began_cpu) * 1000)
            assert response.status_code == 200
            queries = len(captured.captured_queries)
        label = "/admin/console/?" + "&".join(f"{k}={v}" for k, v in params.items())
        print(f"{label:<46} {statistics.median(timings):>10.1f} {max(timings):>8.1f} {statistics.median(cpu):>8.1f} "
              f"{queries:>8}", flush=True)


if __name__ == "__main__":
    main()
