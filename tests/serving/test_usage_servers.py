"""The ledger and budgets under real servers: records buffered when SIGTERM comes are written before the
workers exit, and a budget crossed by concurrent calls holds across two workers (the embedded default)
and across two instances (PostgreSQL + Redis), with an overshoot of at most the calls in flight."""
from __future__ import annotations

import itertools
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import Server, Servers, config_text, mock_endpoint, server_env

pytestmark = [pytest.mark.slow]

HI = {"messages": [{"role": "user", "content": "hi"}]}
CALL_CENTS = 3  # the mock answers "hi" with "Echo: hi": 3 tokens at a cent each
BUDGETED = ("    cost: {input_per_million_tokens: 10000, output_per_million_tokens: 10000}\n"
            "    budget: {usd: 0.30, period: day, action: reject}\n")


def chat(server: Server, name: str = "chat") -> int:
    return requests.post(server.url(f"/endpoints/{name}/invocations"), json=HI, timeout=30).status_code


def test_records_buffered_at_sigterm_are_written_before_the_workers_exit(servers: Servers, tmp_path: Path) -> None:
    database = tmp_path / "gateway.sqlite3"
    env = server_env(f"sqlite:///{database}", GATEWAY_USAGE_FLUSH_SECONDS="600")  # only the stop writes them
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    server = servers.start(env, config, workers=2)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: chat(server), range(40)))
    assert statuses == [200] * 40
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM usage_usagerecord").fetchone()[0] == 0  # still buffered
    assert server.stop() == 0
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT COUNT(*) FROM usage_usagerecord").fetchone()[0] == 40
        assert db.execute("SELECT SUM(requests) FROM usage_usageday").fetchone()[0] == 40


def spend_budget_concurrently(instances: list[Server], record_property: Callable[[str, object], None]) -> None:
    """16 callers at once on a 0.30 USD budget of 3-cent calls (each takes 200 ms): the successes stop
    once it is spent, overshooting by at most the calls in flight when it was crossed."""
    successes = 0
    refused_after = threading.Event()
    lock = threading.Lock()

    def caller(index: int) -> None:
        nonlocal successes
        server = instances[index % len(instances)]
        for _ in range(8):
            status = chat(server)
            with lock:
                if status == 200:
                    successes += 1
                else:
                    assert status == 429, status
                    refused_after.set()

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(caller, range(16)))
    spent = successes * CALL_CENTS
    overshoot = spent - 30
    record_property("successes", successes)
    record_property("overshoot_cents", overshoot)
    print(f"budget 30 cents, {successes} calls of 3 cents succeeded: {spent} cents, overshoot {overshoot} cents")
    assert refused_after.is_set()
    assert 30 <= spent <= 30 + 16 * CALL_CENTS  # at most the 16 calls in flight at the crossing
    time.sleep(0.5)  # every call's cost has been added
    for server in instances:
        assert chat(server) == 429  # after the crossing, every worker of every instance refuses


def test_a_budget_holds_across_two_workers_without_redis(servers: Servers, tmp_path: Path,
                                                         record_property: Callable[[str, object], None]) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat", config={"latency_ms": 200})) + BUDGETED)
    server = servers.start(env, config, workers=2)
    spend_budget_concurrently([server], record_property)


@pytest.mark.services
def test_a_budget_holds_across_two_instances_on_postgresql_and_redis(
        servers: Servers, services_env: dict[str, str], tmp_path: Path,
        record_property: Callable[[str, object], None]) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat", config={"latency_ms": 200})) + BUDGETED)
    a = servers.start(services_env, config, wait=False)
    b = servers.start(services_env, config, wait=False)
    a.wait_until_healthy()
    b.wait_until_healthy()
    spend_budget_concurrently([a, b], record_property)


def test_start_server_prunes_records_past_the_retention_at_start(servers: Servers, tmp_path: Path) -> None:
    database = tmp_path / "gateway.sqlite3"
    env = server_env(f"sqlite:///{database}", GATEWAY_USAGE_FLUSH_SECONDS="0.2")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    server = servers.start(env, config, workers=1)
    assert [chat(server) for _ in range(3)] == [200] * 3
    assert server.stop() == 0
    with sqlite3.connect(database) as db:  # two of the three are 31 and 40 days old
        ids = [row[0] for row in db.execute("SELECT id FROM usage_usagerecord ORDER BY id")]
        assert len(ids) == 3
        db.execute("UPDATE usage_usagerecord SET time = datetime('now', '-31 days') WHERE id = ?", (ids[0],))
        db.execute("UPDATE usage_usagerecord SET time = datetime('now', '-40 days') WHERE id = ?", (ids[1],))
    server = servers.start(env, config, workers=1)  # GATEWAY_USAGE_RETENTION_DAYS: 30 by default

    def remaining() -> list[int]:
        with sqlite3.connect(database) as db:
            return [row[0] for row in db.execute("SELECT id FROM usage_usagerecord ORDER BY id")]

    deadline = time.monotonic() + 30
    while "prune_usage:" not in server.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "prune_usage: 2 usage records" in server.log()
    assert remaining() == [ids[2]]
    assert chat(server) == 200


def test_keep_pruning_runs_at_once_then_every_interval_until_stopped() -> None:
    from serving.supervisor import ApplyResult, keep_pruning

    runs: list[float] = []
    stop = threading.Event()

    def prune(stopping: threading.Event) -> ApplyResult:
        runs.append(time.monotonic())
        if len(runs) == 3:
            stop.set()  # as SIGTERM does while a prune runs: that one's result is not logged
        return ApplyResult(True, "0 usage records deleted")

    started = time.monotonic()
    thread = threading.Thread(target=keep_pruning, args=(stop, 1.0, prune))
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert len(runs) == 3
    assert runs[0] - started < 0.5  # at start, not after the first interval
    assert all(later - earlier >= 0.99 for earlier, later in itertools.pairwise(runs))
