"""Run the providers' synchronous code on an event loop, awaiting where it does I/O.

The provider adapters are written once, as plain synchronous code that pulls from iterators (a
chat stream is `parse_chunk(e) for e in iter_sse(response)`). Under the ASGI server each
invocation runs that same code inside a greenlet; where the HTTP seam (or the rate limiter, or a
table rebuild) would block, it hands an awaitable to the event loop with `await_` and resumes with
its result. This is the technique SQLAlchemy's asyncio extension uses for its synchronous core.
A waiting invocation costs a suspended greenlet (a few KiB of saved stack), not a thread.

Every invocation runs this way, whatever server runs the application (start_server's workers,
`manage.py runserver`, the tests): there is no second, blocking road.
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from greenlet import getcurrent, greenlet

T = TypeVar("T")


class _Bridge(greenlet):  # type: ignore[misc]  # greenlet ships no type information
    """A greenlet running synchronous code for a coroutine (its parent, the event loop's greenlet)."""


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
    bridge = _Bridge(fn, getcurrent())
    result = bridge.switch(*args)
    while not bridge.dead:
        try:
            value = await result
        except BaseException:
            result = bridge.throw(*sys.exc_info())
        else:
            result = bridge.switch(value)
    return cast(T, result)


def sleep(seconds: float) -> None:
    """Pause the calling code on the event loop (other requests go on)."""
    await_(asyncio.sleep(seconds))


def to_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run blocking `fn(*args)` (a database query, a file read, botocore's credential chain) in a helper
    thread, and wait for it on the event loop: other requests of the worker go on meanwhile."""
    return await_(asyncio.to_thread(fn, *args))
