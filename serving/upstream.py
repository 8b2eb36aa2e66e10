"""The one HTTP seam: every upstream call goes through here.

Provider adapters are synchronous code that runs in the async bridge (serving.bridge) on a worker's
event loop; every request they send goes through the asyncio client (serving.httpclient), whose
keep-alive connections are pooled per upstream origin, awaited with `await_`. The client reaches
upstreams through the proxies the environment names (HTTP_PROXY, HTTPS_PROXY, NO_PROXY), verifies
TLS against the system's store or GATEWAY_CA_BUNDLE, and decodes gzip and deflate bodies. This module
decodes streams (SSE, NDJSON, raw) chunk by chunk as they arrive, and maps every transport failure,
the same way on every route family and for streams, with one retry decision each:

    failure                                               answer                       retried
    connect refused, DNS failure, unreachable,            502 upstream_unreachable     yes: not sent
      connect timeout, a proxy refusing (407, 403, 502
      to its CONNECT) or unreachable
    TLS failure (certificate verification, a refused      502 upstream_tls_error       no: not transient
      handshake)
    read timeout (a whole answer not in within the read   504 upstream_timeout         no: it may be working
      timeout; for a stream, no byte for it)
    connection reset or closed after the request was      502 upstream_unreachable     no: it may have acted
      written
    malformed HTTP, an undecodable body or an unknown     502 bad_upstream_response    no
      Content-Encoding, an answer (or a stream's event)
      over its size limit, a stream that is not UTF-8
    status 429 (with Retry-After), 502, 503               the upstream's status        yes, within bounds
    any other status                                      the upstream's status        no

The resend rule: a request is sent again only when the upstream cannot have acted on it, i.e. the
connection was known dead before the request was written (the first row), or the upstream said so
(the retryable statuses). A request written on a reused keep-alive connection that the server then
closes without an answer is not resent: the client avoids that race instead by never reusing a
connection that is closing, has seen EOF, or has been idle for its limit (the server's
`Keep-Alive: timeout=N` less a second, at most GATEWAY_POOL_IDLE_SECONDS). Retries wait with
exponential backoff and jitter (or Retry-After), bounded by the endpoint's timeout, and happen only
before any byte reached the client.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from providers.errors import (
    ConfigurationError,
    UpstreamBadResponse,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTLSError,
    UpstreamUnavailable,
)
from serving import httpclient
from serving.bridge import await_, sleep

logger = logging.getLogger(__name__)

RETRYABLE_STATUSES = frozenset({429, 502, 503})
# The retries of the invocation running in this greenlet (each bridge greenlet has its own context): the
# invocation sets a counter, the seam adds to it, the usage record and the metrics read it.
RETRIES: ContextVar[list[int] | None] = ContextVar("gateway_upstream_retries", default=None)
# The invocation's deadline (monotonic seconds), set by its first upstream call from that endpoint's
# `timeouts.total`: a traffic route's later destinations share it, so that falling back never makes the
# client wait longer than the first destination's total.
DEADLINE: ContextVar[list[float] | None] = ContextVar("gateway_upstream_deadline", default=None)  # [at, seconds]
# The W3C `traceparent` the invocation running in this greenlet sends upstream (observability.tracing), if any.
TRACEPARENT: ContextVar[str | None] = ContextVar("gateway_upstream_traceparent", default=None)
_MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class Timeouts:
    """connect: to open a connection; read: the longest wait for a whole answer (head and body; for a
    stream, for its head and then between two pieces of it: the idle gap); total: the whole call including
    retries (non-stream) or until the stream's head (stream)."""

    connect: float = 10.0
    read: float = 300.0
    total: float = 300.0
    retries: int = 2


@dataclass
class UpstreamRequest:
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    json: Any = None
    body: bytes | None = None
    method: str = "POST"

    def encoded_body(self) -> bytes | None:
        if self.body is not None:
            return self.body
        if self.json is None:
            return None
        return orjson.dumps(self.json)


ErrorMessageExtractor = Callable[[Any], Any]


# Each failure, as the client reports it (the table in the module's docstring).
_TLS_FAILED = (httpclient.TLSFailed,)  # nothing was sent, and sending again would fail the same way
_CONNECT_FAILED = (httpclient.ConnectFailed,)  # nothing was sent
_READ_TIMED_OUT = (httpclient.ReadTimedOut,)
_INVALID = (httpclient.InvalidResponse,)  # an answer we cannot read
_BROKEN = (httpclient.ConnectionBroken,)  # after the request may have been sent


class UpstreamAnswer:
    """One upstream response whose head has arrived: the status and headers, then the body, read from
    synchronous code inside the async bridge. Body failures surface as the client's own exceptions;
    iter_raw and the seam map them."""

    def __init__(self, response: httpclient.AsyncResponse, data: bytes | None = None,
                 max_event: int = 8 * 1024 * 1024) -> None:
        self._response = response
        self._data = data
        self.status = response.status
        self.max_event = max_event  # the longest line, or event, a stream decoder accepts

    def header(self, name: str) -> str | None:
        """A response header by its lower-case name."""
        return self._response.headers.get(name)

    def read(self, max_bytes: int | None = None) -> bytes:
        """The whole body (ResponseTooLarge beyond max_bytes); the connection goes back to the pool."""
        return self._data if self._data is not None else await_(self._response.read(max_bytes))

    def chunks(self) -> Iterator[bytes]:
        """The body as it arrives; the connection goes back to the pool at the end (closed if abandoned)."""
        response = self._response
        try:
            while chunk := await_(response.next_chunk()):
                yield chunk
        finally:
            response.close()  # a no-op once the body was read to its end and the connection pooled

    def close(self) -> None:
        """Abandon the body: the connection is closed, never reused."""
        self._response.close()

    def discard(self) -> None:
        """Read and drop the rest of the body (before a retry), keeping the connection."""
        if self._data is None:
            await_(self._response.drain())


class Transport:
    """Sends UpstreamRequests with pooling, timeouts and safe retries, through the asyncio client."""

    def __init__(self, *, maxsize: int = 64, idle_seconds: float = 30.0, ca_bundle: str | None = None,
                 max_body: int = 64 * 1024 * 1024, max_event: int = 8 * 1024 * 1024) -> None:
        self._maxsize = maxsize
        self._idle_seconds = idle_seconds
        self._ca_bundle = ca_bundle
        self.max_body = max_body  # the largest whole answer read (a non-stream body, an error body)
        self.max_event = max_event  # the largest line or event of a stream
        self._pool: httpclient.AsyncPool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _pool_for_loop(self) -> httpclient.AsyncPool:
        """The client's pool: its connections belong to the running event loop (one per worker). It reads
        the proxy variables from the environment once, when created."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._pool is None:
            try:
                self._pool = httpclient.AsyncPool(maxsize=self._maxsize, idle_seconds=self._idle_seconds,
                                                  ca_bundle=self._ca_bundle)
            except ValueError as exc:  # a proxy variable that is not an http:// URL (the message never quotes it)
                raise ConfigurationError(f"Upstream calls cannot be made: {exc}.") from None
            self._loop = loop
        return self._pool

    def close(self) -> None:
        """Close the pool's idle connections, on its own event loop (from any thread)."""
        pool, loop = self._pool, self._loop
        self._pool = self._loop = None
        if pool is None or loop is None or loop.is_closed():
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            pool.close()
        else:
            loop.call_soon_threadsafe(pool.close)

    def _attempt(self, request: UpstreamRequest, body: bytes | None, headers: dict[str, str],
                 connect: float, read: float, *, stream: bool) -> UpstreamAnswer:
        """One try, with no retry; failures raise the client's own exceptions (see _CONNECT_FAILED...)."""
        if stream:
            return UpstreamAnswer(await_(self._request_on_loop(request, body, headers, connect, read)),
                                  max_event=self.max_event)
        # A whole body is read here, so that its failures map as the connection's do.
        response, data = await_(self._whole_answer(request, body, headers, connect, read))
        return UpstreamAnswer(response, data)

    async def _request_on_loop(self, request: UpstreamRequest, body: bytes | None, headers: dict[str, str],
                               connect: float, read: float) -> httpclient.AsyncResponse:
        return await self._pool_for_loop().request(request.method, request.url, headers, body,
                                                   connect_timeout=connect, read_timeout=read)

    async def _whole_answer(self, request: UpstreamRequest, body: bytes | None, headers: dict[str, str],
                            connect: float, read: float) -> tuple[httpclient.AsyncResponse, bytes]:
        """The head and the whole body within `read` seconds of the request's sending, however the upstream
        paces its bytes (a byte every second would otherwise renew a per-read timeout for ever)."""
        response = await self._pool_for_loop().request(request.method, request.url, headers, body,
                                                       connect_timeout=connect, read_timeout=read,
                                                       answer_timeout=read)
        return response, await response.read(self.max_body)

    # -- non-streaming -------------------------------------------------------------------------
    def send_json(self, request: UpstreamRequest, timeouts: Timeouts,
                  extract_error: ErrorMessageExtractor | None = None) -> Any:
        """POST and return the parsed JSON body. Raises the gateway's Upstream* errors."""
        answer = self._request(request, timeouts, stream=False)
        data = answer.read()
        content_type = answer.header("content-type") or ""
        if answer.status >= 400:
            raise error_from_response(answer.status, content_type, data, answer.header("retry-after"), extract_error)
        return parse_json_body(data, content_type)

    # -- streaming -----------------------------------------------------------------------------
    def open_stream(self, request: UpstreamRequest, timeouts: Timeouts,
                    extract_error: ErrorMessageExtractor | None = None) -> UpstreamAnswer:
        """Open a streaming response; error statuses raise before any byte goes to the client."""
        answer = self._request(request, timeouts, stream=True)
        if answer.status >= 400:
            with _reading_body():
                data = answer.read(self.max_body)
            raise error_from_response(answer.status, answer.header("content-type") or "", data,
                                      answer.header("retry-after"), extract_error)
        return answer

    def _request(self, request: UpstreamRequest, timeouts: Timeouts, *, stream: bool) -> UpstreamAnswer:
        body = request.encoded_body()
        headers = request.headers
        if body is not None and "content-type" not in {k.lower() for k in headers}:
            headers = {**headers, "Content-Type": "application/json"}
        traceparent = TRACEPARENT.get()
        if traceparent is not None:
            headers = {**headers, "traceparent": traceparent}
        deadline, total = time.monotonic() + timeouts.total, timeouts.total
        shared = DEADLINE.get()
        if shared is not None:
            if not shared:
                shared += [deadline, total]
            elif shared[0] < deadline:
                deadline, total = shared
        attempt = 0
        previous: Exception | None = None  # what the last attempt ended with, when it is retried
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise previous or UpstreamTimeout(
                    f"No upstream answered within the request's deadline ({total:g} s, timeouts.total).")
            try:
                answer = self._attempt(request, body, headers, min(timeouts.connect, remaining),
                                       min(timeouts.read, remaining), stream=stream)
            except _TLS_FAILED as exc:
                raise UpstreamTLSError(
                    f"TLS with the upstream at {_origin(request.url)} failed: {exc.reason}"
                ) from None
            except _CONNECT_FAILED as exc:
                error: Exception = UpstreamUnavailable(
                    f"The upstream at {_origin(request.url)} is unreachable: {exc.reason}"
                )
                delay = _backoff(attempt, None)
            except _READ_TIMED_OUT:
                if previous is not None and remaining < timeouts.read:
                    raise previous from None  # a retry cut short by the deadline: the upstream's last answer
                raise UpstreamTimeout(
                    f"The upstream at {_origin(request.url)} did not answer within {timeouts.read:g} s."
                ) from None
            except httpclient.ResponseTooLarge:
                raise UpstreamBadResponse(
                    f"The upstream at {_origin(request.url)} answered with more than {self.max_body} bytes "
                    "(GATEWAY_MAX_UPSTREAM_BYTES)."
                ) from None
            except _INVALID as exc:
                raise UpstreamBadResponse(
                    f"The upstream at {_origin(request.url)} sent an invalid response: {exc.reason}"
                ) from None
            except _BROKEN as exc:
                # The request may have reached the upstream: not safe to repeat a POST.
                raise UpstreamUnavailable(f"The connection to {_origin(request.url)} failed: {exc.reason}") from None
            else:
                if answer.status not in RETRYABLE_STATUSES or attempt >= timeouts.retries:
                    return answer
                retry_after = _retry_after_seconds(answer.header("retry-after"))
                if answer.status != 503 and answer.status != 502 and retry_after is None:
                    return answer  # a 429 without Retry-After is the caller's to handle
                delay = _backoff(attempt, retry_after)
                if time.monotonic() + delay >= deadline:
                    return answer  # no time left to retry: pass on the upstream's own answer and Retry-After
                answer.discard()
                error = UpstreamError(f"upstream status {answer.status}", status=answer.status)
            if attempt >= timeouts.retries:
                raise error
            if time.monotonic() + delay >= deadline:
                raise error
            previous = error
            logger.info("retrying upstream %s after %.2fs (attempt %d): %s", _origin(request.url), delay,
                        attempt + 1, error)
            sleep(delay)
            attempt += 1
            counted = RETRIES.get()
            if counted is not None:
                counted[0] += 1


def _backoff(attempt: int, retry_after: float | None) -> float:
    if retry_after is not None:
        return min(retry_after, _MAX_RETRY_AFTER)
    base = 0.1 * 2.0**attempt
    return base + random.uniform(0, base)  # full jitter on top of the exponential step


def _retry_after_seconds(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _origin(url: str) -> str:
    """scheme://host[:port] of a URL, without any credentials it carries."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{host}{port}"


def parse_json_body(data: bytes, content_type: str) -> Any:
    if content_type and "json" not in content_type and not content_type.startswith("text/plain"):
        raise UpstreamBadResponse(
            "The returned data type from the route service is not supported. "
            f"Received content type: {content_type}"
        )
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamBadResponse("The upstream returned a body that is not valid JSON.") from None


def default_error_message(body: Any) -> Any:
    """MLflow's rule: `error.message` if present, else the whole JSON body."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
        if isinstance(error, str):
            return error
        if isinstance(body.get("message"), str):
            return body["message"]
    return body


def error_from_response(status: int, content_type: str, data: bytes, retry_after_header: str | None,
                        extract_error: ErrorMessageExtractor | None) -> Exception:
    retry_after = _retry_after_seconds(retry_after_header)
    if "json" in content_type or (not content_type and data[:1] in (b"{", b"[")):
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            return UpstreamBadResponse(f"The upstream answered {status} with a body that is not valid JSON.")
        detail = (extract_error or default_error_message)(body)
        return UpstreamError(detail, status=status, retry_after=retry_after)
    if content_type.startswith("text/plain"):
        return UpstreamError({"message": data.decode("utf-8", "replace")}, status=status, retry_after=retry_after)
    return UpstreamBadResponse(
        "The returned data type from the route service is not supported. "
        f"Received content type: {content_type or 'none'} (upstream status {status})"
    )


# -- stream decoders ------------------------------------------------------------------------------
def iter_raw(response: UpstreamAnswer) -> Iterator[bytes]:
    """The body's bytes as they arrive (binary framings such as AWS event streams use this directly).

    An idle upstream becomes UpstreamTimeout, a broken one UpstreamUnavailable; the connection goes
    back to the pool at the end (reusable when the body was read to its end)."""
    with _reading_body():
        yield from response.chunks()


@contextmanager
def _reading_body() -> Iterator[None]:
    """Either client's failures while a body arrives, as the gateway's errors."""
    try:
        yield
    except _READ_TIMED_OUT:
        raise UpstreamTimeout("The upstream stream went idle for longer than the read timeout.") from None
    except httpclient.ResponseTooLarge as exc:
        raise UpstreamBadResponse(f"The upstream's error answer is too large: {exc.reason} "
                                  "(GATEWAY_MAX_UPSTREAM_BYTES).") from None
    except _INVALID as exc:
        raise UpstreamBadResponse(f"The upstream stream is invalid: {exc.reason}") from None
    except _BROKEN as exc:
        raise UpstreamUnavailable(f"The upstream stream broke: {exc.reason}") from None


def iter_lines(response: UpstreamAnswer) -> Iterator[bytes]:
    """Lines as they arrive (without line endings), handling \\n, \\r\\n and lines split across chunks.
    A line longer than the stream's event limit is an UpstreamBadResponse."""
    buffer = b""
    limit = response.max_event
    for chunk in iter_raw(response):
        buffer += chunk
        while True:
            index = buffer.find(b"\n")
            if index < 0:
                break
            line, buffer = buffer[:index], buffer[index + 1 :]
            yield line.rstrip(b"\r")
        if len(buffer) > limit:
            response.close()
            raise _event_too_large(limit)
    if buffer:
        yield buffer.rstrip(b"\r")


def _event_too_large(limit: int) -> UpstreamBadResponse:
    return UpstreamBadResponse(
        f"The upstream stream sent an event larger than {limit} bytes (GATEWAY_MAX_UPSTREAM_EVENT_BYTES).")


@dataclass
class SSEEvent:
    data: str
    event: str | None = None


def iter_sse(response: UpstreamAnswer) -> Iterator[SSEEvent]:
    """Server-Sent Events: joins multi-line data, keeps the event name, skips comments."""
    data_lines: list[str] = []
    size = 0
    event: str | None = None
    for raw in iter_lines(response):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            response.close()
            raise UpstreamBadResponse("The upstream stream sent bytes that are not UTF-8.") from None
        if not line:
            if data_lines:
                yield SSEEvent("\n".join(data_lines), event)
            data_lines, event, size = [], None, 0
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            size += len(value)
            if size > response.max_event:
                response.close()
                raise _event_too_large(response.max_event)
            data_lines.append(value)
        elif name == "event":
            event = value
    if data_lines:
        yield SSEEvent("\n".join(data_lines), event)


def iter_ndjson(response: UpstreamAnswer) -> Iterator[Any]:
    for line in iter_lines(response):
        if line.strip():
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError:
                raise UpstreamBadResponse("The upstream stream sent a line that is not valid JSON.") from None


_transport: Transport | None = None


def get_transport() -> Transport:
    """The process-wide pooled transport (used from the event loop's thread only)."""
    global _transport
    if _transport is None:
        from django.conf import settings

        _transport = Transport(maxsize=settings.GATEWAY_POOL_MAXSIZE, idle_seconds=settings.GATEWAY_POOL_IDLE_SECONDS,
                               ca_bundle=settings.GATEWAY_CA_BUNDLE, max_body=settings.GATEWAY_MAX_UPSTREAM_BYTES,
                               max_event=settings.GATEWAY_MAX_UPSTREAM_EVENT_BYTES)
    return _transport


def reset_transport() -> None:
    """Drop the process-wide transport, closing its idle connections: the next call builds one from the
    settings and the environment (proxy variables) then in force. For tests, and after a fork."""
    global _transport
    transport, _transport = _transport, None
    if transport is not None:
        transport.close()


async def post_notification(url: str, body: bytes, timeout: float = 5.0) -> int:
    """POST a small JSON notification (a budget alert) with the one HTTP client, on the running event loop;
    the answer's status. Not retried: a notification is worth one try."""
    pool = get_transport()._pool_for_loop()
    response = await pool.request("POST", url, {"Content-Type": "application/json"}, body,
                                  connect_timeout=timeout, read_timeout=timeout)
    await response.read()
    return response.status
