"""Issue 15, items 4, 7 and 11 (upstream parts), each against a local raw-socket upstream that misbehaves:

- item 4: `read` bounds a whole non-stream answer (an upstream dripping a byte at a time no longer holds a
  call past it); for a stream it is the idle gap, so a slow but steady stream is served to its end;
- item 7: an upstream's `data: {"error": ...}` event mid-stream ends our stream with our error event,
  on the MLflow routes and on /v1, never as an empty chunk and [DONE];
- item 11: an answer over GATEWAY_MAX_UPSTREAM_BYTES, an event over GATEWAY_MAX_UPSTREAM_EVENT_BYTES and
  a stream that is not UTF-8 are 502 bad_upstream_response (or the stream's error event), never a 500
  nor a worker's memory.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from providers.shapes import CHAT
from serving.upstream import reset_transport
from tests.conftest import MakeEndpoint, post_json, sse_events
from tests.rawserver import chunk, raw_server

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "Hi"}]}
ANSWER = orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"},
                                    "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def event(content: str | None = None, **extra: Any) -> bytes:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}, "finish_reason": None}]
    body = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-mini",
            "choices": choices, **extra}
    return b"data: " + orjson.dumps(body) + b"\n\n"


def sse_head(conn: socket.socket) -> None:
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")


def stream_of(*pieces: bytes, gap: float = 0.0) -> Callable[[socket.socket], None]:
    def behaviour(conn: socket.socket) -> None:
        sse_head(conn)
        for piece in pieces:
            conn.sendall(chunk(piece))
            time.sleep(gap)
        conn.sendall(b"0\r\n\r\n")

    return behaviour


def drip(conn: socket.socket) -> None:
    """The head, then the body a byte every 0.3 s: each read comes in well within any per-read timeout."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(ANSWER)}\r\n\r\n".encode())
    for byte in ANSWER:
        conn.sendall(bytes([byte]))
        time.sleep(0.3)


@pytest.fixture
def endpoint(make_endpoint: MakeEndpoint) -> Callable[..., str]:
    def make(base_url: str, **timeouts: Any) -> str:
        make_endpoint("chat", CHAT, "openai", "gpt-4o-mini",
                      {"openai_api_key": "sk-test-key-123456", "openai_api_base": f"{base_url}/v1"},
                      timeouts={"retries": 0, **timeouts})
        return "/endpoints/chat/invocations"

    return make


@pytest.fixture
def small_limits(settings: Any) -> Iterator[None]:
    settings.GATEWAY_MAX_UPSTREAM_BYTES = 4096
    settings.GATEWAY_MAX_UPSTREAM_EVENT_BYTES = 2048
    reset_transport()
    yield
    reset_transport()


# -- item 4: read timeouts ---------------------------------------------------------------------------------
def test_a_dripping_upstream_is_cut_at_the_read_timeout_for_the_whole_answer(client: Any,
                                                                               endpoint: Callable[..., str]) -> None:
    with raw_server(drip) as url:
        path = endpoint(url, read=1, total=30)
        started = time.monotonic()
        response = post_json(client, path, HI)
        seconds = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["detail"] == f"The upstream at {url} did not answer within 1 s."
    assert 0.9 < seconds < 2.0  # before: a byte each 0.3 s renewed the timeout, for len(ANSWER) * 0.3 s


def test_a_stream_slower_than_the_read_timeout_in_total_but_never_idle_for_it_is_served(
        client: Any, endpoint: Callable[..., str]) -> None:
    pieces = [event("a", ) for _ in range(6)] + [b"data: [DONE]\n\n"]
    with raw_server(stream_of(*pieces, gap=0.3)) as url:
        path = endpoint(url, read=1, total=30)
        response = post_json(client, path, {**HI, "stream": True})
        events = sse_events(response)
    assert response.status_code == 200
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["a"] * 6  # 1.8 s in all
    assert events[-1] == "[DONE]"


def test_a_stream_idle_for_longer_than_the_read_timeout_ends_with_a_timeout_event(
        client: Any, endpoint: Callable[..., str]) -> None:
    def stalls(conn: socket.socket) -> None:
        sse_head(conn)
        conn.sendall(chunk(event("a")))
        time.sleep(2.5)

    with raw_server(stalls) as url:
        response = post_json(client, endpoint(url, read=1), {**HI, "stream": True})
        events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "a"
    assert events[-1]["error"]["code"] == "upstream_timeout"


# -- item 7: an error event mid-stream ----------------------------------------------------------------------
OPENAI_STREAM_ERROR = b'data: {"error": {"message": "The server had an error while processing your request.", ' \
                      b'"type": "server_error", "param": null, "code": null}}\n\n'


def test_an_error_event_mid_stream_ends_the_mlflow_stream_with_our_error_event(
        client: Any, endpoint: Callable[..., str]) -> None:
    with raw_server(stream_of(event("Hel"), OPENAI_STREAM_ERROR, b"data: [DONE]\n\n")) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
        events = sse_events(response)
    assert response.status_code == 200
    assert events[0]["choices"][0]["delta"]["content"] == "Hel"
    assert events[1:] == [{"error": {"message": "The server had an error while processing your request.",
                                     "type": "api_error", "code": "upstream_error", "status": 502}}]


def test_an_error_event_mid_stream_ends_the_v1_stream_with_our_error_event_and_its_status(
        client: Any, endpoint: Callable[..., str]) -> None:
    gemini_style = b'data: {"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}\n\n'
    with raw_server(stream_of(event("Hel"), event("lo"), gemini_style)) as url:
        endpoint(url)
        response = post_json(client, "/v1/chat/completions", {**HI, "model": "chat", "stream": True})
        events = sse_events(response)
    assert [e["choices"][0]["delta"]["content"] for e in events[:2]] == ["Hel", "lo"]
    assert events[2:] == [{"error": {"message": "The model is overloaded.", "type": "api_error",
                                     "code": "upstream_error", "status": 503}}]


def test_an_error_event_before_any_chunk_is_an_http_error(client: Any, endpoint: Callable[..., str]) -> None:
    with raw_server(stream_of(OPENAI_STREAM_ERROR)) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
    assert response.status_code == 502
    assert response.json() == {"detail": "The server had an error while processing your request."}


# -- item 11: sizes and encodings ---------------------------------------------------------------------------
def test_an_answer_larger_than_the_limit_is_a_502(client: Any, endpoint: Callable[..., str],
                                                  small_limits: None) -> None:
    big = orjson.dumps({"padding": "x" * 10_000})

    def too_big(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for start in range(0, len(big), 1000):
            conn.sendall(chunk(big[start:start + 1000]))
        conn.sendall(b"0\r\n\r\n")

    with raw_server(too_big) as url:
        response = post_json(client, endpoint(url), HI)
    assert response.status_code == 502
    assert response.json()["detail"] == (f"The upstream at {url} answered with more than 4096 bytes "
                                         "(GATEWAY_MAX_UPSTREAM_BYTES).")


def test_an_error_answer_larger_than_the_limit_is_a_502_on_streams_too(client: Any, endpoint: Callable[..., str],
                                                                       small_limits: None) -> None:
    def too_big(conn: socket.socket) -> None:
        body = b"x" * 10_000
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    with raw_server(too_big) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
    assert response.status_code == 502
    assert "GATEWAY_MAX_UPSTREAM_BYTES" in response.json()["detail"]


def test_a_stream_event_larger_than_the_limit_ends_the_stream_with_an_error_event(
        client: Any, endpoint: Callable[..., str], small_limits: None) -> None:
    with raw_server(stream_of(event("ok"), event("x" * 5000), b"data: [DONE]\n\n")) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
        events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "ok"
    assert events[-1]["error"]["code"] == "bad_upstream_response"
    assert "GATEWAY_MAX_UPSTREAM_EVENT_BYTES" in events[-1]["error"]["message"]


def test_an_endless_line_without_a_newline_is_cut_at_the_event_limit(
        client: Any, endpoint: Callable[..., str], small_limits: None) -> None:
    with raw_server(stream_of(event("ok"), *[b"y" * 1000] * 5, gap=0.01)) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
        events = sse_events(response)
    assert events[-1]["error"]["code"] == "bad_upstream_response"


def test_invalid_utf8_in_a_stream_is_a_502_not_a_500(client: Any, endpoint: Callable[..., str]) -> None:
    with raw_server(stream_of(b"data: {\"choices\": [\xff\xfe]}\n\n")) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
    assert response.status_code == 502
    assert response.json() == {"detail": "The upstream stream sent bytes that are not UTF-8."}


def test_invalid_utf8_after_the_first_chunk_ends_the_stream_with_an_error_event(
        client: Any, endpoint: Callable[..., str]) -> None:
    with raw_server(stream_of(event("ok"), b"data: \xc3\x28\n\n")) as url:
        response = post_json(client, endpoint(url), {**HI, "stream": True})
        events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "ok"
    assert events[-1]["error"] == {"message": "The upstream stream sent bytes that are not UTF-8.",
                                   "type": "api_error", "code": "bad_upstream_response", "status": 502}
