"""One place that renders every error, in MLflow's shape or in OpenAI's envelope.

MLflow routes: `{"detail": ...}` with the error's status (429 uses MLflow's `{"error": ...}`).
/v1 routes: `{"error": {"message", "type", "param", "code"}}`, statuses chosen so the `openai` SDK
raises the matching exception. No request ever gets an HTML or text/plain error page.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpRequest, HttpResponse

from providers.errors import GatewayError, InvalidParameter, RateLimited, RequestValidationError

logger = logging.getLogger(__name__)

JSON = "application/json"


def dumps(data: Any) -> bytes:
    return orjson.dumps(data, default=str)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    response = HttpResponse(dumps(data), status=status, content_type=JSON)
    for key, value in (headers or {}).items():
        response[key] = value
    return response


def error_headers(error: GatewayError) -> dict[str, str]:
    headers = dict(error.headers)
    if error.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(error.retry_after)))
    return headers


def mlflow_body(error: GatewayError) -> dict[str, Any]:
    if isinstance(error, RateLimited):
        return {"error": error.message}
    return {"detail": error.detail}


def openai_status(error: GatewayError) -> int:
    """OpenAI answers an invalid request with 400 (the SDK's BadRequestError), never 422."""
    if isinstance(error, (RequestValidationError, InvalidParameter)):
        return 400
    return error.status


def openai_body(error: GatewayError) -> dict[str, Any]:
    param = error.param
    if param is None and isinstance(error, RequestValidationError) and isinstance(error.detail, list) and error.detail:
        loc = [str(p) for p in error.detail[0].get("loc", []) if p != "body"]
        param = ".".join(loc) or None
    return {"error": {"message": error.message, "type": error.openai_type, "param": param, "code": error.code}}


def log_error(error: GatewayError) -> None:
    if error.status >= 500:
        logger.warning("%s %s: %s", error.status, error.code, error.message)


# Django-level fallbacks (unknown URL, crash): JSON, never an HTML page.
def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_response({"detail": "Not Found"}, 404)


def handler500(request: HttpRequest) -> HttpResponse:
    return json_response({"detail": "Internal Server Error"}, 500)


def handler400(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_response({"detail": "Bad Request"}, 400)


def handler403(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return json_response({"detail": "Forbidden"}, 403)


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW: Django's page is HTML."""
    return json_response({"detail": f"Forbidden: CSRF verification failed ({reason})."}, 403)


def get_only(view: Callable[..., Any]) -> Callable[..., Any]:
    """A view that only reads: another method is a JSON 405 (Django's and DRF's HTML views answer it with
    an HTML or text/plain page)."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        if request.method not in ("GET", "HEAD"):
            response = json_response({"detail": "Method Not Allowed"}, 405)
            response["Allow"] = "GET, HEAD"
            return response
        return view(request, *args, **kwargs)

    return wrapped
