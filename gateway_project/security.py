"""Admin login throttling (django-axes), fitted to the gateway: the client address uvicorn resolved, a JSON
refusal, and no check where there is no client (a management command or a shell authenticating)."""

from __future__ import annotations

import math
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.helpers import get_cool_off
from django.http import HttpRequest, HttpResponse

from endpoints_app.errors import json_response


class LoginThrottleBackend(AxesStandaloneBackend):
    """Refuses a login from a locked-out address; a login without a request (no client) is not counted."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None, password: str | None = None,
                     **kwargs: Any) -> Any:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_address(request: HttpRequest) -> str | None:
    """REMOTE_ADDR, as uvicorn set it: from X-Forwarded-For only when the connection comes from a proxy in
    FORWARDED_ALLOW_IPS. Never a header the client chose."""
    return request.META.get("REMOTE_ADDR")


def locked_out(request: HttpRequest, *args: Any) -> HttpResponse:
    """The refusal of a locked-out login: 429 with Retry-After, JSON like every error."""
    cool_off = get_cool_off(request)
    response = json_response({"detail": "Too many failed logins from this address; try again later."}, 429)
    if cool_off is not None:
        response["Retry-After"] = str(math.ceil(cool_off.total_seconds()))
    return response
