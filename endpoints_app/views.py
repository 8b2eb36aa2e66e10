"""HTTP views.

The management API (health, listings) is DRF. The invocation routes are plain Django views on
purpose: they are the hot path (see bench/README.md), they parse with orjson, validate with the
pydantic wire schemas, call runtime, and render JSON or SSE. Their OpenAPI entries come from the
same schemas (endpoints_app.openapi).
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from endpoints_app import runtime, serializers
from endpoints_app.errors import dumps, json_response, mlflow_error, openai_error
from endpoints_app.ratelimit import RateState
from endpoints_app.schemas import validate_request
from providers.errors import (
    EndpointNotFound,
    GatewayError,
    NotSupported,
    RequestValidationError,
)
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS, now

logger = logging.getLogger(__name__)


# -- management API (DRF) ---------------------------------------------------------------------------
class GatewayAPIView(APIView):
    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []


class HealthView(GatewayAPIView):
    @extend_schema(
        operation_id="health", responses=serializers.HealthSerializer, summary="Liveness, and the config version served"
    )
    def get(self, request: Request) -> Response:
        try:
            runtime.current_table()
        except Exception:
            logger.exception("endpoint table cannot be loaded")
            return Response({"status": "ERROR", "config_version": None, "pid": os.getpid()}, status=503)
        return Response({"status": "OK", "config_version": runtime.served_version(), "pid": os.getpid()})


def _temporary_redirect(location: str) -> HttpResponse:
    response = HttpResponseRedirect(location)
    response.status_code = 307  # as MLflow (FastAPI) answers
    return response


def root_redirect(request: HttpRequest) -> HttpResponse:
    return _temporary_redirect("/docs")


def endpoint_list_redirect(request: HttpRequest) -> HttpResponse:
    query = request.META.get("QUERY_STRING", "")
    return _temporary_redirect("/api/2.0/endpoints/" + (f"?{query}" if query else ""))


def _page_size() -> int:
    return int(getattr(settings, "GATEWAY_LIST_PAGE_SIZE", 3000))


def _decode_page_token(token: str | None) -> int:
    """MLflow's token: base64 of {"index": N}. Anything else is a 400 (MLflow answers 500)."""
    if token is None or token == "":
        return 0
    try:
        data = orjson.loads(base64.b64decode(token.encode(), validate=True))
        index = data["index"]
    except (binascii.Error, ValueError, orjson.JSONDecodeError, KeyError, TypeError):
        raise GatewayError(
            "Invalid page_token: it is not a token this server issued.", status=400, code="invalid_page_token"
        ) from None
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise GatewayError(
            "Invalid page_token: the index must be a non-negative integer.", status=400, code="invalid_page_token"
        )
    return index


def _encode_page_token(index: int) -> str:
    return base64.b64encode(orjson.dumps({"index": index})).decode()


def _paginate(request: Request, items: list[Any]) -> tuple[list[Any], str | None]:
    start = _decode_page_token(request.query_params.get("page_token"))
    end = start + _page_size()
    return items[start:end], (_encode_page_token(end) if end < len(items) else None)


PAGE_TOKEN = OpenApiParameter("page_token", str, description="Token from the previous page's next_page_token")


class EndpointListView(GatewayAPIView):
    @extend_schema(
        operation_id="list_endpoints",
        parameters=[PAGE_TOKEN],
        responses=serializers.EndpointListSerializer,
        summary="List endpoints (MLflow list_endpoints)",
    )
    def get(self, request: Request) -> Response:
        table = runtime.current_table()
        page, token = _paginate(request, [table.endpoints[name] for name in table.order])
        return Response({"endpoints": [serializers.endpoint_json(e) for e in page], "next_page_token": token})


class EndpointDetailView(GatewayAPIView):
    @extend_schema(
        operation_id="get_endpoint",
        responses={200: serializers.EndpointSerializer, 404: serializers.DetailSerializer},
        summary="Get one endpoint (MLflow get_endpoint)",
    )
    def get(self, request: Request, name: str) -> Response:
        endpoint = runtime.current_table().endpoints.get(name)
        if endpoint is None:
            raise EndpointNotFound(
                f"The endpoint '{name}' is not present or active on the server. Please verify the endpoint name."
            )
        return Response(serializers.endpoint_json(endpoint))


class LegacyRouteListView(GatewayAPIView):
    @extend_schema(
        operation_id="list_legacy_routes",
        parameters=[PAGE_TOKEN],
        responses=serializers.LegacyRouteListSerializer,
        summary="List endpoints as MLflow 2.x routes (legacy)",
    )
    def get(self, request: Request) -> Response:
        table = runtime.current_table()
        page, token = _paginate(request, [table.endpoints[name] for name in table.order])
        return Response({"routes": [serializers.legacy_route_json(e) for e in page], "next_page_token": token})


class LegacyRouteDetailView(GatewayAPIView):
    @extend_schema(
        operation_id="get_legacy_route",
        responses={200: serializers.LegacyRouteSerializer, 404: serializers.DetailSerializer},
        summary="Get one endpoint as an MLflow 2.x route (legacy)",
    )
    def get(self, request: Request, name: str) -> Response:
        endpoint = runtime.current_table().endpoints.get(name)
        if endpoint is None:
            raise EndpointNotFound(
                f"The route '{name}' is not present or active on the server. Please verify the route name."
            )
        return Response(serializers.legacy_route_json(endpoint))


class TrafficRouteDetailView(GatewayAPIView):
    @extend_schema(
        operation_id="get_traffic_route",
        responses={200: serializers.TrafficRouteSerializer, 404: serializers.DetailSerializer},
        summary="Get a traffic route (MLflow 3.x)",
    )
    def get(self, request: Request, name: str) -> Response:
        route = runtime.current_table().routes.get(name)
        if route is None:
            raise EndpointNotFound(
                f"The route '{name}' is not present or active on the server. Please verify the route name."
            )
        previous = 0.0
        destinations = []
        for dest, cumulative in zip(route.destinations, route.cumulative, strict=True):
            destinations.append({"name": dest, "traffic_percentage": int(cumulative - previous)})
            previous = cumulative
        return Response(
            {
                "name": route.name,
                "task_type": route.task_type,
                "destinations": destinations,
                "routing_strategy": "TRAFFIC_SPLIT",
            }
        )


@extend_schema(exclude=True)
class LimitsView(GatewayAPIView):
    """MLflow's limits API is declared but not available (501); we keep that contract (hidden)."""

    def get(self, request: Request, name: str | None = None) -> Response:
        raise NotSupported("The get_limits API is not available yet.")

    def post(self, request: Request, name: str | None = None) -> Response:
        raise NotSupported("The set_limits API is not available yet.")


@extend_schema(exclude=True)
class EndpointDetailAliasView(EndpointDetailView):
    """MLflow 3.x's hidden alias /api/3.0/gateway/endpoint/<name>."""


class ModelListView(GatewayAPIView):
    @extend_schema(
        operation_id="list_models",
        responses=serializers.ModelListSerializer,
        summary="OpenAI-style list of endpoints and routes",
    )
    def get(self, request: Request) -> Response:
        table = runtime.current_table()
        created = now()
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": table.endpoints[name].provider_name}
            for name in table.order
        ]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": "traffic-route"} for name in table.routes
        ]
        return Response({"object": "list", "data": data})


# -- invocations (the hot path) ----------------------------------------------------------------------
def read_json_body(request: HttpRequest) -> Any:
    body = request.body
    if not body:
        raise RequestValidationError([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}])
    content_type = request.content_type or ""
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


def _rate_headers(rate: RateState | None) -> dict[str, str] | None:
    return rate.headers() if rate is not None else None


def _error_event(error: GatewayError) -> bytes:
    return (
        b"data: "
        + dumps(
            {"error": {"message": error.message, "type": error.openai_type, "code": error.code, "status": error.status}}
        )
        + b"\n\n"
    )


def sse_response(chunks: Iterator[dict[str, Any]], rate: RateState | None) -> StreamingHttpResponse:
    """Chunks as Server-Sent Events, passed on one by one; errors after the first byte become a
    final `data: {"error": ...}` event and a clean end."""
    first, rest = runtime.stream_with_first(chunks)

    def events() -> Iterator[bytes]:
        if first is not None:
            yield b"data: " + dumps(first) + b"\n\n"
        try:
            for chunk in rest:
                yield b"data: " + dumps(chunk) + b"\n\n"
        except GatewayError as error:
            logger.warning("stream ended by %s: %s", error.code, error.message)
            yield _error_event(error)
            return
        except Exception:
            logger.exception("stream failed")
            yield _error_event(GatewayError("The stream failed inside the gateway."))
            return
        yield b"data: [DONE]\n\n"

    response = StreamingHttpResponse(events(), content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    for key, value in (_rate_headers(rate) or {}).items():
        response[key] = value
    return response


def _invoke(name: str, endpoint_type: str, payload: dict[str, Any]) -> HttpResponseBase:
    stream = endpoint_type != EMBEDDINGS and bool(payload.pop("stream", False))
    invocation = runtime.prepare(name)
    result = runtime.call(invocation, payload, stream=stream)
    if stream:
        return sse_response(result, invocation.rate)
    return json_response(result, headers=_rate_headers(invocation.rate))


def _method_not_allowed(render: Callable[[GatewayError], HttpResponse]) -> HttpResponse:
    response = render(GatewayError("Method Not Allowed", status=405, code="method_not_allowed"))
    response["Allow"] = "POST"
    return response


@csrf_exempt
def endpoint_invocations(request: HttpRequest, name: str) -> HttpResponseBase:
    """POST /endpoints/<name>/invocations (and /gateway/<name>/invocations): MLflow's route."""
    if request.method != "POST":
        return _method_not_allowed(mlflow_error)
    try:
        endpoint_type = runtime.current_table().type_of(name)
        if endpoint_type is None:
            raise EndpointNotFound("Not Found")
        payload = validate_request(endpoint_type, read_json_body(request), allow_model=False)
        return _invoke(name, endpoint_type, payload)
    except GatewayError as error:
        return mlflow_error(error)


def _openai_view(expected_type: str) -> Callable[[HttpRequest], HttpResponseBase]:
    @csrf_exempt
    def view(request: HttpRequest) -> HttpResponseBase:
        if request.method != "POST":
            return _method_not_allowed(openai_error)
        try:
            body = read_json_body(request)
            model = body.get("model") if isinstance(body, dict) else None
            if not isinstance(model, str) or not model:
                raise GatewayError(
                    "You must provide a model parameter (the endpoint name).",
                    status=400,
                    code="missing_model",
                    param="model",
                )
            actual = runtime.current_table().type_of(model)
            if actual is None:
                raise EndpointNotFound(
                    f"The model '{model}' does not exist: no endpoint or route has that name.", param="model"
                )
            if actual != expected_type:
                raise runtime.wrong_type(model, expected_type)
            payload = validate_request(expected_type, body, allow_model=True)
            return _invoke(model, expected_type, payload)
        except GatewayError as error:
            return openai_error(error)

    view.__name__ = f"openai_{expected_type.rsplit('/', 1)[-1]}"
    return view


openai_chat = _openai_view(CHAT)
openai_completions = _openai_view(COMPLETIONS)
openai_embeddings = _openai_view(EMBEDDINGS)
