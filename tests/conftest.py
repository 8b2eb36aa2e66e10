"""Shared fixtures: named endpoints built in code, SSE parsing, and the CI rule that services
(PostgreSQL, Redis, Chromium) must be present under CI instead of being skipped."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest
from django.conf import settings

from endpoints_app.models import Endpoint, Source
from endpoints_app.validation import validate_endpoint
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
        limit: dict[str, Any] | None = None,
        timeouts: dict[str, Any] | None = None,
        enabled: bool = True,
    ) -> Endpoint:
        raw: dict[str, Any] = {
            "name": name,
            "endpoint_type": endpoint_type,
            "enabled": enabled,
            "model": {"provider": provider, "name": model_name, "config": config or {}},
        }
        if limit is not None:
            raw["limit"] = limit
        if timeouts is not None:
            raw["timeouts"] = timeouts
        spec, _ = validate_endpoint(raw)
        return Endpoint.objects.create(
            name=spec.name,
            endpoint_type=spec.endpoint_type,
            provider=spec.provider,
            model_name=spec.model_name,
            config=spec.config,
            enabled=spec.enabled,
            source=Source.ADMIN,
            limit_calls=spec.limit.calls if spec.limit else None,
            limit_renewal_period=spec.limit.renewal_period if spec.limit else "",
            connect_timeout=spec.timeouts.connect,
            read_timeout=spec.timeouts.read,
            max_retries=spec.timeouts.retries,
        )

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
