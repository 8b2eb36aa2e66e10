"""A fast fake OpenAI upstream on 127.0.0.1, standard library only (raw asyncio protocol).

Routes (POST), each under an optional mode prefix:

    /v1/chat/completions      non-stream JSON, or SSE when the body has "stream": true
                              (exactly 20 content chunks, OpenAI's usage chunk with choices [], [DONE])
    /v1/embeddings            one 1536-float vector per input
    /delay/<ms>/v1/...        the same, answered <ms> milliseconds after the request (PreciseTimer)
    /spread/<s>/v1/...        streams spread over <s> seconds (chunk i at i*s/20, usage and [DONE] at s)
    GET /health               200 "ok"

Every response body is built once at start-up, so a request costs one small JSON parse and one
write. Keep-alive (HTTP/1.1), Content-Length or chunked request bodies, chunked SSE responses.

    python bench/fake_upstream.py --port 8901
"""
from __future__ import annotations

import argparse
import asyncio
import ctypes
import heapq
import itertools
import json
import os
import random
import resource
import signal
import sys
import time
from collections.abc import Callable

CONTENT_CHUNKS = 20
EMBEDDING_DIMENSIONS = 1536
MODEL = "gpt-4o-mini-2024-07-18"
CREATED = 1_760_000_000


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _response(status: str, content_type: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode() + body


CHAT_BODY = _json({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": CREATED, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the fake upstream. " * 4,
                                         "refusal": None}, "logprobs": None, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 28, "total_tokens": 40},
    "system_fingerprint": "fp_bench",
})
CHAT_RESPONSE = _response("200 OK", "application/json", CHAT_BODY)


def _chunk(index: int) -> bytes:
    delta: dict[str, object] = {"content": f"token{index} "}
    if index == 0:
        delta["role"] = "assistant"
    finish = "stop" if index == CONTENT_CHUNKS - 1 else None
    return _json({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                  "system_fingerprint": "fp_bench",
                  "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                  "usage": None})


USAGE_CHUNK = _json({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
                     "system_fingerprint": "fp_bench", "choices": [],
                     "usage": {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}})


def _http_chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _event(payload: bytes) -> bytes:
    return _http_chunk(b"data: " + payload + b"\n\n")


STREAM_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
               b"Transfer-Encoding: chunked\r\nCache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n")
STREAM_EVENTS = [_event(_chunk(i)) for i in range(CONTENT_CHUNKS)]
STREAM_TAIL = _event(USAGE_CHUNK) + _event(b"[DONE]") + b"0\r\n\r\n"
STREAM_RESPONSE = STREAM_HEAD + b"".join(STREAM_EVENTS) + STREAM_TAIL

_rng = random.Random(1536)
VECTOR = _json([round(_rng.uniform(-1, 1), 8) for _ in range(EMBEDDING_DIMENSIONS)])


def embeddings_response(count: int) -> bytes:
    items = b",".join(b'{"object":"embedding","index":%d,"embedding":%s}' % (i, VECTOR) for i in range(count))
    body = (b'{"object":"list","data":[' + items + b'],"model":"text-embedding-3-small",'
            b'"usage":{"prompt_tokens":8,"total_tokens":8}}')
    return _response("200 OK", "application/json", body)


EMBEDDINGS_RESPONSE = embeddings_response(1)
HEALTH_RESPONSE = _response("200 OK", "text/plain", b"ok")


def error_response(status: str, message: str) -> bytes:
    return _response(status, "application/json", _json({"error": {"message": message, "type": "bench_error"}}))


class PreciseTimer:
    """Calls a callback on the event loop at a deadline, to within tens of microseconds.

    asyncio's own call_later is late by up to a millisecond: epoll_wait takes whole milliseconds and
    the selector rounds the loop's timeout up. A "50 ms" upstream then answered after 50 to 51 ms, and
    answers due within the same millisecond all left together, in bursts that a real upstream's
    independent latencies do not make. Linux's timerfd has nanosecond resolution: one timer, armed for
    the earliest deadline, wakes the loop through its own epoll like any socket. Where there is no
    timerfd (not Linux), it falls back to call_later."""

    _TFD_NONBLOCK_CLOEXEC = 0o4000 | 0o2000000
    _TFD_TIMER_ABSTIME = 1

    class _Timespec(ctypes.Structure):
        _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]

    class _Itimerspec(ctypes.Structure):
        _fields_ = [("it_interval", ctypes.c_long * 2), ("it_value", ctypes.c_long * 2)]

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._armed_for: float | None = None
        self._fd = -1
        try:
            self._libc = ctypes.CDLL(None, use_errno=True)
            fd = self._libc.timerfd_create(time.CLOCK_MONOTONIC, self._TFD_NONBLOCK_CLOEXEC)
        except (OSError, AttributeError):
            fd = -1
        if fd >= 0:
            self._fd = fd
            loop.add_reader(fd, self._fire)

    def call_later(self, delay: float, callback: Callable[[], None]) -> None:
        if self._fd < 0:
            self._loop.call_later(delay, callback)
            return
        deadline = time.monotonic() + delay
        heapq.heappush(self._due, (deadline, next(self._order), callback))
        if self._armed_for is None or deadline < self._armed_for:
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        seconds = int(deadline)
        spec = self._Itimerspec()
        spec.it_value[0], spec.it_value[1] = seconds, max(1, int((deadline - seconds) * 1e9))
        if self._libc.timerfd_settime(self._fd, self._TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime failed")
        self._armed_for = deadline

    def _fire(self) -> None:
        try:
            os.read(self._fd, 8)
        except BlockingIOError:
            pass
        self._armed_for = None
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            heapq.heappop(self._due)[2]()
        if self._due:
            self._arm(self._due[0][0])


TIMER: PreciseTimer | None = None


class Stats:
    requests = 0
    open_connections = 0
    connections = 0
    peak_connections = 0


class UpstreamProtocol(asyncio.Protocol):
    """One connection: parse requests one at a time (clients do not pipeline), answer each."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False  # a delayed or spread response is in flight
        self.closed = False
        self.task: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        Stats.open_connections += 1
        Stats.connections += 1
        Stats.peak_connections = max(Stats.peak_connections, Stats.open_connections)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        Stats.open_connections -= 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self.process()

    def process(self) -> None:
        while not self.busy and not self.closed:
            request = self.parse_one()
            if request is None:
                return
            self.handle(*request)

    def parse_one(self) -> tuple[str, str, dict[str, str], bytes] | None:
        buffer = self.buffer
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
        try:
            method, target, _ = lines[0].split(" ", 2)
        except ValueError:
            self.fail("400 Bad Request", "bad request line")
            return None
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        start = end + 4
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = bytearray()
            position = start
            while True:
                line_end = buffer.find(b"\r\n", position)
                if line_end < 0:
                    return None
                size = int(bytes(buffer[position:line_end]).split(b";")[0], 16)
                if len(buffer) < line_end + 2 + size + 2:
                    return None
                body += buffer[line_end + 2:line_end + 2 + size]
                position = line_end + 2 + size + 2
                if size == 0:
                    break
            del buffer[:position]
            return method, target, headers, bytes(body)
        length = int(headers.get("content-length") or 0)
        if len(buffer) < start + length:
            return None
        body = bytes(buffer[start:start + length])
        del buffer[:start + length]
        return method, target, headers, body

    def fail(self, status: str, message: str) -> None:
        assert self.transport is not None
        self.transport.write(error_response(status, message))
        self.transport.close()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> None:
        assert self.transport is not None
        Stats.requests += 1
        close = headers.get("connection", "").lower() == "close"
        path = target.split("?", 1)[0]
        delay = 0.0
        spread = 0.0
        if path.startswith("/delay/"):
            _, _, value, path = path.split("/", 3)
            delay = float(value) / 1000.0
            path = "/" + path
        elif path.startswith("/spread/"):
            _, _, value, path = path.split("/", 3)
            spread = float(value)
            path = "/" + path
        if method == "GET" and path in ("/health", "/v1/health"):
            self.send(HEALTH_RESPONSE, close)
            return
        if method != "POST":
            self.send(error_response("405 Method Not Allowed", "POST only"), close)
            return
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            self.send(error_response("400 Bad Request", "body is not JSON"), close)
            return
        if path.endswith("/chat/completions"):
            if payload.get("stream"):
                if spread > 0:
                    self.busy = True
                    self.task = asyncio.ensure_future(self.spread_stream(spread, close))  # keep a reference
                    return
                response = STREAM_RESPONSE
            else:
                response = CHAT_RESPONSE
        elif path.endswith("/embeddings"):
            inputs = payload.get("input")
            count = len(inputs) if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else 1
            response = EMBEDDINGS_RESPONSE if count == 1 else embeddings_response(count)
        else:
            response = error_response("404 Not Found", f"no route {path}")
        if delay > 0:
            self.busy = True
            assert TIMER is not None
            TIMER.call_later(delay, lambda: self.send_later(response, close))
            return
        self.send(response, close)

    def send(self, response: bytes, close: bool) -> None:
        assert self.transport is not None
        if self.closed:
            return
        self.transport.write(response)
        if close:
            self.transport.close()

    def send_later(self, response: bytes, close: bool) -> None:
        self.busy = False
        self.send(response, close)
        self.process()

    async def spread_stream(self, seconds: float, close: bool) -> None:
        assert self.transport is not None
        step = seconds / CONTENT_CHUNKS
        started = time.monotonic()
        try:
            self.transport.write(STREAM_HEAD)
            for index, event in enumerate(STREAM_EVENTS):
                wait = started + index * step - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.closed:
                    return
                self.transport.write(event)
            wait = started + seconds - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            if not self.closed:
                self.transport.write(STREAM_TAIL)
                if close:
                    self.transport.close()
        finally:
            self.busy = False
        self.process()


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def serve(host: str, port: int, ready_file: str | None) -> None:
    global TIMER
    loop = asyncio.get_running_loop()
    TIMER = PreciseTimer(loop)
    server = await loop.create_server(UpstreamProtocol, host, port, backlog=4096, reuse_address=True)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ready_file:
        with open(ready_file, "w") as handle:
            handle.write(str(os.getpid()))
    print(f"fake upstream on http://{host}:{port} (pid {os.getpid()})", file=sys.stderr, flush=True)
    async with server:
        await stop.wait()
    print(f"fake upstream served {Stats.requests} requests on {Stats.connections} connections "
          f"(peak {Stats.peak_connections} open)",
          file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8901)
    parser.add_argument("--ready-file", help="write the pid here once listening")
    args = parser.parse_args()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the fake upstream only listens on loopback")
    raise_fd_limit()
    asyncio.run(serve(args.host, args.port, args.ready_file))


if __name__ == "__main__":
    main()
