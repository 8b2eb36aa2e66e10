"""The gateway's Redis client: asyncio, pipelined, on a serving worker's event loop.

redis.asyncio takes a connection from its pool and checks it (several loop iterations) for every
call. With 16 INCR + EXPIRE pipelines in flight on one uvloop it spent 85-90 µs of CPU per call,
with a median of 0.97-1.0 ms. With Redis counters, the gateway fell from 96 % to 90 % of the ideal rate
through a 50 ms upstream (bench/README.md). This client keeps one connection per event loop and
pipelines every concurrent call on it (Redis answers in order), so a call costs one write and one
wake-up: 23-24 µs of CPU and a 0.21 ms median in the same test, and 94.6 % in the benchmark.

It speaks RESP2 to Redis over TCP (`redis://`), TLS (`rediss://`, with `ssl_cert_reqs` and
`ssl_ca_certs` as redis-py reads them) and Unix sockets (`unix://`), with a user, a password and a
database number, and to the supervisor's embedded store (serving.store) over its Unix socket.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

logger = logging.getLogger(__name__)


class RespError(Exception):
    """An error reply from Redis (`-ERR ...`)."""


class RespConnectionError(ConnectionError):
    """The connection failed or was lost before the answer came."""


_QUERY_OPTIONS = frozenset({"db", "password", "ssl_cert_reqs", "ssl_ca_certs"})
_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class RedisAddress:
    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool
    path: str | None = None  # a Unix socket instead of host and port
    cert_reqs: str = "required"  # for TLS: none, optional or required
    ca_certs: str | None = None  # for TLS: a CA bundle instead of the system's

    @classmethod
    def parse(cls, url: str) -> RedisAddress:
        """The address in a `redis://`, `rediss://` or `unix://` URL, as redis-py reads them:
        `redis://[[user]:password@]host[:port][/db]`, `unix://[[user]:password@]/path/to.sock`,
        and the query options db, password, ssl_cert_reqs and ssl_ca_certs. ValueError, with a
        message naming what is wrong, for anything else."""
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError("the scheme must be redis://, rediss:// or unix://")
        query = {name: values[-1] for name, values in parse_qs(parts.query, keep_blank_values=True).items()}
        unknown = sorted(set(query) - _QUERY_OPTIONS)
        if unknown:
            raise ValueError(f"unsupported option(s) {', '.join(unknown)}; use {', '.join(sorted(_QUERY_OPTIONS))}")
        db_text = query.get("db", "")
        path = None
        if parts.scheme == "unix":
            path = unquote(parts.path)
            if not path:
                raise ValueError("a unix:// URL needs the socket's path, e.g. unix:///run/redis/redis.sock")
            host, port = "", 0
        else:
            if not parts.hostname:
                raise ValueError("the URL names no host")
            host = parts.hostname
            try:
                port = parts.port or 6379
            except ValueError:
                raise ValueError("the port is not a number from 1 to 65535") from None
            if parts.path.strip("/"):
                db_text = parts.path.strip("/")
        if db_text and not db_text.isdigit():
            raise ValueError(f"the database number {db_text!r} is not a number")
        cert_reqs = query.get("ssl_cert_reqs", "required").lower()
        if cert_reqs not in _CERT_REQS:
            raise ValueError("ssl_cert_reqs must be none, optional or required")
        password = unquote(parts.password) if parts.password is not None else query.get("password")
        return cls(host=host, port=port, db=int(db_text or 0),
                   username=unquote(parts.username) if parts.username else None,
                   password=password, tls=parts.scheme == "rediss", path=path, cert_reqs=cert_reqs,
                   ca_certs=query.get("ssl_ca_certs") or None)

    def describe(self) -> str:
        """Where it is, without the credentials (for messages and logs)."""
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.ca_certs)
        if self.cert_reqs != "required":
            context.check_hostname = False
            context.verify_mode = _CERT_REQS[self.cert_reqs]
        return context


def encode_command(*args: str | bytes | int | float) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


_INCOMPLETE = object()


def parse_reply(buffer: bytes | bytearray, start: int = 0) -> tuple[Any, int]:
    """Parse one RESP2 reply at `start`: (value, position after it), or (_INCOMPLETE, start) when the
    buffer does not hold all of it yet. Error replies are returned as RespError instances (a
    pipeline's other answers still count)."""
    end = buffer.find(b"\r\n", start)
    if end < 0:
        return _INCOMPLETE, start
    kind = buffer[start : start + 1]
    line = bytes(buffer[start + 1 : end])
    after = end + 2
    if kind == b":":
        return int(line), after
    if kind == b"+":
        return line.decode(), after
    if kind == b"-":
        return RespError(line.decode("utf-8", "replace")), after
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, after
        if len(buffer) < after + size + 2:
            return _INCOMPLETE, start
        return bytes(buffer[after : after + size]), after + size + 2
    if kind == b"*":
        count = int(line)
        if count < 0:
            return None, after
        items = []
        position = after
        for _ in range(count):
            item, position = parse_reply(buffer, position)
            if item is _INCOMPLETE:
                return _INCOMPLETE, start
            items.append(item)
        return items, position
    raise RespConnectionError(f"unexpected reply from Redis: {bytes(buffer[start : start + 40])!r}")


class _Connection(asyncio.Protocol):
    """One connection; the futures of the calls in flight, in the order their answers will come."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiting: deque[tuple[asyncio.Future[list[Any]], int, list[Any]]] = deque()
        self.buffer = bytearray()
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, payload: bytes, replies: int, future: asyncio.Future[list[Any]]) -> None:
        if self.lost is not None:  # lost between being handed out and this call
            future.set_exception(self.lost)
            return
        self.waiting.append((future, replies, []))
        assert self.transport is not None
        self.transport.write(payload)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        position = 0
        try:
            while self.waiting:
                value, position_after = parse_reply(self.buffer, position)
                if value is _INCOMPLETE:
                    break
                position = position_after
                future, expected, answers = self.waiting[0]
                answers.append(value)
                if len(answers) == expected:
                    self.waiting.popleft()
                    if not future.done():  # a caller that timed out is gone; its answers are dropped
                        future.set_result(answers)
        except (ValueError, RespConnectionError) as exc:
            self.abort(RespConnectionError(f"Redis sent something this client cannot read: {exc}"))
            return
        del self.buffer[:position]

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RespConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def abort(self, error: Exception) -> None:
        self._fail(error)
        if self.transport is not None:
            self.transport.abort()

    def _fail(self, error: Exception) -> None:
        if self.lost is None:
            self.lost = error
        while self.waiting:
            future, _, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(self.lost)


class AsyncRedis:
    """Pipelined calls on one connection, for the event loop it is first used on.

    `execute` sends commands and returns their answers in order (error replies as RespError values).
    It raises RespConnectionError if Redis cannot be reached or the connection breaks, and TimeoutError
    after `timeout` seconds; either way the connection is dropped and the next call opens another.

    A breaker: after such a failure, calls for the next `cooldown` seconds raise RespConnectionError at
    once instead of each waiting up to `timeout` for a Redis that is down or hung (the callers fail open
    or closed as they would anyway); the first call after the cooldown tries Redis again.
    """

    def __init__(self, address: RedisAddress, *, timeout: float, cooldown: float = 0.0) -> None:
        self.address = address
        self.timeout = timeout
        self.cooldown = cooldown
        self._skip_until = 0.0  # time.monotonic() before which Redis is not tried (the breaker is open)
        self._connection: _Connection | None = None
        self._connecting: asyncio.Future[_Connection] | None = None

    async def execute(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
        if self._skip_until and time.monotonic() < self._skip_until:
            raise RespConnectionError(f"Redis at {self.address.describe()} is skipped for a few seconds after "
                                      "failing (GATEWAY_REDIS_BREAKER_SECONDS)")
        payload = b"".join(encode_command(*command) for command in commands)
        try:
            async with asyncio.timeout(self.timeout):
                connection = self._connection
                if connection is None or connection.lost is not None:
                    connection = await self._connect()
                future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
                connection.send(payload, len(commands), future)
                replies = await future
        except TimeoutError:
            self._drop(RespConnectionError("Redis did not answer in time"))
            self._trip("did not answer in time")
            raise
        except (RespConnectionError, OSError) as exc:
            self._trip(str(exc) or type(exc).__name__)
            raise
        self._skip_until = 0.0
        return replies

    def _trip(self, reason: str) -> None:
        if self.cooldown <= 0 or (self._skip_until and time.monotonic() < self._skip_until):
            return
        self._skip_until = time.monotonic() + self.cooldown
        logger.warning("Redis at %s failed (%s): not tried for %g s", self.address.describe(), reason, self.cooldown)

    def close(self) -> None:
        self._drop(RespConnectionError("the client was closed"))

    def _drop(self, error: Exception) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.abort(error)

    async def _connect(self) -> _Connection:
        if self._connecting is None:  # concurrent callers wait for the same connection
            self._connecting = asyncio.ensure_future(self._open())
            self._connecting.add_done_callback(self._opened)
        return await asyncio.shield(self._connecting)

    def _opened(self, connecting: asyncio.Future[_Connection]) -> None:
        """The attempt is over, whether or not anyone still waits for it (its callers may have timed
        out): the next caller starts a new one, and a failure nobody awaited is not left unretrieved."""
        if self._connecting is connecting:
            self._connecting = None
        if not connecting.cancelled():
            connecting.exception()

    async def _open(self) -> _Connection:
        address = self.address
        loop = asyncio.get_running_loop()
        try:
            if address.path is not None:
                _, connection = await loop.create_unix_connection(_Connection, address.path)
            else:
                _, connection = await loop.create_connection(_Connection, address.host, address.port,
                                                             ssl=address.tls_context())
        except OSError as exc:
            raise RespConnectionError(f"cannot connect to Redis at {address.describe()}: {exc}") from None
        setup: list[tuple[str | bytes | int, ...]] = []
        if address.password is not None and address.username:
            setup.append(("AUTH", address.username, address.password))
        elif address.password is not None:
            setup.append(("AUTH", address.password))
        if address.db:
            setup.append(("SELECT", address.db))
        if setup:
            future: asyncio.Future[list[Any]] = loop.create_future()
            connection.send(b"".join(encode_command(*command) for command in setup), len(setup), future)
            answers = await future
            failed = [answer for answer in answers if isinstance(answer, RespError)]
            if failed:
                connection.abort(RespConnectionError(str(failed[0])))
                raise RespConnectionError(f"Redis refused the connection set-up: {failed[0]}")
        self._connection = connection
        return connection
