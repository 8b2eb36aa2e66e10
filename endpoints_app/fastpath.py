"""The invocation fast path: a thin WSGI layer in front of Django.

An invocation POST (`/endpoints/<name>/invocations`, `/gateway/<name>/invocations`, `/v1/chat/
completions`, `/v1/completions`, `/v1/embeddings`), and `GET /health` (load balancers poll it), go
straight to their view. It skips URL resolution,
the middleware stack (sessions, auth, messages, CSRF: none of which an invocation uses) and the
request signals; measured, these were about half the CPU of a mock invocation (see bench/README.md).
Every other request goes to Django unchanged; a worker that serves only these never imports DRF
(about 50 MB of memory per worker). The views are the same either way, so behaviour is
the same; the host check and the security headers the middleware would add are kept here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from typing import Any

from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponseBase

from endpoints_app import invocations
from endpoints_app.errors import json_response

logger = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

_ROUTE = re.compile(
    r"^/(?:(?:endpoints|gateway)/(?P<name>[a-zA-Z0-9_.\-]+)/invocations|v1/(?P<v1>chat/completions|completions|embeddings))$"
)
_V1_VIEWS = {
    "chat/completions": invocations.openai_chat,
    "completions": invocations.openai_completions,
    "embeddings": invocations.openai_embeddings,
}
# What SecurityMiddleware would add to these responses.
_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "same-origin"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
]


class InvocationFastPath:
    def __init__(self, django_app: WSGIApp) -> None:
        self.django_app = django_app

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD")
        if method == "POST":
            match = _ROUTE.match(environ.get("PATH_INFO", ""))
            if match is not None:
                return self._invoke(match, environ, start_response)
        elif method == "GET" and environ.get("PATH_INFO") == "/health":
            return self._respond(invocations.health(WSGIRequest(environ)), start_response)
        return self.django_app(environ, start_response)

    def _invoke(self, match: re.Match[str], environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        request = WSGIRequest(environ)
        try:
            request.get_host()  # ALLOWED_HOSTS, as CommonMiddleware checks it
            name = match["name"]
            response: HttpResponseBase = (
                invocations.endpoint_invocations(request, name) if name else _V1_VIEWS[match["v1"]](request)
            )
        except DisallowedHost:
            response = json_response({"detail": "Bad Request: the Host header is not allowed."}, 400)
        except Exception:
            logger.exception("invocation failed: %s", environ.get("PATH_INFO"))
            response = json_response({"detail": "Internal Server Error"}, 500)
        return self._respond(response, start_response)

    @staticmethod
    def _respond(response: HttpResponseBase, start_response: StartResponse) -> Iterable[bytes]:
        start_response(f"{response.status_code} {response.reason_phrase}", [*response.items(), *_SECURITY_HEADERS])
        if response.streaming:
            return response.streaming_content  # type: ignore[attr-defined]
        return [response.content]  # type: ignore[attr-defined]
