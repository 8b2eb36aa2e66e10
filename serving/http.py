"""The request and the response of the views the application serves itself (invocations, /health,
/metrics), and what Django's middleware would have done for them: the host check (ALLOWED_HOSTS) and
SecurityMiddleware's SECURE_* settings.

Django's HttpRequest and HttpResponse did this job before, and cost about a tenth of the CPU of a
chat invocation (bench/README.md): an ASGIRequest decodes every header into META and parses the
content type, an HttpResponse checks and re-encodes every header it is given, and the host check
parsed the Host header again on every request. Here a request keeps the ASGI scope's headers as they
came (looked up on demand), a response its headers as a dict, and a Host header already allowed is
allowed again with one dict look-up. The rules themselves are Django's, read from the same settings
(tests/serving/test_http.py compares both on the same requests).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from django.conf import settings
from django.http.request import split_domain_port, validate_host

from endpoints_app.errors import JSON, dumps


class Request:
    """An HTTP request as the views read it: method, path, body, and headers by lower-case name."""

    __slots__ = ("_headers", "body", "method", "path", "request_id", "scheme", "scope")

    def __init__(self, scope: dict[str, Any], body: bytes) -> None:
        self.scope = scope
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.scheme: str = scope.get("scheme", "http")
        self.body = body
        self.request_id = ""  # set by the application before the view runs
        self._headers: dict[str, str] | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by its lower-case name (repeated ones joined with a comma, as Django's META has them)."""
        headers = self._headers
        if headers is None:
            headers = self._headers = {}
            for key, value in self.scope["headers"]:
                text_key = key.decode("latin-1").lower()
                text = value.decode("latin-1")
                headers[text_key] = f"{headers[text_key]},{text}" if text_key in headers else text
        return headers.get(name, default)

    @property
    def content_type(self) -> str:
        """The body's media type, without its parameters (Django's request.content_type)."""
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()

    @property
    def full_path(self) -> str:
        query = self.scope.get("query_string", b"")
        return f"{self.path}?{query.decode('latin-1')}" if query else self.path


class Response:
    """A status, headers by name, and a body: bytes, or (a stream) an iterator of bytes sent as they come.
    `after`, if set, is called once the answer has been sent (or could not be): work the client need not
    wait for."""

    __slots__ = ("after", "body", "headers", "status_code", "stream")

    def __init__(self, body: bytes = b"", status: int = 200, content_type: str = JSON,
                 headers: dict[str, str] | None = None, stream: Iterator[bytes] | None = None) -> None:
        self.status_code = status
        self.body = body
        self.stream = stream
        self.after: Callable[[], None] | None = None
        self.headers = {"Content-Type": content_type}
        if headers:
            self.headers.update(headers)

    @property
    def streaming(self) -> bool:
        return self.stream is not None

    def __setitem__(self, name: str, value: str) -> None:
        self.headers[name] = value

    def __getitem__(self, name: str) -> str:
        return self.headers[name]

    def __contains__(self, name: str) -> bool:
        return name in self.headers

    def get(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    def close(self) -> None:
        """Ends a stream's generator (an upstream stream the client abandoned is closed with it)."""
        close = getattr(self.stream, "close", None)
        if close is not None:
            close()

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as the ASGI server takes them; a whole body also gets its Content-Length (no chunked
        encoding for an answer whose size is known)."""
        headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in self.headers.items()]
        if self.stream is None:
            headers.append((b"content-length", b"%d" % len(self.body)))
        return headers


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(data), status, JSON, headers)


class Security:
    """Django's host check and SecurityMiddleware, for the views the application serves itself: the settings
    are read once (as Django's middleware reads them), and each Host header is checked once."""

    MAX_HOSTS = 256  # Host headers remembered (a client can send any): beyond, the memory starts again

    def __init__(self) -> None:
        allowed = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not allowed:
            allowed = [".localhost", "127.0.0.1", "[::1]"]
        self.allowed_hosts = allowed
        self.use_forwarded_host = settings.USE_X_FORWARDED_HOST
        self.use_forwarded_port = settings.USE_X_FORWARDED_PORT
        self.hosts: dict[str, bool] = {}
        proxy_ssl = settings.SECURE_PROXY_SSL_HEADER
        self.proxy_ssl: tuple[str, str] | None = None
        if proxy_ssl:
            meta_name, secure_value = proxy_ssl
            self.proxy_ssl = (meta_name.removeprefix("HTTP_").replace("_", "-").lower(), secure_value)
        self.redirect = settings.SECURE_SSL_REDIRECT
        self.redirect_exempt = [re.compile(pattern) for pattern in settings.SECURE_REDIRECT_EXEMPT]
        self.redirect_host = settings.SECURE_SSL_HOST
        hsts = ""
        if settings.SECURE_HSTS_SECONDS:
            hsts = f"max-age={settings.SECURE_HSTS_SECONDS}"
            if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
                hsts += "; includeSubDomains"
            if settings.SECURE_HSTS_PRELOAD:
                hsts += "; preload"
        self.hsts = hsts
        always: list[tuple[str, str]] = []
        if settings.SECURE_CONTENT_TYPE_NOSNIFF:
            always.append(("X-Content-Type-Options", "nosniff"))
        referrer = settings.SECURE_REFERRER_POLICY
        if referrer:
            values = [v.strip() for v in referrer.split(",")] if isinstance(referrer, str) else list(referrer)
            always.append(("Referrer-Policy", ",".join(values)))
        if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
            always.append(("Cross-Origin-Opener-Policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY))
        self.always = always

    def host(self, request: Request) -> str:
        """The request's host (HttpRequest.get_host without the check)."""
        if self.use_forwarded_host and (forwarded := request.header("x-forwarded-host")) is not None:
            return forwarded
        host = request.header("host")
        if host is not None:
            return host
        server = request.scope.get("server") or ("unknown", 0)
        port = str(server[1])
        if self.use_forwarded_port and (forwarded_port := request.header("x-forwarded-port")) is not None:
            port = forwarded_port
        return f"{server[0]}:{port}" if port != ("443" if self.is_secure(request) else "80") else str(server[0])

    def host_allowed(self, request: Request) -> bool:
        host = self.host(request)
        allowed = self.hosts.get(host)
        if allowed is None:
            domain, _port = split_domain_port(host)
            allowed = bool(domain) and validate_host(domain, self.allowed_hosts)
            if len(self.hosts) >= self.MAX_HOSTS:
                self.hosts.clear()
            self.hosts[host] = allowed
        return allowed

    def is_secure(self, request: Request) -> bool:
        if self.proxy_ssl is not None:
            header, secure_value = self.proxy_ssl
            value = request.header(header)
            if value is not None:
                return value.split(",", 1)[0].strip() == secure_value
        return request.scheme == "https"

    def redirect_to_https(self, request: Request) -> Response | None:
        """SecurityMiddleware.process_request: the HTTPS redirect (SECURE_SSL_REDIRECT)."""
        if not self.redirect or self.is_secure(request):
            return None
        path = request.path.lstrip("/")
        if any(pattern.search(path) for pattern in self.redirect_exempt):
            return None
        response = Response(b"", 301, "text/html; charset=utf-8")
        response["Location"] = f"https://{self.redirect_host or self.host(request)}{request.full_path}"
        return response

    def add_headers(self, request: Request, response: Response) -> None:
        """SecurityMiddleware.process_response: HSTS over HTTPS, nosniff, the referrer and opener policies
        (a header the view set itself is kept)."""
        headers = response.headers
        if self.hsts and "Strict-Transport-Security" not in headers and self.is_secure(request):
            headers["Strict-Transport-Security"] = self.hsts
        for name, value in self.always:
            headers.setdefault(name, value)
