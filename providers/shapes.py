"""The gateway's response shapes (MLflow 3.x, §3.4/§3.5): declared once as pydantic models, built as
plain dicts.

The models are the one declaration of what the gateway answers: the OpenAPI document serves their
JSON schemas (endpoints_app.openapi), and tests/providers/test_shapes.py checks every provider's
output against them. A key without a default is in every answer (nulls included, as MLflow's
FastAPI serialises them); a key with a default is left out when the vendor does not report it; no
other key is allowed.

The builders below the models make those dicts on the hot path. They never validate (that would
cost every request); the test keeps their keys and types the models'.
"""
from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
ENDPOINT_TYPES = (COMPLETIONS, CHAT, EMBEDDINGS)


# -- the declaration ---------------------------------------------------------------------------------------
class _Shape(BaseModel):
    # Closed: the document says `additionalProperties: false`, and a provider key it does not declare
    # fails tests/providers/test_shapes.py. Validators are built on first use, which serving never makes.
    model_config = ConfigDict(extra="forbid", defer_build=True)


#: OpenAI's finish reasons (what the `openai` SDK declares); every provider maps its vendor's onto them.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class PromptTokensDetails(_Shape):
    """OpenAI's breakdown of the prompt tokens: `cached_tokens` were read from the vendor's prompt cache."""

    cached_tokens: int | None = None
    audio_tokens: int | None = None


class CompletionTokensDetails(_Shape):
    """OpenAI's breakdown of the completion tokens (`reasoning_tokens`: thinking the answer does not show)."""

    reasoning_tokens: int | None = None
    audio_tokens: int | None = None
    accepted_prediction_tokens: int | None = None
    rejected_prediction_tokens: int | None = None


class Usage(_Shape):
    """Token counts of a chat or completions answer; null when the vendor does not report them."""

    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    prompt_tokens_details: PromptTokensDetails | None = None
    completion_tokens_details: CompletionTokensDetails | None = None
    cache_creation_input_tokens: int | None = Field(
        default=None, description="Tokens written to the prompt cache (Anthropic, Bedrock), counted in prompt_tokens")


class ResponseFunctionCall(_Shape):
    name: str
    arguments: str = Field(description="The arguments, as a JSON string")


class ResponseToolCall(_Shape):
    id: str
    type: Literal["function"]
    function: ResponseFunctionCall
    thought_signature: str | None = Field(
        default=None, description="Gemini's signature of the model's thinking, to send back with the call")


class ResponseTextPart(_Shape):
    type: Literal["text"]
    text: str


class ResponseSummaryText(_Shape):
    type: Literal["summary_text"]
    text: str


class ResponseReasoningPart(_Shape):
    """The model's reasoning (Bedrock's reasoningContent), before the text parts of the answer."""

    type: Literal["reasoning"]
    summary: list[ResponseSummaryText]
    signature: str | None = None


ResponseContentPart = Annotated[ResponseTextPart | ResponseReasoningPart, Field(discriminator="type")]


class ResponseMessage(_Shape):
    role: str
    content: str | list[ResponseContentPart] | None = Field(
        description="The answer's text; a list of parts only when the model's reasoning comes with it")
    tool_calls: list[ResponseToolCall] | None
    refusal: str | None


class ChatChoice(_Shape):
    index: int
    message: ResponseMessage
    finish_reason: FinishReason | None


class ChatResponse(_Shape):
    """The answer of a chat endpoint (`llm/v1/chat`, `/v1/chat/completions`)."""

    id: str | None
    object: Literal["chat.completion"]
    created: int
    model: str | None
    choices: list[ChatChoice]
    usage: Usage
    provider: str


class FunctionCallDelta(_Shape):
    name: str | None
    arguments: str | None = Field(description="The next piece of the arguments' JSON string")


class ToolCallDelta(_Shape):
    index: int = Field(description="Which tool call of the choice this piece belongs to")
    id: str | None
    type: Literal["function"] | None
    function: FunctionCallDelta
    thought_signature: str | None = None


class ChunkDelta(_Shape):
    role: str | None
    content: str | None
    tool_calls: list[ToolCallDelta] | None


class ChatChunkChoice(_Shape):
    index: int
    finish_reason: FinishReason | None
    delta: ChunkDelta


class ChatChunk(_Shape):
    """One `data:` event of a streamed chat answer; the last one before `[DONE]` may carry only usage."""

    id: str | None
    object: Literal["chat.completion.chunk"]
    created: int
    model: str | None
    choices: list[ChatChunkChoice]
    usage: Usage | None
    provider: str


class TextChoice(_Shape):
    index: int
    text: str
    finish_reason: FinishReason | None


class CompletionsResponse(_Shape):
    """The answer of a completions endpoint (`llm/v1/completions`, `/v1/completions`)."""

    id: str | None
    object: Literal["text_completion"]
    created: int
    model: str | None
    choices: list[TextChoice]
    usage: Usage


class CompletionsChunk(_Shape):
    """One `data:` event of a streamed completions answer."""

    id: str | None
    object: Literal["text_completion_chunk"]
    created: int
    model: str | None
    choices: list[TextChoice]
    usage: Usage | None


class EmbeddingItem(_Shape):
    object: Literal["embedding"]
    embedding: list[float] | str = Field(
        description='The vector; with `"encoding_format": "base64"`, its little-endian float32s in base64')
    index: int


class EmbeddingsUsage(_Shape):
    prompt_tokens: int | None
    total_tokens: int | None


class EmbeddingsResponse(_Shape):
    """The answer of an embeddings endpoint (`llm/v1/embeddings`, `/v1/embeddings`)."""

    object: Literal["list"]
    data: list[EmbeddingItem]
    model: str | None
    usage: EmbeddingsUsage


#: What each endpoint type answers, and each streamed event of it.
RESPONSE_MODELS: dict[str, type[BaseModel]] = {
    CHAT: ChatResponse,
    COMPLETIONS: CompletionsResponse,
    EMBEDDINGS: EmbeddingsResponse,
}
CHUNK_MODELS: dict[str, type[BaseModel]] = {CHAT: ChatChunk, COMPLETIONS: CompletionsChunk}


# -- the builders ------------------------------------------------------------------------------------------
FINISH_REASONS: frozenset[str] = frozenset(get_args(FinishReason))
#: A vendor without finish reasons of its own: OpenAI's pass as they are, any other reads "stop".
NO_FINISH_REASONS: Mapping[str, str] = {}
_PROMPT_DETAILS = tuple(PromptTokensDetails.model_fields)
_COMPLETION_DETAILS = tuple(CompletionTokensDetails.model_fields)


def now() -> int:
    return int(time.time())


def finish_reason(raw: str | None, vendor_reasons: Mapping[str, str] = NO_FINISH_REASONS) -> str | None:
    """A vendor's finish reason in our terms: through the vendor's table, OpenAI's own values as they are,
    any other value "stop" (the answer ended for a reason OpenAI has no word for); None while generating."""
    if not raw:
        return None
    reason = vendor_reasons.get(raw, raw)
    return reason if reason in FINISH_REASONS else "stop"


def usage(prompt: int | None = None, completion: int | None = None, total: int | None = None, *,
          prompt_tokens_details: dict[str, Any] | None = None,
          completion_tokens_details: dict[str, Any] | None = None,
          cache_creation_input_tokens: int | None = None) -> dict[str, Any]:
    """A `Usage`: the three counts always (total = prompt + completion when not given), the others when known."""
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    if prompt_tokens_details is not None:
        out["prompt_tokens_details"] = prompt_tokens_details
    if completion_tokens_details is not None:
        out["completion_tokens_details"] = completion_tokens_details
    if cache_creation_input_tokens is not None:
        out["cache_creation_input_tokens"] = cache_creation_input_tokens
    return out


def _counts(raw: Any, keys: tuple[str, ...]) -> dict[str, int] | None:
    if not isinstance(raw, dict):
        return None
    counts = {key: raw[key] for key in keys if isinstance(raw.get(key), int)}
    return counts or None


def prompt_tokens_details(raw: Any) -> dict[str, int] | None:
    """A vendor's OpenAI-style `prompt_tokens_details`, with only the counts `PromptTokensDetails` declares."""
    return _counts(raw, _PROMPT_DETAILS)


def completion_tokens_details(raw: Any) -> dict[str, int] | None:
    """A vendor's OpenAI-style `completion_tokens_details`, with only the counts `CompletionTokensDetails` declares."""
    return _counts(raw, _COMPLETION_DETAILS)


def message(content: Any, *, role: str = "assistant", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `ResponseMessage`."""
    return {"role": role, "content": content, "tool_calls": tool_calls or None, "refusal": None}


def chat_choice(index: int, msg: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """A `ChatChoice`."""
    return {"index": index, "message": msg, "finish_reason": finish_reason}


def chat_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                  usage: dict[str, Any] | None, provider: str, created: int | None = None) -> dict[str, Any]:
    """A `ChatResponse` (all usage counts null when `usage` is None)."""
    return {
        "id": id,
        "object": "chat.completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage if usage is not None else globals()["usage"](),
        "provider": provider,
    }


def delta(*, role: str | None = None, content: str | None = None,
          tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `ChunkDelta`."""
    return {"role": role, "content": content, "tool_calls": tool_calls}


def chat_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]], provider: str,
               usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
    """A `ChatChunk`."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage,
        "provider": provider,
    }


def chunk_choice(index: int, d: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    """A `ChatChunkChoice`."""
    return {"index": index, "finish_reason": finish_reason, "delta": d}


def completions_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                         usage: dict[str, Any] | None, created: int | None = None) -> dict[str, Any]:
    """A `CompletionsResponse` (all usage counts null when `usage` is None)."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage if usage is not None else globals()["usage"](),
    }


def text_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    """A `TextChoice`."""
    return {"index": index, "text": text, "finish_reason": finish_reason}


def completions_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                      usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
    """A `CompletionsChunk`."""
    return {
        "id": id,
        "object": "text_completion_chunk",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage,
    }


def embeddings_response(*, vectors: list[Any], model: str | None,
                        usage: dict[str, Any] | None) -> dict[str, Any]:
    """An `EmbeddingsResponse` (both usage counts null when `usage` is None)."""
    return {
        "object": "list",
        "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vectors)],
        "model": model,
        "usage": usage if usage is not None else {"prompt_tokens": None, "total_tokens": None},
    }


def base64_embedding(vector: list[float]) -> str:
    """OpenAI's base64 form of a vector: little-endian float32s."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def base64_embeddings(response: dict[str, Any]) -> dict[str, Any]:
    """An embeddings response with every float vector in OpenAI's base64 form."""
    data = [
        {**item, "embedding": base64_embedding(item["embedding"])} if isinstance(item["embedding"], list) else item
        for item in response["data"]
    ]
    return {**response, "data": data}
