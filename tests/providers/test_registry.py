"""The registry is the single source of provider names, and each provider's declarations match its
code: every declared endpoint type (and stream) has an operation that the class really overrides."""
from __future__ import annotations

import pytest

from endpoints_app.validation import EntryError, validate_endpoint
from providers import registry
from providers.base import BaseProvider
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS, ENDPOINT_TYPES
from providers.table import registered_providers

OPERATIONS = {CHAT: "chat", COMPLETIONS: "completions", EMBEDDINGS: "embeddings"}
PROVIDERS = registered_providers()
IDS = [cls.name for cls in PROVIDERS]


def test_every_class_path_loads_once() -> None:
    assert len(PROVIDERS) == len(registry.PROVIDER_CLASSES)


def test_names_and_aliases_are_unique_after_normalisation() -> None:
    slugs = [slug for cls in PROVIDERS for slug in (cls.name, *cls.aliases)]
    normalised = [registry.normalize(slug) for slug in slugs]
    assert len(set(normalised)) == len(normalised)
    assert sorted(registry.names()) == sorted(normalised)


def test_a_duplicate_name_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "PROVIDER_CLASSES", (*registry.PROVIDER_CLASSES, "providers.groq.GroqProvider"))
    with pytest.raises(RuntimeError, match="registered twice"):
        registry._load()


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("OpenAI", "openai"), ("mlflow_model_serving", "mlflow-model-serving"), ("MLFLOW-MODEL-SERVING",
     "mlflow-model-serving"), (" groq ", "groq"), ("HuggingFace_Text_Generation_Inference",
                                                  "huggingface-text-generation-inference")],
)
def test_lookup_ignores_case_and_treats_dash_and_underscore_alike(written: str, canonical: str) -> None:
    assert registry.canonical_name(written) == canonical
    assert registry.get(written) is registry.get(canonical)


@pytest.mark.parametrize("name", ["nope", "open-ai-x", "", None, 3])
def test_an_unknown_name_fails_with_mlflows_message(name: object) -> None:
    with pytest.raises(registry.UnknownProvider) as caught:
        registry.canonical_name(name)
    assert str(caught.value) == f"The provider '{name}' is not supported."


def test_an_unknown_provider_in_yaml_names_the_known_ones() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "x", "endpoint_type": CHAT, "model": {"provider": "nope", "name": "m"}})
    assert caught.value.field == "model.provider"
    assert caught.value.message.startswith("The provider 'nope' is not supported. Known providers: ")
    assert "mlflow-model-serving" in caught.value.message


@pytest.mark.parametrize("cls", PROVIDERS, ids=IDS)
def test_declarations_use_known_endpoint_types(cls: type[BaseProvider]) -> None:
    assert cls.endpoint_types <= set(ENDPOINT_TYPES)
    assert cls.streaming_types <= cls.endpoint_types
    assert cls.display_name


@pytest.mark.parametrize("cls", PROVIDERS, ids=IDS)
def test_every_declared_type_has_an_overridden_operation(cls: type[BaseProvider]) -> None:
    for endpoint_type in cls.endpoint_types:
        method = OPERATIONS[endpoint_type]
        assert getattr(cls, method) is not getattr(BaseProvider, method), f"{cls.name} declares {method}"
    for endpoint_type in cls.streaming_types:
        method = f"{OPERATIONS[endpoint_type]}_stream"
        assert getattr(cls, method) is not getattr(BaseProvider, method), f"{cls.name} declares {method}"


@pytest.mark.parametrize("cls", PROVIDERS, ids=IDS)
def test_every_declared_type_loads_and_every_other_is_refused(cls: type[BaseProvider]) -> None:
    for endpoint_type in ENDPOINT_TYPES:
        if endpoint_type in cls.endpoint_types and not cls.retired:
            cls.check_endpoint(endpoint_type, _a_model_for(cls))
        else:
            with pytest.raises(ValueError):
                cls.check_endpoint(endpoint_type, _a_model_for(cls))


def _a_model_for(cls: type[BaseProvider]) -> str:
    return "j2-mid" if cls.name == "ai21labs" else "some-model"
