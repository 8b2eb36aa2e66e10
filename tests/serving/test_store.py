"""The counter store (serving.store): Redis's answers for the commands the gateway sends, checked on the
Store with a fake clock and, with the same scripts, against a real Redis when one is reachable on
127.0.0.1:6379 (database 15, each test under its own key prefix; never flushed); and the same scripts on
the shared-memory store of start_server's workers (serving.sharedstore), shared by processes."""
from __future__ import annotations

import asyncio
import os
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

from serving import sharedstore, supervisor
from serving.resp import RespError
from serving.sharedstore import SharedStore
from serving.store import Store
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


Step = tuple[tuple[str | int, ...], Any] | Wait
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
    "the-window-as-the-gateway-sends-it": [  # integers, not text: the store's fast path reads these
        (("SET", A, 0, "EX", 1, "NX"), "OK"),
        (("INCRBY", A, 1), 1),
        (("SET", A, 0, "EX", 1, "NX"), None),
        (("INCRBY", A, 5), 6),
        (("INCRBY", A, 2**63 - 1), Error("increment or decrement would overflow")),
        (("INCRBY", A, -8), -2),
        (("GET", A), b"-2"),
        (("TTL", A), 1),
        (("INCRBY", A, 2**63), Error("value is not an integer or out of range")),
        (("SET", B, 0, "EX", 0, "NX"), Error("invalid expire time in 'set' command")),
        (("SET", B, 0, "EX", 2**63, "NX"), Error("value is not an integer or out of range")),
        Wait(1.1),
        (("GET", A), None),
        (("INCRBY", A, 3), 3),  # a key that expired counts from 0, and lives until deleted
        (("TTL", A), -1),
        (("SET", A, 0, "EX", 5, "NX"), None),
    ],
    "window-pairs": [  # SET NX + INCRBY on one key: the stores run such a pair as one step when piped together
        (("SET", A, 0, "EX", 60, "NX"), "OK"),
        (("INCRBY", A, 1), 1),
        (("SET", A, 0, "EX", 60, "NX"), None),
        (("INCRBY", A, 2**63 - 1), Error("increment or decrement would overflow")),
        (("GET", A), b"1"),
        (("SET", B, 5, "EX", 60, "NX"), "OK"),
        (("INCRBY", B, -2), 3),
        (("SET", C, 2**63 - 1, "EX", 60, "NX"), "OK"),
        (("INCRBY", C, 1), Error("increment or decrement would overflow")),
        (("GET", C), str(2**63 - 1).encode()),  # created by the SET, whatever the INCRBY did
        (("TTL", C), 60),
        (("SET", D, 0, "EX", 60, "NX"), "OK"),
        (("INCRBY", A, 1), 2),  # another key's INCRBY: not a pair
        (("SET", D, 0, "EX", 60, "NX"), None),
        (("INCRBY", D, "1"), 1),  # text, as another client may send it
        (("TTL", A), 60),
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


def check(command: tuple[str | int, ...], reply: Any, expected: Any, *, status_type: type) -> None:
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


# -- the shared-memory store of start_server's workers ----------------------------------------------------
# The scripts whose values are all integers (the shared store holds nothing else, as the gateway counts).
INTEGER_SCRIPTS = ("set-nx-xx-ex-px", "ttl-pttl-and-expiry", "expire-nx-xx", "the-rate-limit-window",
                   "the-window-as-the-gateway-sends-it", "window-pairs", "ping-and-unknown-commands")


def pipelines(steps: list[Step]) -> Iterator[list[tuple[tuple[str | int, ...], Any]] | Wait]:
    """The steps as a client sends them: a SET followed by an INCRBY in one pipeline (the two on one key are
    a window's pair, which the stores run as one step), every other command alone."""
    index = 0
    while index < len(steps):
        step = steps[index]
        following = steps[index + 1] if index + 1 < len(steps) else None
        if isinstance(step, Wait):
            yield step
            index += 1
        elif not isinstance(following, Wait) and following is not None and step[0][0] == "SET" \
                and following[0][0] == "INCRBY":
            yield [step, following]
            index += 2
        else:
            yield [step]
            index += 1


@pytest.mark.parametrize("kind", ["memory", "shared"])
@pytest.mark.parametrize("name", INTEGER_SCRIPTS)
def test_a_window_pair_in_one_pipeline_answers_as_its_two_commands_do(name: str, kind: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store = Store(clock=clock) if kind == "memory" else shared(tmp_path / "counters", clock)
    pairs = 0
    for group in pipelines(SCRIPTS[name]):
        if isinstance(group, Wait):
            clock.now += group.seconds
            continue
        pairs += len(group) == 2
        replies = store.run([plain(command) for command, _ in group])
        for (command, expected), reply in zip(group, replies, strict=True):
            check(command, reply, expected, status_type=str)
    assert pairs or name in ("set-nx-xx-ex-px", "ttl-pttl-and-expiry", "expire-nx-xx", "ping-and-unknown-commands")


def test_a_window_pair_in_a_full_shared_table_is_two_error_replies(tmp_path: Path) -> None:
    store = shared(tmp_path / "counters", slots=8)
    store.run([("SET", f"k{n}", "1") for n in range(8)])
    created, counted = store.run([("SET", "new", 0, "EX", 60, "NX"), ("INCRBY", "new", 1)])
    assert str(created) == str(counted) == "ERR the shared counters table is full"


def shared(path: Path, clock: Any = time.monotonic, slots: int = 1024) -> SharedStore:
    if not path.exists():
        sharedstore.create(str(path), slots)
    return SharedStore(str(path), clock)


@pytest.mark.parametrize("name", INTEGER_SCRIPTS)
def test_the_shared_store_answers_each_command_as_redis_does(name: str, tmp_path: Path) -> None:
    clock = FakeClock()
    store = shared(tmp_path / "counters", clock)
    for step in SCRIPTS[name]:
        if isinstance(step, Wait):
            clock.now += step.seconds
            continue
        command, expected = step
        (reply,) = store.run([plain(command)])
        check(command, reply, expected, status_type=str)


def plain(command: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """The command with its keys as the gateway sends them: plain str."""
    return tuple(str(arg) if isinstance(arg, Key) else arg for arg in command)


def test_the_shared_store_holds_integers_only(tmp_path: Path) -> None:
    store = shared(tmp_path / "counters")
    replies = store.run([("SET", "a", "abc"), ("SET", "a", "-12"), ("INCRBY", "a", "2"), ("GET", "a")])
    assert str(replies[0]) == "ERR the shared counters hold integers only"
    assert replies[1:] == ["OK", -10, b"-10"]


def test_two_stores_on_one_file_see_each_others_counts(tmp_path: Path) -> None:
    first, second = shared(tmp_path / "counters"), shared(tmp_path / "counters")
    assert first.run([("SET", "w", "0", "EX", "60", "NX"), ("INCRBY", "w", "1")]) == ["OK", 1]
    assert second.run([("SET", "w", "0", "EX", "60", "NX"), ("INCRBY", "w", "1")]) == [None, 2]
    assert 59 <= second.run([("TTL", "w")])[0] <= 60
    assert first.run([("DEL", "w"), ("EXISTS", "w")]) == [1, 0]


COUNT_IN_ANOTHER_PROCESS = """
import sys
from serving.sharedstore import SharedStore
store = SharedStore(sys.argv[1])
for _ in range(int(sys.argv[2])):
    store.run([("SET", "total", "0", "EX", "60", "NX"), ("INCRBY", "total", "1")])
"""


def test_counts_from_several_processes_at_once_are_exact(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "counters"
    store = shared(path)
    root = Path(__file__).resolve().parents[2]
    processes = [subprocess.Popen([sys.executable, "-c", COUNT_IN_ANOTHER_PROCESS, str(path), "2000"], cwd=root)
                 for _ in range(4)]
    for _ in range(2000):
        store.run([("SET", "total", "0", "EX", "60", "NX"), ("INCRBY", "total", "1")])
    assert [process.wait(60) for process in processes] == [0] * 4
    assert store.run([("GET", "total")]) == [b"10000"]


def test_a_lock_held_by_another_store_of_the_process_is_waited_for_without_the_gil(tmp_path: Path) -> None:
    """The lock is taken holding the GIL only when it is free: a store that waits for it lets the holder (here
    another thread of the same process) finish, instead of stopping every thread of the process."""
    import threading

    first, second = shared(tmp_path / "counters"), shared(tmp_path / "counters")
    inside, release = threading.Event(), threading.Event()
    slow_run = first._run

    def hold(commands: Any) -> Any:
        inside.set()
        release.wait(10)  # lets go of the GIL: the other threads run while the lock is held
        return slow_run(commands)

    first._run = hold  # type: ignore[method-assign]
    holder = threading.Thread(target=first.run, args=([("INCRBY", "n", 1)],))
    holder.start()
    assert inside.wait(5)
    replies: list[Any] = []
    waiter = threading.Thread(target=lambda: replies.extend(second.run([("INCRBY", "n", 10)])))
    waiter.start()
    time.sleep(0.2)
    assert waiter.is_alive() and not replies  # waiting for the lock, without stopping this thread
    release.set()
    holder.join(5)
    waiter.join(5)
    assert not holder.is_alive() and not waiter.is_alive()
    assert replies == [11] and first.run([("GET", "n")]) == [b"11"]


def test_expired_slots_are_reused_and_a_full_table_is_an_error_reply(tmp_path: Path) -> None:
    clock = FakeClock()
    store = shared(tmp_path / "counters", clock, slots=64)
    assert store.run([("SET", f"k{n}", "1", "EX", "10") for n in range(64)]) == ["OK"] * 64
    assert len(store) == 64
    (full,) = store.run([("SET", "one-more", "1")])
    assert str(full) == "ERR the shared counters table is full"
    clock.now += 11
    assert len(store) == 0
    assert store.run([("SET", f"next{n}", "1") for n in range(64)]) == ["OK"] * 64  # the expired slots, reused


def test_the_counters_limit_apply_when_the_table_is_full_as_when_redis_is_away(tmp_path: Path) -> None:
    """An error reply from the counters makes the limits fail open (or closed), as Redis being away does."""
    from serving import counters

    store = shared(tmp_path / "counters", slots=8)
    store.run([("SET", f"k{n}", "1") for n in range(8)])

    async def count() -> Any:
        return await counters._checked(store, [("INCRBY", "new", 1)])

    with pytest.raises(counters.CounterUnavailable, match="table is full"):
        asyncio.run(count())


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_supervisors_counters_file_is_private_and_removed_at_the_end(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    store = supervisor.start_counter_store()
    assert store is not None
    directory = os.path.dirname(store.path)
    try:
        assert os.path.dirname(directory) == str(tmp_path)
        assert mode(directory) == 0o700
        assert mode(store.path) == 0o600
        assert SharedStore(store.path).run([("INCR", "x")]) == [1]
    finally:
        supervisor.stop_counter_store(store)
    assert not os.path.exists(directory)


def test_a_counters_file_that_cannot_be_made_leaves_no_directory_behind(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    def refuse(path: str, slots: int = 0) -> None:
        raise OSError("no room for a file")

    monkeypatch.setattr(sharedstore, "create", refuse)
    with pytest.raises(OSError, match="no room"):
        supervisor.start_counter_store()
    assert list(tmp_path.iterdir()) == []


def test_with_redis_url_the_supervisor_makes_no_counters_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert supervisor.start_counter_store() is None


def test_a_window_pair_looks_its_key_up_once_in_the_shared_table(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    store = shared(tmp_path / "counters")
    lookups: list[bytes] = []
    find = store._find
    def counted(key: bytes, clock: float | None = None) -> tuple[int, int, bool]:
        lookups.append(key)
        return find(key, clock)

    monkeypatch.setattr(store, "_find", counted)
    assert store.run([("SET", "w", 0, "EX", 60, "NX"), ("INCRBY", "w", 1), ("SET", "v", 0, "EX", 60, "NX"),
                      ("INCRBY", "v", 4)]) == ["OK", 1, "OK", 4]
    assert lookups == [b"w", b"v"]
