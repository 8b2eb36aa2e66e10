"""A lean asyncio HTTP/1.1 client for upstream LLM APIs, used only by the HTTP seam (`serving/upstream.py`).

Keep-alive connections are pooled per origin; each connection is one `asyncio.Protocol` parsing with
httptools and carrying one request at a time. What the client does for real networks:

- Proxies from the environment, read once per pool: HTTP_PROXY / http_proxy for http:// upstreams (the
  request goes to the proxy with an absolute-form target), HTTPS_PROXY / https_proxy for https:// upstreams
  (a CONNECT tunnel, then TLS with the upstream over it), NO_PROXY / no_proxy honoured (hosts, host:port,
  domains, `*`). Credentials in a proxy URL become a Proxy-Authorization header; messages name a proxy by
  host:port only. Proxied and direct connections never share a pool key.
- TLS verified against the system store (SSL_CERT_FILE honoured), or against `ca_bundle` instead.
- `Accept-Encoding: gzip, deflate` unless the caller sends its own; gzip and deflate (zlib or raw) bodies
  are decoded as they arrive, chunk by chunk; any other Content-Encoding is an InvalidResponse.

The resend rule: this client never sends a request twice. A request written on a reused keep-alive
connection that then fails is reported (ConnectionBroken), because the server may have acted on it. Stale
connections are avoided instead: an idle connection is never handed out once its transport is closing or
has seen EOF, nor once it has been idle for its limit (the server's `Keep-Alive: timeout=N` less one second
when announced, never more than the pool's `idle_seconds`).

The seam maps the exceptions below to the gateway's errors and decides about retries.
"""

from __future__ import annotations

import asyncio
import base64
import http
import socket
import ssl
import time
import urllib.request
import zlib
from collections.abc import Mapping
from typing import NamedTuple, cast
from urllib.parse import unquote, urlsplit

from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

_PAUSE_ABOVE = 256 * 1024  # buffered body bytes beyond which the socket stops being read until the consumer catches up
_COPY_BODY_UP_TO = 64 * 1024  # smaller bodies are appended to the head: one buffer, one send
_DEFAULT_PORTS = {"http": 80, "https": 443}
_FRAMING_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})  # the client sets these itself
_ACCEPT_ENCODING = "Accept-Encoding: gzip, deflate\r\n"


class ConnectFailed(Exception):
    """No connection (DNS failure, refused, connect timeout, a proxy refusing): the request was not sent."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TLSFailed(ConnectFailed):
    """The TLS handshake with the upstream failed (certificate verification, a refused handshake): not sent,
    and not transient."""


class ReadTimedOut(Exception):
    """No byte arrived within read_timeout, waiting for the response head or for more of the body."""


class ConnectionBroken(Exception):
    """The connection failed after the request may have been sent (reset, closed early)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidResponse(ConnectionBroken):
    """The upstream's answer is not valid HTTP, or its body cannot be decoded (an unknown Content-Encoding,
    a corrupt gzip stream)."""


class ResponseTooLarge(InvalidResponse):
    """The body is larger than the reader's limit; the connection is closed, never reused."""


class _Proxy(NamedTuple):
    host: str
    port: int
    label: str  # host:port: the only way a message names the proxy (its URL may carry credentials)
    authorization: str  # a "Proxy-Authorization: Basic ...\r\n" header line, or ""


class _Target(NamedTuple):
    key: str  # the pool key: the origin, and the proxy when there is one
    origin: str  # scheme://host:port
    tls: bool
    host: str
    port: int
    path: str  # path?query
    host_header: str
    request_target: str  # as sent on the request line: the path, or the absolute URL for a forwarding proxy
    proxy: _Proxy | None = None
    proxy_header: str = ""  # Proxy-Authorization on each request sent to a forwarding proxy


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
    origin = f"{parts.scheme}://{bracketed}:{port}"
    return _Target(origin, origin, parts.scheme == "https", host, port, path, host_header, path)


def _parse_proxy(url: str, scheme: str) -> _Proxy:
    """A proxy URL from the environment (`host:port` alone means http://). Errors never quote the URL."""
    if "://" not in url:
        url = f"http://{url}"
    parts = urlsplit(url)
    try:
        port = parts.port or 80
    except ValueError:
        port = 0
    if parts.scheme != "http" or not parts.hostname or not port:
        raise ValueError(f"the {scheme} proxy set in the environment is not an http://host:port URL")
    host = parts.hostname
    label = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    authorization = ""
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
        authorization = f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode('ascii')}\r\n"
    return _Proxy(host, port, label, authorization)


def _bypasses_proxy(host: str, port: int, no_proxy: str) -> bool:
    """Whether NO_PROXY exempts host:port: `*`, or a comma-separated list of hosts, IP addresses and domains
    (`example.com` and `.example.com` both cover the domain and its subdomains), each optionally with :port."""
    host = host.lower()
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if entry == "*":
            return True
        entry_port = ""
        if entry.startswith("["):  # [IPv6] or [IPv6]:port
            entry, _, rest = entry[1:].partition("]")
            entry_port = rest[1:] if rest.startswith(":") else ""
        elif entry.count(":") == 1:  # name:port (a bare IPv6 address has several colons)
            entry, _, entry_port = entry.partition(":")
        entry = entry.lstrip(".")
        if not entry or (entry_port and entry_port != str(port)):
            continue
        if host == entry or host.endswith(f".{entry}"):
            return True
    return False


def _encode_head(method: str, target: _Target, headers: Mapping[str, str], body: bytes | None) -> bytes:
    lines = [f"{method} {target.request_target} HTTP/1.1\r\nHost: {target.host_header}\r\n{target.proxy_header}"]
    accept_encoding = True
    for name, value in headers.items():
        lower = name.lower()
        if lower in _FRAMING_HEADERS:
            continue
        if "\n" in value or "\r" in value or "\n" in name or "\r" in name:
            raise ValueError(f"line break in the {name!r} header")
        if lower == "accept-encoding":
            accept_encoding = False
        lines.append(f"{name}: {value}\r\n")
    if body is not None:
        lines.append(f"Content-Length: {len(body)}\r\n")
    if accept_encoding:
        lines.append(_ACCEPT_ENCODING)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1")


def _idle_limit(keep_alive: str, ceiling: float) -> float:
    """How long a connection may stay idle, from the server's `Keep-Alive: timeout=N, max=M`: N - 1 s, so
    that it is never reused just as the server gives up on it."""
    for part in keep_alive.split(","):
        name, _, value = part.partition("=")
        if name.strip().lower() == "timeout":
            try:
                return min(ceiling, float(value.strip()) - 1.0)
            except ValueError:
                break
    return ceiling


class _Decoder:
    """Decodes a gzip or deflate body incrementally (the encodings listed in Content-Encoding, undone in
    reverse order). Deflate is zlib-wrapped by the standard, but some servers send it raw: both are read."""

    __slots__ = ("_deflate_start", "_encoding", "_inner", "_stage")

    def __init__(self, encoding: str, inner: _Decoder | None) -> None:
        self._encoding = encoding
        self._inner = inner  # the encoding applied before this one, undone after it
        self._stage = zlib.decompressobj(16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS)
        self._deflate_start: bytes | None = b"" if encoding == "deflate" else None  # until zlib vs raw is known

    @classmethod
    def for_header(cls, value: str) -> _Decoder | None:
        decoder: _Decoder | None = None
        for encoding in (part.strip().lower() for part in value.split(",")):
            if encoding in ("", "identity"):
                continue
            if encoding in ("x-gzip", "gzip"):
                encoding = "gzip"
            elif encoding != "deflate":
                raise InvalidResponse(f"the body is in an unsupported Content-Encoding {value!r}")
            decoder = _Decoder(encoding, decoder)
        return decoder

    def decode(self, data: bytes, final: bool) -> bytes:
        try:
            out = self._decode(data)
            if final:
                out += self._stage.flush()
        except zlib.error as exc:
            raise InvalidResponse(f"the {self._encoding} body is corrupt: {exc}") from None
        inner = self._inner
        return out if inner is None else inner.decode(out, final)

    def _decode(self, data: bytes) -> bytes:
        start = self._deflate_start
        if start is not None:
            start += data
            try:
                out = self._stage.decompress(data)
            except zlib.error:
                self._deflate_start = None
                self._stage = zlib.decompressobj(-zlib.MAX_WBITS)
                return self._stage.decompress(start)
            self._deflate_start = start if not out and len(start) < 2 else None
            return out
        out = self._stage.decompress(data)
        while self._stage.eof and self._stage.unused_data and self._encoding == "gzip":
            rest = self._stage.unused_data  # another gzip member follows (gzip files may be concatenated)
            self._stage = zlib.decompressobj(16 + zlib.MAX_WBITS)
            out += self._stage.decompress(rest)
        return out


class _Connection(asyncio.Protocol):
    """One connection: the parser's callbacks fill in the current response; the consumer waits on `wait()`."""

    transport: asyncio.Transport

    def __init__(self, pool: AsyncPool, key: str, loop: asyncio.AbstractEventLoop) -> None:
        self.pool = pool
        self.key = key
        self.loop = loop
        self.parser = HttpResponseParser(self)
        self.idle = False  # in the pool's idle list
        self.idle_since = 0.0  # time.monotonic() when it went idle
        self.idle_limit = 0.0  # seconds it may stay idle and still be used
        self.eof_seen = False
        self.active = False  # carrying a request, from start() until the response is released or abandoned
        self.closed = False
        self.paused = False
        # The current exchange.
        self.head_only = False
        self.read_timeout = 0.0
        self.deadline: float | None = None  # loop.time() by which the whole answer must be in (None: no bound)
        self.status = 0
        self.parsing_headers: dict[str, str] = {}
        self.headers: dict[str, str] = {}
        self.head_done = self.complete = self.keep_alive = False
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
        try:
            self.parser.feed_data(data)
        except (HttpParserError, HttpParserUpgrade) as exc:
            self._fail(InvalidResponse(f"invalid response: {exc}"))

    def eof_received(self) -> None:
        self.eof_seen = True  # the transport closes next: connection_lost tells the waiting consumer, if any

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

    def start(self, head_only: bool, read_timeout: float, answer_timeout: float | None = None) -> None:
        self.active = True
        self.head_only = head_only
        self.read_timeout = read_timeout
        self.deadline = None if answer_timeout is None else self.loop.time() + answer_timeout
        self.head_done = self.complete = self.keep_alive = False
        # Known dead before the request is written: the upstream cannot have seen it, as if never connected.
        self.error = ConnectFailed("the connection closed before the request was sent") if self.closed else None

    def wait(self) -> asyncio.Future[None]:
        """A future resolved on the next event (head, body, end, error); the connection fails after read_timeout,
        or at the deadline for the whole answer if that comes first."""
        self.waiter = waiter = self.loop.create_future()
        delay = self.read_timeout
        if self.deadline is not None:
            delay = min(delay, self.deadline - self.loop.time())
        self.timer = self.loop.call_later(delay, self._timed_out)
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
            self.close()

    def close(self) -> None:
        self.closed = True
        self.transport.close()

    def abandon(self) -> None:
        self._fail(ConnectionBroken("the response was abandoned"))

    def _timed_out(self) -> None:
        if self.deadline is not None and self.loop.time() >= self.deadline:
            self._fail(ReadTimedOut("the whole answer did not arrive in time"))
        else:
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

    __slots__ = ("_conn", "_decoder", "_finished", "headers", "status")

    def __init__(self, conn: _Connection, decoder: _Decoder | None) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn: _Connection | None = conn
        self._decoder = decoder
        self._finished = False
        if conn.complete and not conn.chunks:
            self._release()  # no body (HEAD, 204, 304, empty): reusable right away, even if never read

    async def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body; read_timeout bounds each wait for more bytes. Beyond `max_bytes` (decoded) the
        response is closed and ResponseTooLarge raised."""
        parts: list[bytes] = []
        size = 0
        while not self._finished:
            chunk = await self.next_chunk()
            if not chunk:
                break
            size += len(chunk)
            if max_bytes is not None and size > max_bytes:
                self.close()
                raise ResponseTooLarge(f"the body is larger than {max_bytes} bytes")
            parts.append(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def next_chunk(self) -> bytes:
        """All the body bytes received so far, decoded (at least one, waiting up to read_timeout), b"" at the end."""
        decoder = self._decoder
        while True:
            conn = self._conn
            if conn is None:
                if self._finished:
                    return b""
                raise ConnectionBroken("the response was closed")
            while not conn.chunks:
                if conn.complete:
                    self._release()
                    return b"" if decoder is None else self._decode(decoder, b"", True)
                try:
                    await conn.progress()
                except BaseException:
                    self._conn = None  # abandoned
                    raise
            body = conn.take()
            complete = conn.complete
            if complete:
                self._release()
            if decoder is None:
                return body
            body = self._decode(decoder, body, complete)
            if body or complete:
                return body
            # Compressed bytes that decode to nothing yet: wait for more.

    def _decode(self, decoder: _Decoder, data: bytes, final: bool) -> bytes:
        try:
            return decoder.decode(data, final)
        except InvalidResponse:
            self.close()
            raise

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
    encoding = conn.headers.get("content-encoding")
    decoder = None
    if encoding is not None:
        try:
            decoder = _Decoder.for_header(encoding)
        except InvalidResponse:
            conn.abandon()
            raise
    return AsyncResponse(conn, decoder)


class AsyncPool:
    """Keep-alive connections per origin (scheme://host:port, and the proxy when there is one), for one event loop.

    Not thread-safe: use it only from the event loop it was first used on. `maxsize` bounds the idle
    connections kept per origin, not the connections in use; `idle_seconds` is the longest an idle connection
    is kept for reuse. `proxies` maps "http" / "https" / "no" as urllib.request.getproxies_environment() does,
    which is what it reads when not given (once: a pool never re-reads the environment). `ca_bundle`, a PEM
    file, replaces the system's trusted certificates.
    """

    def __init__(self, *, maxsize: int = 64, idle_seconds: float = 30.0, ca_bundle: str | None = None,
                 proxies: Mapping[str, str] | None = None) -> None:
        self.maxsize = maxsize
        self.idle_seconds = idle_seconds
        self.ca_bundle = ca_bundle
        self._idle: dict[str, list[_Connection]] = {}
        self._targets: dict[str, _Target] = {}
        self._tls: ssl.SSLContext | None = None
        self._proxies = dict(urllib.request.getproxies_environment() if proxies is None else proxies)
        self._proxy_servers = {
            scheme: _parse_proxy(url, scheme) for scheme in ("http", "https") if (url := self._proxies.get(scheme))
        }

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        *,
        connect_timeout: float,
        read_timeout: float,
        answer_timeout: float | None = None,
    ) -> AsyncResponse:
        """Send the request and return once the response head has arrived.

        `read_timeout` bounds each wait for more of the answer; `answer_timeout`, if given, the whole answer
        (head and body) from the request's sending: a server dripping bytes cannot hold the reader longer.
        Raises ConnectFailed (not sent; TLSFailed for a failed TLS handshake), ReadTimedOut (no head within
        read_timeout) or ConnectionBroken (InvalidResponse for an answer that is not valid HTTP). Host,
        Content-Length (when body is not None) and, unless given, "Accept-Encoding: gzip, deflate" are
        added; caller headers named Host, Content-Length or Transfer-Encoding are ignored.
        """
        target = self._targets.get(url)
        if target is None:
            if len(self._targets) > 512:
                self._targets.clear()
            target = self._targets[url] = self._route(_parse_url(url))
        head = _encode_head(method, target, headers, body)
        conn = self._take_idle(target.key)
        if conn is None:
            conn = await self._connect(target, connect_timeout)
        conn.start(method == "HEAD", read_timeout, answer_timeout)
        response = await _exchange(conn, head, body)
        proxy = target.proxy
        if response.status == 407 and proxy is not None:  # only a proxy answers 407: the upstream never saw it
            response.close()
            raise ConnectFailed(f"the proxy {proxy.label} refused the request: 407 Proxy Authentication Required")
        return response

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for conn in idle:
                conn.idle = False
                conn.close()
        self._idle.clear()

    def _route(self, target: _Target) -> _Target:
        """The target as this pool reaches it: directly, or through the proxy the environment names for it."""
        proxy = self._proxy_servers.get("https" if target.tls else "http")
        if proxy is None or _bypasses_proxy(target.host, target.port, self._proxies.get("no", "")):
            return target
        key = f"{target.origin} via {proxy.label}"
        if target.tls:  # a CONNECT tunnel: the requests inside it are the usual ones
            return target._replace(key=key, proxy=proxy)
        return target._replace(key=key, proxy=proxy, request_target=f"http://{target.host_header}{target.path}",
                               proxy_header=proxy.authorization)

    async def _connect(self, target: _Target, connect_timeout: float) -> _Connection:
        """A new connection, tunnelled through the proxy and TLS-wrapped as the target needs."""
        loop = asyncio.get_running_loop()
        proxy = target.proxy
        host, port = (target.host, target.port) if proxy is None else (proxy.host, proxy.port)
        conn: _Connection | None = None
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self, target.key, loop), host, port)
                if proxy is not None and target.tls:
                    await _open_tunnel(conn, target, proxy, connect_timeout)
                if target.tls:
                    tls = await loop.start_tls(conn.transport, conn, self._tls_context(), server_hostname=target.host)
                    if tls is None:
                        raise ConnectionResetError("the connection closed during the TLS handshake")
                    conn.transport = cast(asyncio.Transport, tls)
        except BaseException as exc:
            if conn is not None and not conn.closed:
                conn.closed = True
                conn.transport.abort()
            failure = _connect_failure(exc, conn is None, proxy, connect_timeout)
            if failure is exc:
                raise
            raise failure from exc
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            # cafile=None: the system's store, which SSL_CERT_FILE / SSL_CERT_DIR override
            self._tls = ssl.create_default_context(cafile=self.ca_bundle)
            self._tls.set_alpn_protocols(["http/1.1"])
        return self._tls

    def _take_idle(self, key: str) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # the most recently used: the least likely to have been closed by the server
            conn.idle = False
            if conn.closed or conn.eof_seen or conn.transport.is_closing():
                continue
            if now - conn.idle_since >= conn.idle_limit:
                conn.close()  # the server may be closing it right now
                continue
            return conn
        return None

    def _put(self, conn: _Connection) -> None:
        now = time.monotonic()
        keep_alive = conn.headers.get("keep-alive")
        conn.idle_since = now
        conn.idle_limit = self.idle_seconds if keep_alive is None else _idle_limit(keep_alive, self.idle_seconds)
        idle = self._idle.setdefault(conn.key, [])
        while idle and now - idle[0].idle_since >= idle[0].idle_limit:  # the oldest, expired: close them now
            expired = idle.pop(0)
            expired.idle = False
            expired.close()
        if len(idle) < self.maxsize and conn.idle_limit > 0:
            conn.idle = True
            idle.append(conn)
        else:
            conn.close()

    def _forget(self, conn: _Connection) -> None:
        try:
            self._idle[conn.key].remove(conn)
        except (KeyError, ValueError):
            pass


async def _open_tunnel(conn: _Connection, target: _Target, proxy: _Proxy, timeout: float) -> None:
    """Ask the proxy for a tunnel to the target (CONNECT) and wait for its answer; raise ConnectFailed if refused."""
    authority = target.origin.partition("://")[2]
    conn.start(True, timeout)  # the answer to a CONNECT has no body: only its head is read
    conn.transport.write(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{proxy.authorization}\r\n".encode())
    try:
        while not conn.head_done:
            await conn.progress()
    except (ConnectionBroken, ReadTimedOut) as exc:
        raise ConnectFailed(f"the proxy {proxy.label} broke off the tunnel to {authority}: {exc}") from None
    conn.active = False
    status = conn.status
    if not 200 <= status < 300:
        try:
            phrase = http.HTTPStatus(status).phrase
        except ValueError:
            phrase = "(unknown status)"
        raise ConnectFailed(f"the proxy {proxy.label} refused the tunnel to {authority}: {status} {phrase}")


def _connect_failure(exc: BaseException, connecting: bool, proxy: _Proxy | None, timeout: float) -> BaseException:
    """What a failure while opening a connection means, named for the message (and never by a proxy's URL)."""
    if isinstance(exc, ConnectFailed) or not isinstance(exc, Exception):
        return exc  # a refused tunnel, already worded; a cancellation
    if isinstance(exc, TimeoutError):  # before OSError: asyncio's timeout raises TimeoutError, an OSError
        reason = f"timed out after {timeout:g} s"
    elif isinstance(exc, ssl.SSLError):  # certificate verification, a handshake the server refused
        reason = str(exc).partition(" (_ssl.c:")[0]
        return TLSFailed(reason if proxy is None else f"{reason} (through the proxy {proxy.label})")
    elif isinstance(exc, ConnectionRefusedError):
        reason = "Connection refused"
    elif isinstance(exc, OSError):  # DNS (socket.gaierror), unreachable, reset during the handshake
        reason = str(exc) or type(exc).__name__
    else:
        return exc
    if proxy is None:
        return ConnectFailed(reason)
    if connecting:
        return ConnectFailed(f"the proxy {proxy.label} refused the connection: {reason}")
    return ConnectFailed(f"{reason} (through the proxy {proxy.label})")
