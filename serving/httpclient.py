"""A lean asyncio HTTP/1.1 client for upstream LLM APIs, used only by the HTTP seam (`serving/upstream.py`).

Keep-alive connections are pooled per origin; each connection is one `asyncio.Protocol` parsing with
httptools and carrying one request at a time. The seam maps the three exceptions below to the gateway's
errors and decides about retries: this client retries nothing, except that a request sent on a reused
keep-alive connection the server had already closed (EOF or reset before any response byte) is sent again
once on a fresh connection, since the server never saw it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

_PAUSE_ABOVE = 256 * 1024  # buffered body bytes beyond which the socket stops being read until the consumer catches up
_COPY_BODY_UP_TO = 64 * 1024  # smaller bodies are appended to the head: one buffer, one send
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})  # the client sets these itself


class ConnectFailed(Exception):
    """No connection (DNS failure, refused, connect timeout, TLS handshake failure): the request was not sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ReadTimedOut(Exception):
    """No byte arrived within read_timeout, waiting for the response head or for more of the body."""


class ConnectionBroken(Exception):
    """The connection failed after the request may have been sent (reset, closed early, bad framing)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Target(NamedTuple):
    origin: str  # scheme://host:port, the pool key
    tls: bool
    host: str
    port: int
    path: str  # path?query, as sent on the request line
    host_header: str


def _parse_url(url: str) -> _Target:
    parts = urlsplit(url)
    default_port = _DEFAULT_PORTS.get(parts.scheme)
    host = parts.hostname
    if default_port is None or not host:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or default_port
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    bracketed = f"[{host}]" if ":" in host else host
    host_header = bracketed if port == default_port else f"{bracketed}:{port}"
    return _Target(f"{parts.scheme}://{bracketed}:{port}", parts.scheme == "https", host, port, path, host_header)


def _encode_head(method: str, target: _Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.host_header}\r\n"]
    identity = True
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FRAMING_HEADERS:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"line break in the {name!r} header")
        if lower == "accept-encoding":
            identity = False
        lines.append(f"{name}: {value}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    if identity:
        lines.append("Accept-Encoding: identity\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


class _Connection(asyncio.Protocol):
    """One connection: the parser's callbacks fill in the current response; the consumer waits on `wait()`."""

    transport: asyncio.Transport

    def __init__(self, pool: AsyncPool, origin: str, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.origin = origin
        self.loop = loop
        self.parser = HttpResponseParser(self)
        self.idle = False  # in the pool's idle list
        self.active = False  # carrying a request, from start() until the response is released or abandoned
        self.closed = False
        self.paused = False
        # The current exchange.
        self.head_only = False
        self.read_timeout = 0.0
        self.status = 0
        self.parsing_headers: dict[str, str] = {}
        self.headers: dict[str, str] = {}
        self.head_done = self.complete = self.keep_alive = self.bytes_seen = False
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # not TCP, or a loop whose socket wrapper refuses it (uvloop sets it already)

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self._fail(ConnectionBroken("unexpected data on an idle connection"))
            return
        self.bytes_seen = True
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._fail(ConnectionBroken(f"invalid response: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.idle:
            self.idle = False
            self.pool._forget(self)
        if not self.active or self.complete or self.error is not None:
            self._wake()
            return
        if exc is None and self.head_done and self._delimited_by_close():
            self.complete = True  # keep_alive stays False
        elif self.error is None:
            self.error = ConnectionBroken(str(exc) if exc else "connection closed before the full response")
        self._wake()

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            self.keep_alive = False  # bytes beyond the response: the connection can't be trusted for another
        self.parsing_headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers = self.parsing_headers
        headers[key] = f"{headers[key]}, {text}" if key in headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200 or self.complete:
            return  # an interim response (100 Continue), or bytes beyond the response
        self.status = status
        self.headers = self.parsing_headers
        self.head_done = True
        if self.head_only:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()
            # The parser can't know the request was HEAD and would wait for the body Content-Length announces.
            self.parser = HttpResponseParser(self)
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.complete:
            self.keep_alive = False
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > _PAUSE_ABOVE and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done and not self.complete:
            self.complete = True
            self.keep_alive = self.parser.should_keep_alive()
            self._wake()

    # The consumer's side

    def start(self, head_only: bool, read_timeout: float) -> None:
        self.active = True
        self.head_only = head_only
        self.read_timeout = read_timeout
        self.head_done = self.complete = self.keep_alive = self.bytes_seen = False
        self.error = ConnectionBroken("connection closed before the request was sent") if self.closed else None

    def wait(self) -> asyncio.Future[None]:
        """A future resolved on the next event (head, body, end, error); the connection fails after read_timeout."""
        self.waiter = waiter = self.loop.create_future()
        self.timer = self.loop.call_later(self.read_timeout, self._timed_out)
        return waiter

    async def progress(self) -> None:
        """Wait for the next event. On an error, or if the wait is cancelled, the connection is
        abandoned (never reused) and the error, or the cancellation, raised."""
        error = self.error
        if error is not None:
            self.abandon()
            raise error
        try:
            await self.wait()
        except asyncio.CancelledError:
            self.abandon()
            raise

    def take(self) -> bytes:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self.buffered = 0
        if self.paused:
            self.paused = False
            if not self.closed:
                self.transport.resume_reading()
        return body

    def release(self) -> None:
        self.active = False
        if self.closed:
            return
        if self.keep_alive:
            self.pool._put(self)
        else:
            self.closed = True
            self.transport.close()

    def abandon(self) -> None:
        self._fail(ConnectionBroken("the response was abandoned"))

    def _timed_out(self) -> None:
        self._fail(ReadTimedOut(f"no data from the server for {self.read_timeout:g} s"))

    def _fail(self, error: Exception) -> None:
        if self.error is None and not self.complete:
            self.error = error
        self.keep_alive = False
        if not self.closed:
            self.closed = True
            self.transport.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if self.timer is not None:
                self.timer.cancel()
            if not waiter.done():
                waiter.set_result(None)

    def _delimited_by_close(self) -> bool:
        headers = self.headers
        return "content-length" not in headers and "chunked" not in headers.get("transfer-encoding", "").lower()


class AsyncResponse:
    """A response whose status line and headers have arrived.

    Read it to the end (`read`, `next_chunk` until b"", `drain`) or `close` it: either returns its connection
    to the pool or closes it, exactly once. Header names are lower-cased; repeated headers are joined with ", ".
    """

    __slots__ = ("_conn", "_finished", "headers", "status")

    def __init__(self, conn: _Connection) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn: _Connection | None = conn
        self._finished = False
        if conn.complete and not conn.chunks:
            self._release()  # no body (HEAD, 204, 304, empty): reusable right away, even if never read

    async def read(self) -> bytes:
        """The whole body; read_timeout bounds each wait for more bytes."""
        parts: list[bytes] = []
        while not self._finished:
            chunk = await self.next_chunk()
            if not chunk:
                break
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def next_chunk(self) -> bytes:
        """All the body bytes received so far (at least one, waiting up to read_timeout), b"" at the end."""
        conn = self._conn
        if conn is None:
            if self._finished:
                return b""
            raise ConnectionBroken("the response was closed")
        while not conn.chunks:
            if conn.complete:
                self._release()
                return b""
            try:
                await conn.progress()
            except BaseException:
                self._conn = None  # abandoned
                raise
        body = conn.take()
        if conn.complete:
            self._release()
        return body

    async def drain(self) -> None:
        """Read and discard the rest of the body, so that the connection can be reused."""
        while await self.next_chunk():
            pass

    def close(self) -> None:
        """Abandon the response: its connection is closed, never reused. Idempotent."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.abandon()

    def _release(self) -> None:
        conn = self._conn
        if conn is not None:
            self._conn = None
            self._finished = True
            conn.release()


async def _exchange(conn: _Connection, head: bytes, body: bytes | None) -> AsyncResponse:
    """Send the request on a started connection and wait for the response head."""
    if conn.error is None:
        if body is None:
            conn.transport.write(head)
        elif len(body) <= _COPY_BODY_UP_TO:
            conn.transport.write(head + body)
        else:
            conn.transport.writelines((head, body))
    while not conn.head_done:
        await conn.progress()
    return AsyncResponse(conn)


class AsyncPool:
    """Keep-alive connections per origin (scheme://host:port), for one event loop.

    Not thread-safe: use it only from the event loop it was first used on. `maxsize` bounds the idle
    connections kept per origin, not the connections in use.
    """

    def __init__(self, *, maxsize: int = 64) -> None:
        self.maxsize = maxsize
        self._idle: dict[str, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> AsyncResponse:
        """Send the request and return once the response head has arrived.

        Raises ConnectFailed (not sent), ReadTimedOut (no head within read_timeout) or ConnectionBroken.
        Host, Content-Length (when body is not None) and, unless given, "Accept-Encoding: identity" are
        added; caller headers named Host, Content-Length or Transfer-Encoding are ignored.
        """
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 512:
                self._targets.clear()
            target = self._targets[url] = _parse_url(url)
        head = _encode_head(method, target, headers, body)
        head_only = method == "HEAD"
        conn = self._take_idle(target.origin)
        if conn is not None:
            conn.start(head_only, read_timeout)
            try:
                return await _exchange(conn, head, body)
            except ConnectionBroken:
                if conn.bytes_seen:
                    raise
                # The server had closed this keep-alive connection: it never saw the request.
        conn = await self._connect(target, connect_timeout)
        conn.start(head_only, read_timeout)
        return await _exchange(conn, head, body)

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.idle = False
                conn.closed = True
                conn.transport.close()
        self._idle.clear()

    async def _connect(self, target: _Target, connect_timeout: float) -> _Connection:
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if target.tls else None
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, target.origin, loop),
                    target.host,
                    target.port,
                    ssl=tls,
                    server_hostname=target.host if tls else None,
                )
        except TimeoutError as exc:  # before OSError: asyncio's timeout raises TimeoutError, an OSError
            raise ConnectFailed(f"timed out after {connect_timeout:g} s") from exc
        except ConnectionRefusedError as exc:
            raise ConnectFailed("Connection refused") from exc
        except OSError as exc:  # DNS (socket.gaierror), unreachable, TLS (ssl.SSLError)
            raise ConnectFailed(str(exc) or type(exc).__name__) from exc
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def _take_idle(self, origin: str) -> _Connection | None:
        idle = self._idle.get(origin)
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the server
            conn.idle = False
            if not conn.closed and not conn.transport.is_closing():
                return conn
        return None

    def _put(self, conn: _Connection) -> None:
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) < self.maxsize:
            conn.idle = True
            idle.append(conn)
        else:
            conn.closed = True
            conn.transport.close()

    def _forget(self, conn: _Connection) -> None:
        try:
            self._idle[conn.origin].remove(conn)
        except (KeyError, ValueError):
            pass
