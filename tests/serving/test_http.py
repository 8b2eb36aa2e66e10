"""serving.http does for the application's own views what Django's host check and SecurityMiddleware do:
the same requests, under the same settings, get the same verdict, redirect and headers from both."""
from __future__ import annotations

import io
from typing import Any

import pytest
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse
from django.middleware.security import SecurityMiddleware

from serving.http import Request, Response, Security

SETTINGS = [
    {},
    {"SECURE_SSL_REDIRECT": True},
    {"SECURE_SSL_REDIRECT": True, "SECURE_SSL_HOST": "secure.example", "SECURE_REDIRECT_EXEMPT": [r"^health$"]},
    {"SECURE_HSTS_SECONDS": 3600, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True, "SECURE_HSTS_PRELOAD": True,
     "SECURE_PROXY_SSL_HEADER": ("HTTP_X_FORWARDED_PROTO", "https")},
    {"SECURE_CONTENT_TYPE_NOSNIFF": False, "SECURE_REFERRER_POLICY": ["no-referrer", "strict-origin"],
     "SECURE_CROSS_ORIGIN_OPENER_POLICY": None},
    {"ALLOWED_HOSTS": [".example.com"], "USE_X_FORWARDED_HOST": True},
    {"ALLOWED_HOSTS": [], "DEBUG": True},
]
REQUESTS = [
    ("http", "/endpoints/chat/invocations", b"", [(b"host", b"127.0.0.1:8000")]),
    ("http", "/health", b"", [(b"host", b"localhost")]),
    ("https", "/v1/chat/completions", b"a=1", [(b"host", b"api.example.com")]),
    ("http", "/v1/embeddings", b"", [(b"host", b"evil.example")]),
    ("http", "/v1/embeddings", b"", [(b"host", b"x.example.com"), (b"x-forwarded-proto", b"https, http")]),
    ("http", "/v1/models", b"", [(b"host", b"evil.example"), (b"x-forwarded-host", b"api.example.com")]),
    ("http", "/endpoints/chat/invocations", b"", [(b"host", b"bad host!")]),
    ("http", "/endpoints/chat/invocations", b"", [(b"host", b"")]),
    ("http", "/endpoints/chat/invocations", b"", []),  # no Host: the server's name and port
]


def scope(scheme: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "scheme": scheme, "path": path, "raw_path": path.encode(),
            "query_string": query, "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 8000)}


def djangos(request_scope: dict[str, Any]) -> tuple[Any, ...]:
    request = ASGIRequest(request_scope, io.BytesIO(b""))
    try:
        request.get_host()
    except DisallowedHost:
        return ("disallowed",)
    middleware = SecurityMiddleware(lambda request: HttpResponse())
    redirect = middleware.process_request(request)
    if redirect is not None:
        return ("redirect", redirect.status_code, redirect["Location"])
    response = middleware.process_response(request, HttpResponse(content_type="application/json"))
    return ("headers", {k: v for k, v in response.items() if k != "Content-Type"})


def ours(request_scope: dict[str, Any]) -> tuple[Any, ...]:
    security = Security()
    request = Request(request_scope, b"")
    if not security.host_allowed(request):
        return ("disallowed",)
    redirect = security.redirect_to_https(request)
    if redirect is not None:
        return ("redirect", redirect.status_code, redirect["Location"])
    response = Response()
    security.add_headers(request, response)
    return ("headers", {k: v for k, v in response.headers.items() if k != "Content-Type"})


@pytest.mark.parametrize("overrides", SETTINGS)
def test_the_same_verdicts_and_headers_as_djangos_middleware(settings: Any, overrides: dict[str, Any]) -> None:
    for name, value in overrides.items():
        setattr(settings, name, value)
    for request in REQUESTS:
        assert ours(scope(*request)) == djangos(scope(*request)), request


def test_a_host_is_checked_once_and_the_memory_is_bounded(settings: Any) -> None:
    security = Security()
    for index in range(Security.MAX_HOSTS + 10):
        assert not security.host_allowed(Request(scope("http", "/", b"", [(b"host", f"h{index}.evil".encode())]), b""))
    assert len(security.hosts) <= Security.MAX_HOSTS
    assert security.host_allowed(Request(scope("http", "/", b"", [(b"host", b"localhost")]), b""))


def test_headers_are_read_as_djangos_meta_has_them() -> None:
    headers = [(b"X-Thing", b"a"), (b"x-thing", b"b"), (b"Content-Type", b"Application/JSON; charset=utf-8")]
    request = Request(scope("http", "/", b"", headers), b"{}")
    assert request.header("x-thing") == "a,b"
    assert request.content_type == "application/json"
    assert request.header("missing") is None
