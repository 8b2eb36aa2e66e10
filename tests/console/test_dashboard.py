"""The usage dashboard through the admin, with Django's test client: who may see it, which rollup each
window reads, that its numbers are the report's, and that its queries do not grow with the data."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from console.dashboard import WINDOWS
from tests.console.conftest import entry, seed
from usage.models import UsageDay, UsageDayTotal, UsageHour, UsageHourTotal, UsageMinute
from usage.reports import percentile, report, totals

pytestmark = pytest.mark.django_db
DASHBOARD = "/admin/console/"
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def traffic() -> None:
    """Two consumers, two endpoints, every kind of error, spread over the last day."""
    seed([
        entry(3, consumer="search", endpoint="chat", cost=5_000_000, latency_ms=30),
        entry(4, consumer="search", endpoint="chat", cost=5_000_000, latency_ms=80),
        entry(10, consumer="batch", endpoint="embed", prompt=100, completion=0, cost=2_000, latency_ms=7),
        entry(20, consumer="batch", endpoint="chat", status=429, error_kind="limited",
              error_code="rate_limit_exceeded"),
        entry(25, consumer="", endpoint="", name="chat", status=401, error_kind="refused",
              error_code="invalid_api_key"),
        entry(90, consumer="search", endpoint="chat", status=504, error_kind="timeout", error_code="upstream_timeout",
              latency_ms=30_000),
        entry(300, consumer="search", endpoint="chat", status=502, error_kind="upstream", error_code="upstream_error"),
        entry(600, consumer="batch", endpoint="chat", status=422, error_kind="invalid", error_code="invalid_parameter"),
        entry(700, consumer="batch", endpoint="embed", status=500, error_kind="internal", error_code="internal_error"),
        entry(2 * 24 * 60, consumer="batch", endpoint="embed", cost=7_000_000),  # two days ago: 7 and 30 days only
    ])


def test_the_console_asks_an_anonymous_visitor_to_log_in(client: Client) -> None:
    for path in (DASHBOARD, "/admin/console/import/", "/admin/console/export/", "/admin/console/ledger/abc/"):
        response = client.get(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=")


def test_a_user_who_is_not_staff_is_refused(client: Client, django_user_model: Any) -> None:
    client.force_login(django_user_model.objects.create_user("visitor", password="x"))
    assert client.get(DASHBOARD).status_code == 302  # to the admin's login, as for every admin page


def test_the_admin_index_links_to_the_console(staff_client: Client) -> None:
    html = staff_client.get("/admin/").content.decode()
    for link in ('href="/admin/console/"', 'href="/admin/console/import/"', 'href="/admin/console/export/"'):
        assert link in html


@pytest.mark.parametrize(("key", "series", "narrowed", "buckets"), [
    ("1h", UsageMinute, UsageMinute, 60), ("24h", UsageHourTotal, UsageHour, 24),
    ("7d", UsageHourTotal, UsageHour, 168), ("30d", UsageDayTotal, UsageDay, 30),
])
def test_each_window_reads_rollups_only_its_charts_the_totals(staff_client: Client, traffic: None, key: str,
                                                               series: Any, narrowed: Any, buckets: int) -> None:
    for params, table in (({"window": key}, series), ({"window": key, "consumer": "search"}, narrowed)):
        with CaptureQueriesContext(connection) as queries:
            response = staff_client.get(DASHBOARD, params)
        assert response.status_code == 200
        usage = response.context["usage"]
        assert len(usage.buckets) == buckets
        usage_sql = [q["sql"] for q in queries.captured_queries if '"usage_' in q["sql"]]
        assert any(f'"{table._meta.db_table}"' in sql and '"bucket"' in sql.split("FROM")[0] for sql in usage_sql)
        assert all("GROUP BY" in sql for sql in usage_sql)  # aggregated in the database
        assert not any('"usage_usagerecord"' in sql for sql in usage_sql)
        if key == "7d":  # the rankings read whole days from the day rollups
            assert any('"usage_usageday"' in sql for sql in usage_sql)


@pytest.mark.parametrize("key", [w.key for w in WINDOWS])
def test_the_totals_and_the_top_consumers_are_the_report_s(staff_client: Client, traffic: None, key: str) -> None:
    response = staff_client.get(DASHBOARD, {"window": key})
    usage, tops = response.context["usage"], response.context["tops"]
    by_consumer = report(usage.since, usage.until, "consumer")
    expected = totals(by_consumer)
    assert {name: usage.totals[name] for name in ("requests", "errors", "prompt_tokens", "completion_tokens")} == {
        name: expected[name] for name in ("requests", "errors", "prompt_tokens", "completion_tokens")}
    assert usage.totals["cost_picousd"] / 1e12 == pytest.approx(expected["cost_usd"])
    assert [(r.name, r.cost_picousd / 1e12) for r in tops["consumer_by_cost"]] == [
        (row["consumer"], pytest.approx(row["cost_usd"])) for row in by_consumer if row["cost_usd"] > 0]
    by_endpoint = report(usage.since, usage.until, "endpoint")
    assert {r.name: r.errors for r in tops["endpoint_by_errors"]} == {
        row["endpoint"]: row["errors"] for row in by_endpoint if row["errors"]}
    html = response.content.decode()
    assert f'<dd data-total="requests">{expected["requests"]}</dd>' in html


def test_the_last_day_in_numbers(staff_client: Client, traffic: None) -> None:
    usage = staff_client.get(DASHBOARD, {"window": "24h"}).context["usage"]
    assert (usage.totals["requests"], usage.totals["errors"]) == (9, 6)
    assert usage.errors_by_kind() == {"refused": 1, "limited": 1, "invalid": 1, "upstream": 1, "timeout": 1,
                                      "internal": 1}
    assert (usage.totals["prompt_tokens"], usage.totals["completion_tokens"]) == (120, 10)
    assert usage.totals["cost_picousd"] == 10_002_000
    histogram = [usage.totals[f"lat_{i}"] for i in range(14)]
    assert (usage.p50, usage.p95) == (percentile(histogram, 0.5), percentile(histogram, 0.95))


def test_a_consumer_and_an_endpoint_narrow_everything(staff_client: Client, traffic: None) -> None:
    response = staff_client.get(DASHBOARD, {"window": "24h", "consumer": "search", "endpoint": "chat"})
    usage = response.context["usage"]
    expected = totals(report(usage.since, usage.until, "model", consumer="search", endpoint="chat"))
    assert (usage.totals["requests"], usage.totals["errors"]) == (expected["requests"], expected["errors"]) == (4, 2)
    assert [r.name for r in response.context["tops"]["consumer_by_cost"]] == ["search"]


def test_a_parameter_that_cannot_be_one_is_ignored_and_said_so(staff_client: Client, traffic: None) -> None:
    response = staff_client.get(DASHBOARD, {"window": "forever", "consumer": "no such/name", "endpoint": "chat"})
    assert response.status_code == 200
    usage = response.context["usage"]
    assert (usage.window.key, usage.consumer, usage.endpoint) == ("24h", "", "chat")
    assert "errornote" in response.content.decode()


def test_the_charts_draw_the_data_with_a_title_and_a_table(staff_client: Client, traffic: None) -> None:
    html = staff_client.get(DASHBOARD, {"window": "24h"}).content.decode()
    figures = [ET.fromstring(chunk[:chunk.index("</figure>") + len("</figure>")])
               for chunk in ("<figure" + part for part in html.split("<figure")[1:])]
    assert [f.get("id") for f in figures] == ["chart-requests", "chart-errors", "chart-tokens", "chart-cost",
                                              "chart-latency"]
    for figure in figures:
        svg = figure.find(f"{SVG}svg")
        assert svg is not None and svg.get("role") == "img" and svg.find(f"{SVG}title") is not None
        assert list(svg.iter(f"{SVG}rect")) or list(svg.iter(f"{SVG}path")) or list(svg.iter(f"{SVG}circle"))
        assert figure.find("details/table") is not None
    errors = next(f for f in figures if f.get("id") == "chart-errors")
    assert [g.get("data-series") for g in errors.iter(f"{SVG}g") if g.get("data-series")] == [
        "refused", "limited", "invalid", "upstream", "timeout", "internal"]
    total_row = [cell.text for cell in errors.findall("details/table/tfoot/tr/*")]
    assert total_row == ["Total", "1", "1", "1", "1", "1", "1"]


def test_an_empty_window_draws_empty_charts(staff_client: Client) -> None:
    response = staff_client.get(DASHBOARD, {"window": "1h"})
    assert response.status_code == 200
    assert response.content.decode().count("No data in this window") == 4  # and "No requests" for latency


def test_the_number_of_queries_does_not_grow_with_the_data(staff_client: Client,
                                                          django_assert_max_num_queries: Any) -> None:
    seed([entry(5, consumer="a", endpoint="chat")])
    with CaptureQueriesContext(connection) as small:
        staff_client.get(DASHBOARD, {"window": "7d"})
    many = [entry(minutes, consumer=f"c{minutes % 37}", endpoint=f"e{minutes % 11}", model=f"m{minutes % 3}",
                  status=200 if minutes % 5 else 503, error_kind="" if minutes % 5 else "upstream")
            for minutes in range(0, 6 * 24 * 60, 7)]  # inside the 7 days, whatever the hour
    seed(many)
    with django_assert_max_num_queries(len(small.captured_queries)):
        response = staff_client.get(DASHBOARD, {"window": "7d"})
    assert response.context["usage"].totals["requests"] == len(many) + 1
    assert len(response.context["tops"]["consumer_by_cost"]) == 10
