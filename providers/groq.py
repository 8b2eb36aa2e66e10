"""Groq (`provider: groq`): OpenAI-compatible chat at https://api.groq.com/openai/v1.

Groq serves Chat Completions (streaming and tools included) but no legacy Completions and no
Embeddings, so only chat is declared.
"""
from __future__ import annotations

from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT


class GroqProvider(OpenAICompatibleProvider):
    name = "groq"
    display_name = "Groq"
    default_api_base = "https://api.groq.com/openai/v1"
    endpoint_types = frozenset({CHAT})
    streaming_types = frozenset({CHAT})
