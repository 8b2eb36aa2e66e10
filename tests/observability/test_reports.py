"""Metrics and access lines are handed over in batches on the event loop (observability.reports): nothing
is lost or counted twice, a batch's lines are one write, a line waits at most FLUSH_SECONDS, and the sums
of a batch equal what one-by-one recording gave."""
from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from observability import accesslog, metrics, reports
from observability.accesslog import HoldingStreamHandler
from usage.ledger import Entry


def entry(request_id: str, *, status: int = 200, latency_ms: float = 30.0, ttfb_ms: float | None = None,
          consumer: str = "team-a", error_code: str = "", retries: int = 0) -> Entry:
    kind = "limited" if error_code else ""
    return Entry(1.7e9, request_id, "v1", consumer, "", "chat", "", "chat", "openai", "gpt-4o-mini",
                 ttfb_ms is not None, status, kind, error_code, 9, 6, 15, latency_ms, ttfb_ms, 1_000_000, retries, 0)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


@pytest.fixture
def access_stream(settings: Any) -> Iterator[CountingStream]:
    """The access logger with only a HoldingStreamHandler on a stream that counts its writes."""
    settings.GATEWAY_LOG_FORMAT = "json"
    stream = CountingStream()
    handler = HoldingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("gateway.access")
    saved = logger.handlers[:], logger.propagate, logger.level
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.handlers, logger.propagate = saved[0], saved[1]
        logger.setLevel(saved[2])


@pytest.fixture(autouse=True)
def fresh_metrics() -> Iterator[None]:
    reports.flush()
    metrics.reset()
    yield
    reports.flush()
    metrics.reset()


def samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = metrics.get()
    assert found is not None
    out = {}
    for metric in (found.requests, found.duration, found.ttfb, found.upstream, found.tokens, found.cost,
                   found.refusals, found.retries):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_a_batch_is_written_at_once_within_the_flush_interval(access_stream: CountingStream) -> None:
    async def invocations() -> tuple[str, float]:
        for index in range(5):
            reports.report(entry(f"batched-{index}"), "chat", 0.02)
        held = access_stream.getvalue()  # nothing yet: the batch waits for the timer
        started = time.monotonic()
        while reports.pending():
            await asyncio.sleep(0.005)
        return held, time.monotonic() - started

    held, waited = asyncio.run(invocations())
    assert held == ""
    assert waited <= reports.FLUSH_SECONDS + 0.05
    lines = [orjson.loads(line) for line in access_stream.getvalue().splitlines()]
    assert [line["request_id"] for line in lines] == [f"batched-{index}" for index in range(5)]
    assert access_stream.writes == 1  # one write for the batch


def test_without_a_running_loop_a_report_is_written_at_once(access_stream: CountingStream) -> None:
    reports.report(entry("no-loop"), "chat", None)
    assert reports.pending() == 0
    assert orjson.loads(access_stream.getvalue())["request_id"] == "no-loop"


def test_another_record_writes_the_held_lines_first(access_stream: CountingStream) -> None:
    handler = logging.getLogger("gateway.access").handlers[0]
    accesslog._emit("held-line")
    assert access_stream.getvalue() == ""
    handler.emit(logging.LogRecord("gateway.other", logging.WARNING, __file__, 0, "a warning", (), None))
    assert access_stream.getvalue().splitlines() == ["held-line", "a warning"]


def test_a_batch_adds_up_to_what_one_by_one_recording_gives() -> None:
    batch = [(entry("a", latency_ms=3.0), "chat", 0.002), (entry("b", latency_ms=70.0, ttfb_ms=20.0), "chat", 0.06),
             (entry("c", latency_ms=70.0), "chat", None), (entry("d", consumer="team-b"), "chat", 0.02),
             (entry("e", status=429, error_code="rate_limit_exceeded"), "chat", None),
             (entry("f", retries=2, latency_ms=400_000.0), "chat", 0.3)]
    metrics.record_batch(batch)
    together = samples()
    metrics.reset()
    for one in batch:
        metrics.record_batch([one])
    assert samples() == pytest.approx(together)  # sums added in another order
    key = ("gateway_request_duration_seconds_bucket", (("endpoint", "chat"), ("family", "v1"), ("le", "0.1")))
    assert together[key] == 5  # every call but the 400 s one (the histogram has no consumer or status label)
    assert together[("gateway_request_duration_seconds_bucket",
                     (("endpoint", "chat"), ("family", "v1"), ("le", "+Inf")))] == 6
    assert together[("gateway_requests_total", (("consumer", "team-a"), ("destination", "chat"), ("endpoint", "chat"),
                                                ("family", "v1"), ("status", "200")))] == 4
    assert together[("gateway_limit_refusals_total", (("consumer", "team-a"), ("endpoint", "chat"),
                                                      ("reason", "rate_limit")))] == 1
    assert together[("gateway_upstream_retries_total", (("destination", "chat"),))] == 2


def test_the_formatter_prints_the_time_as_loggings_own() -> None:
    ours = accesslog.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    theirs = logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    for created in (1.7e9 + 0.001, 1.7e9 + 0.999, 1.7e9 + 1.5, 1.7e9 + 0.25, 1.7e9 + 86_400.042):
        record = logging.LogRecord("gateway.access", logging.INFO, __file__, 0, "a line", (), None)
        record.created, record.msecs = created, int((created - int(created)) * 1000)
        assert ours.format(record) == theirs.format(record)


def test_a_timer_left_on_a_loop_that_has_gone_does_not_hold_later_reports(access_stream: CountingStream) -> None:
    async def report_and_leave() -> None:
        reports.report(entry("left-behind"), "chat", None)

    async def report_and_wait() -> None:
        reports.report(entry("later"), "chat", None)
        for _ in range(100):
            if not reports.pending():
                return
            await asyncio.sleep(0.01)

    asyncio.run(report_and_leave())  # its loop closes before the timer fires
    asyncio.run(report_and_wait())
    assert reports.pending() == 0
    assert [orjson.loads(line)["request_id"] for line in access_stream.getvalue().splitlines()] == ["left-behind",
                                                                                                     "later"]


def test_a_closed_stream_fails_no_invocation(access_stream: CountingStream) -> None:
    access_stream.close()
    reports.report(entry("closed"), "chat", None)  # no running loop: written at once, to a closed stream
    assert reports.pending() == 0
