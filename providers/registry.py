"""The single source of provider names: slug → provider class.

The model field's choices, the admin form, the YAML validator, the README table and request-time
dispatch all read this. Lookup is case-insensitive and treats `-` and `_` alike, as MLflow does.
"""
from __future__ import annotations

from importlib import import_module

from providers.base import BaseProvider

# One module per provider, one class per module. Order is the order of the README table.
PROVIDER_CLASSES: tuple[str, ...] = (
    # MLflow's providers
    "providers.openai.OpenAIProvider",
    "providers.azure.AzureOpenAIProvider",
    "providers.anthropic.AnthropicProvider",
    "providers.gemini.GeminiProvider",
    "providers.bedrock.BedrockProvider",
    "providers.cohere.CohereProvider",
    "providers.mistral.MistralProvider",
    "providers.togetherai.TogetherAIProvider",
    "providers.huggingface.HuggingFaceTGIProvider",
    "providers.mlflow_model_serving.MlflowModelServingProvider",
    "providers.ai21labs.AI21LabsProvider",
    # The OpenAI-compatible family
    "providers.openai_compatible.OpenAICompatibleProvider",
    "providers.groq.GroqProvider",
    "providers.deepseek.DeepSeekProvider",
    "providers.xai.XAIProvider",
    "providers.openrouter.OpenRouterProvider",
    "providers.ollama.OllamaProvider",
    "providers.databricks.DatabricksProvider",
    # Built in
    "providers.mock.MockProvider",
    # Retired upstream APIs: accepted in YAML, refused at load time with the replacement named
    "providers.palm.PaLMProvider",
    "providers.mosaicml.MosaicMLProvider",
)


class UnknownProvider(LookupError):
    def __init__(self, name: object) -> None:
        super().__init__(f"The provider '{name}' is not supported.")
        self.name = name


def normalize(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _load() -> dict[str, type[BaseProvider]]:
    registry: dict[str, type[BaseProvider]] = {}
    for dotted in PROVIDER_CLASSES:
        module_name, class_name = dotted.rsplit(".", 1)
        cls = getattr(import_module(module_name), class_name)
        for slug in (cls.name, *cls.aliases):
            key = normalize(slug)
            if not slug or key in registry:
                raise RuntimeError(f"provider name {slug!r} of {dotted} is empty or registered twice")
            registry[key] = cls
    return registry


_REGISTRY = _load()


def canonical_name(name: object) -> str:
    """The slug as the registry spells it (`OpenAI` → `openai`). Raises UnknownProvider."""
    if not isinstance(name, str):
        raise UnknownProvider(name)
    key = normalize(name)
    if key not in _REGISTRY:
        raise UnknownProvider(name)
    return key


def get(name: str) -> type[BaseProvider]:
    return _REGISTRY[canonical_name(name)]


def names() -> list[str]:
    return list(_REGISTRY)


def choices() -> list[tuple[str, str]]:
    return [(slug, slug) for slug in _REGISTRY]
