"""Metrics, traces and the access log of a real `start_server --workers 2`, against a local upstream that
records what it receives and a local OTLP receiver: /metrics after a known mix of calls counts exactly
those calls (every worker once), is protected by its token, and labels an unknown name `unknown`; a span
carries the GenAI attributes and continues the client's trace, which the upstream receives too; the
access log's JSON lines hold the call's facts and no secret or prompt."""
from __future__ import annotations

import os
import secrets
import signal
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from observability import reports
from tests.fixtures import payload
from tests.observability.conftest import OTLPReceiver, RecordingUpstream
from tests.serving.conftest import Server, Servers, chat, server_env, wait_for_a_fresh_window

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("observability-server")]  # one gateway

TOKEN = "scrape-" + "t" * 20
PROVIDER_KEY = "sk-PROVIDER-SECRET-abcdef123456"
PROMPT = "a PROMPT that must never be logged 7f3a"


def openai_endpoint(name: str, base: str, extra: str = "") -> str:
    return (f"  - name: {name}\n    endpoint_type: llm/v1/chat\n    model:\n      provider: openai\n"
            f"      name: gpt-4o-mini\n      config: {{openai_api_key: {PROVIDER_KEY}, openai_api_base: '{base}'}}\n"
            f"    timeouts: {{retries: 0}}\n{extra}")


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("metrics")
    (path / "counter_999999.db").write_bytes(b"left over by an earlier run")  # emptied at start
    return path


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory, upstream: RecordingUpstream) -> Path:
    path = tmp_path_factory.mktemp("gateway") / "gateway.yaml"
    path.write_text(
        "endpoints:\n"
        + openai_endpoint("chat", upstream.base("ok"))
        + openai_endpoint("traced", upstream.base("ok"))
        + openai_endpoint("broken", upstream.base("fail"))
        + openai_endpoint("limited", upstream.base("ok"), "    limit: {calls: 1, renewal_period: minute}\n")
        + "routes:\n  - name: resilient\n    task_type: llm/v1/chat\n    routing_strategy: FALLBACK\n"
          "    destinations: [{name: broken}, {name: chat}]\n")
    return path


@pytest.fixture(scope="module")
def gateway(module_servers: Servers, config: Path, otlp_receiver: OTLPReceiver, metrics_dir: Path) -> Server:
    env = server_env(f"sqlite:///{config.parent / 'gateway.sqlite3'}", GATEWAY_METRICS_TOKEN=TOKEN,
                     OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.url, OTEL_BSP_SCHEDULE_DELAY="100",
                     GATEWAY_LOG_FORMAT="json", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                     NO_PROXY="127.0.0.1,localhost")
    server = module_servers.start(env, config)
    server.wait_until_every_worker_answers()
    return server


def scrape(server: Server) -> dict[str, list[Any]]:
    response = requests.get(server.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(s.value for s in samples.get(name, []) if all(s.labels.get(k) == v for k, v in labels.items()))


def workers_that_counted(metrics_dir: Path) -> set[str]:
    """The pids whose own file holds a count of gateway_requests_total."""
    pids = set()
    for path in metrics_dir.glob("counter_*.db"):
        for key, count, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            if '"gateway_requests_total"' in key and count > 0:
                pids.add(path.stem.split("_")[1])
    return pids


def test_metrics_count_exactly_the_calls_made_on_two_workers(gateway: Server, metrics_dir: Path,
                                                             upstream: RecordingUpstream) -> None:
    assert not (metrics_dir / "counter_999999.db").exists()
    wait_for_a_fresh_window(10)
    url = gateway.url("/endpoints/chat/invocations")
    successes = 0
    # Fresh connections until both workers have served some (the kernel picks who accepts).
    while successes < 6 or len(workers_that_counted(metrics_dir)) < 2:
        assert successes < 300, "one worker served every connection"
        assert chat(url).status_code == 200
        successes += 1
    assert workers_that_counted(metrics_dir) <= {str(pid) for pid in gateway.worker_pids()}
    client = openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused")
    streamed = list(client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                   stream=True, stream_options={"include_usage": True}))
    assert streamed[-1].usage is not None and streamed[-1].usage.prompt_tokens == 9
    assert chat(gateway.url("/endpoints/broken/invocations")).status_code == 500
    assert chat(gateway.url("/endpoints/limited/invocations")).status_code == 200
    assert chat(gateway.url("/endpoints/limited/invocations")).status_code == 429
    answer = chat(gateway.url("/gateway/resilient/invocations"))
    assert answer.status_code == 200 and answer.headers["X-Gateway-Destination"] == "chat"
    assert chat(gateway.url("/endpoints/no-such-name-b7/invocations")).status_code == 404

    # A worker adds an invocation to its metrics within reports.FLUSH_SECONDS of the answer (the worker that
    # answers the scrape at once; the other may not have yet).
    time.sleep(reports.FLUSH_SECONDS + 0.2)
    samples = scrape(gateway)
    requests_total = "gateway_requests_total"
    assert value(samples, requests_total, endpoint="chat", destination="chat", family="endpoints",
                 consumer="", status="200") == successes
    assert value(samples, requests_total, endpoint="chat", family="v1", status="200") == 1
    assert value(samples, requests_total, endpoint="broken", destination="broken", status="500") == 1
    assert value(samples, requests_total, endpoint="limited", status="200") == 1
    assert value(samples, requests_total, endpoint="limited", status="429") == 1
    assert value(samples, requests_total, endpoint="resilient", destination="chat", family="gateway",
                 status="200") == 1
    assert value(samples, requests_total, endpoint="unknown", destination="", status="404") == 1
    assert value(samples, "gateway_limit_refusals_total", endpoint="limited", reason="rate_limit") == 1
    assert value(samples, "gateway_fallbacks_total", endpoint="resilient") == 1
    # Tokens as the upstream reported them: 9 in and 6 out for an answer, 9 and 2 for the stream.
    assert value(samples, "gateway_tokens_total", endpoint="chat", type="input") == 9 * (successes + 1)
    assert value(samples, "gateway_tokens_total", endpoint="chat", type="output") == 6 * successes + 2
    assert value(samples, "gateway_cost_usd_total", endpoint="chat") > 0
    assert value(samples, "gateway_request_duration_seconds_count", endpoint="chat", family="endpoints") == successes
    assert value(samples, "gateway_time_to_first_byte_seconds_count", endpoint="chat") == 1
    # Every call that reached an upstream through the endpoint `chat`: the answers, the stream, the fallback's.
    assert value(samples, "gateway_upstream_duration_seconds_count", destination="chat") == successes + 2
    assert value(samples, "gateway_streams_in_flight", endpoint="chat") == 0
    # The route's destinations' circuits, read at scrape time: broken failed once (5 open it).
    assert value(samples, "gateway_circuit_state", destination="broken") == 0
    assert value(samples, "gateway_circuit_failures", destination="broken") == 1
    assert value(samples, "gateway_circuit_state", destination="chat") == 0
    assert value(samples, "gateway_config_version") >= 1
    text = requests.get(gateway.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).text
    assert "no-such-name-b7" not in text and PROVIDER_KEY not in text


def test_metrics_need_the_token(gateway: Server) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = requests.get(gateway.url("/metrics"), headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.headers["Content-Type"] == "application/json"
        assert "GATEWAY_METRICS_TOKEN" in response.json()["detail"]


def test_a_span_continues_the_clients_trace_with_the_genai_attributes(gateway: Server, upstream: RecordingUpstream,
                                                                      otlp_receiver: OTLPReceiver) -> None:
    trace_id, parent_id = secrets.token_hex(16), secrets.token_hex(8)
    response = requests.post(gateway.url("/endpoints/traced/invocations"),
                             json={"messages": [{"role": "user", "content": PROMPT}]},
                             headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}, timeout=10)
    assert response.status_code == 200
    span = otlp_receiver.wait_for(trace_id)
    assert span["parent_span_id"] == parent_id
    assert span["name"] == "chat gpt-4o-mini"
    assert span["resource"]["service.name"] == "django-ai-gateway"
    attributes = span["attributes"]
    assert attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "gpt-4o-mini"
    assert attributes["gen_ai.response.model"] == payload("openai", "chat_response.json")["model"]
    assert attributes["gen_ai.usage.input_tokens"] == 9
    assert attributes["gen_ai.usage.output_tokens"] == 6
    assert attributes["gateway.endpoint"] == "traced" and attributes["gateway.destination"] == "traced"
    assert attributes["http.response.status_code"] == 200 and attributes["gateway.retries"] == 0
    assert PROMPT not in orjson.dumps(span).decode()  # no content without GATEWAY_TRACE_CONTENT
    # The upstream call carried the trace on: same trace, this span as its parent.
    sent = [headers for path, headers, body in upstream.requests if body["messages"][0]["content"] == PROMPT]
    assert sent and sent[0]["traceparent"] == f"00-{trace_id}-{span['span_id']}-01"


def test_the_access_log_is_one_json_object_a_line_without_secrets_or_prompts(gateway: Server) -> None:
    request_id = "access-log-" + secrets.token_hex(4)
    assert requests.post(gateway.url("/endpoints/chat/invocations"),
                         json={"messages": [{"role": "user", "content": PROMPT}]},
                         headers={"X-Request-Id": request_id}, timeout=10).status_code == 200
    log = gateway.wait_for_log(f'"request_id":"{request_id}"')
    line = next(orjson.loads(line) for line in log.splitlines() if request_id in line)
    assert line["endpoint"] == "chat" and line["destination"] == "chat" and line["family"] == "endpoints"
    assert line["status"] == 200 and line["input_tokens"] == 9 and line["output_tokens"] == 6
    assert line["latency_ms"] > 0 and line["retries"] == 0 and line["error"] == ""
    assert set(line) >= {"time", "consumer", "route", "stream", "ttfb_ms", "fallbacks", "error_code"}
    assert PROMPT not in log and PROVIDER_KEY not in log  # in no line of the server's whole log


def test_a_config_file_that_cannot_be_applied_is_counted(gateway: Server, config: Path) -> None:
    good = config.read_text()
    start = len(gateway.log())
    config.write_text("endpoints: [this is not: valid")
    try:
        gateway.wait_for_log("Invalid configuration:", start=start, timeout=60)
        assert value(scrape(gateway), "gateway_config_reload_failures_total", source="file") == 1
    finally:
        config.write_text(good)  # the content last applied: skipped as unchanged


def test_a_dead_workers_counts_stay_and_its_live_gauges_go(gateway: Server, metrics_dir: Path) -> None:
    deadline = time.monotonic() + 30
    while not workers_that_counted(metrics_dir) & {str(pid) for pid in gateway.worker_pids()} \
            and time.monotonic() < deadline:  # this test alone: calls until a live worker has counted
        assert chat(gateway.url("/endpoints/chat/invocations")).status_code == 200
    pid = min(int(pid) for pid in workers_that_counted(metrics_dir) if int(pid) in gateway.worker_pids())
    before = value(scrape(gateway), "gateway_requests_total")
    assert before > 0
    live_gauge = metrics_dir / f"gauge_livemin_{pid}.db"
    assert live_gauge.exists()  # the config version it serves
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while live_gauge.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not live_gauge.exists(), "the supervisor did not mark the dead worker's files"
    assert (metrics_dir / f"counter_{pid}.db").exists()
    gateway.wait_until_every_worker_answers()
    assert value(scrape(gateway), "gateway_requests_total") == before
