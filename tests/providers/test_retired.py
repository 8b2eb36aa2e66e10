"""Retired upstream APIs (PaLM, MosaicML): their YAML still parses, and loading an endpoint names
the provider to move to."""
from __future__ import annotations

from typing import Any

import pytest

from endpoints_app.validation import ConfigError, EntryError, validate_document, validate_endpoint
from providers import registry
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

RETIRED = [
    ("palm", "gemini", {"palm_api_key": "$PALM_API_KEY"}),
    ("mosaicml", "databricks", {"mosaicml_api_key": "$MOSAICML_API_KEY",
                                "mosaicml_api_base": "https://models.hosted-on.mosaicml.hosting"}),
]


@pytest.mark.parametrize(("provider", "replacement", "config"), RETIRED)
@pytest.mark.parametrize("endpoint_type", [CHAT, COMPLETIONS, EMBEDDINGS])
def test_loading_a_retired_provider_names_its_replacement(provider: str, replacement: str, config: dict[str, Any],
                                                         endpoint_type: str) -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "old", "endpoint_type": endpoint_type,
                           "model": {"provider": provider, "name": "some-model", "config": config}})
    assert caught.value.field == "model.provider"
    assert f"use provider '{replacement}' instead" in caught.value.message


@pytest.mark.parametrize(("provider", "replacement", "config"), RETIRED)
def test_the_retired_config_keys_are_still_known(provider: str, replacement: str, config: dict[str, Any]) -> None:
    # The refusal is about the provider, not an "unknown config key" from old YAML.
    stored = registry.get(provider).config_class.validate(config)
    assert set(stored) == set(config)


def test_a_yaml_file_with_a_retired_provider_reports_it_with_the_entry() -> None:
    doc = {"endpoints": [{"name": "legacy-chat", "endpoint_type": CHAT,
                          "model": {"provider": "palm", "name": "chat-bison", "config": {"palm_api_key": "k"}}}]}
    with pytest.raises(ConfigError) as caught:
        validate_document(doc, "gateway.yaml")
    assert "gateway.yaml: endpoints[0] 'legacy-chat' field 'model.provider'" in str(caught.value)
    assert "'gemini'" in str(caught.value)


@pytest.mark.parametrize(("provider", "replacement", "config"), RETIRED)
def test_retired_providers_declare_no_operations(provider: str, replacement: str, config: dict[str, Any]) -> None:
    cls = registry.get(provider)
    assert cls.retired
    assert cls.endpoint_types == frozenset()
    assert cls.streaming_types == frozenset()
