"""The supervisor as operators drive it: SIGHUP reloads, SIGTERM drains, a worker that keeps dying is
replaced at growing intervals, the workers do not outlive a killed supervisor, and the counter store's
directory goes away with the supervisor, whichever way it exits. Real `start_server` processes, as in
test_start_server; the restart delays and the worker's own start-up checks also in-process."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
import requests

from serving.supervisor import BASE_DIR, RestartBackoff, WorkerSlot, listen
from serving.worker import FAIL_AT_START_IF_EXISTS
from tests.serving.conftest import (
    Server,
    Servers,
    chat,
    config_text,
    free_port,
    manage,
    mock_endpoint,
    server_env,
)

FIRST = config_text(mock_endpoint("chat"), mock_endpoint("embed", "llm/v1/embeddings"))


def wait_until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    pytest.fail(f"condition not met within {timeout}s")


def every_worker(server: Server, condition: Callable[[], bool], calls: int = 8) -> bool:
    """`condition` holds for several calls in a row on fresh connections (the kernel spreads them)."""
    return all(condition() for _ in range(calls))


def embedding_size(server: Server) -> int:
    response = requests.post(server.url("/endpoints/embed/invocations"), json={"input": "x"}, timeout=10)
    assert response.status_code == 200, response.text
    return len(response.json()["data"][0]["embedding"])


def health_pid(server: Server) -> int:
    return int(requests.get(server.url("/health"), timeout=5).json()["pid"])


def gateway_dirs(folder: Path) -> list[Path]:
    """The counter store's temporary directories (tempfile.mkdtemp(prefix="gateway-")) in `folder`."""
    return sorted(folder.glob("gateway-*"))


# -- restart delays, in-process --------------------------------------------------------------------------
def test_restart_delays_double_up_to_a_maximum_and_start_again_after_a_healthy_life() -> None:
    backoff = RestartBackoff(first=0.5, maximum=30, healthy_after=30)
    assert [backoff.delay(lived=1.0) for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.delay(lived=30.0) == 0.5
    assert backoff.delay(lived=2.0) == 1


class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


def test_a_slot_replaces_its_dead_worker_once_the_delay_has_passed(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    started: list[FakeProcess] = []

    def start() -> FakeProcess:
        started.append(FakeProcess(len(started) + 1))
        return started[-1]

    slot = WorkerSlot(start, clock=lambda: now[0])  # type: ignore[arg-type]
    now[0] += 45
    assert slot.tend() is None  # alive
    started[0].returncode = -signal.SIGKILL
    assert slot.tend() == 145.5
    now[0] += 0.4
    assert slot.tend() == 145.5 and len(started) == 1
    now[0] += 0.1
    assert slot.tend() is None and len(started) == 2
    started[1].returncode = 3
    now[0] += 0.3
    assert slot.tend() == now[0] + 1  # it died at once: the next delay is twice as long
    assert "worker 1 exited (killed by SIGKILL) after 45.0 s; starting another in 0.5 s" in caplog.text
    assert "worker 2 started in place of worker 1" in caplog.text
    assert "worker 2 exited (exit code 3) after 0.3 s; starting another in 1 s" in caplog.text


def test_the_supervisor_imports_no_django() -> None:
    """It is the one long-lived process that is not a worker: it stays small (and cannot touch the database)."""
    script = "import json, sys, serving.supervisor; print(json.dumps([*sys.modules]))"
    loaded = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
                            check=True).stdout
    ours = {"django", "endpoints_app", "providers", "gateway_project"}
    assert [name for name in json.loads(loaded) if name.split(".")[0] in ours] == []


def test_a_slot_that_cannot_start_a_worker_tries_again_later(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    first = FakeProcess(1)
    attempts: list[float] = []

    def start() -> FakeProcess:
        attempts.append(now[0])
        if len(attempts) > 1:
            raise OSError(11, "Resource temporarily unavailable")
        return first

    slot = WorkerSlot(start, clock=lambda: now[0])  # type: ignore[arg-type]
    first.returncode = 1
    assert slot.tend() == 100.5
    now[0] = 100.5
    assert slot.tend() == 101.5  # the fork failed: the next attempt waits longer
    assert "cannot start a worker in place of worker 1: [Errno 11] Resource temporarily unavailable; trying " \
           "again in 1 s" in caplog.text


# -- the worker's own start-up checks ----------------------------------------------------------------------
def test_a_worker_whose_supervisor_is_already_gone_exits_at_once() -> None:
    """The supervisor may die between starting a worker and the worker's PR_SET_PDEATHSIG: the worker
    then compares its parent with the supervisor's pid it was given."""
    listener = listen("127.0.0.1", 0)
    try:
        not_our_parent = os.getppid()
        done = subprocess.run([sys.executable, "-m", "serving.worker", "--fd", str(listener.fileno()),
                               "--supervisor-pid", str(not_our_parent)], cwd=BASE_DIR, pass_fds=(listener.fileno(),),
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        listener.close()
    assert done.returncode == 1
    assert f"the supervisor (pid {not_our_parent}) is gone; exiting" in done.stderr


# -- SIGHUP --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sighup_applies_the_unchanged_file_again_without_restarting_a_worker(servers: Servers,
                                                                            tmp_path: Path) -> None:
    """An edit in the database (the admin, a script) changed one of the file's endpoints; SIGHUP puts
    the file's version back although the file did not change (the watcher alone would skip it)."""
    config = tmp_path / "gateway.yaml"
    config.write_text(FIRST)
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}")
    server = servers.start(env, config)
    workers = server.worker_pids()
    assert embedding_size(server) == 8
    edited = manage(env, "shell", "-c", "from endpoints_app.models import Endpoint\n"
                    "e = Endpoint.objects.get(name='embed'); e.config = {'dimensions': 3}; e.save()")
    assert edited.returncode == 0, edited.stderr
    wait_until(lambda: every_worker(server, lambda: embedding_size(server) == 3))
    start = len(server.log())
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: every_worker(server, lambda: embedding_size(server) == 8), timeout=20)
    log = server.wait_for_log("Configuration updated from", start=start)
    assert f"SIGHUP: applying {config}" in log[start:]
    assert "1 updated" in log[start:]
    assert server.worker_pids() == workers  # applied in place
    assert "exited" not in log


@pytest.mark.slow
def test_sighup_with_an_invalid_file_logs_it_and_the_current_config_keeps_serving(servers: Servers,
                                                                                tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(FIRST)
    server = servers.start(server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}"), config)
    config.write_text(FIRST + mock_endpoint("broken").replace("provider: mock", "provider: no-such-provider"))
    server.wait_for_log("Invalid configuration:")  # seen by the watcher, once
    start = len(server.log())
    server.process.send_signal(signal.SIGHUP)
    log = server.wait_for_log("Invalid configuration:", start=start, timeout=20)  # SIGHUP tries again
    assert "no-such-provider" in log[start:]
    assert chat(server.url("/endpoints/chat/invocations")).status_code == 200
    assert chat(server.url("/endpoints/broken/invocations")).status_code == 404
    assert server.process.poll() is None


@pytest.mark.slow
def test_sighup_without_a_config_file_tells_the_workers_to_rebuild_their_tables(servers: Servers,
                                                                              tmp_path: Path) -> None:
    """With the poll interval at a minute, only the signal makes the workers see a database change."""
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", GATEWAY_CONFIG_POLL_SECONDS="60")
    server = servers.start(env)
    server.wait_until_every_worker_answers()  # each has built its table before the change
    url = server.url("/endpoints/from-shell/invocations")
    assert every_worker(server, lambda: chat(url).status_code == 404)  # both workers have built their table
    created = manage(env, "shell", "-c", (
        "from endpoints_app.models import Endpoint, Source\n"
        "Endpoint.objects.create(name='from-shell', endpoint_type='llm/v1/chat', provider='mock',"
        " model_name='m', config={}, source=Source.ADMIN)"))
    assert created.returncode == 0, created.stderr
    assert every_worker(server, lambda: chat(url).status_code == 404)
    server.process.send_signal(signal.SIGHUP)
    wait_until(lambda: every_worker(server, lambda: chat(url).status_code == 200), timeout=10)
    assert "SIGHUP: the workers were told to rebuild their endpoint tables" in server.log()


# -- stopping ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_lets_an_in_flight_request_finish_and_removes_the_store(servers: Servers, tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("slow", config={"latency_ms": 3000})))
    temp = tmp_path / "tmp"
    temp.mkdir()
    server = servers.start(server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", TMPDIR=str(temp)), config)
    assert len(gateway_dirs(temp)) == 1
    answers: list[requests.Response] = []
    caller = threading.Thread(target=lambda: answers.append(chat(server.url("/endpoints/slow/invocations"),
                                                                 content="late", timeout=30)))
    started = time.monotonic()
    caller.start()
    time.sleep(1.0)  # the request is in flight (the mock answers after 3 s)
    assert server.stop(signal.SIGTERM) == 0, server.log()
    caller.join(30)
    assert len(answers) == 1
    assert answers[0].status_code == 200
    assert answers[0].json()["choices"][0]["message"]["content"] == "Echo: late"
    assert time.monotonic() - started >= 3
    assert server.log().count("Finished server process") == 2
    assert gateway_dirs(temp) == []


@pytest.mark.slow
def test_the_workers_exit_when_the_supervisor_is_killed(servers: Servers, tmp_path: Path) -> None:
    """SIGKILL or the OOM killer leave no time to stop the workers: each asked the kernel for SIGTERM
    when its parent dies (PR_SET_PDEATHSIG)."""
    temp = tmp_path / "tmp"  # where its counter store's directory stays behind
    temp.mkdir()
    server = servers.start(server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", TMPDIR=str(temp)))
    workers = [psutil.Process(pid) for pid in server.worker_pids()]
    assert len(workers) == 2
    server.process.kill()
    server.process.wait(10)
    try:
        _, alive = psutil.wait_procs(workers, timeout=15)
        assert alive == [], "workers outlived their supervisor"
    finally:
        for worker in workers:
            if worker.is_running():
                worker.kill()


@pytest.mark.slow
def test_when_the_workers_cannot_start_the_supervisor_exits_and_removes_the_store(tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    failing = tmp_path / "workers-fail"
    failing.touch()
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", TMPDIR=str(temp),
                     STATIC_ROOT=str(tmp_path / "static"), **{FAIL_AT_START_IF_EXISTS: str(failing)})
    done = subprocess.run([sys.executable, "manage.py", "start_server", "--port", str(free_port())], cwd=BASE_DIR,
                          env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the workers did not start" in done.stdout
    assert gateway_dirs(temp) == []


# -- a worker that keeps dying -------------------------------------------------------------------------------
EXITED = re.compile(r"worker (\d+) exited \((.+?)\) after [\d.]+ s; starting another in ([\d.]+) s")


@pytest.mark.slow
def test_a_worker_that_keeps_dying_is_replaced_at_growing_intervals(servers: Servers, tmp_path: Path) -> None:
    """Once the server runs, new workers fail at start (the test hook); one worker is killed. Its
    replacements die at once, and are started again after 0.5, 1, 2, 4 s, while the other worker serves.
    When they can start again, the slot serves again."""
    failing = tmp_path / "workers-fail"
    env = server_env(f"sqlite:///{tmp_path / 'gateway.sqlite3'}", **{FAIL_AT_START_IF_EXISTS: str(failing)})
    config = tmp_path / "gateway.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    server = servers.start(env, config)
    survivor, victim = sorted(server.worker_pids())
    statuses: list[int] = []
    stop = threading.Event()

    def keep_calling() -> None:
        while not stop.is_set():
            statuses.append(chat(server.url("/endpoints/chat/invocations")).status_code)
            time.sleep(0.1)

    caller = threading.Thread(target=keep_calling)
    failing.touch()
    os.kill(victim, signal.SIGKILL)
    caller.start()
    exits: dict[tuple[str, ...], float] = {}  # (pid, how, delay) of each "exited" line: when it was logged
    deadline = time.monotonic() + 60
    try:
        while len(exits) < 4 and time.monotonic() < deadline:
            for match in EXITED.finditer(server.log()):
                exits.setdefault(match.groups(), time.monotonic())
            time.sleep(0.02)
        failing.unlink()  # the next replacement starts, and serves
        wait_until(lambda: server.log().count("started in place of") == 4, timeout=30)
        replacement = max(server.worker_pids())
        wait_until(lambda: replacement in {health_pid(server) for _ in range(8)}, timeout=30)
    finally:
        stop.set()
        caller.join()
    ordered = sorted(exits.items(), key=lambda item: item[1])
    assert ordered[0][0][0] == str(victim)
    assert [how for (_, how, _), _ in ordered] == ["killed by SIGKILL"] + ["exit code 3"] * 3
    delays = [float(delay) for (_, _, delay), _ in ordered]
    assert delays == [0.5, 1, 2, 4]
    times = [at for _, at in ordered]
    for delay, before, after in zip(delays, times, times[1:], strict=False):
        assert after - before >= delay - 0.1, (delays, times)  # spaced out, not every 0.2 s
    assert survivor in server.worker_pids()
    assert statuses and set(statuses) == {200}  # the other worker served all along


def test_a_worker_that_serves_invocations_imports_no_drf() -> None:
    """Django's setup (the admin's autodiscovery included) and the ASGI application leave the management API
    unloaded (only the installed apps' own small modules of DRF and django-filter): about 20 MiB of each worker
    that only serves invocations."""
    script = ("import json, sys, django; django.setup(); import gateway_project.asgi, serving.views; "
              "print(json.dumps([*sys.modules]))")
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "gateway_project.settings", "DEBUG": "false",
           "SECRET_KEY": "worker-imports-test-" + "x" * 40}
    loaded = subprocess.run([sys.executable, "-c", script], cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
                            check=True, env=env).stdout
    heavy = {"drf_spectacular.openapi", "pygments", "rest_framework.serializers", "rest_framework.viewsets",
             "rest_framework.views", "consumers.api", "endpoints_app.api"}
    assert sorted(set(json.loads(loaded)) & heavy) == []
