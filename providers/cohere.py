"""Cohere (`provider: cohere`): the v1 chat, generate and embed APIs, as MLflow 3.x does (§2.3).

Streams are NDJSON (one JSON event per line): `stream-start` is skipped, `text-generation` becomes a
delta, `stream-end` gives the final chunk with the finish reason (and usage for chat). Unlike MLflow,
which passes Cohere's raw reason (`COMPLETE`, `MAX_TOKENS`, ...), the reason is OpenAI's (`stop`,
`length`, ...), as every provider answers.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from providers import shapes
from providers.base import BaseProvider, content_text, reject_native_names
from providers.config import ConfigField, ProviderConfig
from providers.errors import InvalidParameter, UpstreamBadResponse, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.upstream import UpstreamRequest

DEFAULT_API_BASE = "https://api.cohere.ai/v1"
COMPLETIONS_NAMES = {"stop": "stop_sequences", "n": "num_generations"}
EMBEDDINGS_NAMES = {"input": "texts"}
# Cohere's finish reasons → OpenAI's (shapes.finish_reason: any other, ERROR or USER_CANCEL, reads "stop").
FINISH_REASONS = {"COMPLETE": "stop", "STOP_SEQUENCE": "stop", "MAX_TOKENS": "length", "ERROR_LIMIT": "length",
                  "ERROR_TOXIC": "content_filter", "TOOL_CALL": "tool_calls"}
# Gateway-only fields that mean nothing to Cohere.
_GATEWAY_ONLY = frozenset({"stream", "stream_options"})


# -- pure translation: requests ---------------------------------------------------------------------------
def _scaled(payload: dict[str, Any]) -> dict[str, Any]:
    """Cohere's temperature range is 0-5, ours 0-2 (MLflow scales only a non-zero value)."""
    if payload.get("temperature"):
        return {**payload, "temperature": 2.5 * payload["temperature"]}
    return payload


def _body(model: str | None, payload: dict[str, Any], stream: bool) -> dict[str, Any]:
    body = {"model": model, **{k: v for k, v in payload.items() if k not in _GATEWAY_ONLY}}
    if stream:
        body["stream"] = True
    return body


def chat_body(payload: dict[str, Any], model: str | None, *, stream: bool = False) -> dict[str, Any]:
    """Our chat request → a v1 /chat body: the last user message as `message`, system messages as
    `preamble_override`, the rest as `chat_history`."""
    n = payload.get("n", 1)
    if n != 1:
        raise InvalidParameter(f"Parameter n must be 1 for Cohere chat, got {n}.")
    if "stop" in payload:
        raise InvalidParameter("Parameter stop is not supported for Cohere chat.")
    if payload.get("tools") or payload.get("tool_choice"):
        raise InvalidParameter("Tools are not supported for Cohere chat.")
    *history, last = payload["messages"]
    if last["role"] != "user":
        raise InvalidParameter(f"Last message must be from user, got {last['role']}.")

    rest = {k: v for k, v in _scaled(payload).items() if k not in {"n", "messages"}}
    body = _body(model, rest, stream)
    body["message"] = content_text(last.get("content"))
    if system := [content_text(m.get("content")) for m in history if m["role"] == "system"]:
        body["preamble_override"] = "\n".join(system)
    if turns := [m for m in history if m["role"] in ("user", "assistant")]:
        body["chat_history"] = [
            {"role": "USER" if m["role"] == "user" else "CHATBOT", "message": content_text(m.get("content"))}
            for m in turns
        ]
    return body


def completions_body(payload: dict[str, Any], model: str | None, *, stream: bool = False) -> dict[str, Any]:
    """Our completions request → a v1 /generate body (`stop`→`stop_sequences`, `n`→`num_generations`)."""
    try:
        reject_native_names(payload, COMPLETIONS_NAMES)
    except InvalidParameter as exc:
        raise InvalidParameter(exc.detail, status=400) from None  # MLflow answers 400 on this path
    renamed = {COMPLETIONS_NAMES.get(k, k): v for k, v in _scaled(payload).items()}
    return _body(model, renamed, stream)


def embeddings_body(payload: dict[str, Any], model: str | None) -> dict[str, Any]:
    reject_native_names(payload, EMBEDDINGS_NAMES)
    texts = payload["input"]
    body = {"model": model, **{k: v for k, v in payload.items() if k != "input"}}
    body["texts"] = [texts] if isinstance(texts, str) else texts
    return body


# -- pure translation: responses --------------------------------------------------------------------------
def chat_usage(response: dict[str, Any]) -> dict[str, Any]:
    """`token_count` (older API versions) or `meta.tokens` (newer ones) → our usage."""
    counts = response.get("token_count")
    if isinstance(counts, dict):
        return shapes.usage(counts.get("prompt_tokens"), counts.get("response_tokens"), counts.get("total_tokens"))
    tokens = (response.get("meta") or {}).get("tokens") or {}
    return shapes.usage(tokens.get("input_tokens"), tokens.get("output_tokens"))


def parse_chat(body: Any, model: str | None, provider: str) -> dict[str, Any]:
    try:
        message = shapes.message(body["text"])
        return shapes.chat_response(id=body.get("response_id"), model=model, provider=provider,
                                    choices=[shapes.chat_choice(0, message, None)], usage=chat_usage(body))
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream chat response is missing {exc}.") from None


def parse_completions(body: Any, model: str | None) -> dict[str, Any]:
    try:
        choices = [shapes.text_choice(index, generation["text"], None)
                   for index, generation in enumerate(body["generations"])]
        return shapes.completions_response(id=body.get("id"), model=model, choices=choices, usage=shapes.usage())
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream completions response is missing {exc}.") from None


def parse_embeddings(body: Any, model: str | None) -> dict[str, Any]:
    try:
        vectors = body["embeddings"]
        if isinstance(vectors, dict):  # requested with embedding_types: {"float": [[...]], ...}
            vectors = vectors.get("float") or next(iter(vectors.values()))
        return shapes.embeddings_response(vectors=list(vectors), model=model, usage=None)
    except (KeyError, TypeError, AttributeError, StopIteration) as exc:
        raise UpstreamBadResponse(f"The upstream embeddings response is missing {exc}.") from None


def _events(lines: Iterable[Any]) -> Iterator[dict[str, Any]]:
    """The stream's events; an error body inside the stream raises."""
    for event in lines:
        if not isinstance(event, dict):
            raise UpstreamBadResponse("The upstream stream sent a line that is not a JSON object.")
        if "event_type" not in event and isinstance(event.get("message"), str):
            raise UpstreamError(event["message"], status=502)
        if event.get("event_type") != "stream-start":
            yield event


def chat_chunks(lines: Iterable[Any], model: str | None, provider: str) -> Iterator[dict[str, Any]]:
    first = True
    for event in _events(lines):
        kind = event["event_type"]
        if kind == "text-generation":
            delta = shapes.delta(role="assistant" if first else None, content=event.get("text") or "")
            first = False
            yield shapes.chat_chunk(id=None, model=model, provider=provider, choices=[shapes.chunk_choice(0, delta)])
        elif kind == "stream-end":
            response = event.get("response") or {}
            yield shapes.chat_chunk(
                id=response.get("response_id"), model=model, provider=provider, usage=chat_usage(response),
                choices=[shapes.chunk_choice(0, shapes.delta(role="assistant" if first else None),
                                             shapes.finish_reason(event.get("finish_reason"), FINISH_REASONS))],
            )
        # Other events (citations, search results, tool calls) have no chat chunk equivalent.


def completions_chunks(lines: Iterable[Any], model: str | None) -> Iterator[dict[str, Any]]:
    for event in _events(lines):
        kind = event["event_type"]
        if kind == "text-generation":
            choice = shapes.text_choice(event.get("index", 0), event.get("text") or "", None)
            yield shapes.completions_chunk(id=None, model=model, choices=[choice])
        elif kind == "stream-end":
            response = event.get("response") or {}
            reason = shapes.finish_reason(event.get("finish_reason"), FINISH_REASONS)
            choice = shapes.text_choice(event.get("index", 0), "", reason)
            yield shapes.completions_chunk(id=response.get("id"), model=model, choices=[choice])


# -- the provider ------------------------------------------------------------------------------------------
class CohereConfig(ProviderConfig):
    fields = (
        ConfigField("cohere_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("cohere_api_base", kind="url", default=DEFAULT_API_BASE, help="Defaults to https://api.cohere.ai/v1"),
    )


class CohereProvider(BaseProvider):
    name = "cohere"
    display_name = "Cohere"
    config_class = CohereConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT, COMPLETIONS})
    supports_tools = False

    def _request(self, path: str, body: dict[str, Any]) -> UpstreamRequest:
        config = self.config
        return UpstreamRequest(url=f"{str(config['cohere_api_base']).rstrip('/')}/{path}",
                               headers={"Authorization": f"Bearer {config['cohere_api_key']}"}, json=body)

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self._request("chat", chat_body(payload, self.model_name)))
        return parse_chat(body, self.model_name, self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        lines = self.post_ndjson(self._request("chat", chat_body(payload, self.model_name, stream=True)))
        return chat_chunks(lines, self.model_name, self.provider_name)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self._request("generate", completions_body(payload, self.model_name)))
        return parse_completions(body, self.model_name)

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        lines = self.post_ndjson(self._request("generate", completions_body(payload, self.model_name, stream=True)))
        return completions_chunks(lines, self.model_name)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self._request("embed", embeddings_body(payload, self.model_name)))
        return parse_embeddings(body, self.model_name)
