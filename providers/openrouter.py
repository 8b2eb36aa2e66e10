"""OpenRouter (`provider: openrouter`): OpenAI-compatible routing to many vendors at
https://openrouter.ai/api/v1, with chat, completions (both streaming) and embeddings."""
from __future__ import annotations

from providers.openai_compatible import OpenAICompatibleProvider


class OpenRouterProvider(OpenAICompatibleProvider):
    name = "openrouter"
    display_name = "OpenRouter"
    default_api_base = "https://openrouter.ai/api/v1"
