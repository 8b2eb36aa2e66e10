"""GATEWAY_AUTH=keys under real servers: a revoked key is refused by every worker within a second, on one
`start_server` with two workers (the embedded default) and across two instances on PostgreSQL + Redis.
Also: start_server warns when it binds a non-loopback address with auth off."""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.serving.conftest import Server, Servers, config_text, manage, mock_endpoint, server_env

pytestmark = [pytest.mark.slow]

CONSUMERS = "consumers:\n  - name: team\n    allow: [chat]\n"
HI = {"messages": [{"role": "user", "content": "x"}]}


def make_key(env: dict[str, str]) -> str:
    result = manage(env, "create_key", "team")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split("\n")[-1]


def call(server: Server, key: str) -> int:
    return requests.post(server.url("/endpoints/chat/invocations"), json=HI, timeout=10,
                         headers={"Authorization": f"Bearer {key}"}).status_code


def seconds_until_refused_everywhere(servers: list[Server], key: str, timeout: float = 5.0) -> float:
    """From now, call with the key over fresh connections until each worker of each server has refused
    it (a worker is known by the pid /health reports on the same connection); the seconds that took."""
    workers = set().union(*(server.worker_pids() for server in servers))
    refused: dict[int, float] = {}
    start = time.monotonic()
    lock = threading.Lock()

    def poll(server: Server) -> None:
        while time.monotonic() - start < timeout and len(refused) < len(workers):
            with requests.Session() as session:  # one connection: one worker answers both requests
                status = session.post(server.url("/endpoints/chat/invocations"), json=HI, timeout=10,
                                      headers={"Authorization": f"Bearer {key}"}).status_code
                pid = session.get(server.url("/health"), timeout=10).json()["pid"]
            if status == 401:
                with lock:
                    refused.setdefault(pid, time.monotonic() - start)
            else:
                assert status == 200, status

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(poll, servers * 4))
    assert set(refused) == workers, f"workers refusing the key: {sorted(refused)} of {sorted(workers)}"
    return max(refused.values())


def test_a_revoked_key_is_refused_by_both_workers_within_a_second(servers: Servers, tmp_path: Path) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", GATEWAY_AUTH="keys")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")) + CONSUMERS)
    server = servers.start(env, config, workers=2)
    key = make_key(env)
    assert call(server, key) == 200
    assert manage(env, "revoke_key", key[:12]).returncode == 0
    assert seconds_until_refused_everywhere([server], key) < 1.0


def test_a_new_key_works_on_every_worker_at_once(servers: Servers, tmp_path: Path) -> None:
    """Not after the poller's next look (60 s here): a worker that meets a key it does not know reads the
    config version then and there."""
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", GATEWAY_AUTH="keys",
                     GATEWAY_CONFIG_POLL_SECONDS="60")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")) + CONSUMERS)
    server = servers.start(env, config, workers=2)
    key = make_key(env)
    served: dict[int, list[int]] = {}
    for _ in range(40):  # fresh connections: the kernel spreads them over the two workers
        with requests.Session() as session:
            status = session.post(server.url("/endpoints/chat/invocations"), json=HI, timeout=10,
                                  headers={"Authorization": f"Bearer {key}"}).status_code
            served.setdefault(session.get(server.url("/health"), timeout=10).json()["pid"], []).append(status)
    assert set(served) == server.worker_pids()
    assert all(statuses == [200] * len(statuses) for statuses in served.values()), served
    assert call(server, "gwk_unknown0_" + "x" * 43) == 401  # a made-up key is still refused


@pytest.mark.services
def test_a_revoked_key_is_refused_by_every_worker_of_two_instances_within_a_second(
        servers: Servers, services_env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")) + CONSUMERS)
    env = {**services_env, "GATEWAY_AUTH": "keys"}
    a = servers.start(env, config, wait=False)
    b = servers.start(env, config, wait=False)
    a.wait_until_healthy()
    b.wait_until_healthy()
    key = make_key(env)
    assert call(a, key) == 200 and call(b, key) == 200
    assert manage(env, "revoke_key", key[:12]).returncode == 0
    assert seconds_until_refused_everywhere([a, b], key) < 1.0


def test_start_server_warns_when_it_binds_every_address_with_auth_off(servers: Servers, tmp_path: Path) -> None:
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    server = servers.start(env, config, workers=1, host="0.0.0.0")
    assert "Warning: GATEWAY_AUTH is off" in server.log()
    quiet = servers.start(env, config, workers=1)
    assert "GATEWAY_AUTH is off" not in quiet.log()
