"""Where the counts that every worker and instance must share live, and the one way to reach them.

Rate limits (and, after them, budgets and circuit state) are Redis commands, sent by the one Redis
client (serving.resp) to one of three places, chosen once per process:

- REDIS_URL: Redis, shared by every worker of every instance;
- GATEWAY_COUNTERS_FILE (set by start_server's supervisor for its workers when REDIS_URL is not):
  the server's counters file in shared memory (serving.sharedstore), mapped by each of its workers;
- neither (`manage.py runserver`, the tests): a Store in this process, its only worker.

Keys carry a prefix (GATEWAY_REDIS_PREFIX, default "gateway") so that a Redis database can be shared.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from django.conf import settings
from django.core.signals import setting_changed

from serving.bridge import await_
from serving.resp import AsyncRedis, RedisAddress, RespConnectionError, RespError
from serving.sharedstore import SharedStore
from serving.store import Store

logger = logging.getLogger(__name__)

class CounterUnavailable(Exception):
    """The counters could not be reached or did not answer (the message says why)."""


class Backend(Protocol):
    async def execute(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]: ...


class _Counters:
    """The process's backend: a Store, or one AsyncRedis per event loop (its connection belongs to one)."""

    def __init__(self) -> None:
        url = settings.REDIS_URL or ""
        shared = settings.GATEWAY_COUNTERS_FILE
        self.address: RedisAddress | None = None
        self.local: Store | None = None
        if url:
            self.address = RedisAddress.parse(url)
        elif shared:
            self.local = SharedStore(shared)
        else:
            self.local = Store()
        self.where = "in Redis" if url else "in the server's shared memory" if shared else "in this process"
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = weakref.WeakKeyDictionary()

    def backend(self) -> Backend:
        if self.local is not None:
            return self.local
        assert self.address is not None
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = AsyncRedis(self.address, timeout=settings.GATEWAY_RATE_LIMIT_TIMEOUT,
                                                      cooldown=settings.GATEWAY_REDIS_BREAKER_SECONDS)
        return client


_counters: _Counters | None = None


def _get() -> _Counters:
    global _counters
    if _counters is None:
        _counters = _Counters()
    return _counters


def key(*parts: str | int) -> str:
    """A key under this gateway's prefix."""
    return ":".join((settings.GATEWAY_REDIS_PREFIX, *(str(part) for part in parts)))


_window_keys: dict[tuple[str, str, int, int], str] = {}


def window_key(kind: str, scope: str, period: int, window: int) -> str:
    """key(kind, scope, period, window), worked out once per window (every call of a window needs it)."""
    found = _window_keys.get((kind, scope, period, window))
    if found is None:
        if len(_window_keys) >= 4096:  # windows pass and scopes come and go with the config
            _window_keys.clear()
        found = _window_keys[kind, scope, period, window] = key(kind, scope, period, window)
    return found


def _prefix_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "GATEWAY_REDIS_PREFIX":  # tests: keys under another prefix from now on
        _window_keys.clear()


setting_changed.connect(_prefix_changed, dispatch_uid="serving.counters.prefix")


def add_to_window(key: str, ttl: int, amount: int) -> list[tuple[str | int, ...]]:
    """The commands that add `amount` to a window's count, creating it (at 0, expiring in `ttl` seconds) if
    needed: SET NX EX then INCRBY works on Redis 6 and 7, and the stores run this pair without parsing it."""
    return [("SET", key, 0, "EX", ttl, "NX"), ("INCRBY", key, amount)]


async def execute_async(commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
    """Run commands on the counters, on the running event loop. Raises CounterUnavailable if they cannot
    be reached in GATEWAY_RATE_LIMIT_TIMEOUT or any of them fails."""
    return await _checked(_get().backend(), commands)


async def _checked(backend: Backend, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
    try:
        replies = await backend.execute(commands)
    except (RespConnectionError, TimeoutError, OSError) as exc:
        raise _unavailable(exc) from exc
    return _answered(replies)


def _unavailable(exc: BaseException) -> CounterUnavailable:
    return CounterUnavailable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)


def _answered(replies: list[Any]) -> list[Any]:
    for reply in replies:
        if isinstance(reply, RespError):
            raise CounterUnavailable(f"error reply: {reply}")
    return replies


def execute(commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
    """execute_async, from code running in the async bridge (an invocation). A store in this process or in
    shared memory is called directly: it does no I/O, so there is nothing to wait for on the loop.

    With a local store, the counts submitted and not sent yet go first, under the same lock: what this
    process counted is counted before it checks a limit again. (Redis's are not taken along: a call
    cancelled while it waits would lose them.)"""
    local = _get().local
    if local is None:
        return await_(execute_async(commands))
    queued = _take_queued()
    if queued is not None:
        commands = [*queued.commands, *commands]
    try:
        replies = local.run(commands)
    except OSError as exc:
        if queued is not None:
            _warn(f"{len(queued.commands)} counts could not be added: {_unavailable(exc)}")
        raise _unavailable(exc) from exc
    if queued is not None:
        queued.deliver(replies[:len(queued.commands)])
        replies = replies[len(queued.commands):]
    return _answered(replies)


_pending: set[asyncio.Future[Any]] = set()

# How long a submitted count may wait to go out with others in a store without Redis (where the next check of
# a limit takes it along at once): under load, the counts of a worker's answers go in one trip instead of
# one each. With Redis they leave at the next step of the event loop (the counts submitted within one step
# together), as soon as a task of their own would: a check does not take them along there.
QUEUE_SECONDS = 0.002


class _Queued:
    """Commands submitted and not sent yet, and who wants their replies."""

    __slots__ = ("commands", "thens")

    def __init__(self) -> None:
        self.commands: list[Sequence[str | bytes | int | float]] = []
        self.thens: list[tuple[int, int, Callable[[list[Any]], None]]] = []  # (offset, count, then)

    def deliver(self, replies: list[Any]) -> None:
        """Each submitter's replies to its `then`; an error reply is logged instead."""
        failed = next((reply for reply in replies if isinstance(reply, RespError)), None)
        if failed is not None:
            _warn(f"a count could not be added: error reply: {failed}")
        for offset, count, then in self.thens:
            mine = replies[offset:offset + count]
            if not any(isinstance(reply, RespError) for reply in mine):
                then(mine)


_queued: _Queued | None = None
_drain: asyncio.Handle | None = None
_drain_on: asyncio.AbstractEventLoop | None = None  # the loop of the _drain timer


def _take_queued() -> _Queued | None:
    global _queued, _drain
    queued, _queued = _queued, None
    if _drain is not None:
        _drain.cancel()
        _drain = None
    return queued


def submit(commands: Sequence[Sequence[str | bytes | int | float]],
           then: Callable[[list[Any]], None] | None = None) -> None:
    """Send commands without waiting for them (counts added after an answer: the client is not kept
    waiting for them), then pass their replies to `then`, if given. They go out together with the others
    submitted meanwhile: with Redis at the loop's next step, otherwise within QUEUE_SECONDS or sooner
    with this process's next execute(). A
    failure is logged, at most once per interval. Outside an event loop they are sent at once."""
    global _queued, _drain, _drain_on
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    if loop is None:
        if _get().local is None:
            raise RuntimeError("counts are sent to Redis from an event loop")
        try:
            replies = execute(commands)  # a local store: no I/O, nothing to wait for
        except CounterUnavailable as exc:
            _warn(f"a count could not be added: {exc}")
            return
        if then is not None:
            then(replies)
        return
    queued = _queued
    if queued is None:
        queued = _queued = _Queued()
    if then is not None:
        queued.thens.append((len(queued.commands), len(commands), then))
    queued.commands += commands
    if _drain is None or _drain_on is not loop:  # none yet, or one on a loop that is gone (tests)
        if _drain is not None:
            _drain.cancel()
        _drain = loop.call_soon(send_queued) if _get().local is None else loop.call_later(QUEUE_SECONDS, send_queued)
        _drain_on = loop


def send_queued() -> None:
    """Send the submitted counts now (the timer's callback; settle() at shutdown)."""
    queued = _take_queued()
    if queued is None:
        return
    if _get().local is None:
        future = asyncio.ensure_future(_get().backend().execute(queued.commands))
        track(future)
        future.add_done_callback(lambda done: None if done.cancelled() or done.exception() is not None
                                 else queued.deliver(done.result()))
        return
    try:
        replies = _get().local.run(queued.commands)  # type: ignore[union-attr]
    except OSError as exc:
        _warn(f"{len(queued.commands)} counts could not be added: {_unavailable(exc)}")
        return
    queued.deliver(replies)


def track(future: asyncio.Future[Any]) -> None:
    """Keep a fire-and-forget task alive until it is done, and log its failure."""
    _pending.add(future)
    future.add_done_callback(_submitted)


async def settle(timeout: float = 5.0) -> None:
    """Wait (up to `timeout` seconds) for the counts sent without waiting: at shutdown, so that a worker
    stopped by SIGTERM does not drop a spend or token count it was sending."""
    send_queued()
    if _pending:
        await asyncio.wait(list(_pending), timeout=timeout)


def _submitted(future: asyncio.Future[Any]) -> None:
    _pending.discard(future)
    if not future.cancelled() and future.exception() is not None:
        _warn(f"a count could not be added: {future.exception()}")


_WARN_EVERY_SECONDS = 10.0
_last_warning = 0.0


def _warn(message: str) -> None:
    global _last_warning
    now = time.monotonic()
    if now - _last_warning >= _WARN_EVERY_SECONDS:  # one line per interval, not one per request
        _last_warning = now
        logger.warning("%s (counters %s)", message, where())


def execute_blocking(commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Any]:
    """execute_async, from a thread that may block (the admin, a management command): on a loop of its own."""
    counters = _get()
    if counters.local is not None:
        return asyncio.run(_checked(counters.local, commands))
    assert counters.address is not None
    client = AsyncRedis(counters.address, timeout=settings.GATEWAY_RATE_LIMIT_TIMEOUT)

    async def once() -> list[Any]:
        try:
            return await _checked(client, commands)
        finally:
            client.close()

    return asyncio.run(once())


def where() -> str:
    """Where the counts live, in words ("in Redis", "in the server's shared store", "in this process")."""
    return _get().where


def reset() -> None:
    """Forget the backend and its connections (tests that change the settings), and the counts not sent."""
    global _counters
    _take_queued()
    _counters = None
