"""Issue 15, item 11 (errors): every error a client can provoke is JSON in the route's shape, and /v1 types
client errors as OpenAI does. The probe found uvicorn's text/plain 400 for a malformed request, Django's
HTML 403 (a failed CSRF check) and 405 pages, and `server_error` on /v1's 400 and 405."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import requests

from tests.hardening.rawhttp import exchange, start_gateway
from tests.serving.conftest import Server, Servers

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    servers = Servers(tmp_path_factory.mktemp("servers"))
    try:
        yield start_gateway(servers, tmp_path_factory.mktemp("errors"))
    finally:
        servers.kill_all()


BAD_REQUEST = "Bad Request: the request is not valid HTTP."


@pytest.mark.parametrize("request_bytes", [
    b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nA header without a colon\r\n\r\n",
    b"POST /endpoints/chat/invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ten\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 TLS to a plain HTTP port\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",  # smuggling
])
def test_a_malformed_request_gets_a_json_400(gateway: Server, request_bytes: bytes) -> None:
    answer = exchange(gateway.port, request_bytes)
    assert answer.status == 400
    assert answer.headers["content-type"] == "application/json"
    assert answer.json() == {"detail": BAD_REQUEST}


def test_a_malformed_request_to_v1_gets_openais_envelope(gateway: Server) -> None:
    answer = exchange(gateway.port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nBad\r\n\r\n")
    assert answer.status == 400
    assert answer.json() == {"error": {"message": BAD_REQUEST, "type": "invalid_request_error", "param": None,
                                       "code": "bad_request"}}


@pytest.mark.parametrize(("method", "path", "status"), [
    ("POST", "/health", 405),
    ("DELETE", "/health", 405),
    ("POST", "/", 403),  # no CSRF token
    ("POST", "/admin/", 403),
    ("POST", "/docs", 405),
    ("PUT", "/redoc", 405),
    ("POST", "/api/2.0/endpoints/", 405),
    ("GET", "/no/such/route", 404),
])
def test_other_refusals_are_json(gateway: Server, method: str, path: str, status: int) -> None:
    response = requests.request(method, gateway.url(path), timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert isinstance(response.json()["detail"], str)


def test_a_failed_csrf_check_says_why(gateway: Server) -> None:
    response = requests.post(gateway.url("/admin/login/"), data={"username": "a", "password": "b"}, timeout=10)
    assert response.status_code == 403
    assert response.json() == {"detail": "Forbidden: CSRF verification failed (CSRF cookie not set.)."}


@pytest.mark.parametrize(("method", "path"), [("GET", "/v1/chat/completions"), ("GET", "/v1/embeddings"),
                                              ("POST", "/v1/models")])
def test_v1_405_is_an_invalid_request_error(gateway: Server, method: str, path: str) -> None:
    response = requests.request(method, gateway.url(path), timeout=10)
    assert response.status_code == 405
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "method_not_allowed"


def test_v1_400_is_an_invalid_request_error_for_the_sdk(gateway: Server) -> None:
    sdk = openai.OpenAI(base_url=gateway.url("/v1"), api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body == {"message": "You must provide a model parameter (the endpoint name).",
                                  "type": "invalid_request_error", "param": "model", "code": "missing_model"}
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    assert isinstance(missing.value.body, dict) and missing.value.body["type"] == "invalid_request_error"
