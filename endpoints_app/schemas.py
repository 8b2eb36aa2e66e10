"""The wire schemas: chat, completions and embeddings requests, defined once.

They are pydantic models, as MLflow's are, so validation errors have exactly the shape MLflow
(FastAPI) clients know (422 `{"detail": [{"type", "loc", "msg", "input", "ctx"}]}`), and the OpenAPI
document renders them (endpoints_app.openapi). Unknown request fields are kept and forwarded.

The responses are declared once too, in providers.wire (`RESPONSE_MODELS`, `CHUNK_MODELS`): what
providers build with providers.shapes and the OpenAPI document serves.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from providers.errors import InvalidParameter, RequestValidationError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class JsonSchemaFormat(_Open):
    name: str
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = True


class ResponseFormat(_Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class ImageUrl(_Open):
    url: str
    detail: Literal["auto", "low", "high"] | None = None


class InputAudio(_Open):
    data: str
    format: Literal["wav", "mp3"]


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: InputAudio


class SummaryText(_Open):
    type: Literal["summary_text"]
    text: str


class ReasoningPart(_Open):
    type: Literal["reasoning"]
    summary: list[SummaryText]


ContentPart = TextPart | ImagePart | AudioPart | ReasoningPart


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Open):
    role: str
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None
    tool_call_id: str | None = None


class ParamProperty(_Open):
    type: str | list[str] | None = None
    description: str | None = None
    enum: list[Any] | None = None
    items: dict[str, Any] | None = None
    properties: dict[str, Any] | None = None
    required: list[str] | None = None


class FunctionParams(_Open):
    type: Literal["object"] = "object"
    properties: dict[str, ParamProperty] = Field(default_factory=dict)
    required: list[str] | None = None
    additionalProperties: bool | None = None


class FunctionDef(_Open):
    name: str
    description: str | None = None
    parameters: FunctionParams | None = None
    strict: bool | None = None


class UCFunction(_Open):
    name: str


class Tool(_Open):
    type: Literal["function", "uc_function"]
    function: FunctionDef | None = None
    uc_function: UCFunction | None = None


class NamedToolFunction(_Open):
    name: str


class NamedToolChoice(_Open):
    type: Literal["function"]
    function: NamedToolFunction


class _CommonRequest(_Open):
    temperature: float | None = Field(default=None, ge=0, le=2)
    n: int = Field(default=1, ge=1)
    stop: list[str] | None = Field(default=None, min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    model: str | None = None
    top_p: float | None = Field(default=None, ge=0, le=1)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    top_k: int | None = Field(default=None, ge=1)
    response_format: ResponseFormat | None = None


class ChatRequest(_CommonRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None


class CompletionsRequest(_CommonRequest):
    prompt: str


class EmbeddingsRequest(_Open):
    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None


REQUEST_MODELS: dict[str, type[BaseModel]] = {
    CHAT: ChatRequest,
    COMPLETIONS: CompletionsRequest,
    EMBEDDINGS: EmbeddingsRequest,
}


def validate_request(endpoint_type: str, body: Any, *, allow_model: bool) -> dict[str, Any]:
    """Validate a request body for `endpoint_type`; return the payload to hand to the provider.

    Raises RequestValidationError (422, FastAPI's detail list) or InvalidParameter for a `model`
    on the MLflow routes (the endpoint already defines it).
    """
    if not isinstance(body, dict):
        raise RequestValidationError(
            [
                {
                    "type": "model_attributes_type",
                    "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": body,
                }
            ]
        )
    payload = _plain_chat(body) if endpoint_type == CHAT else None
    if payload is None:
        try:
            request = REQUEST_MODELS[endpoint_type].model_validate(body)
        except ValidationError as exc:
            raise RequestValidationError(_fastapi_errors(exc)) from None
        payload = request.model_dump(exclude_none=True, by_alias=True)
    model = payload.pop("model", None)
    if model is not None and not allow_model:
        raise InvalidParameter(
            "The parameter 'model' is not permitted to be passed. The route being queried already defines a "
            "model instance."
        )
    return payload


def _is_float_in(low: float, high: float) -> Any:
    return lambda value: type(value) is float and low <= value <= high


def _is_int_from(low: int) -> Any:
    return lambda value: type(value) is int and value >= low


# For each of ChatRequest's fields, the test a value passes as it is: no conversion by pydantic (an int for a
# float field becomes a float there), no error. None means: not plain. (tests/test_schemas.py checks that these
# are ChatRequest's fields, all of them.)
_PLAIN_CHAT_CHECKS: dict[str, Any] = {
    "temperature": _is_float_in(0, 2), "n": _is_int_from(1), "stop": None, "max_tokens": _is_int_from(1),
    "max_completion_tokens": _is_int_from(1), "stream": lambda value: type(value) is bool,
    "stream_options": lambda value: type(value) is dict and all(type(k) is str for k in value),
    "model": lambda value: type(value) is str, "top_p": _is_float_in(0, 1),
    "presence_penalty": _is_float_in(-2, 2), "frequency_penalty": _is_float_in(-2, 2), "top_k": _is_int_from(1),
    "response_format": None, "messages": None, "tools": None, "tool_choice": None,
}
_CHAT_FIELDS = tuple(ChatRequest.model_fields)  # in model_dump's order
_REQUIRED_CHAT_FIELDS = frozenset(("n", "messages"))  # no None: pydantic refuses it
_DEFAULT_N = ChatRequest.model_fields["n"].default
_SCALARS = (str, int, float, bool)


def _plain_chat(body: dict[str, Any]) -> dict[str, Any] | None:
    """What ChatRequest.model_validate(body).model_dump(exclude_none=True, by_alias=True) gives, for the
    plain requests nearly every client sends (messages of a role and a text, scalar options of the exact
    types), at a fraction of its cost; None for anything else, which goes through pydantic (errors
    included). tests/test_schemas.py compares the two on thousands of bodies."""
    messages = body.get("messages")
    if type(messages) is not list or not messages:
        return None
    plain_messages = []
    for message in messages:
        if type(message) is not dict or len(message) != 2:
            return None
        role, content = message.get("role"), message.get("content")
        if type(role) is not str or type(content) is not str:
            return None
        plain_messages.append({"role": role, "content": content})
    extras = {}
    for name, value in body.items():
        if name in _PLAIN_CHAT_CHECKS:
            if value is None and name not in _REQUIRED_CHAT_FIELDS:
                continue
            check = _PLAIN_CHAT_CHECKS[name]
            if name != "messages" and (check is None or not check(value)):
                return None
        elif value is not None:
            if type(value) not in _SCALARS:
                return None
            extras[name] = value
    payload: dict[str, Any] = {}
    for name in _CHAT_FIELDS:
        if name == "n":
            payload["n"] = body.get("n", _DEFAULT_N)
        elif name == "messages":
            payload["messages"] = plain_messages
        else:
            value = body.get(name)
            if value is not None:
                payload[name] = dict(value) if name == "stream_options" else value
    payload.update(extras)
    return payload


def _fastapi_errors(exc: ValidationError) -> list[dict[str, Any]]:
    errors = []
    for error in exc.errors(include_url=False):
        item: dict[str, Any] = {
            "type": error["type"],
            "loc": ["body", *error["loc"]],
            "msg": error["msg"],
            "input": error.get("input"),
        }
        if error.get("ctx"):
            item["ctx"] = {
                k: v if isinstance(v, (int, float, str, bool, type(None))) else str(v) for k, v in error["ctx"].items()
            }
        errors.append(item)
    return errors
