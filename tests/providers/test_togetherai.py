"""TogetherAI: pure translation tables (MLflow's max_tokens and logprobs rules, finish reasons), then
the full path against a local server speaking Together's OpenAI-shaped wire format."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import togetherai
from providers.errors import InvalidParameter
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db

MODEL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
EMBED_MODEL = "togethercomputer/m2-bert-80M-8k-retrieval"
HI = [{"role": "user", "content": "Hi"}]
MAX_TOKENS_MESSAGE = "max_tokens is not present in payload.It is a required parameter for TogetherAI completions."


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "expected"),
    [
        ({"prompt": "x", "max_tokens": 5}, {"prompt": "x", "max_tokens": 5}),
        ({"prompt": "x", "max_tokens": 5, "logprobs": 2}, {"prompt": "x", "max_tokens": 5, "logprobs": 2}),
        ({"prompt": "x", "max_tokens": 5, "top_logprobs": 3}, {"prompt": "x", "max_tokens": 5, "logprobs": 3}),
        ({"prompt": "x", "max_tokens": 5, "repetition_penalty": 1.1},
         {"prompt": "x", "max_tokens": 5, "repetition_penalty": 1.1}),
    ],
)
def test_it_builds_the_completions_payload(request_payload: dict[str, Any], expected: dict[str, Any]) -> None:
    assert togetherai.completions_payload(request_payload) == expected


@pytest.mark.parametrize(
    ("request_payload", "message"),
    [
        ({"prompt": "x"}, MAX_TOKENS_MESSAGE),
        ({"prompt": "x", "max_tokens": 5, "logprobs": "2"}, "Wrong type for logprobs. It should be an 32bit integer."),
        ({"prompt": "x", "max_tokens": 5, "top_logprobs": 1.5},
         "Wrong type for top_logprobs. It should a 32bit integer."),
    ],
)
def test_it_applies_mlflows_completions_rules(request_payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        togetherai.completions_payload(request_payload)
    assert (caught.value.status, caught.value.detail) == (422, message)


def test_chat_needs_no_max_tokens_but_has_the_logprobs_rules() -> None:
    assert togetherai.sampling_payload({"messages": HI, "top_logprobs": 1}) == {"messages": HI, "logprobs": 1}
    with pytest.raises(InvalidParameter):
        togetherai.sampling_payload({"messages": HI, "logprobs": [1]})


@pytest.mark.parametrize(("reason", "expected"),
                         [("eos", "stop"), ("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"),
                          ("function_call", "tool_calls"), (None, None)])
def test_it_normalises_finish_reasons(reason: str | None, expected: str | None) -> None:
    assert togetherai.finish_reason(reason) == expected


def test_the_chat_stream_reads_delta_content_not_text() -> None:
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "upstream",
             "choices": [{"index": 0, "text": "WRONG", "delta": {"content": " Paris"}, "finish_reason": "eos"}]}
    out = togetherai.parse_chat_chunk(chunk, MODEL, "togetherai")
    assert out["choices"] == [{"index": 0, "finish_reason": "stop",
                               "delta": {"role": None, "content": " Paris", "tool_calls": None}}]
    assert out["model"] == MODEL


def test_it_maps_a_chat_response_with_the_config_model() -> None:
    out = togetherai.parse_chat(payload("togetherai", "chat_response.json"), "my-model", "togetherai")
    assert out["model"] == "my-model"
    assert out["choices"] == [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "Paris is the capital.", "tool_calls": None, "refusal": None}}]


def test_it_declares_what_it_serves() -> None:
    assert togetherai.TogetherAIProvider.endpoint_types == frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    assert togetherai.TogetherAIProvider.streaming_types == frozenset({CHAT, COMPLETIONS})
    assert togetherai.TogetherAIProvider.supports_tools


@pytest.mark.parametrize(
    ("endpoint_type", "config", "field"),
    [
        (CHAT, {}, "model.config.togetherai_api_key"),
        (CHAT, {"togetherai_api_key": "k", "togetherai_api_base": 5}, "model.config.togetherai_api_base"),
        ("llm/v1/rerank", {"togetherai_api_key": "k"}, "endpoint_type"),
    ],
)
def test_bad_entries_are_refused_at_load_time(endpoint_type: str, config: dict[str, Any], field: str) -> None:
    entry = {"name": "t", "endpoint_type": endpoint_type, "model": {"provider": "togetherai", "name": MODEL,
                                                                   "config": config}}
    with pytest.raises(EntryError) as caught:
        validate_endpoint(entry)
    assert caught.value.field == field


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def together_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_TOGETHER_KEY", "together-test-key")
    monkeypatch.setenv("TEST_TOGETHER_BASE", httpserver.url_for("/v1"))
    config = {"togetherai_api_key": "$TEST_TOGETHER_KEY", "togetherai_api_base": "$TEST_TOGETHER_BASE"}
    make_endpoint("chat", CHAT, "togetherai", MODEL, config)
    make_endpoint("completions", COMPLETIONS, "togetherai", "mistralai/Mixtral-8x7B-v0.1", config)
    make_endpoint("embeddings", EMBEDDINGS, "togetherai", EMBED_MODEL, config)
    return httpserver


def test_completions_send_the_exact_request(together_endpoints: HTTPServer, client: Any) -> None:
    together_endpoints.expect_oneshot_request(
        "/v1/completions", method="POST", headers={"Authorization": "Bearer together-test-key"},
        json={"model": "mistralai/Mixtral-8x7B-v0.1", "prompt": "Say", "max_tokens": 20, "n": 1, "logprobs": 1,
              "temperature": 1.5},
    ).respond_with_json(payload("togetherai", "completions_response.json"))
    response = post_json(client, "/endpoints/completions/invocations",
                         {"prompt": "Say", "max_tokens": 20, "top_logprobs": 1, "temperature": 1.5})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body == {"id": "8447f286bbdb67b3-SJC", "object": "text_completion", "created": 1705089226,
                    "model": "mistralai/Mixtral-8x7B-v0.1",
                    "choices": [{"index": 0, "text": "Example text.", "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 16, "completion_tokens": 78, "total_tokens": 94}}
    together_endpoints.check_assertions()


def test_completions_without_max_tokens_are_a_422(together_endpoints: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/completions/invocations", {"prompt": "Say"})
    assert (response.status_code, response.json()) == (422, {"detail": MAX_TOKENS_MESSAGE})
    streamed = post_json(client, "/endpoints/completions/invocations", {"prompt": "Say", "stream": True})
    assert streamed.status_code == 422


def test_completions_streaming_reads_text(together_endpoints: HTTPServer, client: Any) -> None:
    together_endpoints.expect_oneshot_request(
        "/v1/completions", method="POST",
        json={"model": "mistralai/Mixtral-8x7B-v0.1", "prompt": "Say", "max_tokens": 200, "n": 1, "stream": True},
    ).respond_with_data(raw("togetherai", "completions_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/completions/invocations",
                         {"prompt": "Say", "max_tokens": 200, "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["text"] for e in events[:-1]] == ["   ", ' "', '":']
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"] == {"prompt_tokens": 17, "completion_tokens": 200, "total_tokens": 217}
    assert {e["object"] for e in events[:-1]} == {"text_completion_chunk"}
    together_endpoints.check_assertions()


def test_chat_round_trip(together_endpoints: HTTPServer, client: Any) -> None:
    together_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST", json={"model": MODEL, "messages": HI, "n": 1},
    ).respond_with_json(payload("togetherai", "chat_response.json"))
    response = post_json(client, "/endpoints/chat/invocations", {"messages": HI})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Paris is the capital."
    assert body["choices"][0]["finish_reason"] == "stop"
    assert (body["model"], body["provider"]) == (MODEL, "togetherai")
    assert body["usage"] == {"prompt_tokens": 31, "completion_tokens": 455, "total_tokens": 486}
    together_endpoints.check_assertions()


def test_chat_tools_are_forwarded_and_tool_calls_returned(together_endpoints: HTTPServer, client: Any) -> None:
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}
    together_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": MODEL, "messages": HI, "n": 1, "tools": [tool], "tool_choice": "auto"},
    ).respond_with_json(payload("togetherai", "chat_tool_call_response.json"))
    response = post_json(client, "/v1/chat/completions",
                         {"model": "chat", "messages": HI, "tools": [tool], "tool_choice": "auto"})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [
        {"id": "call_8y3", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]
    together_endpoints.check_assertions()


def test_chat_streaming_reads_delta_content(together_endpoints: HTTPServer, client: Any) -> None:
    together_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST", json={"model": MODEL, "messages": HI, "n": 1, "stream": True},
    ).respond_with_data(raw("togetherai", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/chat/invocations", {"messages": HI, "stream": True})
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == [" The", " City", " Paris"]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"] == {"prompt_tokens": 93, "completion_tokens": 100, "total_tokens": 193}
    assert {e["model"] for e in events[:-1]} == {MODEL}
    together_endpoints.check_assertions()


def test_embeddings_send_the_model_unlike_mlflow(together_endpoints: HTTPServer, client: Any) -> None:
    together_endpoints.expect_oneshot_request(
        "/v1/embeddings", method="POST", json={"model": EMBED_MODEL, "input": ["a", "b"]},
    ).respond_with_json(payload("togetherai", "embeddings_response.json"))
    response = post_json(client, "/endpoints/embeddings/invocations", {"input": ["a", "b"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == EMBED_MODEL
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["usage"] == {"prompt_tokens": None, "total_tokens": None}
    together_endpoints.check_assertions()


def test_a_together_error_keeps_its_status_and_message(together_endpoints: HTTPServer, client: Any) -> None:
    for _ in range(2):
        together_endpoints.expect_ordered_request("/v1/chat/completions", method="POST").respond_with_json(
            payload("togetherai", "error_response.json"), status=422)
    message = "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 32769"
    mlflow = post_json(client, "/endpoints/chat/invocations", {"messages": HI})
    assert (mlflow.status_code, mlflow.json()) == (422, {"detail": message})
    openai = post_json(client, "/v1/chat/completions", {"model": "chat", "messages": HI})
    assert openai.json()["error"]["message"] == message
    assert openai.status_code == 422


def test_the_default_base_url_is_togethers() -> None:
    config = togetherai.TogetherAIConfig.validate({"togetherai_api_key": "k"})
    provider = togetherai.TogetherAIProvider(provider_name="togetherai", model_name="m", config=config)
    request = provider.build_request("embeddings", {"input": "a"})
    assert request.url == "https://api.together.xyz/v1/embeddings"
    assert request.json == {"model": "m", "input": "a"}
