"""The HTTP seam against a slow or failing local upstream: what is retried (connection failures,
503/429 with Retry-After), what is not (500, a POST whose connection dropped mid-response), and
that timeouts bound the whole call. Requests go through the Django test client to an `openai`
endpoint pointed at a small threaded server that plays a script of answers."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest

from providers.shapes import CHAT
from serving.upstream import get_transport
from tests.conftest import MakeEndpoint, post_json
from tests.fixtures import payload

pytestmark = pytest.mark.django_db

Behaviour = Callable[[BaseHTTPRequestHandler], None]
CHAT_BODY = {"messages": [{"role": "user", "content": "Hi"}]}


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the gateway hanging up on a stalled answer is part of the test


class ScriptedUpstream:
    """Answers the n-th POST with the n-th behaviour (the last one repeats); counts the calls."""

    def __init__(self) -> None:
        self.script: list[Behaviour] = [ok]
        self.calls = 0
        self.release = threading.Event()  # lets stalled handlers finish at teardown
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    index = upstream.calls
                    upstream.calls += 1
                upstream.script[min(index, len(upstream.script) - 1)](self)

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def play(self, *behaviours: Behaviour) -> None:
        self.script = list(behaviours)
        self.calls = 0

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


def respond(status: int, body: Any, headers: dict[str, str] | None = None,
            content_type: str = "application/json") -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        data = orjson.dumps(body)
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(data)

    return behaviour


ok = respond(200, payload("openai", "chat_response.json"))


def stall(upstream_release: threading.Event, seconds: float = 5.0) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        upstream_release.wait(seconds)
        ok(handler)

    return behaviour


def stall_after_headers(upstream_release: threading.Event, seconds: float = 5.0) -> Behaviour:
    def behaviour(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.end_headers()
        handler.wfile.flush()
        upstream_release.wait(seconds)

    return behaviour


def drop_mid_response(handler: BaseHTTPRequestHandler) -> None:
    """Promise 1000 bytes, send a few, and close the connection."""
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"id\": ")
    handler.wfile.flush()
    handler.connection.shutdown(socket.SHUT_RDWR)
    handler.close_connection = True


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def upstream() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


@pytest.fixture
def endpoint(make_endpoint: MakeEndpoint, upstream: ScriptedUpstream) -> Callable[..., str]:
    """An OpenAI chat endpoint on the scripted upstream, with the given `timeouts:`."""

    def make(name: str = "chat", base_url: str | None = None, **timeouts: Any) -> str:
        make_endpoint(name, CHAT, "openai", "gpt-4o-mini",
                      {"openai_api_key": "sk-test", "openai_api_base": base_url or upstream.base_url},
                      timeouts=timeouts or None)
        return f"/endpoints/{name}/invocations"

    return make


def timed(client: Any, path: str, body: dict[str, Any] = CHAT_BODY) -> tuple[Any, float]:
    start = time.monotonic()
    response = post_json(client, path, body)
    return response, time.monotonic() - start


@pytest.fixture
def connection_attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the seam sends (connection attempts included), by URL."""
    transport = get_transport()
    attempts: list[str] = []
    real = transport._attempt

    def counting(request: Any, *args: Any, **kwargs: Any) -> Any:
        attempts.append(request.url)
        return real(request, *args, **kwargs)

    monkeypatch.setattr(transport, "_attempt", counting)
    return attempts


# -- failures before any byte: retried, within bounds -------------------------------------------------
def test_a_refused_connection_is_retried_then_answers_502(client: Any, endpoint: Callable[..., str],
                                                           connection_attempts: list[str]) -> None:
    path = endpoint(base_url=f"http://127.0.0.1:{closed_port()}/v1", retries=2)
    response, seconds = timed(client, path)
    assert response.status_code == 502
    assert "unreachable" in response.json()["detail"]
    assert len(connection_attempts) == 3  # the first try and two retries
    assert seconds < 2.0  # backoff 0.1-0.2 s, then 0.2-0.4 s


def test_a_503_with_retry_after_is_retried_and_succeeds(client: Any, endpoint: Callable[..., str],
                                                        upstream: ScriptedUpstream) -> None:
    upstream.play(respond(503, {"error": {"message": "overloaded"}}, {"Retry-After": "1"}), ok)
    response, seconds = timed(client, endpoint())
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert upstream.calls == 2
    assert 1.0 <= seconds < 3.0  # it waited as long as the upstream asked


def test_a_429_with_retry_after_is_retried_and_succeeds(client: Any, endpoint: Callable[..., str],
                                                        upstream: ScriptedUpstream) -> None:
    upstream.play(respond(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}), ok)
    response, _ = timed(client, endpoint())
    assert response.status_code == 200
    assert upstream.calls == 2


def test_retries_stop_after_the_configured_count_and_pass_the_last_answer_on(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    upstream.play(respond(503, {"error": {"message": "still overloaded"}}, {"Retry-After": "0"}))
    response, _ = timed(client, endpoint(retries=1))
    assert response.status_code == 503
    assert response.json()["detail"] == "still overloaded"
    assert upstream.calls == 2


def test_a_retry_after_beyond_the_timeout_is_not_waited_for(client: Any, endpoint: Callable[..., str],
                                                            upstream: ScriptedUpstream) -> None:
    upstream.play(respond(503, {"error": {"message": "come back later"}}, {"Retry-After": "20"}), ok)
    response, seconds = timed(client, endpoint(connect=1, read=1))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "20"
    assert upstream.calls == 1
    assert seconds < 1.0


def test_the_whole_call_with_retries_is_bounded_by_the_timeout(client: Any, endpoint: Callable[..., str],
                                                               upstream: ScriptedUpstream) -> None:
    upstream.play(respond(502, {"error": {"message": "bad gateway"}}))
    response, seconds = timed(client, endpoint(connect=0.5, read=0.5, retries=10))
    assert response.status_code == 502
    assert seconds < 1.0
    assert 1 < upstream.calls < 11  # retried with growing backoff, but not ten times within 0.5 s


def test_timeouts_total_bounds_retries_and_their_backoff_whatever_the_read_timeout(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    """A client's patience is the endpoint's `timeouts.total`: retries and Retry-After waits stop within it."""
    upstream.play(respond(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0.3"}))
    response, seconds = timed(client, endpoint(read=30, total=1.0, retries=10))
    assert response.status_code == 503
    assert seconds < 1.5
    assert 2 <= upstream.calls <= 5  # every 0.3 s within the second, then the upstream's own answer


def test_a_retry_cut_short_by_the_deadline_passes_on_the_upstream_s_last_answer(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    """The retry's own timeout is what is left of `timeouts.total`: when that runs out, the client gets the
    answer the upstream did give (503 here), not a 504 about the retry nobody asked for."""
    upstream.play(respond(503, {"error": {"message": "overloaded"}}, {"Retry-After": "0.2"}),
                  stall(upstream.release))
    response, seconds = timed(client, endpoint(read=30, total=1.0, retries=3))
    assert response.status_code == 503, response.content
    assert 0.9 < seconds < 1.5
    assert upstream.calls == 2


def test_retries_are_counted_in_the_usage_record(client: Any, endpoint: Callable[..., str],
                                                 upstream: ScriptedUpstream) -> None:
    from usage import ledger
    from usage.models import UsageRecord

    upstream.play(respond(503, {"error": {"message": "busy"}}, {"Retry-After": "0"}),
                  respond(503, {"error": {"message": "busy"}}, {"Retry-After": "0"}), ok)
    response, _ = timed(client, endpoint(retries=3))
    assert response.status_code == 200
    ledger.get().flush()
    assert UsageRecord.objects.get().retries == 2


# -- not retried --------------------------------------------------------------------------------------
def test_a_500_is_passed_on_without_a_retry(client: Any, endpoint: Callable[..., str],
                                            upstream: ScriptedUpstream) -> None:
    upstream.play(respond(500, {"error": {"message": "boom"}}), ok)
    response, _ = timed(client, endpoint())
    assert response.status_code == 500
    assert response.json() == {"detail": "boom"}
    assert upstream.calls == 1


def test_a_post_whose_connection_dropped_mid_response_is_not_repeated(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    upstream.play(drop_mid_response, ok)
    response, _ = timed(client, endpoint())
    assert response.status_code == 502
    assert upstream.calls == 1  # the upstream may have acted on it: sending it again is not safe


# -- timeouts -------------------------------------------------------------------------------------------
def test_an_upstream_slower_than_the_read_timeout_answers_504_quickly(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    upstream.play(stall(upstream.release))
    response, seconds = timed(client, endpoint(read=0.5))
    assert response.status_code == 504
    assert "did not answer within 0.5 s" in response.json()["detail"]
    assert seconds < 1.5
    assert upstream.calls == 1  # a read timeout is not retried: the upstream may be working on it


def test_a_stream_that_goes_idle_before_its_first_chunk_answers_504(
        client: Any, endpoint: Callable[..., str], upstream: ScriptedUpstream) -> None:
    upstream.play(stall_after_headers(upstream.release))
    response, seconds = timed(client, endpoint(read=0.5), {**CHAT_BODY, "stream": True})
    assert response.status_code == 504
    assert seconds < 1.5


def test_the_openai_routes_map_the_same_failures(client: Any, endpoint: Callable[..., str],
                                                 upstream: ScriptedUpstream) -> None:
    upstream.play(stall(upstream.release))
    endpoint(read=0.5)
    response, seconds = timed(client, "/v1/chat/completions", {**CHAT_BODY, "model": "chat"})
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "timeout"
    assert seconds < 1.5
