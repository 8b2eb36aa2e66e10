"""Two `start_server` instances (two workers each) on one PostgreSQL database and one Redis behave
as one gateway: a change reaches every worker of both within a second, and a rate limit is one
counter across workers, instances and route families."""
from __future__ import annotations

import math
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.conftest import require
from tests.serving.conftest import (
    Server,
    Servers,
    config_text,
    manage,
    mock_endpoint,
    server_env,
    wait_for_a_fresh_window,
)

pytestmark = [pytest.mark.slow, pytest.mark.services]

POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/5"
LIMIT = 5


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def shared_env() -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL database and a random Redis key prefix, dropped afterwards."""
    require(reachable(5432), "PostgreSQL is not reachable on 127.0.0.1:5432")
    require(reachable(6379), "Redis is not reachable on 127.0.0.1:6379")
    import psycopg
    import redis

    name = f"gw_multi_{secrets.token_hex(4)}"
    prefix = f"gw-test-{secrets.token_hex(4)}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_env(f"{POSTGRES}/{name}", REDIS_URL=REDIS, CACHE_KEY_PREFIX=prefix)
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = redis.Redis.from_url(REDIS)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)


@dataclass
class Gateway:
    a: Server
    b: Server
    env: dict[str, str]
    config: Path

    @property
    def instances(self) -> tuple[Server, Server]:
        return self.a, self.b

    def database_version(self) -> int:
        import psycopg

        with psycopg.connect(self.env["DATABASE_URL"]) as conn:
            row = conn.execute("SELECT version FROM endpoints_app_configstate WHERE id = 1").fetchone()
        return int(row[0]) if row else 0


@pytest.fixture(scope="module")
def gateway(shared_env: dict[str, str], module_servers: Servers,
            tmp_path_factory: pytest.TempPathFactory) -> Gateway:
    config = tmp_path_factory.mktemp("multi") / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat"), mock_endpoint("limited", limit=LIMIT),
                                  mock_endpoint("limited-one", limit=LIMIT)))
    # Both at once, as an orchestrator would start them: migrations and the import are serialised.
    a = module_servers.start(shared_env, config, wait=False)
    b = module_servers.start(shared_env, config, wait=False)
    a.wait_until_healthy()
    b.wait_until_healthy()
    return Gateway(a, b, shared_env, config)


def versions_by_worker(gateway: Gateway, wanted: int, timeout: float) -> dict[int, float]:
    """Ask /health over fresh connections until every worker of both instances reports `wanted`;
    returns when (seconds from now) each worker was first seen serving it."""
    workers = gateway.a.worker_pids() | gateway.b.worker_pids()
    assert len(workers) == 4
    seen: dict[int, float] = {}
    start = time.monotonic()
    lock = threading.Lock()

    def poll(server: Server) -> None:
        while time.monotonic() - start < timeout and len(seen) < len(workers):
            body = requests.get(server.url("/health"), timeout=5).json()
            if body["config_version"] >= wanted:
                with lock:
                    seen.setdefault(body["pid"], time.monotonic() - start)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(poll, [gateway.a, gateway.b] * 4))
    assert set(seen) == workers, f"workers serving version {wanted}: {sorted(seen)} of {sorted(workers)}"
    return seen


# -- propagation ---------------------------------------------------------------------------------------
def test_load_config_reaches_every_worker_of_both_instances_within_a_second(
        gateway: Gateway, tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    other = tmp_path / "other.yaml"
    other.write_text(config_text(mock_endpoint("from-load-config")))
    result = manage(gateway.env, "load_config", str(other))
    assert result.returncode == 0, result.stderr
    seen = versions_by_worker(gateway, gateway.database_version(), timeout=3)
    record_property("seconds_until_each_worker_served_it", seen)
    assert max(seen.values()) < 1.0, seen
    for server in gateway.instances:
        response = requests.post(server.url("/endpoints/from-load-config/invocations"),
                                 json={"messages": [{"role": "user", "content": "x"}]}, timeout=10)
        assert response.status_code == 200


def test_an_orm_update_reaches_every_worker_of_both_instances_within_a_second(
        gateway: Gateway, record_property: Callable[[str, object], None]) -> None:
    result = manage(gateway.env, "shell", "-c",
                    "from endpoints_app.models import Endpoint\n"
                    "e = Endpoint.objects.get(name='chat'); e.config = {'stream_chunks': 2}; e.save()")
    assert result.returncode == 0, result.stderr
    seen = versions_by_worker(gateway, gateway.database_version(), timeout=3)
    record_property("seconds_until_each_worker_served_it", seen)
    assert max(seen.values()) < 1.0, seen


# -- rate limits -----------------------------------------------------------------------------------------
MLFLOW_ROUTES = ("/endpoints/{name}/invocations", "/gateway/{name}/invocations")


def invoke(server: Server, route: str, name: str) -> requests.Response:
    body: dict[str, object] = {"messages": [{"role": "user", "content": "x"}]}
    if route == "/v1/chat/completions":
        body["model"] = name
    return requests.post(server.url(route.format(name=name)), json=body, timeout=10)


def assert_limited_as_mlflow_does(response: requests.Response, route: str) -> None:
    assert response.status_code == 429, response.text
    message = f"Rate limit exceeded: {LIMIT} per 1 minute"
    if route in MLFLOW_ROUTES:
        assert response.json() == {"error": message}
    else:
        assert response.json()["error"]["message"] == message
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers["X-RateLimit-Limit"] == str(LIMIT)
    assert response.headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(response.headers["X-RateLimit-Reset"]) <= 60


def test_a_limit_is_one_counter_across_both_workers_of_an_instance(gateway: Gateway) -> None:
    wait_for_a_fresh_window()
    routes = [*MLFLOW_ROUTES, "/v1/chat/completions"]
    results = []
    pids = set()
    for i in range(3 * LIMIT):
        route = routes[i % len(routes)]
        results.append((route, invoke(gateway.a, route, "limited-one")))
        pids.add(requests.get(gateway.a.url("/health"), timeout=5).json()["pid"])
    assert pids == gateway.a.worker_pids()  # the calls, on fresh connections, were spread over both
    allowed = [r for _, r in results if r.status_code == 200]
    assert len(allowed) == LIMIT
    assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == [str(n) for n in range(LIMIT - 1, -1, -1)]
    for route, response in results[LIMIT:]:
        assert_limited_as_mlflow_does(response, route)


def test_a_limit_is_one_counter_across_instances_and_route_families(gateway: Gateway) -> None:
    wait_for_a_fresh_window()
    calls = [(server, route) for route in (*MLFLOW_ROUTES, "/v1/chat/completions") for server in gateway.instances]
    results = [(route, invoke(server, route, "limited")) for server, route in calls * math.ceil(3 * LIMIT / 6)]
    statuses = [r.status_code for _, r in results]
    assert statuses == [200] * LIMIT + [429] * (len(results) - LIMIT), statuses
    for route, response in results[LIMIT:]:
        assert_limited_as_mlflow_does(response, route)
    # The other endpoints are not counted against this one.
    assert invoke(gateway.b, MLFLOW_ROUTES[0], "chat").status_code == 200
