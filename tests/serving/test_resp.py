"""The rate limiter's asyncio Redis client (serving.resp): the wire format, URLs, and its
behaviour against the real Redis and against local servers that misbehave."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import redis

from serving.resp import (
    _INCOMPLETE,
    AsyncRedis,
    RedisAddress,
    RespConnectionError,
    RespError,
    encode_command,
    parse_reply,
)
from tests.conftest import require

REDIS_DB = 6  # the test suite's other Redis users take 1 (REDIS_URL) and 5 (multi-instance)


@pytest.mark.parametrize(
    ("args", "wire"),
    [
        (("PING",), b"*1\r\n$4\r\nPING\r\n"),
        (("INCR", "ratelimit:chat:60:1"), b"*2\r\n$4\r\nINCR\r\n$19\r\nratelimit:chat:60:1\r\n"),
        (("EXPIRE", "k", 61, "NX"), b"*4\r\n$6\r\nEXPIRE\r\n$1\r\nk\r\n$2\r\n61\r\n$2\r\nNX\r\n"),
        (("SET", "k", b"\r\n"), b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\r\n\r\n"),
        (("SET", "clé", "é"), "*3\r\n$3\r\nSET\r\n$4\r\nclé\r\n$2\r\né\r\n".encode()),
    ],
)
def test_it_encodes_commands_as_arrays_of_bulk_strings(args: tuple[Any, ...], wire: bytes) -> None:
    assert encode_command(*args) == wire


@pytest.mark.parametrize(
    ("wire", "value", "consumed"),
    [
        (b":42\r\n", 42, 5),
        (b":-1\r\n:7\r\n", -1, 5),
        (b"+OK\r\n", "OK", 5),
        (b"$3\r\nabc\r\n", b"abc", 9),
        (b"$0\r\n\r\n", b"", 6),
        (b"$-1\r\n", None, 5),
        (b"*2\r\n:1\r\n$2\r\nhi\r\n", [1, b"hi"], 16),
        (b"*0\r\n", [], 4),
        (b"*-1\r\n", None, 5),
        (b"*2\r\n*1\r\n:1\r\n:2\r\n", [[1], 2], 16),
    ],
)
def test_it_parses_each_kind_of_reply(wire: bytes, value: Any, consumed: int) -> None:
    assert parse_reply(wire) == (value, consumed)


def test_an_error_reply_is_a_value_not_an_exception() -> None:
    error, consumed = parse_reply(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n")
    assert isinstance(error, RespError)
    assert str(error).startswith("WRONGTYPE Operation")
    assert consumed == 68


@pytest.mark.parametrize(
    "wire", [b"", b":4", b":42\r", b"$3\r\nab", b"$3\r\nabc\r", b"*2\r\n:1\r\n", b"*2\r\n:1\r\n$2\r\nh"]
)
def test_a_reply_cut_short_is_incomplete_and_consumes_nothing(wire: bytes) -> None:
    assert parse_reply(wire) == (_INCOMPLETE, 0)


def test_an_unknown_reply_type_is_refused() -> None:
    with pytest.raises(RespConnectionError, match="unexpected reply"):
        parse_reply(b"%1\r\n")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:6379/1", RedisAddress("127.0.0.1", 6379, 1, None, None, False)),
        ("redis://cache", RedisAddress("cache", 6379, 0, None, None, False)),
        ("redis://:s%40cret@cache:6380/0", RedisAddress("cache", 6380, 0, None, "s@cret", False)),
        ("redis://gateway:pw@cache/3", RedisAddress("cache", 6379, 3, "gateway", "pw", False)),
        ("redis://cache?db=4&password=pw", RedisAddress("cache", 6379, 4, None, "pw", False)),
        ("rediss://cache.example.com:6380", RedisAddress("cache.example.com", 6380, 0, None, None, True)),
        ("rediss://cache:6380/0?ssl_cert_reqs=none",
         RedisAddress("cache", 6380, 0, None, None, True, cert_reqs="none")),
        ("rediss://cache?ssl_ca_certs=/etc/ca.pem",
         RedisAddress("cache", 6379, 0, None, None, True, ca_certs="/etc/ca.pem")),
        ("unix:///run/redis.sock", RedisAddress("", 0, 0, None, None, False, path="/run/redis.sock")),
        ("unix://:pw@/run/redis.sock?db=2", RedisAddress("", 0, 2, None, "pw", False, path="/run/redis.sock")),
    ],
)
def test_it_reads_the_urls_redis_py_reads(url: str, expected: RedisAddress) -> None:
    assert RedisAddress.parse(url) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://cache:6379/0?socket_timeout=3", "unsupported option(s) socket_timeout"),
        ("redis://cache/not-a-number", "'not-a-number' is not a number"),
        ("redis://cache:99999", "the port is not a number"),
        ("http://cache:6379", "the scheme must be"),
        ("unix://", "needs the socket's path"),
        ("rediss://cache?ssl_cert_reqs=maybe", "ssl_cert_reqs must be"),
    ],
)
def test_it_refuses_other_urls_saying_why(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        RedisAddress.parse(url)


# -- against the real Redis ----------------------------------------------------------------------------------
@dataclass
class RealRedis:
    client: redis.Redis
    prefix: str  # this test's own keys: parallel test workers share the database

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"


@pytest.fixture
def real_redis() -> Iterator[RealRedis]:
    client = redis.Redis(host="127.0.0.1", port=6379, db=REDIS_DB, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.exceptions.ConnectionError:
        require(False, "Redis is not reachable on 127.0.0.1:6379")
    prefix = f"test-resp:{uuid.uuid4().hex}:"
    yield RealRedis(client, prefix)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)


def run(scenario: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    return asyncio.run(scenario())


class CountingRedis(AsyncRedis):
    connections_opened = 0

    async def _open(self) -> Any:
        self.connections_opened += 1
        return await super()._open()


def test_concurrent_calls_share_one_connection_and_each_gets_its_own_answers(real_redis: RealRedis) -> None:
    key = real_redis.key("k")
    client = CountingRedis(RedisAddress.parse(f"redis://127.0.0.1:6379/{REDIS_DB}"), timeout=5)

    async def scenario() -> list[list[Any]]:
        try:
            calls = [client.execute([("INCR", key), ("EXPIRE", key, 60, "NX")]) for _ in range(200)]
            return await asyncio.gather(*calls)
        finally:
            client.close()

    answers = run(scenario)
    assert sorted(count for count, _ in answers) == list(range(1, 201))  # every INCR's own count, none lost
    assert [expire for _, expire in answers].count(1) == 1  # only the first EXPIRE NX set the TTL
    assert client.connections_opened == 1
    assert int(real_redis.client.get(key) or 0) == 200  # in the database of the URL
    assert 0 < real_redis.client.ttl(key) <= 60


def test_an_error_reply_comes_back_in_its_place(real_redis: RealRedis) -> None:
    text, number = real_redis.key("text"), real_redis.key("n")
    real_redis.client.set(text, "not a number")
    client = AsyncRedis(RedisAddress.parse(f"redis://127.0.0.1:6379/{REDIS_DB}"), timeout=5)

    async def scenario() -> list[Any]:
        try:
            return await client.execute([("INCR", text), ("INCR", number)])
        finally:
            client.close()

    error, count = run(scenario)
    assert isinstance(error, RespError) and "not an integer" in str(error)
    assert count == 1


def test_a_refused_set_up_is_a_connection_error(real_redis: RealRedis) -> None:
    # This Redis has no password: AUTH is refused, and the client says why.
    client = AsyncRedis(RedisAddress.parse("redis://:wrong@127.0.0.1:6379/0"), timeout=5)
    with pytest.raises(RespConnectionError, match=r"refused the connection set-up: .*AUTH"):
        run(lambda: client.execute([("PING",)]))


# -- against local servers that misbehave ----------------------------------------------------------------------
ServerBehaviour = Callable[[int, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serving(behaviour: ServerBehaviour, scenario: Callable[[AsyncRedis], Awaitable[Any]]) -> Any:
    """Run `scenario(client)` against a local server; `behaviour` gets each connection's number."""
    accepted = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        try:
            await behaviour(accepted, reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = AsyncRedis(RedisAddress("127.0.0.1", port, 0, None, None, False), timeout=0.3)
    try:
        return await scenario(client)
    finally:
        client.close()
        server.close()


async def read_command(reader: asyncio.StreamReader) -> None:
    header = await reader.readline()
    for _ in range(int(header[1:]) * 2):
        await reader.readline()


def test_a_connection_lost_before_the_answer_fails_the_call_and_the_next_call_reconnects() -> None:
    async def behaviour(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_command(reader)
        if number == 1:
            return  # closes without answering
        writer.write(b":7\r\n")
        await writer.drain()
        await reader.read()

    async def scenario(client: AsyncRedis) -> list[Any]:
        with pytest.raises(RespConnectionError, match="lost"):
            await client.execute([("INCR", "k")])
        return await client.execute([("INCR", "k")])

    assert run(lambda: serving(behaviour, scenario)) == [7]


def test_a_silent_server_times_out_and_the_next_call_gets_a_fresh_connection() -> None:
    async def behaviour(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_command(reader)
        if number == 1:
            await asyncio.sleep(5)  # never answers in time
            return
        writer.write(b":1\r\n")
        await writer.drain()
        await reader.read()

    async def scenario(client: AsyncRedis) -> list[Any]:
        with pytest.raises(TimeoutError):
            await client.execute([("INCR", "k")])
        return await client.execute([("INCR", "k")])

    assert run(lambda: serving(behaviour, scenario)) == [1]


def test_garbage_from_the_server_fails_the_call() -> None:
    async def behaviour(number: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_command(reader)
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def scenario(client: AsyncRedis) -> None:
        await client.execute([("INCR", "k")])

    with pytest.raises(RespConnectionError, match="cannot read"):
        run(lambda: serving(behaviour, scenario))


def test_an_unreachable_redis_is_a_connection_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens there once closed
    client = AsyncRedis(RedisAddress("127.0.0.1", port, 0, None, None, False), timeout=2)
    with pytest.raises(RespConnectionError, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
        run(lambda: client.execute([("PING",)]))


def test_a_call_on_a_connection_lost_in_the_meantime_fails_at_once() -> None:
    """A connection can be lost between being handed to a caller and its command being sent: the
    call fails then, instead of waiting for an answer that cannot come."""
    from serving.resp import _Connection

    async def scenario() -> None:
        connection = _Connection()
        connection.connection_lost(None)
        future: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        connection.send(encode_command("PING"), 1, future)
        assert future.done()
        with pytest.raises(RespConnectionError, match="lost"):
            future.result()

    run(scenario)
