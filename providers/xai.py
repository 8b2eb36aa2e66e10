"""xAI (`provider: xai`): OpenAI-compatible Grok models at https://api.x.ai/v1.

xAI serves Chat Completions (streaming and tools included) and the legacy `/v1/completions` for
non-reasoning models. It lists no embeddings API, and streaming is only documented for chat.
"""
from __future__ import annotations

from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT, COMPLETIONS


class XAIProvider(OpenAICompatibleProvider):
    name = "xai"
    display_name = "xAI"
    default_api_base = "https://api.x.ai/v1"
    endpoint_types = frozenset({CHAT, COMPLETIONS})
    streaming_types = frozenset({CHAT})
