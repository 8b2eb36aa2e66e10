"""The embedded counter store (serving.store): Redis's answers for the commands the gateway sends,
checked on the Store with a fake clock and, with the same scripts, against a real Redis when one is
reachable on 127.0.0.1:6379 (database 15, each test under its own key prefix; never flushed); and the
store served on a Unix socket to the gateway's Redis client (serving.resp)."""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from serving import supervisor
from serving.resp import AsyncRedis, RedisAddress, RespError
from serving.store import Store, StoreServer
from tests.conftest import require


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Key(str):
    """A key in a script (prefixed on the real Redis, so that parallel runs do not collide)."""


@dataclass(frozen=True)
class Error:
    """An error reply whose message contains `text` (redis-py drops the leading "ERR ")."""

    text: str


@dataclass(frozen=True)
class Within:
    """An integer reply from `low` to `high` (a PTTL, read on a real clock)."""

    low: int
    high: int


@dataclass(frozen=True)
class Wait:
    seconds: float


Step = tuple[tuple[str, ...], Any] | Wait
A, B, C, D = Key("a"), Key("b"), Key("c"), Key("d")

SCRIPTS: dict[str, list[Step]] = {
    "set-nx-xx-ex-px": [
        (("GET", A), None),
        (("SET", A, "1"), "OK"),
        (("GET", A), b"1"),
        (("SET", A, "2", "NX"), None),
        (("SET", B, "1", "XX"), None),
        (("EXISTS", B), 0),
        (("SET", A, "3", "xx"), "OK"),
        (("SET", A, "4", "NX", "XX"), Error("syntax error")),
        (("SET", A, "4", "EX", "10", "PX", "100"), Error("syntax error")),
        (("SET", A, "4", "EX"), Error("syntax error")),
        (("SET", A, "4", "SOON"), Error("syntax error")),
        (("SET", A, "4", "EX", "0"), Error("invalid expire time in 'set' command")),
        (("SET", A, "4", "PX", "-5"), Error("invalid expire time in 'set' command")),
        (("SET", A, "4", "EX", "ten"), Error("value is not an integer or out of range")),
        (("GET", A), b"3"),  # refused SETs changed nothing
        (("SET", A), Error("wrong number of arguments for 'set' command")),
    ],
    "get-mget-del-exists": [
        (("SET", A, "1"), "OK"),
        (("SET", B, ""), "OK"),
        (("MGET", A, B, C), [b"1", b"", None]),
        (("EXISTS", A, B, C, A), 3),
        (("DEL", A, C, A), 1),
        (("EXISTS", A), 0),
        (("GET", A), None),
        (("GET", A, B), Error("wrong number of arguments for 'get' command")),
        (("MGET",), Error("wrong number of arguments for 'mget' command")),
        (("DEL",), Error("wrong number of arguments for 'del' command")),
        (("EXISTS",), Error("wrong number of arguments for 'exists' command")),
    ],
    "incr-incrby-decrby": [
        (("INCR", A), 1),
        (("INCRBY", A, "41"), 42),
        (("DECRBY", A, "50"), -8),
        (("GET", A), b"-8"),
        (("INCRBY", A, "1.5"), Error("value is not an integer or out of range")),
        (("INCRBY", A, str(2**63)), Error("value is not an integer or out of range")),
        (("SET", B, "abc"), "OK"),
        (("INCR", B), Error("value is not an integer or out of range")),
        (("SET", B, " 1"), "OK"),
        (("INCR", B), Error("value is not an integer or out of range")),
        (("SET", B, "01"), "OK"),
        (("DECRBY", B, "1"), Error("value is not an integer or out of range")),
        (("SET", B, "1_0"), "OK"),
        (("INCR", B), Error("value is not an integer or out of range")),
        (("SET", C, str(2**63 - 1)), "OK"),
        (("INCR", C), Error("increment or decrement would overflow")),
        (("GET", C), str(2**63 - 1).encode()),
        (("INCR", A, "1"), Error("wrong number of arguments for 'incr' command")),
    ],
    "incrbyfloat": [
        (("SET", A, "10.50"), "OK"),
        (("INCRBYFLOAT", A, "0.1"), b"10.6"),
        (("INCRBYFLOAT", A, "-5.1"), b"5.5"),
        (("INCRBYFLOAT", B, "3.0e3"), b"3000"),
        (("INCRBYFLOAT", C, "0.1"), b"0.1"),
        (("INCRBYFLOAT", C, "0.2"), b"0.3"),
        (("INCRBYFLOAT", C, "-0.3"), b"0"),
        (("INCRBYFLOAT", A, "abc"), Error("value is not a valid float")),
        (("INCRBYFLOAT", A, "inf"), Error("increment would produce NaN or Infinity")),
        (("GET", A), b"5.5"),
        (("INCR", A), Error("value is not an integer or out of range")),
        (("SET", D, "x"), "OK"),
        (("INCRBYFLOAT", D, "1"), Error("value is not a valid float")),
    ],
    "ttl-pttl-and-expiry": [
        (("TTL", A), -2),
        (("PTTL", A), -2),
        (("SET", A, "1"), "OK"),
        (("TTL", A), -1),
        (("PTTL", A), -1),
        (("SET", B, "1", "PX", "100"), "OK"),
        (("PTTL", B), Within(1, 100)),
        (("TTL", B), 0),
        Wait(0.15),
        (("GET", B), None),
        (("EXISTS", B), 0),
        (("TTL", B), -2),
        (("SET", C, "1", "EX", "100"), "OK"),
        (("TTL", C), 100),
        (("PTTL", C), Within(99_000, 100_000)),
        (("INCR", C), 2),
        (("TTL", C), 100),  # counting keeps the expiry
        (("SET", C, "5"), "OK"),
        (("TTL", C), -1),  # a plain SET drops it
    ],
    "expire-nx-xx": [
        (("EXPIRE", A, "10"), 0),  # no such key
        (("SET", A, "1"), "OK"),
        (("EXPIRE", A, "10", "XX"), 0),
        (("EXPIRE", A, "10", "NX"), 1),
        (("TTL", A), 10),
        (("EXPIRE", A, "20", "NX"), 0),
        (("TTL", A), 10),
        (("EXPIRE", A, "20", "XX"), 1),
        (("TTL", A), 20),
        (("EXPIRE", A, "30", "NX", "XX"), Error("not compatible")),
        (("EXPIRE", A, "soon"), Error("value is not an integer or out of range")),
        (("EXPIRE", A, "0"), 1),  # a time in the past deletes the key
        (("EXISTS", A), 0),
        (("EXPIRE", A), Error("wrong number of arguments for 'expire' command")),
    ],
    "the-rate-limit-window": [  # serving.ratelimit's pipeline, call after call
        (("SET", A, "0", "EX", "61", "NX"), "OK"),
        (("INCRBY", A, "1"), 1),
        (("SET", A, "0", "EX", "61", "NX"), None),
        (("INCRBY", A, "1"), 2),
        (("TTL", A), 61),
    ],
    "ping-and-unknown-commands": [
        (("PING",), "PONG"),
        (("PING", "hi"), b"hi"),
        (("PING", "a", "b"), Error("wrong number of arguments for 'ping' command")),
        (("NOPE", "x", "y"), Error("unknown command 'NOPE', with args beginning with: 'x' 'y' ")),
        (("nope",), Error("unknown command 'nope', with args beginning with: ")),
    ],
}


def run_on_store(steps: list[Step]) -> None:
    clock = FakeClock()
    store = Store(clock=clock)
    for step in steps:
        if isinstance(step, Wait):
            clock.now += step.seconds
            continue
        command, expected = step
        (reply,) = store.run([command])
        check(command, reply, expected, status_type=str)


def run_on_redis(steps: list[Step], client: redis.Redis, prefix: str) -> None:
    for step in steps:
        if isinstance(step, Wait):
            time.sleep(step.seconds)
            continue
        command, expected = step
        args = [prefix + arg if isinstance(arg, Key) else arg for arg in command]
        try:
            reply: Any = client.execute_command(*args)
        except redis.ResponseError as exc:
            reply = RespError(str(exc))
        check(command, reply, expected, status_type=bytes)


def check(command: tuple[str, ...], reply: Any, expected: Any, *, status_type: type) -> None:
    """Our Store answers a status ("OK") as str, a bulk string as bytes; redis-py reads both as bytes."""
    if isinstance(expected, Error):
        assert isinstance(reply, RespError), f"{command}: {reply!r}, not an error"
        assert expected.text in str(reply), f"{command}: {reply}"
    elif isinstance(expected, Within):
        assert isinstance(reply, int) and expected.low <= reply <= expected.high, f"{command}: {reply!r}"
    elif isinstance(expected, str):
        assert reply == (expected if status_type is str else expected.encode()), f"{command}: {reply!r}"
    else:
        assert reply == expected, f"{command}: {reply!r}"


@pytest.fixture(scope="module")
def real_redis() -> Iterator[redis.Redis]:
    client = redis.Redis(db=15, socket_connect_timeout=1, socket_timeout=5)
    try:
        client.ping()
    except redis.ConnectionError:
        require(False, "Redis is not reachable on 127.0.0.1:6379")
    client.response_callbacks.clear()  # the replies as Redis sent them, not redis-py's conversions
    yield client
    client.close()


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_store_answers_each_command_as_redis_does(name: str) -> None:
    run_on_store(SCRIPTS[name])


@pytest.mark.parametrize("name", SCRIPTS)
def test_redis_gives_the_same_answers_to_the_same_script(name: str, real_redis: redis.Redis) -> None:
    prefix = f"gateway-store-test:{uuid.uuid4().hex}:"
    try:
        run_on_redis(SCRIPTS[name], real_redis, prefix)
    finally:
        real_redis.execute_command("DEL", *(prefix + key for key in (A, B, C, D)))


def test_flushdb_empties_the_store() -> None:  # never sent to the shared Redis
    store = Store()
    assert store.run([("SET", "a", "1"), ("SET", "b", "2", "EX", "10"), ("FLUSHDB",), ("MGET", "a", "b")]) == [
        "OK", "OK", "OK", [None, None]]
    assert len(store) == 0
    assert store.run([("FLUSHDB", "ASYNC"), ("FLUSHDB", "NOW")])[0] == "OK"
    assert str(store.run([("FLUSHDB", "NOW")])[0]) == "ERR syntax error"


def test_expired_keys_are_swept_instead_of_piling_up() -> None:
    clock = FakeClock()
    store = Store(clock=clock)
    store.run([("SET", f"window:{n}", "1", "EX", "60") for n in range(5000)])
    clock.now += 61
    store.run([("INCR", f"next:{n % 10}") for n in range(2000)])
    assert len(store) < 1100


def test_a_pipeline_gets_one_answer_per_command_errors_included() -> None:
    store = Store()
    replies = store.run([("SET", "k", "0", "EX", "61", "NX"), ("INCRBY", "k", "x"), ("INCRBY", "k", "1")])
    assert replies[0] == "OK" and replies[2] == 1
    assert isinstance(replies[1], RespError)


# -- the store served on a Unix socket --------------------------------------------------------------------
@pytest.fixture
def served(tmp_path: Path) -> Iterator[StoreServer]:
    server = StoreServer(str(tmp_path / "counters.sock"))
    server.start()
    yield server
    server.stop()


def client_for(server: StoreServer) -> AsyncRedis:
    address = RedisAddress(host="", port=0, db=0, username=None, password=None, tls=False, path=server.path)
    return AsyncRedis(address, timeout=5)


def test_concurrent_calls_on_the_clients_one_connection_each_get_their_own_answers(served: StoreServer) -> None:
    async def calls() -> list[list[Any]]:
        client = client_for(served)
        try:
            return await asyncio.gather(*(
                client.execute([("SET", f"key:{n}", f"value:{n}"), ("INCR", "total"), ("GET", f"key:{n}")])
                for n in range(300)))
        finally:
            client.close()

    answers = asyncio.run(calls())
    assert [(ok, value) for ok, _, value in answers] == [("OK", f"value:{n}".encode()) for n in range(300)]
    assert sorted(total for _, total, _ in answers) == list(range(1, 301))
    assert served.store.run([("GET", "total")]) == [b"300"]


def raw_exchange(path: str, request: bytes) -> bytes:
    """Send `request` on a fresh connection; everything the store sends back until it closes (or 2 s)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(path)
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<still open>"
        return received


def test_a_malformed_request_is_answered_with_an_error_and_the_connection_is_closed(served: StoreServer) -> None:
    ping = b"*1\r\n$4\r\nPING\r\n"
    assert raw_exchange(served.path, ping + b"hello\r\n") == (
        b"+PONG\r\n-ERR Protocol error: expected an array of bulk strings\r\n")
    assert raw_exchange(served.path, b"*2\r\n$3\r\nGET\r\n:1\r\n").startswith(b"-ERR Protocol error")
    # Empty arrays are skipped without an answer, as Redis does; the connection stays open.
    assert raw_exchange(served.path, b"*0\r\n" + ping) == b"+PONG\r\n<still open>"


def test_a_command_split_over_several_packets_is_answered_once_complete(served: StoreServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        sock.connect(served.path)
        request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        for byte in range(len(request)):
            sock.sendall(request[byte : byte + 1])
        received = b""
        while len(received) < len(b"+OK\r\n$5\r\nhello\r\n"):
            received += sock.recv(65536)
    assert received == b"+OK\r\n$5\r\nhello\r\n"


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_supervisors_store_listens_in_a_private_directory_removed_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = supervisor.start_counter_store()
    assert store is not None
    directory = os.path.dirname(store.path)
    try:
        assert os.path.dirname(directory) == str(tmp_path)
        assert mode(directory) == 0o700
        assert stat.S_ISSOCK(os.stat(store.path).st_mode)
        assert mode(store.path) & 0o077 == 0  # nobody else may even connect
    finally:
        supervisor.stop_counter_store(store)
    assert not os.path.exists(directory)


def test_a_store_that_cannot_listen_leaves_no_directory_behind(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refuse(self: StoreServer) -> None:
        raise OSError("no room for a socket")

    monkeypatch.setattr(StoreServer, "start", refuse)
    with pytest.raises(OSError, match="no room"):
        supervisor.start_counter_store()
    assert list(tmp_path.iterdir()) == []


def test_with_redis_url_the_supervisor_runs_no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert supervisor.start_counter_store() is None

