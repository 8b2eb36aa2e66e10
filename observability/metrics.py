"""Prometheus metrics, served at /metrics.

Under `start_server` the workers are separate processes: the supervisor gives them a fresh directory in
PROMETHEUS_MULTIPROC_DIR, each worker writes its values to memory-mapped files there, and a scrape (by
whichever worker answers it) adds them up, so every worker is counted once (prometheus_client's
multiprocess mode). A worker that dies keeps its counts; its live gauges are dropped by the supervisor
(mark_process_dead). Anywhere else (runserver, the tests' in-process client) the process's own registry
serves.

Labels are bounded: endpoint and route names and consumers come from the config, the family is one of
three, a status is a number. A name that matches nothing (a 404) is `unknown`. Never a request id, a key
or free text.

    gateway_requests_total{endpoint, destination, family, consumer, status}
    gateway_request_duration_seconds{endpoint, family}          until the answer (a stream: its end)
    gateway_time_to_first_byte_seconds{endpoint}                streams: until the first chunk
    gateway_upstream_duration_seconds{destination}              the upstream call (a stream: to its first
                                                                chunk), retries and fallbacks included
    gateway_tokens_total{endpoint, consumer, type}              type: input, output
    gateway_cost_usd_total{endpoint, consumer}
    gateway_limit_refusals_total{endpoint, consumer, reason}    reason: rate_limit, budget, unavailable
    gateway_upstream_retries_total{destination}
    gateway_fallbacks_total{endpoint}                           a route moving on to its next destination
    gateway_streams_in_flight{endpoint}
    gateway_circuit_state{destination}                          0 closed, 1 half-open, 2 open (at scrape time)
    gateway_circuit_failures{destination}                       consecutive failures (at scrape time)
    gateway_config_version                                      the oldest config version a worker serves
    gateway_config_reload_failures_total{source}                source: file (applying the YAML), table
                                                                (a worker rebuilding its endpoint table)
"""

from __future__ import annotations

import hmac
import logging
import os
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from django.conf import settings

from serving.http import Request, Response, json_response

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import CollectorRegistry

    from usage.ledger import Entry

logger = logging.getLogger(__name__)

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
UNKNOWN = "unknown"
# Seconds: LLM calls span milliseconds (a cached embedding) to minutes (a long completion).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_REFUSALS = {"rate_limit_exceeded": "rate_limit", "budget_exceeded": "budget", "rate_limit_unavailable": "unavailable"}
_CIRCUIT_VALUES = {"closed": 0, "half-open": 1, "open": 2}
PICOUSD_PER_USD = 10**12


def multiprocess() -> bool:
    return bool(os.environ.get(MULTIPROC_DIR))


class Metrics:
    """The process's metrics, and a cache of their labelled children: one dict look-up per metric and
    request instead of prometheus_client's `labels()` (which validates and locks each time)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("gateway_requests", "Invocations answered.",
                                ["endpoint", "destination", "family", "consumer", "status"], registry=r)
        self.duration = Histogram("gateway_request_duration_seconds", "Time until the answer (a stream: its end).",
                                  ["endpoint", "family"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttfb = Histogram("gateway_time_to_first_byte_seconds", "Streams: time until the first chunk.",
                              ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream = Histogram("gateway_upstream_duration_seconds",
                                  "The upstream call (a stream: until its first chunk), retries included.",
                                  ["destination"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens used, as the provider reported them.",
                              ["endpoint", "consumer", "type"], registry=r)
        self.cost = Counter("gateway_cost_usd", "Cost in US dollars, from the endpoints' prices.",
                            ["endpoint", "consumer"], registry=r)
        self.refusals = Counter("gateway_limit_refusals", "Calls refused by a rate limit or a budget.",
                                ["endpoint", "consumer", "reason"], registry=r)
        self.retries = Counter("gateway_upstream_retries", "Upstream calls sent again.", ["destination"], registry=r)
        self.fallbacks = Counter("gateway_fallbacks", "Times a route moved on to its next destination.",
                                 ["endpoint"], registry=r)
        self.streams = Gauge("gateway_streams_in_flight", "Streams being sent now.", ["endpoint"],
                             multiprocess_mode="livesum", registry=r)
        self.config_version = Gauge("gateway_config_version", "The oldest config version a live worker serves.",
                                    multiprocess_mode="livemin", registry=r)
        self.reload_failures = Counter("gateway_config_reload_failures", "Config reloads that failed.",
                                       ["source"], registry=r)
        if not multiprocess():
            r.register(CircuitCollector())  # (multiprocess: at each scrape)
        self._children: dict[tuple[Any, ...], Any] = {}
        self._rows: dict[tuple[str, str, str, str, int], _Row] = {}

    def child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def record_batch(self, batch: Sequence[tuple[Entry, str, float | None]]) -> None:
        """Finished invocations (observability.reports hands them over in batches): added up per label
        combination first, then each sum added once to its value (in multiprocess mode each addition is a
        lock, a process-id check and a write to the memory-mapped file)."""
        sums: dict[tuple[str, str, str, str, int], _Sums] = {}
        for entry, endpoint, upstream_seconds in batch:
            key = (endpoint, entry.endpoint, entry.family, entry.consumer, entry.status)
            found = sums.get(key)
            if found is None:
                found = sums[key] = _Sums()
            found.add(entry, upstream_seconds)
            if entry.error_code in _REFUSALS:
                self.child(self.refusals, endpoint, entry.consumer, _REFUSALS[entry.error_code]).inc()
            if entry.retries:
                self.child(self.retries, entry.endpoint or endpoint).inc(entry.retries)
            if entry.fallbacks:
                self.child(self.fallbacks, endpoint).inc(entry.fallbacks)
        for key, found in sums.items():
            row = self._rows.get(key)
            if row is None:
                endpoint, destination, family, consumer, status = key
                row = self._rows[key] = _Row(self, endpoint, destination, family, consumer, str(status))
            row.add(found)


class _Sums:
    """What a batch adds to one label combination: counts, sums and histogram buckets (by bucket index)."""

    __slots__ = ("cost", "duration", "input_tokens", "output_tokens", "requests", "ttfb", "upstream")

    def __init__(self) -> None:
        self.requests = 0
        self.input_tokens = self.output_tokens = self.cost = 0
        self.duration: list[Any] = [0.0, {}]  # [sum, {bucket index: count}]
        self.ttfb: list[Any] = [0.0, {}]
        self.upstream: list[Any] = [0.0, {}]

    def add(self, entry: Entry, upstream_seconds: float | None) -> None:
        self.requests += 1
        _add(self.duration, entry.latency_ms / 1000)
        if entry.ttfb_ms is not None:
            _add(self.ttfb, entry.ttfb_ms / 1000)
        if upstream_seconds is not None:
            _add(self.upstream, upstream_seconds)
        if entry.prompt_tokens:
            self.input_tokens += entry.prompt_tokens
        if entry.completion_tokens:
            self.output_tokens += entry.completion_tokens
        if entry.cost_picousd > 0:
            self.cost += entry.cost_picousd


def _add(histogram: list[Any], amount: float) -> None:
    histogram[0] += amount
    index = bisect_left(LATENCY_BUCKETS, amount)
    counts = histogram[1]
    counts[index] = counts.get(index, 0) + 1


class _Row:
    """The values one label combination adds to on every request (prometheus_client's value objects:
    a lock and a float, or a slot in this worker's memory-mapped file)."""

    __slots__ = ("cost", "duration", "input_tokens", "output_tokens", "requests", "ttfb", "upstream")

    def __init__(self, metrics: Metrics, endpoint: str, destination: str, family: str, consumer: str,
                 status: str) -> None:
        child = metrics.child
        self.requests = child(metrics.requests, endpoint, destination, family, consumer, status)._value
        self.duration = child(metrics.duration, endpoint, family)
        self.ttfb = child(metrics.ttfb, endpoint)
        self.upstream = child(metrics.upstream, destination) if destination else None
        self.input_tokens = child(metrics.tokens, endpoint, consumer, "input")._value
        self.output_tokens = child(metrics.tokens, endpoint, consumer, "output")._value
        self.cost = child(metrics.cost, endpoint, consumer)._value

    def add(self, sums: _Sums) -> None:
        self.requests.inc(sums.requests)
        _observe(self.duration, sums.duration)
        _observe(self.ttfb, sums.ttfb)
        if self.upstream is not None:
            _observe(self.upstream, sums.upstream)
        if sums.input_tokens:
            self.input_tokens.inc(sums.input_tokens)
        if sums.output_tokens:
            self.output_tokens.inc(sums.output_tokens)
        if sums.cost:
            self.cost.inc(sums.cost / PICOUSD_PER_USD)


def _observe(histogram: Any, sums: list[Any]) -> None:
    """Histogram.observe without its checks, for a batch: its sum, and the counts of the buckets it fell in."""
    total, counts = sums
    if not counts:
        return
    histogram._sum.inc(total)
    buckets = histogram._buckets
    for index, count in counts.items():
        buckets[index].inc(count)


_metrics: Metrics | None = None
_disabled = False


def get() -> Metrics | None:
    """The process's metrics; None with GATEWAY_METRICS off (prometheus_client is then never imported)."""
    global _metrics, _disabled
    if _metrics is None and not _disabled:
        if not settings.GATEWAY_METRICS:
            _disabled = True
            return None
        _metrics = Metrics()
    return _metrics


def reset() -> None:
    """Forget the process's metrics and the setting read (tests)."""
    global _metrics, _disabled
    _metrics, _disabled = None, False


def endpoint_label(name: str, known: bool) -> str:
    """The name the client called, when the config has it; `unknown` otherwise (never free text)."""
    return name if known or not name else UNKNOWN


def record_batch(batch: Sequence[tuple[Entry, str, float | None]]) -> None:
    """Finished invocations: (usage record, its endpoint_label, its upstream seconds)."""
    metrics = _metrics if _metrics is not None else get()
    if metrics is not None:
        metrics.record_batch(batch)


def stream_opened(endpoint: str) -> None:
    metrics = _metrics if _metrics is not None else get()
    if metrics is not None:
        metrics.child(metrics.streams, endpoint).inc()


def stream_closed(endpoint: str) -> None:
    metrics = _metrics if _metrics is not None else get()
    if metrics is not None:
        metrics.child(metrics.streams, endpoint).dec()


def config_loaded(version: int) -> None:
    metrics = get()
    if metrics is not None:
        metrics.config_version.set(version)


def reload_failed(source: str) -> None:
    metrics = get()
    if metrics is not None:
        metrics.child(metrics.reload_failures, source).inc()


# -- the scrape ---------------------------------------------------------------------------------------------
class CircuitCollector:
    """The circuits of every traffic route's destinations, read from the shared counters when scraped."""

    def describe(self) -> list[Metric]:
        return []  # not known before a scrape: no check against other collectors' names is needed

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        from serving import circuit, counters, runtime

        state = GaugeMetricFamily("gateway_circuit_state", "A route destination's circuit: 0 closed, 1 half-open, "
                                  "2 open.", labels=["destination"])
        failures = GaugeMetricFamily("gateway_circuit_failures", "A route destination's consecutive failures.",
                                     labels=["destination"])
        if circuit.enabled():
            table = runtime.current_table()
            destinations = sorted({name for route in table.routes.values() for name in route.destinations})
            try:
                snapshots = circuit.snapshot(destinations, run=counters.execute)
            except counters.CounterUnavailable:
                logger.warning("/metrics: the circuits cannot be read: the counters are unavailable")
                snapshots = {}
            for name, snap in snapshots.items():
                state.add_metric([name], _CIRCUIT_VALUES[snap.state])
                failures.add_metric([name], snap.failures)
        yield state
        yield failures


def scrape_registry(metrics: Metrics) -> CollectorRegistry:
    """What a scrape reads: every worker's files (multiprocess mode), or this process's registry."""
    if not multiprocess():
        return metrics.registry
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    registry.register(CircuitCollector())
    return registry


def view(request: Request) -> Response:
    """GET /metrics, in Prometheus' text format; with GATEWAY_METRICS_TOKEN, for `Authorization: Bearer
    <token>` only."""
    from observability import reports

    metrics = get()
    if metrics is None:
        return json_response({"detail": "Not Found: metrics are off (GATEWAY_METRICS=false)."}, 404)
    if request.method not in ("GET", "HEAD"):
        response = json_response({"detail": "Method Not Allowed"}, 405)
        response["Allow"] = "GET"
        return response
    token = settings.GATEWAY_METRICS_TOKEN
    if token:
        given = request.header("authorization") or ""
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            response = json_response({"detail": "Unauthorized: /metrics needs `Authorization: Bearer <token>` "
                                                 "(GATEWAY_METRICS_TOKEN)."}, 401)
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
            return response
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    reports.flush()  # this worker's invocations of the last moment (the others' come within reports.FLUSH_SECONDS)
    return Response(generate_latest(scrape_registry(metrics)), content_type=CONTENT_TYPE_LATEST)
