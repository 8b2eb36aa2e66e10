"""Run the providers' synchronous code on an event loop, awaiting where it does I/O.

The provider adapters are written once, as plain synchronous code that pulls from iterators (a
chat stream is `parse_chunk(e) for e in iter_sse(response)`). Under the ASGI server each
invocation runs that same code inside a greenlet; where the HTTP seam (or the rate limiter, or a
table rebuild) would block, it hands an awaitable to the event loop with `await_` and resumes with
its result. This is the technique SQLAlchemy's asyncio extension uses for its synchronous core.
A waiting invocation costs a suspended greenlet (a few KiB of saved stack), not a thread.

A greenlet that has finished its call waits for the next one (up to IDLE_BRIDGES per thread) instead of
ending: a new greenlet costs a fresh 16 KiB frame stack (an `mmap` and `munmap` and their page faults
per call), and a reused one starts each call in an empty `contextvars` context, as a new one would.

Every invocation runs this way, whatever server runs the application (start_server's workers,
`manage.py runserver`, the tests): there is no second, blocking road.
"""
from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from greenlet import GreenletExit, getcurrent, greenlet

T = TypeVar("T")

IDLE_BRIDGES = 64  # finished greenlets kept per thread for the next calls


class _Bridge(greenlet):  # type: ignore[misc]  # greenlet ships no type information
    """A greenlet running synchronous code for a coroutine (its parent, the event loop's greenlet)."""

    outcome: _Outcome | None = None  # how its last call ended, until run_sync takes it


class _Outcome:
    """How a call ended: its value, or what it raised."""

    __slots__ = ("error", "value")

    def __init__(self, value: Any = None, error: BaseException | None = None) -> None:
        self.value = value
        self.error = error


_FINISHED = object()  # what a bridge hands over when its call has ended (anything else is an awaitable)


class _Idle(threading.local):
    def __init__(self) -> None:
        self.bridges: list[_Bridge] = []


_idle = _Idle()


def _serve(fn: Callable[..., Any], args: tuple[Any, ...]) -> object:
    """A bridge's life: make a call, leave its outcome on the bridge, wait in the idle list for the next call.
    Nothing of a call is held while the bridge waits: the outcome is on the bridge, not in this frame."""
    this = getcurrent()
    idle = _idle.bridges
    while True:
        try:
            this.outcome = _Outcome(fn(*args))
        except GreenletExit:  # the greenlet is being collected in the middle of a call: let it end
            raise
        except BaseException as error:  # the caller raises it
            this.outcome = _Outcome(error=error)
        fn = args = None  # type: ignore[assignment]
        if len(idle) >= IDLE_BRIDGES:
            return _FINISHED
        idle.append(this)
        fn, args = this.parent.switch(_FINISHED)


def await_(awaitable: Awaitable[T]) -> T:
    """Wait for `awaitable` on the event loop from synchronous code running inside `run_sync`."""
    current = getcurrent()
    if not isinstance(current, _Bridge):
        close = getattr(awaitable, "close", None)
        if close is not None:
            close()  # a coroutine never awaited would warn
        raise RuntimeError("await_() called outside run_sync()")
    return cast(T, current.parent.switch(awaitable))


async def run_sync(fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(*args)` in a greenlet; each awaitable it passes to `await_` is awaited here.

    Exceptions, cancellation included, travel both ways: an awaitable's exception is raised inside
    `fn` at its `await_`, and whatever `fn` raises is raised here."""
    here = getcurrent()
    idle = _idle.bridges
    if idle:
        bridge = idle.pop()
        bridge.gr_context = None  # an empty context, as a new greenlet's
        if bridge.parent is not here:
            bridge.parent = here
    else:
        bridge = _Bridge(_serve, here)
    result = bridge.switch(fn, args)
    while result is not _FINISHED:
        try:
            value = await result
        except BaseException:
            result = bridge.throw(*sys.exc_info())
        else:
            result = bridge.switch(value)
    outcome, bridge.outcome = bridge.outcome, None
    assert outcome is not None
    if outcome.error is None:
        return cast(T, outcome.value)
    error, outcome = outcome.error, None
    try:
        raise error
    finally:
        del error  # no cycle through this frame's traceback


def sleep(seconds: float) -> None:
    """Pause the calling code on the event loop (other requests go on)."""
    await_(asyncio.sleep(seconds))


def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn(*args)` (a database query, a file read, botocore's credential chain) in a helper
    thread, and wait for it on the event loop: other requests of the worker go on meanwhile."""
    return await_(asyncio.to_thread(fn, *args))
