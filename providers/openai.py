"""OpenAI and Azure OpenAI (`provider: openai`), with every MLflow config key and rule (§2.1)."""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from providers.config import ConfigField, ConfigValidationError, ProviderConfig
from providers.openai_compatible import OpenAICompatibleProvider

OPENAI_API_BASE = "https://api.openai.com/v1"
AZURE_TYPES = ("azure", "azuread")


class OpenAIConfig(ProviderConfig):
    fields = (
        ConfigField("openai_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("openai_api_type", default="openai", choices=("openai", "azure", "azuread"), lower=True),
        ConfigField("openai_api_base", kind="url", help="Defaults to https://api.openai.com/v1 for type openai"),
        ConfigField("openai_api_version"),
        ConfigField("openai_deployment_name"),
        ConfigField("openai_organization"),
    )

    @classmethod
    def check(cls, stored: dict[str, Any]) -> None:
        api_type = stored.get("openai_api_type", "openai")
        if api_type in AZURE_TYPES:
            if "openai_organization" in stored:
                raise ConfigValidationError(
                    "openai_organization",
                    f"'openai_organization' cannot be set when 'openai_api_type' is {api_type!r}",
                )
            missing = [
                k for k in ("openai_api_base", "openai_deployment_name", "openai_api_version") if k not in stored
            ]
            if missing:
                raise ConfigValidationError(
                    missing[0],
                    "OpenAI route configuration must specify 'openai_api_base', 'openai_deployment_name', "
                    f"and 'openai_api_version' if 'openai_api_type' is {api_type!r}",
                )
        elif "openai_deployment_name" in stored:
            raise ConfigValidationError(
                "openai_deployment_name",
                "You can only specify a value for 'openai_deployment_name' if 'openai_api_type' is "
                f"'azure' or 'azuread'. Found type: {api_type!r}",
            )


class OpenAIProvider(OpenAICompatibleProvider):
    name = "openai"
    display_name = "OpenAI"
    config_class: ClassVar[type[ProviderConfig]] = OpenAIConfig
    default_api_base = OPENAI_API_BASE
    api_key_field = "openai_api_key"
    api_base_field = "openai_api_base"

    def url(self, config: dict[str, Any], path: str) -> str:
        version = config.get("openai_api_version")
        if config["openai_api_type"] in AZURE_TYPES:
            deployment = quote(str(config["openai_deployment_name"]), safe="")
            return f"{self.base_url(config)}/openai/deployments/{deployment}/{path}?api-version={quote(str(version))}"
        url = f"{self.base_url(config)}/{path}"
        return f"{url}?api-version={quote(str(version))}" if version else url

    def headers(self, config: dict[str, Any]) -> dict[str, str]:
        key = config["openai_api_key"]
        api_type = config["openai_api_type"]
        if api_type == "azure":
            return {"api-key": key}
        headers = {"Authorization": f"Bearer {key}"}
        if api_type == "openai" and config.get("openai_organization"):
            headers["OpenAI-Organization"] = config["openai_organization"]
        return headers

    def body_model(self, config: dict[str, Any]) -> str | None:
        # Azure addresses the model by deployment in the URL: no model key in the body.
        return None if config["openai_api_type"] in AZURE_TYPES else self.model_name
