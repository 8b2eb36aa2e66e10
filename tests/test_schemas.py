"""The wire schemas: what passes, what is forwarded, what is refused."""

from __future__ import annotations

from typing import Any

import pytest

from endpoints_app.schemas import validate_request
from providers.errors import InvalidParameter, RequestValidationError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS

HI = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("endpoint_type", "body", "expected"),
    [
        (CHAT, {"messages": [HI]}, {"messages": [HI], "n": 1}),
        (CHAT, {"messages": [HI], "user": "u1", "seed": 7}, {"messages": [HI], "n": 1, "user": "u1", "seed": 7}),
        (CHAT, {"messages": [HI], "temperature": None}, {"messages": [HI], "n": 1}),
        (
            CHAT,
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ]
            },
            {
                "messages": [
                    {
                        "role": "assistant",
                        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
                    }
                ],
                "n": 1,
            },
        ),
        (
            CHAT,
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        ],
                    }
                ]
            },
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "a"},
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                        ],
                    }
                ],
                "n": 1,
            },
        ),
        (
            CHAT,
            {
                "messages": [HI],
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
                        },
                    }
                ],
                "tool_choice": "required",
            },
            {
                "messages": [HI],
                "n": 1,
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {"type": "object", "properties": {"x": {"type": "string"}}},
                        },
                    }
                ],
                "tool_choice": "required",
            },
        ),
        (
            CHAT,
            {
                "messages": [HI],
                "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": {"type": "object"}}},
            },
            {
                "messages": [HI],
                "n": 1,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
                },
            },
        ),
        (
            COMPLETIONS,
            {"prompt": "p", "n": 2, "stop": ["\n"], "max_tokens": 5},
            {"prompt": "p", "n": 2, "stop": ["\n"], "max_tokens": 5},
        ),
        (EMBEDDINGS, {"input": "x"}, {"input": "x"}),
        (
            EMBEDDINGS,
            {"input": [[1, 2], [3]], "dimensions": 256, "stream": True},
            {"input": [[1, 2], [3]], "dimensions": 256, "stream": True},
        ),
    ],
)
def test_valid_bodies_become_provider_payloads(
    endpoint_type: str, body: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert validate_request(endpoint_type, body, allow_model=False) == expected


@pytest.mark.parametrize(
    ("endpoint_type", "body", "loc"),
    [
        (CHAT, {"messages": [HI], "top_p": 1.5}, ["body", "top_p"]),
        (CHAT, {"messages": [HI], "presence_penalty": -3}, ["body", "presence_penalty"]),
        (CHAT, {"messages": [HI], "top_k": 0}, ["body", "top_k"]),
        (CHAT, {"messages": [HI], "response_format": {"type": "yaml"}}, ["body", "response_format", "type"]),
        (CHAT, {"messages": "hi"}, ["body", "messages"]),
        (CHAT, {"messages": [{"role": "user", "content": [{"type": "video"}]}]}, ["body", "messages", 0, "content"]),
        (COMPLETIONS, {"prompt": 5}, ["body", "prompt"]),
        (EMBEDDINGS, {"input": {"a": 1}}, ["body", "input"]),
    ],
)
def test_invalid_bodies_name_the_field(endpoint_type: str, body: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(RequestValidationError) as raised:
        validate_request(endpoint_type, body, allow_model=False)
    assert any(error["loc"][: len(loc)] == loc for error in raised.value.detail), raised.value.detail


def test_a_non_object_body_is_refused() -> None:
    with pytest.raises(RequestValidationError) as raised:
        validate_request(CHAT, ["not", "an", "object"], allow_model=False)
    assert raised.value.detail[0]["type"] == "model_attributes_type"


def test_model_is_dropped_on_v1_and_refused_on_mlflow_routes() -> None:
    body = {"messages": [HI], "model": "chat"}
    assert "model" not in validate_request(CHAT, body, allow_model=True)
    with pytest.raises(InvalidParameter, match="not permitted"):
        validate_request(CHAT, body, allow_model=False)
