"""The gateway's response shapes (MLflow 3.x, §3.4/§3.5), built as plain dicts.

Pure helpers shared by every provider so that each response has every key, nulls included.
"""
from __future__ import annotations

import base64
import struct
import time
from typing import Any

CHAT = "llm/v1/chat"
COMPLETIONS = "llm/v1/completions"
EMBEDDINGS = "llm/v1/embeddings"
ENDPOINT_TYPES = (COMPLETIONS, CHAT, EMBEDDINGS)


def now() -> int:
    return int(time.time())


def usage(prompt: int | None = None, completion: int | None = None, total: int | None = None,
          **extra: Any) -> dict[str, Any]:
    if total is None and prompt is not None and completion is not None:
        total = prompt + completion
    out: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def message(content: Any, *, role: str = "assistant", tool_calls: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"role": role, "content": content, "tool_calls": tool_calls or None, "refusal": None}


def chat_choice(index: int, msg: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "message": msg, "finish_reason": finish_reason}


def chat_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                  usage: dict[str, Any] | None, provider: str, created: int | None = None) -> dict[str, Any]:
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
    return {"role": role, "content": content, "tool_calls": tool_calls}


def chat_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]], provider: str,
               usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
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
    return {"index": index, "finish_reason": finish_reason, "delta": d}


def completions_response(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                         usage: dict[str, Any] | None, created: int | None = None) -> dict[str, Any]:
    return {
        "id": id,
        "object": "text_completion",
        "created": created if created is not None else now(),
        "model": model,
        "choices": choices,
        "usage": usage if usage is not None else globals()["usage"](),
    }


def text_choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish_reason}


def completions_chunk(*, id: str | None, model: str | None, choices: list[dict[str, Any]],
                      usage: dict[str, Any] | None = None, created: int | None = None) -> dict[str, Any]:
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
