"""The gateway's response shapes (MLflow 3.x, §3.4/§3.5), built as plain dicts.

Pure helpers shared by every provider so that each answer has every key, nulls included. What they
build is declared once, by the pydantic models of providers.wire (`ChatResponse`, `ChatChunk`, ...),
which the OpenAPI document serves; the builders never validate (that would cost every request), and
tests/providers/test_shapes.py checks that every provider's output, and the key lists below, are the
models'. This module does not import pydantic.
"""
from __future__ import annotations

import base64
import struct
import time
from collections.abc import Mapping
from typing import Any

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
ENDPOINT_TYPES = (COMPLETIONS, CHAT, EMBEDDINGS)


#: OpenAI's finish reasons (wire.FinishReason): every provider maps its vendor's onto them.
FINISH_REASONS = frozenset({"stop", "length", "tool_calls", "content_filter", "function_call"})
#: A vendor without finish reasons of its own: OpenAI's pass as they are, any other reads "stop".
NO_FINISH_REASONS: Mapping[str, str] = {}
#: The counts wire.PromptTokensDetails and wire.CompletionTokensDetails declare.
PROMPT_TOKENS_DETAILS = ("cached_tokens", "audio_tokens")
COMPLETION_TOKENS_DETAILS = ("reasoning_tokens", "audio_tokens", "accepted_prediction_tokens",
                             "rejected_prediction_tokens")


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
    """A `wire.Usage`: the three counts always (total = prompt + completion when not given), the others when known."""
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
    """A vendor's `prompt_tokens_details`, with only the counts `wire.PromptTokensDetails` declares."""
    return _counts(raw, PROMPT_TOKENS_DETAILS)


def completion_tokens_details(raw: Any) -> dict[str, int] | None:
    """A vendor's `completion_tokens_details`, with only the counts `wire.CompletionTokensDetails` declares."""
    return _counts(raw, COMPLETION_TOKENS_DETAILS)


def message(content: Any, *, role: str = "assistant", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A `wire.ResponseMessage`."""
    return {"role": role, "content": content, "tool_calls": tool_calls or None, "refusal": None}


def chat_choice(index: int, msg: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    """A `wire.ChatChoice`."""
    return {"index": index, "message": msg, "finish_reason": finish_reason}


def chat_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                  usage: dict[str, Any] | None, provider: str, created: int | None = None) -> dict[str, Any]:
    """A `wire.ChatResponse` (all usage counts null when `usage` is None)."""
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
    """A `wire.ChunkDelta`."""
    return {"role": role, "content": content, "tool_calls": tool_calls}


def chat_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]], provider: str,
               usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
    """A `wire.ChatChunk`."""
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
    """A `wire.ChatChunkChoice`."""
    return {"index": index, "finish_reason": finish_reason, "delta": d}


def completions_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                         usage: dict[str, Any] | None, created: int | None = None) -> dict[str, Any]:
    """A `wire.CompletionsResponse` (all usage counts null when `usage` is None)."""
    return {
        "id": id,
        "object": "text_completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage if usage is not None else globals()["usage"](),
    }


def text_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    """A `wire.TextChoice`."""
    return {"index": index, "text": text, "finish_reason": finish_reason}


def completions_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                      usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
    """A `wire.CompletionsChunk`."""
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
    """A `wire.EmbeddingsResponse` (both usage counts null when `usage` is None)."""
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
