"""The gateway's response shapes (MLflow 3.x, §3.4/§3.5), declared once as pydantic models.

These models are the one declaration of what the gateway answers: the OpenAPI document serves their
JSON schemas (endpoints_app.openapi), providers build them as plain dicts with the helpers of
providers.shapes, and tests/providers/test_shapes.py checks every provider's output against them. A
key without a default is in every answer (nulls included, as MLflow's FastAPI serialises them); a key
with a default is left out when the vendor does not report it; no other key is allowed.

The invocation path neither validates with them (that would cost every request) nor imports them,
so pydantic stays out of the processes that only need the builders (a config reload's `load_config`).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS


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
