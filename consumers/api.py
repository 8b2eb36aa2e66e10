"""The management API for consumers and their keys (operators only): /api/manage/consumers/, /keys/.

A consumer is written and read in the config file's shape (`consumers[]`), through the one validator.
A key is made with POST /api/manage/keys/ {consumer, name, expires_in}: the answer carries the key,
once; every other answer shows only its prefix. DELETE (or POST .../revoke/) revokes it.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from consumers import keys
from consumers.authentication import ManagementAPIMixin
from consumers.models import Consumer, GatewayKey
from consumers.services import KeyError_, callable_names, consumer_to_yaml, consumer_values, create_key, revoke_key
from endpoints_app.definitions import DefinitionSerializer
from endpoints_app.models import NAME_CHARS
from endpoints_app.validation import ConsumerSpec, validate_consumer


class ConsumerDefinitionSerializer(DefinitionSerializer[Consumer, ConsumerSpec]):
    def validate_definition(self, raw: dict[str, Any]) -> ConsumerSpec:
        spec = validate_consumer(raw, callable_names())
        others = Consumer.objects.exclude(pk=self.instance.pk) if isinstance(self.instance, Consumer) \
            else Consumer.objects.all()
        if others.filter(name=spec.name).exists():
            raise serializers.ValidationError({"name": [f"A consumer is already named {spec.name!r}."]})
        return spec

    def save_definition(self, spec: ConsumerSpec, instance: Consumer | None) -> Consumer:
        consumer = instance or Consumer()
        consumer.name = spec.name
        for key, value in consumer_values(spec).items():
            setattr(consumer, key, value)
        consumer.save()
        return consumer

    def definition(self, instance: Consumer) -> dict[str, Any]:
        return {**consumer_to_yaml(instance), "enabled": instance.enabled}

    def extra(self, instance: Consumer) -> dict[str, Any]:
        active = getattr(instance, "active_keys", None)
        if active is None:
            active = instance.keys.filter(revoked_at__isnull=True).filter(
                Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())).count()
        return {"active_keys": active, "source": instance.source, "source_path": instance.source_path or None,
                "created_at": instance.created_at, "updated_at": instance.updated_at}


CONSUMER_DOC = inline_serializer("ConsumerDefinition", {
    "name": serializers.CharField(),
    "description": serializers.CharField(required=False),
    "enabled": serializers.BooleanField(required=False),
    "allow": serializers.ListField(child=serializers.CharField(), help_text='Endpoint and route names, or ["*"]'),
    "limit": serializers.JSONField(required=False, help_text="{calls, renewal_period}"),
    "token_limit": serializers.JSONField(required=False, help_text="{tokens, renewal_period}"),
    "active_keys": serializers.IntegerField(read_only=True),
    "source": serializers.CharField(read_only=True),
    "source_path": serializers.CharField(read_only=True, allow_null=True),
    "created_at": serializers.DateTimeField(read_only=True),
    "updated_at": serializers.DateTimeField(read_only=True),
})


class ConsumerFilter(filters.FilterSet):
    name = filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Consumer
        fields = ["name", "enabled", "source"]


@extend_schema_view(
    list=extend_schema(summary="List consumers", responses=CONSUMER_DOC),
    retrieve=extend_schema(summary="Get a consumer", responses=CONSUMER_DOC),
    create=extend_schema(summary="Create a consumer", request=CONSUMER_DOC, responses={201: CONSUMER_DOC}),
    update=extend_schema(summary="Replace a consumer's definition", request=CONSUMER_DOC, responses=CONSUMER_DOC),
    partial_update=extend_schema(summary="Change part of a consumer (e.g. enabled, allow)", request=CONSUMER_DOC,
                                 responses=CONSUMER_DOC),
    destroy=extend_schema(summary="Delete a consumer and its keys"),
)
class ConsumerViewSet(ManagementAPIMixin, viewsets.ModelViewSet):  # type: ignore[misc]
    serializer_class = ConsumerDefinitionSerializer
    lookup_field = "name"
    lookup_value_regex = NAME_CHARS
    filterset_class = ConsumerFilter

    def get_queryset(self) -> QuerySet[Consumer]:
        usable = Q(keys__revoked_at__isnull=True) & (Q(keys__expires_at__isnull=True) |
                                                     Q(keys__expires_at__gt=timezone.now()))
        return Consumer.objects.annotate(active_keys=Count("keys", filter=usable))


class KeySerializer(serializers.ModelSerializer):
    consumer = serializers.SlugRelatedField(slug_field="name", queryset=Consumer.objects.all())
    state = serializers.CharField(read_only=True)
    expires_in = serializers.CharField(write_only=True, required=False,
                                       help_text="Lifetime from now, e.g. 30d, 12h, 90m, 2w (or give expires_at)")

    class Meta:
        model = GatewayKey
        fields = ["prefix", "consumer", "name", "state", "created_at", "expires_at", "expires_in", "revoked_at",
                  "created_by"]
        read_only_fields = ["prefix", "created_at", "revoked_at", "created_by"]

    def validate_expires_in(self, value: str) -> Any:
        try:
            return keys.parse_duration(value)
        except ValueError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("expires_in") and attrs.get("expires_at"):
            raise serializers.ValidationError({"expires_in": ["Give expires_in or expires_at, not both."]})
        expires_at = attrs.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise serializers.ValidationError({"expires_at": ["The expiry must be in the future."]})
        return attrs


ISSUED_KEY_DOC = inline_serializer("IssuedKey", {
    "key": serializers.CharField(help_text="The whole key: shown in this answer only, stored only as a hash"),
    "prefix": serializers.CharField(), "consumer": serializers.CharField(), "name": serializers.CharField(),
    "state": serializers.CharField(), "created_at": serializers.DateTimeField(),
    "expires_at": serializers.DateTimeField(allow_null=True),
})


class KeyFilter(filters.FilterSet):
    consumer = filters.CharFilter(field_name="consumer__name")
    state = filters.ChoiceFilter(choices=[("active", "active"), ("revoked", "revoked"), ("expired", "expired")],
                                 method="filter_state")

    class Meta:
        model = GatewayKey
        fields = ["consumer", "state"]

    def filter_state(self, queryset: QuerySet[GatewayKey], name: str, value: str) -> QuerySet[GatewayKey]:
        now = timezone.now()
        if value == "revoked":
            return queryset.filter(revoked_at__isnull=False)
        if value == "expired":
            return queryset.filter(revoked_at__isnull=True, expires_at__lte=now)
        return queryset.filter(revoked_at__isnull=True).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))


@extend_schema_view(
    list=extend_schema(summary="List gateway keys (prefixes only)"),
    retrieve=extend_schema(summary="Get a gateway key (its prefix, consumer and state)"),
    create=extend_schema(summary="Make a gateway key: the answer shows it once", responses={201: ISSUED_KEY_DOC}),
    destroy=extend_schema(summary="Revoke a gateway key", responses={200: KeySerializer}),
)
class KeyViewSet(ManagementAPIMixin, mixins.ListModelMixin, mixins.RetrieveModelMixin,  # type: ignore[misc]
                 mixins.CreateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    serializer_class = KeySerializer
    lookup_field = "prefix"
    lookup_value_regex = r"gwk_[0-9a-f]{8}"
    filterset_class = KeyFilter

    def get_queryset(self) -> QuerySet[GatewayKey]:
        return GatewayKey.objects.select_related("consumer")

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        expires_in = data.get("expires_in")
        if expires_in is None and data.get("expires_at") is not None:
            expires_in = data["expires_at"] - timezone.now()
        user = request.user
        try:
            issued = create_key(data["consumer"], name=data.get("name", ""), expires_in=expires_in,
                                created_by=f"api:{getattr(user, 'username', '')}")
        except KeyError_ as exc:
            raise serializers.ValidationError({"consumer": [str(exc)]}) from None
        return Response({"key": issued.key, **KeySerializer(issued.record).data}, status=status.HTTP_201_CREATED)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._revoke()

    @extend_schema(summary="Revoke a gateway key", request=None, responses=KeySerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self._revoke()

    def _revoke(self) -> Response:
        record = revoke_key(self.get_object().prefix)
        return Response(KeySerializer(record).data)
