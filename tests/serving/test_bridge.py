"""The async bridge: synchronous provider code awaiting on an event loop."""
from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from serving.bridge import await_, run_sync, sleep, to_thread


async def _value(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def _fail() -> None:
    await asyncio.sleep(0)
    raise ValueError("from the loop")


def test_synchronous_code_gets_what_it_awaits_and_returns_its_result() -> None:
    def add() -> int:
        return await_(_value(2)) + await_(_value(3))

    assert asyncio.run(run_sync(add)) == 5


def test_an_awaited_exception_is_raised_inside_and_can_be_caught_there() -> None:
    def catch() -> str:
        try:
            await_(_fail())
        except ValueError as exc:
            return f"caught {exc}"
        return "not raised"

    assert asyncio.run(run_sync(catch)) == "caught from the loop"


def test_what_the_synchronous_code_raises_reaches_the_coroutine() -> None:
    def fail() -> None:
        await_(_value(1))
        raise KeyError("inside")

    with pytest.raises(KeyError, match="inside"):
        asyncio.run(run_sync(fail))


def test_await_outside_a_bridge_is_refused() -> None:
    with pytest.raises(RuntimeError, match="outside run_sync"):
        await_(_value(1))


def test_a_generator_pulled_one_item_per_bridge_call_awaits_in_each() -> None:
    """How an SSE stream is served: each chunk is pulled by its own run_sync(next, ...)."""

    def numbers() -> Iterator[int]:
        for value in range(3):
            yield await_(_value(value * 10))

    async def pull() -> list[int | None]:
        iterator = numbers()
        return [await run_sync(next, iterator, None) for _ in range(4)]

    assert asyncio.run(pull()) == [0, 10, 20, None]


def test_a_sleeping_bridge_lets_other_work_run_on_the_loop() -> None:
    order: list[str] = []

    def slow() -> None:
        order.append("slow starts")
        sleep(0.05)
        order.append("slow ends")

    def quick() -> None:
        order.append("quick runs")

    async def both() -> None:
        await asyncio.gather(run_sync(slow), run_sync(quick))

    asyncio.run(both())
    assert order == ["slow starts", "quick runs", "slow ends"]


def test_cancelling_the_coroutine_raises_inside_so_cleanup_runs() -> None:
    cleaned: list[str] = []

    def waits_forever() -> None:
        try:
            await_(asyncio.sleep(60))
        finally:
            cleaned.append("closed the upstream")

    async def cancel() -> None:
        task = asyncio.ensure_future(run_sync(waits_forever))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel())
    assert cleaned == ["closed the upstream"]


def test_blocking_work_runs_in_a_helper_thread_while_the_loop_goes_on() -> None:
    import threading
    import time

    ticks: list[float] = []

    def blocking() -> str:
        time.sleep(0.2)
        return threading.current_thread().name

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(time.monotonic())
            await asyncio.sleep(0.02)

    async def scenario() -> str:
        tick = asyncio.ensure_future(ticker())
        name = await run_sync(to_thread, blocking)
        await tick
        return name

    name = asyncio.run(scenario())
    assert name != threading.current_thread().name
    assert len(ticks) == 5 and ticks[-1] - ticks[0] < 0.19  # the loop ticked while the thread slept


def test_a_finished_bridge_serves_the_next_call_in_an_empty_context() -> None:
    """Greenlets are reused (a new one costs a fresh frame stack), but no call sees what the last one set."""
    import contextvars

    from greenlet import getcurrent

    seen = contextvars.ContextVar("seen", default="unset")

    def call(mark: str) -> tuple[object, str]:
        before = seen.get()
        seen.set(mark)
        await_(_value(0))
        return getcurrent(), before

    async def calls() -> list[tuple[object, str]]:
        return [await run_sync(call, "first"), await run_sync(call, "second")]

    (first, before_first), (second, before_second) = asyncio.run(calls())
    assert first is second  # the same greenlet ran both
    assert before_first == before_second == "unset"


def test_a_failed_call_leaves_its_bridge_usable_and_the_idle_ones_are_bounded() -> None:
    from serving import bridge

    def fail() -> None:
        raise KeyError("inside")

    def wait(value: int) -> int:
        return await_(_value(value))

    async def scenario() -> list[int]:
        with pytest.raises(KeyError, match="inside"):
            await run_sync(fail)
        with pytest.raises(SystemExit):  # not only Exceptions travel
            await run_sync(sys_exit)
        return list(await asyncio.gather(*(run_sync(wait, n) for n in range(bridge.IDLE_BRIDGES + 30))))

    def sys_exit() -> None:
        raise SystemExit(3)

    assert asyncio.run(scenario()) == list(range(bridge.IDLE_BRIDGES + 30))
    assert len(bridge._idle.bridges) == bridge.IDLE_BRIDGES  # 94 ran at once; the rest ended


def test_each_thread_has_its_own_idle_bridges() -> None:
    import threading

    from greenlet import getcurrent

    def where() -> int:
        return id(getcurrent().parent)

    asyncio.run(run_sync(where))  # leaves an idle bridge in this thread
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(asyncio.run(run_sync(where))))
    thread.start()
    thread.join()
    assert results and results[0] != id(getcurrent())  # the other thread's bridge returned to that thread


def test_an_idle_bridge_holds_nothing_of_its_last_call() -> None:
    """A reused greenlet must not keep its last answer (or an error's traceback and its frames) alive while it
    waits: with the garbage collector off, both are freed as soon as the caller drops them."""
    import gc
    import weakref

    class Big:
        pass

    refs: list[weakref.ref[Big]] = []

    def answer() -> Big:
        big = Big()
        refs.append(weakref.ref(big))
        await_(_value(0))
        return big

    def fail() -> None:
        big = Big()
        refs.append(weakref.ref(big))
        await_(_value(0))
        raise ValueError(f"failed beside {big!r}")

    async def scenario() -> None:
        await run_sync(answer)  # the answer is dropped at once
        try:
            await run_sync(fail)
        except ValueError:
            pass

    gc.disable()
    try:
        asyncio.run(scenario())
        assert [ref() for ref in refs] == [None, None]
    finally:
        gc.enable()
