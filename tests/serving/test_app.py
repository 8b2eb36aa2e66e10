"""The ASGI application every server runs: invocations and /health served by their views with what
Django's middleware would add (host check, SECURE_* settings), everything else by Django."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from providers.shapes import CHAT, EMBEDDINGS
from serving import runtime
from tests.asgi import ASGIClient, event_loop
from tests.conftest import parse_sse_text
from tests.rawserver import chunk, raw_server

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def endpoints(make_endpoint: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m", limit={"calls": 100, "renewal_period": "minute"})
    make_endpoint("emb", EMBEDDINGS, "mock", "e", {"dimensions": 3})


def _post(path: str, body: Any, **headers: str) -> Any:
    return ASGIClient(None).post(path, data=orjson.dumps(body), content_type="application/json", headers=headers)


def test_the_application_sends_each_event_as_its_own_message(endpoints: None) -> None:
    response = _post("/endpoints/chat/invocations", {**HI, "stream": True})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    events = parse_sse_text(response.content.decode())
    assert len(response.chunks) == len(events) > 2  # passed on one by one, not gathered
    assert "".join(e["choices"][0]["delta"]["content"] or "" for e in events[:-1]) == "Echo: hi"
    assert response["X-RateLimit-Limit"] == "100"


def test_the_application_checks_the_host_header(endpoints: None) -> None:
    response = _post("/endpoints/chat/invocations", HI, Host="evil.example")
    assert response.status_code == 400
    assert response.json() == {"detail": "Bad Request: the Host header is not allowed."}


def test_django_security_headers_are_set_on_invocations(endpoints: None) -> None:
    response = _post("/endpoints/chat/invocations", HI)
    assert response.status_code == 200
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "Strict-Transport-Security" not in response


def test_the_secure_settings_apply_to_invocations(endpoints: None, settings: Any, monkeypatch: pytest.MonkeyPatch
                                                  ) -> None:
    from serving import app

    monkeypatch.setattr(app, "_security", None)  # read the settings again
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    plain = _post("/endpoints/chat/invocations", HI)
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/endpoints/chat/invocations"
    secure = _post("/endpoints/chat/invocations", HI, **{"X-Forwarded-Proto": "https"})
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=3600"
    monkeypatch.setattr(app, "_security", None)


@pytest.mark.parametrize("path", ["/endpoints/chat/invocations", "/gateway/chat/invocations", "/v1/chat/completions",
                                  "/v1/embeddings"])
def test_another_method_on_an_invocation_route_is_a_json_405(endpoints: None, path: str) -> None:
    response = ASGIClient(None).get(path)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response["Content-Type"] == "application/json"


def test_other_requests_go_to_django(endpoints: None, client: Any) -> None:
    assert client.get("/health").json()["status"] == "OK"
    assert client.get("/api/2.0/endpoints/").json()["endpoints"][0]["name"] == "chat"
    assert client.get("/no/such/route").status_code == 404


def _endless_stream(upstream_saw_close: threading.Event) -> Any:
    """An upstream that sends one SSE event, then waits for the gateway to hang up."""

    def behaviour(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        first = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}, "finish_reason": None}]}
        conn.sendall(chunk(b"data: " + orjson.dumps(first) + b"\n\n"))
        conn.settimeout(10)
        if conn.recv(1) == b"":
            upstream_saw_close.set()

    return behaviour


STREAM_SCOPE = {"type": "http", "method": "POST", "path": "/endpoints/chat/invocations", "query_string": b"",
                "root_path": "", "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")]}


class _Client:
    """One client of the application: it sends a chat request, then leaves `leaves_after` seconds after it
    is next asked (receive); what it is sent is in `sent` (and "start" / "body" in `record`)."""

    def __init__(self, leaves_after: float, record: list[str] | None = None) -> None:
        self.leaves_after = leaves_after
        self.record = record if record is not None else []
        self.sent: list[Mapping[str, Any]] = []
        self.calls = 0

    async def receive(self) -> dict[str, Any]:
        self.calls += 1
        if self.calls == 1:
            return {"type": "http.request", "body": orjson.dumps(HI), "more_body": False}
        await asyncio.sleep(self.leaves_after)
        return {"type": "http.disconnect"}

    async def send(self, message: Mapping[str, Any]) -> None:
        self.record.append("start" if message["type"] == "http.response.start" else "body")
        self.sent.append(message)


@pytest.mark.parametrize("how", ["send fails", "receive says so"])
def test_a_client_that_goes_away_mid_stream_closes_the_upstream_stream(make_endpoint: Any, how: str) -> None:
    """Some servers raise from send() for a gone client; uvicorn's send() drops the data silently and
    only receive() returns http.disconnect. Either way the upstream connection must be closed."""
    upstream_saw_close = threading.Event()
    with raw_server(_endless_stream(upstream_saw_close)) as base:
        make_endpoint("chat", CHAT, "openai", "gpt", {"openai_api_key": "sk", "openai_api_base": f"{base}/v1"})
        runtime.load_table()
        from gateway_project.asgi import application

        sent: list[bytes] = []
        gone = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": orjson.dumps({**HI, "stream": True}), "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message["body"])
                if how == "send fails":
                    raise OSError("the client went away")
                gone.set()

        future = asyncio.run_coroutine_threadsafe(application(STREAM_SCOPE, receive, send), event_loop())
        if how == "send fails":
            with pytest.raises(OSError, match="went away"):
                future.result(timeout=10)
        else:
            future.result(timeout=10)  # ends quietly: nobody is left to tell
        assert b'"Hel"' in sent[0]
        assert upstream_saw_close.wait(5)


def _silent_upstream(upstream_saw_close: threading.Event) -> Any:
    """An upstream that reads the request and never answers, until the gateway hangs up."""

    def behaviour(conn: socket.socket) -> None:
        conn.settimeout(10)
        if conn.recv(1) == b"":
            upstream_saw_close.set()

    return behaviour


def test_a_client_that_goes_away_before_a_slow_answer_cancels_the_upstream_call(
    make_endpoint: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past WATCH_FOR_DISCONNECT_AFTER_SECONDS a waiting non-stream view listens for its client; when
    it leaves, the view is cancelled and the upstream connection closed. Nothing is sent."""
    from serving import app as fastpath

    monkeypatch.setattr(fastpath, "WATCH_FOR_DISCONNECT_AFTER_SECONDS", 0.05)
    upstream_saw_close = threading.Event()
    with raw_server(_silent_upstream(upstream_saw_close)) as base:
        make_endpoint("chat", CHAT, "openai", "gpt", {"openai_api_key": "sk", "openai_api_base": f"{base}/v1"})
        runtime.load_table()
        from gateway_project.asgi import application

        client = _Client(leaves_after=0.3)  # the client gives up
        sent = client.sent
        future = asyncio.run_coroutine_threadsafe(application(STREAM_SCOPE, client.receive, client.send),
                                                  event_loop())
        future.result(timeout=10)  # returns quietly, long before the upstream's read timeout
        assert upstream_saw_close.wait(5)
        assert sent == []


def test_a_quick_answer_never_listens_for_a_disconnect(endpoints: None) -> None:
    """Under WATCH_FOR_DISCONNECT_AFTER_SECONDS (the usual case) receive() is not called again after the
    body: no watcher task per request."""
    from gateway_project.asgi import application

    runtime.load_table()
    client = _Client(leaves_after=60)
    asyncio.run_coroutine_threadsafe(application(STREAM_SCOPE, client.receive, client.send),
                                     event_loop()).result(timeout=10)
    assert client.sent[0]["status"] == 200 and b'"choices"' in client.sent[1]["body"]
    assert client.calls == 1


def _run_chat(record: list[str], path: str = "/endpoints/chat/invocations") -> list[Mapping[str, Any]]:
    """One non-streamed chat through the application on the test loop; `record` gets "start", "body"."""
    from gateway_project.asgi import application

    runtime.load_table()
    client = _Client(leaves_after=60, record=record)

    async def call() -> None:
        await application({**STREAM_SCOPE, "path": path}, client.receive, client.send)
        await asyncio.sleep(0)  # the loop's next step

    asyncio.run_coroutine_threadsafe(call(), event_loop()).result(timeout=10)
    return client.sent


def test_a_call_is_accounted_for_after_its_answer_is_sent(endpoints: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ledger record, counts, metrics and access line of a whole answer are made once it is sent (at the
    loop's next step), with the latency of the answer, not of its sending."""
    import time

    from serving import invoke

    order: list[str] = []
    endings: list[float] = []
    finish = invoke.finish

    def recording_finish(*args: Any, **kwargs: Any) -> None:
        order.append("accounted")
        endings.append(kwargs["ended"])
        finish(*args, **kwargs)

    monkeypatch.setattr(invoke, "finish", recording_finish)
    before = time.perf_counter()
    sent = _run_chat(order)
    assert sent[0]["status"] == 200
    assert order == ["start", "body", "accounted"]
    assert before < endings[0] < time.perf_counter()
    order.clear()
    sent = _run_chat(order, "/endpoints/nowhere/invocations")  # an error answer too
    assert sent[0]["status"] == 404
    assert order == ["start", "body", "accounted"]


def test_accounting_that_fails_is_logged_and_the_answer_stands(endpoints: None, monkeypatch: pytest.MonkeyPatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from serving import invoke

    def broken_finish(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the ledger is gone")

    monkeypatch.setattr(invoke, "finish", broken_finish)
    sent = _run_chat([])
    assert sent[0]["status"] == 200 and b'"choices"' in sent[1]["body"]
    assert "accounting for an answer failed" in caplog.text and "the ledger is gone" in caplog.text
