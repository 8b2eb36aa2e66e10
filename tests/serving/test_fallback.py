"""Fallback routes and circuit breaking, against two local OpenAI-speaking upstreams: a failing primary
falls back to the secondary on every route family (with the real clients too), a request-caused 4xx does
not, a stream falls back only before its first byte, and a failing destination's circuit opens, half-opens
and closes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, cast

import openai
import pytest
from mlflow.deployments import get_deploy_client

from endpoints_app.services import save_route
from endpoints_app.validation import validate_route
from providers.shapes import CHAT
from tests.conftest import MakeEndpoint, post_json, sse_events
from tests.fixtures import raw
from tests.serving.test_upstream import Behaviour, ScriptedUpstream, closed_port, ok, respond, stall
from usage import ledger
from usage.models import UsageRecord

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "Hi"}]}


def html_502(handler: BaseHTTPRequestHandler) -> None:
    data = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    handler.send_response(502)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def sse(handler: BaseHTTPRequestHandler) -> None:
    data = raw("openai", "chat_stream.txt").encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def sse_then_break(handler: BaseHTTPRequestHandler) -> None:
    """One event, then the connection drops mid-stream."""
    first = raw("openai", "chat_stream.txt").split("\n\n")[0] + "\n\n"
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 100000\r\n\r\n"
                        + first.encode())
    handler.wfile.flush()
    handler.close_connection = True


@pytest.fixture
def primary() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.fixture
def secondary() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.fixture
def fallback_route(make_endpoint: MakeEndpoint, primary: ScriptedUpstream,
                   secondary: ScriptedUpstream) -> Callable[..., str]:
    def make(primary_url: str | None = None, fallback_on: list[Any] | None = None, **timeouts: Any) -> str:
        config = {"openai_api_key": "sk-test"}
        make_endpoint("primary", CHAT, "openai", "gpt-4o-mini",
                      {**config, "openai_api_base": primary_url or primary.base_url},
                      timeouts={"retries": 0, **timeouts})
        make_endpoint("secondary", CHAT, "openai", "gpt-4o-mini", {**config, "openai_api_base": secondary.base_url},
                      timeouts={"retries": 0})
        raw_route: dict[str, Any] = {"name": "resilient", "task_type": CHAT, "routing_strategy": "FALLBACK",
                                     "destinations": [{"name": "primary"}, {"name": "secondary"}]}
        if fallback_on is not None:
            raw_route["fallback_on"] = fallback_on
        save_route(validate_route(raw_route, {"primary": CHAT, "secondary": CHAT}))
        return "resilient"

    return make


FAMILIES = [("/endpoints/resilient/invocations", HI), ("/gateway/resilient/invocations", HI),
            ("/v1/chat/completions", {**HI, "model": "resilient"})]
FAILURES: list[tuple[str, Behaviour | None]] = [
    ("refused", None),
    ("429 with Retry-After", respond(429, {"error": {"message": "slow down"}}, {"Retry-After": "1"})),
    ("503", respond(503, {"error": {"message": "overloaded"}})), ("HTML 502", html_502),
]


@pytest.mark.parametrize(("path", "body"), FAMILIES)
@pytest.mark.parametrize(("failure", "behaviour"), FAILURES)
def test_a_failing_primary_falls_back_to_the_secondary(client: Any, fallback_route: Callable[..., str],
                                                      primary: ScriptedUpstream, secondary: ScriptedUpstream,
                                                      failure: str, behaviour: Behaviour | None, path: str,
                                                      body: Any) -> None:
    if behaviour is None:
        fallback_route(primary_url=f"http://127.0.0.1:{closed_port()}/v1")
    else:
        primary.play(behaviour)
        fallback_route()
    response = post_json(client, path, body)
    assert response.status_code == 200, response.content
    assert response["X-Gateway-Destination"] == "secondary"
    assert secondary.calls == 1 and primary.calls == (0 if behaviour is None else 1)
    ledger.get().flush()
    record = UsageRecord.objects.get()
    assert (record.route, record.endpoint, record.fallbacks, record.status) == ("resilient", "secondary", 1, 200)


def test_a_timeout_falls_back(client: Any, fallback_route: Callable[..., str], primary: ScriptedUpstream,
                              secondary: ScriptedUpstream) -> None:
    primary.play(stall(primary.release, 3))
    fallback_route(read=0.3)
    started = time.monotonic()
    response = post_json(client, "/endpoints/resilient/invocations", HI)
    assert response.status_code == 200 and response["X-Gateway-Destination"] == "secondary"
    assert time.monotonic() - started < 2


def test_falling_back_never_outlives_the_first_destination_s_total_deadline(
        client: Any, fallback_route: Callable[..., str], primary: ScriptedUpstream,
        secondary: ScriptedUpstream) -> None:
    primary.play(stall(primary.release, 3))
    fallback_route(read=5, total=0.5)  # the client's patience: half a second, whoever answers
    started = time.monotonic()
    response = post_json(client, "/endpoints/resilient/invocations", HI)
    assert time.monotonic() - started < 1.5
    assert response.status_code == 504 and secondary.calls == 0
    assert "within the request's deadline (0.5 s, timeouts.total)" in response.json()["detail"]
    ledger.get().flush()
    record = UsageRecord.objects.get()
    assert (record.status, record.error_kind, record.fallbacks) == (504, "timeout", 1)


def test_a_request_caused_400_does_not_fall_back(client: Any, fallback_route: Callable[..., str],
                                                 primary: ScriptedUpstream, secondary: ScriptedUpstream) -> None:
    primary.play(respond(400, {"error": {"message": "Invalid 'messages': too long"}}))
    fallback_route()
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "resilient"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Invalid 'messages': too long"
    assert secondary.calls == 0


def test_fallback_on_says_which_failures_move_on(client: Any, fallback_route: Callable[..., str],
                                                 primary: ScriptedUpstream, secondary: ScriptedUpstream) -> None:
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    fallback_route(fallback_on=["connect", "timeout"])  # not 5xx
    response = post_json(client, "/endpoints/resilient/invocations", HI)
    assert response.status_code == 503 and secondary.calls == 0
    assert "X-Gateway-Destination" not in response


def test_when_every_destination_fails_the_last_failure_is_answered(client: Any, fallback_route: Callable[..., str],
                                                                   primary: ScriptedUpstream,
                                                                   secondary: ScriptedUpstream) -> None:
    primary.play(respond(503, {"error": {"message": "primary down"}}))
    secondary.play(respond(500, {"error": {"message": "secondary down"}}))
    fallback_route()
    response = post_json(client, "/endpoints/resilient/invocations", HI)
    assert response.status_code == 500 and response.json() == {"detail": "secondary down"}
    assert (primary.calls, secondary.calls) == (1, 1)


def test_a_stream_that_fails_before_its_first_byte_falls_back(client: Any, fallback_route: Callable[..., str],
                                                             primary: ScriptedUpstream,
                                                             secondary: ScriptedUpstream) -> None:
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    secondary.play(sse)
    fallback_route()
    response = post_json(client, "/endpoints/resilient/invocations", {**HI, "stream": True})
    assert response.status_code == 200 and response["X-Gateway-Destination"] == "secondary"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert "".join(e["choices"][0]["delta"]["content"] or "" for e in events[:-1] if e["choices"]) == "Hello"


def test_a_stream_that_fails_after_its_first_byte_ends_with_the_error_event(
        client: Any, fallback_route: Callable[..., str], primary: ScriptedUpstream,
        secondary: ScriptedUpstream) -> None:
    primary.play(sse_then_break)
    fallback_route()
    response = post_json(client, "/endpoints/resilient/invocations", {**HI, "stream": True})
    assert response.status_code == 200 and response["X-Gateway-Destination"] == "primary"
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert events[-1]["error"]["code"] == "upstream_unreachable"
    assert secondary.calls == 0


def test_the_routes_read_api_shows_the_strategy(client: Any, fallback_route: Callable[..., str]) -> None:
    fallback_route()
    assert client.get("/api/3.0/gateway/route/resilient").json() == {
        "name": "resilient", "task_type": CHAT, "routing_strategy": "FALLBACK",
        "destinations": [{"name": "primary"}, {"name": "secondary"}]}


# -- the real clients ----------------------------------------------------------------------------------------
@pytest.mark.django_db(transaction=True)
def test_the_real_clients_get_the_secondarys_answer(live_server: Any, fallback_route: Callable[..., str],
                                                   primary: ScriptedUpstream, secondary: ScriptedUpstream,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    fallback_route()
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    answer = sdk.chat.completions.with_raw_response.create(model="resilient", messages=cast(Any, HI["messages"]))
    assert answer.headers["x-gateway-destination"] == "secondary"
    assert answer.parse().choices[0].message.content == "Hello! How can I help?"
    predicted = get_deploy_client(live_server.url).predict(endpoint="resilient", inputs=HI)
    assert predicted["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert (primary.calls, secondary.calls) == (2, 2)


# -- circuit breaking ------------------------------------------------------------------------------------------
def test_the_circuit_opens_after_n_failures_half_opens_and_closes(client: Any, fallback_route: Callable[..., str],
                                                                  primary: ScriptedUpstream,
                                                                  secondary: ScriptedUpstream, settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_FAILURES = 3
    settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS = 1.0
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    fallback_route()

    def call() -> Any:
        response = post_json(client, "/endpoints/resilient/invocations", HI)
        assert response.status_code == 200
        time.sleep(0.05)  # the circuit's counts are written after the answer, without waiting
        return response

    for _ in range(3):
        call()
    assert primary.calls == 3  # three failures: the circuit opens
    for _ in range(4):
        assert call()["X-Gateway-Destination"] == "secondary"
    assert primary.calls == 3  # open: the primary is not called at all
    time.sleep(1.1)  # the cool-down ends: half-open
    primary.play(ok)  # (its call count starts again)
    assert call()["X-Gateway-Destination"] == "primary"  # the probe goes through and succeeds
    assert primary.calls == 1
    for _ in range(3):
        assert call()["X-Gateway-Destination"] == "primary"  # closed again
    assert primary.calls == 4


def test_a_failed_probe_opens_the_circuit_again(client: Any, fallback_route: Callable[..., str],
                                                primary: ScriptedUpstream, secondary: ScriptedUpstream,
                                                settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_FAILURES = 2
    settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS = 1.0
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    fallback_route()
    for _ in range(2):
        post_json(client, "/endpoints/resilient/invocations", HI)
        time.sleep(0.05)
    time.sleep(1.1)
    post_json(client, "/endpoints/resilient/invocations", HI)  # the probe fails
    time.sleep(0.05)
    assert primary.calls == 3
    for _ in range(3):
        post_json(client, "/endpoints/resilient/invocations", HI)
    assert primary.calls == 3  # open again


def test_a_split_route_shares_an_open_destinations_traffic_among_the_others(
        client: Any, make_endpoint: MakeEndpoint, primary: ScriptedUpstream, secondary: ScriptedUpstream,
        settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_FAILURES = 2
    settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS = 30
    primary.play(respond(503, {"error": {"message": "overloaded"}}))
    for name, upstream in (("a", primary), ("b", secondary)):
        make_endpoint(name, CHAT, "openai", "gpt-4o-mini",
                      {"openai_api_key": "sk", "openai_api_base": upstream.base_url}, timeouts={"retries": 0})
    save_route(validate_route({"name": "split", "task_type": CHAT, "destinations": [
        {"name": "a", "traffic_percentage": 90}, {"name": "b", "traffic_percentage": 10}]}, {"a": CHAT, "b": CHAT}))
    statuses = []
    while primary.calls < 2:
        statuses.append(post_json(client, "/endpoints/split/invocations", HI).status_code)
        time.sleep(0.02)
        assert len(statuses) < 200
    time.sleep(0.05)
    before = secondary.calls
    answers = [post_json(client, "/endpoints/split/invocations", HI) for _ in range(20)]
    assert [a.status_code for a in answers] == [200] * 20
    assert {a["X-Gateway-Destination"] for a in answers} == {"b"}
    assert secondary.calls == before + 20 and primary.calls == 2


def test_a_route_whose_destinations_are_all_open_answers_503_with_retry_after(
        client: Any, fallback_route: Callable[..., str], primary: ScriptedUpstream, secondary: ScriptedUpstream,
        settings: Any) -> None:
    settings.GATEWAY_CIRCUIT_FAILURES = 1
    settings.GATEWAY_CIRCUIT_COOLDOWN_SECONDS = 30
    primary.play(respond(503, {"error": {"message": "down"}}))
    secondary.play(respond(503, {"error": {"message": "down too"}}))
    fallback_route()
    assert post_json(client, "/endpoints/resilient/invocations", HI).status_code == 503
    time.sleep(0.05)
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "resilient"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_destination_available"
    assert int(response["Retry-After"]) == 30
    assert (primary.calls, secondary.calls) == (1, 1)
