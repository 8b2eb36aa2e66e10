"""OpenAI and Azure OpenAI: pure translation tables, then the full path against a local server
speaking OpenAI's wire format (view → adapter → HTTP → parse)."""
from __future__ import annotations

from typing import Any

import orjson
import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from providers import openai_compatible as oa
from providers.shapes import CHAT, COMPLETIONS, EMBEDDINGS
from tests.conftest import post_json, sse_events
from tests.fixtures import payload, raw

pytestmark = pytest.mark.django_db


# -- pure translation --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("request_payload", "stream", "expected"),
    [
        ({"messages": [{"role": "user", "content": "hi"}], "n": 1},
         False, {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 1}),
        ({"prompt": "x", "temperature": 0.5, "user": "u1", "seed": 1},
         False, {"model": "gpt-4o", "prompt": "x", "temperature": 0.5, "user": "u1", "seed": 1}),
        ({"prompt": "x"}, True, {"model": "gpt-4o", "prompt": "x", "stream": True,
                                 "stream_options": {"include_usage": True}}),
        ({"prompt": "x", "stream_options": {"include_usage": False}}, True,
         {"model": "gpt-4o", "prompt": "x", "stream": True, "stream_options": {"include_usage": True}}),
    ],
)
def test_it_builds_the_openai_body(request_payload: dict[str, Any], stream: bool, expected: dict[str, Any]) -> None:
    assert oa.request_body(request_payload, "gpt-4o", stream=stream) == expected


def test_it_maps_a_chat_response_and_drops_vendor_extras() -> None:
    out = oa.parse_chat(payload("openai", "chat_response.json"), "openai")
    assert out == {
        "id": "chatcmpl-AbC123", "object": "chat.completion", "created": 1727000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?",
                                             "tool_calls": None, "refusal": None}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
        "provider": "openai",
    }


def test_it_maps_tool_calls() -> None:
    out = oa.parse_chat(payload("openai", "chat_tool_call_response.json"), "openai")
    assert out["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_abc", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]
    assert out["choices"][0]["finish_reason"] == "tool_calls"


def _chat_answer(**message_and_usage: Any) -> dict[str, Any]:
    usage = message_and_usage.pop("usage", None)
    reason = message_and_usage.pop("finish_reason", "stop")
    return {"id": "c", "created": 1, "model": "m", "usage": usage,
            "choices": [{"index": 0, "message": {"role": "assistant", **message_and_usage}, "finish_reason": reason}]}


COUNTS = {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}


@pytest.mark.parametrize(
    ("vendor_usage", "expected"),
    [
        pytest.param({**COUNTS, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}},
                     {**COUNTS, "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0}}, id="openai"),
        pytest.param({**COUNTS, "prompt_cache_hit_tokens": 4, "prompt_cache_miss_tokens": 5}, COUNTS, id="deepseek"),
        pytest.param({**COUNTS, "queue_time": 0.02, "prompt_time": 0.001, "completion_time": 0.05}, COUNTS,
                     id="groq"),
        pytest.param({**COUNTS, "prompt_tokens_details": {"text_tokens": 9, "cached_tokens": 2},
                      "completion_tokens_details": {"reasoning_tokens": 3}, "num_sources_used": 0},
                     {**COUNTS, "prompt_tokens_details": {"cached_tokens": 2},
                      "completion_tokens_details": {"reasoning_tokens": 3}}, id="xai"),
        pytest.param({**COUNTS, "cost": 0.0001, "is_byok": False, "prompt_tokens_details": {"cached_tokens": None}},
                     COUNTS, id="openrouter"),
        pytest.param(None, {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}, id="none"),
    ],
)
def test_it_keeps_only_the_usage_keys_the_gateway_declares(vendor_usage: Any, expected: dict[str, Any]) -> None:
    assert oa.parse_chat(_chat_answer(content="hi", usage=vendor_usage), "openai")["usage"] == expected


@pytest.mark.parametrize(
    ("vendor_reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("content_filter", "content_filter"),
     ("function_call", "function_call"), ("insufficient_system_resource", "stop"), ("abort", "stop"), (None, None)],
)
def test_it_gives_finish_reasons_in_openai_terms(vendor_reason: str | None, expected: str | None) -> None:
    answer = oa.parse_chat(_chat_answer(content="hi", finish_reason=vendor_reason), "openai")
    assert answer["choices"][0]["finish_reason"] == expected


def test_it_joins_the_text_parts_of_list_content() -> None:
    parts = [{"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    assert oa.parse_chat(_chat_answer(content=parts), "openai")["choices"][0]["message"]["content"] == "AB"


@pytest.mark.parametrize(
    ("chunk", "expected_text", "expected_finish"),
    [
        ({"id": "c", "choices": [{"index": 0, "text": "abc", "finish_reason": None}]}, "abc", None),
        ({"id": "c", "choices": [{"index": 0, "text": "", "finish_reason": "length"}]}, "", "length"),
        ({"id": "c", "choices": [{"index": 0, "delta": {"content": "via delta"}}]}, "via delta", None),
    ],
)
def test_it_reads_completions_chunks_from_text(chunk: dict[str, Any], expected_text: str,
                                               expected_finish: str | None) -> None:
    out = oa.parse_completions_chunk(chunk)
    assert out["object"] == "text_completion_chunk"
    assert out["choices"] == [{"index": 0, "text": expected_text, "finish_reason": expected_finish}]


# -- end to end ------------------------------------------------------------------------------------------
@pytest.fixture
def openai_endpoints(make_endpoint: Any, httpserver: HTTPServer, monkeypatch: pytest.MonkeyPatch) -> HTTPServer:
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-test-123")
    base = httpserver.url_for("/v1")
    config = {"openai_api_key": "$TEST_OPENAI_KEY", "openai_api_base": base, "openai_organization": "org-9"}
    make_endpoint("chat", CHAT, "openai", "gpt-4o-mini", config)
    make_endpoint("completions", COMPLETIONS, "openai", "gpt-3.5-turbo-instruct", config)
    make_endpoint("embeddings", EMBEDDINGS, "openai", "text-embedding-3-small", config)
    return httpserver


def _json_of(request: Request) -> Any:
    return orjson.loads(request.get_data())


def test_chat_sends_the_exact_upstream_request_and_returns_mlflow_shape(openai_endpoints: HTTPServer,
                                                                        client: Any) -> None:
    openai_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        headers={"Authorization": "Bearer sk-test-123", "OpenAI-Organization": "org-9",
                 "Content-Type": "application/json"},
        json={"model": "gpt-4o-mini", "n": 1, "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2},
    ).respond_with_json(payload("openai", "chat_response.json"))
    response = post_json(client, "/endpoints/chat/invocations",
                         {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2})
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Hello! How can I help?"
    assert body["provider"] == "openai"
    assert body["usage"]["total_tokens"] == 15
    openai_endpoints.check_assertions()


def test_chat_streaming_passes_chunks_and_the_final_usage_chunk(openai_endpoints: HTTPServer, client: Any) -> None:
    openai_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": "gpt-4o-mini", "n": 1, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
              "stream_options": {"include_usage": True}},
    ).respond_with_data(raw("openai", "chat_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/chat/invocations",
                         {"messages": [{"role": "user", "content": "Hi"}], "stream": True,
                          "stream_options": {"include_usage": True}})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    events = sse_events(response)
    assert events[-1] == "[DONE]"
    texts = [e["choices"][0]["delta"]["content"] for e in events[:-1] if e["choices"]]
    assert texts == ["", "Hel", "lo", None]
    assert events[-2]["choices"] == []
    assert events[-2]["usage"] == {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}
    openai_endpoints.check_assertions()


def test_a_stream_client_that_did_not_ask_for_usage_gets_no_usage_chunk(openai_endpoints: HTTPServer,
                                                                        client: Any) -> None:
    """The gateway asks the vendor for the usage chunk (the ledger counts it); the client that did not ask
    for it, as OpenAI's API promises, does not get it."""
    openai_endpoints.expect_oneshot_request(
        "/v1/chat/completions", method="POST",
        json={"model": "gpt-4o-mini", "n": 1, "messages": [{"role": "user", "content": "Hi"}], "stream": True,
              "stream_options": {"include_usage": True}},
    ).respond_with_data(raw("openai", "chat_stream.txt"), content_type="text/event-stream")
    events = sse_events(post_json(client, "/endpoints/chat/invocations",
                                  {"messages": [{"role": "user", "content": "Hi"}], "stream": True}))
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])
    assert [e["choices"][0]["delta"]["content"] for e in events[:-1]] == ["", "Hel", "lo", None]
    openai_endpoints.check_assertions()


def test_completions_streaming_works_unlike_mlflow(openai_endpoints: HTTPServer, client: Any) -> None:
    openai_endpoints.expect_oneshot_request("/v1/completions", method="POST").respond_with_data(
        raw("openai", "completions_stream.txt"), content_type="text/event-stream")
    response = post_json(client, "/endpoints/completions/invocations",
                         {"prompt": "Say", "stream": True, "stream_options": {"include_usage": True}})
    events = sse_events(response)
    assert [e["choices"][0]["text"] for e in events[:-2]] == ["This", " is", ""]
    assert events[2]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["total_tokens"] == 5
    assert events[-1] == "[DONE]"


def test_embeddings_round_trip(openai_endpoints: HTTPServer, client: Any) -> None:
    openai_endpoints.expect_oneshot_request(
        "/v1/embeddings", method="POST",
        json={"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 3},
    ).respond_with_json(payload("openai", "embeddings_response.json"))
    response = post_json(client, "/endpoints/embeddings/invocations", {"input": ["a", "b"], "dimensions": 3})
    assert response.status_code == 200, response.content
    body = response.json()
    assert [d["index"] for d in body["data"]] == [0, 1]
    assert body["data"][1]["embedding"] == [-0.0069292262, 0.004120131, -0.00412]
    assert body["usage"] == {"prompt_tokens": 8, "total_tokens": 8}


def test_azure_uses_the_deployment_url_api_key_header_and_no_model(make_endpoint: Any, httpserver: HTTPServer,
                                                                   client: Any) -> None:
    make_endpoint("azure-chat", CHAT, "openai", "gpt-4o", {
        "openai_api_key": "azure-key", "openai_api_type": "azure", "openai_api_base": httpserver.url_for(""),
        "openai_deployment_name": "my-deploy", "openai_api_version": "2024-06-01",
    })
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(orjson.dumps(payload("openai", "chat_response.json")), content_type="application/json")

    httpserver.expect_oneshot_request("/openai/deployments/my-deploy/chat/completions",
                                      query_string="api-version=2024-06-01").respond_with_handler(handler)
    response = post_json(client, "/endpoints/azure-chat/invocations", {"messages": [{"role": "user", "content": "x"}]})
    assert response.status_code == 200, response.content
    assert seen[0].headers["api-key"] == "azure-key"
    assert "Authorization" not in seen[0].headers
    assert "model" not in _json_of(seen[0])


def test_a_config_without_references_is_resolved_once_and_one_with_them_on_every_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from providers import config as provider_config
    from providers import secrets
    from providers.openai import OpenAIProvider

    calls: list[int] = []
    resolve = provider_config.resolve

    def counted(*args: Any) -> dict[str, Any]:
        calls.append(1)
        return resolve(*args)

    monkeypatch.setattr(provider_config, "resolve", counted)
    fixed = OpenAIProvider(provider_name="openai", model_name="gpt-4o-mini",
                           config={"openai_api_key": secrets.store_secret("sk-literal", "openai_api_key"),
                                   "openai_api_base": "http://127.0.0.1:9/v1"})
    first = fixed.config
    first["openai_api_key"] = "changed by a caller"
    assert [fixed.config["openai_api_key"] for _ in range(3)] == ["sk-literal"] * 3 and len(calls) == 1

    monkeypatch.setenv("TEST_OPENAI_ROTATED_KEY", "sk-from-env")
    live = OpenAIProvider(provider_name="openai", model_name="gpt-4o-mini",
                          config={"openai_api_key": {"$env": "TEST_OPENAI_ROTATED_KEY"}})
    assert live.config["openai_api_key"] == "sk-from-env"
    monkeypatch.setenv("TEST_OPENAI_ROTATED_KEY", "sk-rotated")
    assert live.config["openai_api_key"] == "sk-rotated"  # an environment variable is read at each call
    assert len(calls) == 3
