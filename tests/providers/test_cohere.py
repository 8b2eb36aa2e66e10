"""Cohere: pure translation tables, then the full path against a local server speaking Cohere's v1
chat, generate and embed APIs (NDJSON streams)."""
from __future__ import annotations

from typing import Any

import pytest
from pytest_httpserver import HTTPServer

from endpoints_app.validation import EntryError, validate_endpoint
from providers import cohere as co
from providers.errors import InvalidParameter, UpstreamError
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db

MODEL = "command-r-plus"
USER_HI = {"role": "user", "content": "Hi"}


# -- pure translation: requests ---------------------------------------------------------------------------
def test_it_maps_the_conversation_to_message_preamble_and_history() -> None:
    body = co.chat_body({"n": 1, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi there"}, {"role": "system", "content": "Be kind."},
        {"role": "tool", "content": "dropped"}, {"role": "user", "content": "What is an LLM?"},
    ]}, MODEL)
    assert body == {"model": MODEL, "message": "What is an LLM?", "preamble_override": "Be brief.\nBe kind.",
                    "chat_history": [{"role": "USER", "message": "Hello"}, {"role": "CHATBOT", "message": "Hi there"}]}


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [(0.4, 1.0), (2, 5.0), (0, 0)],
)
def test_it_scales_a_non_zero_temperature(temperature: float, expected: float) -> None:
    assert co.chat_body({"messages": [USER_HI], "temperature": temperature}, MODEL)["temperature"] == expected
    assert co.completions_body({"prompt": "x", "temperature": temperature}, MODEL)["temperature"] == expected


def test_it_forwards_other_fields_and_marks_streams() -> None:
    body = co.chat_body({"messages": [USER_HI], "max_tokens": 9, "connectors": [{"id": "web-search"}],
                         "stream_options": {"include_usage": True}}, MODEL, stream=True)
    assert body == {"model": MODEL, "message": "Hi", "max_tokens": 9, "connectors": [{"id": "web-search"}],
                    "stream": True}


@pytest.mark.parametrize(
    ("request_payload", "message"),
    [
        ({"messages": [USER_HI], "n": 2}, "Parameter n must be 1 for Cohere chat, got 2."),
        ({"messages": [USER_HI], "stop": ["x"]}, "Parameter stop is not supported for Cohere chat."),
        ({"messages": [USER_HI, {"role": "assistant", "content": "x"}]},
         "Last message must be from user, got assistant."),
        ({"messages": [USER_HI], "tools": [{"type": "function", "function": {"name": "f"}}]},
         "Tools are not supported for Cohere chat."),
    ],
)
def test_it_refuses_chat_rule_violations_with_422(request_payload: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        co.chat_body(request_payload, MODEL)
    assert (caught.value.status, caught.value.detail) == (422, message)


def test_it_renames_completions_fields() -> None:
    body = co.completions_body({"prompt": "Tell me a story", "n": 2, "stop": ["."], "max_tokens": 20}, MODEL)
    assert body == {"model": MODEL, "prompt": "Tell me a story", "num_generations": 2, "stop_sequences": ["."],
                    "max_tokens": 20}


@pytest.mark.parametrize(("native", "ours"), [("stop_sequences", "stop"), ("num_generations", "n")])
def test_it_refuses_native_completions_names_with_400(native: str, ours: str) -> None:
    with pytest.raises(InvalidParameter) as caught:
        co.completions_body({"prompt": "x", native: 1}, MODEL)
    assert (caught.value.status, caught.value.detail) == (400, f"Invalid parameter {native}. Use {ours} instead.")


def test_it_builds_the_embed_body() -> None:
    assert co.embeddings_body({"input": "hello", "input_type": "search_query"}, "embed-english-v3.0") == {
        "model": "embed-english-v3.0", "input_type": "search_query", "texts": ["hello"]}
    with pytest.raises(InvalidParameter, match=r"Invalid parameter texts\. Use input instead\."):
        co.embeddings_body({"input": ["a"], "texts": ["a"]}, "embed-english-v3.0")


# -- pure translation: responses --------------------------------------------------------------------------
def test_it_maps_a_chat_response() -> None:
    out = co.parse_chat(payload("cohere", "chat_response.json"), MODEL, "cohere")
    assert isinstance(out.pop("created"), int)
    assert out == {
        "id": "c14c80c3-18eb-4519-9460-6c92edd8cfb4", "object": "chat.completion", "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant",
                                             "content": "LLMs are neural networks trained on large amounts of text.",
                                             "tool_calls": None, "refusal": None}, "finish_reason": None}],
        "usage": {"prompt_tokens": 70, "completion_tokens": 12, "total_tokens": 82},
        "provider": "cohere",
    }


def test_it_reads_usage_from_meta_tokens_when_token_count_is_absent() -> None:
    assert co.chat_usage({"meta": {"tokens": {"input_tokens": 5, "output_tokens": 7}}}) == {
        "prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}


def test_it_maps_generations_to_choices() -> None:
    out = co.parse_completions(payload("cohere", "generate_response.json"), MODEL)
    assert out["choices"] == [{"index": 0, "text": " Once upon a time", "finish_reason": None},
                              {"index": 1, "text": " In a land far away", "finish_reason": None}]
    assert out["usage"] == {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}


def test_it_maps_embeddings_plain_and_typed() -> None:
    out = co.parse_embeddings(payload("cohere", "embed_response.json"), "embed-english-v3.0")
    assert [d["embedding"] for d in out["data"]] == [[3.25, 0.7685547, 2.65625], [-0.30126953, -2.3554688, 1.2597656]]
    typed = co.parse_embeddings({"embeddings": {"float": [[1.0], [2.0]]}}, "m")
    assert [d["index"] for d in typed["data"]] == [0, 1]


def test_it_turns_the_chat_stream_into_chunks_with_usage_last() -> None:
    events = [
        {"event_type": "stream-start", "generation_id": "g"},
        {"event_type": "text-generation", "text": "Hi"},
        {"event_type": "citation-generation", "citations": []},
        {"event_type": "stream-end", "finish_reason": "MAX_TOKENS",
         "response": {"response_id": "r1", "token_count": {"prompt_tokens": 1, "response_tokens": 2,
                                                           "total_tokens": 3}}},
    ]
    chunks = list(co.chat_chunks(events, MODEL, "cohere"))
    assert [(c["id"], c["choices"][0]["delta"]["content"], c["choices"][0]["finish_reason"]) for c in chunks] == [
        (None, "Hi", None), ("r1", None, "length")]
    assert chunks[0]["usage"] is None
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


@pytest.mark.parametrize(
    ("cohere_reason", "expected"),
    [("COMPLETE", "stop"), ("STOP_SEQUENCE", "stop"), ("MAX_TOKENS", "length"), ("ERROR_LIMIT", "length"),
     ("ERROR_TOXIC", "content_filter"), ("TOOL_CALL", "tool_calls"), ("ERROR", "stop"), ("USER_CANCEL", "stop")],
)
def test_stream_end_gives_the_finish_reason_in_openai_terms(cohere_reason: str, expected: str) -> None:
    events = [{"event_type": "stream-end", "finish_reason": cohere_reason, "response": {}}]
    (chat,) = co.chat_chunks(events, "command-r", "cohere")
    (completion,) = co.completions_chunks(events, "command")
    assert chat["choices"][0]["finish_reason"] == completion["choices"][0]["finish_reason"] == expected


def test_an_error_line_in_the_stream_raises() -> None:
    with pytest.raises(UpstreamError) as caught:
        list(co.completions_chunks([{"event_type": "text-generation", "text": "a"}, {"message": "boom"}], MODEL))
    assert (caught.value.status, caught.value.detail) == (502, "boom")


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def cohere_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_COHERE_KEY", "co-test")
    config = {"cohere_api_key": "$TEST_COHERE_KEY", "cohere_api_base": httpserver.url_for("/v1")}
    make_endpoint("cohere-chat", CHAT, "cohere", MODEL, config)
    make_endpoint("cohere-completions", COMPLETIONS, "cohere", "command", config)
    make_endpoint("cohere-embeddings", EMBEDDINGS, "cohere", "embed-english-v3.0", config)
    return httpserver


HEADERS = {"Authorization": "Bearer co-test", "Content-Type": "application/json"}


def test_chat_sends_the_v1_chat_request(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/chat", method="POST", headers=HEADERS,
        json={"model": MODEL, "message": "Hi", "preamble_override": "Be brief.", "temperature": 0.5},
    ).respond_with_json(payload("cohere", "chat_response.json"))
    response = post_json(client, "/endpoints/cohere-chat/invocations",
                         {"messages": [{"role": "system", "content": "Be brief."}, USER_HI], "temperature": 0.2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["id"] == "c14c80c3-18eb-4519-9460-6c92edd8cfb4"
    assert body["usage"]["total_tokens"] == 82
    assert body["provider"] == "cohere"
    cohere_endpoints.check_assertions()


def test_chat_streaming_reads_ndjson(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/chat", method="POST", headers=HEADERS, json={"model": MODEL, "message": "Hi", "stream": True},
    ).respond_with_data(raw("cohere", "chat_stream.ndjson"), content_type="application/stream+json")
    response = post_json(client, "/endpoints/cohere-chat/invocations", {"messages": [USER_HI], "stream": True})
    assert response.status_code == 200
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["How", " are", " you", None]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["id"] == "d8ff3b5e-8a0b-4bd1-b0a4-7bd6b2a3cc3b"
    assert chunks[-1]["usage"] == {"prompt_tokens": 83, "completion_tokens": 3, "total_tokens": 86}
    cohere_endpoints.check_assertions()


def test_completions_go_to_generate(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/generate", method="POST", headers=HEADERS,
        json={"model": "command", "prompt": "Tell me a story", "num_generations": 2},
    ).respond_with_json(payload("cohere", "generate_response.json"))
    response = post_json(client, "/endpoints/cohere-completions/invocations", {"prompt": "Tell me a story", "n": 2})
    assert response.status_code == 200, response.content
    assert [c["text"] for c in response.json()["choices"]] == [" Once upon a time", " In a land far away"]
    cohere_endpoints.check_assertions()


def test_completions_streaming_reads_ndjson(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/generate", method="POST",
        json={"model": "command", "prompt": "Hello", "num_generations": 1, "stream": True},
    ).respond_with_data(raw("cohere", "generate_stream.ndjson"), content_type="application/stream+json")
    response = post_json(client, "/endpoints/cohere-completions/invocations", {"prompt": "Hello", "stream": True})
    chunks = sse_events(response)[:-1]
    assert {c["object"] for c in chunks} == {"text_completion_chunk"}
    assert [(c["choices"][0]["text"], c["choices"][0]["finish_reason"]) for c in chunks] == [
        (" Hi", None), (" there", None), ("", "length")]
    cohere_endpoints.check_assertions()


def test_a_native_completions_name_is_a_400(cohere_endpoints: HTTPServer, client: Any) -> None:
    response = post_json(client, "/endpoints/cohere-completions/invocations",
                         {"prompt": "x", "stop_sequences": ["."]})
    assert response.status_code == 400
    assert response.json() == {"detail": "Invalid parameter stop_sequences. Use stop instead."}
    assert cohere_endpoints.log == []


def test_embeddings_go_to_embed(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/embed", method="POST", headers=HEADERS,
        json={"model": "embed-english-v3.0", "texts": ["hello", "world"], "input_type": "search_document"},
    ).respond_with_json(payload("cohere", "embed_response.json"))
    response = post_json(client, "/endpoints/cohere-embeddings/invocations",
                         {"input": ["hello", "world"], "input_type": "search_document"})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["model"] == "embed-english-v3.0"
    assert body["usage"] == {"prompt_tokens": None, "total_tokens": None}
    cohere_endpoints.check_assertions()


def test_an_error_mid_stream_becomes_a_final_error_event(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request("/v1/chat", method="POST").respond_with_data(
        raw("cohere", "chat_stream_error.ndjson"), content_type="application/stream+json")
    response = post_json(client, "/endpoints/cohere-chat/invocations", {"messages": [USER_HI], "stream": True})
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"]["content"] == "How"
    assert events[-1]["error"]["message"] == "internal server error, this has been reported to our developers"
    assert events[-1]["error"]["status"] == 502


def test_an_upstream_error_passes_status_and_message(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_request("/v1/chat", method="POST").respond_with_json(
        payload("cohere", "error_unauthorized.json"), status=401)
    response = post_json(client, "/endpoints/cohere-chat/invocations", {"messages": [USER_HI]})
    assert response.status_code == 401
    assert response.json() == {"detail": "invalid api token"}
    response = post_json(client, "/v1/chat/completions", {"model": "cohere-chat", "messages": [USER_HI]})
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "invalid api token"


def test_the_openai_route_reaches_cohere(cohere_endpoints: HTTPServer, client: Any) -> None:
    cohere_endpoints.expect_oneshot_request(
        "/v1/chat", method="POST", json={"model": MODEL, "message": "Hi"},
    ).respond_with_json(payload("cohere", "chat_response.json"))
    response = post_json(client, "/v1/chat/completions", {"model": "cohere-chat", "messages": [USER_HI]})
    assert response.status_code == 200, response.content
    assert response.json()["choices"][0]["message"]["role"] == "assistant"
    cohere_endpoints.check_assertions()


def test_the_api_key_is_required_at_load_time() -> None:
    with pytest.raises(EntryError) as caught:
        validate_endpoint({"name": "c", "endpoint_type": CHAT,
                           "model": {"provider": "cohere", "name": MODEL, "config": {}}})
    assert caught.value.field == "model.config.cohere_api_key"
