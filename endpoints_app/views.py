"""The management API (listings, legacy and traffic-route reads) as DRF views, and DRF's error handler.

The invocation routes and /health are plain Django views in serving.views (the hot path).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import exceptions as drf_exceptions
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_default_handler

from endpoints_app import serializers
from endpoints_app.errors import error_headers, log_error, mlflow_body, openai_body, openai_status
from providers.errors import EndpointNotFound, Forbidden, GatewayError, NotSupported
from providers.shapes import now
from serving import auth, runtime
from serving.auth import Caller


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF views render GatewayErrors and DRF's own errors as `{"detail": ...}`."""
    if isinstance(exc, GatewayError):
        log_error(exc)
        return Response(mlflow_body(exc), status=exc.status, headers=error_headers(exc))
    response = drf_default_handler(exc, context)
    if response is not None and isinstance(exc, drf_exceptions.MethodNotAllowed):
        response.data = {"detail": "Method Not Allowed"}
    return response


# -- management API (DRF) ---------------------------------------------------------------------------
class GatewayAPIView(APIView):
    """MLflow's and OpenAI's listings. With GATEWAY_AUTH=keys they take the same gateway keys as the
    invocation routes (401 without a valid one) and show only what the key's consumer may call."""

    authentication_classes: list[Any] = []
    permission_classes: list[Any] = []
    caller: Caller | None = None

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        if auth.enabled():
            table = runtime.load_table()
            self.caller = auth.authenticate(request.META.get("HTTP_AUTHORIZATION"), table.keys, table.consumers)
        if self.caller is not None and not self.caller.consumer.enabled:
            raise Forbidden(f"The consumer '{self.caller.consumer.name}' is disabled.")

    def may_call(self, name: str) -> bool:
        return self.caller is None or self.caller.consumer.may_call(name)

    def check_may_call(self, name: str) -> None:
        if self.caller is not None:
            auth.authorize(self.caller, name)


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
        table = runtime.load_table()
        page, token = _paginate(request, [table.endpoints[name] for name in table.order if self.may_call(name)])
        return Response({"endpoints": [serializers.endpoint_json(e) for e in page], "next_page_token": token})


class EndpointDetailView(GatewayAPIView):
    @extend_schema(
        operation_id="get_endpoint",
        responses={200: serializers.EndpointSerializer, 404: serializers.DetailSerializer},
        summary="Get one endpoint (MLflow get_endpoint)",
    )
    def get(self, request: Request, name: str) -> Response:
        self.check_may_call(name)
        endpoint = runtime.load_table().endpoints.get(name)
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
        table = runtime.load_table()
        page, token = _paginate(request, [table.endpoints[name] for name in table.order if self.may_call(name)])
        return Response({"routes": [serializers.legacy_route_json(e) for e in page], "next_page_token": token})


class LegacyRouteDetailView(GatewayAPIView):
    @extend_schema(
        operation_id="get_legacy_route",
        responses={200: serializers.LegacyRouteSerializer, 404: serializers.DetailSerializer},
        summary="Get one endpoint as an MLflow 2.x route (legacy)",
    )
    def get(self, request: Request, name: str) -> Response:
        self.check_may_call(name)
        endpoint = runtime.load_table().endpoints.get(name)
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
        self.check_may_call(name)
        route = runtime.load_table().routes.get(name)
        if route is None:
            raise EndpointNotFound(
                f"The route '{name}' is not present or active on the server. Please verify the route name."
            )
        destinations = [{"name": dest} if route.fallback else {"name": dest, "traffic_percentage": weight}
                        for dest, weight in zip(route.destinations, route.weights, strict=True)]
        return Response(
            {
                "name": route.name,
                "task_type": route.task_type,
                "destinations": destinations,
                "routing_strategy": route.strategy,
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
        table = runtime.load_table()
        created = now()
        data = [
            {"id": name, "object": "model", "created": created, "owned_by": table.endpoints[name].provider_name}
            for name in table.order if self.may_call(name)
        ]
        data += [
            {"id": name, "object": "model", "created": created, "owned_by": "traffic-route"}
            for name in table.routes if self.may_call(name)
        ]
        return Response({"object": "list", "data": data})

    def handle_exception(self, exc: Exception) -> Response:
        """OpenAI's error envelope, with the statuses the openai SDK maps to its exception classes."""
        if isinstance(exc, drf_exceptions.APIException):  # DRF's own (405, 406, ...): the same envelope
            exc = GatewayError(str(exc.detail), status=exc.status_code, code=str(exc.default_code))
        if isinstance(exc, GatewayError):
            log_error(exc)
            return Response(openai_body(exc), status=openai_status(exc), headers=error_headers(exc))
        return super().handle_exception(exc)
