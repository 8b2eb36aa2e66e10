"""Sending test requests through the ASGI application, as a start_server worker runs it.

`ASGIClient` looks like Django's test client (post/get, status_code, json(), headers, content,
streaming_content). Invocations and /health go through `gateway_project.asgi.application` on one
long-lived event loop in a background thread (uvloop, as a worker runs it), so upstream connections
are pooled across requests as in a worker. Other requests (the management API, the admin) go to
Django's test client: they are Django's own handling, not ours (tests that need the whole server use
the `live_server` fixture: the same application under uvicorn).

The table is built in the test's thread before each request: the test database lives in the
test's transaction, which only the test's own connection sees. A worker builds it in a helper
thread (runtime.current_table); tests/serving and tests/test_runtime.py cover that.
"""
from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.utils.datastructures import CaseInsensitiveMapping

from observability import reports
from serving import runtime
from serving.app import find_view

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def event_loop() -> asyncio.AbstractEventLoop:
    """The process's test event loop, running in a daemon thread."""
    global _loop
    with _loop_lock:
        if _loop is None:
            try:
                import uvloop

                loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            except ImportError:
                loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="asgi-test-loop", daemon=True).start()
            _loop = loop
    return _loop


class ASGIResponse:
    """The application's answer; its body messages can be read as they are sent (streams)."""

    def __init__(self, start: dict[str, Any], messages: queue.Queue[Any]) -> None:
        self.status_code: int = start["status"]
        self.headers = CaseInsensitiveMapping(
            {k.decode("latin-1"): v.decode("latin-1") for k, v in start.get("headers", [])}
        )
        self.streaming = self.headers.get("Content-Type", "").startswith("text/event-stream")
        self._messages = messages
        self._chunks: list[bytes] = []
        self._done = False

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def has_header(self, name: str) -> bool:
        return name in self.headers

    def _next_chunk(self) -> bytes | None:
        if self._done:
            return None
        message = self._messages.get(timeout=60)
        if isinstance(message, BaseException):
            raise message
        if not message.get("more_body"):
            self._done = True
        body: bytes = message.get("body", b"")
        if body:
            self._chunks.append(body)
        return body

    @property
    def chunks(self) -> list[bytes]:
        """Every body message's bytes, one item per message (the whole body is read first)."""
        while self._next_chunk() is not None:
            pass
        return self._chunks

    @property
    def content(self) -> bytes:
        return b"".join(self.chunks)

    @property
    def streaming_content(self) -> Iterator[bytes]:
        yield from self._chunks
        while (body := self._next_chunk()) is not None:
            if body:
                yield body

    def json(self) -> Any:
        return orjson.loads(self.content)


class ASGIClient:
    """Django's test client's interface, with fast-path requests served by the ASGI application."""

    def __init__(self, django_client: Any) -> None:
        from gateway_project.asgi import application

        self.application = application
        self.django_client = django_client

    def __getattr__(self, name: str) -> Any:
        return getattr(self.django_client, name)  # put, delete, login, ...: Django's

    def post(self, path: str, data: Any = None, content_type: str = "application/octet-stream",
             **extra: Any) -> Any:
        if find_view(urlsplit(path).path) is None:
            return self.django_client.post(path, data, content_type, **extra)
        if data is None or isinstance(data, dict | list):
            data = orjson.dumps(data or {})
        return self._send("POST", path, data.encode() if isinstance(data, str) else bytes(data), content_type,
                          **extra)

    def get(self, path: str, data: Any = None, **extra: Any) -> Any:
        if data is not None or find_view(urlsplit(path).path) is None:
            return self.django_client.get(path, data, **extra)
        return self._send("GET", path, b"", None, **extra)

    def _other(self, method: str, path: str, data: Any = b"", content_type: str = "application/octet-stream",
               **extra: Any) -> Any:
        if find_view(urlsplit(path).path) is None:
            return getattr(self.django_client, method.lower())(path, data, content_type, **extra)
        return self._send(method, path, data.encode() if isinstance(data, str) else bytes(data), content_type,
                          **extra)

    def put(self, path: str, data: Any = b"", content_type: str = "application/octet-stream", **extra: Any) -> Any:
        return self._other("PUT", path, data, content_type, **extra)

    def patch(self, path: str, data: Any = b"", content_type: str = "application/octet-stream", **extra: Any) -> Any:
        return self._other("PATCH", path, data, content_type, **extra)

    def delete(self, path: str, data: Any = b"", content_type: str = "application/octet-stream", **extra: Any) -> Any:
        return self._other("DELETE", path, data, content_type, **extra)

    def _send(self, method: str, path: str, body: bytes, content_type: str | None, **extra: Any) -> Any:
        url = urlsplit(path)
        headers = [(b"host", b"testserver"), (b"content-length", str(len(body)).encode())]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode()))
        for key, value in (extra.pop("headers", None) or {}).items():
            headers.append((key.lower().encode(), str(value).encode()))
        for key, value in extra.items():
            if key.startswith("HTTP_"):
                headers.append((key[5:].replace("_", "-").lower().encode(), str(value).encode()))
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
            "scheme": "http", "path": url.path, "raw_path": url.path.encode(),
            "query_string": url.query.encode(), "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
        }
        runtime.load_table()
        messages: queue.Queue[Any] = queue.Queue()
        asyncio.run_coroutine_threadsafe(self._call(scope, body, messages), event_loop())
        start = messages.get(timeout=60)
        if isinstance(start, BaseException):
            raise start
        return ASGIResponse(start, messages)

    async def _call(self, scope: dict[str, Any], body: bytes, messages: queue.Queue[Any]) -> None:
        """Run the application; its messages (or the exception it raised) go to `messages`."""
        sent = False
        finished = asyncio.Event()
        held: list[Mapping[str, Any]] = []  # a whole answer is handed over once the application is done

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: Mapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] == "http.response.body" and not message.get("more_body"):
                held.append(message)
                finished.set()
                return
            while held:  # a stream: its head and each chunk as they come
                messages.put(held.pop(0))
            messages.put(message)

        try:
            await self.application(scope, receive, send)
        except BaseException as exc:
            while held:
                messages.put(held.pop(0))
            messages.put(exc)
            raise
        # What a worker does a moment after the answer is in before the test reads on: the accounting of the
        # call (at the loop's next step, serving.app) and its metrics and access line (observability.reports).
        await asyncio.sleep(0)
        reports.flush()
        while held:
            messages.put(held.pop(0))
