"""Invocation routes: validation, errors in both families, rate limits, streaming errors, upstream
faults, and zero queries on the warm path."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import counters, ratelimit
from tests.conftest import post_json, sse_events
from tests.fixtures import payload
from tests.rawserver import chunk, raw_server

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def mock_endpoints(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m-chat")
    make_endpoint("completions", COMPLETIONS, "mock", "m-comp")
    make_endpoint("embeddings", EMBEDDINGS, "mock", "m-emb", {"dimensions": 4})


# -- request validation (MLflow 3.x shapes) --------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/endpoints/chat/invocations", {"messages": []}, {"type": "too_short", "loc": ["body", "messages"]}),
        ("/endpoints/chat/invocations", {}, {"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}),
        (
            "/endpoints/chat/invocations",
            {**HI, "temperature": 2.5},
            {
                "type": "less_than_equal",
                "loc": ["body", "temperature"],
                "msg": "Input should be less than or equal to 2",
                "input": 2.5,
                "ctx": {"le": 2.0},
            },
        ),
        ("/endpoints/chat/invocations", {**HI, "n": 0}, {"type": "greater_than_equal", "loc": ["body", "n"]}),
        ("/endpoints/chat/invocations", {**HI, "stop": "x"}, {"type": "list_type", "loc": ["body", "stop"]}),
        ("/endpoints/chat/invocations", {**HI, "stop": []}, {"type": "too_short", "loc": ["body", "stop"]}),
        (
            "/endpoints/chat/invocations",
            {**HI, "max_tokens": 0},
            {"type": "greater_than_equal", "loc": ["body", "max_tokens"]},
        ),
        (
            "/endpoints/chat/invocations",
            {"messages": [{"content": "no role"}]},
            {"type": "missing", "loc": ["body", "messages", 0, "role"]},
        ),
        (
            "/endpoints/chat/invocations",
            {**HI, "tool_choice": "sometimes"},
            {"loc": ["body", "tool_choice", "literal['none','auto','required']"]},
        ),
        ("/endpoints/completions/invocations", {"n": 1}, {"type": "missing", "loc": ["body", "prompt"]}),
        ("/endpoints/embeddings/invocations", {"text": "x"}, {"type": "missing", "loc": ["body", "input"]}),
    ],
)
def test_invalid_bodies_get_fastapi_style_422s(
    client: Any, mock_endpoints: None, path: str, body: Any, expected: dict[str, Any]
) -> None:
    response = post_json(client, path, body)
    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert any(all(error.get(k) == v for k, v in expected.items()) for error in errors), errors


def test_no_body_text_plain_and_bad_json_are_422s(client: Any, mock_endpoints: None) -> None:
    empty = client.post("/endpoints/chat/invocations", data=b"", content_type="application/json")
    assert empty.status_code == 422
    assert empty.json()["detail"][0]["loc"] == ["body"]
    plain = client.post("/endpoints/chat/invocations", data=b"hello", content_type="text/plain")
    assert plain.json()["detail"][0]["type"] == "model_attributes_type"
    broken = client.post("/endpoints/chat/invocations", data=b'{"messages": [', content_type="application/json")
    assert broken.status_code == 422
    assert broken.json()["detail"][0]["type"] == "json_invalid"


def test_model_is_refused_on_the_mlflow_routes(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/endpoints/chat/invocations", {**HI, "model": "gpt-4"})
    assert response.status_code == 422
    assert response.json() == {
        "detail": "The parameter 'model' is not permitted to be passed. The route being "
        "queried already defines a model instance."
    }


def test_unknown_endpoint_on_invocations_is_mlflows_404(client: Any) -> None:
    response = post_json(client, "/endpoints/nope/invocations", HI)
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


def test_gateway_alias_invokes_the_same_handler(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/gateway/chat/invocations", HI)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hi"


# -- the /v1 family: OpenAI's envelope -------------------------------------------------------------------
def test_v1_unknown_model_is_404_in_openai_envelope(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "nope"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "model"
    assert "nope" in error["message"]


def test_v1_wrong_endpoint_type_is_400(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "completions"})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Endpoint 'completions' is not a chat endpoint."
    response = post_json(client, "/v1/embeddings", {"input": "x", "model": "chat"})
    assert response.json()["error"]["message"] == "Endpoint 'chat' is not an embeddings endpoint."


def test_v1_validation_error_is_400_with_the_param(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "chat", "temperature": 9})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "temperature"
    assert error["code"] == "invalid_request"


def test_v1_missing_model_is_400(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/v1/completions", {"prompt": "x"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "model"


def test_v1_provider_rule_violations_are_translated(client: Any, mock_endpoints: None) -> None:
    response = post_json(client, "/v1/chat/completions", {**HI, "model": "chat", "n": 2})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "'n' must be '1' for the Mock provider. Received value: '2'."


# -- rate limits --------------------------------------------------------------------------------------------
def test_one_limit_counter_is_shared_by_every_route_family(client: Any, make_endpoint: Any) -> None:
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 3, "renewal_period": "minute"})
    first = post_json(client, "/endpoints/limited/invocations", HI)
    assert first.status_code == 200
    assert first["X-RateLimit-Limit"] == "3" and first["X-RateLimit-Remaining"] == "2"
    assert post_json(client, "/gateway/limited/invocations", HI).status_code == 200
    assert post_json(client, "/v1/chat/completions", {**HI, "model": "limited"}).status_code == 200
    refused = post_json(client, "/endpoints/limited/invocations", HI)
    assert refused.status_code == 429
    assert refused.json() == {"error": "Rate limit exceeded: 3 per 1 minute"}
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert refused["X-RateLimit-Remaining"] == "0"
    v1 = post_json(client, "/v1/chat/completions", {**HI, "model": "limited"})
    assert v1.status_code == 429
    assert v1.json()["error"]["type"] == "rate_limit_error"


@pytest.fixture(params=["refusing", "silent"])
def redis_that_cannot_count(
    request: pytest.FixtureRequest, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """REDIS_URL pointing at a port where nothing listens, or at a socket that accepts and never
    answers (past GATEWAY_RATE_LIMIT_TIMEOUT). Yields the address the warning must name."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    if request.param == "silent":
        listener.listen(16)  # the kernel completes the handshakes; nobody reads or answers
    else:
        listener.close()
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/0"
    settings.GATEWAY_RATE_LIMIT_TIMEOUT = 0.2
    monkeypatch.setattr(ratelimit, "_last_warning", 0.0)
    counters.reset()
    yield "Timeout" if request.param == "silent" else f"127.0.0.1:{port}"
    counters.reset()
    listener.close()


def test_when_redis_cannot_count_limited_endpoints_are_served_without_a_limit_and_it_is_logged_once(
    client: Any, make_endpoint: Any, redis_that_cannot_count: str, caplog: pytest.LogCaptureFixture
) -> None:
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 1, "renewal_period": "minute"})
    with caplog.at_level(logging.WARNING, logger="serving.ratelimit"):
        responses = [post_json(client, "/endpoints/limited/invocations", HI) for _ in range(3)]
        responses.append(post_json(client, "/v1/chat/completions", {**HI, "model": "limited"}))
    assert [response.status_code for response in responses] == [200] * 4  # 4 calls on a 1-call limit
    assert not any(response.has_header("X-RateLimit-Limit") for response in responses)
    messages = [record.getMessage() for record in caplog.records]
    warnings = [message for message in messages if "rate limits are not applied" in message]
    assert len(warnings) == 1, warnings  # one line per interval, not one per request
    assert redis_that_cannot_count in warnings[0] and "limited" in warnings[0]


def test_with_fail_open_off_limited_endpoints_are_refused_with_503_when_redis_cannot_count(
    client: Any, make_endpoint: Any, redis_that_cannot_count: str, settings: Any
) -> None:
    settings.GATEWAY_RATE_LIMIT_FAIL_OPEN = False
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 100, "renewal_period": "minute"})
    make_endpoint("unlimited", CHAT, "mock", "m")
    refused = post_json(client, "/endpoints/limited/invocations", HI)
    assert refused.status_code == 503
    assert "rate-limit counters cannot be reached" in refused.json()["detail"]
    v1 = post_json(client, "/v1/chat/completions", {**HI, "model": "limited"})
    assert v1.status_code == 503
    assert v1.json()["error"]["code"] == "rate_limit_unavailable"
    assert post_json(client, "/endpoints/unlimited/invocations", HI).status_code == 200  # no limit, no Redis call


def test_a_zero_call_limit_refuses_everything(client: Any, make_endpoint: Any) -> None:
    make_endpoint("closed", CHAT, "mock", "m", limit={"calls": 0, "renewal_period": "5 minutes"})
    response = post_json(client, "/endpoints/closed/invocations", HI)
    assert response.status_code == 429
    assert response.json() == {"error": "Rate limit exceeded: 0 per 5 minute"}


def test_traffic_routes_count_against_the_destination_limit(client: Any, make_endpoint: Any, tmp_path: Any) -> None:
    from endpoints_app.services import import_config

    make_endpoint("dest", CHAT, "mock", "m", limit={"calls": 1, "renewal_period": "hour"})
    path = tmp_path / "routes.yaml"
    path.write_text(
        "endpoints: []\nroutes:\n- name: r\n  task_type: llm/v1/chat\n  destinations:\n"
        "  - name: dest\n    traffic_percentage: 100\n"
    )
    import_config(str(path))
    assert post_json(client, "/endpoints/r/invocations", HI).status_code == 200
    assert post_json(client, "/endpoints/dest/invocations", HI).status_code == 429


def test_a_traffic_route_splits_by_its_percentages(client: Any, make_endpoint: Any, tmp_path: Any) -> None:
    from endpoints_app.services import import_config

    make_endpoint("a", CHAT, "mock", "model-a")
    make_endpoint("b", CHAT, "mock", "model-b")
    path = tmp_path / "split.yaml"
    path.write_text(
        "endpoints: []\nroutes:\n- name: split\n  task_type: llm/v1/chat\n  destinations:\n"
        "  - {name: a, traffic_percentage: 80}\n  - {name: b, traffic_percentage: 20}\n"
    )
    import_config(str(path))
    models = [post_json(client, "/v1/chat/completions", {**HI, "model": "split"}).json()["model"] for _ in range(300)]
    share_a = models.count("model-a") / len(models)
    assert set(models) == {"model-a", "model-b"}
    assert 0.65 < share_a < 0.93  # 80% ± generous noise over 300 draws


# -- the hot path makes no query once warm --------------------------------------------------------------
def test_a_warm_invocation_makes_zero_database_queries(
    client: Any, make_endpoint: Any, django_assert_num_queries: Any
) -> None:
    make_endpoint("warm", CHAT, "mock", "m", limit={"calls": 100, "renewal_period": "minute"})
    assert post_json(client, "/endpoints/warm/invocations", HI).status_code == 200  # warms the table
    with django_assert_num_queries(0):
        assert post_json(client, "/endpoints/warm/invocations", HI).status_code == 200
        assert post_json(client, "/v1/chat/completions", {**HI, "model": "warm"}).status_code == 200
        assert post_json(client, "/endpoints/warm/invocations", {**HI, "stream": True}).status_code == 200


def test_an_admin_edit_reaches_the_next_request(client: Any, make_endpoint: Any) -> None:
    endpoint = make_endpoint("live", CHAT, "mock", "before")
    assert post_json(client, "/endpoints/live/invocations", HI).json()["model"] == "before"
    endpoint.model_name = "after"
    endpoint.save()
    assert post_json(client, "/endpoints/live/invocations", HI).json()["model"] == "after"


# -- streaming -------------------------------------------------------------------------------------------------
def test_completions_and_chat_stream_on_both_families(client: Any, mock_endpoints: None) -> None:
    for path, body in (
        ("/endpoints/chat/invocations", {**HI, "stream": True}),
        ("/v1/chat/completions", {**HI, "stream": True, "model": "chat"}),
        ("/endpoints/completions/invocations", {"prompt": "abc def", "stream": True}),
        ("/v1/completions", {"prompt": "abc def", "stream": True, "model": "completions"}),
    ):
        response = post_json(client, path, body)
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream; charset=utf-8"
        events = sse_events(response)
        assert events[-1] == "[DONE]"
        assert len(events) >= 4
        assert events[-2]["usage"]["total_tokens"] > 0


# -- upstream faults (openai provider against a local server) ---------------------------------------------
@pytest.fixture
def upstream(make_endpoint: Any, httpserver: HTTPServer) -> HTTPServer:
    config = {"openai_api_key": "sk-x", "openai_api_base": httpserver.url_for("/v1")}
    make_endpoint("chat", CHAT, "openai", "gpt-4o", config, timeouts={"read": 0.5, "retries": 0})
    return httpserver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_upstream_error_status_and_message_pass_through(client: Any, upstream: HTTPServer) -> None:
    upstream.expect_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}, status=401
    )
    response = post_json(client, "/endpoints/chat/invocations", HI)
    assert response.status_code == 401
    assert response.json() == {"detail": "Incorrect API key provided"}
    v1 = post_json(client, "/v1/chat/completions", {**HI, "model": "chat"})
    assert v1.status_code == 401
    assert v1.json()["error"]["message"] == "Incorrect API key provided"


def test_upstream_500_and_429_keep_their_status(client: Any, upstream: HTTPServer) -> None:
    upstream.expect_ordered_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "boom"}}, status=500
    )
    upstream.expect_ordered_request("/v1/chat/completions").respond_with_json(
        {"error": {"message": "slow down"}}, status=429
    )
    first = post_json(client, "/endpoints/chat/invocations", HI)
    assert (first.status_code, first.json()) == (500, {"detail": "boom"})
    second = post_json(client, "/endpoints/chat/invocations", HI)
    assert (second.status_code, second.json()) == (429, {"detail": "slow down"})


def test_an_html_body_is_a_502(client: Any, upstream: HTTPServer) -> None:
    upstream.expect_request("/v1/chat/completions").respond_with_data(
        "<html>bad gateway</html>", status=200, content_type="text/html; charset=utf-8"
    )
    response = post_json(client, "/endpoints/chat/invocations", HI)
    assert response.status_code == 502
    assert response.json()["detail"] == (
        "The returned data type from the route service is not supported. "
        "Received content type: text/html; charset=utf-8"
    )


def test_an_unparseable_json_body_is_a_502(client: Any, upstream: HTTPServer) -> None:
    upstream.expect_request("/v1/chat/completions").respond_with_data("{not json", content_type="application/json")
    response = post_json(client, "/endpoints/chat/invocations", HI)
    assert response.status_code == 502
    assert "not valid JSON" in response.json()["detail"]


def test_an_upstream_timeout_is_a_504(client: Any, upstream: HTTPServer) -> None:
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(timeout=3)  # answers only after the gateway gave up (the server is single-threaded)
        return Response(orjson.dumps(payload("openai", "chat_response.json")), content_type="application/json")

    upstream.expect_request("/v1/chat/completions").respond_with_handler(slow)
    started = time.monotonic()
    response = post_json(client, "/endpoints/chat/invocations", HI)
    elapsed = time.monotonic() - started
    release.set()
    assert response.status_code == 504
    assert 0.45 < elapsed < 1.4
    assert "did not answer within 0.5 s" in response.json()["detail"]


def test_a_refused_connection_is_a_502(client: Any, make_endpoint: Any) -> None:
    make_endpoint(
        "dead",
        CHAT,
        "openai",
        "gpt-4o",
        {"openai_api_key": "k", "openai_api_base": f"http://127.0.0.1:{_free_port()}/v1"},
        timeouts={"retries": 0},
    )
    response = post_json(client, "/endpoints/dead/invocations", HI)
    assert response.status_code == 502
    assert "unreachable" in response.json()["detail"]
    v1 = post_json(client, "/v1/chat/completions", {**HI, "model": "dead"})
    assert v1.status_code == 502
    assert v1.json()["error"]["type"] == "api_connection_error"


def test_a_stream_error_before_the_first_byte_is_a_normal_http_error(client: Any, upstream: HTTPServer) -> None:
    upstream.expect_request("/v1/chat/completions").respond_with_json({"error": {"message": "quota"}}, status=429)
    response = post_json(client, "/endpoints/chat/invocations", {**HI, "stream": True})
    assert response.status_code == 429
    assert response.json() == {"detail": "quota"}


def test_a_stream_that_breaks_midway_ends_with_an_error_event(client: Any, make_endpoint: Any) -> None:
    event = (
        b"data: "
        + orjson.dumps(
            {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 1,
                "model": "gpt-4o",
                "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}],
            }
        )
        + b"\n\n"
    )

    def cut_off(conn: socket.socket) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
            + chunk(event)
            + chunk(event)
        )
        # ... and the connection closes without the terminating zero-length chunk.

    with raw_server(cut_off) as base:
        make_endpoint("chat", CHAT, "openai", "gpt-4o", {"openai_api_key": "k", "openai_api_base": f"{base}/v1"})
        response = post_json(client, "/endpoints/chat/invocations", {**HI, "stream": True})
        assert response.status_code == 200
        events = sse_events(response)
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == ["partial", "partial"]
    assert events[-1]["error"]["code"] == "upstream_unreachable"
    assert "broke" in events[-1]["error"]["message"]
    assert "[DONE]" not in events


# -- embeddings encoding ------------------------------------------------------------------------------------
def test_base64_embeddings_are_encoded_by_the_gateway_for_vendors_without_it(client: Any, make_endpoint: Any) -> None:
    import base64
    import struct

    make_endpoint("emb", EMBEDDINGS, "mock", "m", {"dimensions": 4})
    floats = post_json(client, "/v1/embeddings", {"model": "emb", "input": ["a"]}).json()["data"][0]["embedding"]
    encoded = post_json(client, "/v1/embeddings", {"model": "emb", "input": ["a"], "encoding_format": "base64"})
    text = encoded.json()["data"][0]["embedding"]
    assert isinstance(text, str)
    assert list(struct.unpack("<4f", base64.b64decode(text))) == pytest.approx(floats, abs=1e-6)


def test_encoding_format_is_not_sent_to_vendors_without_it(client: Any, make_endpoint: Any,
                                                           httpserver: HTTPServer) -> None:
    make_endpoint("cohere-emb", EMBEDDINGS, "cohere", "embed-english-v3.0",
                  {"cohere_api_key": "k", "cohere_api_base": httpserver.url_for("/v1")})
    httpserver.expect_oneshot_request(
        "/v1/embed", json={"model": "embed-english-v3.0", "texts": ["a"]},
    ).respond_with_json({"id": "e1", "texts": ["a"], "embeddings": [[0.5, -0.25]], "meta": {}})
    response = post_json(client, "/v1/embeddings", {"model": "cohere-emb", "input": ["a"], "encoding_format": "base64"})
    assert response.status_code == 200, response.content
    httpserver.check_assertions()
    assert response.json()["data"][0]["embedding"] == "AAAAPwAAgL4="  # float32 0.5, -0.25


def test_a_stream_reaches_the_client_chunk_by_chunk_before_the_upstream_finishes(client: Any,
                                                                                make_endpoint: Any) -> None:
    def event(text: str) -> bytes:
        return b"data: " + orjson.dumps({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                         "choices": [{"index": 0, "delta": {"content": text},
                                                      "finish_reason": None}]}) + b"\n\n"

    release = threading.Event()

    def slow_upstream(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunk(event("first")))
        release.wait(timeout=5)  # the rest only once the client has shown it got the first chunk
        conn.sendall(chunk(event("second")) + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")

    with raw_server(slow_upstream) as base:
        make_endpoint("chat", CHAT, "openai", "gpt-4o", {"openai_api_key": "k", "openai_api_base": f"{base}/v1"})
        started = time.monotonic()
        response = post_json(client, "/endpoints/chat/invocations", {**HI, "stream": True})
        events = iter(response.streaming_content)
        first = next(events)
        assert time.monotonic() - started < 2.5  # not after the upstream's 5 s hold: nothing was buffered
        assert b'"content":"first"' in first
        release.set()
        rest = b"".join(events)
    assert b'"content":"second"' in rest
    assert rest.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        ("/endpoints/chat/invocations", {"messages": [{"role": "user", "content": "x" * 2000}]},
         {"detail": "The request body is larger than 1000 bytes (GATEWAY_MAX_REQUEST_BYTES)."}),
        ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "x" * 2000}]},
         {"error": {"message": "The request body is larger than 1000 bytes (GATEWAY_MAX_REQUEST_BYTES).",
                    "type": "invalid_request_error", "param": None, "code": "request_too_large"}}),
    ],
)
def test_a_body_over_the_size_limit_is_a_413_in_the_routes_error_shape(
        client: Any, mock_endpoints: None, settings: Any, path: str, body: Any, expected: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = post_json(client, path, body)
    assert response.status_code == 413
    assert response.json() == expected
    assert post_json(client, "/endpoints/chat/invocations", HI).status_code == 200
