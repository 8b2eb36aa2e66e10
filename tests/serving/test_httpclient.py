"""The asyncio HTTP/1.1 client against real local servers on 127.0.0.1, run in the test's own event loop:
body framings, keep-alive reuse, what must never be reused nor resent, the bytes on the wire, compressed
bodies, proxy routing, timeouts, broken connections and flow control. (Proxies and TLS end to end, through
the gateway: tests/serving/test_upstream_network.py.)"""

from __future__ import annotations

import asyncio
import datetime
import functools
import ipaddress
import socket
import ssl
import time
import zlib
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from serving.httpclient import (
    AsyncPool,
    ConnectFailed,
    ConnectionBroken,
    InvalidResponse,
    ReadTimedOut,
    TLSFailed,
    _bypasses_proxy,
    _idle_limit,
    _parse_proxy,
    _parse_url,
)

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
Handler = Callable[["Upstream", Reader, Writer], Awaitable[None]]

TIMEOUTS = {"connect_timeout": 2.0, "read_timeout": 2.0}
HELLO = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"


def in_loop(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in a fresh event loop, failing it rather than hanging if it deadlocks."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(asyncio.wait_for(test(), 5))

    return run


async def read_request(reader: Reader) -> bytes:
    """One request's bytes (head and Content-Length body); b"" once the client has closed the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return b""
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


class Upstream:
    """A server running `handler` for every accepted connection; counts connections, records requests."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[Writer] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    async def next_request(self, reader: Reader) -> bytes:
        request = await read_request(reader)
        if request:
            self.requests.append(request)
        return request

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await self.server.wait_closed()

    async def _serve(self, reader: Reader, writer: Writer) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


def answering(*replies: bytes) -> Handler:
    """Answer the n-th request (on whichever connection) with the n-th reply (the last one repeats), keeping
    connections open."""

    async def handler(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        while await upstream.next_request(reader):
            writer.write(replies[min(len(upstream.requests), len(replies)) - 1])
            await writer.drain()

    return handler


def chunked(*pieces: bytes) -> bytes:
    return b"".join(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" for piece in pieces) + b"0\r\n\r\n"


CHUNKED_HEAD = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def get(pool: AsyncPool, upstream: Upstream, path: str = "/", method: str = "GET") -> bytes:
    response = await pool.request(method, upstream.url + path, {}, None, **TIMEOUTS)
    return await response.read()


# Body framings


@in_loop
async def test_it_reads_a_content_length_body() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        pool = AsyncPool()
        response = await pool.request("GET", upstream.url, {}, None, **TIMEOUTS)
        assert response.status == 200
        assert response.headers == {"content-type": "text/plain", "content-length": "5"}
        assert await response.read() == b"hello"
        pool.close()


@in_loop
async def test_it_dechunks_a_body_that_arrives_one_byte_at_a_time() -> None:
    pieces = [b"data: one\n\n", b"data: two\n\n", b"x" * 300]

    async def trickle(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        for byte in CHUNKED_HEAD + chunked(*pieces):
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0)

    async with Upstream(trickle) as upstream:
        response = await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
        received = []
        while chunk := await response.next_chunk():
            received.append(chunk)
        assert b"".join(received) == b"".join(pieces)
        assert len(received) > 1


@in_loop
async def test_a_stream_chunk_is_delivered_before_the_server_sends_the_next() -> None:
    first_received = asyncio.Event()
    second_sent = False

    async def stream(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        nonlocal second_sent
        await upstream.next_request(reader)
        writer.write(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        await writer.drain()
        await first_received.wait()
        second_sent = True
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")

    async with Upstream(stream) as upstream:
        response = await AsyncPool().request("POST", upstream.url, {}, b"{}", **TIMEOUTS)
        assert await response.next_chunk() == b"first"
        assert not second_sent
        first_received.set()
        assert await response.next_chunk() == b"second"
        assert await response.next_chunk() == b""


@in_loop
async def test_it_reads_a_body_delimited_by_the_connection_closing() -> None:
    async def close_delimited(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"part two")
        writer.close()

    async with Upstream(close_delimited) as upstream:
        pool = AsyncPool()
        assert await get(pool, upstream) == b"part one, part two"
        assert await get(pool, upstream) == b"part one, part two"
        assert upstream.connections == 2


@in_loop
async def test_head_and_204_responses_have_no_body_and_keep_the_connection() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with Upstream(answering(head, no_content, HELLO)) as upstream:
        pool = AsyncPool()
        response = await pool.request("HEAD", upstream.url, {}, None, **TIMEOUTS)
        assert response.headers["content-length"] == "100"
        assert await response.read() == b""
        response = await pool.request("DELETE", upstream.url, {}, None, **TIMEOUTS)
        assert response.status == 204
        assert await response.read() == b""
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 1


@in_loop
async def test_it_skips_an_interim_100_continue_response() -> None:
    async with Upstream(answering(b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n" + HELLO)) as upstream:
        response = await AsyncPool().request("POST", upstream.url, {}, b"{}", **TIMEOUTS)
        assert response.status == 200
        assert "x-interim" not in response.headers
        assert await response.read() == b"hello"


@in_loop
async def test_it_joins_repeated_headers_and_lowercases_names() -> None:
    reply = b"HTTP/1.1 200 OK\r\nX-Thing: a\r\nx-thing: b\r\nContent-Length: 0\r\n\r\n"
    async with Upstream(answering(reply)) as upstream:
        response = await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
        assert response.headers == {"x-thing": "a, b", "content-length": "0"}


# Keep-alive


@in_loop
async def test_sequential_requests_reuse_one_connection() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        pool = AsyncPool()
        for _ in range(3):
            assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 1


@in_loop
async def test_a_connection_close_response_is_not_reused() -> None:
    closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    async with Upstream(answering(closing, HELLO)) as upstream:
        pool = AsyncPool()
        assert await get(pool, upstream) == b"ok"
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2


@in_loop
async def test_an_http_1_0_response_is_not_reused() -> None:
    async with Upstream(answering(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")) as upstream:
        pool = AsyncPool()
        assert await get(pool, upstream) == b"ok"
        assert await get(pool, upstream) == b"ok"
        assert upstream.connections == 2


@in_loop
async def test_an_abandoned_response_is_not_reused() -> None:
    async with Upstream(answering(CHUNKED_HEAD + b"5\r\nfirst\r\n", HELLO)) as upstream:
        pool = AsyncPool()
        response = await pool.request("GET", upstream.url, {}, None, **TIMEOUTS)
        assert await response.next_chunk() == b"first"
        response.close()
        response.close()
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2
        with pytest.raises(ConnectionBroken):
            await response.next_chunk()


@in_loop
async def test_drain_then_reuse_works() -> None:
    async with Upstream(answering(CHUNKED_HEAD + chunked(b"a" * 1000, b"b" * 1000), HELLO)) as upstream:
        pool = AsyncPool()
        response = await pool.request("GET", upstream.url, {}, None, **TIMEOUTS)
        await response.drain()
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 1


@in_loop
async def test_a_connection_the_server_closed_while_idle_is_not_used() -> None:
    async def answer_once(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(HELLO)
        await writer.drain()

    async with Upstream(answer_once) as upstream:
        pool = AsyncPool()
        assert await get(pool, upstream) == b"hello"
        await asyncio.sleep(0.05)  # the EOF reaches the idle connection
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2


@in_loop
async def test_a_request_on_a_keep_alive_connection_the_server_closed_after_reading_it_is_broken_not_resent() -> None:
    async def close_on_second_request(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(HELLO)
        await writer.drain()
        await upstream.next_request(reader)  # the race: the server times the connection out as this arrives

    async with Upstream(close_on_second_request) as upstream:
        pool = AsyncPool()
        assert await get(pool, upstream) == b"hello"
        with pytest.raises(ConnectionBroken):
            await get(pool, upstream, "/again")
        # The server read it, and may have acted on it: sending it again could do the work (and bill it) twice.
        assert upstream.connections == 1
        assert [request.split(b" ")[1] for request in upstream.requests] == [b"/", b"/again"]


@in_loop
async def test_an_idle_connection_past_the_pool_idle_limit_is_not_reused() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        pool = AsyncPool(idle_seconds=0.1)
        assert await get(pool, upstream) == b"hello"
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 1  # within the limit: reused
        await asyncio.sleep(0.15)
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2


@in_loop
async def test_the_server_keep_alive_timeout_bounds_reuse_to_one_second_less() -> None:
    short = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 5\r\n\r\nhello"
    long = b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5, max=100\r\nContent-Length: 5\r\n\r\nhello"
    async with Upstream(answering(short)) as upstream:
        pool = AsyncPool()
        await get(pool, upstream)
        await get(pool, upstream)
        assert upstream.connections == 2  # idle < 0 s is never true: not kept at all
    async with Upstream(answering(long)) as upstream:
        pool = AsyncPool()
        await get(pool, upstream)
        await get(pool, upstream)
        assert upstream.connections == 1


def test_the_idle_limit_reads_the_keep_alive_timeout_within_the_pool_limit() -> None:
    assert _idle_limit("timeout=5, max=1000", 30) == 4
    assert _idle_limit("max=10,timeout=120", 30) == 30
    assert _idle_limit("timeout=soon", 30) == 30
    assert _idle_limit("max=5", 30) == 30


@in_loop
async def test_a_new_connection_closed_without_an_answer_is_broken_and_not_resent() -> None:
    async def hang_up(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)

    async with Upstream(hang_up) as upstream:
        with pytest.raises(ConnectionBroken):
            await AsyncPool().request("POST", upstream.url, {}, b"{}", **TIMEOUTS)
        assert upstream.connections == 1


@in_loop
async def test_a_cancelled_request_closes_its_connection() -> None:
    async def slow_then_fast(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        if upstream.connections == 1:
            await asyncio.sleep(10)
        writer.write(HELLO)
        await writer.drain()

    async with Upstream(slow_then_fast) as upstream:
        pool = AsyncPool()
        task = asyncio.create_task(get(pool, upstream))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2


@in_loop
async def test_idle_connections_beyond_maxsize_are_closed() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        pool = AsyncPool(maxsize=1)
        first, second = await asyncio.gather(get(pool, upstream), get(pool, upstream))
        assert first == second == b"hello"
        await get(pool, upstream)
        await get(pool, upstream)
        assert upstream.connections == 2


# The request on the wire


@in_loop
async def test_it_sends_the_request_line_host_headers_length_body_and_accepts_gzip() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        headers = {"Authorization": "Bearer k", "Content-Type": "application/json", "content-length": "99"}
        response = await AsyncPool().request("POST", upstream.url + "/v1/chat?x=1", headers, b'{"a":1}', **TIMEOUTS)
        await response.read()
        assert upstream.requests == [
            b"POST /v1/chat?x=1 HTTP/1.1\r\n"
            + f"Host: 127.0.0.1:{upstream.port}\r\n".encode()
            + b"Authorization: Bearer k\r\nContent-Type: application/json\r\nContent-Length: 7\r\n"
            b"Accept-Encoding: gzip, deflate\r\n\r\n"
            b'{"a":1}'
        ]


@in_loop
async def test_it_sends_no_length_without_a_body_and_keeps_a_given_accept_encoding() -> None:
    async with Upstream(answering(HELLO)) as upstream:
        await (await AsyncPool().request("GET", upstream.url, {"accept-encoding": "gzip"}, None, **TIMEOUTS)).read()
        assert upstream.requests[0] == (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{upstream.port}\r\naccept-encoding: gzip\r\n\r\n".encode()
        )


def test_the_host_header_omits_the_default_port() -> None:
    assert _parse_url("https://api.openai.com/v1/chat").host_header == "api.openai.com"
    assert _parse_url("https://api.openai.com:8443/v1").host_header == "api.openai.com:8443"
    assert _parse_url("http://[::1]:80/").host_header == "[::1]"
    assert _parse_url("http://h/").path == "/"


def test_a_header_with_a_line_break_is_refused() -> None:
    async def scenario() -> None:
        await AsyncPool().request("GET", "http://127.0.0.1:9/", {"X-Evil": "a\r\nHost: b"}, None, **TIMEOUTS)

    with pytest.raises(ValueError):
        asyncio.run(scenario())


def self_signed_tls(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context trusting only it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client


def test_it_speaks_https_with_keep_alive_and_flow_control(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed_tls(tmp_path)
    body = bytes(range(256)) * (2 * 1024 * 1024 // 256)
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body

    async def scenario() -> None:
        async with Upstream(answering(reply), tls=server_tls) as upstream:
            pool = AsyncPool()
            pool._tls = client_tls  # the default context trusts only public CAs
            response = await pool.request("GET", upstream.url, {}, None, **TIMEOUTS)
            await asyncio.sleep(0.1)
            first = await response.next_chunk()
            assert len(first) <= 1024 * 1024
            assert first + await response.read() == body
            assert await get(pool, upstream) == body
            assert upstream.connections == 1
            pool.close()

    asyncio.run(asyncio.wait_for(scenario(), 5))


def test_an_untrusted_certificate_fails_the_tls_handshake(tmp_path: Path) -> None:
    server_tls, _ = self_signed_tls(tmp_path)

    async def scenario() -> None:
        async with Upstream(answering(HELLO), tls=server_tls) as upstream:
            with pytest.raises(TLSFailed) as failure:
                await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
            assert failure.value.reason == (
                "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate"
            )

    asyncio.run(asyncio.wait_for(scenario(), 5))


# Failures


@in_loop
async def test_a_refused_port_fails_to_connect() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ConnectFailed) as failure:
        await AsyncPool().request("GET", f"http://127.0.0.1:{port}/", {}, None, **TIMEOUTS)
    assert failure.value.reason == "Connection refused"


@in_loop
async def test_a_connect_that_gets_no_answer_fails_within_the_connect_timeout() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        backlog = [socket.socket() for _ in range(4)]  # never accepted: later SYNs are dropped
        for sock in backlog:
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", port))
        try:
            started = time.monotonic()
            with pytest.raises(ConnectFailed) as failure:
                await AsyncPool().request(
                    "GET", f"http://127.0.0.1:{port}/", {}, None, connect_timeout=0.2, read_timeout=2
                )
            assert time.monotonic() - started < 1
            # A kernel set to refuse rather than drop on a full backlog answers at once: also a failed connect.
            assert failure.value.reason in {"timed out after 0.2 s", "Connection refused"}
        finally:
            for sock in backlog:
                sock.close()


@in_loop
async def test_a_tls_handshake_that_never_completes_fails_within_the_connect_timeout() -> None:
    async def silent(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await asyncio.sleep(10)

    async with Upstream(silent) as upstream:
        started = time.monotonic()
        with pytest.raises(ConnectFailed) as failure:
            await AsyncPool().request(
                "GET", f"https://127.0.0.1:{upstream.port}/", {}, None, connect_timeout=0.2, read_timeout=2
            )
        assert time.monotonic() - started < 1
        assert failure.value.reason == "timed out after 0.2 s"


@in_loop
async def test_a_failed_tls_handshake_fails_to_connect() -> None:
    async def plain_http(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        writer.write(HELLO)  # not a TLS server hello
        await writer.drain()
        await asyncio.sleep(10)

    async with Upstream(plain_http) as upstream:
        with pytest.raises(TLSFailed) as failure:
            await AsyncPool().request("GET", f"https://127.0.0.1:{upstream.port}/", {}, None, **TIMEOUTS)
        assert "WRONG_VERSION_NUMBER" in failure.value.reason


@in_loop
async def test_an_unknown_host_fails_to_connect() -> None:
    with pytest.raises(ConnectFailed):
        await AsyncPool().request("GET", "http://no-such-host.invalid/", {}, None, **TIMEOUTS)


@in_loop
async def test_a_server_that_never_answers_times_out() -> None:
    async def silent(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        await asyncio.sleep(10)

    async with Upstream(silent) as upstream:
        started = time.monotonic()
        with pytest.raises(ReadTimedOut):
            await AsyncPool().request("GET", upstream.url, {}, None, connect_timeout=1, read_timeout=0.2)
        assert 0.15 < time.monotonic() - started < 1


@in_loop
async def test_a_server_that_stalls_mid_body_times_out_between_chunks() -> None:
    async def stall(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(CHUNKED_HEAD + b"5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    async with Upstream(stall) as upstream:
        pool = AsyncPool()
        response = await pool.request("GET", upstream.url, {}, None, connect_timeout=1, read_timeout=0.2)
        assert await response.next_chunk() == b"first"
        with pytest.raises(ReadTimedOut):
            await response.next_chunk()
        assert pool._idle.get(f"http://127.0.0.1:{upstream.port}", []) == []


@in_loop
async def test_a_close_delimited_body_that_stalls_times_out_rather_than_ending() -> None:
    """Timing out aborts the connection; that close must not read as the end of a close-delimited body."""

    async def stall(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(10)

    async with Upstream(stall) as upstream:
        response = await AsyncPool().request("GET", upstream.url, {}, None, connect_timeout=1, read_timeout=0.2)
        with pytest.raises(ReadTimedOut):
            await response.next_chunk()


@in_loop
async def test_a_server_that_closes_mid_chunked_body_breaks_the_connection() -> None:
    async def cut_off(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(CHUNKED_HEAD + b"5\r\nfirst\r\n9\r\nsec")

    async with Upstream(cut_off) as upstream:
        response = await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
        with pytest.raises(ConnectionBroken):
            await response.read()


@in_loop
async def test_a_content_length_body_cut_short_breaks_the_connection() -> None:
    async def cut_off(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")

    async with Upstream(cut_off) as upstream:
        response = await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
        with pytest.raises(ConnectionBroken):
            await response.read()


@in_loop
async def test_a_garbage_response_is_an_invalid_response() -> None:
    async with Upstream(answering(b"SSH-2.0-OpenSSH_9.0\r\n\r\n")) as upstream:
        with pytest.raises(InvalidResponse) as failure:
            await AsyncPool().request("GET", upstream.url, {}, None, **TIMEOUTS)
        assert "invalid response" in failure.value.reason


# Flow control


@in_loop
async def test_a_large_body_sent_fast_is_read_in_full_with_bounded_buffering() -> None:
    body = bytes(range(256)) * (4 * 1024 * 1024 // 256)

    async with Upstream(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)) as upstream:
        pool = AsyncPool()
        response = await pool.request("GET", upstream.url, {}, None, **TIMEOUTS)
        await asyncio.sleep(0.1)  # a slow consumer: the client must stop reading rather than buffer it all
        first = await response.next_chunk()
        assert len(first) <= 1024 * 1024
        rest = await response.read()
        assert first + rest == body
        assert await get(pool, upstream) == body
        assert upstream.connections == 1


@in_loop
async def test_a_large_chunked_body_is_read_in_full() -> None:
    pieces = [bytes([i % 256]) * 65536 for i in range(64)]
    async with Upstream(answering(CHUNKED_HEAD + chunked(*pieces))) as upstream:
        assert await get(AsyncPool(), upstream) == b"".join(pieces)


@in_loop
async def test_a_large_request_body_is_sent_in_full() -> None:
    body = b"z" * (1024 * 1024)
    async with Upstream(answering(HELLO)) as upstream:
        response = await AsyncPool().request("POST", upstream.url, {}, body, **TIMEOUTS)
        assert await response.read() == b"hello"
        assert upstream.requests[0].endswith(b"\r\n\r\n" + body)


# Compressed bodies


def gzipped(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def encoded_reply(encoding: str, body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %d\r\n\r\n" % (
        encoding.encode(), len(body)) + body


BODY = b'{"choices": [{"message": {"content": "' + b"compressible " * 500 + b'"}}]}'


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", gzipped(BODY)),
    ("x-gzip", gzipped(BODY)),
    ("deflate", zlib.compress(BODY)),  # zlib-wrapped, as the standard says
    ("deflate", raw_deflate(BODY)),  # raw, as some servers send it
    ("gzip", gzipped(BODY[:100]) + gzipped(BODY[100:])),  # concatenated gzip members
    ("identity", BODY),
], ids=["gzip", "x-gzip", "deflate-zlib", "deflate-raw", "gzip-members", "identity"])
def test_a_compressed_body_is_decoded(encoding: str, body: bytes) -> None:
    async def scenario() -> None:
        async with Upstream(answering(encoded_reply(encoding, body), HELLO)) as upstream:
            pool = AsyncPool()
            assert await get(pool, upstream) == BODY
            assert await get(pool, upstream) == b"hello"
            assert upstream.connections == 1

    asyncio.run(asyncio.wait_for(scenario(), 5))


@in_loop
async def test_a_gzip_body_arriving_a_byte_at_a_time_is_decoded() -> None:
    async def trickle(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        await upstream.next_request(reader)
        for byte in encoded_reply("deflate", raw_deflate(BODY)):
            writer.write(bytes([byte]))
            await writer.drain()

    async with Upstream(trickle) as upstream:
        assert await get(AsyncPool(), upstream) == BODY


@in_loop
async def test_a_gzip_stream_is_decoded_chunk_by_chunk_as_it_arrives() -> None:
    first_received = asyncio.Event()
    second_sent = False
    compressor = zlib.compressobj(wbits=16 + zlib.MAX_WBITS)

    def event(data: bytes) -> bytes:  # what a streaming server sends per event: compressed, then flushed
        return compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)

    async def stream(upstream: Upstream, reader: Reader, writer: Writer) -> None:
        nonlocal second_sent
        await upstream.next_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: gzip\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + chunked(event(b"data: one\n\n"))[:-5])
        await writer.drain()
        await first_received.wait()
        second_sent = True
        writer.write(chunked(event(b"data: two\n\n") + compressor.flush()))

    async with Upstream(stream) as upstream:
        response = await AsyncPool().request("POST", upstream.url, {}, b"{}", **TIMEOUTS)
        assert await response.next_chunk() == b"data: one\n\n"
        assert not second_sent
        first_received.set()
        assert await response.next_chunk() == b"data: two\n\n"
        assert await response.next_chunk() == b""


@in_loop
async def test_an_unknown_content_encoding_is_an_invalid_response() -> None:
    async with Upstream(answering(encoded_reply("br", b"\x1b\x00"), HELLO)) as upstream:
        pool = AsyncPool()
        with pytest.raises(InvalidResponse) as failure:
            await get(pool, upstream)
        assert failure.value.reason == "the body is in an unsupported Content-Encoding 'br'"
        assert await get(pool, upstream) == b"hello"
        assert upstream.connections == 2  # the undecodable answer's connection was not reused


@in_loop
async def test_a_corrupt_gzip_body_is_an_invalid_response() -> None:
    async with Upstream(answering(encoded_reply("gzip", b"\x1f\x8b\x08\x00 not gzip at all"))) as upstream:
        with pytest.raises(InvalidResponse) as failure:
            await get(AsyncPool(), upstream)
        assert failure.value.reason.startswith("the gzip body is corrupt")


# Proxy routing (the proxies themselves: tests/serving/test_upstream_network.py)


@pytest.mark.parametrize(("host", "port", "no_proxy", "bypassed"), [
    ("api.example.com", 443, "", False),
    ("api.example.com", 443, "*", True),
    ("api.example.com", 443, "api.example.com", True),
    ("API.Example.com", 443, "api.example.com", True),
    ("api.example.com", 443, "example.com", True),  # a domain covers its subdomains
    ("api.example.com", 443, ".example.com", True),
    ("example.com", 443, ".example.com", True),
    ("badexample.com", 443, "example.com", False),
    ("api.example.com", 443, "localhost, api.example.com:443", True),
    ("api.example.com", 8443, "api.example.com:443", False),  # a port limits the entry to that port
    ("127.0.0.1", 8080, "127.0.0.1", True),
    ("::1", 8080, "::1", True),
    ("::1", 8080, "[::1]:8080", True),
    ("::1", 8080, "[::1]:9090", False),
])
def test_no_proxy_names_hosts_domains_ports_or_everything(host: str, port: int, no_proxy: str, bypassed: bool) -> None:
    assert _bypasses_proxy(host, port, no_proxy) is bypassed


def test_proxied_and_direct_connections_are_pooled_apart() -> None:
    proxies = {"http": "http://proxy.internal:3128", "https": "http://u:p@proxy.internal:3128", "no": "direct.internal"}
    pool = AsyncPool(proxies=proxies)
    forwarded = pool._route(_parse_url("http://api.internal:8080/v1/chat?x=1"))
    tunnelled = pool._route(_parse_url("https://api.internal/v1/chat"))
    direct = pool._route(_parse_url("http://direct.internal:8080/v1/chat"))
    assert forwarded.key == "http://api.internal:8080 via proxy.internal:3128"
    assert forwarded.request_target == "http://api.internal:8080/v1/chat?x=1"
    assert tunnelled.key == "https://api.internal:443 via proxy.internal:3128"
    assert tunnelled.request_target == "/v1/chat"  # inside the tunnel, an ordinary request
    assert direct.key == "http://direct.internal:8080"
    assert direct.proxy is None
    assert AsyncPool(proxies={})._route(_parse_url("http://api.internal:8080/")).key == "http://api.internal:8080"


def test_proxy_credentials_become_a_basic_header_and_never_part_of_an_error() -> None:
    proxy = _parse_proxy("http://gateway%40corp:s%3Acret@proxy.internal:3128", "https")
    assert proxy.label == "proxy.internal:3128"
    assert proxy.authorization == "Proxy-Authorization: Basic Z2F0ZXdheUBjb3JwOnM6Y3JldA==\r\n"  # gateway@corp:s:cret
    assert _parse_proxy("proxy.internal:3128", "http").label == "proxy.internal:3128"
    for bad in ("socks5://user:hunter2@proxy:1080", "http://user:hunter2@proxy:port"):
        with pytest.raises(ValueError) as failure:
            _parse_proxy(bad, "https")
        assert "hunter2" not in str(failure.value)
        assert str(failure.value) == "the https proxy set in the environment is not an http://host:port URL"
