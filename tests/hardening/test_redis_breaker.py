"""Issue 15, item 11 (Redis part): a hung Redis used to add GATEWAY_RATE_LIMIT_TIMEOUT to every limited
call. After one timeout (or refused connection) a worker now skips Redis for GATEWAY_REDIS_BREAKER_SECONDS,
failing open as before, says so once, and tries Redis again when the interval is over."""

from __future__ import annotations

import logging
import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from providers.shapes import CHAT
from serving import counters, ratelimit
from tests.conftest import post_json

pytestmark = pytest.mark.django_db

HI = {"messages": [{"role": "user", "content": "Hi"}]}
TIMEOUT = 0.3


@pytest.fixture
def hung_redis(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Redis that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    settings.REDIS_URL = f"redis://127.0.0.1:{port}/4"
    settings.GATEWAY_RATE_LIMIT_TIMEOUT = TIMEOUT
    settings.GATEWAY_REDIS_BREAKER_SECONDS = 1.5
    monkeypatch.setattr(ratelimit, "_last_warning", 0.0)
    counters.reset()
    yield f"127.0.0.1:{port}"
    counters.reset()
    listener.close()


def timed_call(client: Any) -> float:
    started = time.monotonic()
    response = post_json(client, "/endpoints/limited/invocations", HI)
    assert response.status_code == 200  # fail open, as before
    return time.monotonic() - started


def test_a_hung_redis_costs_one_timeout_per_interval_not_one_per_call(
        client: Any, make_endpoint: Any, hung_redis: str, caplog: pytest.LogCaptureFixture) -> None:
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 100, "renewal_period": "minute"})
    with caplog.at_level(logging.WARNING):
        first = timed_call(client)
        then = [timed_call(client) for _ in range(10)]
    assert first >= TIMEOUT
    assert max(then) < TIMEOUT / 2, then  # before: each of them waited TIMEOUT for Redis
    breaker_lines = [r.getMessage() for r in caplog.records if r.name == "serving.resp"]
    assert breaker_lines == [f"Redis at {hung_redis} failed (did not answer in time): not tried for 1.5 s"]


def test_redis_is_tried_again_once_the_interval_is_over(client: Any, make_endpoint: Any, hung_redis: str) -> None:
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 100, "renewal_period": "minute"})
    assert timed_call(client) >= TIMEOUT
    assert timed_call(client) < TIMEOUT / 2
    time.sleep(1.6)
    assert timed_call(client) >= TIMEOUT  # tried (and still hung)
    assert timed_call(client) < TIMEOUT / 2


def test_a_working_redis_is_used_on_every_call(client: Any, make_endpoint: Any, settings: Any) -> None:
    """The breaker stays closed while Redis answers: every call is counted there (on the SQLite run too,
    where the suite has no REDIS_URL, this test points the gateway at the machine's Redis)."""
    import redis

    from tests.conftest import require
    from tests.serving.conftest import _reachable

    require(_reachable(6379), "Redis is not reachable on 127.0.0.1:6379")
    settings.REDIS_URL = settings.REDIS_URL or "redis://127.0.0.1:6379/5"
    settings.GATEWAY_REDIS_PREFIX = f"breaker-test-{uuid.uuid4().hex[:8]}"
    counters.reset()
    make_endpoint("limited", CHAT, "mock", "m", limit={"calls": 2, "renewal_period": "minute"})
    statuses = [post_json(client, "/endpoints/limited/invocations", HI).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    with redis.Redis.from_url(settings.REDIS_URL) as direct:
        keys = direct.keys(f"{settings.GATEWAY_REDIS_PREFIX}:*")
        assert keys, "the calls were not counted in Redis"
        direct.delete(*keys)
    counters.reset()
