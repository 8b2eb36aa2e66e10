"""Gemini: pure translation tables, then the full path against a local server speaking
generateContent, streamGenerateContent?alt=sse, embedContent and batchEmbedContents."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import gemini as ge
from providers.errors import InvalidParameter, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db

MODEL = "gemini-2.5-flash"
USER_HI = {"role": "user", "content": "Hi"}
GEMINI_HI = {"role": "user", "parts": [{"text": "Hi"}]}


# -- pure translation: requests ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://generativelanguage.googleapis.com/v1beta/models", "https://generativelanguage.googleapis.com/v1beta/models"),
        ("https://generativelanguage.googleapis.com", "https://generativelanguage.googleapis.com/v1beta/models"),
        ("https://generativelanguage.googleapis.com/", "https://generativelanguage.googleapis.com/v1beta/models"),
        ("https://proxy.local/gemini/v1beta", "https://proxy.local/gemini/v1beta/models"),
        ("https://proxy.local/v1", "https://proxy.local/v1beta/models"),
        ("https://proxy.local/custom/models/", "https://proxy.local/custom/models"),
    ],
)
def test_it_normalises_the_api_base(base: str, expected: str) -> None:
    assert ge.normalize_api_base(base) == expected


def test_it_maps_messages_system_instruction_and_generation_config() -> None:
    body = ge.chat_body({
        "messages": [{"role": "system", "content": "Be brief."}, USER_HI,
                     {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
        "n": 1, "temperature": 1.5, "stop": ["END"], "max_tokens": 50, "top_k": 4, "top_p": 0.5,
        "presence_penalty": 0.1, "frequency_penalty": 0.2, "user": "not-forwarded",
    })
    assert body == {
        "contents": [GEMINI_HI, {"role": "model", "parts": [{"text": "Hello"}]},
                     {"role": "user", "parts": [{"text": "Bye"}]}],
        "system_instruction": {"parts": [{"text": "Be brief."}]},
        "generationConfig": {"temperature": 1.5, "stopSequences": ["END"], "candidateCount": 1, "maxOutputTokens": 50,
                             "topK": 4, "topP": 0.5, "frequencyPenalty": 0.2, "presencePenalty": 0.1},
    }


@pytest.mark.parametrize(
    ("request_fields", "expected_config"),
    [
        ({"max_completion_tokens": 30}, {"candidateCount": 1, "maxOutputTokens": 30}),
        ({"max_tokens": 10, "max_completion_tokens": 30}, {"candidateCount": 1, "maxOutputTokens": 10}),
        ({"seed": 7}, {"candidateCount": 1, "seed": 7}),
        ({"response_format": {"type": "json_object"}}, {"candidateCount": 1, "responseMimeType": "application/json"}),
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}},
         {"candidateCount": 1, "responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}),
    ],
)
def test_it_fills_generation_config(request_fields: dict[str, Any], expected_config: dict[str, Any]) -> None:
    assert ge.chat_body({"messages": [USER_HI], "n": 1, **request_fields})["generationConfig"] == expected_config


@pytest.mark.parametrize(
    ("native", "ours"),
    [("stopSequences", "stop"), ("candidateCount", "n"), ("maxOutputTokens", "max_tokens"), ("topK", "top_k"),
     ("topP", "top_p"), ("frequencyPenalty", "frequency_penalty"), ("presencePenalty", "presence_penalty")],
)
def test_it_refuses_native_generation_config_names(native: str, ours: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        ge.chat_body({"messages": [USER_HI], native: 1})
    assert (caught.value.status, caught.value.detail) == (422, f"Invalid parameter {native}. Use {ours} instead.")


def test_it_forwards_native_request_fields() -> None:
    safety = [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}]
    body = ge.chat_body({"messages": [USER_HI], "safetySettings": safety, "cachedContent": "cachedContents/abc"})
    assert body["safetySettings"] == safety
    assert body["cachedContent"] == "cachedContents/abc"


def test_it_turns_image_data_urls_into_inline_data() -> None:
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}]
    body = ge.chat_body({"messages": [{"role": "user", "content": content}]})
    assert body["contents"] == [{"role": "user", "parts": [
        {"text": "What is this?"}, {"inlineData": {"mimeType": "image/jpeg", "data": "/9j/4AAQ"}}]}]


def test_it_translates_tools_calls_and_grouped_results() -> None:
    messages = [
        USER_HI,
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
             "thought_signature": "sig1"},
            {"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 18}'},
        {"role": "tool", "tool_call_id": "c2", "content": "noon"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
                                               "parameters": {"type": "object", "properties": {}}}}]
    body = ge.chat_body({"messages": messages, "tools": tools, "tool_choice": "required"})
    assert body["contents"] == [
        GEMINI_HI,
        {"role": "model", "parts": [
            {"functionCall": {"id": "c1", "name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "sig1"},
            {"functionCall": {"id": "c2", "name": "get_time", "args": {}}}]},
        {"role": "user", "parts": [
            {"functionResponse": {"id": "c1", "name": "get_weather", "response": {"temp": 18}}},
            {"functionResponse": {"id": "c2", "name": "get_time", "response": {"result": "noon"}}}]},
    ]
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather",
         "parametersJsonSchema": {"type": "object", "properties": {}}}]}]
    assert body["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [("none", {"functionCallingConfig": {"mode": "NONE"}}),
     ("required", {"functionCallingConfig": {"mode": "ANY"}}),
     ({"type": "function", "function": {"name": "f"}},
      {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}}),
     ("auto", None)],
)
def test_it_maps_tool_choice(tool_choice: Any, expected: dict[str, Any] | None) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = ge.chat_body({"messages": [USER_HI], "tools": tools, "tool_choice": tool_choice})
    assert body.get("toolConfig") == expected


def test_it_refuses_a_tool_result_for_an_unknown_call() -> None:
    with pytest.raises(InvalidParameter, match="tool_call_id=nope does not match any tool call"):
        ge.chat_body({"messages": [USER_HI, {"role": "tool", "tool_call_id": "nope", "content": "x"}]})


def test_completions_wrap_the_prompt_as_one_user_message() -> None:
    body = ge.completions_body({"prompt": "Hi", "n": 1, "max_tokens": 5})
    assert body == {"contents": [GEMINI_HI], "generationConfig": {"candidateCount": 1, "maxOutputTokens": 5}}


@pytest.mark.parametrize(
    ("request_payload", "expected"),
    [
        ({"input": "a"}, ("embedContent", {"content": {"parts": [{"text": "a"}]}})),
        ({"input": ["a"], "dimensions": 256},
         ("embedContent", {"content": {"parts": [{"text": "a"}]}, "outputDimensionality": 256})),
        ({"input": ["a", "b"], "taskType": "RETRIEVAL_QUERY"}, ("batchEmbedContents", {"requests": [
            {"model": f"models/{MODEL}", "content": {"parts": [{"text": "a"}]}, "taskType": "RETRIEVAL_QUERY"},
            {"model": f"models/{MODEL}", "content": {"parts": [{"text": "b"}]}, "taskType": "RETRIEVAL_QUERY"}]})),
    ],
)
def test_it_picks_the_embedding_method(request_payload: dict[str, Any], expected: tuple[str, Any]) -> None:
    assert ge.embeddings_request(request_payload, MODEL) == expected


# -- pure translation: responses --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw_reason", "expected"),
    [("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
     ("BLOCKLIST", "content_filter"), ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
     ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"), (None, None)],
)
def test_it_maps_finish_reasons(raw_reason: str | None, expected: str | None) -> None:
    assert ge.finish_reason(raw_reason) == expected


def test_it_maps_usage_with_thoughts_counted_as_completion() -> None:
    assert ge.usage({"promptTokenCount": 10, "candidatesTokenCount": 9, "thoughtsTokenCount": 12,
                     "totalTokenCount": 31, "cachedContentTokenCount": 4}) == {
        "prompt_tokens": 10, "completion_tokens": 21, "total_tokens": 31,
        "prompt_tokens_details": {"cached_tokens": 4}, "completion_tokens_details": {"reasoning_tokens": 12}}
    assert ge.usage({"promptTokenCount": 3, "candidatesTokenCount": 2, "totalTokenCount": 5, "x": 1},
                    details=False) == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_it_maps_a_generate_content_response() -> None:
    out = ge.parse_chat(payload("gemini", "chat_response.json"), MODEL, "gemini")
    assert out["id"] == f"gemini-chat-{out['created']}"
    assert out["model"] == MODEL
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant",
                                                       "content": "Blue is often seen as a calming color.",
                                                       "tool_calls": None, "refusal": None}, "finish_reason": "stop"}]
    assert out["usage"]["completion_tokens"] == 21
    assert out["usage"]["total_tokens"] == 31


def test_it_maps_function_calls_with_a_generated_id_and_the_thought_signature() -> None:
    out = ge.parse_chat(payload("gemini", "chat_function_call_response.json"), MODEL, "gemini")
    choice = out["choices"][0]
    assert choice["message"]["content"] == "Let me look that up."
    assert choice["message"]["tool_calls"] == [{
        "id": "call_" + __import__("hashlib").md5(b'get_weather/{"city": "Paris"}').hexdigest(), "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}, "thought_signature": "CiQB0e2Kb3sig"}]
    assert choice["finish_reason"] == "tool_calls"
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 32}


def test_a_blocked_prompt_gives_one_content_filter_choice() -> None:
    out = ge.parse_chat({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 4}},
                        MODEL, "gemini")
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": None,
                                                       "refusal": None}, "finish_reason": "content_filter"}]


def test_thought_parts_are_left_out_of_the_answer() -> None:
    body = {"candidates": [{"content": {"parts": [{"text": "thinking...", "thought": True}, {"text": "42"}]},
                            "finishReason": "STOP"}]}
    assert ge.parse_chat(body, MODEL, "gemini")["choices"][0]["message"]["content"] == "42"
    assert ge.parse_completions(body, MODEL)["choices"] == [{"index": 0, "text": "42", "finish_reason": "stop"}]


def test_it_reads_single_and_batch_embeddings() -> None:
    single = ge.parse_embeddings(payload("gemini", "embed_content_response.json"), MODEL)
    assert single["data"] == [{"object": "embedding", "embedding": [0.013168523, -0.008711934, -0.046782676],
                               "index": 0}]
    batch = ge.parse_embeddings(payload("gemini", "batch_embed_contents_response.json"), MODEL)
    assert [d["embedding"] for d in batch["data"]] == [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]]
    assert batch["usage"] == {"prompt_tokens": None, "total_tokens": None}


def test_stream_tool_calls_are_numbered_across_chunks_and_finish_as_tool_calls() -> None:
    events: list[dict[str, Any]] = [
        {"candidates": [{"content": {"parts": [{"functionCall": {"id": "a", "name": "f", "args": {}}}]}}]},
        {"candidates": [{"content": {"parts": [{"functionCall": {"id": "b", "name": "g", "args": {"x": 1}}}]}}]},
        {"candidates": [{"content": {"parts": [{"text": ""}]}, "finishReason": "STOP"}],
         "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4, "totalTokenCount": 7}},
    ]
    chunks = list(ge.chat_chunks(events, MODEL, "gemini"))
    indexes = [[c["index"] for c in chunk["choices"][0]["delta"]["tool_calls"] or []] for chunk in chunks]
    assert indexes == [[0], [1], []]
    assert chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"] == {"name": "g", "arguments": '{"x": 1}'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["usage"] for c in chunks[:2]] == [None, None]
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert len({c["id"] for c in chunks}) == 1


def test_an_error_object_in_the_stream_raises() -> None:
    with pytest.raises(UpstreamError) as caught:
        list(ge.completions_chunks([{"error": {"code": 500, "message": "Internal error", "status": "INTERNAL"}}],
                                   MODEL))
    assert (caught.value.status, caught.value.detail) == (500, "Internal error")


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def gemini_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_GEMINI_KEY", "AIza-test")
    config = {"gemini_api_key": "$TEST_GEMINI_KEY", "gemini_api_base": httpserver.url_for("/v1beta")}
    make_endpoint("gemini-chat", CHAT, "gemini", MODEL, config)
    make_endpoint("gemini-completions", COMPLETIONS, "gemini", MODEL, config)
    make_endpoint("gemini-embeddings", EMBEDDINGS, "gemini", "text-embedding-004", config)
    return httpserver


HEADERS = {"x-goog-api-key": "AIza-test", "Content-Type": "application/json"}
CHAT_PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM_PATH = f"/v1beta/models/{MODEL}:streamGenerateContent"


def test_chat_sends_generate_content_and_returns_the_mlflow_shape(gemini_endpoints: HTTPServer,
                                                                  client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(
        CHAT_PATH, method="POST", headers=HEADERS,
        json={"contents": [GEMINI_HI], "generationConfig": {"temperature": 0.2, "candidateCount": 1}},
    ).respond_with_json(payload("gemini", "chat_response.json"))
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI], "temperature": 0.2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Blue is often seen as a calming color."
    assert body["model"] == MODEL
    assert body["provider"] == "gemini"
    gemini_endpoints.check_assertions()


def test_chat_with_tools_returns_tool_calls(gemini_endpoints: HTTPServer, client: Any) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    gemini_endpoints.expect_oneshot_request(
        CHAT_PATH, method="POST",
        json={"contents": [GEMINI_HI], "generationConfig": {"candidateCount": 1},
              "tools": [{"functionDeclarations": [{"name": "get_weather", "parametersJsonSchema": {
                  "type": "object", "properties": {"city": {"type": "string"}}}}]}],
              "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}},
    ).respond_with_json(payload("gemini", "chat_function_call_response.json"))
    response = post_json(client, "/endpoints/gemini-chat/invocations",
                         {"messages": [USER_HI], "tools": tools, "tool_choice": "none"})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == '{"city": "Paris"}'
    gemini_endpoints.check_assertions()


def test_chat_streaming_reads_the_sse_stream(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(
        STREAM_PATH, query_string="alt=sse", method="POST", headers=HEADERS,
        json={"contents": [GEMINI_HI], "generationConfig": {"candidateCount": 1}},
    ).respond_with_data(raw("gemini", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI], "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["The capital", " is Paris.", ""]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert chunks[-1]["usage"]["total_tokens"] == 17
    assert chunks[0]["object"] == "chat.completion.chunk"
    gemini_endpoints.check_assertions()


def test_chat_streaming_passes_function_calls(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(STREAM_PATH, query_string="alt=sse", method="POST").respond_with_data(
        raw("gemini", "chat_function_call_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI], "stream": True})
    chunks = sse_events(response)[:-1]
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:2]]
    assert [(c["index"], c["id"], c["function"]["name"]) for c in calls] == [
        (0, calls[0]["id"], "get_weather"), (1, "fc-2", "get_time")]
    assert calls[0]["id"].startswith("call_")
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_completions_streaming_uses_text_completion_chunks(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(
        STREAM_PATH, query_string="alt=sse", method="POST",
        json={"contents": [GEMINI_HI], "generationConfig": {"candidateCount": 1}},
    ).respond_with_data(raw("gemini", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/gemini-completions/invocations", {"prompt": "Hi", "stream": True})
    chunks = sse_events(response)[:-1]
    assert {c["object"] for c in chunks} == {"text_completion_chunk"}
    assert [c["choices"][0]["text"] for c in chunks] == ["The capital", " is Paris.", ""]
    assert chunks[-1]["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}


def test_completions_return_the_text(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(CHAT_PATH, method="POST").respond_with_json(
        payload("gemini", "chat_response.json"))
    response = post_json(client, "/endpoints/gemini-completions/invocations", {"prompt": "Hi"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"] == [{"index": 0, "text": "Blue is often seen as a calming color.", "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": 10, "completion_tokens": 21, "total_tokens": 31}


def test_an_error_mid_stream_becomes_a_final_error_event(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(STREAM_PATH, query_string="alt=sse", method="POST").respond_with_data(
        raw("gemini", "chat_stream_error.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI], "stream": True})
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "The capital"
    assert events[-1]["error"]["message"] == "The model is overloaded. Please try again later."
    assert events[-1]["error"]["status"] == 503


@pytest.mark.parametrize(
    ("request_input", "path", "fixture"),
    [("one text", "/v1beta/models/text-embedding-004:embedContent", "embed_content_response.json"),
     (["a", "b"], "/v1beta/models/text-embedding-004:batchEmbedContents", "batch_embed_contents_response.json")],
)
def test_embeddings_pick_single_or_batch(gemini_endpoints: HTTPServer, client: Any, request_input: Any, path: str,
                                         fixture: str) -> None:
    gemini_endpoints.expect_oneshot_request(path, method="POST", headers=HEADERS).respond_with_json(
        payload("gemini", fixture))
    response = post_json(client, "/endpoints/gemini-embeddings/invocations", {"input": request_input})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "text-embedding-004"
    assert len(body["data"]) == (1 if isinstance(request_input, str) else 2)
    gemini_endpoints.check_assertions()


def test_an_upstream_error_passes_status_and_message(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_request(CHAT_PATH, method="POST").respond_with_json(
        payload("gemini", "error_invalid_argument.json"), status=400)
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI]})
    assert response.status_code == 400
    assert response.json() == {"detail": "API key not valid. Please pass a valid API key."}
    response = post_json(client, "/v1/chat/completions", {"model": "gemini-chat", "messages": [USER_HI]})
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "API key not valid. Please pass a valid API key."


def test_a_native_name_is_refused_with_422(gemini_endpoints: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/gemini-chat/invocations", {"messages": [USER_HI], "topK": 3})
    assert response.status_code == 422
    assert response.json() == {"detail": "Invalid parameter topK. Use top_k instead."}
    assert gemini_endpoints.log == []


def test_the_openai_route_reaches_gemini(gemini_endpoints: HTTPServer, client: Any) -> None:
    gemini_endpoints.expect_oneshot_request(
        CHAT_PATH, method="POST", json={"contents": [GEMINI_HI], "generationConfig": {"candidateCount": 1}},
    ).respond_with_json(payload("gemini", "chat_response.json"))
    response = post_json(client, "/v1/chat/completions", {"model": "gemini-chat", "messages": [USER_HI]})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["finish_reason"] == "stop"
    gemini_endpoints.check_assertions()


def test_the_default_base_is_used_without_an_override(make_endpoint: Any) -> None:
    endpoint = make_endpoint("g", CHAT, "gemini", MODEL, {"gemini_api_key": "k"})
    provider = ge.GeminiProvider(provider_name="gemini", model_name=MODEL, config=endpoint.config)
    request = provider._request("generateContent", {})
    assert request.url == f"https://generativelanguage.googleapis.com/v1beta/models/{MODEL}:generateContent"
    assert request.headers == {"x-goog-api-key": "k"}


def test_an_unknown_config_key_is_refused_at_load_time() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "g", "endpoint_type": CHAT,
                           "model": {"provider": "gemini", "name": MODEL,
                                     "config": {"gemini_api_key": "k", "gemini_region": "eu"}}})
    assert caught.value.field == "model.config.gemini_region"
