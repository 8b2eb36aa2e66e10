"""`mock`: a built-in deterministic provider for the quick start, demos, tests and load tests.

It never leaves the process. Chat and completions echo the input ("Echo: ..."), embeddings are
fixed-size vectors derived from a hash of each input, and streams come in several chunks. An
optional latency (config `latency_ms`, and `chunk_delay_ms` between stream chunks) imitates a real
upstream.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from collections.abc import Iterator
from typing import Any

from providers import shapes
from providers.base import BaseProvider, require_n_is_one
from providers.config import ConfigField, ProviderConfig
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.bridge import sleep


class MockConfig(ProviderConfig):
    fields = (
        ConfigField("latency_ms", value_type=float, default=0.0, minimum=0, help="Delay before answering"),
        ConfigField("chunk_delay_ms", value_type=float, default=0.0, minimum=0, help="Delay between stream chunks"),
        ConfigField("stream_chunks", value_type=int, default=4, minimum=1, help="How many chunks a stream has"),
        ConfigField("dimensions", value_type=int, default=8, minimum=1, help="Embedding vector size"),
    )


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def echo_text(payload: dict[str, Any]) -> str:
    if "messages" in payload:
        users = [m for m in payload["messages"] if m.get("role") == "user"]
        last = users[-1] if users else payload["messages"][-1]
        return f"Echo: {_text_of(last.get('content'))}"
    return f"Echo: {payload.get('prompt', '')}"


def split_text(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def vector_for(text: str, dimensions: int) -> list[float]:
    """A deterministic unit-free vector in [-1, 1): the same text always gives the same vector."""
    out: list[float] = []
    counter = 0
    while len(out) < dimensions:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        for (value,) in struct.iter_unpack(">I", digest):
            out.append(round(value / 2**31 - 1.0, 6))
        counter += 1
    return out[:dimensions]


def _count_tokens(text: str) -> int:
    return len(text.split())


class MockProvider(BaseProvider):
    name = "mock"
    display_name = "Mock"
    config_class = MockConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT, COMPLETIONS})

    def _sleep(self, key: str) -> None:
        delay = float(self.config[key] or 0)
        if delay:
            sleep(delay / 1000.0)

    def _prompt_tokens(self, payload: dict[str, Any]) -> int:
        if "messages" in payload:
            return sum(_count_tokens(_text_of(m.get("content"))) for m in payload["messages"])
        return _count_tokens(str(payload.get("prompt", "")))

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        require_n_is_one(payload, self.display_name)
        self._sleep("latency_ms")
        text = echo_text(payload)
        return shapes.chat_response(
            id=f"chatcmpl-mock-{uuid.uuid4().hex[:12]}",
            model=self.model_name,
            choices=[shapes.chat_choice(0, shapes.message(text), "stop")],
            usage=shapes.usage(self._prompt_tokens(payload), _count_tokens(text)),
            provider=self.provider_name,
        )

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        require_n_is_one(payload, self.display_name)
        return self._chat_chunks(payload)

    def _chat_chunks(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self._sleep("latency_ms")
        text = echo_text(payload)
        chunk_id = f"chatcmpl-mock-{uuid.uuid4().hex[:12]}"
        pieces = split_text(text, int(self.config["stream_chunks"]))
        for index, piece in enumerate(pieces):
            if index:
                self._sleep("chunk_delay_ms")
            role = "assistant" if index == 0 else None
            yield shapes.chat_chunk(
                id=chunk_id,
                model=self.model_name,
                provider=self.provider_name,
                choices=[shapes.chunk_choice(0, shapes.delta(role=role, content=piece))],
            )
        yield shapes.chat_chunk(
            id=chunk_id,
            model=self.model_name,
            provider=self.provider_name,
            choices=[shapes.chunk_choice(0, shapes.delta(), "stop")],
            usage=shapes.usage(self._prompt_tokens(payload), _count_tokens(text)),
        )

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._sleep("latency_ms")
        n = int(payload.get("n") or 1)
        text = echo_text(payload)
        return shapes.completions_response(
            id=f"cmpl-mock-{uuid.uuid4().hex[:12]}",
            model=self.model_name,
            choices=[shapes.text_choice(i, text, "stop") for i in range(n)],
            usage=shapes.usage(self._prompt_tokens(payload), n * _count_tokens(text)),
        )

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        require_n_is_one(payload, self.display_name)
        return self._completion_chunks(payload)

    def _completion_chunks(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        self._sleep("latency_ms")
        text = echo_text(payload)
        chunk_id = f"cmpl-mock-{uuid.uuid4().hex[:12]}"
        pieces = split_text(text, int(self.config["stream_chunks"]))
        for index, piece in enumerate(pieces):
            if index:
                self._sleep("chunk_delay_ms")
            yield shapes.completions_chunk(
                id=chunk_id, model=self.model_name, choices=[shapes.text_choice(0, piece, None)]
            )
        yield shapes.completions_chunk(
            id=chunk_id,
            model=self.model_name,
            choices=[shapes.text_choice(0, "", "stop")],
            usage=shapes.usage(self._prompt_tokens(payload), _count_tokens(text)),
        )

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        self._sleep("latency_ms")
        raw = payload["input"]
        inputs = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else list(raw)
        dimensions = int(self.config["dimensions"])
        vectors = [vector_for(str(item), dimensions) for item in inputs]
        tokens = sum(_count_tokens(str(item)) for item in inputs)
        return shapes.embeddings_response(
            vectors=vectors, model=self.model_name, usage={"prompt_tokens": tokens, "total_tokens": tokens}
        )
