"""`start_server` end to end: real processes on a temp SQLite database, a temp YAML on the mock
provider, requests over HTTP. It serves, applies valid edits of the file without restarting a worker
or dropping a request, keeps serving the old config when an edit is invalid or the file is deleted,
never removes endpoints created in the admin, and stops its whole process tree."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import psutil
import pytest
import requests
from mlflow.deployments import get_deploy_client

from tests.serving.conftest import (
    ROOT,
    Server,
    Servers,
    chat,
    config_text,
    free_port,
    manage,
    mock_endpoint,
    server_env,
)

pytestmark = pytest.mark.slow

FIRST = config_text(mock_endpoint("chat"), mock_endpoint("embed", "llm/v1/embeddings"))


@pytest.fixture(scope="module")
def gateway_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    base = tmp_path_factory.mktemp("gateway")
    (base / "config").mkdir()
    config = base / "config" / "gateway.yaml"
    config.write_text(FIRST)
    return config, server_env(f"sqlite:///{base / 'gateway.sqlite3'}")


@pytest.fixture(scope="module")
def gateway(module_servers: Servers, gateway_files: tuple[Path, dict[str, str]]) -> Server:
    config, env = gateway_files
    return module_servers.start(env, config)


@pytest.fixture
def config_file(gateway: Server, gateway_files: tuple[Path, dict[str, str]]) -> Iterator[Path]:
    """The served file; each test leaves it as it found it (and waits until that is served)."""
    config = gateway_files[0]
    yield config
    if not config.exists() or config.read_text() != FIRST:
        write(config, FIRST)
        wait_until(lambda: served_names(gateway) & {"chat", "embed"} == {"chat", "embed"}
                   and not served_names(gateway) & {"added", "renamed-in", "only-in-file"})
    settled_version(gateway)


def served_names(server: Server) -> set[str]:
    listing = requests.get(server.url("/api/2.0/endpoints/"), timeout=5).json()
    return {endpoint["name"] for endpoint in listing["endpoints"]}


def write(path: Path, text: str) -> None:
    path.write_text(text)


def replace_like_an_editor(path: Path, text: str) -> None:
    """Write a new file beside it and rename it over the old one (vim, most editors, atomic deploys)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> float:
    """Seconds until `condition()` is true; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout}s")


def status_of(server: Server, name: str) -> int:
    return chat(server.url(f"/endpoints/{name}/invocations")).status_code


def settled_version(server: Server, timeout: float = 5.0) -> int:
    """The config version once every worker serves the same one (each polls on its own)."""
    workers = server.worker_pids()
    latest: dict[int, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = health(server)
        latest[int(str(body["pid"]))] = int(str(body["config_version"]))
        if set(latest) == workers and len(set(latest.values())) == 1:
            return next(iter(latest.values()))
        time.sleep(0.02)
    pytest.fail(f"workers did not settle on one config version: {latest}")


def health(server: Server) -> dict[str, object]:
    response = requests.get(server.url("/health"), timeout=5)
    assert response.status_code == 200
    return dict(response.json())


# -- serving ---------------------------------------------------------------------------------------------
def test_it_serves_health_and_an_invocation_from_the_file(gateway: Server) -> None:
    body = health(gateway)
    assert body["status"] == "OK"
    assert isinstance(body["config_version"], int) and body["config_version"] > 0
    response = chat(gateway.url("/endpoints/chat/invocations"), content="hello")
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Echo: hello"
    embed = requests.post(gateway.url("/endpoints/embed/invocations"), json={"input": "x"}, timeout=10)
    assert embed.status_code == 200
    assert f"Serving http://127.0.0.1:{gateway.port} with 2 uvicorn worker(s)" in gateway.log()
    assert f"Admin: http://127.0.0.1:{gateway.port}/admin/" in gateway.log()
    assert len(gateway.worker_pids()) == 2


def test_the_unmodified_mlflow_and_openai_clients_work_against_the_served_gateway(gateway: Server) -> None:
    """The production server (ASGI workers), not the test client: the real clients, streaming included."""
    mlflow_client = get_deploy_client(gateway.url(""))
    assert {e.name for e in mlflow_client.list_endpoints()} >= {"chat", "embed"}
    answer = mlflow_client.predict(endpoint="chat", inputs={"messages": [{"role": "user", "content": "hi"}]})
    assert answer["choices"][0]["message"]["content"] == "Echo: hi"
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)
    completion = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hey"}])
    assert completion.choices[0].message.content == "Echo: hey"
    streamed = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hey"}], stream=True)
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices) == "Echo: hey"
    vectors = sdk.embeddings.create(model="embed", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) > 0
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


def test_a_worker_that_dies_is_replaced(gateway: Server) -> None:
    before = gateway.worker_pids()
    victim = min(before)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: len(gateway.worker_pids() - {victim}) == 2, timeout=30)
    wait_until(lambda: f"worker {victim} exited" in gateway.log())
    assert status_of(gateway, "chat") == 200


def test_the_admin_and_docs_assets_are_served(gateway: Server) -> None:
    swagger_bundle = "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js"
    assert swagger_bundle in requests.get(gateway.url("/docs"), timeout=5).text
    for asset in (swagger_bundle, "/static/admin/css/base.css"):
        response = requests.get(gateway.url(asset), timeout=5)
        assert response.status_code == 200, asset
        assert len(response.content) > 1000


def test_after_applying_the_file_the_supervisor_tells_every_worker_at_once(servers: Servers, tmp_path: Path) -> None:
    """With the poll interval at a minute, only the supervisor's signal (SIGUSR1 after a successful
    apply) can make both workers serve the edit within seconds."""
    config = tmp_path / "gateway.yaml"
    config.write_text(FIRST)
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", GATEWAY_CONFIG_POLL_SECONDS="60")
    server = servers.start(env, config)
    assert status_of(server, "added") == 404
    assert len(server.worker_pids()) == 2
    write(config, FIRST + mock_endpoint("added"))
    # Every worker: several fresh connections in a row (the kernel spreads them over both workers).
    wait_until(lambda: all(status_of(server, "added") == 200 for _ in range(8)), timeout=20)


def test_a_valid_edit_is_served_within_seconds_without_dropping_a_request(gateway: Server,
                                                                            config_file: Path) -> None:
    workers_before = gateway.worker_pids()
    version_before = settled_version(gateway)
    statuses: list[int] = []
    stop = threading.Event()

    def keep_calling() -> None:  # keep-alive and fresh connections, as real clients do
        with requests.Session() as session:
            while not stop.is_set():
                statuses.append(chat(gateway.url("/endpoints/chat/invocations"), session=session).status_code)
                statuses.append(chat(gateway.url("/endpoints/chat/invocations")).status_code)

    callers = [threading.Thread(target=keep_calling) for _ in range(4)]
    for caller in callers:
        caller.start()
    try:
        time.sleep(0.3)
        write(config_file, FIRST + mock_endpoint("added"))
        seconds = wait_until(lambda: status_of(gateway, "added") == 200, timeout=15)
        replace_like_an_editor(config_file, FIRST + mock_endpoint("renamed-in"))
        seconds_replaced = wait_until(lambda: status_of(gateway, "renamed-in") == 200, timeout=15)
        time.sleep(0.3)
    finally:
        stop.set()
        for caller in callers:
            caller.join()
    # A file edit costs the watch step, a `load_config` child (Django's start-up: about a second on an
    # idle machine, several while these four callers saturate both cores; the price of a Django-free
    # supervisor) and one worker poll. A database change costs only the poll (test_multi_instance pins
    # that under a second).
    assert seconds < 10 and seconds_replaced < 10, (seconds, seconds_replaced)
    # Pruned: the file no longer has it. The worker that answered for "renamed-in" has the new table;
    # the other one may still be within its poll interval, so give every worker that long.
    wait_until(lambda: all(status_of(gateway, "added") == 404 for _ in range(4)), timeout=5)
    assert len(statuses) > 20
    assert set(statuses) == {200}, f"{statuses.count(200)} ok of {len(statuses)}: {set(statuses)}"
    assert gateway.worker_pids() == workers_before  # applied in place, never by restarting workers
    assert settled_version(gateway) > version_before
    assert "Configuration updated from" in gateway.log()


def test_an_invalid_edit_is_logged_and_the_old_config_keeps_serving(gateway: Server, config_file: Path) -> None:
    version = settled_version(gateway)
    start = len(gateway.log())
    broken = FIRST + mock_endpoint("broken").replace("provider: mock", "provider: no-such-provider")
    write(config_file, broken)
    log = gateway.wait_for_log("Invalid configuration:", start=start)
    assert "no-such-provider" in log[start:]
    assert status_of(gateway, "chat") == 200
    assert status_of(gateway, "broken") == 404
    write(config_file, "endpoints: [")  # not even YAML
    gateway.wait_for_log("not a valid YAML file", start=start)
    time.sleep(0.7)  # longer than a poll: nothing changed
    assert status_of(gateway, "chat") == 200
    assert settled_version(gateway) == version


def test_a_deleted_file_is_logged_and_skipped(gateway: Server, config_file: Path) -> None:
    start = len(gateway.log())
    config_file.unlink()
    gateway.wait_for_log("deleted; the current configuration keeps serving", start=start)
    assert status_of(gateway, "chat") == 200


def test_unchanged_content_is_skipped(gateway: Server, config_file: Path) -> None:
    version = settled_version(gateway)
    start = len(gateway.log())
    config_file.touch()
    write(config_file, FIRST)
    time.sleep(1.0)
    assert "Configuration updated" not in gateway.log()[start:]
    assert settled_version(gateway) == version


def test_an_endpoint_created_in_the_admin_survives_a_reload(gateway: Server, config_file: Path,
                                                            gateway_files: tuple[Path, dict[str, str]]) -> None:
    created = manage(gateway_files[1], "shell", "-c", (
        "from endpoints_app.models import Endpoint, Source\n"
        "Endpoint.objects.create(name='from-admin', endpoint_type='llm/v1/chat', provider='mock',"
        " model_name='m', config={}, source=Source.ADMIN)"
    ))
    assert created.returncode == 0, created.stderr
    wait_until(lambda: status_of(gateway, "from-admin") == 200)
    write(config_file, config_text(mock_endpoint("chat"), mock_endpoint("only-in-file")))
    wait_until(lambda: status_of(gateway, "only-in-file") == 200)
    wait_until(lambda: status_of(gateway, "embed") == 404)  # the file's own endpoint is pruned
    assert status_of(gateway, "from-admin") == 200


# -- starting and stopping ------------------------------------------------------------------------------
def test_sigterm_or_sigint_stops_the_whole_process_tree(servers: Servers, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    signals = (signal.SIGTERM, signal.SIGINT)
    started = {sig: servers.start(server_env(f"sqlite:///{tmp_path / f'{sig.name}.sqlite3'}"), config, wait=False)
               for sig in signals}
    for server in started.values():
        server.wait_until_healthy()
    for sig, server in started.items():
        tree = server.tree()  # start_server, two workers (and prune_usage's child while it runs): all must go
        assert len(server.worker_pids()) == 2
        assert server.stop(sig) == 0, server.log()
        _, alive = psutil.wait_procs(tree, timeout=5)
        assert alive == [], f"{sig.name} left {[p.pid for p in alive]} running"
        with pytest.raises(requests.ConnectionError):
            requests.get(server.url("/health"), timeout=2)
        assert server.log().count("Finished server process") == 2  # each worker shut down gracefully


def test_a_missing_or_invalid_config_file_exits_with_code_2_and_serves_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "missing.yaml"
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text(config_text(mock_endpoint("chat").replace("llm/v1/chat", "llm/v1/nonsense")))
    env = server_env(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    command = [sys.executable, "manage.py", "start_server", "--port", str(free_port())]
    runs = {  # all three at once: each is a whole Django start
        "flag": subprocess.Popen([*command, "--config-path", str(missing)], cwd=ROOT, env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "envvar": subprocess.Popen(command, cwd=ROOT, env={**env, "MLFLOW_GATEWAY_CONFIG": str(missing)},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
        "invalid": subprocess.Popen([*command, "--config-path", str(invalid)], cwd=ROOT,
                                    env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}"},
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True),
    }
    results = {name: process.communicate(timeout=60) for name, process in runs.items()}
    assert {name: process.returncode for name, process in runs.items()} == {"flag": 2, "envvar": 2, "invalid": 2}
    for name in ("flag", "envvar"):
        assert f"{missing} does not exist" in results[name][1]
    assert not (tmp_path / "db.sqlite3").exists()  # a missing file fails before the database is touched
    assert "The gateway configuration is invalid" in results["invalid"][1]
    assert "llm/v1/nonsense" in results["invalid"][1]
    assert "Serving" not in results["invalid"][0]
