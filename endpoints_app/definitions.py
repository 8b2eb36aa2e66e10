"""The management API's way with config definitions: YAML-shaped JSON in and out.

An endpoint, a traffic route or a consumer is written to the API exactly as it is written in the
config file (the same keys, the same values), validated by the one validator, and read back as
`export_config` writes it (secrets as references or placeholders, never in clear). PATCH merges the
given keys into the current definition and validates the whole.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from django.db import models, transaction
from rest_framework import serializers

from endpoints_app.validation import EntryError

Spec = TypeVar("Spec")
Row = TypeVar("Row", bound=models.Model)


class DefinitionSerializer(serializers.BaseSerializer, Generic[Row, Spec]):
    """Subclasses say how to validate a definition, save it, and write a row back as a definition."""

    def validate_definition(self, raw: dict[str, Any]) -> Spec:
        raise NotImplementedError

    def save_definition(self, spec: Spec, instance: Row | None) -> Row:
        raise NotImplementedError

    def definition(self, instance: Row) -> dict[str, Any]:
        raise NotImplementedError

    def extra(self, instance: Row) -> dict[str, Any]:
        """Read-only facts shown beside the definition (where it came from, when it changed)."""
        return {}

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"non_field_errors": ["Send a JSON object: the definition as it is "
                                                                    "written in the config file."]})
        raw = dict(data)
        if self.partial and self.instance is not None:
            raw = {**self.definition(self.instance), **raw}
        try:
            return {"spec": self.validate_definition(raw)}
        except EntryError as exc:
            raise serializers.ValidationError({exc.field or "non_field_errors": [exc.message]}) from None

    def create(self, validated_data: dict[str, Any]) -> Row:
        with transaction.atomic():
            return self.save_definition(validated_data["spec"], None)

    def update(self, instance: Row, validated_data: dict[str, Any]) -> Row:
        with transaction.atomic():
            return self.save_definition(validated_data["spec"], instance)

    def to_representation(self, instance: Row) -> dict[str, Any]:
        return {**self.definition(instance), **self.extra(instance)}
