"""Issue 15, item 3: a database outage plus a reload signal used to empty a worker's endpoint table (every
call a 500 until the database came back) and a worker started during the outage never served.

Now a worker keeps serving its last good table when a rebuild fails (retried, logged once per interval),
and a worker started during the outage builds its table from the snapshot the others wrote: signed,
written atomically, its secrets as the database stores them (references, encrypted values), never in clear.
Reproduced for real on PostgreSQL (connections refused with ALLOW_CONNECTIONS false, backends terminated),
and in process for the snapshot's own rules."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.db import OperationalError

from providers.shapes import CHAT
from serving import runtime, snapshot
from tests.conftest import MakeEndpoint, post_json, require
from tests.serving.conftest import POSTGRES, Servers, _reachable, chat, manage, server_env
from tests.serving.conftest import servers as servers  # the fixture, shared with tests/serving

DATABASE = "hupstream_db"  # this suite's PostgreSQL database
LITERAL_KEY = "sk-literal-key-that-must-never-be-on-disk-123456"


# -- on PostgreSQL, with start_server ------------------------------------------------------------------------
def _admin(sql: str) -> None:
    import psycopg

    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(sql)


def block_database() -> None:
    _admin(f'ALTER DATABASE "{DATABASE}" ALLOW_CONNECTIONS false')
    _admin(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{DATABASE}'")


def unblock_database() -> None:
    _admin(f'ALTER DATABASE "{DATABASE}" ALLOW_CONNECTIONS true')


@pytest.fixture
def pg_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    require(_reachable(5432), "PostgreSQL is not reachable on 127.0.0.1:5432")
    _admin(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')  # also one a failed run left blocked
    _admin(f'CREATE DATABASE "{DATABASE}"')
    env = server_env(f"{POSTGRES}/{DATABASE}", GATEWAY_CONFIG_POLL_SECONDS="0.5")
    config = tmp_path / "gateway.yaml"
    config.write_text("endpoints:\n  - name: chat\n    endpoint_type: llm/v1/chat\n"
                      "    model: {provider: mock, name: m, config: {}}\n")
    try:
        assert manage(env, "migrate", "--no-input").returncode == 0
        loaded = manage(env, "load_config", str(config))
        assert loaded.returncode == 0, loaded.stderr
        yield env
    finally:
        unblock_database()


def calls(url: str, count: int) -> list[int]:
    statuses = []
    for _ in range(count):
        try:
            statuses.append(chat(url, timeout=5).status_code)
        except requests.RequestException:
            statuses.append(0)
    return statuses


def test_workers_keep_serving_through_a_database_outage_with_a_reload_and_a_restarted_worker(
        servers: Servers, pg_env: dict[str, str]) -> None:
    server = servers.start(pg_env, workers=2)  # no config file: SIGHUP tells the workers to rebuild
    server.wait_until_every_worker_answers()
    url = server.url("/endpoints/chat/invocations")
    assert calls(url, 4) == [200] * 4
    block_database()
    try:
        start = len(server.log())
        server.process.send_signal(signal.SIGHUP)  # every worker's table is now stale, the database away
        server.wait_for_log("the workers were told to rebuild", start=start)
        time.sleep(0.5)
        assert calls(url, 20) == [200] * 20  # before: 500 with a traceback, every call, until the database returned
        victim = sorted(server.worker_pids())[0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (victim in server.worker_pids() or len(server.worker_pids()) < 2) and time.monotonic() < deadline:
            time.sleep(0.2)
        replacement = server.worker_pids() - {victim}
        assert len(replacement) == 2
        server.wait_until_every_worker_answers()  # the new worker serves: its table came from the snapshot
        health = requests.get(server.url("/health"), timeout=5).json()
        assert health["status"] == "OK"
        assert calls(url, 20) == [200] * 20
        log = server.log()[start:]
        assert "from the snapshot" in log
        assert "Traceback" not in log
        # once per interval per worker, not once per request or per poll (0.5 s)
        assert log.count("cannot be rebuilt") + log.count("config version check failed") <= 8
    finally:
        unblock_database()
    time.sleep(2.5)
    assert calls(url, 4) == [200] * 4


# -- in process: the snapshot's rules --------------------------------------------------------------------------
@pytest.fixture
def snapshot_file(settings: Any, tmp_path: Path) -> Path:
    settings.GATEWAY_TABLE_SNAPSHOT = str(tmp_path / "endpoint-table")
    return tmp_path / "endpoint-table"


@pytest.mark.django_db
def test_the_snapshot_keeps_secrets_as_stored_never_in_clear(make_endpoint: MakeEndpoint, snapshot_file: Path) -> None:
    make_endpoint("chat", CHAT, "openai", "gpt-4o-mini", {"openai_api_key": LITERAL_KEY})
    runtime.invalidate()
    runtime.load_table()
    data = snapshot_file.read_bytes()
    assert LITERAL_KEY.encode() not in data
    assert oct(snapshot_file.stat().st_mode & 0o777) == "0o600"
    rows = snapshot.load()
    assert rows is not None and [e.name for e in rows.endpoints] == ["chat"]
    restored = runtime.build_table(rows, restored=True)
    assert restored.endpoints["chat"].provider.config["openai_api_key"] == LITERAL_KEY  # decrypted when built


@pytest.mark.django_db
def test_an_altered_or_foreign_snapshot_is_refused(make_endpoint: MakeEndpoint, snapshot_file: Path,
                                                   settings: Any) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    runtime.invalidate()
    runtime.load_table()
    data = bytearray(snapshot_file.read_bytes())
    data[-5] ^= 0xFF
    snapshot_file.write_bytes(bytes(data))
    assert snapshot.load() is None
    runtime.invalidate()
    runtime.load_table()  # written again, then read with another SECRET_KEY
    settings.SECRET_KEY = "another-gateway-" + "y" * 40
    assert snapshot.load() is None


@pytest.fixture
def database_down(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> runtime.TableRows:
        raise OperationalError("connection refused")

    monkeypatch.setattr(runtime, "fetch_rows", refuse)


@pytest.fixture
def no_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_table", None)
    monkeypatch.setattr(runtime, "_retry_at", 0.0)
    monkeypatch.setattr(runtime, "_last_warning", 0.0)


@pytest.mark.django_db
def test_a_failed_rebuild_keeps_the_table_and_is_logged_once(
        client: Any, make_endpoint: MakeEndpoint, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    make_endpoint("chat", CHAT, "mock", "m")
    runtime.invalidate()
    served = runtime.load_table()
    monkeypatch.setattr(runtime, "_last_warning", 0.0)
    monkeypatch.setattr(runtime, "fetch_rows", lambda: (_ for _ in ()).throw(OperationalError("refused")))
    runtime.invalidate()
    statuses = [post_json(client, "/endpoints/chat/invocations",
                          {"messages": [{"role": "user", "content": "hi"}]}).status_code for _ in range(5)]
    assert statuses == [200] * 5
    assert runtime.load_table() is served
    lines = [r.getMessage() for r in caplog.records if "cannot be rebuilt" in r.getMessage()]
    assert lines == [f"the endpoint table cannot be rebuilt (OperationalError: refused); serving the table of "
                     f"config version {served.version} until the database answers"]


@pytest.mark.django_db
def test_a_process_without_a_table_or_a_snapshot_reports_the_failure(
        no_table: None, database_down: None, settings: Any) -> None:
    settings.GATEWAY_TABLE_SNAPSHOT = ""
    with pytest.raises(OperationalError):
        runtime.load_table()
