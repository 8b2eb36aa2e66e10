"""Issue 15, item 11 (stop): on SIGTERM, new connections are refused at once instead of hanging in the accept
queue, and what is still running when the grace period ends is ended in order: a stream gets a final error
event (a client must not take a cut stream for a complete one), a waiting call a JSON 503, each one log
line instead of a traceback."""

from __future__ import annotations

import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
import requests

from tests.serving.conftest import Servers, config_text, mock_endpoint, server_env

pytestmark = pytest.mark.slow

STOPPING = "The server is shutting down; retry the request."


def test_a_stopping_server_refuses_newcomers_and_ends_what_it_cuts(servers: Servers, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(config_text(
        mock_endpoint("slow", config={"stream_chunks": 1000, "chunk_delay_ms": 100}),  # a 100 s stream
        mock_endpoint("stuck", config={"latency_ms": 60000}),  # answers after a minute
    ))
    server = servers.start(server_env(f"sqlite:///{tmp_path}/gateway.sqlite3"), config, workers=1)
    sdk = openai.OpenAI(base_url=server.url("/v1"), api_key="unused", max_retries=0, timeout=30)
    outcome: dict[str, Any] = {}

    def sdk_stream() -> None:
        stream = sdk.chat.completions.create(model="slow", messages=[{"role": "user", "content": "hi " * 200}],
                                             stream=True)
        received = 0
        try:
            for _ in stream:
                received += 1
        except openai.APIError as error:
            outcome["sdk"] = (received, error.message, error.body)

    def mlflow_stream() -> None:
        with requests.post(server.url("/endpoints/slow/invocations"), stream=True, timeout=30,
                           json={"messages": [{"role": "user", "content": "hi " * 200}], "stream": True}) as answer:
            outcome["mlflow"] = [line for line in answer.iter_lines() if line]  # ends cleanly: no exception

    def waiting_call() -> None:
        answer = requests.post(server.url("/endpoints/stuck/invocations"), timeout=30,
                               json={"messages": [{"role": "user", "content": "hi"}]})
        outcome["waiting"] = (answer.status_code, answer.headers["Content-Type"], answer.json())

    clients = [threading.Thread(target=f) for f in (sdk_stream, mlflow_stream, waiting_call)]
    for client in clients:
        client.start()
    time.sleep(1.5)  # all three are under way
    log_start = len(server.log())
    server.process.send_signal(signal.SIGTERM)

    # A newcomer is refused at once (the probe's hung until the workers had finished).
    time.sleep(0.3)
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()
    assert time.monotonic() - started < 1

    for client in clients:
        client.join(30)
    assert server.process.wait(30) == 0

    received, message, body = outcome["sdk"]
    assert received > 5  # the stream was flowing, then ended with the gateway's error
    assert message == STOPPING
    assert body == {"message": STOPPING, "type": "server_error", "code": "server_shutting_down", "status": 503}
    events = outcome["mlflow"]
    assert len(events) > 5
    assert orjson.loads(events[-1].removeprefix(b"data: ")) == {"error": body}
    assert outcome["waiting"] == (503, "application/json", {"detail": STOPPING})

    log = server.log()[log_start:]
    assert log.count("the server stopped during a stream: cut") == 2
    assert log.count("the server stopped before the answer: /endpoints/stuck/invocations cancelled") == 1
    assert "Traceback" not in log and "Exception in ASGI application" not in log


@pytest.fixture
def servers(tmp_path: Path) -> Any:
    started = Servers(tmp_path)
    yield started
    started.kill_all()
