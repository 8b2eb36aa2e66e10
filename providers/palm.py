"""PaLM (`provider: palm`): retired. Google shut the PaLM API down; Gemini replaces it.

The config key is still accepted so existing YAML parses, but every endpoint is refused at load time
with a message naming the replacement. There is no HTTP code.
"""
from __future__ import annotations

from providers.base import BaseProvider
from providers.config import ConfigField, ProviderConfig


class PaLMConfig(ProviderConfig):
    fields = (ConfigField("palm_api_key", kind="secret", help="Unused: the PaLM API is retired"),)


class PaLMProvider(BaseProvider):
    name = "palm"
    display_name = "PaLM"
    config_class = PaLMConfig
    retired = "Google has shut down the PaLM API; use provider 'gemini' instead (config key gemini_api_key)."
