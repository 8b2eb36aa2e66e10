"""The OpenAI wire format, and the base for every OpenAI-compatible vendor.

The pure functions here translate between the gateway's shapes and OpenAI's Chat Completions,
Completions and Embeddings APIs (request bodies, responses, SSE chunks). `OpenAICompatibleProvider`
sends them; a compatible vendor (Groq, DeepSeek, Ollama, ...) is a subclass that names itself and
its default base URL.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import orjson

from providers import shapes
from providers.base import BaseProvider, content_text
from providers.config import ConfigField, ProviderConfig
from providers.errors import UpstreamBadResponse, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS, NO_FINISH_REASONS
from serving.upstream import SSEEvent, UpstreamRequest


# -- pure translation -------------------------------------------------------------------------------
def request_body(
    payload: dict[str, Any], model: str | None, *, stream: bool = False, ask_stream_usage: bool = True
) -> dict[str, Any]:
    """Our request → OpenAI's body: the configured model first, every other field as given.

    Streams always ask for the final usage chunk (`stream_options.include_usage`), unless the vendor
    rejects the field (`ask_stream_usage=False`): the ledger, token limits and budgets count it, and the
    gateway drops the chunk on its way to a client that did not ask for it (serving.invoke.metered).
    """
    body: dict[str, Any] = {"model": model} if model is not None else {}
    body.update((k, v) for k, v in payload.items() if v is not None and k != "model")
    if stream:
        body["stream"] = True
        if not ask_stream_usage:
            return body
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    else:
        body.pop("stream", None)
    return body


def _usage(raw: Any) -> dict[str, Any]:
    """The vendor's usage with the keys `wire.Usage` declares (vendors add their own, e.g. Groq's timings)."""
    if not isinstance(raw, dict):
        return shapes.usage()
    return shapes.usage(
        raw.get("prompt_tokens"), raw.get("completion_tokens"), raw.get("total_tokens"),
        prompt_tokens_details=shapes.prompt_tokens_details(raw.get("prompt_tokens_details")),
        completion_tokens_details=shapes.completion_tokens_details(raw.get("completion_tokens_details")),
        cache_creation_input_tokens=raw.get("cache_creation_input_tokens"),
    )


def _text(content: Any) -> Any:
    """The message's content as the gateway answers it: a vendor's list of parts (Mistral's thinking and
    text chunks, say) becomes its text parts joined."""
    return content_text(content) if isinstance(content, list) else content


def _tool_calls(raw: Any) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    return [
        {
            "id": call.get("id"),
            "type": "function",
            "function": {
                "name": call.get("function", {}).get("name"),
                "arguments": call.get("function", {}).get("arguments"),
            },
        }
        for call in raw
    ]


def parse_chat(body: Any, provider: str, finish_reasons: Mapping[str, str] = NO_FINISH_REASONS) -> dict[str, Any]:
    """An OpenAI chat completion → ours (`finish_reasons`: the vendor's own, in OpenAI's terms)."""
    try:
        choices = [
            shapes.chat_choice(
                index,
                shapes.message(
                    _text(choice["message"].get("content")),
                    role=choice["message"].get("role") or "assistant",
                    tool_calls=_tool_calls(choice["message"].get("tool_calls")),
                ),
                shapes.finish_reason(choice.get("finish_reason"), finish_reasons),
            )
            for index, choice in enumerate(body["choices"])
        ]
        return shapes.chat_response(
            id=body.get("id"),
            model=body.get("model"),
            created=body.get("created"),
            choices=choices,
            usage=_usage(body.get("usage")),
            provider=provider,
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream chat response is missing {exc}.") from None


def _chunk_tool_calls(raw: Any) -> list[dict[str, Any]] | None:
    if not raw:
        return None
    out = []
    for call in raw:
        function = call.get("function") or {}
        out.append(
            {
                "index": call.get("index", 0),
                "id": call.get("id"),
                "type": "function" if call.get("type") else None,  # only the call's first piece names it
                "function": {"name": function.get("name"), "arguments": function.get("arguments")},
            }
        )
    return out


def parse_chat_chunk(data: Any, provider: str,
                     finish_reasons: Mapping[str, str] = NO_FINISH_REASONS) -> dict[str, Any]:
    try:
        choices = [
            shapes.chunk_choice(
                choice.get("index", index),
                shapes.delta(
                    role=(choice.get("delta") or {}).get("role"),
                    content=_text((choice.get("delta") or {}).get("content")),
                    tool_calls=_chunk_tool_calls((choice.get("delta") or {}).get("tool_calls")),
                ),
                shapes.finish_reason(choice.get("finish_reason"), finish_reasons),
            )
            for index, choice in enumerate(data.get("choices") or [])
        ]
        usage = _usage(data["usage"]) if data.get("usage") else None
        return shapes.chat_chunk(
            id=data.get("id"),
            model=data.get("model"),
            created=data.get("created"),
            choices=choices,
            usage=usage,
            provider=provider,
        )
    except (TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream sent a chat chunk of an unexpected shape: {exc}") from None


def parse_completions(body: Any, finish_reasons: Mapping[str, str] = NO_FINISH_REASONS) -> dict[str, Any]:
    """An OpenAI completion (or a chat completion, for vendors that complete through chat) → ours."""
    try:
        choices = [
            shapes.text_choice(
                index,
                choice["text"] if "text" in choice else _text(choice["message"]["content"]) or "",
                shapes.finish_reason(choice.get("finish_reason"), finish_reasons),
            )
            for index, choice in enumerate(body["choices"])
        ]
        return shapes.completions_response(
            id=body.get("id"),
            model=body.get("model"),
            created=body.get("created"),
            choices=choices,
            usage=_usage(body.get("usage")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream completions response is missing {exc}.") from None


def parse_completions_chunk(data: Any,
                            finish_reasons: Mapping[str, str] = NO_FINISH_REASONS) -> dict[str, Any]:
    """Real /v1/completions chunks carry choices[].text (MLflow reads delta.content and breaks)."""
    choices = []
    for index, choice in enumerate(data.get("choices") or []):
        text = choice.get("text")
        if text is None:
            text = (choice.get("delta") or {}).get("content")
        reason = shapes.finish_reason(choice.get("finish_reason"), finish_reasons)
        choices.append(shapes.text_choice(choice.get("index", index), text or "", reason))
    usage = _usage(data["usage"]) if data.get("usage") else None
    return shapes.completions_chunk(
        id=data.get("id"), model=data.get("model"), created=data.get("created"), choices=choices, usage=usage
    )


def parse_embeddings(body: Any) -> dict[str, Any]:
    try:
        vectors = [item["embedding"] for item in sorted(body["data"], key=lambda item: item.get("index", 0))]
        raw_usage = body.get("usage") or {}
        return shapes.embeddings_response(
            vectors=vectors,
            model=body.get("model"),
            usage={"prompt_tokens": raw_usage.get("prompt_tokens"), "total_tokens": raw_usage.get("total_tokens")},
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream embeddings response is missing {exc}.") from None


def sse_json(events: Iterator[SSEEvent]) -> Iterator[Any]:
    """The JSON payloads of an OpenAI-style SSE stream, stopping at [DONE]. An error event (OpenAI's and
    Gemini's `{"error": ...}` without choices) raises UpstreamError: the stream ends with the gateway's
    error event, never as if complete. Anthropic's typed `{"type": "error"}` events are left to its adapter."""
    for event in events:
        data = event.data.strip()
        if not data:
            continue
        if data == "[DONE]":
            for _ in events:  # read to the end of the body, so the connection goes back to the pool
                pass
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamBadResponse("The upstream stream sent an event that is not valid JSON.") from None
        if isinstance(payload, dict) and payload.get("error") and not payload.get("choices") \
                and payload.get("type") != "error":
            raise stream_error(payload["error"])
        yield payload


def stream_error(error: Any) -> UpstreamError:
    """An upstream's mid-stream `error` → the error that ends our stream (the status its `code` names when
    it is an HTTP status, as Gemini's is; else 502)."""
    message = "The upstream stream reported an error."
    status = 502
    if isinstance(error, dict):
        if isinstance(error.get("message"), str) and error["message"]:
            message = error["message"]
        code = error.get("code")
        if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599:
            status = code
    elif isinstance(error, str):
        message = error
    return UpstreamError(message, status=status)


# -- the provider --------------------------------------------------------------------------------------
class OpenAICompatibleConfig(ProviderConfig):
    fields = (
        ConfigField("api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("api_base", kind="url", help="Base URL, e.g. https://host/v1"),
    )


class OpenAICompatibleProvider(BaseProvider):
    """Speaks OpenAI's API at `default_api_base` (or the config's `api_base`)."""

    name = "openai-compatible"
    display_name = "OpenAI-compatible"
    config_class: ClassVar[type[ProviderConfig]] = OpenAICompatibleConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT, COMPLETIONS})
    supports_tools = True
    speaks_openai_embeddings = True
    default_api_base: ClassVar[str | None] = None
    #: The config keys holding the key and the base URL (MLflow names them per vendor).
    api_key_field: ClassVar[str] = "api_key"
    api_base_field: ClassVar[str] = "api_base"
    #: False for vendors that reject `stream_options` (they send usage on the last chunk anyway).
    ask_stream_usage: ClassVar[bool] = True

    # -- what differs between compatible vendors ----------------------------------------------
    def base_url(self, config: dict[str, Any]) -> str:
        base = config.get(self.api_base_field) or self.default_api_base
        if not base:
            from providers.errors import ConfigurationError

            raise ConfigurationError(f"The {self.name} provider needs config.{self.api_base_field}.")
        return str(base).rstrip("/")

    def url(self, config: dict[str, Any], path: str) -> str:
        return f"{self.base_url(config)}/{path}"

    def headers(self, config: dict[str, Any]) -> dict[str, str]:
        key = config.get(self.api_key_field)
        return {"Authorization": f"Bearer {key}"} if key else {}

    def body_model(self, config: dict[str, Any]) -> str | None:
        return self.model_name

    def build_request(self, path: str, payload: dict[str, Any], *, stream: bool = False) -> UpstreamRequest:
        config = self.config
        return UpstreamRequest(
            url=self.url(config, path),
            headers=self.headers(config),
            json=request_body(payload, self.body_model(config), stream=stream, ask_stream_usage=self.ask_stream_usage),
        )

    # -- operations --------------------------------------------------------------------------
    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_chat(self.post_json(self.build_request("chat/completions", payload)), self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self.build_request("chat/completions", payload, stream=True))
        provider = self.provider_name
        return (parse_chat_chunk(data, provider) for data in sse_json(events))

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_completions(self.post_json(self.build_request("completions", payload)))

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self.build_request("completions", payload, stream=True))
        return (parse_completions_chunk(data) for data in sse_json(events))

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        return parse_embeddings(self.post_json(self.build_request("embeddings", payload)))
