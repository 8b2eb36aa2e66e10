"""Rate limits under `start_server` without REDIS_URL: the supervisor's counter store (serving.store)
makes `calls: 3` mean 3 across both workers and every route family, from concurrent fresh
connections, and keeps a window's count when a worker dies."""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.serving.conftest import Server, Servers, config_text, mock_endpoint, server_env, wait_for_a_fresh_window

pytestmark = pytest.mark.slow

LIMIT = 3
ROUTES = ("/endpoints/{name}/invocations", "/gateway/{name}/invocations", "/v1/chat/completions")


BURSTS = 3  # endpoints for the concurrent test: a burst may all land on one worker; the next one then runs


@pytest.fixture(scope="module")
def gateway(module_servers: Servers, tmp_path_factory: pytest.TempPathFactory) -> Server:
    base = tmp_path_factory.mktemp("counters")
    config = base / "gateway.yaml"
    limited = [mock_endpoint(f"limited-{n}", limit=LIMIT) for n in range(BURSTS)]
    config.write_text(config_text(*limited, mock_endpoint("limited-too", limit=LIMIT)))
    env = server_env(f"sqlite:///{base / 'gateway.sqlite3'}")
    assert "REDIS_URL" not in env
    server = module_servers.start(env, config, workers=2)
    server.wait_until_every_worker_answers()
    return server


def invoke(server: Server, route: str, name: str) -> requests.Response:
    """One chat call on a fresh connection (no session: the kernel hands it to either worker)."""
    body: dict[str, object] = {"messages": [{"role": "user", "content": "x"}]}
    if route.startswith("/v1/"):
        body["model"] = name
    return requests.post(server.url(route.format(name=name)), json=body, timeout=10)


def health_pid(server: Server) -> int:
    return int(requests.get(server.url("/health"), timeout=5).json()["pid"])


def burst(server: Server, name: str, calls: int = 12) -> list[tuple[requests.Response, set[int]]]:
    """`calls` threads at once, each a fresh connection, over the three route families; each answer with
    the pids /health reported just before and after it."""
    start_together = threading.Barrier(calls)

    def call(number: int) -> tuple[requests.Response, set[int]]:
        start_together.wait()
        before = health_pid(server)
        response = invoke(server, ROUTES[number % len(ROUTES)], name)
        return response, {before, health_pid(server)}

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(call, range(calls)))


def test_a_limit_of_3_admits_exactly_3_of_12_concurrent_calls_over_both_workers(gateway: Server) -> None:
    """The kernel hands a burst of connections to whichever worker wakes first, so one burst may all land
    on one worker: each burst (on an endpoint of its own) must be exact, and one must reach both."""
    wait_for_a_fresh_window(15)
    workers = gateway.worker_pids()
    for number in range(BURSTS):
        results = burst(gateway, f"limited-{number}")
        statuses = sorted(response.status_code for response, _ in results)
        assert statuses == [200] * LIMIT + [429] * (12 - LIMIT), statuses
        assert all(1 <= int(response.headers["Retry-After"]) <= 60 for response, _ in results
                   if response.status_code == 429)
        if set().union(*(pids for _, pids in results)) == workers:
            return
    pytest.fail(f"none of {BURSTS} bursts reached both workers")


def test_a_windows_count_survives_a_worker_being_killed(gateway: Server) -> None:
    wait_for_a_fresh_window(40)
    assert [invoke(gateway, route, "limited-too").status_code for route in ROUTES[:2]] == [200, 200]
    workers = gateway.worker_pids()
    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while len(gateway.worker_pids() - {victim}) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    (replacement,) = gateway.worker_pids() - workers
    answered_by: set[int] = set()
    while replacement not in answered_by and time.monotonic() < deadline:
        try:
            answered_by.add(health_pid(gateway))
        except requests.ConnectionError:
            time.sleep(0.05)
    assert replacement in answered_by, "the replacement worker never answered"
    statuses = []
    for number in range(9):
        statuses.append(invoke(gateway, ROUTES[number % len(ROUTES)], "limited-too").status_code)
        answered_by.add(health_pid(gateway))
    assert statuses == [200] + [429] * 8  # 2 before the kill + 1 = the limit: the count was kept
    assert answered_by == gateway.worker_pids()
