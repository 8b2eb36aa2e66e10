"""Issue 15, item 1: an upstream that quotes our API key back (OpenAI's "Incorrect API key provided",
a proxy echoing our request headers, a stream's error event) never gets it to a client or a log, on the
MLflow routes, on /v1 (with the real `openai` SDK) and in streams. Reproduced against a local upstream
that plays those answers with the key it was sent."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import openai
import orjson
import pytest

from providers.shapes import CHAT
from serving.redaction import REDACTED, scrub_text
from tests.conftest import MakeEndpoint, post_json, sse_events

pytestmark = pytest.mark.django_db

KEY = "sk-proj-Zq4Kx0rT8vLmN2pQ7wYbC5dE1fGhJ9aS3uV6iO0kM"
HI = {"messages": [{"role": "user", "content": "Hi"}]}
Answer = Callable[[BaseHTTPRequestHandler, str], None]


def masked(key: str) -> str:
    """The key as OpenAI prints it in its 401: a visible prefix and suffix around stars."""
    return f"{key[:8]}{'*' * (len(key) - 12)}{key[-4:]}"


def json_answer(handler: BaseHTTPRequestHandler, status: int, body: Any,
                content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def openai_401(handler: BaseHTTPRequestHandler, key: str) -> None:
    json_answer(handler, 401, {"error": {"message": f"Incorrect API key provided: {masked(key)}. You can find your "
                                                    "API key at https://platform.openai.com/account/api-keys.",
                                         "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})


def whole_key_500(handler: BaseHTTPRequestHandler, key: str) -> None:
    json_answer(handler, 500, {"error": {"message": f"internal error while checking key {key}"}})


def echo_headers_502(handler: BaseHTTPRequestHandler, key: str) -> None:
    """A broken proxy that echoes the request it got (our Authorization header included) as plain text."""
    json_answer(handler, 502, f"bad gateway; request was:\n{handler.requestline}\n{handler.headers}".encode(),
                "text/plain")


def nested_echo_400(handler: BaseHTTPRequestHandler, key: str) -> None:
    """An error body that is not `error.message`: MLflow passes the whole JSON on, so the key inside must go."""
    json_answer(handler, 400, {"detail": {"request": {"headers": dict(handler.headers.items())}}, "partial": key[5:30]})


def stream_error_event(handler: BaseHTTPRequestHandler, key: str) -> None:
    """One chunk, then OpenAI's mid-stream error event quoting the key."""
    first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]}
    error = {"error": {"message": f"key {masked(key)} was revoked mid-stream ({key})", "type": "server_error"}}
    data = b"data: " + orjson.dumps(first) + b"\n\ndata: " + orjson.dumps(error) + b"\n\ndata: [DONE]\n\n"
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class EchoingUpstream:
    """Answers every POST with `answer(handler, key)`, where the key is the Bearer token it was sent."""

    def __init__(self) -> None:
        self.answer: Answer = openai_401
        self.authorizations: list[str] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                authorization = self.headers.get("Authorization", "")
                upstream.authorizations.append(authorization)
                upstream.answer(self, authorization.removeprefix("Bearer "))

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream() -> Iterator[EchoingUpstream]:
    server = EchoingUpstream()
    yield server
    server.close()


@pytest.fixture
def chat(make_endpoint: MakeEndpoint, upstream: EchoingUpstream, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("HARDENING_OPENAI_KEY", KEY)
    make_endpoint("chat", CHAT, "openai", "gpt-4o-mini",
                  {"openai_api_key": "$HARDENING_OPENAI_KEY", "openai_api_base": upstream.base_url},
                  timeouts={"retries": 0})
    return "chat"


def assert_no_key(text: str) -> None:
    assert KEY not in text
    assert KEY[:8] + "*" not in text and KEY[-4:] not in text
    for start in range(len(KEY) - 11):
        assert KEY[start:start + 12] not in text, f"a piece of the key leaked: {text!r}"


@pytest.mark.parametrize("answer,status", [(openai_401, 401), (whole_key_500, 500), (echo_headers_502, 502),
                                           (nested_echo_400, 400)])
def test_an_upstream_quoting_the_key_never_gets_it_to_the_client_or_the_log_on_mlflow_routes(
        client: Any, chat: str, upstream: EchoingUpstream, caplog: pytest.LogCaptureFixture,
        answer: Answer, status: int) -> None:
    upstream.answer = answer
    with caplog.at_level(logging.DEBUG):
        response = post_json(client, f"/endpoints/{chat}/invocations", HI)
    assert upstream.authorizations == [f"Bearer {KEY}"]  # the upstream did get (and quote) the real key
    assert response.status_code == status
    assert_no_key(response.content.decode())
    assert REDACTED in response.content.decode()
    assert_no_key(caplog.text)


@pytest.mark.django_db(transaction=True)
def test_the_openai_sdk_on_v1_sees_the_upstream_s_401_without_the_key(
        live_server: Any, chat: str, upstream: EchoingUpstream, caplog: pytest.LogCaptureFixture) -> None:
    sdk = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as raised:
        sdk.chat.completions.create(model=chat, messages=[{"role": "user", "content": "Hi"}])
    assert "Incorrect API key provided: [redacted]. You can find your API key" in raised.value.message
    assert_no_key(str(raised.value.body))
    assert_no_key(caplog.text)


def test_a_stream_s_error_event_quoting_the_key_ends_the_stream_scrubbed(
        client: Any, chat: str, upstream: EchoingUpstream, caplog: pytest.LogCaptureFixture) -> None:
    upstream.answer = stream_error_event
    with caplog.at_level(logging.DEBUG):
        response = post_json(client, "/v1/chat/completions", {**HI, "model": chat, "stream": True})
        events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[-1]["error"]["code"] == "upstream_error"
    assert events[-1]["error"]["message"] == f"key {REDACTED} was revoked mid-stream ({REDACTED})"
    assert "[DONE]" not in events
    assert_no_key(caplog.text)


def test_an_upstream_error_without_secrets_passes_through_unchanged(client: Any, chat: str,
                                                                    upstream: EchoingUpstream) -> None:
    upstream.answer = lambda handler, key: json_answer(handler, 400, {"error": {"message": "Invalid 'messages'."}})
    response = post_json(client, f"/endpoints/{chat}/invocations", HI)
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid 'messages'."}


@pytest.mark.parametrize("text,expected", [
    (f"Incorrect API key provided: {masked(KEY)}.", f"Incorrect API key provided: {REDACTED}."),
    (f"sk-proj-****{KEY[-4:]} and sk-****", f"{REDACTED} and {REDACTED}"),
    (f"authorization: Bearer {KEY}\nx-other: 1", f"authorization: Bearer {REDACTED}\nx-other: 1"),
    (f"a piece {KEY[10:22]} of it", f"a piece {REDACTED} of it"),
    ("no secret **** here, nor in ab***", "no secret **** here, nor in ab***"),
])
def test_scrubbing_removes_the_key_its_pieces_and_its_masked_forms(text: str, expected: str) -> None:
    assert scrub_text(text, [KEY]) == expected


def test_secrets_shorter_than_four_characters_are_left_alone() -> None:
    assert scrub_text("abc and the rest", ["abc"]) == "abc and the rest"


def test_a_word_a_short_key_shares_with_the_message_is_not_redacted() -> None:
    assert scrub_text("Invalid model: mistral-nope", ["mistral-test-key"]) == "Invalid model: mistral-nope"
    assert scrub_text("key mistral-test-key, piece istral-test-k", ["mistral-test-key"]) == \
        f"key {REDACTED}, piece {REDACTED}"
