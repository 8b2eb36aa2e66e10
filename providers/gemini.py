"""Gemini (`provider: gemini`): generateContent / streamGenerateContent for chat and completions,
embedContent / batchEmbedContents for embeddings, as MLflow 3.x does (§2.5).

The pure functions translate our request into Gemini's body (contents, systemInstruction,
generationConfig, tools, toolConfig) and Gemini's candidates into our responses and chunks.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

from providers import shapes
from providers.base import BaseProvider, content_text, drop_none, parse_base64_data_url, reject_native_names
from providers.config import ConfigField, ProviderConfig
from providers.errors import InvalidParameter, UpstreamBadResponse, UpstreamError
from providers.openai_compatible import sse_json
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from serving.upstream import UpstreamRequest, default_error_message

DEFAULT_API_BASE = "https://generativelanguage.googleapis.com/v1beta/models"
# Our parameter name → Gemini's generationConfig field.
GENERATION_CONFIG_NAMES = {
    "stop": "stopSequences",
    "n": "candidateCount",
    "max_tokens": "maxOutputTokens",
    "top_k": "topK",
    "top_p": "topP",
    "frequency_penalty": "frequencyPenalty",
    "presence_penalty": "presencePenalty",
}
# Top-level GenerateContentRequest fields a client may send as they are.
_NATIVE_REQUEST_FIELDS = ("safetySettings", "cachedContent", "toolConfig")
# Fields an embeddings request may carry for each text.
_NATIVE_EMBEDDING_FIELDS = ("taskType", "title", "outputDimensionality")
_BLOCKED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                      "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION"})
# Gemini's finishReason → OpenAI's (shapes.finish_reason: any other reads "stop").
FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length", **dict.fromkeys(_BLOCKED, "content_filter")}
_VERSION_ROOT = re.compile(r"^v1[a-z0-9]*$")


def normalize_api_base(base: str) -> str:
    """`https://host` and `https://host/v1beta` (any `/v1*` root) → `https://host/v1beta/models`."""
    base = base.rstrip("/")
    path = urlsplit(base).path
    if not path:
        return f"{base}/v1beta/models"
    head, _, last = base.rpartition("/")
    if _VERSION_ROOT.match(last):
        return f"{head}/v1beta/models"
    return base


# -- pure translation: requests ---------------------------------------------------------------------------
def _parts(content: Any) -> list[dict[str, Any]]:
    """Our content → Gemini parts: text, image data URLs as inlineData, other parts as given."""
    if not isinstance(content, list):
        return [{"text": content if isinstance(content, str) else ""}]
    parts: list[dict[str, Any]] = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            parsed = parse_base64_data_url(url)
            if parsed is not None:
                parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
            else:
                parts.append({"fileData": {"fileUri": url}})
        else:
            parts.append(part)
    return parts


def _function_response(content: Any) -> dict[str, Any]:
    """Gemini wants an object: a JSON object passes, anything else is wrapped as {"result": ...}."""
    text = content_text(content)
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {"result": text}
    return parsed if isinstance(parsed, dict) else {"result": parsed}


def _contents(messages: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Our messages → (system_instruction, contents)."""
    system_parts: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for message in messages:
        role = message["role"]
        if role in ("system", "developer"):
            system_parts.append({"text": content_text(message.get("content"))})
        elif role == "user":
            contents.append({"role": "user", "parts": _parts(message.get("content"))})
        elif role == "assistant":
            calls = message.get("tool_calls") or []
            if not calls:
                contents.append({"role": "model", "parts": _parts(message.get("content"))})
                continue
            text = content_text(message.get("content"))
            parts: list[dict[str, Any]] = [{"text": text}] if text else []
            for call in calls:
                call_names[call["id"]] = call["function"]["name"]
                try:
                    args = json.loads(call["function"].get("arguments") or "{}")
                except json.JSONDecodeError:
                    raise InvalidParameter(f"The arguments of tool call {call['id']!r} are not valid JSON.") from None
                part: dict[str, Any] = {"functionCall": {"id": call["id"], "name": call["function"]["name"],
                                                         "args": args}}
                if call.get("thought_signature"):
                    part["thoughtSignature"] = call["thought_signature"]
                parts.append(part)
            contents.append({"role": "model", "parts": parts})
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if call_id not in call_names:
                raise InvalidParameter(
                    f"Invalid tool message: tool_call_id={call_id} does not match any tool call in a preceding "
                    "assistant message."
                )
            response = {"functionResponse": {"id": call_id, "name": call_names[call_id],
                                             "response": _function_response(message.get("content"))}}
            # One tool message per parallel call, but Gemini wants them all in one user turn.
            previous = contents[-1] if contents else None
            if previous and previous["role"] == "user" and all("functionResponse" in p for p in previous["parts"]):
                previous["parts"].append(response)
            else:
                contents.append({"role": "user", "parts": [response]})
    return ({"parts": system_parts} if system_parts else None), contents


def _function_declarations(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    declarations = []
    for tool in tools:
        if tool.get("type") != "function" or not tool.get("function"):
            raise InvalidParameter(
                f"Only function calling tool is supported, but received tool type {tool.get('type')}"
            )
        function = tool["function"]
        declarations.append(drop_none({"name": function["name"], "description": function.get("description"),
                                       "parametersJsonSchema": function.get("parameters")}))
    return declarations


def _tool_config(choice: Any) -> dict[str, Any] | None:
    if choice == "none":
        return {"functionCallingConfig": {"mode": "NONE"}}
    if choice == "required":
        return {"functionCallingConfig": {"mode": "ANY"}}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}}
    return None


def chat_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Our chat request → a GenerateContentRequest (MLflow 3.x rules, §2.5)."""
    reject_native_names(payload, GENERATION_CONFIG_NAMES)
    system, contents = _contents(payload["messages"])
    body: dict[str, Any] = {"contents": contents}
    if system is not None:
        body["system_instruction"] = system

    config: dict[str, Any] = dict(payload.get("generationConfig") or {})
    if "temperature" in payload:
        config["temperature"] = payload["temperature"]
    for ours, theirs in GENERATION_CONFIG_NAMES.items():
        if ours in payload:
            config[theirs] = payload[ours]
    if "maxOutputTokens" not in config and "max_completion_tokens" in payload:
        config["maxOutputTokens"] = payload["max_completion_tokens"]
    if "seed" in payload:
        config["seed"] = payload["seed"]
    response_format = payload.get("response_format") or {}
    if response_format.get("type") == "json_schema" and response_format.get("json_schema"):
        config["responseJsonSchema"] = response_format["json_schema"].get("schema")
        config["responseMimeType"] = "application/json"
    elif response_format.get("type") == "json_object":
        config["responseMimeType"] = "application/json"
    if config:
        body["generationConfig"] = config

    if payload.get("tools"):
        body["tools"] = [{"functionDeclarations": _function_declarations(payload["tools"])}]
        tool_config = _tool_config(payload.get("tool_choice"))
        if tool_config is not None:
            body["toolConfig"] = tool_config
    for name in _NATIVE_REQUEST_FIELDS:
        if name in payload and name not in body:
            body[name] = payload[name]
    return body


def completions_body(payload: dict[str, Any]) -> dict[str, Any]:
    """Completions are a chat with the prompt as the one user message."""
    chat_payload = {k: v for k, v in payload.items() if k != "prompt"}
    chat_payload["messages"] = [{"role": "user", "content": payload["prompt"]}]
    return chat_body(chat_payload)


def embeddings_request(payload: dict[str, Any], model: str | None) -> tuple[str, dict[str, Any]]:
    """Our embeddings request → (the method, its body): embedContent for one text, else batchEmbedContents."""
    texts = payload["input"]
    if isinstance(texts, str):
        texts = [texts]
    if not all(isinstance(text, str) for text in texts):
        raise InvalidParameter("Gemini embeddings take text input, not token ids.")
    extra = {name: payload[name] for name in _NATIVE_EMBEDDING_FIELDS if name in payload}
    if "dimensions" in payload and "outputDimensionality" not in extra:
        extra["outputDimensionality"] = payload["dimensions"]
    if len(texts) == 1:
        return "embedContent", {"content": {"parts": [{"text": texts[0]}]}, **extra}
    return "batchEmbedContents", {
        "requests": [{"model": f"models/{model}", "content": {"parts": [{"text": text}]}, **extra} for text in texts]
    }


# -- pure translation: responses --------------------------------------------------------------------------
def finish_reason(raw: str | None) -> str | None:
    """Gemini's finishReason in OpenAI's terms; reasons OpenAI has no word for (OTHER, MALFORMED_FUNCTION_CALL,
    ...) read "stop" (MLflow passes them on lower-cased)."""
    return shapes.finish_reason(raw, FINISH_REASONS)


def usage(metadata: Any, *, details: bool = True) -> dict[str, Any]:
    """usageMetadata → ours: completion = candidates + thoughts tokens; with `details`, the cached and
    thoughts counts as OpenAI's details. Gemini's other counts (per modality, tool-use prompts) are left out."""
    if not isinstance(metadata, dict):
        return shapes.usage()
    candidates = metadata.get("candidatesTokenCount")
    thoughts = metadata.get("thoughtsTokenCount")
    completion = None if candidates is None and thoughts is None else (candidates or 0) + (thoughts or 0)
    if not details:
        return shapes.usage(metadata.get("promptTokenCount"), completion, metadata.get("totalTokenCount"))
    cached = metadata.get("cachedContentTokenCount")
    return shapes.usage(
        metadata.get("promptTokenCount"), completion, metadata.get("totalTokenCount"),
        prompt_tokens_details={"cached_tokens": cached} if cached is not None else None,
        completion_tokens_details={"reasoning_tokens": thoughts} if thoughts is not None else None,
    )


def _candidate_parts(candidate: dict[str, Any]) -> list[dict[str, Any]]:
    return (candidate.get("content") or {}).get("parts") or []


def _text(parts: list[dict[str, Any]]) -> str:
    """The answer text: text parts joined, thought summaries left out."""
    return "".join(part["text"] for part in parts if isinstance(part.get("text"), str) and not part.get("thought"))


def _tool_calls(parts: list[dict[str, Any]], *, offset: int | None = None) -> list[dict[str, Any]]:
    """functionCall parts → tool calls (stream deltas carry an `index` from `offset`)."""
    calls: list[dict[str, Any]] = []
    for part in parts:
        function_call = part.get("functionCall")
        if not function_call:
            continue
        name = function_call.get("name")
        arguments = json.dumps(function_call.get("args") or {})
        call_id = function_call.get("id") or (
            "call_" + hashlib.md5(f"{name}/{arguments}".encode(), usedforsecurity=False).hexdigest()
        )
        call: dict[str, Any] = {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        if offset is not None:
            call = {"index": offset + len(calls), **call}
        signature = part.get("thoughtSignature") or function_call.get("thoughtSignature")
        if signature:
            call["thought_signature"] = signature
        calls.append(call)
    return calls


def _chat_finish(candidate: dict[str, Any], has_calls: bool, default: str | None) -> str | None:
    reason = finish_reason(candidate.get("finishReason")) or default
    return "tool_calls" if has_calls and reason == "stop" else reason


def parse_chat(body: Any, model: str | None, provider: str) -> dict[str, Any]:
    """A GenerateContentResponse → our chat response, one choice per candidate.

    A prompt blocked before any candidate gives one empty choice with finish_reason content_filter."""
    try:
        choices = []
        for index, candidate in enumerate(body.get("candidates") or []):
            parts = _candidate_parts(candidate)
            calls = _tool_calls(parts)
            message = shapes.message(_text(parts) or None, tool_calls=calls)
            choices.append(shapes.chat_choice(index, message, _chat_finish(candidate, bool(calls), "stop")))
        if not choices and (body.get("promptFeedback") or {}).get("blockReason"):
            choices.append(shapes.chat_choice(0, shapes.message(None), "content_filter"))
        created = shapes.now()
        return shapes.chat_response(id=f"gemini-chat-{created}", model=model, provider=provider, created=created,
                                    choices=choices, usage=usage(body.get("usageMetadata")))
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream chat response is missing {exc}.") from None


def parse_completions(body: Any, model: str | None) -> dict[str, Any]:
    try:
        choices = [
            shapes.text_choice(index, _text(_candidate_parts(candidate)),
                               finish_reason(candidate.get("finishReason")) or "stop")
            for index, candidate in enumerate(body.get("candidates") or [])
        ]
        return shapes.completions_response(id=None, model=model, choices=choices,
                                           usage=usage(body.get("usageMetadata"), details=False))
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream completions response is missing {exc}.") from None


def parse_embeddings(body: Any, model: str | None) -> dict[str, Any]:
    try:
        items = body.get("embeddings") or [body["embedding"]]
        return shapes.embeddings_response(vectors=[item.get("values") or [] for item in items], model=model,
                                          usage=None)
    except (KeyError, TypeError, AttributeError) as exc:
        raise UpstreamBadResponse(f"The upstream embeddings response is missing {exc}.") from None


def _raise_if_error(data: dict[str, Any]) -> None:
    """Gemini reports a failure inside an open stream as an `error` object."""
    error = data.get("error")
    if isinstance(error, dict):
        status = error.get("code") if isinstance(error.get("code"), int) and error["code"] >= 400 else 502
        raise UpstreamError(error.get("message") or "The upstream stream reported an error.", status=status)


def _is_final(data: dict[str, Any]) -> bool:
    return any(candidate.get("finishReason") for candidate in data.get("candidates") or [])


def chat_chunks(events: Iterable[dict[str, Any]], model: str | None, provider: str) -> Iterator[dict[str, Any]]:
    """Gemini's SSE responses → our chat chunks. Each functionCall arrives whole; calls are numbered
    per candidate across the stream. Usage rides on the chunk that carries the finish reason."""
    created = shapes.now()
    stream_id = f"gemini-chat-stream-{created}"
    calls_seen: dict[int, int] = {}
    for data in events:
        _raise_if_error(data)
        choices = []
        for position, candidate in enumerate(data.get("candidates") or []):
            index = candidate.get("index", position)
            parts = _candidate_parts(candidate)
            calls = _tool_calls(parts, offset=calls_seen.get(index, 0))
            calls_seen[index] = calls_seen.get(index, 0) + len(calls)
            text = _text(parts)
            delta = shapes.delta(role="assistant", content=text or (None if calls else ""), tool_calls=calls or None)
            choices.append(shapes.chunk_choice(index, delta, _chat_finish(candidate, calls_seen[index] > 0, None)))
        chunk_usage = usage(data["usageMetadata"]) if data.get("usageMetadata") and _is_final(data) else None
        if choices or chunk_usage:
            yield shapes.chat_chunk(id=stream_id, model=model, provider=provider, created=created, choices=choices,
                                    usage=chunk_usage)


def completions_chunks(events: Iterable[dict[str, Any]], model: str | None) -> Iterator[dict[str, Any]]:
    created = shapes.now()
    stream_id = f"gemini-completions-stream-{created}"
    for data in events:
        _raise_if_error(data)
        choices = [
            shapes.text_choice(candidate.get("index", position), _text(_candidate_parts(candidate)),
                               finish_reason(candidate.get("finishReason")))
            for position, candidate in enumerate(data.get("candidates") or [])
        ]
        chunk_usage = (usage(data["usageMetadata"], details=False)
                       if data.get("usageMetadata") and _is_final(data) else None)
        if choices or chunk_usage:
            yield shapes.completions_chunk(id=stream_id, model=model, created=created, choices=choices,
                                           usage=chunk_usage)


def error_message(body: Any) -> Any:
    """Gemini's `{"error": {"code", "message", "status"}}`, sometimes wrapped in a one-item list."""
    if isinstance(body, list) and len(body) == 1:
        body = body[0]
    return default_error_message(body)


# -- the provider ------------------------------------------------------------------------------------------
class GeminiConfig(ProviderConfig):
    fields = (
        ConfigField("gemini_api_key", required=True, kind="secret", help="API key ($ENV, file path or literal)"),
        ConfigField("gemini_api_base", kind="url", default=DEFAULT_API_BASE,
                    help="Defaults to https://generativelanguage.googleapis.com/v1beta/models"),
    )


class GeminiProvider(BaseProvider):
    name = "gemini"
    display_name = "Gemini"
    config_class = GeminiConfig
    endpoint_types = frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    streaming_types = frozenset({CHAT, COMPLETIONS})
    supports_tools = True

    def error_message(self, body: Any) -> Any:
        return error_message(body)

    def _request(self, method: str, body: dict[str, Any], *, stream: bool = False) -> UpstreamRequest:
        config = self.config
        url = f"{normalize_api_base(str(config['gemini_api_base']))}/{self.model_name}:{method}"
        return UpstreamRequest(url=f"{url}?alt=sse" if stream else url,
                               headers={"x-goog-api-key": config["gemini_api_key"]}, json=body)

    def chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self._request("generateContent", chat_body(payload)))
        return parse_chat(body, self.model_name, self.provider_name)

    def chat_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self._request("streamGenerateContent", chat_body(payload), stream=True))
        return chat_chunks(sse_json(events), self.model_name, self.provider_name)

    def completions(self, payload: dict[str, Any]) -> dict[str, Any]:
        body = self.post_json(self._request("generateContent", completions_body(payload)))
        return parse_completions(body, self.model_name)

    def completions_stream(self, payload: dict[str, Any]) -> Iterator[dict[str, Any]]:
        events = self.post_sse(self._request("streamGenerateContent", completions_body(payload), stream=True))
        return completions_chunks(sse_json(events), self.model_name)

    def embeddings(self, payload: dict[str, Any]) -> dict[str, Any]:
        method, body = embeddings_request(payload, self.model_name)
        return parse_embeddings(self.post_json(self._request(method, body)), self.model_name)
