"""Metrics, traces and the access log in one process (the ASGI application the workers run, against a
local upstream): the plain registry outside start_server, GATEWAY_METRICS=false, free-text names
labelled `unknown`, tracing off by default (a client's traceparent still goes upstream), prompts on spans
only when asked for, and the access line in both formats without keys or prompts."""
from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from consumers.services import create_key
from observability import metrics, tracing
from providers.shapes import CHAT
from tests.conftest import MakeConsumer, MakeEndpoint, post_json, sse_events
from tests.observability.conftest import OTLPReceiver, RecordingUpstream

pytestmark = pytest.mark.django_db

PROMPT = "an in-process PROMPT 51c2"
HI = {"messages": [{"role": "user", "content": PROMPT}]}


@pytest.fixture(autouse=True)
def fresh_observability() -> Iterator[None]:
    metrics.reset()
    tracing.reset()
    yield
    metrics.reset()
    tracing.reset()


@pytest.fixture
def chat_endpoint(make_endpoint: MakeEndpoint, upstream: RecordingUpstream) -> str:
    make_endpoint("chat", CHAT, "openai", "gpt-4o-mini", {"openai_api_key": "sk-in-process-SECRET",
                                                          "openai_api_base": upstream.base("ok")})
    return "chat"


def samples(client: Any) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_metrics_outside_start_server_come_from_the_process_registry(client: Any, chat_endpoint: str) -> None:
    for _ in range(3):
        assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
    found = samples(client)
    key = ("gateway_requests_total", (("consumer", ""), ("destination", "chat"), ("endpoint", "chat"),
                                      ("family", "endpoints"), ("status", "200")))
    assert found[key] == 3


def test_a_name_that_is_not_in_the_config_is_labelled_unknown(client: Any, chat_endpoint: str) -> None:
    body = {"model": "free text, with spaces", "messages": HI["messages"]}
    assert post_json(client, "/v1/chat/completions", body).status_code == 404
    response = client.get("/metrics")
    assert "free text" not in response.content.decode()
    assert 'endpoint="unknown",family="v1"' in response.content.decode()


def test_metrics_can_be_switched_off(client: Any, settings: Any, chat_endpoint: str) -> None:
    settings.GATEWAY_METRICS = False
    assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
    response = client.get("/metrics")
    assert response.status_code == 404
    assert metrics.get() is None


def test_tracing_is_off_by_default_and_a_client_traceparent_still_goes_upstream(
        client: Any, chat_endpoint: str, upstream: RecordingUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    traceparent = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    assert post_json(client, "/endpoints/chat/invocations", HI, HTTP_TRACEPARENT=traceparent).status_code == 200
    assert tracing.get() is None
    assert upstream.requests[-1][1]["traceparent"] == traceparent
    assert post_json(client, "/endpoints/chat/invocations", HI, HTTP_TRACEPARENT="00-not-a-traceparent").status_code \
        == 200
    assert "traceparent" not in upstream.requests[-1][1]


def test_prompts_and_completions_are_on_the_span_only_when_asked_for(
        client: Any, settings: Any, chat_endpoint: str, otlp_receiver: OTLPReceiver,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-under-test")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    settings.GATEWAY_TRACE_CONTENT = True
    trace_id = secrets.token_hex(16)
    traceparent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
    assert post_json(client, "/endpoints/chat/invocations", HI, HTTP_TRACEPARENT=traceparent).status_code == 200
    tracing.shutdown()  # flushes the batch
    span = otlp_receiver.wait_for(trace_id)
    assert span["resource"]["service.name"] == "gateway-under-test"
    assert PROMPT in span["attributes"]["gen_ai.input.messages"]
    assert "Hello" in span["attributes"]["gen_ai.output.messages"]


def test_the_text_access_line_has_the_facts_and_no_key(client: Any, settings: Any, chat_endpoint: str,
                                                       make_consumer: MakeConsumer,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    settings.GATEWAY_AUTH = "keys"
    make_consumer("team-a")
    key = create_key("team-a").key
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = post_json(client, "/endpoints/chat/invocations", HI, HTTP_AUTHORIZATION=f"Bearer {key}",
                             HTTP_X_REQUEST_ID="text-line-1")
    assert response.status_code == 200
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert line.startswith("request_id=text-line-1 family=endpoints consumer=team-a endpoint=chat route=- "
                           "destination=chat status=200 stream=false input_tokens=9 output_tokens=6 latency_ms=")
    assert line.endswith("retries=0 fallbacks=0 error=- error_code=-")
    assert key not in line and key[:12] not in line and PROMPT not in line


def test_the_json_access_line_parses_and_names_the_error(client: Any, settings: Any, chat_endpoint: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    settings.GATEWAY_LOG_FORMAT = "json"
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        assert post_json(client, "/endpoints/nowhere/invocations", HI, HTTP_X_REQUEST_ID="json-line-1").status_code \
            == 404
    (line,) = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert line["request_id"] == "json-line-1" and line["status"] == 404 and line["endpoint"] == "unknown"
    assert line["error"] == "invalid" and line["error_code"] == "endpoint_not_found"
    assert line["input_tokens"] is None and line["destination"] == ""


def test_no_access_line_is_built_when_the_logger_is_off(client: Any, settings: Any, chat_endpoint: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    settings.GATEWAY_LOG_FORMAT = "json"
    built: list[Any] = []

    def fields(*args: Any) -> dict[str, object]:
        built.append(args)
        return {}

    monkeypatch.setattr("observability.accesslog.fields", fields)
    logging.getLogger("gateway.access").setLevel(logging.WARNING)
    try:
        assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
    finally:
        logging.getLogger("gateway.access").setLevel(logging.INFO)
    assert built == []


def test_a_streams_span_ends_with_the_stream_and_has_its_usage(
        client: Any, chat_endpoint: str, otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    trace_id = secrets.token_hex(16)
    body = {**HI, "stream": True, "stream_options": {"include_usage": True}}
    response = post_json(client, "/endpoints/chat/invocations", body,
                         HTTP_TRACEPARENT=f"00-{trace_id}-{secrets.token_hex(8)}-01")
    assert response.status_code == 200
    assert sse_events(response)[-1] == "[DONE]"
    tracing.shutdown()
    attributes = otlp_receiver.wait_for(trace_id)["attributes"]
    assert attributes["gateway.stream"] is True
    assert attributes["gen_ai.usage.input_tokens"] == 9 and attributes["gen_ai.usage.output_tokens"] == 2
    assert attributes["gen_ai.response.model"] == "gpt-4o-mini"
    assert "gen_ai.input.messages" not in attributes
