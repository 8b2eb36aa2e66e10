"""Mistral (`provider: mistral`), as MLflow 3.x serves it (§2.6), on Mistral's OpenAI-shaped API.

- Chat → `chat/completions` with the configured model and every other field as given (temperature
  unscaled, tools OpenAI-style). Reasoning models answer with a list of chunks ("thinking" and
  "text"): only the text is kept, as for every OpenAI-compatible vendor. Streams are SSE ending with
  `[DONE]`; Mistral puts the usage on the last chunk by itself, so no `stream_options` is added
  (Mistral refuses unknown fields). Its `model_length` finish reason reads `length`.
- Completions → `chat/completions` with the prompt as one user message; `stop` and `n` dropped and
  temperature halved, as MLflow does. The response has no id and the configured model name.
- Embeddings → `embeddings` with the model; the upstream index is kept; `model` is the config name.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from providers import openai_compatible as oa
from providers import shapes
from providers.config import ConfigField, ProviderConfig
from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

MISTRAL_API_BASE = "https://api.mistral.ai/v1"
FINISH_REASONS = {"model_length": "length"}
_COMPLETIONS_DROPPED = frozenset({"prompt", "stop", "n"})


# -- pure translation -------------------------------------------------------------------------------
def completions_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """Our completions request → a chat request: the prompt as one user message (MLflow's rules)."""
    chat: dict[str, Any] = {k: v for k, v in payload.items() if k not in _COMPLETIONS_DROPPED}
    if "temperature" in chat:
        chat["temperature"] = 0.5 * chat["temperature"]  # Mistral's range is 0-1, ours 0-2
    chat["messages"] = [{"role": "user", "content": payload["prompt"]}]
    return chat


def finish_reason(reason: str | None) -> str | None:
    return shapes.finish_reason(reason, FINISH_REASONS)


def parse_chat(body: Any, provider: str) -> dict[str, Any]:
    return oa.parse_chat(body, provider, FINISH_REASONS)


def parse_chat_chunk(data: Any, provider: str) -> dict[str, Any]:
    return oa.parse_chat_chunk(data, provider, FINISH_REASONS)


def parse_completions(body: Any, model: str | None) -> dict[str, Any]:
    out = oa.parse_completions(body, FINISH_REASONS)
    out["id"] = None
    out["model"] = model
    return out


def parse_embeddings(body: Any, model: str | None) -> dict[str, Any]:
    out = oa.parse_embeddings(body)
    upstream = sorted(body["data"], key=lambda item: item.get("index", 0))
    for item, original in zip(out["data"], upstream, strict=True):
        item["index"] = original.get("index", item["index"])
    out["model"] = model
    return out


# -- the provider --------------------------------------------------------------------------------------
class MistralConfig(ProviderConfig):
    fields = (
        ConfigField("mistral_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("mistral_api_base", kind="url", default=MISTRAL_API_BASE, help=f"Defaults to {MISTRAL_API_BASE}"),
    )


class MistralProvider(OpenAICompatibleProvider):
    name = "mistral"
    display_name = "Mistral"
    config_class = MistralConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT})
    supports_tools = True
    default_api_base = MISTRAL_API_BASE
    api_key_field = "mistral_api_key"
    api_base_field = "mistral_api_base"
    ask_stream_usage = False  # the vendor sends usage on its last chunk and rejects stream_options
    speaks_openai_embeddings = False  # no base64 vectors: the gateway encodes them

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_chat(self.post_json(self.build_request("chat/completions", payload)), self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self.build_request("chat/completions", payload, stream=True))
        provider = self.provider_name
        return (parse_chat_chunk(data, provider) for data in oa.sse_json(events))

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self.build_request("chat/completions", completions_payload(payload)))
        return parse_completions(body, self.model_name)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_embeddings(self.post_json(self.build_request("embeddings", payload)), self.model_name)
