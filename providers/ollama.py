"""Ollama (`provider: ollama`): a local Ollama server's OpenAI-compatible API at
http://localhost:11434/v1, with chat, completions (both streaming) and embeddings.

A local Ollama needs no key: `api_key` defaults to "ollama" (the placeholder Ollama's docs use), and
while it has that value no Authorization header is sent. A real key (Ollama's cloud, or a proxy in
front of a local server) is sent as a Bearer token.
"""
from __future__ import annotations

from typing import Any

from providers.config import ConfigField, ProviderConfig
from providers.openai_compatible import OpenAICompatibleProvider

DEFAULT_KEY = "ollama"


class OllamaConfig(ProviderConfig):
    fields = (
        ConfigField("api_key", kind="secret", default=DEFAULT_KEY,
                    help="Only for a server that checks keys; the default 'ollama' sends no Authorization"),
        ConfigField("api_base", kind="url", help="Defaults to http://localhost:11434/v1"),
    )


class OllamaProvider(OpenAICompatibleProvider):
    name = "ollama"
    display_name = "Ollama"
    config_class = OllamaConfig
    default_api_base = "http://localhost:11434/v1"

    def headers(self, config: dict[str, Any]) -> dict[str, str]:
        return {} if config.get("api_key") == DEFAULT_KEY else super().headers(config)
