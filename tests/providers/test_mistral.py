"""Mistral: pure translation tables, then the full path against a local server speaking Mistral's
OpenAI-shaped wire format (view → adapter → HTTP → parse)."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import mistral
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db

HI = [{"role": "user", "content": "Hi"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "expected"),
    [
        ({"prompt": "Say hi", "n": 1}, {"messages": [{"role": "user", "content": "Say hi"}]}),
        ({"prompt": "Say hi", "temperature": 1.2, "stop": ["END"], "max_tokens": 20, "random_seed": 7},
         {"messages": [{"role": "user", "content": "Say hi"}], "temperature": 0.6, "max_tokens": 20,
          "random_seed": 7}),
    ],
)
def test_completions_become_one_user_message_without_stop_and_n(request_payload: dict[str, Any],
                                                                 expected: dict[str, Any]) -> None:
    assert mistral.completions_payload(request_payload) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("plain", "plain"),
        (None, None),
        ([{"type": "thinking", "thinking": [{"type": "text", "text": "hmm"}]}, {"type": "text", "text": "A"},
          {"type": "text", "text": "B"}], "AB"),
    ],
)
def test_list_content_keeps_only_text(content: Any, expected: Any) -> None:
    body = {"choices": [{"message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}
    chunk = {"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}
    assert mistral.parse_chat(body, "mistral")["choices"][0]["message"]["content"] == expected
    assert mistral.parse_chat_chunk(chunk, "mistral")["choices"][0]["delta"]["content"] == expected


@pytest.mark.parametrize(("reason", "expected"),
                         [("stop", "stop"), ("length", "length"), ("model_length", "length"),
                          ("tool_calls", "tool_calls"), ("error", "stop"), (None, None)])
def test_it_normalises_finish_reasons(reason: str | None, expected: str | None) -> None:
    assert mistral.finish_reason(reason) == expected


def test_it_maps_a_thinking_response_to_its_text() -> None:
    out = mistral.parse_chat(payload("mistral", "chat_thinking_response.json"), "mistral")
    assert out["choices"] == [{"index": 0, "finish_reason": "length", "message": {
        "role": "assistant", "content": "2 + 2 = 4", "tool_calls": None, "refusal": None}}]
    assert out["model"] == "magistral-medium-2506"
    assert out["usage"] == {"prompt_tokens": 10, "completion_tokens": 50, "total_tokens": 60}


def test_it_maps_a_completion_with_the_config_model_and_no_id() -> None:
    out = mistral.parse_completions(payload("mistral", "chat_response.json"), "mistral-small")
    out.pop("created")
    assert out == {"id": None, "object": "text_completion", "model": "mistral-small",
                   "choices": [{"index": 0, "text": "Bonjour! Comment puis-je vous aider?", "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 16, "completion_tokens": 34, "total_tokens": 50}}


def test_it_keeps_the_upstream_embedding_index() -> None:
    out = mistral.parse_embeddings(payload("mistral", "embeddings_response.json"), "mistral-embed")
    assert [d["index"] for d in out["data"]] == [0, 1]
    assert out["model"] == "mistral-embed"
    assert out["usage"] == {"prompt_tokens": 15, "total_tokens": 15}


def test_it_declares_what_it_serves() -> None:
    assert mistral.MistralProvider.endpoint_types == frozenset({CHAT, COMPLETIONS, EMBEDDINGS})
    assert mistral.MistralProvider.streaming_types == frozenset({CHAT})
    assert mistral.MistralProvider.supports_tools


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"endpoint_type": CHAT, "config": {}}, "model.config.mistral_api_key"),
        ({"endpoint_type": CHAT, "config": {"mistral_api_key": "k", "api_key": "k"}}, "model.config.api_key"),
        ({"endpoint_type": "llm/v1/rerank", "config": {"mistral_api_key": "k"}}, "endpoint_type"),
    ],
)
def test_bad_entries_are_refused_at_load_time(entry: dict[str, Any], field: str) -> None:
    raw_entry = {"name": "m", "endpoint_type": entry["endpoint_type"],
                 "model": {"provider": "mistral", "name": "mistral-small-latest", "config": entry["config"]}}
    with pytest.raises(EntryError) as caught:
        validate_endpoint(raw_entry)
    assert caught.value.field == field


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def mistral_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_MISTRAL_KEY", "mistral-test-key")
    monkeypatch.setenv("TEST_MISTRAL_BASE", httpserver.url_for("/v1"))
    config = {"mistral_api_key": "$TEST_MISTRAL_KEY", "mistral_api_base": "$TEST_MISTRAL_BASE"}
    make_endpoint("chat", CHAT, "mistral", "mistral-small-latest", config)
    make_endpoint("completions", COMPLETIONS, "mistral", "mistral-small-latest", config)
    make_endpoint("embeddings", EMBEDDINGS, "mistral", "mistral-embed", config)
    return httpserver


def test_chat_forwards_the_payload_with_the_model(mistral_endpoints: HTTPServer, client: Any) -> None:
    mistral_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST", headers={"Authorization": "Bearer mistral-test-key"},
        json={"model": "mistral-small-latest", "messages": HI, "n": 1, "temperature": 0.7, "safe_prompt": True},
    ).respond_with_json(payload("mistral", "chat_response.json"))
    response = post_json(client, "/endpoints/chat/invocations", {"messages": HI, "temperature": 0.7,
                                                                 "safe_prompt": True})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Bonjour! Comment puis-je vous aider?"
    assert (body["id"], body["model"], body["provider"]) == ("cmpl-e5cc70bb28c444948073e77776eb30ef",
                                                             "mistral-small-latest", "mistral")
    assert body["usage"] == {"prompt_tokens": 16, "completion_tokens": 34, "total_tokens": 50}
    mistral_endpoints.check_assertions()


def test_tools_are_forwarded_openai_style(mistral_endpoints: HTTPServer, client: Any) -> None:
    mistral_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": "mistral-small-latest", "messages": HI, "n": 1, "tools": [TOOL], "tool_choice": "auto"},
    ).respond_with_json(payload("mistral", "chat_tool_call_response.json"))
    response = post_json(client, "/v1/chat/completions",
                         {"model": "chat", "messages": HI, "tools": [TOOL], "tool_choice": "auto"})
    assert response.status_code == 200, response.content
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"] == [{"id": "D681PevKs", "type": "function", "function": {
        "name": "get_weather", "arguments": '{"city": "Paris"}'}}]
    mistral_endpoints.check_assertions()


def test_chat_streaming_ends_with_done_and_carries_usage(mistral_endpoints: HTTPServer, client: Any) -> None:
    mistral_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": "mistral-small-latest", "messages": HI, "n": 1, "stream": True},
    ).respond_with_data(raw("mistral", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/chat/invocations", {"messages": HI, "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["", "Bon", "jour", ""]
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-2]["usage"] == {"prompt_tokens": 16, "completion_tokens": 2, "total_tokens": 18}
    mistral_endpoints.check_assertions()


def test_completions_go_through_chat(mistral_endpoints: HTTPServer, client: Any) -> None:
    mistral_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Say hi"}],
              "temperature": 0.5, "max_tokens": 5},
    ).respond_with_json(payload("mistral", "chat_response.json"))
    response = post_json(client, "/endpoints/completions/invocations",
                         {"prompt": "Say hi", "temperature": 1.0, "max_tokens": 5, "stop": ["x"], "n": 1})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["id"], body["object"], body["model"]) == (None, "text_completion", "mistral-small-latest")
    assert body["choices"] == [{"index": 0, "text": "Bonjour! Comment puis-je vous aider?", "finish_reason": "stop"}]
    mistral_endpoints.check_assertions()


def test_completions_streaming_is_not_offered(mistral_endpoints: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/completions/invocations", {"prompt": "x", "stream": True})
    assert response.status_code == 501
    assert response.json() == {"detail": "The completions streaming route is not implemented for Mistral models."}


def test_embeddings_send_the_model(mistral_endpoints: HTTPServer, client: Any) -> None:
    mistral_endpoints.expect_oneshot_request(
        "/v1/embeddings", method="POST", json={"model": "mistral-embed", "input": ["a", "b"]},
    ).respond_with_json(payload("mistral", "embeddings_response.json"))
    response = post_json(client, "/endpoints/embeddings/invocations", {"input": ["a", "b"]})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["model"] == "mistral-embed"
    assert body["data"][1] == {"object": "embedding", "embedding": [-0.0231, 0.0395, 0.0318], "index": 1}
    mistral_endpoints.check_assertions()


def test_a_mistral_error_keeps_its_status_and_message(mistral_endpoints: HTTPServer, client: Any) -> None:
    for _ in range(2):
        mistral_endpoints.expect_ordered_request("/v1/chat/completions", method="POST").respond_with_json(
            payload("mistral", "error_response.json"), status=400)
    mlflow = post_json(client, "/endpoints/chat/invocations", {"messages": HI})
    assert (mlflow.status_code, mlflow.json()) == (400, {"detail": "Invalid model: mistral-nope"})
    openai = post_json(client, "/v1/chat/completions", {"model": "chat", "messages": HI})
    assert openai.status_code == 400
    assert openai.json()["error"]["message"] == "Invalid model: mistral-nope"


def test_the_default_base_url_is_mistrals() -> None:
    config = mistral.MistralConfig.validate({"mistral_api_key": "k"})
    provider = mistral.MistralProvider(provider_name="mistral", model_name="m", config=config)
    request = provider.build_request("chat/completions", {"messages": HI})
    assert request.url == "https://api.mistral.ai/v1/chat/completions"
    assert request.headers == {"Authorization": "Bearer k"}
