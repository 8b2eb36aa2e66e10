"""Counts sent without waiting (serving.counters.submit): queued for a moment, then sent together."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from serving import counters
from serving.bridge import run_sync
from serving.store import Command, Store


class CountingStore(Store):
    """A store in this process that remembers each trip (each time it takes its lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[list[Command]] = []

    def run(self, commands: Sequence[Command]) -> list[Any]:
        self.trips.append(list(commands))
        return super().run(commands)


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingStore]:
    counters.reset()
    backend = counters._get()
    store = CountingStore()
    monkeypatch.setattr(backend, "local", store)
    yield store
    counters.reset()


def test_counts_submitted_together_go_in_one_trip_within_the_queue_time(store: CountingStore) -> None:
    seen: list[list[Any]] = []

    async def answers() -> None:
        for n in range(3):
            counters.submit(counters.add_to_window("spend", 60, n + 1), seen.append)
        assert store.trips == []  # not yet: the client was answered without waiting for them
        await asyncio.sleep(counters.QUEUE_SECONDS * 5)

    asyncio.run(answers())
    assert len(store.trips) == 1 and len(store.trips[0]) == 6
    assert seen == [["OK", 1], [None, 3], [None, 6]]  # each submitter gets its own replies, in order
    assert store.run([("GET", "spend")]) == [b"6"]


def test_a_limit_checked_after_a_count_sees_it_in_the_same_trip(store: CountingStore) -> None:
    async def call_then_check() -> list[Any]:
        counters.submit(counters.add_to_window("calls", 60, 5))
        replies = await run_sync(counters.execute, [("GET", "calls")])
        await asyncio.sleep(counters.QUEUE_SECONDS * 5)  # the timer finds nothing left to send
        return replies

    assert asyncio.run(call_then_check()) == [b"5"]
    assert len(store.trips) == 1 and store.trips[0][-1] == ("GET", "calls")


def test_an_error_reply_to_a_queued_count_is_logged_and_its_submitter_not_called(
        store: CountingStore, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(counters, "_last_warning", 0.0)
    called: list[Any] = []

    async def answers() -> None:
        counters.submit([("INCRBY", "n", "not a number")], called.append)
        counters.submit([("INCRBY", "m", 2)], called.append)
        await counters.settle()  # at shutdown: sent at once

    asyncio.run(answers())
    assert called == [[2]]
    assert "a count could not be added: error reply: ERR value is not an integer" in caplog.text


def test_outside_an_event_loop_a_local_count_is_added_at_once(store: CountingStore) -> None:
    counters.submit(counters.add_to_window("now", 60, 2))
    assert store.run([("GET", "now")]) == [b"2"]


def test_with_redis_the_counts_of_one_loop_step_leave_together_at_the_next(monkeypatch: pytest.MonkeyPatch) -> None:
    counters.reset()
    backend = counters._get()
    sent: list[list[Any]] = []

    class Recorder:
        async def execute(self, commands: Sequence[Command]) -> list[Any]:
            sent.append(list(commands))
            return [1] * len(commands)

    monkeypatch.setattr(backend, "local", None)
    monkeypatch.setattr(backend, "backend", lambda: Recorder())
    seen: list[list[Any]] = []

    async def answers() -> None:
        counters.submit([("INCRBY", "a", 1)], seen.append)
        counters.submit([("INCRBY", "b", 2)], seen.append)
        for _ in range(3):  # the next step sends them; a task's step later their replies are in
            await asyncio.sleep(0)

    asyncio.run(answers())
    counters.reset()
    assert sent == [[("INCRBY", "a", 1), ("INCRBY", "b", 2)]] and seen == [[1], [1]]
