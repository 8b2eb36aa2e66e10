"""Shared fixtures: named endpoints built in code, SSE parsing, and the CI rule that services
(PostgreSQL, Redis, Chromium) must be present under CI instead of being skipped."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from django.conf import settings

from consumers.models import Consumer
from endpoints_app.models import Endpoint, Source
from endpoints_app.services import endpoint_columns
from endpoints_app.validation import validate_consumer, validate_endpoint
from serving import counters, runtime
from tests.asgi import ASGIClient
from tests.liveserver import LiveGateway
from usage import ledger

ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require(condition: bool, reason: str) -> None:
    """Skip locally when a service is missing; fail under CI, where it must be there."""
    if condition:
        return
    if ON_CI:
        pytest.fail(f"{reason} (required under CI)")
    pytest.skip(reason)


def flush_redis() -> None:
    """Empty this test process's Redis database (each xdist worker has its own, tests/settings.py)."""
    if settings.REDIS_URL:
        import redis  # the tests' own look at Redis; the gateway talks to it through serving.resp

        with redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2) as client:
            client.flushdb()


@pytest.fixture(autouse=True)
def _fresh_state() -> Iterator[None]:
    runtime.invalidate()
    flush_redis()
    counters.reset()  # fresh in-process counts, and a new connection for the settings in force
    ledger.get().discard()
    yield
    runtime.invalidate()


@pytest.fixture
def client(client: Any) -> Any:
    """Invocations and /health through the ASGI application start_server runs (tests.asgi); other
    requests through Django's test client."""
    return ASGIClient(client)


@pytest.fixture(scope="session")
def live_server(django_db_setup: None, django_db_blocker: Any) -> Iterator[LiveGateway]:
    """The whole application (invocations, admin, API, docs, static files) under uvicorn on a free
    port, as a start_server worker serves it. Replaces pytest-django's WSGI live server; tests that
    use it get transactional database access (pytest-django's helper), so the server sees their rows."""
    with django_db_blocker.unblock():
        server = LiveGateway()
    yield server
    server.stop()


MakeEndpoint = Callable[..., Endpoint]


@pytest.fixture
def make_endpoint(db: None) -> MakeEndpoint:
    """Create an endpoint through the same validator YAML uses. Keyword args mirror the YAML."""

    def make(
        name: str,
        endpoint_type: str,
        provider: str,
        model_name: str | None = None,
        config: dict[str, Any] | None = None,
        enabled: bool = True,
        **entry: Any,
    ) -> Endpoint:
        """`entry` takes the other keys of a YAML entry: limit, timeouts, cost, budget..."""
        raw: dict[str, Any] = {
            "name": name,
            "endpoint_type": endpoint_type,
            "enabled": enabled,
            "model": {"provider": provider, "name": model_name, "config": config or {}},
            **{key: value for key, value in entry.items() if value is not None},
        }
        spec, _ = validate_endpoint(raw)
        return Endpoint.objects.create(name=spec.name, source=Source.ADMIN, **endpoint_columns(spec))

    return make


MakeConsumer = Callable[..., Consumer]


@pytest.fixture
def make_consumer(db: None) -> MakeConsumer:
    """Create a consumer through the validator YAML uses; keyword args mirror the YAML."""

    def make(name: str, allow: list[str] | str = "*", **raw: Any) -> Consumer:
        from consumers.services import consumer_values

        spec = validate_consumer({"name": name, "allow": allow, **raw})
        return Consumer.objects.create(name=spec.name, source=Source.ADMIN, **consumer_values(spec))

    return make


def sse_events(response: Any) -> list[Any]:
    """The `data:` payloads of an SSE response from the test client ([DONE] kept as a string)."""
    raw = b"".join(response.streaming_content).decode()
    return parse_sse_text(raw)


def parse_sse_text(raw: str) -> list[Any]:
    events: list[Any] = []
    for block in raw.split("\n\n"):
        block = block.strip()
        if not block:
            continue
        assert block.startswith("data: "), block
        data = block[len("data: ") :]
        events.append(data if data == "[DONE]" else orjson.loads(data))
    return events


def post_json(client: Any, path: str, body: Any, **extra: Any) -> Any:
    return client.post(path, data=orjson.dumps(body), content_type="application/json", **extra)
