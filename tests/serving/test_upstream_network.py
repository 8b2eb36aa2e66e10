"""The upstream transport on real networks, end to end: requests go through the gateway (the ASGI
application) to an `openai` endpoint whose base URL points at a local server, plain or TLS, directly
or through a local proxy (tests/proxyserver.py). Proxies from the environment, a CA bundle, compressed
bodies and streams, TLS failures, and the rule that a request the upstream may have read is never sent
twice."""
from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from django.core.exceptions import ImproperlyConfigured

from gateway_project.settings import env_file
from providers.shapes import CHAT
from serving.upstream import reset_transport
from tests.certificates import CertificateAuthority, make_test_ca
from tests.conftest import MakeEndpoint, parse_sse_text, post_json
from tests.fixtures import payload, raw
from tests.proxyserver import Proxy
from tests.rawserver import _read_request, raw_server

pytestmark = pytest.mark.django_db

Reply = Callable[[BaseHTTPRequestHandler], None]
CHAT_BODY = {"messages": [{"role": "user", "content": "Hi"}]}
STREAM_BODY = {**CHAT_BODY, "stream": True, "stream_options": {"include_usage": True}}
CHAT_RESPONSE = orjson.dumps(payload("openai", "chat_response.json"))
PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY",
                   "all_proxy", "SSL_CERT_FILE", "SSL_CERT_DIR")


def send(status: int, body: bytes, headers: dict[str, str]) -> Reply:
    def reply(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return reply


ok = send(200, CHAT_RESPONSE, {"Content-Type": "application/json"})


class Upstream(ThreadingHTTPServer):
    """An OpenAI-speaking server on 127.0.0.1, plain or TLS. `connections` counts accepted TCP connections
    (each one TLS handshake attempt); `requests` records (path, headers) of each request read."""

    daemon_threads = True

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.reply: Reply = ok
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                upstream.reply(self)

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.server_address[1]}/v1"

    def get_request(self) -> tuple[Any, Any]:
        connection = super().get_request()
        self.connections += 1
        return connection

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(5)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return  # the client gave up on the handshake (an untrusted certificate)
        super().finish_request(request, client_address)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass

    def close(self) -> None:
        self.shutdown()
        self.server_close()


@pytest.fixture(autouse=True)
def fresh_transport(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No proxy or certificate variable from the machine; a transport (so a pool, reading the environment
    once) built for each test, after it has set its variables and settings."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    reset_transport()
    yield
    reset_transport()


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return make_test_ca(tmp_path)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


@pytest.fixture
def tls_upstream(ca: CertificateAuthority) -> Iterator[Upstream]:
    server = Upstream(ca.server_context())
    yield server
    server.close()


@pytest.fixture
def endpoint(make_endpoint: MakeEndpoint) -> Callable[..., str]:
    """An OpenAI chat endpoint named "chat" on the given base URL; returns its MLflow invocation path."""

    def make(base_url: str, **timeouts: Any) -> str:
        make_endpoint("chat", CHAT, "openai", "gpt-4o-mini",
                      {"openai_api_key": "sk-test", "openai_api_base": base_url}, timeouts=timeouts or None)
        return "/endpoints/chat/invocations"

    return make


def answer_text(response: Any) -> str:
    return str(response.json()["choices"][0]["message"]["content"])


# -- proxies --------------------------------------------------------------------------------------------
def test_an_http_upstream_is_reached_through_http_proxy(client: Any, endpoint: Callable[..., str],
                                                        upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 200, response.content
    assert answer_text(response) == "Hello! How can I help?"
    assert proxy.seen == [f"POST {upstream.base_url}/chat/completions HTTP/1.1"]  # the absolute form
    assert upstream.requests[0][0] == "/v1/chat/completions"
    assert upstream.requests[0][1]["host"] == upstream.base_url.split("/")[2]


def test_an_https_upstream_is_reached_through_a_connect_tunnel(
        client: Any, endpoint: Callable[..., str], tls_upstream: Upstream, ca: CertificateAuthority,
        monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    settings.GATEWAY_CA_BUNDLE = str(ca.ca_file)
    with Proxy() as proxy:
        monkeypatch.setenv("https_proxy", proxy.url())
        path = endpoint(tls_upstream.base_url)
        first = post_json(client, path, CHAT_BODY)
        second = post_json(client, path, CHAT_BODY)
    assert first.status_code == second.status_code == 200, first.content
    authority = tls_upstream.base_url.split("/")[2]
    assert proxy.seen == [f"CONNECT {authority} HTTP/1.1"]  # one tunnel, kept alive for the second request
    assert [request[0] for request in tls_upstream.requests] == ["/v1/chat/completions"] * 2
    assert tls_upstream.connections == 1


def test_no_proxy_sends_the_upstream_direct_and_the_proxy_sees_nothing(
        client: Any, endpoint: Callable[..., str], upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with Proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        monkeypatch.setenv("NO_PROXY", "localhost,.internal,127.0.0.1")
        response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 200
    assert proxy.seen == []
    assert len(upstream.requests) == 1


def test_the_environment_is_read_once_per_pool(client: Any, endpoint: Callable[..., str], upstream: Upstream,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    path = endpoint(upstream.base_url)
    with Proxy() as proxy:
        assert post_json(client, path, CHAT_BODY).status_code == 200
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        assert post_json(client, path, CHAT_BODY).status_code == 200
        assert proxy.seen == []  # the pool read the environment when it was made
        reset_transport()
        assert post_json(client, path, CHAT_BODY).status_code == 200
        assert len(proxy.seen) == 1


def test_proxy_credentials_are_sent_as_basic_auth_and_never_logged(
        client: Any, endpoint: Callable[..., str], upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Proxy(credentials=("gateway", "pr0xy-s3cret")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url("gateway", "pr0xy-s3cret"))
        response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 200, response.content
    assert proxy.authorizations == ["Basic Z2F0ZXdheTpwcjB4eS1zM2NyZXQ="]  # gateway:pr0xy-s3cret
    assert "proxy-authorization" not in upstream.requests[0][1]  # for the proxy only
    assert "pr0xy-s3cret" not in caplog.text


def test_wrong_proxy_credentials_are_a_502_that_never_shows_them(
        client: Any, endpoint: Callable[..., str], tls_upstream: Upstream, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with Proxy(credentials=("gateway", "right")) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url("gateway", "wr0ng-s3cret"))
        path = endpoint(tls_upstream.base_url, retries=1)
        response = post_json(client, path, CHAT_BODY)
        v1 = post_json(client, "/v1/chat/completions", {**CHAT_BODY, "model": "chat"})
    authority = tls_upstream.base_url.split("/")[2]
    assert response.status_code == 502
    assert response.json()["detail"] == (
        f"The upstream at https://{authority} is unreachable: the proxy {proxy.address} refused the tunnel to "
        f"{authority}: 407 Proxy Authentication Required"
    )
    assert v1.status_code == 502
    assert v1.json()["error"]["code"] == "upstream_unreachable"
    assert len(proxy.seen) == 4  # refused before anything was sent: retried (once per call here)
    assert tls_upstream.connections == 0
    for text in (caplog.text, response.content.decode(), v1.content.decode()):
        assert "wr0ng-s3cret" not in text
        assert "gateway:" not in text
    assert "refused the tunnel" in caplog.text  # the failure is logged, naming the proxy by host:port only


@pytest.mark.parametrize("status", [HTTPStatus.FORBIDDEN, HTTPStatus.PROXY_AUTHENTICATION_REQUIRED,
                                    HTTPStatus.BAD_GATEWAY])
def test_a_proxy_refusing_the_tunnel_is_a_502_upstream_unreachable_naming_its_status(
        status: HTTPStatus, client: Any, endpoint: Callable[..., str], tls_upstream: Upstream,
        monkeypatch: pytest.MonkeyPatch) -> None:
    with Proxy(refuse=status) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url())
        response = post_json(client, endpoint(tls_upstream.base_url, retries=0), CHAT_BODY)
    assert response.status_code == 502
    assert response.json()["detail"].endswith(
        f"the proxy {proxy.address} refused the tunnel to {tls_upstream.base_url.split('/')[2]}: "
        f"{status.value} {status.phrase}")
    assert tls_upstream.connections == 0


def test_a_forwarding_proxy_asking_for_credentials_is_a_502_upstream_unreachable(
        client: Any, endpoint: Callable[..., str], upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    with Proxy(credentials=("gateway", "right")) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url())
        response = post_json(client, endpoint(upstream.base_url, retries=0), CHAT_BODY)
    assert response.status_code == 502
    assert response.json()["detail"].endswith(
        f"is unreachable: the proxy {proxy.address} refused the request: 407 Proxy Authentication Required")
    assert upstream.requests == []


def test_an_unreachable_proxy_is_a_502_naming_it(client: Any, endpoint: Callable[..., str], upstream: Upstream,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HTTP_PROXY", f"http://user:hunter2@127.0.0.1:{port}")
    response = post_json(client, endpoint(upstream.base_url, retries=0), CHAT_BODY)
    assert response.status_code == 502
    assert response.json()["detail"].endswith(
        f"is unreachable: the proxy 127.0.0.1:{port} refused the connection: Connection refused")
    assert "hunter2" not in response.content.decode()
    assert upstream.requests == []


def test_a_proxy_variable_that_is_not_an_http_url_is_a_configuration_error(
        client: Any, endpoint: Callable[..., str], upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "socks5://user:hunter2@127.0.0.1:1080")
    response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 500
    assert response.json()["detail"] == (
        "Upstream calls cannot be made: the https proxy set in the environment is not an http://host:port URL.")
    assert upstream.requests == []


# -- TLS ------------------------------------------------------------------------------------------------
def test_the_ca_bundle_setting_makes_a_private_upstream_trusted(
        client: Any, endpoint: Callable[..., str], tls_upstream: Upstream, ca: CertificateAuthority,
        settings: Any) -> None:
    path = endpoint(tls_upstream.base_url)
    untrusted = post_json(client, path, CHAT_BODY)
    assert untrusted.status_code == 502
    assert untrusted.json()["detail"].endswith(
        "failed: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: unable to get local issuer certificate")
    settings.GATEWAY_CA_BUNDLE = str(ca.ca_file)
    reset_transport()
    trusted = post_json(client, path, CHAT_BODY)
    assert trusted.status_code == 200, trusted.content
    assert answer_text(trusted) == "Hello! How can I help?"


def test_ssl_cert_file_still_replaces_the_system_store(client: Any, endpoint: Callable[..., str],
                                                       tls_upstream: Upstream, ca: CertificateAuthority,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(ca.ca_file))
    response = post_json(client, endpoint(tls_upstream.base_url), CHAT_BODY)
    assert response.status_code == 200, response.content


def test_a_ca_bundle_that_does_not_exist_is_refused_at_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GATEWAY_CA_BUNDLE", str(tmp_path / "missing.pem"))
    with pytest.raises(ImproperlyConfigured, match=r"GATEWAY_CA_BUNDLE='.*missing\.pem' is not a file"):
        env_file("GATEWAY_CA_BUNDLE")
    monkeypatch.setenv("GATEWAY_CA_BUNDLE", "")
    assert env_file("GATEWAY_CA_BUNDLE") is None


def test_a_tls_failure_is_the_same_502_on_every_route_and_for_streams_and_is_not_retried(
        client: Any, endpoint: Callable[..., str], tls_upstream: Upstream) -> None:
    path = endpoint(tls_upstream.base_url, retries=2)
    calls = [
        ("mlflow", lambda: post_json(client, path, CHAT_BODY)),
        ("mlflow stream", lambda: post_json(client, path, STREAM_BODY)),
        ("openai", lambda: post_json(client, "/v1/chat/completions", {**CHAT_BODY, "model": "chat"})),
        ("openai stream", lambda: post_json(client, "/v1/chat/completions", {**STREAM_BODY, "model": "chat"})),
    ]
    for name, call in calls:
        before = tls_upstream.connections
        response = call()
        assert response.status_code == 502, name
        body = response.json()
        message = body["detail"] if "detail" in body else body["error"]["message"]
        if "error" in body:
            assert body["error"]["code"] == "upstream_tls_error", name
            assert body["error"]["type"] == "api_connection_error", name
        assert message == (f"TLS with the upstream at {tls_upstream.base_url.removesuffix('/v1')} failed: "
                           "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: "
                           "unable to get local issuer certificate"), name
        time.sleep(0.05)  # the server thread counts the connection as it accepts it
        assert tls_upstream.connections == before + 1, f"{name}: one handshake attempt, not retried"
    assert tls_upstream.requests == []


# -- compressed bodies ----------------------------------------------------------------------------------
def gzip_compressor() -> Any:
    return zlib.compressobj(wbits=16 + zlib.MAX_WBITS)


def test_a_gzip_json_body_is_decoded(client: Any, endpoint: Callable[..., str], upstream: Upstream) -> None:
    compressor = gzip_compressor()
    upstream.reply = send(200, compressor.compress(CHAT_RESPONSE) + compressor.flush(),
                          {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 200, response.content
    assert answer_text(response) == "Hello! How can I help?"
    assert upstream.requests[0][1]["accept-encoding"] == "gzip, deflate"


def test_a_deflate_body_is_decoded(client: Any, endpoint: Callable[..., str], upstream: Upstream) -> None:
    upstream.reply = send(200, zlib.compress(CHAT_RESPONSE),
                          {"Content-Type": "application/json", "Content-Encoding": "deflate"})
    response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 200, response.content
    assert answer_text(response) == "Hello! How can I help?"


def test_a_gzip_error_body_is_decoded_too(client: Any, endpoint: Callable[..., str], upstream: Upstream) -> None:
    compressor = gzip_compressor()
    error = orjson.dumps({"error": {"message": "quota exceeded"}})
    upstream.reply = send(400, compressor.compress(error) + compressor.flush(),
                          {"Content-Type": "application/json", "Content-Encoding": "gzip"})
    response = post_json(client, endpoint(upstream.base_url), CHAT_BODY)
    assert response.status_code == 400
    assert response.json() == {"detail": "quota exceeded"}


def test_a_gzip_sse_stream_is_decoded_chunk_by_chunk(client: Any, endpoint: Callable[..., str],
                                                     upstream: Upstream) -> None:
    events = [block + "\n\n" for block in raw("openai", "chat_stream.txt").strip().split("\n\n")]
    first_relayed = threading.Event()
    relayed_while_the_rest_waited: list[bool] = []

    def stream(handler: BaseHTTPRequestHandler) -> None:
        compressor = gzip_compressor()
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Content-Encoding", "gzip")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for index, event in enumerate(events):  # one flushed gzip block per event, as streaming servers send them
            data = compressor.compress(event.encode()) + compressor.flush(zlib.Z_SYNC_FLUSH)
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            handler.wfile.flush()
            if index == 1:  # the rest waits until the client has had the first events
                relayed_while_the_rest_waited.append(first_relayed.wait(5))
        tail = compressor.flush()
        handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(tail), tail))

    upstream.reply = stream
    response = post_json(client, endpoint(upstream.base_url), STREAM_BODY)
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    first = next(chunks)
    assert b'"role":"assistant"' in first
    first_relayed.set()
    received = parse_sse_text((first + b"".join(chunks)).decode())
    assert relayed_while_the_rest_waited == [True]
    assert received[-1] == "[DONE]"
    assert [e["choices"][0]["delta"]["content"] for e in received[:-1] if e["choices"]] == ["", "Hel", "lo", None]
    assert received[-2]["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}


def test_an_unknown_content_encoding_is_a_502_bad_upstream_response(client: Any, endpoint: Callable[..., str],
                                                                   upstream: Upstream) -> None:
    upstream.reply = send(200, b"\x1b\x00\x00", {"Content-Type": "application/json", "Content-Encoding": "br"})
    path = endpoint(upstream.base_url, retries=2)
    response = post_json(client, path, CHAT_BODY)
    assert response.status_code == 502
    assert response.json()["detail"] == (
        f"The upstream at {upstream.base_url.removesuffix('/v1')} sent an invalid response: "
        "the body is in an unsupported Content-Encoding 'br'"
    )
    stream = post_json(client, "/v1/chat/completions", {**STREAM_BODY, "model": "chat"})
    assert stream.status_code == 502
    assert stream.json()["error"]["code"] == "bad_upstream_response"
    assert len(upstream.requests) == 2  # not retried


# -- the resend rule ------------------------------------------------------------------------------------
def test_a_kept_alive_connection_closed_after_reading_the_next_request_is_a_502_and_not_resent(
        client: Any, endpoint: Callable[..., str]) -> None:
    requests: list[bytes] = []
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(CHAT_RESPONSE), CHAT_RESPONSE)

    def answer_once_then_hang_up(conn: socket.socket) -> None:
        requests.append(b"first")  # raw_server read it
        conn.sendall(answer)
        requests.append(_read_request(conn))  # the next one, on the kept-alive connection: read, never answered

    with raw_server(answer_once_then_hang_up) as base:
        path = endpoint(f"{base}/v1", retries=2)
        assert post_json(client, path, CHAT_BODY).status_code == 200
        response = post_json(client, path, CHAT_BODY)
    assert response.status_code == 502
    assert response.json()["detail"].startswith(f"The connection to {base} failed:")
    assert len(requests) == 2  # the server saw the second request exactly once
    assert requests[1].startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
