"""The invocation views: the hot path.

Lean views on purpose (see bench/README.md): a serving.http Request in, a serving.http Response out,
no Django request or response object. They authenticate the caller, parse with orjson, validate with
the pydantic wire schemas, run the invocation (serving.invoke) and render JSON or SSE. This module
imports no DRF, so a worker that only serves invocations and health checks never loads it. Their
OpenAPI entries come from the same schemas (endpoints_app.openapi).
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from django.conf import settings

from endpoints_app.errors import (
    dumps,
    error_headers,
    log_error,
    mlflow_body,
    openai_body,
    openai_status,
)
from endpoints_app.schemas import validate_request
from providers.errors import (
    EndpointNotFound,
    GatewayError,
    RequestTooLarge,
    RequestValidationError,
    Unauthorized,
)
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving import invoke, runtime
from serving.http import Request, Response, json_response
from serving.invoke import Invocation
from serving.ratelimit import RateState
from serving.runtime import EndpointTable

logger = logging.getLogger(__name__)


def health(request: Request) -> Response:
    """GET /health: liveness, and the config version this process serves."""
    if request.method not in ("GET", "HEAD"):
        response = json_response({"detail": "Method Not Allowed"}, 405)
        response["Allow"] = "GET"
        return response
    try:
        runtime.current_table()
    except Exception:
        logger.exception("endpoint table cannot be loaded")
        return json_response({"status": "ERROR", "config_version": None, "pid": os.getpid()}, 503)
    return json_response({"status": "OK", "config_version": runtime.served_version(), "pid": os.getpid()})


def read_json_body(request: Request) -> Any:
    body = request.body
    length = request.header("content-length")
    if length is not None and length.isdigit() and int(length) > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise RequestTooLarge(
            f"The request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes (GATEWAY_MAX_REQUEST_BYTES)."
        )
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    content_type = request.content_type
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": body.decode("utf-8", "replace"),
                }
            ]
        )
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError(
            [
                {
                    "type": "json_invalid",
                    "loc": ["body", exc.pos],
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
            ]
        ) from None


def error_event(error: GatewayError) -> bytes:
    """The final event of a stream that failed after its first byte."""
    return (
        b"data: "
        + dumps(
            {"error": {"message": error.message, "type": error.openai_type, "code": error.code, "status": error.status}}
        )
        + b"\n\n"
    )


def sse_response(chunks: Iterator[dict[str, Any]], rate: RateState | None) -> Response:
    """Chunks as Server-Sent Events, passed on one by one; errors after the first byte become a
    final `data: {"error": ...}` event and a clean end."""
    first, rest = invoke.stream_with_first(chunks)

    def events() -> Iterator[bytes]:
        if first is not None:
            yield b"data: " + dumps(first) + b"\n\n"
        try:
            for chunk in rest:
                yield b"data: " + dumps(chunk) + b"\n\n"
        except GatewayError as error:
            logger.warning("stream ended by %s: %s", error.code, error.message)
            yield error_event(error)
            return
        except Exception:
            logger.exception("stream failed")
            yield error_event(GatewayError("The stream failed inside the gateway."))
            return
        yield b"data: [DONE]\n\n"

    response = Response(content_type="text/event-stream; charset=utf-8", stream=events())
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    if rate is not None:
        response.headers.update(rate.headers())
    return response


def _invoke(table: EndpointTable, inv: Invocation, endpoint_type: str, payload: dict[str, Any]) -> Response:
    stream = endpoint_type != EMBEDDINGS and bool(payload.pop("stream", False))
    invoke.prepare(table, inv)
    result = invoke.call(inv, payload, stream=stream)
    if stream:
        response = sse_response(invoke.metered(inv, result), inv.rate)
    else:
        ended = time.perf_counter()
        rate = inv.rate
        response = _accounted_after(json_response(result, headers=rate.headers() if rate is not None else None),
                                    inv, 200, ended, usage=result.get("usage"), response=result)
    if inv.route and inv.endpoint is not None:
        response["X-Gateway-Destination"] = inv.endpoint.name  # which of the route's endpoints answered
    return response


def _begin(request: Request, family: str) -> Invocation:
    return invoke.begin(request.request_id or None, family, request.header("traceparent"))


def _authenticated(request: Request, inv: Invocation) -> EndpointTable:
    table = runtime.current_table()
    authorization = request.header("authorization")
    try:
        invoke.authenticate(table, inv, authorization)
    except Unauthorized:
        if not invoke.unknown_key(table, authorization):
            raise
        newer = runtime.table_for_unknown_key()  # a key made a moment ago?
        if newer is None:
            raise
        invoke.authenticate(newer, inv, authorization)
        return newer
    return table


def _accounted_after(answer: Response, inv: Invocation, status: int, ended: float, **details: Any) -> Response:
    """`answer`, with the call's accounting (invoke.finish) made once it is sent (serving.app): neither the
    client nor the answers that arrived from upstream together with this one wait for it. `ended`: when
    the answer was ready (its latency)."""
    answer.after = functools.partial(invoke.finish, inv, status, ended=ended, **details)
    return answer


def _refused(inv: Invocation, error: GatewayError, render: Callable[[GatewayError], Response]) -> Response:
    """The answer to a request that ends in an error before its answer: it is in the ledger too."""
    ended = time.perf_counter()
    return _accounted_after(render(error), inv, error.status, ended, error=error)


def mlflow_error(error: GatewayError) -> Response:
    """An error in MLflow's shape (the MLflow routes)."""
    log_error(error)
    return json_response(mlflow_body(error), error.status, error_headers(error))


def openai_error(error: GatewayError) -> Response:
    """An error in OpenAI's envelope (the /v1 routes)."""
    log_error(error)
    return json_response(openai_body(error), openai_status(error), error_headers(error))


def _method_not_allowed(render: Callable[[GatewayError], Response]) -> Response:
    response = render(GatewayError("Method Not Allowed", status=405, code="method_not_allowed"))
    response["Allow"] = "POST"
    return response


def endpoint_invocations(request: Request, name: str) -> Response:
    """POST /endpoints/<name>/invocations (and /gateway/<name>/invocations): MLflow's route."""
    if request.method != "POST":
        return _method_not_allowed(mlflow_error)
    inv = _begin(request, "gateway" if request.path.startswith("/gateway/") else "endpoints")
    inv.name = name
    try:
        table = _authenticated(request, inv)
        invoke.authorize(inv, name)
        endpoint_type = table.type_of(name)
        if endpoint_type is None:
            raise EndpointNotFound("Not Found")
        payload = validate_request(endpoint_type, read_json_body(request), allow_model=False)
        return _invoke(table, inv, endpoint_type, payload)
    except GatewayError as error:
        return _refused(inv, error, mlflow_error)


def _openai_view(expected_type: str) -> Callable[[Request], Response]:
    def view(request: Request) -> Response:
        if request.method != "POST":
            return _method_not_allowed(openai_error)
        inv = _begin(request, "v1")
        try:
            table = _authenticated(request, inv)
            body = read_json_body(request)
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str) or not model:
                raise GatewayError(
                    "You must provide a model parameter (the endpoint name).",
                    status=400,
                    code="missing_model",
                    param="model",
                )
            invoke.authorize(inv, model)
            actual = table.type_of(model)
            if actual is None:
                raise EndpointNotFound(
                    f"The model '{model}' does not exist: no endpoint or route has that name.", param="model"
                )
            if actual != expected_type:
                raise invoke.wrong_type(model, expected_type)
            payload = validate_request(expected_type, body, allow_model=True)
            return _invoke(table, inv, expected_type, payload)
        except GatewayError as error:
            return _refused(inv, error, openai_error)

    view.__name__ = f"openai_{expected_type.rsplit('/', 1)[-1]}"
    return view


openai_chat = _openai_view(CHAT)
openai_completions = _openai_view(COMPLETIONS)
openai_embeddings = _openai_view(EMBEDDINGS)
