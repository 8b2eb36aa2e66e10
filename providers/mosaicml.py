"""MosaicML (`provider: mosaicml`): retired. MosaicML's hosted inference API was shut down after
Databricks acquired MosaicML; its models are served by Databricks Model Serving.

The config keys are still accepted so existing YAML parses, but every endpoint is refused at load
time with a message naming the replacement. There is no HTTP code.
"""
from __future__ import annotations

from providers.base import BaseProvider
from providers.config import ConfigField, ProviderConfig


class MosaicMLConfig(ProviderConfig):
    fields = (
        ConfigField("mosaicml_api_key", kind="secret", help="Unused: the MosaicML API is retired"),
        ConfigField("mosaicml_api_base", kind="url", help="Unused: the MosaicML API is retired"),
    )


class MosaicMLProvider(BaseProvider):
    name = "mosaicml"
    display_name = "MosaicML"
    config_class = MosaicMLConfig
    retired = (
        "The MosaicML inference API has been shut down; use provider 'databricks' instead "
        "(config keys host and token; the model name is the serving endpoint)."
    )
