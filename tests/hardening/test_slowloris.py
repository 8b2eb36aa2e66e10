"""Issue 15, item 8: slow clients no longer hold a worker.

The probe held 200 half-sent requests open for 30 s and none was closed; with a low open-file limit every
real request then failed; a 128 MiB header cost a worker 23 s of CPU. Now a head must arrive within
GATEWAY_HEADER_TIMEOUT_SECONDS and fit in GATEWAY_MAX_HEADER_BYTES, a body may not pause longer than
GATEWAY_BODY_TIMEOUT_SECONDS, and a worker holds at most GATEWAY_MAX_CONNECTIONS connections (fewer when
its open-file limit is low), closing the oldest idle or half-sent one to make room for a new client."""

from __future__ import annotations

import asyncio
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests
from uvicorn.server import ServerState

from serving.edge import EdgeLimits
from serving.worker import GatewayHttpToolsProtocol
from tests.hardening.rawhttp import exchange, parse, read_all
from tests.serving.conftest import ROOT, Server, Servers, config_text, free_port, mock_endpoint, server_env

pytestmark = pytest.mark.slow

HEAD_TIMEOUT = 3.0
BODY_TIMEOUT = 3.0
OPEN_FILES = 256  # the worker's hard limit: room for (256 - 64) / 2 = 96 connections
SLOWLORIS = 200


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker with short timeouts, started under a low open-file limit."""
    folder = tmp_path_factory.mktemp("slowloris")
    config = folder / "config.yaml"
    config.write_text(config_text(mock_endpoint("chat")))
    env = server_env(f"sqlite:///{folder}/gateway.sqlite3", GATEWAY_HEADER_TIMEOUT_SECONDS=str(HEAD_TIMEOUT),
                     GATEWAY_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
    port = free_port()
    log_path = folder / "start_server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "start_server", "--port", str(port), "--workers", "1",
             "--config-path", str(config)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES)))
    servers = Servers(folder)
    server = Server(process, port, log_path, env["STATIC_ROOT"])
    servers.started.append(server)
    try:
        server.wait_until_healthy()
        yield server
    finally:
        servers.kill_all()


def _worker(server: Server) -> psutil.Process:
    (pid,) = server.worker_pids()
    return psutil.Process(pid)


class Slowloris:
    """Sockets that each send part of a request head, some adding a header line every half second (the
    classic attack: each line resets an idle timer, never a deadline), and note when the server hangs up."""

    def __init__(self, port: int, count: int, head: bytes) -> None:
        self.sockets: list[socket.socket] = []
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(head)
            self.sockets.append(sock)
        self.opened = time.monotonic()
        self.closed_after: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self.stop = threading.Event()
        self.dripper = threading.Thread(target=self._drip, daemon=True)
        self.dripper.start()

    def _drip(self) -> None:
        while not self.stop.wait(0.5):
            for index, sock in enumerate(self.sockets[::2]):
                if index * 2 not in self.closed_after:
                    try:
                        sock.sendall(b"X-Still-Here: 1\r\n")
                    except OSError:
                        pass

    def wait_until_all_closed(self, timeout: float) -> None:
        deadline = self.opened + timeout
        for index, sock in enumerate(self.sockets):
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = b""
            try:
                while chunk := sock.recv(65536):
                    data += chunk
            except TimeoutError:
                continue  # still open
            except ConnectionResetError:
                pass
            self.closed_after[index] = time.monotonic() - self.opened
            self.answers[index] = data

    def close(self) -> None:
        self.stop.set()
        for sock in self.sockets:
            sock.close()


def test_half_sent_requests_are_closed_and_other_clients_are_served_meanwhile(gateway: Server) -> None:
    attack = Slowloris(gateway.port, SLOWLORIS, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    try:
        served = []
        while time.monotonic() - attack.opened < HEAD_TIMEOUT - 0.5:
            started = time.monotonic()
            reply = requests.post(gateway.url("/endpoints/chat/invocations"), timeout=5,
                                  json={"messages": [{"role": "user", "content": "still there?"}]})
            served.append((reply.status_code, time.monotonic() - started))
        assert len(served) >= 5
        assert all(status == 200 for status, _ in served), served
        assert max(seconds for _, seconds in served) < 1.0, served

        attack.wait_until_all_closed(HEAD_TIMEOUT + 3)
        assert len(attack.closed_after) == SLOWLORIS, f"{SLOWLORIS - len(attack.closed_after)} still open"
        assert max(attack.closed_after.values()) < HEAD_TIMEOUT + 3
        timed_out = [data for data in attack.answers.values() if data]
        assert timed_out, "no half-sent request was answered 408"
        answer = parse(timed_out[0], 0)
        assert answer.status == 408
        assert answer.json() == {"detail": f"The request head did not arrive within {HEAD_TIMEOUT:g} s "
                                           "(GATEWAY_HEADER_TIMEOUT_SECONDS)."}
    finally:
        attack.close()
    # Past the worker's room (96 connections under its open-file limit), the oldest half-sent ones were
    # closed for the newcomers; the worker says so, once per interval.
    log = gateway.wait_for_log("HTTP edge:")
    assert "idle connections closed for room" in log
    assert "GATEWAY_MAX_CONNECTIONS=2048 lowered to 96: this worker may open 256 files" in log


def test_a_body_that_stops_coming_is_timed_out(gateway: Server) -> None:
    head = (b"POST /endpoints/chat/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{\"messages\": ")
    answer = exchange(gateway.port, head, timeout=BODY_TIMEOUT + 5)
    assert answer.status == 408
    assert answer.json() == {"detail": f"The request body paused for more than {BODY_TIMEOUT:g} s "
                                       "(GATEWAY_BODY_TIMEOUT_SECONDS)."}
    assert BODY_TIMEOUT - 0.5 < answer.seconds < BODY_TIMEOUT + 2


def test_a_connection_that_never_sends_is_closed(gateway: Server) -> None:
    answer_seconds = exchange_nothing(gateway.port, HEAD_TIMEOUT + 5)
    assert HEAD_TIMEOUT - 0.5 < answer_seconds < HEAD_TIMEOUT + 2


def exchange_nothing(port: int, timeout: float) -> float:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        assert read_all(sock, timeout) == b""  # a plain close: nothing was asked
    return time.monotonic() - started


def test_a_huge_header_is_refused_fast(gateway: Server) -> None:
    """The probe's 128 MiB header cost a worker 23 s of CPU; the head now stops at 64 KiB."""
    worker = _worker(gateway)
    cpu_before = sum(worker.cpu_times()[:2])
    started = time.monotonic()
    sent = 0
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
        try:
            while sent < 128 << 20:
                sock.sendall(b"a" * (1 << 20))
                sent += 1 << 20
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = parse(read_all(sock), time.monotonic() - started)
    assert answer.status == 431
    assert answer.json() == {"detail": "The request head is larger than 65536 bytes (GATEWAY_MAX_HEADER_BYTES)."}
    assert sent < 32 << 20
    assert answer.seconds < 2
    assert sum(worker.cpu_times()[:2]) - cpu_before < 0.5
    assert requests.get(gateway.url("/health"), timeout=5).status_code == 200


def test_a_head_within_the_limit_is_served(gateway: Server) -> None:
    headers = {f"X-Filler-{i}": "z" * 1000 for i in range(50)}  # 50 KiB of headers
    assert requests.get(gateway.url("/health"), headers=headers, timeout=5).status_code == 200


# The connection cap when every connection is busy: a protocol-level test, with a cap of 2.
def test_past_the_cap_with_every_connection_busy_a_newcomer_gets_a_json_503(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GatewayHttpToolsProtocol, "limits", EdgeLimits(
        max_header_bytes=65536, header_timeout=5, body_timeout=5, max_connections=2, max_body_bytes=1 << 20))
    release = threading.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 10)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    answers: dict[str, Any] = {}

    def busy(name: str, port: int) -> None:
        answers[name] = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    def scenario(port: int) -> None:
        busy_clients = [threading.Thread(target=busy, args=(f"busy{i}", port)) for i in range(2)]
        for thread in busy_clients:
            thread.start()
        time.sleep(0.3)  # both are inside the application
        answers["newcomer"] = exchange(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        release.set()
        for thread in busy_clients:
            thread.join(10)
        answers["after"] = exchange(port, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")

    _run_protocol_server(app, scenario)
    assert [answers[f"busy{i}"].status for i in range(2)] == [200, 200]
    newcomer = answers["newcomer"]
    assert newcomer.status == 503
    assert newcomer.headers["retry-after"] == "1"
    assert newcomer.json() == {"error": {
        "message": "The server is at its connection limit (GATEWAY_MAX_CONNECTIONS); retry shortly.",
        "type": "server_error", "param": None, "code": "too_many_connections"}}
    assert answers["after"].status == 200


def test_past_the_cap_the_oldest_idle_connection_makes_room(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GatewayHttpToolsProtocol, "limits", EdgeLimits(
        max_header_bytes=65536, header_timeout=30, body_timeout=30, max_connections=2, max_body_bytes=1 << 20))

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})

    outcome: dict[str, Any] = {}

    def kept_alive_request(port: int) -> tuple[socket.socket, bytes]:
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"ok"):
            data += sock.recv(65536)
        return sock, data

    def scenario(port: int) -> None:
        idle = socket.create_connection(("127.0.0.1", port))  # the oldest
        half = socket.create_connection(("127.0.0.1", port))
        half.sendall(b"GET / HTTP/1.1\r\nHost")
        time.sleep(0.2)
        first, answer = kept_alive_request(port)  # closes `idle`
        outcome["first"] = answer.split(b"\r\n")[0]
        outcome["idle closed"] = read_all(idle, 2) == b""
        second, answer = kept_alive_request(port)  # closes `half`, older than `first`
        outcome["second"] = answer.split(b"\r\n")[0]
        outcome["half closed"] = read_all(half, 2) == b""
        first.close()
        second.close()

    _run_protocol_server(app, scenario)
    assert outcome == {"first": b"HTTP/1.1 200 OK", "idle closed": True, "second": b"HTTP/1.1 200 OK",
                       "half closed": True}


def _run_protocol_server(app: Any, scenario: Any) -> None:
    """Serve `app` with the workers' protocol on a free port while `scenario(port)` runs in a thread."""
    import uvicorn

    async def main() -> None:
        config = uvicorn.Config(app, lifespan="off", access_log=False, http=GatewayHttpToolsProtocol)
        config.load()
        state = ServerState()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: GatewayHttpToolsProtocol(config=config, server_state=state, app_state={}), "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        errors: list[BaseException] = []

        def run() -> None:
            try:
                scenario(port)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        while thread.is_alive():
            await asyncio.sleep(0.02)
        server.close()
        for connection in list(state.connections):
            connection.shutdown()
        if errors:
            raise errors[0]

    asyncio.run(main())

