"""DRF serializers for the management API's JSON (listings, health); they drive its OpenAPI docs.

The invocation schemas (chat, completions, embeddings) are the pydantic models in schemas.py.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from providers.shapes import ENDPOINT_TYPES


class ModelInfoSerializer(serializers.Serializer):
    name = serializers.CharField(allow_null=True)
    provider = serializers.CharField()


class LimitSerializer(serializers.Serializer):
    calls = serializers.IntegerField()
    key = serializers.CharField(allow_null=True)
    renewal_period = serializers.CharField()


class EndpointSerializer(serializers.Serializer):
    """Exactly the keys MLflow's client needs; `limit` is always present (null when unset)."""

    name = serializers.CharField()
    endpoint_type = serializers.ChoiceField(choices=ENDPOINT_TYPES)
    model = ModelInfoSerializer()
    endpoint_url = serializers.CharField()
    limit = LimitSerializer(allow_null=True)


class EndpointListSerializer(serializers.Serializer):
    endpoints = EndpointSerializer(many=True)
    next_page_token = serializers.CharField(allow_null=True)


class LegacyRouteSerializer(serializers.Serializer):
    name = serializers.CharField()
    route_type = serializers.ChoiceField(choices=ENDPOINT_TYPES)
    model = ModelInfoSerializer()
    route_url = serializers.CharField()
    limit = LimitSerializer(allow_null=True)


class LegacyRouteListSerializer(serializers.Serializer):
    routes = LegacyRouteSerializer(many=True)
    next_page_token = serializers.CharField(allow_null=True)


class DestinationSerializer(serializers.Serializer):
    name = serializers.CharField()
    traffic_percentage = serializers.IntegerField(required=False, help_text="TRAFFIC_SPLIT routes only")


class TrafficRouteSerializer(serializers.Serializer):
    name = serializers.CharField()
    task_type = serializers.ChoiceField(choices=ENDPOINT_TYPES)
    destinations = DestinationSerializer(many=True)
    routing_strategy = serializers.CharField()


class ModelObjectSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.CharField()
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


class ModelListSerializer(serializers.Serializer):
    object = serializers.CharField()
    data = ModelObjectSerializer(many=True)  # type: ignore[assignment]  # OpenAI's key, not Serializer.data


class DetailSerializer(serializers.Serializer):
    detail = serializers.JSONField()


def endpoint_json(endpoint: Any) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "endpoint_type": endpoint.endpoint_type,
        "model": {"name": endpoint.model_name, "provider": endpoint.provider_name},
        "endpoint_url": f"/endpoints/{endpoint.name}/invocations",
        "limit": endpoint.limit_info,
    }


def legacy_route_json(endpoint: Any) -> dict[str, Any]:
    return {
        "name": endpoint.name,
        "route_type": endpoint.endpoint_type,
        "model": {"name": endpoint.model_name, "provider": endpoint.provider_name},
        "route_url": f"/gateway/{endpoint.name}/invocations",
        "limit": endpoint.limit_info,
    }
