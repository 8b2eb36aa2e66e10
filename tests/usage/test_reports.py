"""Reading the ledger: `usage_report` and GET /api/manage/usage/, from the rollups."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.test import Client

from usage import ledger
from usage.models import UsageDay, UsageMinute, UsageRecord
from usage.reports import ReportError, choose_spans, parse_time, report

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC)


def entry(when: datetime, consumer: str, endpoint: str, model: str, *, status: int = 200, tokens: tuple[int, int] =
          (10, 5), cost: int = 1_000_000, kind: str = "") -> ledger.Entry:
    prompt, completion = tokens
    return ledger.Entry(when.timestamp(), "r", "v1", consumer, "", endpoint, "", endpoint, "mock", model, False, status,
                        kind, "", prompt, completion, prompt + completion, 12.5, None, cost, 0, 0)


@pytest.fixture
def seeded() -> list[ledger.Entry]:
    entries = [
        entry(NOW - timedelta(minutes=5), "alpha", "chat", "gpt"),
        entry(NOW - timedelta(minutes=4), "alpha", "chat", "gpt"),
        entry(NOW - timedelta(minutes=3), "beta", "chat", "gpt", cost=5_000_000),
        entry(NOW - timedelta(minutes=2), "beta", "embed", "ada", tokens=(7, 0), cost=140_000),
        entry(NOW - timedelta(minutes=1), "beta", "chat", "gpt", status=429, tokens=(0, 0), cost=0, kind="limited"),
        entry(NOW - timedelta(days=3), "alpha", "chat", "gpt", cost=9_000_000),
    ]
    ledger.write(entries)
    return entries


def test_time_forms() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert parse_time("24h", now) == now - timedelta(hours=24)
    assert parse_time("7d", now) == now - timedelta(days=7)
    assert parse_time("2026-12-01", now) == datetime(2026, 12, 1, tzinfo=UTC)
    assert parse_time("2026-12-01T06:30:00+02:00", now) == datetime(2026, 12, 1, 4, 30, tzinfo=UTC)
    with pytest.raises(ReportError, match="'yesterday' is not a time"):
        parse_time("yesterday", now)


def parts(since: datetime, until: datetime) -> list[tuple[str, str, str]]:
    return [(span.table.__name__[5:], f"{span.since:%d %H:%M}", f"{span.until:%d %H:%M}")
            for span in choose_spans(since, until)]


def test_each_part_of_a_range_is_read_from_the_coarsest_rollup_that_covers_it() -> None:
    day = datetime(2026, 12, 1, tzinfo=UTC)
    assert parts(day, day + timedelta(days=30)) == [("Day", "01 00:00", "31 00:00")]
    assert parts(day + timedelta(hours=3), day + timedelta(hours=20)) == [("Hour", "01 03:00", "01 20:00")]
    odd = day + timedelta(minutes=7, seconds=30)
    assert parts(odd, odd + timedelta(minutes=30)) == [("Minute", "01 00:07", "01 00:37")]
    assert parts(odd, odd + timedelta(hours=24)) == [
        ("Minute", "01 00:07", "01 01:00"), ("Hour", "01 01:00", "02 00:00"), ("Minute", "02 00:00", "02 00:07")]
    assert parts(odd + timedelta(hours=5), odd + timedelta(days=30, hours=2)) == [
        ("Minute", "01 05:07", "01 06:00"), ("Hour", "01 06:00", "02 00:00"), ("Day", "02 00:00", "31 00:00"),
        ("Hour", "31 00:00", "31 02:00"), ("Minute", "31 02:00", "31 02:07")]


def test_a_long_report_that_starts_and_ends_off_the_hour_counts_to_the_minute() -> None:
    start = datetime(2026, 11, 1, 10, 30, tzinfo=UTC)
    when = [start - timedelta(minutes=1), start, start + timedelta(minutes=29), start + timedelta(days=3),
            start + timedelta(days=9, minutes=14), start + timedelta(days=9, minutes=15)]
    ledger.write([entry(moment, "alpha", "chat", "gpt") for moment in when])
    until = start + timedelta(days=9, minutes=15)  # the last one is just outside
    assert report(start, until, "consumer")[0]["requests"] == 4
    assert sum(row["requests"] for row in report(start, until, "day")) == 4


def test_a_report_by_consumer_sums_its_records(seeded: list[ledger.Entry]) -> None:
    rows = report(NOW - timedelta(hours=1), NOW + timedelta(minutes=1), "consumer")
    assert rows == [
        {"consumer": "beta", "requests": 3, "errors": 1, "prompt_tokens": 17, "completion_tokens": 5,
         "total_tokens": 22, "cost_usd": pytest.approx(5.14e-6, abs=1e-15)},
        {"consumer": "alpha", "requests": 2, "errors": 0, "prompt_tokens": 20, "completion_tokens": 10,
         "total_tokens": 30, "cost_usd": pytest.approx(2e-6, abs=1e-15)},
    ]


def test_reports_group_by_endpoint_model_and_day_and_filter(seeded: list[ledger.Entry]) -> None:
    since, until = NOW - timedelta(days=7), NOW + timedelta(hours=1)
    assert {r["endpoint"]: r["requests"] for r in report(since, until, "endpoint")} == {"chat": 5, "embed": 1}
    assert {r["model"]: r["total_tokens"] for r in report(since, until, "model")} == {"gpt": 60, "ada": 7}
    days = report(since, until, "day")
    assert [d["requests"] for d in days] == ([1, 5] if (NOW - timedelta(days=3)).date() != NOW.date() else [6])
    assert days == sorted(days, key=lambda d: d["day"])
    only_alpha = report(since, until, "endpoint", consumer="alpha")
    assert only_alpha == [{"endpoint": "chat", "requests": 3, "errors": 0, "prompt_tokens": 30,
                           "completion_tokens": 15, "total_tokens": 45, "cost_usd": pytest.approx(11e-6)}]


def test_the_command_prints_json_csv_and_a_table(seeded: list[ledger.Entry]) -> None:
    out = StringIO()
    call_command("usage_report", "--since", "1h", "--by", "consumer", "--format", "json", stdout=out)
    rows = json.loads(out.getvalue())
    assert [r["consumer"] for r in rows] == ["beta", "alpha"]
    assert set(rows[0]) == {"consumer", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens",
                            "cost_usd"}
    out = StringIO()
    call_command("usage_report", "--since", "7d", "--by", "endpoint", "--format", "csv", stdout=out)
    table = list(csv.reader(io.StringIO(out.getvalue())))
    assert table[0] == ["endpoint", "requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens",
                        "cost_usd"]
    assert table[1][:2] == ["chat", "5"] and table[1][6] == "0.000016000000"
    out = StringIO()
    call_command("usage_report", "--since", "1h", stdout=out)
    text = out.getvalue()
    assert "by consumer" in text and "beta" in text and text.strip().splitlines()[-1].split()[:2] == ["total", "5"]


def test_the_command_says_what_is_wrong() -> None:
    with pytest.raises(CommandError, match="is not a time"):
        call_command("usage_report", "--since", "last tuesday", stdout=StringIO())
    with pytest.raises(CommandError, match="must come after"):
        call_command("usage_report", "--since", "1h", "--until", "2h", stdout=StringIO())


def test_the_api_answers_the_same_report_to_operators(seeded: list[ledger.Entry], client: Any) -> None:
    assert client.get("/api/manage/usage/").status_code == 401
    get_user_model().objects.create_user("ops", password="pw-ops-123", is_staff=True)
    api = Client()
    api.login(username="ops", password="pw-ops-123")
    answer = api.get("/api/manage/usage/", {"since": "1h", "by": "consumer"})
    assert answer.status_code == 200 and answer["X-Request-Id"]
    assert answer.json() == [{**r, "cost_usd": pytest.approx(r["cost_usd"])}
                             for r in report(NOW - timedelta(hours=1), datetime.now(UTC), "consumer")]
    assert api.get("/api/manage/usage/", {"by": "colour"}).status_code == 400
    assert "/api/manage/usage/" in client.get("/openapi.json").json()["paths"]


def test_prune_keeps_the_retention_and_the_day_rollups(seeded: list[ledger.Entry]) -> None:
    out = StringIO()
    call_command("prune_usage", "--days", "1", stdout=out)
    assert "1 usage records" in out.getvalue()
    assert UsageRecord.objects.count() == 5
    assert sum(UsageDay.objects.values_list("requests", flat=True)) == 6  # the day rollups are kept
    assert not UsageMinute.objects.filter(bucket__lt=NOW - timedelta(days=2)).exists()
