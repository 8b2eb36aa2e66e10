"""Real `start_server` processes on free local ports, and the clean-up that kills their whole tree
even when a test fails."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 60.0  # generous: the CI box may be busy
# The variables a test server must not inherit from the test run (tests/settings.py sets some).
_OWN_VARIABLES = ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "CACHE_KEY_PREFIX", "SECRET_KEY", "DEBUG",
                  "ALLOWED_HOSTS", "MLFLOW_GATEWAY_CONFIG", "TEST_DATABASE_NAME", "LOG_LEVEL")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a production-like gateway process (the real settings, not the test ones)."""
    env = {key: value for key, value in os.environ.items()
           if key not in _OWN_VARIABLES and not key.startswith("GATEWAY_")}
    env.update(DJANGO_SETTINGS_MODULE="gateway_project.settings", DATABASE_URL=database_url,
               SECRET_KEY="serving-tests-secret-key-" + "x" * 30, GATEWAY_CONFIG_POLL_SECONDS="0.5",
               LOG_LEVEL="INFO", PYTHONUNBUFFERED="1")
    env.update(extra)
    if "STATIC_ROOT" not in env:  # each server collects its own (parallel collectstatic runs into one folder race)
        env["STATIC_ROOT"] = tempfile.mkdtemp(prefix="gateway-static-")
    return env


def manage(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a management command against the same database as the servers."""
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


class Server:
    """One `manage.py start_server` process, its log, and the processes under it."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path,
                 static_root: str | None = None) -> None:
        self.process = process
        self.port = port
        self.log_path = log_path
        self.static_root = static_root  # server_env's temporary folder, removed with the server

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tree(self) -> list[psutil.Process]:
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def worker_pids(self) -> set[int]:
        """The serving workers (start_server's live children running serving.worker)."""
        pids = set()
        for process in self.tree():
            try:
                if "serving.worker" in " ".join(process.cmdline()):
                    pids.add(process.pid)
            except psutil.Error:  # gone, or a zombie not yet reaped
                pass
        return pids

    def wait_until_healthy(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"start_server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if requests.get(self.url("/health"), timeout=2).status_code == 200 and "Serving http" in self.log():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        pytest.fail(f"start_server did not become healthy within {timeout}s:\n{self.log()}")

    def wait_until_every_worker_answers(self, timeout: float = STARTUP_TIMEOUT) -> None:
        """wait_until_healthy returns once one worker answers; the others may still be starting."""
        deadline = time.monotonic() + timeout
        answered: set[int] = set()
        while time.monotonic() < deadline:
            workers = self.worker_pids()
            if workers and answered >= workers:
                return
            try:
                answered.add(int(requests.get(self.url("/health"), timeout=2).json()["pid"]))
            except requests.RequestException:
                time.sleep(0.05)
        pytest.fail(f"not every worker answered within {timeout}s (answered: {answered}):\n{self.log()}")

    def wait_for_log(self, text: str, timeout: float = 10.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log()
            if text in log[start:]:
                return log
            time.sleep(0.05)
        pytest.fail(f"{text!r} not logged within {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout)

    def kill_tree(self) -> None:
        """Stop it as an operator would (SIGTERM: the supervisor removes its counter store's directory),
        then kill whatever is left."""
        tree = self.tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                pass
        for proc in tree:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(tree, timeout=10)
        if self.process.poll() is None:
            self.process.wait(10)


class Servers:
    """Starts servers and remembers them, so that teardown can kill every one of them."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[Server] = []

    def start(self, env: dict[str, str], config_path: Path | None = None, *, workers: int = 2,
              wait: bool = True, extra_args: tuple[str, ...] = (), host: str = "127.0.0.1") -> Server:
        port = free_port()
        log_path = self.log_dir / f"start_server-{port}.log"
        args = [sys.executable, "manage.py", "start_server", "--host", host, "--port", str(port),
                "--workers", str(workers), *extra_args]
        if config_path is not None:
            args += ["--config-path", str(config_path)]
        with log_path.open("wb") as log:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        server = Server(process, port, log_path, env.get("STATIC_ROOT"))
        self.started.append(server)
        if wait:
            server.wait_until_healthy()
        return server

    def kill_all(self) -> None:
        for server in self.started:
            server.kill_tree()
        for static_root in {server.static_root for server in self.started}:
            if static_root and os.path.basename(static_root).startswith("gateway-static-"):
                shutil.rmtree(static_root, ignore_errors=True)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    started = Servers(tmp_path)
    yield started
    started.kill_all()


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    started = Servers(tmp_path_factory.mktemp("servers"))
    yield started
    started.kill_all()


def mock_endpoint(name: str, endpoint_type: str = "llm/v1/chat", *, limit: int | None = None,
                  config: dict[str, Any] | None = None) -> str:
    """One `endpoints[]` entry on the built-in mock provider, as YAML."""
    lines = [f"  - name: {name}", f"    endpoint_type: {endpoint_type}", "    model:", "      provider: mock",
             f"      name: mock-{name}", f"      config: {config or {}}"]
    if limit is not None:
        lines += ["    limit:", f"      calls: {limit}", "      renewal_period: minute"]
    return "\n".join(lines) + "\n"


def config_text(*entries: str) -> str:
    return "endpoints:\n" + "".join(entries)


def chat(url: str, *, session: requests.Session | None = None, content: str = "hi",
         timeout: float = 10) -> requests.Response:
    """POST one chat message to an invocation URL (a fresh connection unless a session is given)."""
    body = {"messages": [{"role": "user", "content": content}]}
    return (session or requests).post(url, json=body, timeout=timeout)


@pytest.fixture
def services_env() -> Iterator[dict[str, str]]:
    """The environment of gateway instances sharing a fresh PostgreSQL database (dropped afterwards) and
    Redis under a key prefix of their own."""
    from tests.conftest import require

    require(_reachable(5432), "PostgreSQL is not reachable on 127.0.0.1:5432")
    require(_reachable(6379), "Redis is not reachable on 127.0.0.1:6379")
    import secrets

    import psycopg

    name = f"gw_test_{secrets.token_hex(4)}"
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_env(f"{POSTGRES}/{name}", REDIS_URL=REDIS, CACHE_KEY_PREFIX=f"gw-test-{secrets.token_hex(4)}")
    finally:
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


POSTGRES = "postgres://postgres@127.0.0.1:5432"
REDIS = "redis://127.0.0.1:6379/5"


def _reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def wait_for_a_fresh_window(needed_seconds: float = 10) -> None:
    """Limits count in fixed minute windows: do not let a test straddle a boundary."""
    left = 60 - time.time() % 60
    if left < needed_seconds:
        time.sleep(left + 0.2)
