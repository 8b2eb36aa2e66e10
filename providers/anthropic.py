"""Anthropic (`provider: anthropic`): the Messages API for chat, the legacy Text Completions API for
completions, as MLflow 3.x does (§2.2), with its `'{n}'` message fixed and stream errors reported.

The pure functions translate our request into Anthropic's body, Anthropic's message into our
response, and Anthropic's stream events (message_start, content_block_*, message_delta, error)
into our chunks.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from typing import Any

from providers import shapes
from providers.base import BaseProvider, content_text, drop_none, parse_base64_data_url, require_n_is_one
from providers.config import ConfigField, ProviderConfig
from providers.errors import InvalidParameter, UpstreamBadResponse, UpstreamError
from providers.openai_compatible import sse_json
from providers.shapes import CHAT, COMPLETIONS
from serving.upstream import UpstreamRequest

DISPLAY_NAME = "Anthropic"
DEFAULT_MAX_TOKENS = 8192
MAXIMUM_MAX_TOKENS = 1_000_000
JSON_OBJECT_INSTRUCTION = (
    "Respond with only a single valid JSON object. Do not include any explanatory text, markdown, or code "
    "fences before or after the JSON object."
)
# OpenAI parameters the Messages API has no field for (it refuses unknown fields): not forwarded.
_OPENAI_ONLY = frozenset({"stream_options", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs",
                          "logit_bias", "seed", "user", "parallel_tool_calls", "response_format"})
FINISH_REASONS = {
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic's error types → the HTTP status the same error has outside a stream.
ERROR_STATUSES = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# -- pure translation: requests ---------------------------------------------------------------------------
def _max_tokens(requested: int | None) -> int:
    max_tokens = requested if requested is not None else DEFAULT_MAX_TOKENS
    if max_tokens > MAXIMUM_MAX_TOKENS:
        raise InvalidParameter(f"Invalid value for max_tokens: cannot exceed {MAXIMUM_MAX_TOKENS}.")
    return max_tokens


def _content_blocks(content: Any) -> Any:
    """Our content (a string or OpenAI parts) → Anthropic's: image_url parts become image blocks."""
    if not isinstance(content, list):
        return content
    blocks = []
    for part in content:
        if part.get("type") != "image_url":
            blocks.append(part)
            continue
        url = (part.get("image_url") or {}).get("url", "")
        parsed = parse_base64_data_url(url)
        if parsed is not None:
            blocks.append({"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}})
        else:
            blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"]) if function.get("arguments") else {}
    except json.JSONDecodeError:
        raise InvalidParameter(f"The arguments of tool call {call.get('id')!r} are not valid JSON.") from None
    return {"type": "tool_use", "id": call["id"], "name": function["name"], "input": arguments}


def _messages(messages: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """Our messages → (Anthropic's top-level `system`, Anthropic's `messages`)."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            system.append(content_text(message.get("content")))
        elif role == "user":
            out.append({"role": "user", "content": _content_blocks(message.get("content"))})
        elif role == "assistant":
            if message.get("tool_calls"):
                text = content_text(message.get("content"))
                blocks = [{"type": "text", "text": text}] if text else []
                blocks += [_tool_use_block(call) for call in message["tool_calls"]]
                out.append({"role": "assistant", "content": blocks})
            else:
                out.append({"role": "assistant", "content": _content_blocks(message.get("content"))})
        elif role == "tool":
            out.append({"role": "user", "content": [{
                "type": "tool_result", "tool_use_id": message.get("tool_call_id"),
                "content": _content_blocks(message.get("content")),
            }]})
        # Any other role has no Anthropic equivalent and is dropped, as in MLflow.
    return ("\n".join(system) if system else None), out


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    converted = []
    for tool in tools:
        if tool.get("type") != "function" or not tool.get("function"):
            raise InvalidParameter(
                f"Only function calling tool is supported, but received tool type {tool.get('type')}"
            )
        function = tool["function"]
        converted.append(drop_none({
            "name": function["name"],
            "description": function.get("description"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }))
    return converted


def _tool_choice(choice: Any) -> dict[str, Any] | None:
    if choice in ("none", "auto"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": choice["function"]["name"]}
    return None


class _FreeFormObject(Exception):
    """A schema object without `properties`, which Anthropic's structured outputs cannot express."""


def _strict_schema(schema: Any) -> Any:
    """A copy of `schema` with `additionalProperties: false` on every object (Anthropic requires it)."""
    if isinstance(schema, list):
        return [_strict_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: _strict_schema(value) for key, value in schema.items()}
    if out.get("type") == "object":
        if "properties" not in out:
            raise _FreeFormObject
        out["additionalProperties"] = False
    return out


def chat_body(payload: dict[str, Any], model: str | None, *, stream: bool = False) -> dict[str, Any]:
    """Our chat request → the Messages API body (MLflow 3.x rules, §2.2)."""
    if "temperature" in payload and "top_p" in payload:
        raise InvalidParameter("Cannot set both 'temperature' and 'top_p' parameters.")
    max_tokens = _max_tokens(payload.get("max_tokens") or payload.get("max_completion_tokens"))
    require_n_is_one(payload, DISPLAY_NAME)

    body: dict[str, Any] = {"model": model}
    skip = _OPENAI_ONLY | {"n", "stream", "max_tokens", "max_completion_tokens", "messages", "stop", "tools",
                           "tool_choice", "model"}
    body.update((k, v) for k, v in payload.items() if k not in skip)
    system, body["messages"] = _messages(payload["messages"])
    body["max_tokens"] = max_tokens
    if "stop" in payload:
        body["stop_sequences"] = payload["stop"]
    if "temperature" in payload:
        # Anthropic's range is 0-1, ours is 0-2.
        body["temperature"] = 0.5 * payload["temperature"]
    if payload.get("tools"):
        body["tools"] = _tools(payload["tools"])
    tool_choice = _tool_choice(payload.get("tool_choice"))
    if payload.get("parallel_tool_calls") is False:
        tool_choice = {**(tool_choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice

    response_format = payload.get("response_format") or {}
    if response_format.get("type") == "json_schema" and response_format.get("json_schema"):
        try:
            schema = _strict_schema(copy.deepcopy(response_format["json_schema"].get("schema") or {}))
        except _FreeFormObject:
            pass  # MLflow's rule: such a schema is dropped and the model answers in plain text.
        else:
            body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    elif response_format.get("type") == "json_object":
        system = f"{system}\n{JSON_OBJECT_INSTRUCTION}" if system else JSON_OBJECT_INSTRUCTION
    if system is not None:
        body["system"] = system
    if stream:
        body["stream"] = True
    return body


def completions_body(payload: dict[str, Any], model: str | None) -> dict[str, Any]:
    """Our completions request → the legacy /v1/complete body (MLflow 3.x rules, §2.2)."""
    if "top_p" in payload:
        raise InvalidParameter(
            "Cannot set both 'temperature' and 'top_p' parameters. Please use only the temperature parameter for "
            "your query."
        )
    max_tokens = _max_tokens(payload.get("max_tokens") or payload.get("max_completion_tokens"))
    require_n_is_one(payload, DISPLAY_NAME)

    body: dict[str, Any] = {"model": model}
    skip = _OPENAI_ONLY | {"n", "stream", "max_tokens", "max_completion_tokens", "stop", "model", "prompt"}
    body.update((k, v) for k, v in payload.items() if k not in skip)
    body["prompt"] = human_prompt(payload["prompt"])
    body["max_tokens_to_sample"] = max_tokens
    if "stop" in payload:
        body["stop_sequences"] = payload["stop"]
    if "temperature" in payload:
        body["temperature"] = 0.5 * payload["temperature"]
    return body


def human_prompt(prompt: str) -> str:
    """The legacy API's `\\n\\nHuman: ...\\n\\nAssistant:` framing, added where missing."""
    if prompt.startswith("Human: "):
        prompt = "\n\n" + prompt
    if not prompt.startswith("\n\nHuman: "):
        prompt = "\n\nHuman: " + prompt
    if not prompt.endswith("\n\nAssistant:"):
        prompt += "\n\nAssistant:"
    return prompt


# -- pure translation: responses --------------------------------------------------------------------------
def finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def usage(raw: Any) -> dict[str, Any]:
    """Anthropic's usage → ours. input_tokens excludes cache tokens; prompt_tokens includes them. Anthropic's
    other keys (service_tier, server_tool_use, the cache_creation breakdown) have no place in `wire.Usage`."""
    if not isinstance(raw, dict):
        return shapes.usage()
    input_tokens = raw.get("input_tokens")
    output_tokens = raw.get("output_tokens")
    cache_read = raw.get("cache_read_input_tokens")
    cache_creation = raw.get("cache_creation_input_tokens")
    prompt = input_tokens + (cache_read or 0) + (cache_creation or 0) if input_tokens is not None else None
    return shapes.usage(
        prompt, output_tokens,
        prompt_tokens_details={"cached_tokens": cache_read} if cache_read is not None else None,
        cache_creation_input_tokens=cache_creation,
    )


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": json.dumps(block.get("input") or {})}}


def parse_chat(body: Any, provider: str) -> dict[str, Any]:
    """A Messages API response → our chat response: text blocks joined, tool_use blocks as tool_calls.

    Thinking blocks are left out of `content` (MLflow 3.17 mixes them into the answer text)."""
    try:
        blocks = body.get("content") or []
        text = "".join(block.get("text") or "" for block in blocks if block.get("type") == "text")
        tool_calls = [_tool_call(block) for block in blocks if block.get("type") == "tool_use"]
        message = shapes.message(text or None, tool_calls=tool_calls)
        return shapes.chat_response(
            id=body.get("id"), model=body.get("model"), provider=provider,
            choices=[shapes.chat_choice(0, message, finish_reason(body.get("stop_reason")))],
            usage=usage(body.get("usage")),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream chat response is missing {exc}.") from None


def parse_completions(body: Any) -> dict[str, Any]:
    try:
        reason = "stop" if body.get("stop_reason") == "stop_sequence" else "length"
        return shapes.completions_response(
            id=None, model=body.get("model"), choices=[shapes.text_choice(0, body["completion"], reason)],
            usage=shapes.usage(),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream completions response is missing {exc}.") from None


def stream_error(event: dict[str, Any]) -> UpstreamError:
    """An `error` event in the stream → the error the view reports as a final SSE event."""
    error = event.get("error") or {}
    message = error.get("message") or "The upstream stream reported an error."
    return UpstreamError(message, status=ERROR_STATUSES.get(error.get("type", ""), 502))


def chat_chunks(events: Iterable[dict[str, Any]], provider: str) -> Iterator[dict[str, Any]]:
    """Anthropic's stream events → our chat chunks.

    message_start gives id, model and input usage (not emitted); text and tool_use blocks and their
    deltas become content / tool_call deltas (k = the tool's ordinal among tool blocks);
    message_delta becomes the final chunk with finish_reason and usage; an error event raises.
    """
    message_id: str | None = None
    model: str | None = None
    usage_so_far: dict[str, Any] = {}
    tool_index: dict[int, int] = {}
    first = True

    def chunk(delta: dict[str, Any], finish: str | None = None,
              chunk_usage: dict[str, Any] | None = None) -> dict[str, Any]:
        nonlocal first
        if first:
            delta["role"], first = "assistant", False
        return shapes.chat_chunk(id=message_id, model=model, provider=provider, usage=chunk_usage,
                                 choices=[shapes.chunk_choice(0, delta, finish)])

    for event in events:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            message_id, model = message.get("id"), message.get("model")
            usage_so_far.update(message.get("usage") or {})
        elif kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "text":
                yield chunk(shapes.delta(content=block.get("text") or ""))
            elif block.get("type") == "tool_use":
                index = tool_index.setdefault(event.get("index", 0), len(tool_index))
                yield chunk(shapes.delta(tool_calls=[{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }]))
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                yield chunk(shapes.delta(content=delta.get("text") or ""))
            elif delta.get("type") == "input_json_delta" and event.get("index", 0) in tool_index:
                yield chunk(shapes.delta(tool_calls=[{
                    "index": tool_index[event.get("index", 0)], "id": None, "type": None,
                    "function": {"name": None, "arguments": delta.get("partial_json") or ""},
                }]))
        elif kind == "message_delta":
            # Newer API versions repeat cumulative counts here; output_tokens is always present.
            usage_so_far.update({k: v for k, v in (event.get("usage") or {}).items() if v is not None})
            stop_reason = (event.get("delta") or {}).get("stop_reason")
            yield chunk(shapes.delta(), finish_reason(stop_reason), usage(usage_so_far))
        elif kind == "error":
            raise stream_error(event)
        # ping, content_block_stop, message_stop and thinking deltas carry nothing for our chunks.


# -- the provider ------------------------------------------------------------------------------------------
class AnthropicConfig(ProviderConfig):
    fields = (
        ConfigField("anthropic_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("anthropic_version", default="2023-06-01", help="The anthropic-version header"),
        ConfigField("anthropic_api_base", kind="url", default="https://api.anthropic.com/v1",
                    help="Defaults to https://api.anthropic.com/v1"),
    )


class AnthropicProvider(BaseProvider):
    name = "anthropic"
    display_name = DISPLAY_NAME
    config_class = AnthropicConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS})
    streaming_types = frozenset({CHAT})
    supports_tools = True

    def _request(self, path: str, body: dict[str, Any]) -> UpstreamRequest:
        config = self.config
        return UpstreamRequest(
            url=f"{str(config['anthropic_api_base']).rstrip('/')}/{path}",
            headers={"x-api-key": config["anthropic_api_key"], "anthropic-version": config["anthropic_version"]},
            json=body,
        )

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = chat_body(payload, self.model_name)
        return parse_chat(self.post_json(self._request("messages", body)), self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        body = chat_body(payload, self.model_name, stream=True)
        events = self.post_sse(self._request("messages", body))
        return chat_chunks(sse_json(events), self.provider_name)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = completions_body(payload, self.model_name)
        return parse_completions(self.post_json(self._request("complete", body)))
