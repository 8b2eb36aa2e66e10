"""Azure OpenAI (`provider: azure`): the OpenAI provider with Azure as the default API type.

MLflow 3.x registers `azure` as a plain alias of OpenAI, where `openai_api_type` still defaults to
`openai`, so `provider: azure` silently calls api.openai.com. Here `azure` means Azure OpenAI: the
type defaults to `azure` (an `api-key` header), `azuread` (an Entra ID bearer token) stays
selectable, and the API base, deployment name and API version are required. Config rules, URLs,
headers and translation are OpenAI's (providers.openai).
"""
from __future__ import annotations

import dataclasses
from typing import Any, TypeVar, cast

from providers.config import ConfigField
from providers.openai import AZURE_TYPES, OpenAIConfig, OpenAIProvider

_AZURE_REQUIRED = frozenset({"openai_api_base", "openai_deployment_name", "openai_api_version"})
_Fields = TypeVar("_Fields", bound=tuple[ConfigField, ...])


def _azure_field(field: ConfigField) -> ConfigField:
    if field.name == "openai_api_type":
        return dataclasses.replace(field, default="azure", choices=AZURE_TYPES)
    if field.name == "openai_api_base":
        return dataclasses.replace(field, required=True, help="Your resource, e.g. https://my-resource.openai.azure.com")
    if field.name in _AZURE_REQUIRED:
        return dataclasses.replace(field, required=True)
    return field


def _azure_fields(fields: _Fields) -> _Fields:
    """OpenAI's fields, one for one, with Azure's defaults and requirements."""
    return cast(_Fields, tuple(_azure_field(f) for f in fields))


class AzureOpenAIConfig(OpenAIConfig):
    fields = _azure_fields(OpenAIConfig.fields)

    @classmethod
    def check(cls, stored: dict[str, Any]) -> None:
        # The stored form omits a defaulted type; OpenAI's rules must see it as azure, not openai.
        super().check({"openai_api_type": "azure", **stored})


class AzureOpenAIProvider(OpenAIProvider):
    name = "azure"
    display_name = "Azure OpenAI"
    config_class = AzureOpenAIConfig
