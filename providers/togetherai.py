"""TogetherAI (`provider: togetherai`), as MLflow 3.x serves it (§2.7), on Together's OpenAI-shaped API.

- Completions (and their stream) → `completions`: `max_tokens` is required (MLflow's 422), and
  `logprobs`/`top_logprobs` must be integers, `top_logprobs` being Together's `logprobs`.
- Chat (and its stream) → `chat/completions` with the same logprobs rules. Unlike MLflow, the chat
  stream reads `delta.content` (MLflow reads `text`), and finish reasons and tool calls are kept.
- Embeddings → `embeddings` *with* the model (MLflow omits it, which Together refuses).

Responses name the configured model, as MLflow's do; Together's `eos` finish reason reads `stop`.
Streams are SSE ending with `[DONE]`; Together sends the usage on the last chunk by itself.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from providers import openai_compatible as oa
from providers import shapes
from providers.base import rename_keys
from providers.config import ConfigField, ProviderConfig
from providers.errors import InvalidParameter
from providers.openai_compatible import OpenAICompatibleProvider
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

TOGETHERAI_API_BASE = "https://api.together.xyz/v1"
FINISH_REASONS = {"eos": "stop", "function_call": "tool_calls"}
# OpenAI's top_logprobs is Together's logprobs.
NAMES = {"top_logprobs": "logprobs"}


# -- pure translation -------------------------------------------------------------------------------
def sampling_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """MLflow's logprobs rules (422), then `top_logprobs` → `logprobs`. Used for chat and completions.

    Like MLflow, a JSON boolean passes the integer check (Python counts bools as ints)."""
    if "logprobs" in payload and not isinstance(payload["logprobs"], int):
        raise InvalidParameter("Wrong type for logprobs. It should be an 32bit integer.")
    if "top_logprobs" in payload and not isinstance(payload["top_logprobs"], int):
        raise InvalidParameter("Wrong type for top_logprobs. It should a 32bit integer.")
    return rename_keys(payload, NAMES)


def completions_payload(payload: dict[str, Any]) -> dict[str, Any]:
    if not payload.get("max_tokens"):
        raise InvalidParameter(
            "max_tokens is not present in payload.It is a required parameter for TogetherAI completions."
        )
    return sampling_payload(payload)


def finish_reason(reason: str | None) -> str | None:
    return shapes.finish_reason(reason, FINISH_REASONS)


def _with_model(out: dict[str, Any], model: str | None) -> dict[str, Any]:
    """Our response or chunk naming the configured model, as MLflow's do."""
    out["model"] = model
    return out


def parse_chat(body: Any, model: str | None, provider: str) -> dict[str, Any]:
    return _with_model(oa.parse_chat(body, provider, FINISH_REASONS), model)


def parse_chat_chunk(data: Any, model: str | None, provider: str) -> dict[str, Any]:
    return _with_model(oa.parse_chat_chunk(data, provider, FINISH_REASONS), model)


def parse_completions(body: Any, model: str | None) -> dict[str, Any]:
    return _with_model(oa.parse_completions(body, FINISH_REASONS), model)


def parse_completions_chunk(data: Any, model: str | None) -> dict[str, Any]:
    return _with_model(oa.parse_completions_chunk(data, FINISH_REASONS), model)


def parse_embeddings(body: Any, model: str | None) -> dict[str, Any]:
    return _with_model(oa.parse_embeddings(body), model)


# -- the provider --------------------------------------------------------------------------------------
class TogetherAIConfig(ProviderConfig):
    fields = (
        ConfigField("togetherai_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField(
            "togetherai_api_base", kind="url", default=TOGETHERAI_API_BASE, help=f"Defaults to {TOGETHERAI_API_BASE}"
        ),
    )


class TogetherAIProvider(OpenAICompatibleProvider):
    name = "togetherai"
    display_name = "TogetherAI"
    config_class = TogetherAIConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT, COMPLETIONS})
    supports_tools = True
    default_api_base = TOGETHERAI_API_BASE
    api_key_field = "togetherai_api_key"
    api_base_field = "togetherai_api_base"
    ask_stream_usage = False  # the vendor sends usage on its last chunk and rejects stream_options
    speaks_openai_embeddings = False  # no base64 vectors: the gateway encodes them

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self.build_request("chat/completions", sampling_payload(payload)))
        return parse_chat(body, self.model_name, self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self.build_request("chat/completions", sampling_payload(payload), stream=True))
        model, provider = self.model_name, self.provider_name
        return (parse_chat_chunk(data, model, provider) for data in oa.sse_json(events))

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self.build_request("completions", completions_payload(payload)))
        return parse_completions(body, self.model_name)

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self.build_request("completions", completions_payload(payload), stream=True))
        model = self.model_name
        return (parse_completions_chunk(data, model) for data in oa.sse_json(events))

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_embeddings(self.post_json(self.build_request("embeddings", payload)), self.model_name)
