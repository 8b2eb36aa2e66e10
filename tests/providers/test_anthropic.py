"""Anthropic: pure translation tables, then the full path against a local server speaking the
Messages API and the legacy Text Completions API (view → adapter → HTTP → parse)."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import anthropic as an
from providers.errors import InvalidParameter, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db

MODEL = "claude-sonnet-4-20250514"
USER_HI = {"role": "user", "content": "Hi"}


def chat_body(request: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    return an.chat_body({"n": 1, **request}, MODEL, **kwargs)


# -- pure translation: chat requests ----------------------------------------------------------------------
def test_it_maps_the_system_prompt_and_the_default_max_tokens() -> None:
    body = chat_body({"messages": [{"role": "system", "content": "Be brief."}, USER_HI,
                                   {"role": "system", "content": "Answer in French."}]})
    assert body == {"model": MODEL, "system": "Be brief.\nAnswer in French.", "messages": [USER_HI],
                    "max_tokens": 8192}


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"max_tokens": 100}, {"max_tokens": 100}),
        ({"max_completion_tokens": 50}, {"max_tokens": 50}),
        ({"max_tokens": 70, "max_completion_tokens": 50}, {"max_tokens": 70}),
        ({"stop": ["END"]}, {"max_tokens": 8192, "stop_sequences": ["END"]}),
        ({"temperature": 1.5}, {"max_tokens": 8192, "temperature": 0.75}),
        ({"top_p": 0.9, "top_k": 5}, {"max_tokens": 8192, "top_p": 0.9, "top_k": 5}),
        ({"metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024}},
         {"max_tokens": 8192, "metadata": {"user_id": "u1"}, "thinking": {"type": "enabled", "budget_tokens": 1024}}),
        ({"stream_options": {"include_usage": True}, "presence_penalty": 1, "seed": 3}, {"max_tokens": 8192}),
    ],
)
def test_it_maps_sampling_fields_and_forwards_the_fields_anthropic_accepts(
        request_fields: dict[str, Any], expected: dict[str, Any]) -> None:
    body = chat_body({"messages": [USER_HI], **request_fields})
    assert body == {"model": MODEL, "messages": [USER_HI], **expected}


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"n": 2}, "'n' must be '1' for the Anthropic provider. Received value: '2'."),
        ({"temperature": 0.5, "top_p": 0.5}, "Cannot set both 'temperature' and 'top_p' parameters."),
        ({"max_tokens": 1_000_001}, "Invalid value for max_tokens: cannot exceed 1000000."),
        ({"tools": [{"type": "uc_function", "uc_function": {"name": "cat.schema.fn"}}]},
         "Only function calling tool is supported, but received tool type uc_function"),
    ],
)
def test_it_refuses_what_anthropic_cannot_do_with_422(request_fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        chat_body({"messages": [USER_HI], **request_fields})
    assert caught.value.status == 422
    assert caught.value.detail == message


def test_it_turns_image_data_urls_into_image_blocks() -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
               {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}]
    body = chat_body({"messages": [{"role": "user", "content": content}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_it_translates_tools_tool_calls_and_tool_results() -> None:
    messages = [
        USER_HI,
        {"role": "assistant", "content": "Let me check.",
         "tool_calls": [{"id": "toolu_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "function", "content": "dropped"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather by city",
                                               "parameters": {"type": "object",
                                                              "properties": {"city": {"type": "string"}}}}}]
    body = chat_body({"messages": messages, "tools": tools, "tool_choice": "required"})
    assert body["messages"] == [
        USER_HI,
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}]},
    ]
    assert body["tools"] == [{"name": "get_weather", "description": "Weather by city",
                              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    assert body["tool_choice"] == {"type": "any"}


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("none", None, {"type": "none"}),
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ({"type": "function", "function": {"name": "get_weather"}}, None, {"type": "tool", "name": "get_weather"}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_it_maps_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    request: dict[str, Any] = {"messages": [USER_HI]}
    if tool_choice is not None:
        request["tool_choice"] = tool_choice
    if parallel is not None:
        request["parallel_tool_calls"] = parallel
    body = chat_body(request)
    assert body["tool_choice"] == expected
    assert "parallel_tool_calls" not in body


def test_it_maps_response_format_to_output_config_or_a_json_instruction() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "string"}}}}}
    body = chat_body({"messages": [USER_HI], "response_format": {"type": "json_schema",
                                                                 "json_schema": {"name": "x", "schema": schema}}})
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {
        "type": "object", "additionalProperties": False,
        "properties": {"a": {"type": "object", "additionalProperties": False,
                             "properties": {"b": {"type": "string"}}}}}}}
    assert "additionalProperties" not in schema  # the client's schema is not modified
    free_form = {"type": "object", "additionalProperties": {"type": "string"}}
    body = chat_body({"messages": [USER_HI], "response_format": {"type": "json_schema",
                                                                 "json_schema": {"name": "x", "schema": free_form}}})
    assert "output_config" not in body
    body = chat_body({"messages": [{"role": "system", "content": "Be brief."}, USER_HI],
                      "response_format": {"type": "json_object"}})
    assert body["system"] == f"Be brief.\n{an.JSON_OBJECT_INSTRUCTION}"


# -- pure translation: completions requests ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("Hi", "\n\nHuman: Hi\n\nAssistant:"),
        ("Human: Hi", "\n\nHuman: Hi\n\nAssistant:"),
        ("\n\nHuman: Hi\n\nAssistant:", "\n\nHuman: Hi\n\nAssistant:"),
    ],
)
def test_it_frames_the_legacy_prompt(prompt: str, expected: str) -> None:
    assert an.human_prompt(prompt) == expected


def test_it_builds_the_legacy_completions_body() -> None:
    body = an.completions_body({"prompt": "Hi", "n": 1, "temperature": 1.0, "stop": ["x"], "top_k": 3}, "claude-2.1")
    assert body == {"model": "claude-2.1", "prompt": "\n\nHuman: Hi\n\nAssistant:", "max_tokens_to_sample": 8192,
                    "temperature": 0.5, "stop_sequences": ["x"], "top_k": 3}


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"top_p": 0.3}, "Cannot set both 'temperature' and 'top_p' parameters. Please use only the temperature "
                         "parameter for your query."),
        ({"n": 3}, "'n' must be '1' for the Anthropic provider. Received value: '3'."),
        ({"max_tokens": 2_000_000}, "Invalid value for max_tokens: cannot exceed 1000000."),
    ],
)
def test_it_refuses_legacy_completions_rule_violations(request_fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(")):
        an.completions_body({"prompt": "Hi", **request_fields}, "claude-2.1")


# -- pure translation: responses --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [("end_turn", "stop"), ("stop_sequence", "stop"), ("pause_turn", "stop"), (None, "stop"),
     ("max_tokens", "length"), ("model_context_window_exceeded", "length"), ("tool_use", "tool_calls"),
     ("refusal", "content_filter")],
)
def test_it_maps_stop_reasons(stop_reason: str | None, expected: str) -> None:
    assert an.finish_reason(stop_reason) == expected


@pytest.mark.parametrize(
    ("raw_usage", "expected"),
    [
        ({"input_tokens": 10, "output_tokens": 5},
         {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
        ({"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 7},
         {"prompt_tokens": 117, "completion_tokens": 5, "total_tokens": 122,
          "prompt_tokens_details": {"cached_tokens": 100}, "cache_creation_input_tokens": 7}),
        ({"input_tokens": 10, "output_tokens": 5, "service_tier": "standard",
          "server_tool_use": {"web_search_requests": 1},
          "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0}},
         {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}),
        (None, {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}),
    ],
)
def test_it_counts_cache_tokens_into_the_prompt(raw_usage: Any, expected: dict[str, Any]) -> None:
    assert an.usage(raw_usage) == expected


def test_it_maps_a_messages_response() -> None:
    out = an.parse_chat(payload("anthropic", "chat_response.json"), "anthropic")
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "msg_01XFDUDYJgAACzvnptvVoYEL", "object": "chat.completion", "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                                             "tool_calls": None, "refusal": None}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
                  "prompt_tokens_details": {"cached_tokens": 0}, "cache_creation_input_tokens": 0},
        "provider": "anthropic",
    }


def test_it_maps_tool_use_blocks_to_tool_calls_and_leaves_thinking_out() -> None:
    out = an.parse_chat(payload("anthropic", "chat_tool_use_response.json"), "anthropic")
    choice = out["choices"][0]
    assert choice["message"]["content"] == "I'll check the weather in Paris."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_01A09q90qw90lq917835lq9", "type": "function",
                                                "function": {"name": "get_weather",
                                                             "arguments": '{"city": "Paris", "unit": "celsius"}'}}]
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"]["prompt_tokens"] == 2140
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 2000}


def test_it_maps_a_legacy_completion() -> None:
    out = an.parse_completions(payload("anthropic", "complete_response.json"))
    assert out["id"] is None
    assert out["model"] == "claude-2.1"
    assert out["choices"] == [{"index": 0, "text": " Hello! My name is Claude.", "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


# -- pure translation: streams ----------------------------------------------------------------------------
def _deltas(chunks: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(c["choices"][0]["delta"]["content"], c["choices"][0]["delta"]["tool_calls"],
             c["choices"][0]["finish_reason"]) for c in chunks]


def test_it_turns_stream_events_into_text_chunks_with_usage_last() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": MODEL,
                                              "usage": {"input_tokens": 5, "cache_read_input_tokens": 2}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "max_tokens"}, "usage": {"output_tokens": 3}},
        {"type": "message_stop"},
    ]
    chunks = list(an.chat_chunks(events, "anthropic"))
    assert _deltas(chunks) == [("", None, None), ("Hi", None, None), (None, None, "length")]
    assert [c["id"] for c in chunks] == ["msg_1"] * 3
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["usage"] for c in chunks[:2]] == [None, None]
    assert chunks[-1]["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10,
                                   "prompt_tokens_details": {"cached_tokens": 2}}


def test_it_numbers_tool_calls_among_tool_blocks_in_the_stream() -> None:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_2", "model": MODEL, "usage": {"input_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "a"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{}"}},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "t2", "name": "b"}},
        {"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"x\""}},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
    ]
    chunks = list(an.chat_chunks(events, "anthropic"))
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks[1:5]]
    assert calls == [
        [{"index": 0, "id": "t1", "type": "function", "function": {"name": "a", "arguments": ""}}],
        [{"index": 0, "id": None, "type": None, "function": {"name": None, "arguments": "{}"}}],
        [{"index": 1, "id": "t2", "type": "function", "function": {"name": "b", "arguments": ""}}],
        [{"index": 1, "id": None, "type": None, "function": {"name": None, "arguments": "{\"x\""}}],
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_an_error_event_raises_with_the_mapped_status() -> None:
    events = [{"type": "message_start", "message": {"id": "m", "model": MODEL, "usage": {}}},
              {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}]
    with pytest.raises(UpstreamError) as caught:
        list(an.chat_chunks(events, "anthropic"))
    assert (caught.value.status, caught.value.detail) == (529, "Overloaded")
    assert an.stream_error({"type": "error", "error": {"type": "new_kind", "message": "?"}}).status == 502


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def anthropic_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_ANTHROPIC_KEY", "sk-ant-test")
    config = {"anthropic_api_key": "$TEST_ANTHROPIC_KEY", "anthropic_api_base": httpserver.url_for("/v1")}
    make_endpoint("claude", CHAT, "anthropic", MODEL, config)
    make_endpoint("claude-complete", COMPLETIONS, "anthropic", "claude-2.1", config)
    return httpserver


HEADERS = {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01", "Content-Type": "application/json"}


def test_chat_sends_the_messages_request_and_returns_the_mlflow_shape(anthropic_endpoints: HTTPServer,
                                                                      client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request(
        "/v1/messages", method="POST", headers=HEADERS,
        json={"model": MODEL, "system": "Be brief.", "messages": [USER_HI], "max_tokens": 8192, "temperature": 0.1},
    ).respond_with_json(payload("anthropic", "chat_response.json"))
    response = post_json(client, "/endpoints/claude/invocations",
                         {"messages": [{"role": "system", "content": "Be brief."}, USER_HI], "temperature": 0.2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello! How can I help you today?"
    assert body["model"] == MODEL
    assert body["provider"] == "anthropic"
    assert body["usage"]["total_tokens"] == 21
    anthropic_endpoints.check_assertions()


def test_chat_with_tools_round_trips_tool_calls(anthropic_endpoints: HTTPServer, client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    anthropic_endpoints.expect_oneshot_request(
        "/v1/messages", method="POST",
        json={"model": MODEL, "messages": [USER_HI], "max_tokens": 8192,
              "tools": [{"name": "get_weather", "input_schema": {
                  "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
              "tool_choice": {"type": "tool", "name": "get_weather"}},
    ).respond_with_json(payload("anthropic", "chat_tool_use_response.json"))
    response = post_json(client, "/endpoints/claude/invocations", {
        "messages": [USER_HI], "tools": tools,
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    anthropic_endpoints.check_assertions()


def test_chat_streaming_turns_the_event_stream_into_chunks(anthropic_endpoints: HTTPServer, client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request(
        "/v1/messages", method="POST", headers=HEADERS,
        json={"model": MODEL, "messages": [USER_HI], "max_tokens": 8192, "stream": True},
    ).respond_with_data(raw("anthropic", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/claude/invocations", {"messages": [USER_HI], "stream": True})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["", "Hel", "lo!", None]
    assert {c["id"] for c in chunks} == {"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["usage"] == {"prompt_tokens": 35, "completion_tokens": 15, "total_tokens": 50,
                                   "prompt_tokens_details": {"cached_tokens": 10}, "cache_creation_input_tokens": 0}
    anthropic_endpoints.check_assertions()


def test_chat_streaming_passes_tool_use_deltas(anthropic_endpoints: HTTPServer, client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request("/v1/messages", method="POST").respond_with_data(
        raw("anthropic", "chat_tool_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/claude/invocations", {"messages": [USER_HI], "stream": True})
    chunks = sse_events(response)[:-1]
    calls = [c["choices"][0]["delta"]["tool_calls"] for c in chunks if c["choices"][0]["delta"]["tool_calls"]]
    assert calls[0] == [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]
    assert "".join(c[0]["function"]["arguments"] for c in calls) == '{"city": "Paris"}'
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["usage"]["completion_tokens"] == 89


def test_an_error_event_mid_stream_becomes_a_final_error_event(anthropic_endpoints: HTTPServer,
                                                               client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request("/v1/messages", method="POST").respond_with_data(
        raw("anthropic", "chat_stream_error.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/claude/invocations", {"messages": [USER_HI], "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["", "Par"]
    assert events[-1]["error"]["message"] == "Overloaded"
    assert events[-1]["error"]["status"] == 529


def test_legacy_completions_go_to_complete(anthropic_endpoints: HTTPServer, client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request(
        "/v1/complete", method="POST", headers=HEADERS,
        json={"model": "claude-2.1", "prompt": "\n\nHuman: Say hi\n\nAssistant:", "max_tokens_to_sample": 20},
    ).respond_with_json(payload("anthropic", "complete_response.json"))
    response = post_json(client, "/endpoints/claude-complete/invocations", {"prompt": "Say hi", "max_tokens": 20})
    assert response.status_code == 200, response.content
    assert response.json()["choices"] == [{"index": 0, "text": " Hello! My name is Claude.", "finish_reason": "stop"}]
    anthropic_endpoints.check_assertions()


def test_completions_streaming_is_refused_without_calling_anthropic(anthropic_endpoints: HTTPServer,
                                                                    client: Any) -> None:
    response = post_json(client, "/endpoints/claude-complete/invocations", {"prompt": "Say hi", "stream": True})
    assert response.status_code == 501
    assert response.json() == {"detail": "The completions streaming route is not implemented for Anthropic models."}
    assert anthropic_endpoints.log == []


def test_a_rule_violation_is_a_422_with_the_value_filled_in(anthropic_endpoints: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/claude/invocations", {"messages": [USER_HI], "n": 2})
    assert response.status_code == 422
    assert response.json() == {"detail": "'n' must be '1' for the Anthropic provider. Received value: '2'."}


def test_an_upstream_error_passes_status_and_message(anthropic_endpoints: HTTPServer, client: Any) -> None:
    anthropic_endpoints.expect_request("/v1/messages", method="POST").respond_with_json(
        payload("anthropic", "error_not_found.json"), status=404)
    response = post_json(client, "/endpoints/claude/invocations", {"messages": [USER_HI]})
    assert response.status_code == 404
    assert response.json() == {"detail": "model: claude-nope"}
    response = post_json(client, "/v1/chat/completions", {"model": "claude", "messages": [USER_HI]})
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "model: claude-nope"


def test_the_openai_route_reaches_anthropic(anthropic_endpoints: HTTPServer, client: Any) -> None:
    anthropic_endpoints.expect_oneshot_request(
        "/v1/messages", method="POST", json={"model": MODEL, "messages": [USER_HI], "max_tokens": 8192},
    ).respond_with_json(payload("anthropic", "chat_response.json"))
    response = post_json(client, "/v1/chat/completions", {"model": "claude", "messages": [USER_HI]})
    assert response.status_code == 200, response.content
    assert response.json()["object"] == "chat.completion"
    anthropic_endpoints.check_assertions()


def test_embeddings_are_refused_at_load_time() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "emb", "endpoint_type": EMBEDDINGS,
                           "model": {"provider": "anthropic", "name": MODEL, "config": {"anthropic_api_key": "k"}}})
    assert caught.value.field == "endpoint_type"
    assert "does not support llm/v1/embeddings" in caught.value.message


def test_the_api_key_is_required() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "c", "endpoint_type": CHAT,
                           "model": {"provider": "anthropic", "name": MODEL, "config": {"anthropic_version": "x"}}})
    assert caught.value.field == "model.config.anthropic_api_key"
