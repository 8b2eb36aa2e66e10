"""The management API for endpoints and traffic routes (operators only): /api/manage/endpoints/, /routes/.

Definitions go in and come out in the config file's shape, through the one validator (see
endpoints_app.definitions); a change reaches every worker like an admin edit (the config version).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import serializers, viewsets

from consumers.authentication import ManagementAPIMixin
from endpoints_app.definitions import DefinitionSerializer
from endpoints_app.models import NAME_CHARS, Endpoint, TrafficRoute
from endpoints_app.services import (
    endpoint_conflicts,
    endpoint_to_yaml,
    route_conflicts,
    route_to_yaml,
    save_endpoint,
    save_route,
)
from endpoints_app.validation import EndpointSpec, RouteSpec, validate_endpoint, validate_route
from providers import registry
from providers.shapes import ENDPOINT_TYPES


def _origin(row: Endpoint | TrafficRoute) -> dict[str, Any]:
    return {"source": row.source, "source_path": row.source_path or None, "created_at": row.created_at,
            "updated_at": row.updated_at}


def _raise_conflicts(conflicts: list[tuple[str, str]]) -> None:
    if conflicts:
        errors: dict[str, list[str]] = {}
        for field, message in conflicts:
            errors.setdefault(field, []).append(message)
        raise serializers.ValidationError(errors)


class EndpointDefinitionSerializer(DefinitionSerializer[Endpoint, EndpointSpec]):
    def validate_definition(self, raw: dict[str, Any]) -> EndpointSpec:
        instance = self.instance if isinstance(self.instance, Endpoint) else None
        spec, _ = validate_endpoint(raw, existing_config=instance.config if instance else None)
        _raise_conflicts(endpoint_conflicts(spec, instance))
        return spec

    def save_definition(self, spec: EndpointSpec, instance: Endpoint | None) -> Endpoint:
        return save_endpoint(spec, instance)

    def definition(self, instance: Endpoint) -> dict[str, Any]:
        return endpoint_to_yaml(instance)

    def extra(self, instance: Endpoint) -> dict[str, Any]:
        return {"enabled": instance.enabled, **_origin(instance)}


class RouteDefinitionSerializer(DefinitionSerializer[TrafficRoute, RouteSpec]):
    def validate_definition(self, raw: dict[str, Any]) -> RouteSpec:
        instance = self.instance if isinstance(self.instance, TrafficRoute) else None
        spec = validate_route(raw, dict(Endpoint.objects.values_list("name", "endpoint_type")))
        _raise_conflicts(route_conflicts(spec, instance))
        return spec

    def save_definition(self, spec: RouteSpec, instance: TrafficRoute | None) -> TrafficRoute:
        return save_route(spec, instance)

    def definition(self, instance: TrafficRoute) -> dict[str, Any]:
        return route_to_yaml(instance)

    def extra(self, instance: TrafficRoute) -> dict[str, Any]:
        return {"enabled": instance.enabled, **_origin(instance)}


_ORIGIN_FIELDS: dict[str, serializers.Field] = {
    "source": serializers.CharField(read_only=True),
    "source_path": serializers.CharField(read_only=True, allow_null=True),
    "created_at": serializers.DateTimeField(read_only=True),
    "updated_at": serializers.DateTimeField(read_only=True),
}
ENDPOINT_DOC = inline_serializer("EndpointDefinition", {
    "name": serializers.CharField(),
    "endpoint_type": serializers.ChoiceField(choices=ENDPOINT_TYPES),
    "model": serializers.JSONField(help_text="{provider, name, config} as in the config file; secrets as $ENV "
                                             "references, key-file paths or literal keys (stored encrypted, never "
                                             "returned)"),
    "limit": serializers.JSONField(required=False, help_text="{calls, renewal_period}"),
    "timeouts": serializers.JSONField(required=False, help_text="{connect, read, retries}"),
    "enabled": serializers.BooleanField(required=False),
    **_ORIGIN_FIELDS,
})
ROUTE_DOC = inline_serializer("TrafficRouteDefinition", {
    "name": serializers.CharField(),
    "task_type": serializers.ChoiceField(choices=ENDPOINT_TYPES),
    "destinations": serializers.JSONField(help_text="[{name, traffic_percentage}]"),
    "routing_strategy": serializers.CharField(required=False),
    "enabled": serializers.BooleanField(required=False),
    **_ORIGIN_FIELDS,
})


class EndpointFilter(filters.FilterSet):
    provider = filters.ChoiceFilter(choices=registry.choices)
    endpoint_type = filters.ChoiceFilter(choices=[(t, t) for t in ENDPOINT_TYPES])
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Endpoint
        fields = ["provider", "endpoint_type", "enabled", "source", "name"]


@extend_schema_view(
    list=extend_schema(summary="List endpoints (management)", responses=ENDPOINT_DOC),
    retrieve=extend_schema(summary="Get an endpoint's definition", responses=ENDPOINT_DOC),
    create=extend_schema(summary="Create an endpoint", request=ENDPOINT_DOC, responses={201: ENDPOINT_DOC}),
    update=extend_schema(summary="Replace an endpoint's definition", request=ENDPOINT_DOC, responses=ENDPOINT_DOC),
    partial_update=extend_schema(summary="Change part of an endpoint's definition", request=ENDPOINT_DOC,
                                 responses=ENDPOINT_DOC),
    destroy=extend_schema(summary="Delete an endpoint"),
)
class EndpointViewSet(ManagementAPIMixin, viewsets.ModelViewSet):  # type: ignore[misc]
    serializer_class = EndpointDefinitionSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_CHARS
    filterset_class = EndpointFilter

    def get_queryset(self) -> QuerySet[Endpoint]:
        return Endpoint.objects.all()

    def perform_destroy(self, instance: Endpoint) -> None:
        routes = list(TrafficRoute.objects.filter(destinations__endpoint=instance).values_list("name", flat=True))
        if routes:
            raise serializers.ValidationError({"name": [f"traffic routes still send traffic to it: "
                                                        f"{', '.join(sorted(set(routes)))}; change them first"]})
        instance.delete()


class RouteFilter(filters.FilterSet):
    task_type = filters.ChoiceFilter(choices=[(t, t) for t in ENDPOINT_TYPES])

    class Meta:
        model = TrafficRoute
        fields = ["task_type", "enabled", "source"]


@extend_schema_view(
    list=extend_schema(summary="List traffic routes (management)", responses=ROUTE_DOC),
    retrieve=extend_schema(summary="Get a traffic route's definition", responses=ROUTE_DOC),
    create=extend_schema(summary="Create a traffic route", request=ROUTE_DOC, responses={201: ROUTE_DOC}),
    update=extend_schema(summary="Replace a traffic route", request=ROUTE_DOC, responses=ROUTE_DOC),
    partial_update=extend_schema(summary="Change part of a traffic route", request=ROUTE_DOC, responses=ROUTE_DOC),
    destroy=extend_schema(summary="Delete a traffic route"),
)
class RouteViewSet(ManagementAPIMixin, viewsets.ModelViewSet):  # type: ignore[misc]
    serializer_class = RouteDefinitionSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_CHARS
    filterset_class = RouteFilter

    def get_queryset(self) -> QuerySet[TrafficRoute]:
        return TrafficRoute.objects.prefetch_related("destinations__endpoint")

