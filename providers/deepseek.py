"""DeepSeek (`provider: deepseek`): OpenAI-compatible chat at https://api.deepseek.com/v1.

DeepSeek has no embeddings API, and its text completion API is FIM-only under a separate beta base
URL (https://api.deepseek.com/beta), so only chat (streaming and tools included) is declared.
"""
from __future__ import annotations

from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT


class DeepSeekProvider(OpenAICompatibleProvider):
    name = "deepseek"
    display_name = "DeepSeek"
    default_api_base = "https://api.deepseek.com/v1"
    endpoint_types = frozenset({CHAT})
    streaming_types = frozenset({CHAT})
