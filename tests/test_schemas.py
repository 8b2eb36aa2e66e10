"""The wire schemas: what passes, what is forwarded, what is refused."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from pydantic import ValidationError

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


# -- the plain-chat shortcut: the same payloads as pydantic, or pydantic decides --------------------------
_VALUES: dict[str, list[Any]] = {
    "temperature": [0.0, 0.7, 2.0, 1, 2.5, -0.1, "0.5", True, None],
    "n": [1, 3, 0, 1.0, True, None, "2"],
    "stop": [["x"], [], None, "x"],
    "max_tokens": [64, 1, 0, -5, 64.0, False, None, "64", 10**20],
    "max_completion_tokens": [16, 0, None],
    "stream": [True, False, None, 1, "true"],
    "stream_options": [{"include_usage": True}, {}, {"a": None}, None, [], "yes"],
    "model": ["gpt-4o-mini", None, 5, ""],
    "top_p": [0.5, 1.0, 1.5, 1, None],
    "presence_penalty": [-2.0, 0.0, 2.5, None],
    "frequency_penalty": [1.5, -3.0, None],
    "top_k": [1, 0, None, 2.0],
    "response_format": [{"type": "text"}, None],
    "tools": [None, []],
    "tool_choice": [None, "auto"],
    "user": ["someone", None, 3, 1.5, True, {"a": 1}, ["x"]],
    "seed": [7, None],
}
_MESSAGES: list[Any] = [
    [{"role": "user", "content": "hi"}],
    [{"content": "hi", "role": "user"}, {"role": "assistant", "content": ""}],
    [{"role": "user", "content": None}],
    [{"role": "user", "content": "hi", "name": "x"}],
    [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    [{"role": 1, "content": "hi"}],
    [{"role": "user"}],
    [{"role": "user", "name": "x"}],
    [],
    None,
    "hi",
    ["hi"],
]


def _pydantic_payload(body: dict[str, Any]) -> dict[str, Any] | None:
    from endpoints_app.schemas import ChatRequest

    try:
        return ChatRequest.model_validate(body).model_dump(exclude_none=True, by_alias=True)
    except ValidationError:
        return None


def test_the_plain_chat_shortcut_gives_pydantics_payload_or_leaves_the_body_to_it() -> None:
    from endpoints_app.schemas import _plain_chat

    rng = random.Random(1234)
    taken = refused = 0
    for _ in range(20_000):
        body: dict[str, Any] = {}
        names = rng.sample(sorted(_VALUES), rng.randint(0, 6))
        position = rng.randint(0, len(names))
        for index, name in enumerate(names):
            if index == position:
                body["messages"] = rng.choice(_MESSAGES)
            body[name] = rng.choice(_VALUES[name])
        if position == len(names) and rng.random() < 0.9:
            body["messages"] = rng.choice(_MESSAGES)
        expected = _pydantic_payload(body)
        shortcut = _plain_chat(body)
        if shortcut is not None:
            taken += 1
            assert expected is not None, body
            assert json.dumps(shortcut) == json.dumps(expected), body  # same keys, order, types and values
        refused += expected is None
    assert taken > 800 and refused > 5000  # both roads were exercised


def test_the_shortcut_has_a_check_for_each_of_chatrequests_fields() -> None:
    from endpoints_app.schemas import _PLAIN_CHAT_CHECKS, ChatRequest

    assert set(_PLAIN_CHAT_CHECKS) == set(ChatRequest.model_fields)  # a new field needs its check (or None)


def test_the_shortcut_copies_what_it_keeps() -> None:
    from endpoints_app.schemas import _plain_chat

    body = {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}
    payload = _plain_chat(body)
    assert payload is not None
    payload["messages"][0]["content"] = "changed"
    payload["stream_options"]["include_usage"] = False
    assert body == {"messages": [{"role": "user", "content": "hi"}], "stream_options": {"include_usage": True}}
