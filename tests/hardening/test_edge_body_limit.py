"""Issue 15, item 6: every route has the body size limit, enforced while reading.

The probe POSTed 300 MiB to /api/2.0/endpoints/: Django's handler read it all (spooling it to a temporary
file) before answering 405. Now a declared Content-Length over GATEWAY_MAX_REQUEST_BYTES is refused before
any of the body is read, and a chunked body as soon as it passes the limit, with a JSON 413 that closes the
connection, on every route. Against a real start_server worker, over real sockets."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator

import openai
import pytest
import requests

from tests.hardening.rawhttp import exchange, parse, read_all, start_gateway
from tests.serving.conftest import Server, Servers

pytestmark = pytest.mark.slow

LIMIT = 1 << 20  # the servers' GATEWAY_MAX_REQUEST_BYTES: 1 MiB
ATTACK = 300 << 20  # what the probe sent
MESSAGE = f"The request body is larger than {LIMIT} bytes (GATEWAY_MAX_REQUEST_BYTES)."
# Every kind of route: Django's (MLflow listing, admin, management API, docs, an unknown path) and the
# invocation views (MLflow's and OpenAI's).
ROUTES = ["/api/2.0/endpoints/", "/admin/login/", "/api/manage/consumers/", "/openapi.json", "/no/such/route",
          "/v1/models", "/endpoints/chat/invocations", "/gateway/chat/invocations", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    servers = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield start_gateway(servers, tmp_path_factory.mktemp("body-limit"), GATEWAY_MAX_REQUEST_BYTES=str(LIMIT))
    finally:
        servers.kill_all()


def _expected(path: str) -> dict[str, object]:
    if path.startswith("/v1/"):
        return {"error": {"message": MESSAGE, "type": "invalid_request_error", "param": None,
                          "code": "request_too_large"}}
    return {"detail": MESSAGE}


def _head(path: str, *headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", ROUTES)
def test_a_declared_body_over_the_limit_is_refused_before_any_of_it_is_sent(gateway: Server, path: str) -> None:
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_head(path, f"Content-Length: {ATTACK}"))  # and not one byte of the body
        answer = parse(read_all(sock), time.monotonic() - started)
    assert answer.status == 413
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["connection"] == "close"
    assert answer.json() == _expected(path)
    assert answer.seconds < 2


def _send_chunked_until_answered(port: int, path: str) -> tuple[int, bytes]:
    """Send a chunked body of up to 300 MiB, 64 KiB a chunk, until the server answers or hangs up; the
    bytes of body sent, and the answer."""
    piece = b"%x\r\n" % 65536 + b"x" * 65536 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(_head(path, "Transfer-Encoding: chunked"))
        try:
            while sent < ATTACK:
                if select.select([sock], [], [], 0)[0]:
                    break  # the answer is there
                sock.sendall(piece)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        return sent, read_all(sock)


@pytest.mark.parametrize("path", ["/api/2.0/endpoints/", "/admin/login/", "/v1/chat/completions",
                                  "/endpoints/chat/invocations"])
def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(gateway: Server, path: str) -> None:
    sent, data = _send_chunked_until_answered(gateway.port, path)
    answer = parse(data, 0)
    assert answer.status == 413
    assert answer.json() == _expected(path)
    # Reading stopped at the limit: what else was sent sat in the sockets' buffers (a few MiB on loopback).
    assert sent < 32 << 20, f"{sent >> 20} MiB of the 300 were taken before the 413"


def test_the_clients_get_the_413(gateway: Server) -> None:
    """requests and the openai SDK, sending a body over the limit, read the answer (not a reset)."""
    big = {"messages": [{"role": "user", "content": "x" * (2 * LIMIT)}]}
    response = requests.post(gateway.url("/api/2.0/endpoints/"), json=big, timeout=10)
    assert (response.status_code, response.json()) == (413, {"detail": MESSAGE})
    response = requests.post(gateway.url("/endpoints/chat/invocations"), json=big, timeout=10)
    assert (response.status_code, response.json()) == (413, {"detail": MESSAGE})
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        sdk.chat.completions.create(model="chat", messages=big["messages"])  # type: ignore[arg-type]
    assert refused.value.status_code == 413
    assert refused.value.body == _expected("/v1/")["error"]


def test_a_body_within_the_limit_is_served_and_the_connection_kept(gateway: Server) -> None:
    with requests.Session() as session:
        content = "y" * (LIMIT - 1000)
        answered = session.post(gateway.url("/endpoints/chat/invocations"),
                                json={"messages": [{"role": "user", "content": content}]}, timeout=10)
        assert answered.status_code == 200
        assert answered.json()["choices"][0]["message"]["content"] == f"Echo: {content}"
        assert session.get(gateway.url("/api/2.0/endpoints/"), timeout=10).status_code == 200


def test_a_get_with_a_large_body_is_refused_too(gateway: Server) -> None:
    """The limit does not depend on the method: a GET's body is not read past it either."""
    answer = exchange(gateway.port, f"GET /api/2.0/endpoints/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                    f"Content-Length: {ATTACK}\r\n\r\n".encode())
    assert (answer.status, answer.json()) == (413, {"detail": MESSAGE})
