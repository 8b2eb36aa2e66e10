"""The usage ledger: one record per invocation on every route family (refusals included), written in
batches off the request path, and reports whose totals are the records'."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.consumers.conftest import MakeConsumer, bearer, new_key
from usage import ledger
from usage.models import UsageDay, UsageDayTotal, UsageHour, UsageHourTotal, UsageMinute, UsageRecord
from usage.reports import report

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "hi"}]}
CHEAP = {"input_per_million_tokens": "0.02", "output_per_million_tokens": "0"}
PRICED = {"input_per_million_tokens": 2, "output_per_million_tokens": 8}


@pytest.fixture
def endpoints(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "mock-chat", cost=PRICED)
    make_endpoint("text", COMPLETIONS, "mock", "mock-text", cost=PRICED)
    make_endpoint("embed", EMBEDDINGS, "mock", "mock-embed", {"dimensions": 3}, cost=CHEAP)


def flush() -> list[UsageRecord]:
    written = ledger.get().flush()
    records = list(UsageRecord.objects.order_by("id"))
    assert written == len(records)
    return records


def test_every_invocation_on_every_family_is_one_record_with_its_tokens_and_cost(client: Any, endpoints: None) -> None:
    calls = [
        post_json(client, "/endpoints/chat/invocations", HI),
        post_json(client, "/gateway/chat/invocations", {**HI, "stream": True}),
        post_json(client, "/v1/chat/completions", {**HI, "model": "chat"}),
        post_json(client, "/v1/completions", {"model": "text", "prompt": "one two three"}),
        post_json(client, "/v1/embeddings", {"model": "embed", "input": ["a b c d e"]}),
        post_json(client, "/endpoints/nope/invocations", HI),
        post_json(client, "/v1/chat/completions", {**HI, "model": "embed"}),
        post_json(client, "/endpoints/chat/invocations", {"messages": "not a list"}),
    ]
    for response in calls:
        b"".join(response.streaming_content) if response.streaming else response.content
    records = flush()
    assert len(records) == len(calls)
    assert [r.request_id for r in records] == [c["X-Request-Id"] for c in calls]
    assert [(r.family, r.name, r.status) for r in records] == [
        ("endpoints", "chat", 200), ("gateway", "chat", 200), ("v1", "chat", 200), ("v1", "text", 200),
        ("v1", "embed", 200), ("endpoints", "nope", 404), ("v1", "embed", 400), ("endpoints", "chat", 422)]
    chat = records[0]
    assert (chat.endpoint, chat.provider, chat.model, chat.stream) == ("chat", "mock", "mock-chat", False)
    assert (chat.prompt_tokens, chat.completion_tokens, chat.total_tokens) == (1, 2, 3)
    assert chat.cost_picousd == 1 * 2_000_000 + 2 * 8_000_000  # $2 and $8 per million tokens
    assert chat.cost_usd == Decimal("0.000018")
    assert chat.latency_ms > 0 and chat.ttfb_ms is None and chat.error_kind == ""
    stream = records[1]
    assert stream.stream and stream.total_tokens == 3 and stream.ttfb_ms is not None
    assert 0 < stream.ttfb_ms <= stream.latency_ms
    embed = records[4]
    assert (embed.prompt_tokens, embed.total_tokens, embed.cost_picousd) == (5, 5, 5 * 20_000)  # $0.02 per million
    assert [(r.error_kind, r.error_code) for r in records[5:]] == [
        ("invalid", "endpoint_not_found"), ("invalid", "wrong_endpoint_type"), ("invalid", "invalid_request")]
    assert all(r.cost_picousd == 0 and r.total_tokens is None for r in records[5:])


def test_the_client_request_id_is_kept_and_a_bad_one_replaced(client: Any, endpoints: None) -> None:
    kept = post_json(client, "/endpoints/chat/invocations", HI, HTTP_X_REQUEST_ID="trace-abc-123")
    replaced = post_json(client, "/endpoints/chat/invocations", HI, HTTP_X_REQUEST_ID="no spaces allowed")
    assert kept["X-Request-Id"] == "trace-abc-123"
    assert replaced["X-Request-Id"] != "no spaces allowed" and len(replaced["X-Request-Id"]) == 24
    assert [r.request_id for r in flush()] == ["trace-abc-123", replaced["X-Request-Id"]]
    assert client.get("/api/2.0/endpoints/")["X-Request-Id"]  # Django's answers carry one too


def test_request_ids_made_here_are_unique_and_differ_in_a_forked_worker() -> None:
    from serving.invoke import request_id

    made = {request_id(None) for _ in range(20_000)}
    assert len(made) == 20_000 and all(len(i) == 24 and int(i, 16) >= 0 for i in made)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, as a worker forked from a parent would make it
        os.write(writer, request_id(None).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    child = os.read(reader, 64).decode()
    os.close(reader)
    assert len(child) == 24 and child != request_id(None) and child not in made


def test_a_forked_worker_starts_its_own_writer_at_its_first_record() -> None:
    book = ledger.Ledger(capacity=100, batch=100, flush_seconds=60)
    entry = ledger.Entry(0.0, "r1", "v1", "", "", "chat", "", "chat", "openai", "m", False, 200, "", "", 1, 1, 2,
                         1.0, None, 0, 0, 0)
    book.record(entry)
    parent_writer = book._thread
    assert parent_writer is not None and parent_writer.is_alive()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        book.record(entry)
        started = book._thread is not None and book._thread is not parent_writer and book._thread.is_alive()
        os.write(writer, b"yes" if started else b"no")
        os._exit(0)
    os.close(writer)
    os.waitpid(pid, 0)
    answer = os.read(reader, 8)
    os.close(reader)
    book.discard()
    book._stop.set()
    book._wake.set()
    assert answer == b"yes" and book._thread is parent_writer


def test_refusals_are_recorded_with_the_consumer_and_key_without_an_upstream_call(
        client: Any, endpoints: None, make_consumer: MakeConsumer, settings: Any) -> None:
    settings.GATEWAY_AUTH = "keys"
    key = new_key(make_consumer("team", ["chat"], limit={"calls": 1, "renewal_period": "minute"}))
    assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 401
    assert post_json(client, "/endpoints/embed/invocations", {"input": "x"}, **bearer(key)).status_code == 403
    assert post_json(client, "/endpoints/chat/invocations", HI, **bearer(key)).status_code == 200
    assert post_json(client, "/v1/chat/completions", {**HI, "model": "chat"}, **bearer(key)).status_code == 429
    records = flush()
    assert [(r.status, r.error_kind, r.consumer, r.key_prefix) for r in records] == [
        (401, "refused", "", ""), (403, "refused", "team", key[:12]), (200, "", "team", key[:12]),
        (429, "limited", "team", key[:12])]
    assert records[3].error_code == "rate_limit_exceeded" and records[3].endpoint == "chat"


def test_a_traffic_route_records_the_route_and_the_destination_that_answered(client: Any, make_endpoint: Any,
                                                                            tmp_path: Any) -> None:
    from endpoints_app.services import save_route
    from endpoints_app.validation import validate_route

    make_endpoint("a", CHAT, "mock", "model-a")
    make_endpoint("b", CHAT, "mock", "model-b")
    save_route(validate_route({"name": "split", "task_type": CHAT, "destinations": [
        {"name": "a", "traffic_percentage": 50}, {"name": "b", "traffic_percentage": 50}]}, {"a": CHAT, "b": CHAT}))
    for _ in range(20):
        assert post_json(client, "/v1/chat/completions", {**HI, "model": "split"}).status_code == 200
    records = flush()
    assert {r.route for r in records} == {"split"} and {r.name for r in records} == {"split"}
    assert {r.endpoint for r in records} == {"a", "b"}
    assert all(r.model == f"model-{r.endpoint}" for r in records)


def test_a_stream_the_client_did_not_ask_usage_for_is_still_counted(client: Any, endpoints: None,
                                                                    httpserver: Any, make_endpoint: Any) -> None:
    from tests.fixtures import raw

    make_endpoint("gpt", CHAT, "openai", "gpt-4o-mini", {"openai_api_key": "sk-test",
                                                         "openai_api_base": httpserver.url_for("/v1")})
    httpserver.expect_oneshot_request("/v1/chat/completions").respond_with_data(
        raw("openai", "chat_stream.txt"), content_type="text/event-stream")
    events = sse_events(post_json(client, "/endpoints/gpt/invocations", {**HI, "stream": True}))
    assert all(e["choices"] for e in events[:-1])  # no usage chunk for this client
    record = flush()[0]
    assert (record.prompt_tokens, record.completion_tokens, record.total_tokens) == (9, 2, 11)
    assert record.cost_picousd == 9 * 150_000 + 2 * 600_000  # gpt-4o-mini's list price: $0.15 and $0.60


def test_rollups_and_the_report_add_up_to_the_records(client: Any, endpoints: None, make_consumer: MakeConsumer,
                                                      settings: Any) -> None:
    settings.GATEWAY_AUTH = "keys"
    keys = {name: new_key(make_consumer(name)) for name in ("alpha", "beta")}
    for index in range(12):
        name = "alpha" if index % 3 else "beta"
        path, body = [("/endpoints/chat/invocations", HI), ("/v1/embeddings", {"model": "embed", "input": "a b"}),
                      ("/endpoints/nope/invocations", HI)][index % 3]
        post_json(client, path, body, **bearer(keys[name]))
    records = flush()
    assert len(records) == 12
    for table in (UsageMinute, UsageHour, UsageDay, UsageHourTotal, UsageDayTotal):
        assert sum(table.objects.values_list("requests", flat=True)) == 12
        assert sum(table.objects.values_list("cost_picousd", flat=True)) == sum(r.cost_picousd for r in records)
    for total, rollup in ((UsageHourTotal, UsageHour), (UsageDayTotal, UsageDay)):  # a row per bucket, same sums
        buckets = sorted(set(rollup.objects.values_list("bucket", flat=True)))
        assert sorted(total.objects.values_list("bucket", flat=True)) == buckets
        assert set(total.objects.values_list("consumer", "endpoint", "model")) == {("", "", "")}
        for bucket_total in total.objects.all():
            assert [bucket_total.lat_0, bucket_total.lat_13, bucket_total.err_upstream, bucket_total.total_tokens] == [
                sum(getattr(r, name) for r in rollup.objects.filter(bucket=bucket_total.bucket))
                for name in ("lat_0", "lat_13", "err_upstream", "total_tokens")]
    rows = report(timezone.now() - timedelta(hours=1), timezone.now() + timedelta(minutes=1),
                  "consumer")
    by_consumer = {row["consumer"]: row for row in rows}
    for name in ("alpha", "beta"):
        mine = [r for r in records if r.consumer == name]
        row = by_consumer[name]
        assert row["requests"] == len(mine)
        assert row["errors"] == sum(1 for r in mine if r.status >= 400)
        assert row["total_tokens"] == sum(r.total_tokens or 0 for r in mine)
        assert row["cost_usd"] == pytest.approx(float(sum(r.cost_usd for r in mine)), abs=1e-12)


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_costs_no_invocation_and_loses_no_record(client: Any, endpoints: None,
                                                                   caplog: pytest.LogCaptureFixture,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The database goes away (its address now leads nowhere): invocations go on (the table is in memory),
    the batch stays buffered and the failure is logged; when it is back, everything is written."""
    outage = ledger.Ledger(capacity=1000, batch=100, flush_seconds=0)
    monkeypatch.setattr(ledger, "_ledger", outage)
    assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
    assert outage.flush() == 1  # warm
    live = connection.settings_dict
    saved = dict(live)
    connection.close()
    if connection.vendor == "sqlite":
        live["NAME"] = "/nonexistent-directory/gateway.sqlite3"
    else:
        live["PORT"] = "1"  # nothing listens there
    try:
        with caplog.at_level(logging.WARNING, logger="usage.ledger"):
            for _ in range(5):
                assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
            assert outage.flush() == 0
        assert len(outage) == 5
        assert "usage records could not be written" in caplog.text
    finally:
        connection.close()
        live.clear()
        live.update(saved)
    assert outage.flush() == 5
    assert UsageRecord.objects.count() == 6


def test_a_full_buffer_counts_and_logs_what_it_drops(caplog: pytest.LogCaptureFixture) -> None:
    small = ledger.Ledger(capacity=3, batch=100, flush_seconds=0)
    entry = ledger.Entry(0.0, "r", "v1", "", "", "chat", "", "chat", "mock", "m", False, 200, "", "", 1, 1, 2,
                         1.0, None, 0, 0, 0)
    with caplog.at_level(logging.WARNING, logger="usage.ledger"):
        for _ in range(5):
            small.record(entry)
    assert len(small) == 3 and small.dropped == 2
    assert "usage buffer full (3 records): 1 record(s) dropped so far" in caplog.text


def test_a_record_the_database_refuses_is_dropped_alone_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """A poisoned batch must not be retried for ever (it would fill the buffer): the others are written."""
    batch = ledger.Ledger(capacity=10, batch=10, flush_seconds=0)
    good = ledger.Entry(1.7e9, "good", "v1", "", "", "chat", "", "chat", "mock", "m", False, 200, "", "", 1, 1, 2,
                        1.0, None, 0, 0, 0)
    for entry in (good, good._replace(request_id="bad", status=-1), good._replace(request_id="good-2")):
        batch.record(entry)
    with caplog.at_level(logging.ERROR, logger="usage.ledger"):
        assert batch.flush() == 2
    assert batch.dropped == 1 and len(batch) == 0
    assert "usage record bad refused by the database and dropped" in caplog.text
    assert sorted(UsageRecord.objects.values_list("request_id", flat=True)) == ["good", "good-2"]


def test_a_batch_of_any_size_lands_whole_in_statements_of_a_few_fixed_sizes(monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite caches a prepared statement per shape: a batch is cut into 128-row chunks and powers of two, so
    however the batches fall, a connection prepares at most eight shapes of the records' INSERT."""
    from usage import rollups

    base = ledger.Entry(1.7e9, "r", "v1", "", "", "chat", "", "chat", "mock", "m", False, 200, "", "", 1, 1, 2,
                        1.0, None, 0, 0, 0)
    seen: set[int] = set()
    written = 0

    execute = rollups._sqlite_execute  # SQLite's statements, on the sqlite3 connection itself

    def watch(sql: str, params: Any, many: bool = False) -> None:
        if sql.startswith("INSERT INTO") and "usage_usagerecord" in sql:
            seen.add(len(params) // len(rollups.RECORD_COLUMNS))
        execute(sql, params, many)

    monkeypatch.setattr(rollups, "_sqlite_execute", watch)
    for size in (1, 2, 3, 127, 128, 129, 300, 2000):
        ledger.write([base._replace(request_id=f"b{size}-{i}", time=1.7e9 + i) for i in range(size)])
        written += size
    assert UsageRecord.objects.count() == written
    assert set(UsageRecord.objects.filter(request_id__startswith="b300-").values_list("request_id", flat=True)) == \
        {f"b300-{i}" for i in range(300)}
    if connection.vendor == "sqlite":
        assert seen <= {1, 2, 4, 8, 16, 32, 64, 128} and 128 in seen


def test_a_records_time_is_stored_as_djangos_sqlite_backend_stores_it() -> None:
    from usage.rollups import _sqlite_when, _when

    for epoch in (1.7e9, 1.7e9 + 0.5, 1.7e9 + 0.000001, 1.7e9 + 0.9999996, 1.7e9 + 59.9999999, 1_764_720_000.123456,
                  1_764_720_000.1234565, 0.25, 1e9 + 0.999999):
        expected = (connection.ops.adapt_datetimefield_value(_when(epoch)) if connection.vendor == "sqlite"
                    else str(_when(epoch).replace(tzinfo=None)))  # what the SQLite backend does, with UTC
        assert _sqlite_when(epoch) == expected, epoch
        assert _sqlite_when(epoch) == expected, epoch  # the second time from the cache
